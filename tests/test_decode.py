"""One decode loop, one generate contract: the text and vision backends answer the same call the
same way (signature, per-row seeds, stop ids, kept caches), and the vision prefill reuses a kept
prefix, new screenshot in the suffix, without changing a token."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from trajkit.policy.backends import GenerationBackend, HFBackend, Sampling
from trajkit.render import IMAGE_PAD, VISION_END, VISION_START

GREEDY = Sampling(temperature=0, max_new_tokens=8)
SAMPLED = Sampling(temperature=1.0, top_p=0.9, max_new_tokens=8)


def sharpen(model, std: float = 0.2) -> None:
    """Larger random weights: an untrained tiny model's greedy output then depends on its context
    (with the default init it repeats one token whatever the prompt, which would prove nothing)."""
    import torch

    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0, std, generator=g)


def screenshot(path: Path, x: float, color=(220, 40, 40), size=(160, 210)) -> str:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", size, (245, 245, 245))
    w, h = size
    ImageDraw.Draw(img).rectangle([x * w - 20, h * 0.3, x * w + 20, h * 0.6], fill=color)
    img.save(path)
    return str(path)


@pytest.fixture(scope="module")
def text_parts(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from trajkit.policy.models import load_tokenizer
    from trajkit.render import Renderer

    torch.set_num_threads(1)
    tok = load_tokenizer(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    sharpen(model)
    return model, tok, Renderer(tok, "tiny")


@pytest.fixture(scope="module")
def vlm(tmp_path_factory):
    import torch

    from trajkit.policy.vlm import load_vlm, make_tiny_vlm

    torch.set_num_threads(1)
    vlm = load_vlm(str(make_tiny_vlm(tmp_path_factory.mktemp("vlm") / "model", size="xs", seed=0)))
    sharpen(vlm.model)
    return vlm


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    """Screenshots of two sizes (different visual token counts), several per size."""
    root = tmp_path_factory.mktemp("shots")
    small = [screenshot(root / f"s{i}.png", 0.2 + 0.15 * i) for i in range(4)]
    large = [screenshot(root / f"l{i}.png", 0.7 - 0.15 * i, (40, 70, 220), (320, 420)) for i in range(4)]
    return small, large


def text_backend(text_parts, stop_ids=None, **kw):
    model, tok, renderer = text_parts
    return HFBackend(model, tok, stop_ids or renderer.stop_ids, batch_size=4, **kw)


def vision_backend(vlm, stop_ids=None, **kw):
    from trajkit.policy.vlm import VLMBackend

    return VLMBackend(
        vlm.model, vlm.tokenizer, vlm.image_processor, stop_ids or vlm.stop_ids(), batch_size=4, **kw
    )


class Episodes:
    """Token-level multi-turn prompts: each next prompt is the previous one, its completion, an
    observation (text, or a screenshot span and text) and the next assistant header."""

    def __init__(self, renderer, image_tokens=None):
        self.r = renderer
        self.image_tokens = image_tokens

    def span(self, image: str) -> list[int]:
        n = self.image_tokens(image)
        return self.r.encode(VISION_START) + self.r.encode(IMAGE_PAD) * n + self.r.encode(VISION_END)

    def first(self, text: str, image: str | None = None) -> tuple[list[int], list[str]]:
        body = (self.span(image) if image else []) + self.r.encode(text)
        ids = (
            self.r.encode("<|im_start|>user\n") + body + self.r.encode("<|im_end|>\n<|im_start|>assistant\n")
        )
        return ids, [image] if image else []

    def next(self, prev, completion: list[int], text: str, image: str | None = None):
        ids, images = prev
        body = (self.span(image) if image else []) + self.r.encode(text)
        obs = self.r.encode("<|im_end|>\n<|im_start|>user\n") + body
        obs += self.r.encode("<|im_end|>\n<|im_start|>assistant\n")
        return ids + completion + obs, images + ([image] if image else [])


def text_prompts(text_parts) -> list[list[int]]:
    _, _, renderer = text_parts
    eps = Episodes(renderer)
    return [eps.first(t)[0] for t in ("Your task is to: count.", "Say hi", "Observation: Nothing happened.")]


def vision_prompts(vlm, shots) -> tuple[list[list[int]], list[list[str]]]:
    small, large = shots
    eps = Episodes(vlm.renderer(), vlm.renderer().image_tokens)
    rows = [eps.first("Click red", small[0]), eps.first("Say hi"), eps.first("Click the blue box", large[0])]
    return [ids for ids, _ in rows], [ims for _, ims in rows]


@pytest.fixture(params=["text", "vision"])
def kind(request):
    return request.param


def backend_and_prompts(kind, text_parts, vlm, shots, **kw):
    if kind == "text":
        return text_backend(text_parts, **kw), text_prompts(text_parts), None
    prompts, images = vision_prompts(vlm, shots)
    return vision_backend(vlm, **kw), prompts, images


def test_backends_share_one_generate_signature():
    from trajkit.policy.vlm import VLMBackend

    want = inspect.signature(GenerationBackend.generate)
    for cls in (HFBackend, VLMBackend):
        got = inspect.signature(cls.generate)
        assert (
            list(got.parameters)
            == list(want.parameters)
            == [
                "self",
                "prompts",
                "sampling",
                "seeds",
                "keys",
                "images",
            ]
        )
        assert [p.default for p in got.parameters.values()] == [p.default for p in want.parameters.values()]
        assert callable(cls.forget)


def test_seeded_rows_ignore_their_batch_mates(kind, text_parts, vlm, shots):
    backend, prompts, images = backend_and_prompts(kind, text_parts, vlm, shots)
    seeds = [5, 6, 7]
    batch = backend.generate(prompts, SAMPLED, seeds, images=images)
    for i in range(len(prompts)):
        alone = backend.generate(
            [prompts[i]], SAMPLED, [seeds[i]], images=None if images is None else [images[i]]
        )
        assert alone[0] == batch[i]
    # Reordered batch mates and a different batch size change nothing either.
    order = [2, 0, 1]
    reordered = backend.generate(
        [prompts[i] for i in order],
        SAMPLED,
        [seeds[i] for i in order],
        images=None if images is None else [images[i] for i in order],
    )
    assert reordered == [batch[i] for i in order]
    assert backend.generate(prompts, SAMPLED, [8, 6, 7], images=images)[1] == batch[1]


def test_stop_ids_end_generation(kind, text_parts, vlm, shots):
    backend, prompts, images = backend_and_prompts(kind, text_parts, vlm, shots)
    free = backend.generate(prompts, GREEDY, images=images)
    stop = free[0][3]  # a token the first row samples fourth
    make = text_backend if kind == "text" else vision_backend
    stopped = make(text_parts if kind == "text" else vlm, stop_ids=[stop]).generate(
        prompts, GREEDY, images=images
    )
    for full, cut in zip(free, stopped, strict=True):
        end = full.index(stop) + 1 if stop in full else len(full)
        assert cut == full[:end]  # ends with the stop id when one was sampled, never padded
    assert stopped[0][-1] == stop and len(stopped[0]) <= 4


def test_text_backend_refuses_images(text_parts, shots):
    backend = text_backend(text_parts)
    prompts = text_prompts(text_parts)
    with pytest.raises(ValueError, match="text only"):
        backend.generate(prompts[:1], GREEDY, images=[[shots[0][0]]])
    # Empty image lists are no images at all.
    assert backend.generate(prompts[:1], GREEDY, images=[[]]) == backend.generate(prompts[:1], GREEDY)


@pytest.mark.parametrize("sampling", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_vision_kept_caches_change_nothing_but_the_work(vlm, shots, sampling):
    """Three episodes over three turns, a new screenshot in every observation but one: decoding
    with kept caches (suffix-only prefill) gives exactly the tokens of full prefills."""
    small, large = shots
    eps = Episodes(vlm.renderer(), vlm.renderer().image_tokens)
    cached, plain = vision_backend(vlm), vision_backend(vlm, prefix_cache=False)
    keys = ["a", "b", "c"]
    rows = [eps.first("Click red", small[0]), eps.first("Say hi"), eps.first("Click the blue box", large[0])]
    for step in range(3):
        prompts, images = [ids for ids, _ in rows], [ims for _, ims in rows]
        seeds = [10 * step + i for i in range(3)]
        got = cached.generate(prompts, sampling, seeds, keys=keys, images=images)
        assert got == plain.generate(prompts, sampling, seeds, images=images), f"step {step}"
        assert len({tuple(x) for x in got}) > 1  # outputs differ by row: the test can fail
        new = [small[step + 1], None if step == 1 else small[step + 1], large[step + 1]]
        rows = [eps.next(r, out, f"Step {step}", im) for r, out, im in zip(rows, got, new, strict=True)]
    assert plain.stats["prefilled_tokens"] == plain.stats["prompt_tokens"]
    assert cached.stats["prompt_tokens"] == plain.stats["prompt_tokens"]
    assert cached.stats["prefilled_tokens"] < 0.6 * plain.stats["prefilled_tokens"]
    for key in keys:
        cached.forget(key)
    assert cached._cache == {}


def test_vision_cache_stops_before_a_different_image(vlm, shots):
    """Same ids, other pixels: a prompt whose earlier screenshot was swapped for another of the
    same size reuses only what precedes that image, and decodes as a full prefill would."""
    small, _ = shots
    eps = Episodes(vlm.renderer(), vlm.renderer().image_tokens)
    backend, plain = vision_backend(vlm), vision_backend(vlm, prefix_cache=False)
    first = eps.first("Click red", small[0])
    out = backend.generate([first[0]], GREEDY, keys=["e"], images=[first[1]])
    second = eps.next(first, out[0], "Step 0", small[1])
    swapped = (second[0], [small[2], small[1]])  # the ids cannot tell the first image changed
    before = backend.stats["prefilled_tokens"]
    got = backend.generate([swapped[0]], GREEDY, keys=["e"], images=[swapped[1]])
    assert got == plain.generate([swapped[0]], GREEDY, images=[swapped[1]])
    start = swapped[0].index(backend.image_token_id)
    assert backend.stats["prefilled_tokens"] - before == len(swapped[0]) - start


def test_masks_keep_one_width_across_decode_steps(kind, text_parts, vlm, shots):
    """The attention mask is allocated once per batch at full width: decode steps switch a
    column on in place instead of growing (reallocating) it."""
    backend, prompts, images = backend_and_prompts(kind, text_parts, vlm, shots)
    model = backend.model
    seen = []
    forward = model.forward

    def spy(*args, **kwargs):
        mask = kwargs["attention_mask"]
        seen.append((tuple(mask.shape), mask.data_ptr(), int(mask.sum())))
        return forward(*args, **kwargs)

    model.forward = spy
    try:
        out = backend.generate(prompts, Sampling(temperature=0, max_new_tokens=6), images=images)
    finally:
        del model.forward
    assert len(seen) == max(len(x) for x in out) > 1
    assert len({shape for shape, _, _ in seen}) == 1 and len({ptr for _, ptr, _ in seen}) == 1
    width = seen[0][0][1]
    assert width == max(len(p) for p in prompts) + 6
    assert [s for _, _, s in seen] == sorted(s for _, _, s in seen)  # columns switched on, step by step
