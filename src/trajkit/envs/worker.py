"""Run one env in a child process, so a crash or a hang costs an episode, not the run.

`EnvWorker` speaks the Env interface (`tasks`, `reset`, `step`, `close`) and forwards each call to
a child process started with the "spawn" context (no inherited threads, locks or CUDA state). Any
failure of the env (the child dies, the env raises, or a call runs past its timeout) raises
`EnvError` with the error text; the child is then torn down and the next `reset` starts a fresh
one. `close()` always leaves no child process behind.

The child builds the env from `factory`: a name in `trajkit.envs.registry`, a "module:function"
path, or a picklable top-level callable. Names registered at runtime in the parent process are not
visible in the child (spawn starts a fresh interpreter); use a "module:function" path for those.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from trajkit.envs.base import OBSERVATION_PREFIX, Observation, StepResult, Task

_CONTEXT = "spawn"
# How long a child gets to exit by itself on close() before it is terminated, then killed.
_EXIT_GRACE_S = 2.0


class EnvError(RuntimeError):
    """The env failed (crashed, raised or timed out); the episode is lost, the worker is not."""


def build_env(factory: str | Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """The env `factory` names: a registered name, a "module:function" path or a callable."""
    if callable(factory):
        return factory(**kwargs)
    if ":" in factory:
        from trajkit.envs.registry import resolve_factory

        return resolve_factory(factory)(**kwargs)
    from trajkit.envs.registry import make_env

    return make_env(factory, **kwargs)


def env_meta(env: Any) -> dict[str, Any]:
    """What a proxy answers without a call to its env: name, version, instruction, prefix."""
    return {
        "name": getattr(env, "name", None),
        "version": getattr(env, "version", None),
        "instruction": getattr(env, "instruction", None),
        "observation_prefix": getattr(env, "observation_prefix", OBSERVATION_PREFIX),
    }


def _child_main(conn: Connection, factory: str | Callable[..., Any], kwargs: dict[str, Any]) -> None:
    """The child's loop: build the env, then answer one request at a time until told to stop."""
    try:
        env = build_env(factory, kwargs)
        conn.send(("ok", env_meta(env)))
    except BaseException:
        conn.send(("error", f"building the env failed:\n{traceback.format_exc()}"))
        return
    while True:
        try:
            method, arg = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            break  # the parent went away
        if method == "close":
            try:
                env.close()
            except BaseException:
                pass  # the process is about to exit anyway
            conn.send(("ok", None))
            break
        try:
            result = getattr(env, method)(arg)
        except BaseException:
            conn.send(("error", traceback.format_exc()))
            continue
        conn.send(("ok", result))


def factory_label(factory: str | Callable[..., Any]) -> str:
    if isinstance(factory, str):
        return factory
    return f"{getattr(factory, '__module__', '?')}:{getattr(factory, '__qualname__', repr(factory))}"


class EnvWorker:
    """One env in a child process, with per-call timeouts.

    `reset_timeout` also covers starting the child and building the env on the first reset.
    """

    def __init__(
        self,
        factory: str | Callable[..., Any],
        kwargs: dict[str, Any] | None = None,
        step_timeout: float = 30.0,
        reset_timeout: float = 120.0,
    ) -> None:
        if isinstance(factory, str) and not factory:
            raise ValueError("factory must be an env name, a 'module:function' path or a callable")
        if step_timeout <= 0 or reset_timeout <= 0:
            raise ValueError(f"timeouts must be > 0, got step={step_timeout}, reset={reset_timeout}")
        self.factory = factory
        self.kwargs = dict(kwargs or {})
        self.step_timeout = step_timeout
        self.reset_timeout = reset_timeout
        self.restarts = 0  # child processes started after the first one
        self._process: mp.process.BaseProcess | None = None
        self._conn: Connection | None = None
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
        self._ensure_started(self.reset_timeout)
        return self._call("tasks", split, self.reset_timeout)

    def reset(self, task: Task) -> Observation:
        self._in_episode = False
        self._ensure_started(self.reset_timeout)
        observation = self._call("reset", task, self.reset_timeout)
        self._in_episode = True
        return observation

    def step(self, action_text: str) -> StepResult:
        if not self._in_episode:
            raise EnvError("no episode in progress (the last one failed or never started); call reset(task)")
        return self._call("step", action_text, self.step_timeout)

    def close(self) -> None:
        """Stop the child (politely, then by force) and reap it. Safe to call more than once."""
        self._closed = True
        self._stop(polite=True)

    def __enter__(self) -> EnvWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # A forgotten worker must not leave its child running; close() is the real API.
        try:
            self._stop(polite=False)
        except Exception:
            pass

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None and self._process.is_alive() else None

    # ---- process management ------------------------------------------------------------------

    def _ensure_meta(self) -> dict[str, Any]:
        if not self._meta:
            self._ensure_started(self.reset_timeout)
        return self._meta

    def _ensure_started(self, timeout: float) -> None:
        if self._closed:
            raise EnvError("the worker is closed")
        if self._process is not None and self._process.is_alive():
            return
        if self._process is not None:
            self._stop(polite=False)
        if self._started:
            self.restarts += 1
        self._started = True
        ctx = mp.get_context(_CONTEXT)
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        process = ctx.Process(
            target=_child_main,
            args=(child_conn, self.factory, self.kwargs),
            name=f"trajkit-env-{factory_label(self.factory)}",
            daemon=True,  # dies with the parent if the parent never calls close()
        )
        process.start()
        child_conn.close()  # the parent keeps only its end, so EOF means the child is gone
        self._process, self._conn = process, parent_conn
        self._meta = self._receive("start", timeout)

    def _call(self, method: str, arg: Any, timeout: float) -> Any:
        if self._conn is None:
            raise EnvError(f"{method}: the env process is not running; call reset(task)")
        try:
            self._conn.send((method, arg))
        except (OSError, ValueError) as err:
            self._fail()
            raise EnvError(f"{method}: could not reach the env process: {err}") from err
        return self._receive(method, timeout)

    def _receive(self, what: str, timeout: float) -> Any:
        conn = self._conn
        assert conn is not None
        label = factory_label(self.factory)
        try:
            ready = conn.poll(timeout)
        except (OSError, EOFError):
            ready = True  # fall through to recv, which reports the broken pipe
        if not ready:
            self._fail()
            raise EnvError(f"{label}: {what} timed out after {timeout:g}s; the env process was killed")
        try:
            status, payload = conn.recv()
        except (EOFError, OSError):
            exitcode = self._fail()
            raise EnvError(f"{label}: the env process died during {what} (exit code {exitcode})") from None
        if status != "ok":
            self._fail()
            raise EnvError(f"{label}: {what} failed in the env process:\n{payload}")
        return payload

    def _fail(self) -> int | None:
        """Tear the child down after a failure; the next reset starts a fresh one."""
        return self._stop(polite=False)

    def _stop(self, polite: bool) -> int | None:
        """Stop and reap the child; returns its exit code (None if there was none)."""
        process, conn = self._process, self._conn
        self._in_episode = False
        if process is None:
            return None
        if polite and conn is not None and process.is_alive():
            try:
                conn.send(("close", None))
                if conn.poll(_EXIT_GRACE_S):
                    conn.recv()
            except (OSError, EOFError, ValueError):
                pass
            process.join(_EXIT_GRACE_S)
        if process.is_alive():
            process.terminate()
            process.join(_EXIT_GRACE_S)
        if process.is_alive():
            process.kill()
            process.join()
        else:
            process.join()  # reap it, so no zombie stays behind
        exitcode = process.exitcode
        if conn is not None:
            conn.close()
        process.close()
        self._process, self._conn = None, None
        return exitcode
