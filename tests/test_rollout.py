"""Rollout engine: lock-step batches, exact token storage, resume, env failures cost one episode."""

from __future__ import annotations

import json

import pytest

from trajkit.data.schema import Trajectory
from trajkit.envs.base import Observation, StepResult, Task
from trajkit.policy.backends import HFBackend, Sampling
from trajkit.rollout import RolloutConfig, read_done, run_rollouts
from trajkit.rollout.react import ReactAgent


class CountingEnv:
    """Succeeds after `need` steps whatever the action; optionally fails on chosen tasks."""

    name = "counting"
    version = "1"
    instruction = "Say anything."

    def __init__(self, need=2, fail_on=(), fail_times=1):
        self.need = need
        self.fail_on = set(fail_on)
        self.failures: dict[str, int] = {}
        self.fail_times = fail_times
        self.actions: list[str] = []

    def reset(self, task):
        if task.id in self.fail_on and self.failures.get(task.id, 0) < self.fail_times:
            self.failures[task.id] = self.failures.get(task.id, 0) + 1
            raise RuntimeError("env crashed")
        self.task, self.n = task, 0
        return Observation(f"Your task is to: count for {task.id}.")

    def step(self, action):
        self.actions.append(action)
        self.n += 1
        won = self.n >= self.need
        return StepResult(Observation(f"step {self.n}"), 1.0 if won else 0.0, won, {"won": won})

    def close(self):
        pass


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from trajkit.policy.models import load_tokenizer
    from trajkit.render import Renderer

    tok = load_tokenizer(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    renderer = Renderer(tok, "tiny")
    return HFBackend(model, tok, renderer.stop_ids, batch_size=8), renderer


TASKS = [Task(f"t{i}", "train", max_steps=3) for i in range(5)]


def test_rollouts_store_exact_tokens(tmp_path, policy):
    backend, renderer = policy
    cfg = RolloutConfig(n_samples=2, sampling=Sampling(temperature=0, max_new_tokens=8), policy_id="p0")
    envs = [CountingEnv() for _ in range(4)]
    trajs = run_rollouts(TASKS, envs, backend, ReactAgent(renderer), tmp_path / "r.jsonl", cfg)
    assert len(trajs) == 10
    lines = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert len(lines) == 10
    for traj in trajs:
        assert traj.success and traj.reward == 1.0 and traj.metadata["steps"] == 2
        assert traj.metadata["policy_id"] == "p0" and traj.env == "counting" and traj.split == "train"
        sampled = [t for t in traj.turns if t.token_ids is not None]
        assert len(sampled) == 2
        # Re-rendering the stored trajectory trains on exactly the sampled ids.
        out = renderer.render(traj)
        trained = [i for i, m in zip(out.input_ids, out.loss_mask, strict=True) if m]
        eot = renderer.stop_ids
        expected = renderer.encode("OK<|end|>")
        for t in sampled:  # a turn cut by max_new_tokens is closed with the end-of-turn token
            expected += t.token_ids + ([] if t.token_ids[-len(eot) :] == eot else eot)
        assert trained == expected


def test_batched_greedy_equals_single(policy):
    backend, renderer = policy
    from trajkit.envs.base import episode_prefix

    prompts = [
        renderer.prompt_ids(episode_prefix("Say anything.", f"Your task is to: t{i}")) for i in range(4)
    ]
    prompts.append(prompts[0][:-3] + prompts[0][-3:])  # same content, different object
    batched = backend.generate(prompts, Sampling(temperature=0, max_new_tokens=12))
    single = [backend.generate([p], Sampling(temperature=0, max_new_tokens=12))[0] for p in prompts]
    assert batched == single


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_prefix_cache_changes_nothing_but_the_work(tmp_path, policy, temperature: float) -> None:
    """Reusing each episode's KV cache across steps samples exactly what full re-prefill does,
    while prefilling only the new tokens of each step."""
    backend, renderer = policy
    cached = HFBackend(backend.model, backend.tokenizer, backend.stop_ids, batch_size=3)
    plain = HFBackend(backend.model, backend.tokenizer, backend.stop_ids, batch_size=3, prefix_cache=False)
    # Episodes of different lengths share batches, so rows carry caches of different lengths.
    tasks = [Task(f"t{i}", "train", max_steps=2 + i % 3) for i in range(6)]
    cfg = RolloutConfig(sampling=Sampling(temperature=temperature, max_new_tokens=6, seed=3), policy_id="p")
    runs = {}
    for name, b in (("cached", cached), ("plain", plain)):
        envs = [CountingEnv(need=9) for _ in range(4)]
        runs[name] = run_rollouts(tasks, envs, b, ReactAgent(renderer), tmp_path / f"{name}.jsonl", cfg)
    assert [t.to_dict() for t in runs["cached"]] == [t.to_dict() for t in runs["plain"]]
    assert sum(t.metadata["steps"] for t in runs["cached"]) == sum(2 + i % 3 for i in range(6))
    assert plain.stats["prefilled_tokens"] == plain.stats["prompt_tokens"]
    assert cached.stats["prompt_tokens"] == plain.stats["prompt_tokens"]
    assert cached.stats["prefilled_tokens"] < 0.6 * plain.stats["prefilled_tokens"]
    assert cached._cache == {}  # finished episodes release their caches


def test_resume_skips_finished_and_cuts_torn_line(tmp_path, policy):
    backend, renderer = policy
    cfg = RolloutConfig(sampling=Sampling(temperature=0, max_new_tokens=4), policy_id="p")
    out = tmp_path / "r.jsonl"
    run_rollouts(TASKS[:2], [CountingEnv()], backend, ReactAgent(renderer), out, cfg)
    with out.open("a") as fh:
        fh.write('{"id": "p/t2/s0", "turns": [')  # killed mid-write
    assert set(read_done(out)) == {"p/t0/s0", "p/t1/s0"}
    env = CountingEnv()
    trajs = run_rollouts(TASKS, [env], backend, ReactAgent(renderer), out, cfg)
    assert sorted(t.id for t in trajs) == [f"p/t{i}/s0" for i in range(5)]
    assert len(env.actions) == 3 * 2  # only the three unfinished tasks ran
    for line in out.read_text().splitlines():
        Trajectory.from_dict(json.loads(line))


def test_env_failure_costs_one_episode_and_is_retried(tmp_path, policy):
    backend, renderer = policy
    cfg = RolloutConfig(sampling=Sampling(temperature=0, max_new_tokens=4), policy_id="p")
    # t1 crashes once (retry succeeds); t3 crashes twice (recorded as failed with its error).
    env = CountingEnv(fail_on={"t1", "t3"}, fail_times=1)
    env_twice = CountingEnv(fail_on={"t3"}, fail_times=2)
    trajs = {
        t.task_id: t
        for t in run_rollouts(TASKS[:2], [env], backend, ReactAgent(renderer), tmp_path / "a.jsonl", cfg)
    }
    assert trajs["t1"].success and "error" not in trajs["t1"].metadata
    trajs = {
        t.task_id: t
        for t in run_rollouts(TASKS, [env_twice], backend, ReactAgent(renderer), tmp_path / "b.jsonl", cfg)
    }
    assert len(trajs) == 5
    assert trajs["t3"].success is False and "env crashed" in trajs["t3"].metadata["error"]
    assert trajs["t3"].metadata["attempts"] == 2
    assert all(trajs[t].success for t in ("t0", "t1", "t2", "t4"))


def test_step_budget_ends_episode(tmp_path, policy):
    backend, renderer = policy
    cfg = RolloutConfig(sampling=Sampling(temperature=0, max_new_tokens=4), policy_id="p", max_steps=1)
    trajs = run_rollouts(
        TASKS[:1], [CountingEnv(need=5)], backend, ReactAgent(renderer), tmp_path / "r.jsonl", cfg
    )
    assert trajs[0].metadata["steps"] == 1 and trajs[0].success is False and trajs[0].reward == 0.0


def test_sampling_is_independent_of_batch_mates(tmp_path, policy):
    """Each episode's samples depend only on its own seed: resumed runs reproduce exactly."""
    backend, renderer = policy
    cfg = RolloutConfig(
        n_samples=2, sampling=Sampling(temperature=1.0, max_new_tokens=8, seed=3), policy_id="p"
    )
    together = run_rollouts(
        TASKS, [CountingEnv() for _ in range(8)], backend, ReactAgent(renderer), tmp_path / "a.jsonl", cfg
    )
    alone = run_rollouts(
        TASKS[2:3], [CountingEnv()], backend, ReactAgent(renderer), tmp_path / "b.jsonl", cfg
    )
    by_id = {t.id: t for t in together}
    for traj in alone:
        assert [t.token_ids for t in traj.turns] == [t.token_ids for t in by_id[traj.id].turns]
    # Different samples of one task differ (the seed includes the sample index).
    a, b = by_id["p/t0/s0"], by_id["p/t0/s1"]
    assert [t.token_ids for t in a.turns] != [t.token_ids for t in b.turns]


def test_icl_example_and_instruction_override(tmp_path, policy) -> None:
    from trajkit.data.schema import AGENT, OBSERVATION, TASK, Turn
    from trajkit.envs.base import ICL_HANDOVER, ICL_INTRO

    backend, renderer = policy
    example = [Turn(TASK, "Example task."), Turn(AGENT, "Action: a"), Turn(OBSERVATION, "Observation: b")]
    cfg = RolloutConfig(sampling=Sampling(temperature=0, max_new_tokens=4), policy_id="p")
    agent = ReactAgent(renderer, instruction="Trained instruction.", icl=lambda task: example, icl_intro=True)
    (traj,) = run_rollouts(TASKS[:1], [CountingEnv(need=1)], backend, agent, tmp_path / "r.jsonl", cfg)
    texts = [t.text for t in traj.turns]
    assert texts[:5] == [
        "Trained instruction.",
        "OK",
        f"{ICL_INTRO}\nExample task.",
        "Action: a",
        "Observation: b",
    ]
    assert texts[5] == ICL_HANDOVER + "Your task is to: count for t0."
    # The example's agent turn is context, never a training target.
    assert [t.trained for t in traj.turns[:6]] == [False, True, False, False, False, False]
