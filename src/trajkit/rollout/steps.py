"""Step-level credit by Monte-Carlo returns (IPR-style): which of the policy's own steps are worse
than the expert's, measured in the environment.

For an expert trajectory and one of its states s_t (the expert's turns before step t), the policy
takes its own step a_t (greedy, as it would at evaluation). Where a_t's action differs from the
expert's e_t, both are scored by rolling the policy out from s_t after that step: the return of
a step is the mean success of those continuations. A step whose return is lower than the
expert's is a mistake the policy makes; one as good is a harmless difference (another search
order, say), which a pair built from the divergence alone would wrongly punish.

Resetting to s_t replays the expert's actions (`ReplayEnv`): the household world, ALFWorld,
ScienceWorld and WebShop are deterministic given the actions (ScienceWorld only with the
variation fixed, as trajkit's tasks do; MiniWoB pages with the same seed). Probe records are
stored as JSONL; the pairs they give are a pure function of them (`pairs.step_pairs`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trajkit.data.schema import AGENT, Trajectory, Turn
from trajkit.envs.base import OBSERVATION_PREFIX, Observation, Task, observation_turn, parse_react_action
from trajkit.policy.backends import GenerationBackend, Sampling
from trajkit.rollout.engine import Episode, RolloutConfig, run_rollouts
from trajkit.rollout.react import ReactAgent, turn_text

OPENING = 3  # instruction, "OK", task: the turns before an expert's first step (ETO's layout)
SIDES = ("expert", "agent")


@dataclass
class StepProbe:
    id: str
    task: Task
    step: int  # 0-based env step
    prefix: list[Turn]  # the expert's turns before the step
    actions: list[str]  # the expert's actions before the step (replayed to reach the state)
    expert: Turn
    agent: Turn | None = None


def same_action(a: str, b: str) -> bool:
    return " ".join(a.lower().split()) == " ".join(b.lower().split())


def expert_probes(
    experts: list[Trajectory], tasks: dict[str, Task], per_task: int | None = None, seed: int = 0
) -> list[StepProbe]:
    """Probe points along expert trajectories (every step, or `per_task` steps drawn per task)."""
    rng = random.Random(seed)
    probes = []
    for traj in experts:
        task = tasks.get(traj.task_id or "")
        if task is None:
            continue
        steps = [i for i, t in enumerate(traj.turns) if t.role == AGENT and i >= OPENING]
        chosen = list(range(len(steps)))
        if per_task is not None and len(chosen) > per_task:
            chosen = sorted(rng.sample(chosen, per_task))
        for k in chosen:
            at = steps[k]
            actions = [parse_react_action(traj.turns[i].text) for i in steps[:k]]
            probes.append(
                StepProbe(f"{task.id}@{k}", task, k, list(traj.turns[:at]), actions, traj.turns[at])
            )
    return probes


def propose_steps(probes: list[StepProbe], backend: GenerationBackend, renderer, sampling: Sampling) -> None:
    """The policy's own step at each probe's state (sets `probe.agent`), in batches."""
    prompts = [renderer.prompt_ids(p.prefix) for p in probes]
    outs = backend.generate(prompts, sampling, None) if prompts else []
    for probe, ids in zip(probes, outs, strict=True):
        probe.agent = Turn(AGENT, turn_text(renderer, ids), token_ids=list(ids))


class ReplayEnv:
    """An env whose `reset(probe task)` resets the real task and replays the probe's actions, so
    an episode starts in the state after a chosen step."""

    def __init__(self, env: Any, plans: dict[str, tuple[Task, list[str]]]):
        self.env = env
        self.plans = plans
        self.name = getattr(env, "name", None)
        self.version = getattr(env, "version", None)
        self.observation_prefix = getattr(env, "observation_prefix", OBSERVATION_PREFIX)

    def reset(self, task: Task) -> Observation:
        real, actions = self.plans[task.id]
        obs = self.env.reset(real)
        for action in actions:
            result = self.env.step(action)
            if result.done:
                raise RuntimeError(f"probe {task.id}: the episode ended while replaying {action!r}")
            obs = result.observation
        return obs

    def step(self, action: str):
        return self.env.step(action)

    def close(self) -> None:  # the wrapped env belongs to its pool
        pass


class ContinueAgent:
    """A ReAct agent whose episodes open on stored turns (a probe's state and step)."""

    generations_per_step = 1

    def __init__(self, agent: ReactAgent, openings: dict[str, list[Turn]]):
        self.agent = agent
        self.renderer = agent.renderer
        self.openings = openings

    def open(self, ep: Episode, obs: Observation) -> list[Turn]:
        prefix = getattr(ep.env, "observation_prefix", OBSERVATION_PREFIX)
        ep.info["opening_turns"] = OPENING
        return [*self.openings[ep.task.id], observation_turn(obs.text, obs.image, prefix)]

    def __getattr__(self, name: str):  # act, action, observe, fit
        return getattr(self.agent, name)


def score_steps(
    probes: list[StepProbe],
    env: Any,
    envs: list[Any],
    backend: GenerationBackend,
    agent: ReactAgent,
    out_dir: Path,
    config: RolloutConfig,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Returns of the expert's and the agent's step at every probe whose actions differ: a step
    that ends the episode scores its own outcome; any other the mean success of
    `config.n_samples` continuations of the policy after it. One record per scored probe."""
    plans: dict[str, tuple[Task, list[str]]] = {}
    openings: dict[str, list[Turn]] = {}
    tasks: list[Task] = []
    immediate: dict[str, float] = {}
    scored = [p for p in probes if p.agent is not None]
    scored = [
        p
        for p in scored
        if not same_action(parse_react_action(p.agent.text), parse_react_action(p.expert.text))
    ]
    for probe in scored:
        for side, turn in (("expert", probe.expert), ("agent", probe.agent)):
            key = f"{probe.id}:{side}"
            actions = [*probe.actions, parse_react_action(turn.text)]
            env.reset(probe.task)
            result = None
            for action in actions:
                result = env.step(action)
                if result.done:
                    break
            if result is not None and result.done:
                immediate[key] = 1.0 if result.info.get("won") else 0.0
                continue
            plans[key] = (probe.task, actions)
            openings[key] = [*probe.prefix, turn]
            budget = probe.task.max_steps - len(actions)
            tasks.append(Task(key, probe.task.split, probe.task.spec, max_steps=max(1, budget)))
    trajs = []
    if tasks:
        replay = [ReplayEnv(e, plans) for e in envs]
        out_dir.mkdir(parents=True, exist_ok=True)
        trajs = run_rollouts(
            tasks,
            replay,
            backend,
            ContinueAgent(agent, openings),
            out_dir / "continuations.jsonl",
            config,
            progress,
        )
    wins: dict[str, list[float]] = {}
    for traj in trajs:
        wins.setdefault(traj.task_id or "", []).append(1.0 if traj.success else 0.0)
    records = []
    for probe in scored:
        returns = {}
        for side in SIDES:
            key = f"{probe.id}:{side}"
            got = [immediate[key]] if key in immediate else wins.get(key, [])
            returns[side] = sum(got) / len(got) if got else None
        records.append(
            {
                "id": probe.id,
                "task_id": probe.task.id,
                "step": probe.step,
                "prompt": [t.to_dict() for t in probe.prefix],
                "expert": probe.expert.to_dict(),
                "agent": probe.agent.to_dict(),
                "expert_return": returns["expert"],
                "agent_return": returns["agent"],
                "samples": 1 if f"{probe.id}:agent" in immediate else config.n_samples,
            }
        )
    return records


def write_records(path: Path, records: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
