"""Generation backends: batches of prompt token ids in, sampled token ids out.

The rollout engines speak only `GenerationBackend`, so a vLLM (or server) backend can replace the
HF ones without touching rollouts. Prompts arrive as token ids from the renderer and completions go
back as token ids: nothing is re-tokenized between sampling and training. `HFBackend` (text) and
`policy.vlm.VLMBackend` (Qwen2-VL) share one decode loop, `policy.decode`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from trajkit.policy.decode import DecodingBackend, TextPrefill


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    max_new_tokens: int = 128
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


class GenerationBackend(Protocol):
    """What the rollout engines call to sample: token ids in, token ids out.

    - `prompts`: one list of token ids per sequence, exactly as the renderer wrote them (chat
      template, turn header and any forced prefix included). Nothing is re-tokenized: a backend
      never sees or returns text.
    - returns: per prompt, the sampled ids, in order, exactly as sampled. When a stop id (the
      backend's `stop_ids`, e.g. end of turn) is sampled, it is the last id of the completion;
      otherwise the completion is `sampling.max_new_tokens` long. Padding is never returned.
    - `seeds`: one per prompt. A sequence's sample depends only on its prompt, its seed, its images
      and the sampling settings, never on its batch mates or on how the backend batches: a resumed
      rollout samples exactly what an uninterrupted one would have. None: `sampling.seed + i`.
      Greedy decoding (`temperature=0`) ignores seeds.
    - `keys`: one per prompt (e.g. the episode id), or None. A backend may keep work (a KV cache)
      under a key so that the key's next prompt, which usually extends this prompt and completion
      token for token, only prefills its new suffix. Reuse must not change the output; a backend
      may ignore keys. `forget(key)` drops what was kept (the episode finished).
    - `images`: one list per prompt, the images of its vision spans in span order (paths or PIL
      images; `Renderer.prompt(...).images`), or None. A prompt's `<|image_pad|>` runs are sized
      for them already. Text-only backends raise ValueError when any list is non-empty.
    """

    def generate(
        self,
        prompts: list[list[int]],
        sampling: Sampling,
        seeds: list[int] | None = None,
        keys: list[str] | None = None,
        images: list[list] | None = None,
    ) -> list[list[int]]: ...

    def forget(self, key: str) -> None: ...


class HFBackend(DecodingBackend):
    """Text prompts on a transformers causal LM: the shared decode loop (`policy.decode`) with the
    text prefill, in micro-batches of `batch_size`, keeping KV per key unless `prefix_cache` is off
    (up to `max_cached_tokens` in all, oldest keys dropped first)."""

    def __init__(
        self,
        model,
        tokenizer,
        stop_ids: list[int],
        batch_size: int = 32,
        prefix_cache: bool = True,
        max_cached_tokens: int = 1_000_000,
    ):
        super().__init__(
            model,
            tokenizer,
            stop_ids,
            TextPrefill(),
            batch_size=batch_size,
            prefix_cache=prefix_cache,
            max_cached_tokens=max_cached_tokens,
        )


def load_sampler(model_path: str, template: str | None = None, batch_size: int = 32):
    """(HFBackend, Renderer) for a model folder or hub id, on the GPU when there is one."""
    import torch
    from transformers import AutoModelForCausalLM

    from trajkit.policy.models import infer_template, load_tokenizer, resolve_dtype
    from trajkit.render import Renderer

    tokenizer = load_tokenizer(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=resolve_dtype("auto"))
    if torch.cuda.is_available():
        model = model.to("cuda")
    renderer = Renderer(tokenizer, template or infer_template(model_path, tokenizer))
    return HFBackend(model, tokenizer, renderer.stop_ids, batch_size=batch_size), renderer
