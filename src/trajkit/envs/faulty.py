"""An env that fails on purpose, to measure how rollouts and runs survive env faults.

A recipe wraps any env with `env.faults: {rate: 0.1, kinds: [crash, hang, exception, garbage,
slow_reset], seed: 0}`: on a `rate` fraction of calls (resets and steps) one of the kinds that
fits the call happens instead of it:

- crash: the process dies at once (`os._exit`), as a simulator that segfaults;
- hang: the call sleeps `hang_s` seconds, as a simulator that stops answering;
- exception: the call raises `InjectedFault`;
- garbage (steps): the env's step is done, but its observation comes back as noise (random bytes
  read leniently, control characters, lone surrogates, now and then one very long line);
- slow_reset (resets): the reset first waits `slow_s` seconds, then works.

Crash and hang stop the process they happen in, so they need `env.workers: process` or `ray` (each
env in its own child process or Ray actor with per-call timeouts, `envs.worker`, `envs.ray_worker`);
the recipe check refuses them otherwise. Which calls fail is drawn from `seed`, and in a worker also
from the worker's token (`worker_token`): a retried episode runs in a fresh child or actor and meets
other faults, as with real transient failures.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from trajkit.envs.base import Observation, StepResult, Task

KINDS = ("crash", "hang", "exception", "garbage", "slow_reset")
ON_RESET = ("crash", "hang", "exception", "slow_reset")
ON_STEP = ("crash", "hang", "exception", "garbage")
NEED_WORKERS = ("crash", "hang")
_instances = itertools.count()
# Set in each Ray env actor's process (a Ray worker is not a multiprocessing child).
WORKER_TOKEN_ENV = "TRAJKIT_ENV_WORKER_TOKEN"


def worker_token() -> str:
    """What tells this env process from others: a Ray actor's id (set by `envs.ray_worker`), an
    `EnvWorker` child's pid, or "0" in the main process (draws then repeat from run to run)."""
    token = os.environ.get(WORKER_TOKEN_ENV)
    if token:
        return token
    return str(os.getpid()) if multiprocessing.parent_process() is not None else "0"


class InjectedFault(RuntimeError):
    """The failure a faulty env raises on purpose."""


@dataclass
class FaultSpec:
    rate: float = 0.1  # fraction of calls that fail
    kinds: list[str] = field(default_factory=lambda: list(KINDS))
    seed: int = 0
    hang_s: float = 3600.0  # a hang lasts this long (the worker's timeout ends it first)
    slow_s: float = 1.0  # a slow reset waits this long, then works

    def __post_init__(self) -> None:
        if not 0 <= self.rate <= 1:
            raise ValueError(f"faults.rate: must be in [0, 1], got {self.rate}")
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown or not self.kinds:
            raise ValueError(
                f"faults.kinds: must be a non-empty list of {', '.join(KINDS)}, got {self.kinds}"
            )
        if not self.hang_s > 0 or not self.slow_s >= 0:
            raise ValueError(f"faults: hang_s must be > 0 and slow_s >= 0, got {self.hang_s}, {self.slow_s}")


def garbage_text(rng: random.Random) -> str:
    """Noise an env might send back: bytes read leniently, control characters, lone surrogates."""
    size = rng.choice([0, 1, 50, 500, 20000])
    raw = bytes(rng.getrandbits(8) for _ in range(size))
    return raw.decode("utf-8", "surrogateescape") + "\x00\x1b[2J\udcff"


class FaultyEnv:
    """`inner` with faults injected per `spec` (see the module docstring)."""

    def __init__(self, inner: Any, spec: FaultSpec) -> None:
        self.inner = inner
        self.spec = spec
        # In a worker the worker's own token joins the seed: a retry runs in a fresh child or
        # actor and must not replay the same faults. In this process the draws repeat run to run.
        self.rng = random.Random(f"{spec.seed}/{worker_token()}/{next(_instances)}")
        self.injected: dict[str, int] = {}  # kind -> count, for tests and logs

    def __getattr__(self, name: str) -> Any:  # name, version, instruction, tasks, icl_turns, ...
        return getattr(self.inner, name)

    def _draw(self, kinds: tuple[str, ...]) -> str | None:
        usable = [k for k in self.spec.kinds if k in kinds]
        if not usable or self.rng.random() >= self.spec.rate:
            return None
        kind = self.rng.choice(usable)
        self.injected[kind] = self.injected.get(kind, 0) + 1
        if kind == "crash":
            os._exit(70)  # no cleanup, as a real crash
        if kind == "hang":
            time.sleep(self.spec.hang_s)
        if kind == "exception":
            raise InjectedFault(f"injected fault ({kind})")
        return kind

    def reset(self, task: Task) -> Observation:
        if self._draw(ON_RESET) == "slow_reset":
            time.sleep(self.spec.slow_s)
        return self.inner.reset(task)

    def step(self, action_text: str) -> StepResult:
        kind = self._draw(ON_STEP)
        result = self.inner.step(action_text)
        if kind == "garbage":
            result.observation = Observation(garbage_text(self.rng))
        return result

    def close(self) -> None:
        self.inner.close()


def make_faulty_env(name: str, kwargs: dict[str, Any], faults: dict[str, Any]) -> FaultyEnv:
    """The registered env `name` wrapped in faults; a picklable factory for `EnvWorker`."""
    from trajkit.envs.registry import make_env

    return FaultyEnv(make_env(name, **kwargs), FaultSpec(**faults))


def spec_dict(spec: FaultSpec) -> dict[str, Any]:
    return asdict(spec)
