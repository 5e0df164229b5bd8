"""Metrics are pure functions of stored trajectories."""

from __future__ import annotations

import pytest

from trajkit.data.schema import Trajectory, Turn
from trajkit.evaluate import summarize, wilson_interval


def traj(i, success, family, reward=None, error=False):
    meta = {"steps": 3, "family": family}
    if error:
        meta["error"] = "step failed: EnvError: timeout"
    reward = (1.0 if success else 0.0) if reward is None else reward
    return Trajectory(
        f"t{i}", [Turn("agent", "x")], task_id=f"t{i}", reward=reward, success=success, metadata=meta
    )


def test_wilson_interval():
    assert wilson_interval(0, 0) == (0.0, 0.0)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and 0.25 < hi < 0.35
    lo, hi = wilson_interval(10, 10)
    assert 0.65 < lo < 0.75 and hi == pytest.approx(1.0)
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)


def test_summarize_overall_and_by_family():
    trajs = [
        traj(0, True, "heat"),
        traj(1, False, "heat", reward=0.5),
        traj(2, True, "cool"),
        traj(3, False, "cool", error=True),
    ]
    out = summarize(trajs)
    assert out["n"] == 4 and out["success_rate"] == 0.5
    assert out["mean_reward"] == pytest.approx(0.625) and out["reward_x100"] == pytest.approx(62.5)
    assert out["env_errors"] == 1 and out["mean_steps"] == 3
    assert out["by_family"]["heat"]["success_rate"] == 0.5 and out["by_family"]["cool"]["n"] == 2


def test_success_rate_and_paired_mcnemar():
    from trajkit.data.stats import paired, success_rate

    r = success_rate([True, False, True, True])
    assert (r["k"], r["n"], r["rate"]) == (3, 4, 0.75) and r["ci95"][0] < 0.75 < r["ci95"][1]
    assert success_rate([])["rate"] == 0.0
    p = paired({"a": True, "b": False, "c": True}, {"a": False, "b": True, "c": True, "d": True})
    assert (p["n"], p["baseline_only"], p["method_only"], p["p"]) == (3, 1, 1, 1.0)


def test_play_oracle_plays_the_first_tasks_of_a_split():
    from trajkit.envs.registry import make_env, play_oracle

    episodes = play_oracle("household", "train", 3, n_train=5, n_test=0)
    assert len(episodes) == 3 and all(t.success for t in episodes)
    expected = [t.id for t in make_env("household", n_train=5, n_test=0).tasks("train")[:3]]
    assert [t.task_id for t in episodes] == expected
