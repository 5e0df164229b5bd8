"""Run one env in a Ray actor: the same interface, timeouts and errors as `EnvWorker`, on any
machine of a Ray cluster.

`RayEnvWorker` speaks the Env interface (`tasks`, `reset`, `step`, `close`) and forwards each call
to an actor that holds the env. Any failure of the env (the actor dies, the env raises, or a call
runs past its timeout) raises `EnvError` with the error text; the actor is then killed and the
next `reset` starts a fresh one. The rollout engine retries the lost episode once, as it does for
`EnvWorker`. Actors are spread over the cluster's nodes and ask Ray for one CPU to be placed and
none while they run (Ray's actor default), so a pool may be wider than the cluster's CPU count.

Where Ray runs: `address` (the recipe's `env.ray_address`), else the RAY_ADDRESS variable, names a
cluster to join; with neither, the first actor starts a local Ray bound to 127.0.0.1 without the
dashboard UI, which lives as long as this process. The factory is a registered env name, a
"module:function" path or a picklable callable, as for `EnvWorker`; every node needs trajkit and
the env's packages installed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import threading
from collections.abc import Callable
from typing import Any

from trajkit.envs.base import OBSERVATION_PREFIX, Observation, StepResult, Task
from trajkit.envs.faulty import WORKER_TOKEN_ENV
from trajkit.envs.worker import EnvError, build_env, env_meta, factory_label

# How long a polite close waits for the env's own close() before the actor is killed.
_EXIT_GRACE_S = 2.0
# Ray decides the node address when it is imported; "0" keeps a Ray started here on loopback
# (ray.init's `_node_ip_address="127.0.0.1"` alone is rewritten to the machine's routable address).
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
INSTALL_HINT = "pip install 'trajkit[ray]' (or set env.workers: process)"

_lock = threading.Lock()
_actor_class: Any = None


def ray_available() -> bool:
    return importlib.util.find_spec("ray") is not None


def _import_ray(local: bool) -> Any:
    if local:
        os.environ.setdefault(_LOOPBACK_ENV, "0")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a local run reports nothing
    import ray

    if local:
        from ray._private import ray_constants

        # Ray was imported before the variable was set (by the caller): same switch, same effect.
        if os.environ.get(_LOOPBACK_ENV) == "0":
            ray_constants.ENABLE_RAY_CLUSTER = False
    return ray


def start_ray(address: str | None = None, num_cpus: int | None = None) -> Any:
    """Connect this process to Ray once: to `address` or RAY_ADDRESS when given, else to a local
    Ray on 127.0.0.1 (with `num_cpus`, default all). Returns the `ray` module."""
    if not ray_available():
        raise EnvError(f"env.workers: ray needs the ray package; {INSTALL_HINT}")
    address = address or os.environ.get("RAY_ADDRESS") or None
    with _lock:
        ray = _import_ray(local=address is None)
        if ray.is_initialized():
            return ray
        if address is not None:
            ray.init(address=address)
            return ray
        ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1")
        node_ip = ray.util.get_node_ip_address()
        if node_ip not in ("127.0.0.1", "::1"):
            ray.shutdown()
            raise EnvError(
                f"env.workers: ray: the local Ray came up on {node_ip}, not loopback; "
                "start one yourself (`ray start --head`) and give env.ray_address"
            )
        return ray


class _EnvHost:
    """The actor's body: one env, built by `start`, answering one call at a time."""

    def __init__(self, factory: str | Callable[..., Any], kwargs: dict[str, Any]) -> None:
        self.factory, self.kwargs, self.env = factory, kwargs, None

    def start(self) -> dict[str, Any]:
        import ray

        # Seeds injected faults per actor (`envs.faulty`); this process hosts only this actor.
        os.environ[WORKER_TOKEN_ENV] = ray.get_runtime_context().get_actor_id()
        self.env = build_env(self.factory, self.kwargs)
        return {**env_meta(self.env), "pid": os.getpid(), "node": ray.util.get_node_ip_address()}

    def call(self, method: str, arg: Any) -> Any:
        return getattr(self.env, method)(arg)

    def close(self) -> None:
        if self.env is not None:
            self.env.close()


def _actor() -> Any:
    global _actor_class
    if _actor_class is None:
        import ray

        _actor_class = ray.remote(max_restarts=0, max_task_retries=0)(_EnvHost)
    return _actor_class


class RayEnvWorker:
    """One env in a Ray actor, with per-call timeouts (see the module docstring).

    `reset_timeout` also covers placing the actor, starting its process and building the env.
    """

    def __init__(
        self,
        factory: str | Callable[..., Any],
        kwargs: dict[str, Any] | None = None,
        step_timeout: float = 30.0,
        reset_timeout: float = 120.0,
        address: str | None = None,
    ) -> None:
        if isinstance(factory, str) and not factory:
            raise ValueError("factory must be an env name, a 'module:function' path or a callable")
        if step_timeout <= 0 or reset_timeout <= 0:
            raise ValueError(f"timeouts must be > 0, got step={step_timeout}, reset={reset_timeout}")
        if not ray_available():
            raise EnvError(f"env.workers: ray needs the ray package; {INSTALL_HINT}")
        self.factory = factory
        self.kwargs = dict(kwargs or {})
        self.step_timeout = step_timeout
        self.reset_timeout = reset_timeout
        self.address = address
        self.restarts = 0  # actors started after the first one
        self._actor: Any = None
        self._meta: dict[str, Any] = {}
        self._in_episode = False
        self._started = False
        self._closed = False

    # ---- Env interface -----------------------------------------------------------------------

    @property
    def name(self) -> str | None:
        return self._ensure_meta().get("name")

    @property
    def version(self) -> str | None:
        return self._ensure_meta().get("version")

    @property
    def instruction(self) -> str | None:
        return self._ensure_meta().get("instruction")

    @property
    def observation_prefix(self) -> str:
        return self._ensure_meta().get("observation_prefix", OBSERVATION_PREFIX)

    def tasks(self, split: str) -> list[Task]:
        self._ensure_started()
        return self._call("tasks", split, self.reset_timeout)

    def reset(self, task: Task) -> Observation:
        self._in_episode = False
        self._ensure_started()
        observation = self._call("reset", task, self.reset_timeout)
        self._in_episode = True
        return observation

    def step(self, action_text: str) -> StepResult:
        if not self._in_episode:
            raise EnvError("no episode in progress (the last one failed or never started); call reset(task)")
        return self._call("step", action_text, self.step_timeout)

    def close(self) -> None:
        """Close the env (politely, then kill the actor). Safe to call more than once."""
        self._closed = True
        self._stop(polite=True)

    def __enter__(self) -> RayEnvWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self._stop(polite=False)
        except Exception:
            pass

    @property
    def pid(self) -> int | None:
        """The actor's process id (on the node `node`), or None when no actor is running."""
        return self._meta.get("pid") if self._actor is not None else None

    @property
    def node(self) -> str | None:
        return self._meta.get("node") if self._actor is not None else None

    # ---- actor management --------------------------------------------------------------------

    def _ensure_meta(self) -> dict[str, Any]:
        if not self._meta:
            self._ensure_started()
        return self._meta

    def _ensure_started(self) -> None:
        if self._closed:
            raise EnvError("the worker is closed")
        if self._actor is not None:
            return
        ray = start_ray(self.address)
        if self._started:
            self.restarts += 1
        self._started = True
        # SPREAD: a pool's actors go to different nodes of a cluster, not all to the first one.
        self._actor = _actor().options(scheduling_strategy="SPREAD").remote(self.factory, self.kwargs)
        self._meta = self._get(ray, self._actor.start.remote(), "start", self.reset_timeout)

    def _call(self, method: str, arg: Any, timeout: float) -> Any:
        if self._actor is None:
            raise EnvError(f"{method}: the env actor is not running; call reset(task)")
        import ray

        return self._get(ray, self._actor.call.remote(method, arg), method, timeout)

    def _get(self, ray: Any, ref: Any, what: str, timeout: float) -> Any:
        label = factory_label(self.factory)
        errors = ray.exceptions
        try:
            return ray.get(ref, timeout=timeout)
        except errors.GetTimeoutError:
            self._stop(polite=False)
            raise EnvError(
                f"{label}: {what} timed out after {timeout:g}s; the env actor was killed"
            ) from None
        except errors.RayActorError as err:  # the process died: a crash, a kill, the node lost
            self._stop(polite=False)
            raise EnvError(f"{label}: the env actor died during {what} ({_why(err)})") from None
        except errors.RayTaskError as err:  # the env raised; its traceback is in the message
            self._stop(polite=False)
            raise EnvError(f"{label}: {what} failed in the env actor:\n{err}") from None
        except errors.RayError as err:  # anything else Ray reports (memory monitor, lost objects)
            self._stop(polite=False)
            raise EnvError(f"{label}: {what} failed: {type(err).__name__}: {_why(err)}") from None

    def _stop(self, polite: bool) -> None:
        """Close and kill the actor; the next reset starts a fresh one."""
        actor, self._actor = self._actor, None
        self._in_episode = False
        if actor is None:
            return
        import ray

        if not ray.is_initialized():
            return  # Ray is gone already, and its actors with it
        if polite:
            try:
                ray.get(actor.close.remote(), timeout=_EXIT_GRACE_S)
            except Exception:
                pass  # the actor is killed next anyway
        try:
            ray.kill(actor, no_restart=True)
        except Exception:
            pass  # already dead


def _why(err: Exception) -> str:
    """Where and how a Ray error says the actor ended, without Ray's advice around it."""
    text = str(err)
    found = {key: re.search(rf"{pattern}\s*([^\s,]+)", text) for key, pattern in _WHY.items()}
    parts = [f"{key} {m.group(1)}" for key, m in found.items() if m]
    if parts:
        return ", ".join(parts)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:300] if lines else type(err).__name__


_WHY = {"pid": r"\bpid:", "node": r"\bip:", "exit type": r"Worker exit type:"}
