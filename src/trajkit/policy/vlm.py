"""Vision-language policies of the Qwen2-VL family: loading, a tiny one made locally, sampling.

`load_vlm(path)` loads a Qwen2-VL / Qwen2.5-VL checkpoint (hub id or folder) with its tokenizer and
image processor. The text side of a sample never goes through the HF processor: the renderer
(`render.Renderer` with `image_tokens`) writes the ids, `<|image_pad|>` runs included, and the
image processor only turns screenshots into `pixel_values` + `image_grid_thw`. (Qwen2-VL's
`AutoProcessor` also insists on a video processor, which needs torchvision; nothing here does.)

`make_tiny_vlm(out_dir)` builds a randomly initialized Qwen2-VL of a few hundred thousand
parameters, with a byte-level BPE tokenizer trained on the spot, so tests and CPU demos need no
download. `VLMBackend` is `HFBackend` for prompts with images.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trajkit.gui.prompts import GUI_SYSTEM_PROMPT
from trajkit.gui.tokens import DIFF_MARKER
from trajkit.policy.backends import HFBackend, Sampling
from trajkit.render import IMAGE_PAD, VISION_END, VISION_START, Renderer

VISION_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl")
# Tokens Qwen2-VL's config and processor name besides those every chatml rendering uses.
QWEN_EXTRA_TOKENS = ("<|endoftext|>", "<|video_pad|>")
IM_END = "<|im_end|>"
# What the tiny tokenizer learns from when no corpus is given: GUI prompts and action code.
DEFAULT_CORPUS = (
    GUI_SYSTEM_PROMPT,
    "Please generate the next move according to the UI screenshot, instruction and previous actions.",
    "Instruction: click the button. Previous actions:\nNone",
    "Observation: The page shows a form.\nThought: I need to press submit.\nAction: Click on 'Submit'.",
    "pyautogui.click(x=0.4125, y=0.1781)",
    "pyautogui.write(message='hello world')",
    "pyautogui.press(keys=['enter'])",
    "pyautogui.hotkey(keys=['ctrl', 'a'])",
    "pyautogui.scroll(page=-0.5)",
    "pyautogui.dragTo(from_coord=[0.1, 0.2], to_coord=[0.7, 0.8])",
    "answer(answer='42')",
    "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:'\"()[]{}=_-+*/<>!?",
)

CHATML_JINJA = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class TinyVLMSize:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    mrope_section: tuple[int, int, int]  # sums to head_dim / 2
    vision_depth: int
    vision_embed_dim: int
    vision_heads: int
    # Pixel budget of a screenshot after resizing, in 28x28 cells (one visual token each): a
    # 320x420 MiniWoB screenshot becomes 6x7 = 42 tokens under a 48-cell cap.
    min_cells: int = 4
    max_cells: int = 48
    max_position_embeddings: int = 8192


VLM_SIZES = {
    "xs": TinyVLMSize(
        vocab_size=1024,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=192,
        mrope_section=(2, 3, 3),
        vision_depth=1,
        vision_embed_dim=32,
        vision_heads=2,
    ),
    "s": TinyVLMSize(
        vocab_size=2048,
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=384,
        mrope_section=(4, 6, 6),
        vision_depth=2,
        vision_embed_dim=64,
        vision_heads=4,
        max_cells=96,
    ),
}


def _size(size: str) -> TinyVLMSize:
    if size not in VLM_SIZES:
        raise ValueError(f"unknown tiny VLM size {size!r}; choose one of {', '.join(VLM_SIZES)}")
    return VLM_SIZES[size]


def build_vlm_tokenizer(texts: Iterable[str], vocab_size: int):
    """The tiny byte-level BPE tokenizer plus Qwen2-VL's remaining special tokens, ChatML roles."""
    from trajkit.gui.tokens import _add_special, add_gui_special_tokens
    from trajkit.policy.tiny import train_tokenizer

    tok = train_tokenizer(texts, vocab_size)
    missing = [t for t in QWEN_EXTRA_TOKENS if t not in tok.get_vocab()]
    if missing:
        _add_special(tok, missing)
    add_gui_special_tokens(tok)  # <|recipient|>, <|diff_marker|>: present already; kept explicit
    tok.eos_token = IM_END
    tok.chat_template = CHATML_JINJA
    tok.padding_side = "left"
    return tok


def build_image_processor(min_cells: int = 4, max_cells: int = 48, patch_size: int = 14, merge_size: int = 2):
    """Qwen2-VL's image processor with a small pixel budget (`*_cells` of (patch*merge)^2 pixels)."""
    try:  # the PIL backend needs no torchvision; newer transformers have it
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
            Qwen2VLImageProcessorPil as ImageProcessor,
        )
    except ImportError:  # pragma: no cover - older transformers
        from transformers import Qwen2VLImageProcessor as ImageProcessor

    cell = (patch_size * merge_size) ** 2
    return ImageProcessor(
        min_pixels=min_cells * cell,
        max_pixels=max_cells * cell,
        patch_size=patch_size,
        merge_size=merge_size,
        temporal_patch_size=2,
    )


def build_tiny_vlm(tokenizer, size: str = "xs", seed: int = 0):
    """A randomly initialized Qwen2VLForConditionalGeneration sized by `VLM_SIZES[size]`."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    spec = _size(size)
    ids = tokenizer.convert_tokens_to_ids
    stop_ids = [ids(IM_END), ids(DIFF_MARKER)]
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": spec.hidden_size,
            "intermediate_size": spec.intermediate_size,
            "num_hidden_layers": spec.num_hidden_layers,
            "num_attention_heads": spec.num_attention_heads,
            "num_key_value_heads": spec.num_key_value_heads,
            "max_position_embeddings": spec.max_position_embeddings,
            "rope_parameters": {
                "rope_type": "default",
                "mrope_section": list(spec.mrope_section),
                "rope_theta": 10000.0,
            },
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": stop_ids[0],
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "depth": spec.vision_depth,
            "embed_dim": spec.vision_embed_dim,
            "hidden_size": spec.hidden_size,
            "num_heads": spec.vision_heads,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=ids(IMAGE_PAD),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids(VISION_START),
        vision_end_token_id=ids(VISION_END),
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = stop_ids
    return model


def make_tiny_vlm(
    out_dir: str | Path, texts: Iterable[str] | None = None, size: str = "xs", seed: int = 0
) -> Path:
    """Build a tiny Qwen2-VL (tokenizer trained on `texts`, default a small GUI corpus), save it
    atomically to `out_dir` so that `load_vlm(out_dir)` loads it. Nothing is downloaded."""
    spec = _size(size)
    corpus = list(texts) if texts is not None else []
    corpus = corpus + list(DEFAULT_CORPUS) * 4
    tokenizer = build_vlm_tokenizer(corpus, spec.vocab_size)
    image_processor = build_image_processor(spec.min_cells, spec.max_cells)
    model = build_tiny_vlm(tokenizer, size, seed)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        image_processor.save_pretrained(tmp)
        spec_dict = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(spec).items()}
        meta = {"size": size, "seed": seed, "template": "qwen2", "vision": True, **spec_dict}
        (tmp / "trajkit_model.json").write_text(json.dumps(meta, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


# ---------------------------------------------------------------------------------------------
# loading


def is_vision_model(name_or_path: str) -> bool:
    """Whether a checkpoint has a vision tower (its config has a `vision_config`)."""
    config_file = Path(name_or_path) / "config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text())
        return "vision_config" in config
    if Path(name_or_path).exists():
        return False
    from transformers import AutoConfig

    return hasattr(AutoConfig.from_pretrained(name_or_path), "vision_config")


class ImageTokenCounter:
    """Image path -> number of `<|image_pad|>` tokens the vision tower yields for it.

    grid_t * grid_h * grid_w / merge_size^2, from the image processor's own resize rule; only
    the image header is read (PIL opens lazily), and answers are cached per path.
    """

    def __init__(self, image_processor: Any):
        self.image_processor = image_processor
        self.merge = int(image_processor.merge_size)
        self._cache: dict[str, int] = {}

    def __call__(self, image: str) -> int:
        n = self._cache.get(image)
        if n is None:
            from PIL import Image

            with Image.open(image) as im:
                width, height = im.size
            patches = self.image_processor.get_number_of_image_patches(height, width, {})
            n = self._cache[image] = int(patches) // self.merge**2
        return n


class VisionInputs:
    """Screenshots -> (`pixel_values`, `image_grid_thw`), cached per path (images repeat a lot)."""

    def __init__(self, image_processor: Any, cache_size: int = 1024):
        self.image_processor = image_processor
        self.merge = int(image_processor.merge_size)
        self.cache_size = cache_size
        self._cache: dict[str, tuple[Any, Any]] = {}

    def one(self, image: Any) -> tuple[Any, Any]:
        """(pixel rows, grid_thw row) of one image (a path or a PIL image)."""
        key = image if isinstance(image, str) else None
        if key is not None and key in self._cache:
            return self._cache[key]
        from PIL import Image

        if isinstance(image, (str, os.PathLike)):
            with Image.open(image) as im:
                pil = im.convert("RGB")
        else:
            pil = image.convert("RGB")
        out = self.image_processor(images=[pil], return_tensors="pt")
        item = (out["pixel_values"], out["image_grid_thw"])
        if key is not None:
            if len(self._cache) >= self.cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = item
        return item

    def batch(self, images: Sequence[Any]) -> dict[str, Any]:
        """Pixel values of `images`, concatenated in order, and their grids; {} when there are none."""
        import torch

        if not images:
            return {}
        items = [self.one(im) for im in images]
        return {
            "pixel_values": torch.cat([p for p, _ in items]),
            "image_grid_thw": torch.cat([g for _, g in items]),
        }

    def tokens(self, grid_thw: Any) -> list[int]:
        """Visual tokens per image of a grid tensor."""
        return [int(n) // self.merge**2 for n in grid_thw.prod(-1).tolist()]


@dataclass
class VLM:
    """A loaded vision-language policy and what renders for it."""

    model: Any
    tokenizer: Any
    image_processor: Any
    template: str

    def renderer(self) -> Renderer:
        return Renderer(self.tokenizer, self.template, image_tokens=ImageTokenCounter(self.image_processor))

    def stop_ids(self) -> list[int]:
        """End of turn and AGUVIS's `<|diff_marker|>`: either ends a sampled turn."""
        ids = self.renderer().end_of_turn_ids
        diff = self.tokenizer.convert_tokens_to_ids(DIFF_MARKER)
        if diff is not None and diff != self.tokenizer.unk_token_id and diff not in ids:
            ids = [*ids, diff]
        return ids

    def save_pretrained(self, path: str | Path) -> None:
        """Tokenizer and image processor (the model is saved by whoever trained it)."""
        self.tokenizer.save_pretrained(path)
        self.image_processor.save_pretrained(path)


def _card_template(path: str) -> str | None:
    card = Path(path) / "trajkit_model.json"
    if card.is_file():
        return json.loads(card.read_text()).get("template")
    return None


def load_vlm(
    name_or_path: str, *, dtype: str = "auto", template: str | None = None, gui_tokens: bool = True
) -> VLM:
    """Load a Qwen2-VL-family checkpoint (hub id, needs internet, or folder) for training or sampling.

    `gui_tokens` adds AGUVIS's `<|recipient|>` / `<|diff_marker|>` as special tokens when the
    tokenizer lacks them (new embedding rows start at the mean of the old ones). The template is
    the trajkit card's, else `qwen2` (Qwen2-VL's ChatML with vision spans).
    """
    from transformers import AutoImageProcessor, AutoModelForImageTextToText

    from trajkit.gui.tokens import add_gui_special_tokens
    from trajkit.policy.models import load_tokenizer, resolve_dtype

    tokenizer = load_tokenizer(name_or_path)
    image_processor = AutoImageProcessor.from_pretrained(name_or_path)
    model = AutoModelForImageTextToText.from_pretrained(name_or_path, dtype=resolve_dtype(dtype))
    model_type = getattr(model.config, "model_type", "")
    if model_type not in VISION_MODEL_TYPES:
        raise ValueError(
            f"{name_or_path}: model type {model_type!r} is not a supported vision-language model "
            f"({', '.join(VISION_MODEL_TYPES)})"
        )
    if gui_tokens:
        add_gui_special_tokens(tokenizer, model)
    return VLM(model, tokenizer, image_processor, template or _card_template(name_or_path) or "qwen2")


def vision_tower(model: Any) -> Any:
    """The vision encoder (patch embedding, blocks and the merger into the text width)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    tower = getattr(getattr(base, "model", base), "visual", None)
    if tower is None:
        tower = getattr(base, "visual", None)
    if tower is None:
        raise ValueError(f"{type(base).__name__} has no vision tower to freeze")
    return tower


def freeze_vision(model: Any) -> int:
    """Freeze the vision tower, merger included, as AGUVIS trains; returns the parameters frozen."""
    n = 0
    for p in vision_tower(model).parameters():
        p.requires_grad_(False)
        n += p.numel()
    return n


# ---------------------------------------------------------------------------------------------
# sampling


class VLMBackend(HFBackend):
    """Batched decoding for prompts with images: `HFBackend`'s loop, seeds and left padding.

    `generate(prompts, sampling, seeds, images)` takes each prompt's ids from the renderer
    (`Renderer.prompt(...).input_ids`, with `<|image_pad|>` runs already sized) and its images
    in span order (`Renderer.prompt(...).images`: paths or PIL images). The prompt is encoded in
    one forward pass with Qwen2-VL's 3-D (M-RoPE) positions computed here from the left-padded
    batch; every sampled token then takes the next text position of its row.
    """

    def __init__(self, model, tokenizer, image_processor, stop_ids: list[int], batch_size: int = 16):
        super().__init__(model, tokenizer, stop_ids, batch_size=batch_size)
        self.vision = VisionInputs(image_processor)
        self.image_token_id = int(model.config.image_token_id)

    def generate(
        self,
        prompts: list[list[int]],
        sampling: Sampling,
        seeds: list[int] | None = None,
        images: list[Sequence[Any]] | None = None,
    ) -> list[list[int]]:
        if images is None:
            images = [[] for _ in prompts]
        if len(images) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(images)} image lists")
        if seeds is None:
            base = 0 if sampling.seed is None else sampling.seed
            seeds = [base + i for i in range(len(prompts))]
        out: list[list[int]] = []
        for start in range(0, len(prompts), self.batch_size):
            end = start + self.batch_size
            out.extend(
                self._generate_vision_batch(prompts[start:end], images[start:end], sampling, seeds[start:end])
            )
        return out

    def _generate_vision_batch(
        self, prompts: list[list[int]], images: list[Sequence[Any]], sampling: Sampling, seeds: list[int]
    ) -> list[list[int]]:
        torch = self._torch
        n, width = len(prompts), max(len(p) for p in prompts)
        ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p) :] = 1
        flat = [im for row in images for im in row]
        vision = self.vision.batch(flat)
        grid = vision.get("image_grid_thw")
        per_image = self.vision.tokens(grid) if grid is not None else []
        k = 0
        for i, row in enumerate(images):
            want = sum(per_image[k : k + len(row)])
            k += len(row)
            have = sum(1 for t in prompts[i] if t == self.image_token_id)
            if have != want:
                raise ValueError(
                    f"prompt {i}: {have} image pad tokens but its {len(row)} image(s) need {want}; "
                    "render the prompt with the model's image_tokens"
                )
        mm_types = (ids == self.image_token_id).long() * mask
        ids, mask, mm_types = ids.to(self.device), mask.to(self.device), mm_types.to(self.device)
        vision = {k: v.to(self.device) for k, v in vision.items()}
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        positions, _ = base.model.get_rope_index(
            input_ids=ids,
            mm_token_type_ids=mm_types,
            image_grid_thw=vision.get("image_grid_thw"),
            attention_mask=mask,
        )
        next_pos = positions.amax(dim=(0, 2)) + 1  # per row: text resumes after the largest position
        generators = None
        if not sampling.greedy:
            generators = [torch.Generator(device=self.device).manual_seed(int(s)) for s in seeds]
        stop = torch.tensor(self.stop_ids, device=self.device)
        results: list[list[int]] = [[] for _ in range(n)]
        finished = torch.zeros(n, dtype=torch.bool, device=self.device)
        past = None
        step_ids, step_pos, extra = ids, positions, vision
        with torch.no_grad():
            for t in range(sampling.max_new_tokens):
                out = self.model(
                    input_ids=step_ids,
                    attention_mask=mask,
                    position_ids=step_pos,
                    past_key_values=past,
                    use_cache=True,
                    logits_to_keep=1,
                    **extra,
                )
                past = out.past_key_values
                logits = out.logits[:, -1, :].float()
                token = self._choose(logits, sampling, generators)
                if self._accept(token, finished, results, stop):
                    break
                step_ids = token[:, None]
                step_pos = (next_pos + t).view(1, n, 1).expand(3, n, 1)
                extra = {}
                mask = torch.cat([mask, torch.ones((n, 1), dtype=mask.dtype, device=mask.device)], dim=1)
        return results


def load_vlm_sampler(model_path: str, template: str | None = None, batch_size: int = 16):
    """(VLMBackend, Renderer) for a vision-language model folder or hub id, on the GPU if any."""
    import torch

    vlm = load_vlm(model_path, template=template)
    if torch.cuda.is_available():
        vlm.model = vlm.model.to("cuda")
    backend = VLMBackend(vlm.model, vlm.tokenizer, vlm.image_processor, vlm.stop_ids(), batch_size=batch_size)
    return backend, vlm.renderer()
