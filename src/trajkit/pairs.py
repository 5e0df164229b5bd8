"""Contrastive pairs: a pure function of stored trajectories.

Strategies:
- `trajectory` (ETO): for each rollout, compare with the expert trajectory of the same task. A
  rollout with a lower reward is `rejected` against the expert as `chosen`; a rollout with a
  higher reward becomes `chosen` against the expert; equal rewards (ties) make no pair. The
  rejected side is capped at the chosen side's agent turns + `k` agent turns, so a long flailing
  failure does not dominate the sum of log-probs.
- `self`: among the N rollouts of one task, best vs worst when their rewards differ (no expert).

The shared `prompt` is the longest common opening of both sides that ends with a non-agent turn
(for ETO data: instruction, "OK", task), so chosen and rejected both start with an agent turn.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from trajkit.data.schema import AGENT, Trajectory, Turn

STRATEGIES = ("trajectory", "self")


@dataclass
class PairResult:
    pairs: list[dict[str, Any]] = field(default_factory=list)
    win: int = 0  # rollout reward > expert reward
    tie: int = 0
    lose: int = 0
    missing_expert: int = 0  # rollouts whose task has no expert trajectory

    def counts(self) -> dict[str, int]:
        return {"win": self.win, "tie": self.tie, "lose": self.lose, "pairs": len(self.pairs)}


def reward_of(traj: Trajectory, default: float | None = None) -> float:
    if traj.reward is not None:
        return float(traj.reward)
    if traj.success is not None:
        return 1.0 if traj.success else 0.0
    if default is not None:
        return default
    raise ValueError(f"trajectory {traj.id!r}: has neither reward nor success")


def task_key(traj: Trajectory) -> str:
    return traj.task_id or traj.id


def _file_digest(path: str) -> str | None:
    import hashlib

    try:
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except OSError:
        return None


def _same_images(a: str | list[str] | None, b: str | list[str] | None) -> bool:
    """Equal paths, or files with equal bytes: an expert's screenshot and a rollout's screenshot of
    the same first screen are one image stored twice (GUI envs write a file per observation)."""
    if a == b:
        return True
    left = [a] if isinstance(a, str) else list(a or [])
    right = [b] if isinstance(b, str) else list(b or [])
    if len(left) != len(right):
        return False
    for x, y in zip(left, right, strict=True):
        if x != y and (_file_digest(x) is None or _file_digest(x) != _file_digest(y)):
            return False
    return True


def _same(a: Turn, b: Turn) -> bool:
    return a.role == b.role and a.text == b.text and _same_images(a.image, b.image)


def split_prompt(a: list[Turn], b: list[Turn]) -> int:
    """Length of the longest common opening of `a` and `b` that ends on a non-agent turn."""
    n = 0
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if not _same(x, y):
            break
        if x.role != AGENT:
            n = i + 1
    return n


def cap_agent_turns(turns: list[Turn], max_agent_turns: int | None = None) -> list[Turn]:
    """Turns up to and including the `max_agent_turns`-th agent turn (all when None), ending on an
    agent turn: a trailing observation is never scored, so it is left out."""
    out: list[Turn] = []
    seen = 0
    for t in turns:
        if t.role == AGENT:
            if max_agent_turns is not None and seen == max_agent_turns:
                break
            seen += 1
        out.append(t)
    while out and out[-1].role != AGENT:
        out.pop()
    return out


def _turn_dicts(turns: Iterable[Turn]) -> list[dict[str, Any]]:
    return [t.to_dict() for t in turns]


def make_pair(
    chosen: Trajectory, rejected: Trajectory, strategy: str, extra_turns: int | None
) -> dict[str, Any] | None:
    n = split_prompt(chosen.turns, rejected.turns)
    if n == 0:
        raise ValueError(
            f"{chosen.id!r} and {rejected.id!r} share no opening turns; they are not the same task"
        )
    chosen_turns = cap_agent_turns(chosen.turns[n:])
    limit = None
    if extra_turns is not None:
        limit = sum(t.role == AGENT for t in chosen_turns) + extra_turns
    rejected_turns = cap_agent_turns(rejected.turns[n:], limit)
    if not chosen_turns or not rejected_turns:
        return None
    return {
        "task_id": task_key(chosen),
        "prompt": _turn_dicts(chosen.turns[:n]),
        "chosen": _turn_dicts(chosen_turns),
        "rejected": _turn_dicts(rejected_turns),
        "chosen_reward": reward_of(chosen),
        "rejected_reward": reward_of(rejected),
        "strategy": strategy,
        "chosen_id": chosen.id,
        "rejected_id": rejected.id,
    }


def build_pairs(
    rollouts: list[Trajectory],
    expert: list[Trajectory] | None = None,
    strategy: str = "trajectory",
    extra_turns: int = 5,
    expert_reward: float = 1.0,
) -> PairResult:
    """Pairs and win/tie/lose counts. `expert_reward` is assumed for expert records that carry no
    reward (expert demonstrations are successes)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown pair strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    result = PairResult()
    if strategy == "trajectory":
        if expert is None:
            raise ValueError("strategy 'trajectory' needs expert trajectories")
        by_task = {task_key(e): e for e in expert}
        for rollout in rollouts:
            ref = by_task.get(task_key(rollout))
            if ref is None:
                result.missing_expert += 1
                continue
            r_roll, r_exp = reward_of(rollout), reward_of(ref, default=expert_reward)
            if r_roll > r_exp:
                result.win += 1
                pair = make_pair(rollout, ref, strategy, None)
            elif r_roll < r_exp:
                result.lose += 1
                pair = make_pair(ref, rollout, strategy, extra_turns)
            else:
                result.tie += 1
                continue
            if pair is not None:
                pair["chosen_reward"], pair["rejected_reward"] = max(r_roll, r_exp), min(r_roll, r_exp)
                result.pairs.append(pair)
        return result

    groups: dict[str, list[Trajectory]] = defaultdict(list)
    for rollout in rollouts:
        groups[task_key(rollout)].append(rollout)
    for _, group in sorted(groups.items()):
        ranked = sorted(group, key=reward_of)
        worst, best = ranked[0], ranked[-1]
        if reward_of(best) == reward_of(worst):
            result.tie += 1
            continue
        pair = make_pair(best, worst, strategy, None)
        if pair is not None:
            result.pairs.append(pair)
    return result
