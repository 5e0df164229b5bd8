"""Generation backends: batches of prompt token ids in, sampled token ids out.

The rollout engine speaks only this interface, so a vLLM (or server) backend can replace the HF
one without touching rollouts. Prompts arrive as token ids from the renderer and completions go
back as token ids: nothing is re-tokenized between sampling and training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


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
    def generate(self, prompts: list[list[int]], sampling: Sampling) -> list[list[int]]:
        """New token ids per prompt, ending with a stop token when one was produced."""
        ...


class HFBackend:
    """`model.generate` with a KV cache and left padding, in micro-batches.

    Left padding keeps every prompt's last token at the same position, so one batch continues all
    of them; batched greedy output equals single-prompt output (tested).
    """

    def __init__(self, model, tokenizer, stop_ids: list[int], batch_size: int = 32):
        import torch

        self.model = model.eval()
        self.tokenizer = tokenizer
        self.stop_ids = list(stop_ids)
        self.batch_size = batch_size
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_ids[0]
        self.device = next(model.parameters()).device
        self._torch = torch

    def generate(self, prompts: list[list[int]], sampling: Sampling) -> list[list[int]]:
        out: list[list[int]] = []
        for start in range(0, len(prompts), self.batch_size):
            out.extend(self._generate_batch(prompts[start : start + self.batch_size], sampling))
        return out

    def _generate_batch(self, prompts: list[list[int]], sampling: Sampling) -> list[list[int]]:
        torch = self._torch
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p) :] = 1
        kwargs = {
            "max_new_tokens": sampling.max_new_tokens,
            "eos_token_id": self.stop_ids,
            "pad_token_id": self.pad_id,
        }
        if sampling.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=None)
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        with torch.no_grad():
            gen = self.model.generate(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device), **kwargs
            )
        results = []
        for row in gen[:, width:].tolist():
            cut = len(row)
            for j, tok in enumerate(row):
                if tok in self.stop_ids:
                    cut = j + 1  # keep the stop token: it is part of the turn the model produced
                    break
            results.append(row[:cut])
        return results
