"""Step-level pairs from Monte-Carlo returns (IPR-style): hand-made worlds with known step returns."""

from __future__ import annotations

import pytest

from trajkit.data.schema import AGENT, Trajectory, Turn
from trajkit.envs.base import Observation, StepResult, Task, episode_prefix
from trajkit.pairs import build_pairs, step_pairs
from trajkit.policy.backends import Sampling
from trajkit.render import Renderer
from trajkit.rollout import RolloutConfig
from trajkit.rollout.react import ReactAgent
from trajkit.rollout.steps import expert_probes, propose_steps, score_steps


class KeyDoorEnv:
    """Take the key, then open the door. `look` changes nothing; `break door` ends in failure."""

    name = "keydoor"
    version = "1"
    instruction = "Open the door."

    def reset(self, task):
        self.key = False
        return Observation("You see a key and a door.")

    def step(self, action):
        if action == "take key":
            self.key = True
            return StepResult(Observation("You take the key."), 0.0, False, {"won": False})
        if action == "open door" and self.key:
            return StepResult(Observation("The door opens."), 1.0, True, {"won": True})
        if action == "break door":
            return StepResult(Observation("The door breaks."), 0.0, True, {"won": False})
        return StepResult(Observation("Nothing happens."), 0.0, False, {"won": False})

    def close(self):
        pass


class ScriptedBackend:
    """A policy as a function of the prompt text: `propose` answers probes, `proceed` continues."""

    def __init__(self, renderer, propose):
        self.renderer = renderer
        self.propose = propose
        self.proposing = True

    def generate(self, prompts, sampling, seeds=None, keys=None, images=None):
        out = []
        for ids in prompts:
            text = self.renderer.tokenizer.decode(ids)
            if self.proposing:
                reply = self.propose(text)
            else:
                reply = "Action: open door" if "You take the key." in text else "Action: take key"
            out.append(self.renderer.encode(reply + "<|end|>"))
        return out


def _expert(task: Task) -> Trajectory:
    turns = episode_prefix(KeyDoorEnv.instruction, "You see a key and a door.")
    turns += [Turn(AGENT, "Action: take key"), Turn("observation", "Observation: You take the key.")]
    turns += [Turn(AGENT, "Action: open door")]
    return Trajectory("e0", turns, task_id=task.id, success=True)


def _propose(text: str) -> str:
    return "Action: break door" if "You take the key." in text else "Action: look"


@pytest.mark.parametrize("budget, harmless_is_a_tie", [(4, True), (2, False)])
def test_returns_tell_a_harmful_step_from_a_harmless_one(tiny_tokenizer, tmp_path, budget, harmless_is_a_tie):
    renderer = Renderer(tiny_tokenizer, "tiny")
    task = Task("t0", "train", max_steps=budget)
    probes = expert_probes([_expert(task)], {"t0": task})
    assert [p.step for p in probes] == [0, 1] and probes[1].actions == ["take key"]
    backend = ScriptedBackend(renderer, _propose)
    propose_steps(probes, backend, renderer, Sampling(temperature=0, max_new_tokens=16))
    assert [p.agent.text for p in probes] == ["Action: look", "Action: break door"]
    backend.proposing = False
    config = RolloutConfig(sampling=Sampling(temperature=0, max_new_tokens=16), policy_id="probe")
    records = score_steps(
        probes, KeyDoorEnv(), [KeyDoorEnv(), KeyDoorEnv()], backend, ReactAgent(renderer), tmp_path, config
    )
    returns = {r["step"]: (r["expert_return"], r["agent_return"]) for r in records}
    # Step 1: the expert's "open door" wins at once, "break door" loses at once.
    assert returns[1] == (1.0, 0.0)
    # Step 0: after "look" the policy still takes the key and opens the door, if the budget allows.
    assert returns[0] == ((1.0, 1.0) if harmless_is_a_tie else (1.0, 0.0))
    result = step_pairs(records)
    assert result.counts() == {
        "win": 0,
        "tie": 1 if harmless_is_a_tie else 0,
        "lose": 2 - harmless_is_a_tie,
        "pairs": 2 - harmless_is_a_tie,
    }
    pair = next(p for p in result.pairs if p["step"] == 1)
    assert [t["text"] for t in pair["prompt"]][-2:] == ["Action: take key", "Observation: You take the key."]
    assert (
        pair["chosen"][0]["text"] == "Action: open door"
        and pair["rejected"][0]["text"] == "Action: break door"
    )
    assert pair["rejected"][0]["token_ids"] == renderer.encode("Action: break door<|end|>")


def test_a_step_the_expert_also_takes_is_not_probed(tiny_tokenizer, tmp_path):
    renderer = Renderer(tiny_tokenizer, "tiny")
    task = Task("t0", "train", max_steps=4)
    probes = expert_probes([_expert(task)], {"t0": task})
    backend = ScriptedBackend(
        renderer,
        lambda text: (
            "Thought: the same.\nAction: Take  key" if "take the key" not in text else "Action: open door"
        ),
    )
    propose_steps(probes, backend, renderer, Sampling(temperature=0, max_new_tokens=16))
    config = RolloutConfig(sampling=Sampling(temperature=0, max_new_tokens=16))
    assert (
        score_steps(probes, KeyDoorEnv(), [KeyDoorEnv()], backend, ReactAgent(renderer), tmp_path, config)
        == []
    )


def test_step_pairs_is_a_pure_function_of_the_records():
    base = {"task_id": "t", "step": 0, "prompt": [], "expert": {"role": "agent", "text": "e"}}
    records = [
        {
            **base,
            "id": "a",
            "agent": {"role": "agent", "text": "x"},
            "expert_return": 1.0,
            "agent_return": 0.25,
        },
        {
            **base,
            "id": "b",
            "agent": {"role": "agent", "text": "y"},
            "expert_return": 0.5,
            "agent_return": 0.5,
        },
        {
            **base,
            "id": "c",
            "agent": {"role": "agent", "text": "z"},
            "expert_return": 0.0,
            "agent_return": 1.0,
        },
        {
            **base,
            "id": "d",
            "agent": {"role": "agent", "text": "w"},
            "expert_return": 1.0,
            "agent_return": 0.75,
        },
    ]
    assert step_pairs(records).counts() == {"win": 1, "tie": 1, "lose": 2, "pairs": 2}
    strict = step_pairs(records, margin=0.5)
    assert strict.counts() == {"win": 1, "tie": 2, "lose": 1, "pairs": 1}
    assert strict.pairs[0]["rejected_id"] == "a:agent" and strict.pairs[0]["rejected_reward"] == 0.25
    with pytest.raises(ValueError, match="step probes"):
        build_pairs([], [], strategy="step_mc")
