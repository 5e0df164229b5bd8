"""Pair building is a pure function: ETO's trajectory strategy, self pairs, counts, caps."""

from __future__ import annotations

import pytest

from trajkit.data.schema import Trajectory, Turn
from trajkit.pairs import build_pairs, cap_agent_turns, split_prompt

OPENING = [
    Turn("task", "Interact with a household."),
    Turn("agent", "OK"),
    Turn("task", "Your task is to: x"),
]


def episode(tid, actions, reward, rid=None):
    turns = list(OPENING)
    for a in actions:
        turns.append(Turn("agent", f"Action: {a}"))
        turns.append(Turn("observation", f"Observation: after {a}"))
    return Trajectory(rid or f"{tid}-{reward}-{len(actions)}", turns, task_id=tid, reward=reward)


def test_eto_pairs_win_tie_lose():
    expert = [episode("a", ["go", "take"], 1.0), episode("b", ["go"], 1.0), episode("c", ["go"], 0.5)]
    rollouts = [
        episode("a", ["look", "look"], 0.0),  # lose -> expert chosen
        episode("b", ["go"], 1.0),  # tie -> dropped
        episode("c", ["open", "put"], 1.0),  # win -> rollout chosen
        episode("zzz", ["go"], 0.0),  # no expert for this task
    ]
    result = build_pairs(rollouts, expert, strategy="trajectory")
    assert result.counts() == {"win": 1, "tie": 1, "lose": 1, "pairs": 2}
    assert result.missing_expert == 1
    lose, win = result.pairs
    assert lose["task_id"] == "a" and lose["chosen_reward"] == 1.0 and lose["rejected_reward"] == 0.0
    assert [t["text"] for t in lose["chosen"] if t["role"] == "agent"] == ["Action: go", "Action: take"]
    assert [t["text"] for t in lose["rejected"] if t["role"] == "agent"] == ["Action: look", "Action: look"]
    assert win["chosen_id"].startswith("c-1.0") and win["rejected_reward"] == 0.5
    for pair in result.pairs:
        assert [t["text"] for t in pair["prompt"]] == [t.text for t in OPENING]
        assert pair["chosen"][0]["role"] == "agent" and pair["rejected"][-1]["role"] == "agent"
        assert pair["strategy"] == "trajectory"


def test_rejected_capped_at_expert_length_plus_k():
    expert = [episode("a", ["go", "take"], 1.0)]
    rollouts = [episode("a", [f"look {i}" for i in range(20)], 0.0)]
    pair = build_pairs(rollouts, expert, extra_turns=3).pairs[0]
    assert sum(t["role"] == "agent" for t in pair["rejected"]) == 2 + 3
    pair = build_pairs(rollouts, expert, extra_turns=5).pairs[0]
    assert sum(t["role"] == "agent" for t in pair["rejected"]) == 2 + 5


def test_prompt_extends_over_shared_steps():
    a = episode("a", ["go", "take", "put"], 1.0)
    b = episode("a", ["go", "look"], 0.0)
    n = split_prompt(a.turns, b.turns)
    assert n == len(OPENING) + 2  # the shared first step and its observation
    pair = build_pairs([b], [a]).pairs[0]
    assert pair["chosen"][0]["text"] == "Action: take" and pair["rejected"][0]["text"] == "Action: look"


def test_self_pairs_best_vs_worst():
    rollouts = [
        episode("a", ["x"], 0.0),
        episode("a", ["y"], 1.0),
        episode("a", ["z"], 0.5),
        episode("b", ["x"], 0.0),
    ]
    result = build_pairs(rollouts, strategy="self")
    assert len(result.pairs) == 1 and result.tie == 1
    pair = result.pairs[0]
    assert (pair["chosen_reward"], pair["rejected_reward"]) == (1.0, 0.0)
    assert pair["strategy"] == "self"


def test_inputs_are_not_mutated():
    expert = [episode("a", ["go"], 1.0)]
    rollouts = [episode("a", ["look"] * 9, 0.0)]
    before = [t.to_dict() for t in rollouts[0].turns]
    build_pairs(rollouts, expert, extra_turns=1)
    assert [t.to_dict() for t in rollouts[0].turns] == before


def test_errors():
    with pytest.raises(ValueError, match="unknown pair strategy"):
        build_pairs([], [], strategy="step")
    with pytest.raises(ValueError, match="needs expert"):
        build_pairs([], None)
    other = Trajectory("o", [Turn("task", "different"), Turn("agent", "x")], task_id="a", reward=0.0)
    with pytest.raises(ValueError, match="share no opening"):
        build_pairs([other], [episode("a", ["go"], 1.0)])


def test_cap_agent_turns_ends_on_agent():
    turns = [Turn("agent", "a"), Turn("observation", "o"), Turn("agent", "b"), Turn("observation", "o")]
    assert [t.text for t in cap_agent_turns(turns)] == ["a", "o", "b"]
    assert [t.text for t in cap_agent_turns(turns, 1)] == ["a"]


def test_pairs_cli_prints_counts(tmp_path):
    import json
    import subprocess
    import sys

    expert = [episode("a", ["go", "take"], 1.0), episode("b", ["go"], 1.0)]
    rollouts = [episode("a", ["look"], 0.0), episode("b", ["go"], 1.0)]
    for name, trajs in (("expert.jsonl", expert), ("rollouts.jsonl", rollouts)):
        (tmp_path / name).write_text("".join(json.dumps(t.to_dict()) + "\n" for t in trajs))
    out = tmp_path / "pairs.jsonl"
    cmd = [sys.executable, "-m", "trajkit", "pairs", "--expert", str(tmp_path / "expert.jsonl")]
    proc = subprocess.run(
        [*cmd, "--rollouts", str(tmp_path / "rollouts.jsonl"), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"win": 0, "tie": 1, "lose": 1, "pairs": 1}
    pair = json.loads(out.read_text())
    assert {"task_id", "prompt", "chosen", "rejected", "chosen_reward", "rejected_reward", "strategy"} <= set(
        pair
    )
