"""Contrastive pairs: a pure function of stored trajectories.

Strategies:
- `trajectory` (ETO): for each rollout, compare with the expert trajectory of the same task. A
  rollout with a lower reward is `rejected` against the expert as `chosen`; a rollout with a
  higher reward becomes `chosen` against the expert; equal rewards (ties) make no pair. The
  rejected side is capped at the chosen side's agent turns + `k` agent turns, so a long flailing
  failure does not dominate the sum of log-probs.
- `self`: among the N rollouts of one task, best vs worst when their rewards differ (no expert).
- `step_mc` (IPR-style step pairs, `step_pairs`): from step probes (`rollout.steps`), the expert's
  step against the policy's own step in the same state where the policy's step has the lower
  Monte-Carlo return; prompt = the expert's turns before the step, each side one agent turn.

The shared `prompt` is the longest common opening of both sides that ends with a non-agent turn
(for ETO data: instruction, "OK", task), so chosen and rejected both start with an agent turn. A
rollout that was shown an in-context example (metadata `icl_turns`) is paired without it, as ETO
does: the policy is trained on the prompt of its expert data.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from trajkit.data.schema import AGENT, Trajectory, Turn
from trajkit.envs.base import ICL_SPAN, without_example

STRATEGIES = ("trajectory", "self", "step_mc")


@dataclass
class PairResult:
    pairs: list[dict[str, Any]] = field(default_factory=list)
    win: int = 0  # rollout reward > expert reward
    tie: int = 0
    lose: int = 0
    missing_expert: int = 0  # rollouts whose task has no expert trajectory
    env_errors: int = 0  # rollouts the env failed (crash, hang): not the policy's doing, no pair

    def counts(self) -> dict[str, int]:
        out = {"win": self.win, "tie": self.tie, "lose": self.lose, "pairs": len(self.pairs)}
        return {**out, "env_errors": self.env_errors} if self.env_errors else out


def reward_of(traj: Trajectory, default: float | None = None) -> float:
    if traj.reward is not None:
        reward = float(traj.reward)
        if reward != reward or reward in (float("inf"), float("-inf")):  # NaN would make a tie
            raise ValueError(f"trajectory {traj.id!r}: reward is {reward}; expected a finite number")
        return reward
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


def _trained_view(traj: Trajectory) -> list[Turn]:
    """The trajectory's turns without an in-context example it was shown."""
    return without_example(traj.turns, traj.metadata.get(ICL_SPAN))


def _turn_dicts(turns: Iterable[Turn]) -> list[dict[str, Any]]:
    return [t.to_dict() for t in turns]


def make_pair(
    chosen: Trajectory, rejected: Trajectory, strategy: str, extra_turns: int | None
) -> dict[str, Any] | None:
    """`extra_turns`: the rejected side keeps the chosen side's agent turns + this many (None:
    all of them)."""
    chosen_all, rejected_all = _trained_view(chosen), _trained_view(rejected)
    n = split_prompt(chosen_all, rejected_all)
    if n == 0:
        raise ValueError(
            f"{chosen.id!r} and {rejected.id!r} share no opening turns; they are not the same task"
        )
    chosen_turns = cap_agent_turns(chosen_all[n:])
    limit = None
    if extra_turns is not None:
        limit = sum(t.role == AGENT for t in chosen_turns) + extra_turns
    rejected_turns = cap_agent_turns(rejected_all[n:], limit)
    if not chosen_turns or not rejected_turns:
        return None
    return {
        "task_id": task_key(chosen),
        "prompt": _turn_dicts(chosen_all[:n]),
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
    extra_turns: int | None = 5,
    expert_reward: float = 1.0,
) -> PairResult:
    """Pairs and win/tie/lose counts. `expert_reward` is assumed for expert records that carry no
    reward (expert demonstrations are successes)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown pair strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if strategy == "step_mc":
        raise ValueError("strategy 'step_mc' pairs come from scored step probes: see pairs.step_pairs")
    result = PairResult()
    failed = [r for r in rollouts if r.metadata.get("error")]  # may hold no turns at all
    result.env_errors = len(failed)
    rollouts = [r for r in rollouts if not r.metadata.get("error")]
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


def step_pairs(probes: Iterable[dict[str, Any]], margin: float = 0.0) -> PairResult:
    """Pairs from scored step probes (records of `rollout.steps.score_steps`): chosen = the expert's
    step, rejected = the policy's, where the policy's step returns less than the expert's by more
    than `margin`; a probe where the policy's step does as well is a tie (a harmless difference),
    and one where it does better a win (no pair: the expert is the reference)."""
    result = PairResult()
    for probe in probes:
        expert_return, agent_return = probe.get("expert_return"), probe.get("agent_return")
        if expert_return is None or agent_return is None:
            result.missing_expert += 1
            continue
        if agent_return > expert_return:
            result.win += 1
        elif expert_return - agent_return > margin:
            result.lose += 1
            result.pairs.append(
                {
                    "task_id": probe["task_id"],
                    "prompt": probe["prompt"],
                    "chosen": [probe["expert"]],
                    "rejected": [probe["agent"]],
                    "chosen_reward": expert_return,
                    "rejected_reward": agent_return,
                    "strategy": "step_mc",
                    "step": probe["step"],
                    "chosen_id": f"{probe['id']}:expert",
                    "rejected_id": f"{probe['id']}:agent",
                }
            )
        else:
            result.tie += 1
    return result
