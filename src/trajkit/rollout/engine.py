"""The rollout engine: batched lock-step episodes, one loop for every kind of agent.

Many episodes advance together. At every env step the agent protocol asks for one or more
generations (a ReAct agent: one; an AGUVIS agent: a plan then code), each a single batch over the
live episodes, and then every env is stepped with its episode's action. What differs between
agents (opening turns, how a prompt is rendered, how sampled ids become a turn, which text the env
gets, how an observation is written) lives in the protocol (`rollout.react`, `rollout.aguvis`);
step bookkeeping, env-failure handling, resumable output and cache release live here once.

A finished episode is written at once (one JSON line, flushed) and its slot goes to the next
pending episode, so a killed rollout resumes at the next unfinished episode. An env that crashes or
hangs costs that episode: it is retried once, then recorded with its error; the run goes on.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from trajkit.data.schema import AGENT, Trajectory, Turn
from trajkit.envs.base import Env, Observation, StepResult, Task
from trajkit.policy.backends import GenerationBackend, Sampling


@dataclass
class RolloutConfig:
    n_samples: int = 1  # episodes per task
    sampling: Sampling = field(default_factory=Sampling)
    max_steps: int | None = None  # None: each task's own budget
    batch_size: int = 32  # live episodes at once (= generation batch)
    max_context: int = 4096  # prompt + new tokens
    # Over `max_context`: "truncate" asks the agent for a shorter prompt (`fit`: oldest history
    # dropped, as FastChat does; the episode goes on) and ends the episode only when it has none;
    # "end" ends it at once.
    context_overflow: str = "truncate"
    policy_id: str = "policy"


class EpisodeError(RuntimeError):
    """An env failure that cost one episode."""


@dataclass
class RolloutProgress:
    """What `run_rollouts` reports after each written episode (counts since this call started);
    prints as one line, so a plain `print` callback keeps working."""

    finished: int
    total: int
    seconds: float
    steps: int  # env steps of the finished episodes
    tokens: int  # sampled agent tokens of the finished episodes
    last: Trajectory

    def __str__(self) -> str:
        rate = self.finished / max(self.seconds, 1e-9)
        return (
            f"{self.finished}/{self.total} episodes ({rate:.2f}/s) "
            f"last={self.last.task_id} reward={self.last.reward}"
        )


@dataclass
class Episode:
    """One live episode: its task, sample index, env, turns so far and step outcomes."""

    task: Task
    sample: int
    env: Env
    turns: list[Turn]
    attempt: int
    steps: int = 0
    rewards: list[float] = field(default_factory=list)
    won: bool = False
    info: dict[str, Any] = field(default_factory=dict)


class AgentProtocol(Protocol):
    """How one kind of agent talks: what opens an episode, what one step's generations are, which
    text the env gets and how an observation becomes a turn. The engine does everything else."""

    renderer: Any
    generations_per_step: int  # generations an env step may take (keeps per-step seeds distinct)

    def open(self, ep: Episode, obs: Observation) -> list[Turn]: ...

    def act(self, live: list[Episode], generate: Generate) -> None: ...

    def action(self, ep: Episode) -> str: ...

    def observe(self, ep: Episode, result: StepResult) -> Turn: ...


class Generate(Protocol):
    def __call__(
        self, episodes: list[Episode], prompts: list[tuple[list[int], list]], phase: int = 0
    ) -> list[list[int]]:
        """Sampled ids for each episode still in `episodes` after the call (episodes whose prompt
        would overflow the context are ended and removed from the list in place)."""
        ...


def episode_id(policy_id: str, task_id: str, sample: int) -> str:
    return f"{policy_id}/{task_id}/s{sample}"


def sample_seed(config: RolloutConfig, task_id: str, sample: int, step: int) -> int:
    """A seed per (episode, generation): sampling does not depend on which episodes share a batch."""
    key = f"{config.sampling.seed or 0}/{config.policy_id}/{task_id}/{sample}/{step}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def read_done(path: Path) -> dict[str, Trajectory]:
    """Episodes already written to `path`. A torn last line (a kill mid-write) is cut off."""
    done: dict[str, Trajectory] = {}
    if not path.exists():
        return done
    good_bytes = 0
    with path.open("rb") as fh:
        for raw in fh:
            try:
                traj = Trajectory.from_dict(json.loads(raw))
            except (json.JSONDecodeError, KeyError, UnicodeDecodeError):
                break
            if not raw.endswith(b"\n"):
                break
            done[traj.id] = traj
            good_bytes += len(raw)
    if good_bytes != path.stat().st_size:
        with path.open("r+b") as fh:
            fh.truncate(good_bytes)
    return done


def run_rollouts(
    tasks: Iterable[Task],
    envs: list[Env],
    backend: GenerationBackend,
    agent: AgentProtocol,
    out_path: str | Path,
    config: RolloutConfig,
    progress: Callable[[RolloutProgress], None] | None = None,
) -> list[Trajectory]:
    """Roll out every (task, sample) not yet in `out_path`; return all trajectories in the file.

    `envs` are ready env instances (in-process, or worker-process proxies); at most `len(envs)`
    episodes are live at once, capped by `config.batch_size`. `agent` is a protocol holding the
    model's renderer (`rollout.react.ReactAgent`, `rollout.aguvis.AguvisAgent`).
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    done = read_done(out_path)
    pending: deque[tuple[Task, int, int]] = deque(
        (task, s, 0)
        for task in tasks
        for s in range(config.n_samples)
        if episode_id(config.policy_id, task.id, s) not in done
    )
    total = len(pending)
    free_envs = list(envs[: max(1, min(len(envs), config.batch_size))])
    live: list[Episode] = []
    finished = steps_done = tokens_done = 0
    start = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=len(free_envs)) if len(free_envs) > 1 else None
    per_step = agent.generations_per_step
    fit = getattr(agent, "fit", lambda ep, budget: None)  # optional: agents that can shorten a prompt

    def map_envs(fn, items):
        return list(pool.map(fn, items)) if pool is not None else [fn(x) for x in items]

    first_errors: dict[str, str] = {}  # episode id -> why its first attempt failed
    with out_path.open("a", encoding="utf-8") as sink:

        def finish(ep: Episode, error: str | None = None) -> None:
            nonlocal finished, steps_done, tokens_done
            free_envs.append(ep.env)
            if hasattr(backend, "forget"):
                backend.forget(episode_id(config.policy_id, ep.task.id, ep.sample))
            if error is not None and ep.attempt == 0:
                first_errors[episode_id(config.policy_id, ep.task.id, ep.sample)] = error
                pending.appendleft((ep.task, ep.sample, 1))  # retried once
                return
            traj = to_trajectory(ep, config, error)
            if traj.id in first_errors:  # a retried episode says why, whatever its retry gave
                traj.metadata.update(retried_after=first_errors.pop(traj.id), attempts=ep.attempt + 1)
            sink.write(json.dumps(traj.to_dict(), ensure_ascii=False) + "\n")
            sink.flush()
            os.fsync(sink.fileno())
            done[traj.id] = traj
            finished += 1
            steps_done += ep.steps
            tokens_done += sum(len(t.token_ids or ()) for t in traj.turns if t.role == AGENT)
            if progress is not None:
                elapsed = time.perf_counter() - start
                progress(RolloutProgress(finished, total, elapsed, steps_done, tokens_done, traj))

        def generate(eps: list[Episode], prompts: list[tuple[list[int], list]], phase: int = 0):
            keep, ids, images = [], [], []
            budget = config.max_context - config.sampling.max_new_tokens
            for ep, (prompt, imgs) in zip(list(eps), prompts, strict=True):
                if len(prompt) > budget:
                    fitted = fit(ep, budget) if config.context_overflow == "truncate" else None
                    if fitted is None:
                        ep.info["context_exhausted"] = True
                        live.remove(ep)
                        finish(ep)
                        continue
                    prompt, imgs = fitted
                keep.append(ep)
                ids.append(prompt)
                images.append(imgs)
            eps[:] = keep
            if not keep:
                return []
            seeds = [sample_seed(config, ep.task.id, ep.sample, per_step * ep.steps + phase) for ep in keep]
            keys = [episode_id(config.policy_id, ep.task.id, ep.sample) for ep in keep]
            extra = {"images": images} if any(images) else {}
            return backend.generate(ids, config.sampling, seeds, keys=keys, **extra)

        while pending or live:
            # Fill free slots with pending episodes (resets run in parallel).
            starting = []
            while pending and free_envs:
                task, sample, attempt = pending.popleft()
                starting.append((task, sample, attempt, free_envs.pop()))
            for (task, sample, attempt, env), obs, err in map_envs(safe_reset, starting):
                ep = Episode(task, sample, env, [], attempt)
                if err is not None:
                    finish(ep, err)
                    continue
                ep.turns = agent.open(ep, obs)
                live.append(ep)
            if not live:
                continue

            agent.act(list(live), generate)
            if not live:
                continue

            results = map_envs(lambda ep: safe_step(ep, agent.action(ep)), live)
            still_live = []
            for ep, (result, err) in zip(live, results, strict=True):
                if err is not None:
                    finish(ep, err)
                    continue
                if record_step(ep, result, agent.observe(ep, result), config):
                    finish(ep)
                else:
                    still_live.append(ep)
            live = still_live
    if pool is not None:
        pool.shutdown()
    return list(done.values())


def record_step(ep: Episode, result: StepResult, observation: Turn, config: RolloutConfig) -> bool:
    """Add an env step's outcome to a live episode; True when the episode is over."""
    ep.steps += 1
    ep.rewards.append(float(result.reward))
    ep.won = bool(result.info.get("won", ep.won))
    ep.info.update({k: v for k, v in result.info.items() if k in ("won", "truncated")})
    ep.turns.append(observation)
    return bool(result.done) or ep.steps >= (config.max_steps or ep.task.max_steps)


_SURROGATE = re.compile("[\ud800-\udfff]")


def checked_observation(obs: Any) -> Observation:
    """What an env returned, refused when it is not an observation with text, and with lone
    surrogates (bytes an adapter read leniently) made U+FFFD: they cannot be written as UTF-8."""
    if not isinstance(obs, Observation) or not isinstance(obs.text, str):
        raise TypeError(f"the env returned {type(obs).__name__}, not an Observation with text")
    if _SURROGATE.search(obs.text):
        obs.text = _SURROGATE.sub("\ufffd", obs.text)
    return obs


def safe_reset(item):
    task, _, _, env = item
    try:
        return item, checked_observation(env.reset(task)), None
    except Exception as err:  # an env failure costs the episode, never the run
        return item, None, f"reset failed: {type(err).__name__}: {err}"


def safe_step(ep: Episode, action: str):
    try:
        result = ep.env.step(action)
        if not isinstance(result, StepResult):
            raise TypeError(f"the env returned {type(result).__name__}, not a StepResult")
        result.observation = checked_observation(result.observation)
        if not math.isfinite(float(result.reward)):
            raise ValueError(f"the env returned reward {result.reward}")
        return result, None
    except Exception as err:
        return None, f"step failed: {type(err).__name__}: {err}"


def accounting(trajs: list[Trajectory]) -> dict[str, int]:
    """Where every episode went: finished (the env answered to the end), failed with an env
    error (after its retry), retried (its first attempt failed; counted in one of the two)."""
    failed = sum("error" in t.metadata for t in trajs)
    retried = sum("retried_after" in t.metadata for t in trajs)
    return {"finished": len(trajs) - failed, "env_errors": failed, "retried": retried}


def to_trajectory(ep: Episode, config: RolloutConfig, error: str | None) -> Trajectory:
    reward = ep.rewards[-1] if ep.rewards else 0.0
    env = ep.env
    meta: dict[str, Any] = {
        "source": "rollout",
        "policy_id": config.policy_id,
        "sample": ep.sample,
        "steps": ep.steps,
        "step_rewards": ep.rewards,
        "env_version": getattr(env, "version", None),
        "temperature": config.sampling.temperature,
        **({"family": ep.task.spec["family"]} if "family" in ep.task.spec else {}),
        **{k: v for k, v in ep.info.items() if k != "won"},
    }
    if error is not None:
        meta["error"] = error
        meta["attempts"] = ep.attempt + 1
    return Trajectory(
        id=episode_id(config.policy_id, ep.task.id, ep.sample),
        turns=ep.turns,
        task_id=ep.task.id,
        env=getattr(env, "name", None),
        split=ep.task.split,
        reward=0.0 if error else reward,
        success=False if error else ep.won,
        metadata=meta,
    )
