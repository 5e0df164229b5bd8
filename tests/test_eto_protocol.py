"""ETO's exploration and evaluation protocol: greedy decoding, one in-context example as plain
turns (left out of pairs), over-long contexts truncated from the oldest turns, per-env caps on
the rejected side."""

from __future__ import annotations

import pytest

from trajkit.config import ConfigError
from trajkit.data.schema import AGENT, Trajectory, Turn
from trajkit.envs.base import ICL_SPAN, Observation, StepResult, Task, episode_prefix, without_example
from trajkit.pairs import build_pairs
from trajkit.pipeline.config import RunConfig, configs_dir, load_run_config, run_config_from_dict
from trajkit.policy.backends import HFBackend, Sampling
from trajkit.rollout import RolloutConfig, run_rollouts
from trajkit.rollout.react import ReactAgent

ETO_RECIPES = ["alfworld_eto.yaml", "sciworld_eto.yaml", "webshop_eto.yaml"]


# --- greedy exploration and evaluation -----------------------------------------------------------
def test_exploration_is_greedy_by_default_and_in_etos_recipes():
    assert RunConfig(run_dir="x").explore.temperature == 0.0
    for name in ETO_RECIPES:
        cfg = load_run_config(configs_dir() / name)
        assert cfg.explore.temperature == 0.0, name
        assert cfg.explore.icl and cfg.eval.icl and not cfg.explore.icl_intro, name
        assert cfg.explore.context_overflow == "truncate", name


def test_several_greedy_samples_of_a_task_are_refused():
    with pytest.raises(ConfigError, match="explore.n_samples"):
        run_config_from_dict({"run_dir": "x", "explore": {"n_samples": 4}}, "r.yaml")
    cfg = run_config_from_dict({"run_dir": "x", "explore": {"n_samples": 4, "temperature": 0.7}}, "r.yaml")
    assert cfg.explore.n_samples == 4
    with pytest.raises(ConfigError, match="context_overflow"):
        run_config_from_dict({"run_dir": "x", "explore": {"context_overflow": "drop"}}, "r.yaml")


# --- the in-context example ----------------------------------------------------------------------
EXAMPLE = [
    Turn("task", "Your task is to: find a pen."),
    Turn(AGENT, "Action: take pen"),
    Turn("observation", "Done."),
]


def test_example_goes_in_as_plain_conversation_turns():
    turns = episode_prefix("Instr", "Your task is to: find a cup.", EXAMPLE)
    assert [t.text for t in turns] == [
        "Instr",
        "OK",
        "Your task is to: find a pen.",
        "Action: take pen",
        "Done.",
        "Your task is to: find a cup.",
    ]
    assert not any(t.trained for t in turns[2:5])
    wrapped = episode_prefix("Instr", "Your task is to: find a cup.", EXAMPLE, intro=True)
    assert wrapped[2].text.startswith("Here is an example.") and wrapped[-1].text.startswith(
        "Now, it's your turn"
    )
    # Either way, leaving the example out gives the expert data's prompt back.
    for shown in (turns, wrapped):
        assert [t.text for t in without_example(shown, [2, 5])] == [
            "Instr",
            "OK",
            "Your task is to: find a cup.",
        ]


class CountingEnv:
    """Wins after `need` steps whatever the action."""

    name = "counting"
    version = "1"
    instruction = "Say anything."

    def __init__(self, need=2, prefix=None):
        self.need = need
        if prefix is not None:
            self.observation_prefix = prefix

    def reset(self, task):
        self.n = 0
        return Observation(f"Your task is to: count for {task.id}.")

    def step(self, action):
        self.n += 1
        won = self.n >= self.need
        return StepResult(Observation(f"step {self.n} " + "word " * 12), float(won), won, {"won": won})

    def close(self):
        pass


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from trajkit.policy.models import load_tokenizer
    from trajkit.render import Renderer

    tok = load_tokenizer(str(tiny_model_dir))
    renderer = Renderer(tok, "tiny")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    return HFBackend(model, tok, renderer.stop_ids, batch_size=4), renderer


def test_rollouts_with_an_example_pair_against_the_expert_without_it(policy, tmp_path):
    backend, renderer = policy
    agent = ReactAgent(renderer, icl=lambda task: EXAMPLE)
    config = RolloutConfig(sampling=Sampling(temperature=0, max_new_tokens=8), max_steps=2)
    tasks = [Task("t0", "train"), Task("t1", "train")]
    rollouts = run_rollouts(tasks, [CountingEnv(need=5)], backend, agent, tmp_path / "r.jsonl", config)
    for traj in rollouts:
        assert traj.metadata[ICL_SPAN] == [2, 5] and traj.turns[2].text == EXAMPLE[0].text
    experts = [
        Trajectory(
            f"e{i}",
            [
                *episode_prefix("Say anything.", f"Your task is to: count for t{i}."),
                Turn(AGENT, "Action: count"),
            ],
            task_id=f"t{i}",
            success=True,
        )
        for i in range(2)
    ]
    result = build_pairs(rollouts, experts)
    assert result.counts()["pairs"] == 2
    for pair in result.pairs:
        assert [t["text"] for t in pair["prompt"]] == [t.text for t in experts[0].turns[:2]] + [
            pair["prompt"][2]["text"]
        ]
        assert len(pair["prompt"]) == 3 and not any(EXAMPLE[0].text == t["text"] for t in pair["rejected"])


# --- over-long contexts --------------------------------------------------------------------------
def test_an_over_long_episode_drops_its_oldest_turns_and_goes_on(policy, tmp_path):
    backend, renderer = policy
    agent = ReactAgent(renderer, icl=lambda task: EXAMPLE)
    opening = renderer.prompt_ids(episode_prefix("Say anything.", "Your task is to: count for t0.", EXAMPLE))
    sampling = Sampling(temperature=0, max_new_tokens=8)
    budget = len(opening) + 70  # room for the opening and about two steps of history
    runs = {}
    for overflow in ("truncate", "end"):
        config = RolloutConfig(
            sampling=sampling,
            max_steps=8,
            max_context=budget + 8,
            context_overflow=overflow,
            policy_id=overflow,
        )
        (traj,) = run_rollouts(
            [Task("t0", "train")], [CountingEnv(need=8)], backend, agent, tmp_path / overflow, config
        )
        runs[overflow] = traj
    ended, truncated = runs["end"], runs["truncate"]
    assert ended.metadata.get("context_exhausted") and ended.metadata["steps"] < 8 and not ended.success
    assert truncated.success and truncated.metadata["steps"] == 8
    assert truncated.metadata["truncated_steps"] >= 1 and truncated.metadata["dropped_turns"] >= 2
    assert not truncated.metadata.get("context_exhausted")
    # The stored episode is whole: every step's agent turn and observation.
    assert sum(t.role == AGENT for t in truncated.turns) == 1 + 1 + 8  # "OK", the example's, 8 steps


def test_observations_take_the_envs_prefix(policy, tmp_path):
    backend, renderer = policy
    config = RolloutConfig(sampling=Sampling(temperature=0, max_new_tokens=4), max_steps=2)
    (traj,) = run_rollouts(
        [Task("t0", "train")],
        [CountingEnv(prefix="Observation:\n")],
        backend,
        ReactAgent(renderer),
        tmp_path / "o",
        config,
    )
    observations = [t.text for t in traj.turns if t.role == "observation"]
    assert observations and all(text.startswith("Observation:\nstep ") for text in observations)


# --- the rejected side's cap ---------------------------------------------------------------------
def _episode(task_id: str, n_agent: int, success: bool) -> Trajectory:
    turns = episode_prefix("I", f"task {task_id}")
    for i in range(n_agent):
        turns += [Turn(AGENT, f"Action: {'a' if success else 'b'}{i}"), Turn("observation", f"o{i}")]
    return Trajectory(f"{task_id}-{success}", turns[:-1], task_id=task_id, success=success)


def test_rejected_side_is_capped_per_env_as_eto():
    expert, failed = _episode("t", 3, True), _episode("t", 20, False)
    caps = {name: load_run_config(configs_dir() / name).pairs.extra_turns for name in ETO_RECIPES}
    assert caps == {"alfworld_eto.yaml": None, "sciworld_eto.yaml": 5, "webshop_eto.yaml": 5}
    for cap, kept in ((5, 3 + 5), (None, 20)):
        (pair,) = build_pairs([failed], [expert], extra_turns=cap).pairs
        assert sum(t["role"] == AGENT for t in pair["rejected"]) == kept
