"""RayEnvWorker: an env in a Ray actor, with EnvWorker's timeouts and errors; a local Ray on
loopback; a household round with `env.workers: ray`. One local Ray (2 CPUs) serves the module."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trajkit.config import ConfigError
from trajkit.envs.household import HouseholdEnv, expert_trajectory
from trajkit.envs.worker import EnvError

if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    import ray  # CI installs the ray extra: a missing one fails, never skips
else:
    ray = pytest.importorskip("ray")

from trajkit.envs.ray_worker import RayEnvWorker, start_ray  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"n_train": 6, "n_test": 6}
_RAY_VARS = ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_USAGE_STATS_ENABLED")


class FlakyEnv(HouseholdEnv):
    """A household env that hangs or raises on request (test-only, built in the actor)."""

    def step(self, action_text: str):
        if action_text == "hang":
            time.sleep(600)
        if action_text == "raise":
            raise ValueError("boom from the env")
        return super().step(action_text)


def slow_to_build(**kwargs):
    time.sleep(600)


class KillOnceEnv(HouseholdEnv):
    """Kills its own process (SIGKILL, as the OOM killer would) at the second step of task
    `victim`, the first time only (`marker` remembers it across actors)."""

    def __init__(self, marker: str, victim: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.marker, self.victim, self.task_id, self.steps = marker, victim, None, 0

    def reset(self, task):
        self.task_id, self.steps = task.id, 0
        return super().reset(task)

    def step(self, action_text: str):
        self.steps += 1
        if self.task_id == self.victim and self.steps == 2 and not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return super().step(action_text)


# Ray workers import the driver's script folder and working directory, not pytest's test folder:
# this module's classes travel by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def wait_gone(pid: int, within: float = 15.0) -> bool:
    import psutil

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def ray_local():
    saved = {name: os.environ.get(name) for name in _RAY_VARS}
    if os.environ.get("RAY_ADDRESS"):
        pytest.skip("RAY_ADDRESS is set: these tests start their own local Ray")
    ray = start_ray(num_cpus=2)
    yield ray
    ray.shutdown()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def task():
    return HouseholdEnv(**SMALL).tasks("train")[0]


def test_local_ray_listens_on_loopback_only(ray_local) -> None:
    import psutil

    assert ray_local.util.get_node_ip_address() == "127.0.0.1"
    with RayEnvWorker("household", SMALL) as worker:
        assert worker.name == "household" and worker.node == "127.0.0.1"  # the actor is up
        me = psutil.Process()
        listening = []
        for proc in [me, *me.children(recursive=True)]:
            try:
                conns = proc.net_connections(kind="inet")
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            listening += [(proc.name(), c.laddr.ip) for c in conns if c.status == psutil.CONN_LISTEN]
        assert any("raylet" in name for name, _ in listening), listening  # the check saw Ray
        assert all(ip in ("127.0.0.1", "::1", "::ffff:127.0.0.1") for _, ip in listening), listening


def test_worker_runs_a_registered_env_and_leaves_no_actor(ray_local, task) -> None:
    worker = RayEnvWorker("household", SMALL)
    assert worker.name == "household" and worker.version == HouseholdEnv.version
    assert worker.tasks("train") == HouseholdEnv(**SMALL).tasks("train")
    assert expert_trajectory(worker, task).success
    pid = worker.pid
    assert pid is not None and pid != os.getpid() and worker.restarts == 0
    worker.close()
    worker.close()
    assert wait_gone(pid), "the closed worker's actor process is still running"
    with pytest.raises(EnvError, match="closed"):
        worker.reset(task)


def test_a_killed_actor_raises_env_error_and_the_next_reset_replaces_it(ray_local, task) -> None:
    with RayEnvWorker("household", SMALL) as worker:
        worker.reset(task)
        pid = worker.pid
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(EnvError, match=rf"the env actor died during step \(pid {pid}"):
            worker.step("look")
        with pytest.raises(EnvError, match="call reset"):
            worker.step("look")
        assert worker.reset(task).text.startswith("You are in the middle of a room.")
        assert worker.pid != pid and worker.restarts == 1
        assert worker.step("look").info["valid"]


def test_timeouts_kill_the_actor_and_the_next_reset_works(ray_local, task) -> None:
    with RayEnvWorker(FlakyEnv, SMALL, step_timeout=0.5) as worker:
        worker.reset(task)
        pid = worker.pid
        start = time.monotonic()
        with pytest.raises(EnvError, match=r"step timed out after 0.5s; the env actor was killed"):
            worker.step("hang")
        assert time.monotonic() - start < 10
        assert wait_gone(pid), "a timed-out actor must be killed, not left hanging"
        worker.reset(task)
        assert worker.step("inventory").observation.text == "You are not carrying anything."
    # The reset timeout also covers placing the actor and building the env.
    with RayEnvWorker(slow_to_build, reset_timeout=1.0) as worker:
        with pytest.raises(EnvError, match="start timed out after 1s"):
            worker.reset(task)


def test_env_errors_carry_their_text(ray_local, task) -> None:
    with RayEnvWorker(FlakyEnv, SMALL) as worker:
        worker.reset(task)
        with pytest.raises(EnvError, match="boom from the env") as info:
            worker.step("raise")
        assert "ValueError" in str(info.value)
        worker.reset(task)
        assert worker.step("look").info["valid"]
    with RayEnvWorker("no-such-env") as worker:
        with pytest.raises(EnvError, match="unknown env 'no-such-env'"):
            worker.reset(task)


def test_injected_faults_are_drawn_per_actor(ray_local, task) -> None:
    """Two actors with one fault seed meet different faults (a retry in a fresh actor must not
    replay the faults that cost the first attempt)."""
    from trajkit.envs.faulty import FaultSpec, spec_dict

    faults = spec_dict(FaultSpec(rate=0.5, kinds=["garbage"], seed=3))
    args = {"name": "household", "kwargs": SMALL, "faults": faults}

    def pattern(env) -> list[bool]:
        env.reset(task)
        return [env.step("look").observation.text.endswith("\udcff") for _ in range(16)]

    patterns = []
    for _ in range(2):
        with RayEnvWorker("trajkit.envs.faulty:make_faulty_env", args) as worker:
            patterns.append(pattern(worker))
    # Each actor's process makes its first FaultyEnv: without the actor's token both would draw
    # from the same seed and meet the same faults.
    assert any(patterns[0]) and patterns[0] != patterns[1]


@pytest.fixture(scope="module")
def sampler(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from trajkit.policy.backends import HFBackend
    from trajkit.policy.models import load_tokenizer
    from trajkit.render import Renderer

    tok = load_tokenizer(str(tiny_model_dir))
    renderer = Renderer(tok, "tiny")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    return HFBackend(model, tok, renderer.stop_ids, batch_size=4), renderer


def rollouts(sampler, out: Path, envs: list, n_tasks: int):
    from trajkit.policy.backends import Sampling
    from trajkit.rollout import RolloutConfig, run_rollouts
    from trajkit.rollout.react import ReactAgent

    backend, renderer = sampler
    tasks = HouseholdEnv(n_train=6, n_test=0).tasks("train")[:n_tasks]
    config = RolloutConfig(sampling=Sampling(temperature=0, max_new_tokens=6), max_steps=3)
    try:
        trajs = run_rollouts(tasks, envs, backend, ReactAgent(renderer), out, config)
    finally:
        for env in envs:
            env.close()
    assert sorted(t.task_id for t in trajs) == sorted(t.id for t in tasks)  # one record per episode
    assert len(out.read_text(encoding="utf-8").splitlines()) == n_tasks
    return trajs


def test_a_killed_actor_costs_one_episode_retried_once(ray_local, sampler, tmp_path) -> None:
    from trajkit.rollout.engine import accounting

    victim = HouseholdEnv(n_train=6, n_test=0).tasks("train")[1].id
    marker = tmp_path / "killed"
    kwargs = {"marker": str(marker), "victim": victim, "n_train": 6, "n_test": 0}
    envs = [RayEnvWorker(KillOnceEnv, kwargs, step_timeout=30, reset_timeout=60) for _ in range(2)]
    trajs = rollouts(sampler, tmp_path / "r.jsonl", list(envs), 4)
    assert marker.exists(), "the actor was never killed"
    assert accounting(trajs) == {"finished": 4, "env_errors": 0, "retried": 1}
    (retried,) = [t for t in trajs if "retried_after" in t.metadata]
    assert retried.task_id == victim and retried.metadata["attempts"] == 2
    assert f"the env actor died during step (pid {marker.read_text()}" in retried.metadata["retried_after"]
    assert retried.metadata["steps"] >= 2  # the retry got past the step that killed the first
    assert sum(env.restarts for env in envs) == 1  # one actor replaced, the other untouched


def test_a_crashing_env_actor_costs_an_episode_not_the_run(ray_local, sampler, tmp_path) -> None:
    from trajkit.envs.faulty import FaultSpec
    from trajkit.pipeline.config import EnvSection
    from trajkit.pipeline.envs import make_rollout_env

    section = EnvSection(workers="ray", step_timeout=30, reset_timeout=60, faults=FaultSpec(1.0, ["crash"]))
    env = make_rollout_env(section, {"n_train": 6, "n_test": 0})
    assert isinstance(env, RayEnvWorker)
    (traj,) = rollouts(sampler, tmp_path / "r.jsonl", [env], 1)
    meta = traj.metadata
    assert meta["attempts"] == 2 and traj.success is False
    for why in (meta["retried_after"], meta["error"]):
        assert "EnvError" in why and "the env actor died during reset" in why


def test_a_household_round_runs_on_a_ray_cluster(ray_local, tmp_path) -> None:
    """`trajkit run` with `env.workers: ray` joins the cluster RAY_ADDRESS names (this module's
    Ray) and runs a whole round; every rollout finishes without an env error."""
    address = ray_local.get_runtime_context().gcs_address
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"run_dir: {tmp_path / 'run'}\nrounds: 1\n"
        "env: {name: household, workers: ray, kwargs: {n_train: 30, n_test: 6, layout: compact}}\n"
        "model: {tiny_size: xs}\nexpert: {limit: 8}\n"
        "sft: {max_steps: 2, batch_size: 4, save_steps: 1000}\n"
        "explore: {limit: 4, batch_size: 2, max_new_tokens: 8, max_steps: 3, temperature: 1.0}\n"
        "pairs: {strategy: trajectory, extra_turns: 2}\ndpo: {max_steps: 2, batch_size: 2, save_steps: 1}\n"
        "eval: {splits: [test_seen], limit: 2, batch_size: 2, max_new_tokens: 8, max_steps: 2}\nrft: false\n"
    )
    env = {**os.environ, "RAY_ADDRESS": address}
    command = [sys.executable, "-m", "trajkit", "run", "--config", str(recipe), "-q"]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Started a local Ray instance" not in proc.stderr  # it joined, as RAY_ADDRESS says
    explored = (tmp_path / "run" / "round-1" / "explore" / "rollouts.jsonl").read_text().splitlines()
    assert len(explored) == 4
    assert not any("error" in json.loads(line)["metadata"] for line in explored)
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "workers: ray" in config and "ray_address" not in config


def test_recipe_checks_for_workers(monkeypatch) -> None:
    from trajkit.envs import ray_worker
    from trajkit.pipeline.config import run_config_from_dict

    def env(**section):
        return run_config_from_dict({"run_dir": "x", "env": section}, "r.yaml").env

    values = (False, True, "process", "ray")
    assert [env(workers=w).workers for w in values] == list(values)
    from trajkit.envs.worker import EnvWorker
    from trajkit.pipeline.envs import make_rollout_env

    kinds = {w: type(make_rollout_env(env(workers=w), SMALL)) for w in (True, "process", "ray")}
    assert kinds == {True: EnvWorker, "process": EnvWorker, "ray": RayEnvWorker}  # none started yet
    crash = {"rate": 0.1, "kinds": ["crash"]}
    assert env(workers="ray", faults=crash).faults.kinds == ["crash"]
    assert env(workers="ray", ray_address="auto").ray_address == "auto"
    with pytest.raises(
        ConfigError, match=r"^r.yaml: env.workers must be false, true \(= process\), process or ray$"
    ):
        env(workers="threads")
    with pytest.raises(ConfigError, match="r.yaml: env.ray_address is for env.workers: ray"):
        env(workers="process", ray_address="auto")
    monkeypatch.setattr(ray_worker, "ray_available", lambda: False)
    with pytest.raises(ConfigError) as info:
        env(workers="ray")
    message = str(info.value)
    assert message.startswith("r.yaml: env.workers ray needs the ray package")
    assert "pip install 'trajkit[ray]'" in message and "\n" not in message
