"""EnvWorker: an env in a child process; crashes and hangs become EnvError, never a lost run."""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import pytest

from trajkit.envs.household import HouseholdEnv, expert_trajectory
from trajkit.envs.worker import EnvError, EnvWorker

SMALL = {"n_train": 6, "n_test": 6}


class FlakyEnv(HouseholdEnv):
    """A household env that crashes, hangs or raises on request (test-only, built in the child)."""

    def step(self, action_text: str):
        if action_text == "crash":
            os._exit(3)
        if action_text == "hang":
            time.sleep(600)
        if action_text == "raise":
            raise ValueError("boom from the env")
        return super().step(action_text)


def broken_factory(**kwargs):
    raise RuntimeError("cannot build this env")


FLAKY = f"{FlakyEnv.__module__}:FlakyEnv"  # a "module:function" path the child can import


def _assert_no_children() -> None:
    assert mp.active_children() == []
    try:
        import psutil
    except ImportError:
        return
    # multiprocessing's own resource tracker is shared by the whole process and exits with it.
    leftovers = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "resource_tracker" not in " ".join(child.cmdline()):
                leftovers.append(child)
        except psutil.NoSuchProcess:
            pass  # gone by now, which is what we want
    assert leftovers == []


@pytest.fixture(scope="module")
def task():
    return HouseholdEnv(**SMALL).tasks("train")[0]


def test_worker_runs_a_registered_env(task) -> None:
    with EnvWorker("household", SMALL) as worker:
        assert worker.name == "household" and worker.version == HouseholdEnv.version
        assert worker.tasks("train") == HouseholdEnv(**SMALL).tasks("train")
        trajectory = expert_trajectory(worker, task)
        assert trajectory.success
        assert worker.restarts == 0
    _assert_no_children()


def test_crash_raises_env_error_and_next_reset_works(task) -> None:
    worker = EnvWorker(FLAKY, SMALL)
    try:
        worker.reset(task)
        pid = worker.pid
        with pytest.raises(EnvError, match="died during step"):
            worker.step("crash")
        with pytest.raises(EnvError, match="call reset"):
            worker.step("look")
        assert worker.reset(task).text.startswith("You are in the middle of a room.")
        assert worker.pid != pid and worker.restarts == 1
        assert worker.step("look").info["valid"]
    finally:
        worker.close()
    _assert_no_children()


def test_hang_times_out_and_next_reset_works(task) -> None:
    worker = EnvWorker(FlakyEnv, SMALL, step_timeout=0.5)
    try:
        worker.reset(task)
        start = time.monotonic()
        with pytest.raises(EnvError, match="timed out after 0.5s"):
            worker.step("hang")
        assert time.monotonic() - start < 10
        worker.reset(task)
        assert worker.step("inventory").observation.text == "You are not carrying anything."
    finally:
        worker.close()
    _assert_no_children()


def test_env_exception_carries_its_text(task) -> None:
    with EnvWorker(FlakyEnv, SMALL) as worker:
        worker.reset(task)
        with pytest.raises(EnvError, match="boom from the env") as info:
            worker.step("raise")
        assert "ValueError" in str(info.value)
        worker.reset(task)
        assert worker.step("look").info["valid"]
    _assert_no_children()


def test_build_failures_are_env_errors(task) -> None:
    with EnvWorker(broken_factory) as worker:
        with pytest.raises(EnvError, match="cannot build this env"):
            worker.reset(task)
    with EnvWorker("no-such-env") as worker:
        with pytest.raises(EnvError, match="unknown env 'no-such-env'"):
            worker.reset(task)
    _assert_no_children()


def test_close_is_idempotent_and_final(task) -> None:
    worker = EnvWorker("household", SMALL)
    worker.reset(task)
    worker.close()
    worker.close()
    _assert_no_children()
    with pytest.raises(EnvError, match="closed"):
        worker.reset(task)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="timeouts"):
        EnvWorker("household", step_timeout=0)
    with pytest.raises(ValueError, match="factory"):
        EnvWorker("")
