"""Metrics over stored trajectories: pure functions, no model, no env."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from trajkit.data.schema import Trajectory
from trajkit.data.stats import wilson_interval


def summarize(trajectories: list[Trajectory]) -> dict[str, Any]:
    """Success rate (with CI), mean reward, mean steps and failures, overall and per task family."""

    def block(trajs: list[Trajectory]) -> dict[str, Any]:
        n = len(trajs)
        wins = sum(bool(t.success) for t in trajs)
        lo, hi = wilson_interval(wins, n)
        return {
            "n": n,
            "success_rate": wins / n if n else 0.0,
            "success_ci95": [round(lo, 4), round(hi, 4)],
            "mean_reward": sum(float(t.reward or 0.0) for t in trajs) / n if n else 0.0,
            # ETO reports the average final reward x100
            "reward_x100": 100 * sum(float(t.reward or 0.0) for t in trajs) / n if n else 0.0,
            "mean_steps": sum(t.metadata.get("steps", 0) for t in trajs) / n if n else 0.0,
            "env_errors": sum("error" in t.metadata for t in trajs),
        }

    out = block(trajectories)
    families: dict[str, list[Trajectory]] = defaultdict(list)
    for t in trajectories:
        families[str(t.metadata.get("family", "all"))].append(t)
    if len(families) > 1:
        out["by_family"] = {name: block(ts) for name, ts in sorted(families.items())}
    return out
