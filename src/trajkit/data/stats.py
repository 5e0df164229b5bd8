"""Statistics of trajectory sets: size (records, turns, characters, tokens), Wilson intervals and
the exact McNemar test for paired success."""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from trajkit.data.schema import AGENT, ROLES, Trajectory


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a rate (sound at small n and at 0% / 100%); (0, 0) for n = 0."""
    if n == 0:
        return (0.0, 0.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def success_rate(flags: Sequence[bool]) -> dict[str, Any]:
    """`{"k", "n", "rate", "ci95"}` of a list of outcomes, the interval Wilson's at 95%."""
    k, n = sum(bool(f) for f in flags), len(flags)
    lo, hi = wilson_interval(k, n)
    return {"k": k, "n": n, "rate": k / n if n else 0.0, "ci95": [round(lo, 4), round(hi, 4)]}


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: b and c are the discordant pairs (baseline only / method
    only succeeded); under no difference each is Binomial(b + c, 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired(base: dict[str, bool], other: dict[str, bool]) -> dict[str, Any]:
    """Discordant counts and the exact McNemar p over the tasks both were evaluated on."""
    tasks = sorted(set(base) & set(other))
    b = sum(base[t] and not other[t] for t in tasks)
    c = sum(other[t] and not base[t] for t in tasks)
    return {"n": len(tasks), "baseline_only": b, "method_only": c, "p": mcnemar_exact(b, c)}


@dataclass
class DataStats:
    records: int = 0
    turns: int = 0
    agent_turns: int = 0
    mean_turns: float = 0.0
    max_turns: int = 0
    chars: int = 0
    agent_chars: int = 0
    images: int = 0
    with_reward: int = 0
    successes: int = 0
    turns_by_role: dict[str, int] = field(default_factory=dict)
    # Only with a tokenizer; counted per turn text, without special tokens or a chat template.
    tokens: int | None = None
    agent_tokens: int | None = None
    tokenizer: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """Aligned `name  value` lines for people."""
        out = []
        for key, value in self.to_dict().items():
            if value is None:
                continue
            if isinstance(value, dict):
                value = ", ".join(f"{k}={v}" for k, v in value.items())
            elif isinstance(value, float):
                value = f"{value:.2f}"
            out.append(f"{key:<14}{value}")
        return out


def load_tokenizer(path: str | os.PathLike[str]) -> Any:
    from transformers import AutoTokenizer  # heavy; only when tokens are asked for

    return AutoTokenizer.from_pretrained(str(path))


def count_tokens(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    counts: list[int] = []
    for start in range(0, len(texts), 1024):
        encoded = tokenizer(list(texts[start : start + 1024]), add_special_tokens=False)["input_ids"]
        counts += [len(ids) for ids in encoded]
    return counts


def compute_stats(
    trajectories: Sequence[Trajectory], tokenizer: Any = None, tokenizer_name: str | None = None
) -> DataStats:
    stats = DataStats(records=len(trajectories))
    roles: Counter[str] = Counter()
    texts: list[str] = []
    is_agent: list[bool] = []
    for trajectory in trajectories:
        stats.turns += len(trajectory.turns)
        stats.max_turns = max(stats.max_turns, len(trajectory.turns))
        stats.images += len(trajectory.images)
        if trajectory.reward is not None:
            stats.with_reward += 1
        if trajectory.success:
            stats.successes += 1
        for turn in trajectory.turns:
            roles[turn.role] += 1
            stats.chars += len(turn.text)
            if turn.role == AGENT:
                stats.agent_turns += 1
                stats.agent_chars += len(turn.text)
            texts.append(turn.text)
            is_agent.append(turn.role == AGENT)
    stats.mean_turns = stats.turns / stats.records if stats.records else 0.0
    stats.turns_by_role = {role: roles[role] for role in ROLES if roles[role]}
    if tokenizer is not None:
        counts = count_tokens(tokenizer, texts)
        stats.tokens = sum(counts)
        stats.agent_tokens = sum(n for n, agent in zip(counts, is_agent, strict=True) if agent)
        stats.tokenizer = tokenizer_name or getattr(tokenizer, "name_or_path", None)
    return stats


__all__ = ["DataStats", "compute_stats", "count_tokens", "load_tokenizer"]
