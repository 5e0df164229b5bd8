"""The learning benchmark: its statistics on known inputs, and the whole thing at toy size."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("learning_bench", ROOT / "benchmarks" / "learning.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_exact_mcnemar_on_known_counts(bench):
    assert bench.mcnemar_exact(0, 0) == 1.0
    assert math.isclose(bench.mcnemar_exact(0, 10), 2 * 0.5**10)
    assert math.isclose(bench.mcnemar_exact(10, 0), 2 * 0.5**10)
    # b=2, c=8: P(X <= 2) for Binomial(10, 1/2) = 56/1024, two-sided 112/1024.
    assert math.isclose(bench.mcnemar_exact(2, 8), 112 / 1024)
    assert bench.mcnemar_exact(5, 5) == 1.0


def test_pooled_comparison_sums_discordant_tasks_over_seeds(bench):
    def out(success):
        return {
            split: bench.Outcomes(dict(success), {k: float(v) for k, v in success.items()}, {})
            for split in bench.SPLITS
        }

    sft = {f"t{i}": i < 5 for i in range(10)}  # 5 of 10
    better = {f"t{i}": i < 8 for i in range(10)}  # 8 of 10: 3 tasks only the method solves
    per_seed = {0: {"sft": out(sft), "eto": out(better)}, 1: {"sft": out(sft), "eto": out(better)}}
    table = bench.summarize(per_seed, ["sft", "eto"])
    unseen = table["eto"]["test_unseen"]
    assert unseen["success"] == 80.0 and unseen["n"] == 20
    assert unseen["vs_sft"]["pooled"] == {
        "n": 20,
        "baseline_only": 0,
        "method_only": 6,
        "p": bench.mcnemar_exact(0, 6),
    }
    assert unseen["vs_sft"]["difference"] == 30.0
    assert unseen["vs_sft"]["per_seed"][0]["method_only"] == 3


def test_failure_kinds(bench):
    from trajkit.data.schema import Trajectory, Turn

    opening = [Turn("task", "i"), Turn("agent", "OK"), Turn("task", "t")]

    def episode(*pairs):
        turns = list(opening)
        for action, obs in pairs:
            turns += [Turn("agent", action), Turn("observation", obs)]
        return Trajectory("x", turns, success=False)

    assert bench.failure_kind(episode(("Thought: hmm", "o"))) == "no action"
    assert (
        bench.failure_kind(episode(("Action: go", "o"), ("Action: x", "Nothing happened.")))
        == "invalid action"
    )
    assert bench.failure_kind(episode(*[("Action: look", "o")] * 3)) == "repeats an action"
    assert (
        bench.failure_kind(episode(("Action: a", "o"), ("Action: b", "o"))) == "out of steps (valid actions)"
    )


@pytest.mark.slow
def test_benchmark_runs_every_method_at_toy_size(bench, tmp_path):
    result = bench.main(["--out", str(tmp_path), "--toy", "--seeds", "0", "--quiet"])
    assert set(result["methods"]) == set(bench.METHODS)
    for method, row in result["methods"].items():
        for split in bench.SPLITS:
            assert row[split]["n"] >= 1, (method, split)
            if method != "sft":
                assert row[split]["vs_sft"]["pooled"]["n"] == row[split]["n"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["seeds"] == [0]
    assert "| step |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "results.png").stat().st_size > 1000
    assert (tmp_path / "seed-0" / "step" / "round-1" / "steps" / "DONE").is_file()
