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
    def generate(
        self, prompts: list[list[int]], sampling: Sampling, seeds: list[int] | None = None
    ) -> list[list[int]]:
        """New token ids per prompt, ending with a stop token when one was produced.

        `seeds` (one per prompt) make sampling reproducible per sequence, whatever else shares
        the batch: a resumed rollout samples exactly what an uninterrupted one would have.
        """
        ...


class HFBackend:
    """Batched decoding with a KV cache and left padding, in micro-batches.

    The decode loop is written out (rather than `model.generate`) because `generate` draws all
    rows from one global random stream, so a row's sample depends on its batch mates; here each
    row has its own seeded generator. Left padding keeps every prompt's last token at the same
    position; batched greedy output equals single-prompt output (tested).
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

    def generate(
        self, prompts: list[list[int]], sampling: Sampling, seeds: list[int] | None = None
    ) -> list[list[int]]:
        if seeds is None:
            base = 0 if sampling.seed is None else sampling.seed
            seeds = [base + i for i in range(len(prompts))]
        out: list[list[int]] = []
        for start in range(0, len(prompts), self.batch_size):
            end = start + self.batch_size
            out.extend(self._generate_batch(prompts[start:end], sampling, seeds[start:end]))
        return out

    def _generate_batch(
        self, prompts: list[list[int]], sampling: Sampling, seeds: list[int]
    ) -> list[list[int]]:
        torch = self._torch
        n, width = len(prompts), max(len(p) for p in prompts)
        ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        generators = None
        if not sampling.greedy:
            generators = [torch.Generator(device=self.device).manual_seed(int(s)) for s in seeds]
        stop = torch.tensor(self.stop_ids, device=self.device)
        results: list[list[int]] = [[] for _ in range(n)]
        finished = torch.zeros(n, dtype=torch.bool, device=self.device)
        past = None
        step_ids, step_pos = ids, positions
        with torch.no_grad():
            for _ in range(sampling.max_new_tokens):
                out = self.model(
                    input_ids=step_ids,
                    attention_mask=mask,
                    position_ids=step_pos,
                    past_key_values=past,
                    use_cache=True,
                )
                past = out.past_key_values
                logits = out.logits[:, -1, :].float()
                token = self._choose(logits, sampling, generators)
                token = torch.where(finished, torch.full_like(token, self.pad_id), token)
                for i in (~finished).nonzero().flatten().tolist():
                    results[i].append(int(token[i]))
                finished |= torch.isin(token, stop)
                if bool(finished.all()):
                    break
                step_ids = token[:, None]
                step_pos = step_pos[:, -1:] + 1
                mask = torch.cat([mask, torch.ones((n, 1), dtype=mask.dtype, device=mask.device)], dim=1)
        return results

    def _choose(self, logits, sampling: Sampling, generators):
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
    return HFBackend(model, tokenizer, renderer.end_of_turn_ids, batch_size=batch_size), renderer
