"""One decode loop for the HF backends, with a prefill strategy per kind of prompt.

`DecodingBackend` owns what every HF backend shares: micro-batches, per-row seeded sampling, stop
handling, a full-width attention mask switched on column by column, a preallocated `StaticCache`,
and KV caches kept per episode `key` between calls. What differs between text and vision prompts
is only how a batch is laid out before the first step (the prefill):

- `TextPrefill`: token ids with 1-D positions;
- `VisionPrefill`: Qwen2-VL prompts with `<|image_pad|>` runs and their images, 3-D (M-RoPE)
  positions from the model's `get_rope_index`.

Both reuse the longest cached prefix of a keyed row: each row is laid out as
[pad][its cache][pad][its new tokens], with explicit positions and an attention mask that hides the
pads, so every row sees exactly its own tokens and only the new suffix is prefilled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol


@dataclass
class Kept:
    """A row's KV kept between calls under its key."""

    ids: list[int]  # prompt + the generated tokens that went through the model
    layers: list[tuple[Any, Any]]  # per layer (k, v) of shape [heads, len(ids), dim]
    images: list[Any] = field(default_factory=list)  # vision: the prompt's images, span order
    # Vision: per token, the next free rope position after it (running max + 1), so a suffix can
    # resume after any cut; None for text, where a token's position is its index.
    after: Any = None


class Reuse(NamedTuple):
    """What a row reuses of its kept cache: `n` tokens, their per-layer KV, the kept row."""

    n: int
    layers: list[tuple[Any, Any]] | None
    kept: Kept | None


@dataclass
class Batch:
    """A laid-out micro-batch: what the decode loop feeds the model."""

    ids: Any  # [n, new_w] new tokens, left-padded
    mask: Any  # [n, width]: cache + new tokens + room for every sampled token
    positions: Any  # [n, new_w] (text) or [3, n, new_w] (M-RoPE)
    next_pos: Any  # [n]: position of each row's first sampled token
    past: Any  # StaticCache of `width` columns, the reused prefixes in its first past_w
    prompt_w: int  # past_w + new_w: the first sampled token's column
    reuse: list[Reuse]  # per row: what it reused of its kept cache
    extra: dict[str, Any] = field(default_factory=dict)  # inputs of the prefill step only


class Prefill(Protocol):
    """How a kind of prompt is checked, matched against a kept row and laid out for the loop."""

    def check(self, prompts: list[list[int]], images: list[Sequence[Any]] | None) -> list[list[Any]]:
        """The image lists to use, one per prompt; ValueError when they do not fit the prompts."""

    def reusable(self, kept: Kept | None, prompt: list[int], images: Sequence[Any]) -> int:
        """How many leading tokens of `prompt` the kept row can supply."""

    def layout(self, backend, prompts, images, reuse: list[Reuse], sampling) -> Batch: ...

    def step_positions(self, pos) -> Any:
        """Position ids of one decode step from each row's text position `pos` ([n])."""

    def kept(self, batch: Batch, row: int, prompt: list[int], gen: list[int], layers, images) -> Kept:
        """What to keep of `row` (its prompt and the generated tokens `gen` it was fed)."""


def _row_cache(model, reuse: list[Reuse], past_w: int, width: int, device):
    """A preallocated cache of `width` columns holding each row's cached prefix, left-padded to
    `past_w`. Preallocated because a growing cache copies the whole batch's KV every decode step
    (measured: a fifth of a tiny model's batched decode time)."""
    from transformers import StaticCache

    cache = StaticCache(config=model.config, max_cache_len=width)
    if not past_w:
        return cache
    template = next(r.layers for r in reuse if r.layers is not None)
    for layer, (k0, v0) in enumerate(template):
        k = k0.new_zeros((len(reuse), k0.shape[0], past_w, k0.shape[2]))
        v = v0.new_zeros((len(reuse), v0.shape[0], past_w, v0.shape[2]))
        for i, (c, layers, _) in enumerate(reuse):
            if c:
                k[i, :, past_w - c :] = layers[layer][0]
                v[i, :, past_w - c :] = layers[layer][1]
        cache.update(k.to(device), v.to(device), layer)
    return cache


def _common_prefix(kept: Kept | None, prompt: list[int]) -> int:
    """Tokens of `kept` shared with `prompt`, leaving at least one prompt token to run (its
    logits choose the first new token)."""
    if kept is None:
        return 0
    limit = min(len(kept.ids), len(prompt) - 1)
    n = 0
    while n < limit and kept.ids[n] == prompt[n]:
        n += 1
    return n


class TextPrefill:
    """Token-id prompts with 1-D positions: a row's positions continue its cached prefix."""

    def check(self, prompts: list[list[int]], images: list[Sequence[Any]] | None) -> list[list[Any]]:
        if images is not None and any(len(row) for row in images):
            raise ValueError("this backend reads text only; give images to a vision backend (VLMBackend)")
        return [[] for _ in prompts]

    def reusable(self, kept: Kept | None, prompt: list[int], images: Sequence[Any]) -> int:
        return _common_prefix(kept, prompt)

    def layout(self, backend, prompts, images, reuse, sampling) -> Batch:
        torch = backend._torch
        n = len(prompts)
        cached = [r.n for r in reuse]
        suffixes = [p[c:] for p, c in zip(prompts, cached, strict=True)]
        past_w, new_w = max(cached), max(len(s) for s in suffixes)
        ids = torch.full((n, new_w), backend.pad_id, dtype=torch.long)
        # Full width from the start: decode steps switch a column on instead of growing the mask.
        width = past_w + new_w + sampling.max_new_tokens
        mask = torch.zeros((n, width), dtype=torch.long)
        positions = torch.zeros((n, new_w), dtype=torch.long)
        for i, (c, suffix) in enumerate(zip(cached, suffixes, strict=True)):
            ids[i, new_w - len(suffix) :] = torch.tensor(suffix, dtype=torch.long)
            mask[i, past_w - c : past_w] = 1
            mask[i, past_w + new_w - len(suffix) :] = 1
            positions[i, new_w - len(suffix) :] = torch.arange(c, c + len(suffix))
        past = _row_cache(backend.model, reuse, past_w, width, backend.device)
        ids, mask, positions = ids.to(backend.device), mask.to(backend.device), positions.to(backend.device)
        return Batch(ids, mask, positions, positions[:, -1] + 1, past, past_w + new_w, reuse)

    def step_positions(self, pos):
        return pos[:, None]

    def kept(self, batch: Batch, row: int, prompt: list[int], gen: list[int], layers, images) -> Kept:
        return Kept(list(prompt) + gen, layers)


class VisionPrefill:
    """Qwen2-VL prompts: ids with `<|image_pad|>` runs sized by the image processor, images in span
    order, 3-D (M-RoPE) positions from the model's `get_rope_index`.

    A kept row stores its images and, per token, the next free position. M-RoPE positions are
    translation-invariant: the positions of [prefix][suffix] are the prefix's, then the suffix's
    own (computed alone) shifted by the prefix's next free position, provided the cut falls
    between whole image spans. So a cached row prefills only its suffix (its new screenshot
    included), and reuse stops before the first image span that is not the same image at the same
    place (equal ids say nothing about pixels).
    """

    def __init__(self, vision, image_token_id: int):
        self.vision = vision  # policy.vlm.VisionInputs
        self.image_token_id = int(image_token_id)

    def check(self, prompts: list[list[int]], images: list[Sequence[Any]] | None) -> list[list[Any]]:
        if images is None:
            return [[] for _ in prompts]
        if len(images) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(images)} image lists")
        for i, (prompt, row) in enumerate(zip(prompts, images, strict=True)):
            want = sum(self.vision.tokens(self.vision.one(im)[1])[0] for im in row)
            have = sum(1 for t in prompt if t == self.image_token_id)
            if have != want:
                raise ValueError(
                    f"prompt {i}: {have} image pad tokens but its {len(row)} image(s) need {want}; "
                    "render the prompt with the model's image_tokens"
                )
        return [list(row) for row in images]

    def spans(self, ids: Sequence[int]) -> list[tuple[int, int]]:
        """[start, end) of every `<|image_pad|>` run."""
        out, start = [], None
        for j, t in enumerate(ids):
            if t == self.image_token_id:
                if start is None:
                    start = j
            elif start is not None:
                out.append((start, j))
                start = None
        if start is not None:
            out.append((start, len(ids)))
        return out

    def reusable(self, kept: Kept | None, prompt: list[int], images: Sequence[Any]) -> int:
        n = _common_prefix(kept, prompt)
        if not n:
            return 0
        new = self.spans(prompt)
        old = self.spans(kept.ids)[: len(kept.images)]  # runs past the images were sampled tokens
        for k in range(max(len(new), len(old))):
            a = new[k] if k < len(new) else None
            b = old[k] if k < len(old) else None
            start = min(s[0] for s in (a, b) if s is not None)
            if start >= n:
                break
            if a != b or a[1] > n or not _same_image(images[k], kept.images[k]):
                return start
        return n

    def layout(self, backend, prompts, images, reuse, sampling) -> Batch:
        torch = backend._torch
        n = len(prompts)
        cached = [r.n for r in reuse]
        suffixes = [p[c:] for p, c in zip(prompts, cached, strict=True)]
        past_w, new_w = max(cached), max(len(s) for s in suffixes)
        ids = torch.full((n, new_w), backend.pad_id, dtype=torch.long)
        width = past_w + new_w + sampling.max_new_tokens
        mask = torch.zeros((n, width), dtype=torch.long)
        shift = torch.zeros(n, dtype=torch.long)
        new_images: list[Any] = []
        for i, (c, suffix) in enumerate(zip(cached, suffixes, strict=True)):
            ids[i, new_w - len(suffix) :] = torch.tensor(suffix, dtype=torch.long)
            mask[i, past_w - c : past_w] = 1
            mask[i, past_w + new_w - len(suffix) :] = 1
            if c:  # the suffix resumes at the prefix's next free position
                shift[i] = int(reuse[i].kept.after[c - 1])
            done = sum(1 for s, _ in self.spans(prompts[i]) if s < c)  # spans wholly in the cache
            new_images.extend(images[i][done:])
        new_mask = mask[:, past_w : past_w + new_w]
        mm_types = (ids == self.image_token_id).long() * new_mask
        vision = {k: v.to(backend.device) for k, v in self.vision.batch(new_images).items()}
        ids, mask, mm_types = ids.to(backend.device), mask.to(backend.device), mm_types.to(backend.device)
        base = backend.model.get_base_model() if hasattr(backend.model, "get_base_model") else backend.model
        positions, _ = base.model.get_rope_index(
            input_ids=ids,
            mm_token_type_ids=mm_types,
            image_grid_thw=vision.get("image_grid_thw"),
            attention_mask=new_mask.to(backend.device),
        )
        positions = positions + shift.to(positions.device).view(1, n, 1) * new_mask.to(positions.device)
        next_pos = positions.amax(dim=(0, 2)) + 1  # per row: text resumes after the largest position
        past = _row_cache(backend.model, reuse, past_w, width, backend.device)
        return Batch(ids, mask, positions, next_pos, past, past_w + new_w, reuse, vision)

    def step_positions(self, pos):
        return pos.view(1, -1, 1).expand(3, -1, 1)

    def kept(self, batch: Batch, row: int, prompt: list[int], gen: list[int], layers, images) -> Kept:
        import torch

        c, _, old = batch.reuse[row]
        new = batch.positions[:, row, batch.ids.shape[1] - (len(prompt) - c) :]
        parts = [old.after[:c]] if c else []
        parts.append(new.amax(0).cummax(0).values.cpu() + 1)
        parts.append(int(batch.next_pos[row]) + 1 + torch.arange(len(gen)))
        return Kept(list(prompt) + gen, layers, list(images), torch.cat(parts))


def _same_image(a: Any, b: Any) -> bool:
    """Paths compare by name (VisionInputs caches pixels per path, too); other images by identity."""
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return a is b


class DecodingBackend:
    """The decode loop shared by every HF backend; `prefill` lays out each micro-batch.

    The loop is written out (rather than `model.generate`) for two reasons. `generate` draws all
    rows from one global random stream, so a row's sample depends on its batch mates; here each
    row has its own seeded generator. And a multi-turn episode's next prompt extends its previous
    prompt and completion token for token (the renderer guarantees it), so with `keys` the backend
    keeps each episode's KV cache between calls and prefills only the new suffix (the observation
    and the next turn header): a step's prefill cost no longer grows with the episode.
    """

    # 1: the prefill step computes logits for its last column only. Text leaves it off so that its
    # prefill runs the very ops it always ran (rollouts stay token-for-token reproducible).
    logits_to_keep: int | None = None

    def __init__(
        self,
        model,
        tokenizer,
        stop_ids: list[int],
        prefill: Prefill,
        batch_size: int = 32,
        prefix_cache: bool = True,
        max_cached_tokens: int = 1_000_000,
    ):
        import torch

        self.model = model.eval()
        self.tokenizer = tokenizer
        self.stop_ids = list(stop_ids)
        self.prefill = prefill
        self.batch_size = batch_size
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_ids[0]
        self.device = next(model.parameters()).device
        self.prefix_cache = prefix_cache
        self.max_cached_tokens = max_cached_tokens
        self._cache: dict[str, Kept] = {}
        self.stats = {"prompt_tokens": 0, "prefilled_tokens": 0}
        self._torch = torch

    def forget(self, key: str) -> None:
        """Drop an episode's kept KV (it finished)."""
        self._cache.pop(key, None)

    def generate(
        self,
        prompts: list[list[int]],
        sampling,
        seeds: list[int] | None = None,
        keys: list[str] | None = None,
        images: list[Sequence[Any]] | None = None,
    ) -> list[list[int]]:
        """See `trajkit.policy.backends.GenerationBackend`."""
        images = self.prefill.check(prompts, images)
        if seeds is None:
            base = 0 if sampling.seed is None else sampling.seed
            seeds = [base + i for i in range(len(prompts))]
        if keys is None or not self.prefix_cache:
            keys = [None] * len(prompts)
        if len(seeds) != len(prompts) or len(keys) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds and {len(keys)} keys")
        out: list[list[int]] = []
        for start in range(0, len(prompts), self.batch_size):
            end = start + self.batch_size
            out.extend(
                self._generate_batch(
                    prompts[start:end], images[start:end], sampling, seeds[start:end], keys[start:end]
                )
            )
        self._evict()
        return out

    def _reuse(self, key: str | None, prompt: list[int], images) -> Reuse:
        """What `prompt` can reuse of `key`'s kept row, its KV cut to the shared prefix."""
        kept = self._cache.get(key) if key is not None else None
        n = self.prefill.reusable(kept, prompt, images)
        if n == 0:
            return Reuse(0, None, None)
        return Reuse(n, [(k[:, :n], v[:, :n]) for k, v in kept.layers], kept)

    def _generate_batch(self, prompts, images, sampling, seeds, keys) -> list[list[int]]:
        reuse = [self._reuse(k, p, im) for k, p, im in zip(keys, prompts, images, strict=True)]
        self.stats["prompt_tokens"] += sum(len(p) for p in prompts)
        self.stats["prefilled_tokens"] += sum(len(p) - r.n for p, r in zip(prompts, reuse, strict=True))
        batch = self.prefill.layout(self, prompts, images, reuse, sampling)
        results, past, fed = self._decode(batch, sampling, seeds)
        if any(k is not None for k in keys):
            self._keep(batch, keys, prompts, images, results, past, fed)
        return results

    def _decode(self, batch: Batch, sampling, seeds: list[int]):
        """The decode loop: (sampled ids per row, the cache, generated tokens fed to the model)."""
        torch = self._torch
        n = batch.ids.shape[0]
        generators = None
        if not sampling.greedy:
            generators = [torch.Generator(device=self.device).manual_seed(int(s)) for s in seeds]
        stop = torch.tensor(self.stop_ids, device=self.device)
        results: list[list[int]] = [[] for _ in range(n)]
        finished = torch.zeros(n, dtype=torch.bool, device=self.device)
        mask, past = batch.mask, batch.past
        step_ids, step_pos, extra = batch.ids, batch.positions, batch.extra
        keep_logits = {} if self.logits_to_keep is None else {"logits_to_keep": self.logits_to_keep}
        fed = 0  # generated tokens that went through the model (all but the last sampled one)
        with torch.no_grad():
            for step in range(sampling.max_new_tokens):
                if step:
                    fed += 1
                out = self.model(
                    input_ids=step_ids,
                    attention_mask=mask,
                    position_ids=step_pos,
                    past_key_values=past,
                    use_cache=True,
                    **keep_logits,
                    **extra,
                )
                past = out.past_key_values
                logits = out.logits[:, -1, :].float()
                token = self._choose(logits, sampling, generators)
                if self._accept(token, finished, results, stop):
                    break
                step_ids = token[:, None]
                step_pos = self.prefill.step_positions(batch.next_pos + step)
                extra = {}
                mask[:, batch.prompt_w + step] = 1
        return results, past, fed

    def _keep(self, batch: Batch, keys, prompts, images, results, past, fed: int) -> None:
        """Store each keyed row's KV for its prompt and the generated tokens it was fed."""
        torch = self._torch
        for i, key in enumerate(keys):
            if key is None:
                continue
            n_gen = min(len(results[i]), fed)
            cols = batch.mask[i, : batch.prompt_w].nonzero().flatten()
            cols = torch.cat([cols, torch.arange(batch.prompt_w, batch.prompt_w + n_gen, device=cols.device)])
            layers = [
                (layer.keys[i][:, cols].clone(), layer.values[i][:, cols].clone()) for layer in past.layers
            ]
            gen = results[i][:n_gen]
            self._cache[key] = self.prefill.kept(batch, i, prompts[i], gen, layers, images[i])

    def _evict(self) -> None:
        total = sum(len(kept.ids) for kept in self._cache.values())
        for key in list(self._cache):  # oldest first (dicts keep insertion order)
            if total <= self.max_cached_tokens:
                break
            total -= len(self._cache.pop(key).ids)

    def _accept(self, token, finished, results: list[list[int]], stop) -> bool:
        """Record a decode step's tokens for unfinished rows (finished rows get padding, in place);
        True when every row has produced a stop token."""
        torch = self._torch
        token.copy_(torch.where(finished, torch.full_like(token, self.pad_id), token))
        for i in (~finished).nonzero().flatten().tolist():
            results[i].append(int(token[i]))
        finished |= torch.isin(token, stop)
        return bool(finished.all())

    def _choose(self, logits, sampling, generators):
        torch = self._torch
        if generators is None:
            return logits.argmax(-1)
        probs = torch.softmax(logits / sampling.temperature, dim=-1)
        if sampling.top_p < 1.0:
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            keep = sorted_probs.cumsum(-1) - sorted_probs < sampling.top_p  # always keeps the top token
            sorted_probs = sorted_probs * keep
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        picks = [torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(generators)]
        return torch.cat(picks)
