"""The ScienceWorld adapter: ETO splits, episodes on the real simulator, the gold-path oracle."""

from __future__ import annotations

import json
import os

import pytest
from conftest import shared_data_path  # tests/ is on sys.path (rootdir conftest)
from typer.testing import CliRunner

from trajkit.data.schema import AGENT, OBSERVATION, TASK
from trajkit.envs.base import Task, parse_react_action
from trajkit.envs.sciworld import (
    DATA_ENV_VAR,
    DEFAULT_MAX_STEPS,
    INSTRUCTION,
    PROMPTS_ENV_VAR,
    ScienceWorldEnv,
    availability,
    oracle_trajectory,
    package_variation_sets,
    simulator_task_name,
    templated_thought,
)
from trajkit.envs.sciworld.expert import easy_path

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REASON = availability()
needs_sim = pytest.mark.skipif(REASON is not None and not IN_CI, reason=f"ScienceWorld unavailable: {REASON}")


def splits_dir():
    return shared_data_path("eto", "splits")


def prompts_dir():
    return shared_data_path("eto", "prompts")


def java_children() -> list:
    import psutil

    return [p for p in psutil.Process().children(recursive=True) if "java" in p.name().lower()]


@pytest.fixture(scope="module")
def env():
    if REASON is not None:
        pytest.fail(f"ScienceWorld must run under CI=true: {REASON}")
    e = ScienceWorldEnv(data_dir=str(splits_dir()), prompts_dir=str(prompts_dir()))
    yield e
    e.close()


def first_of(env, split: str, task_name: str) -> Task:
    return next(t for t in env.tasks(split) if t.spec["task_name"] == task_name)


# ---- tasks and data files (no JVM) -----------------------------------------------------------


def test_eto_splits_sizes_ids_and_budgets() -> None:
    env = ScienceWorldEnv(data_dir=str(splits_dir()))
    sizes = {s: len(env.tasks(s)) for s in env.splits}
    assert sizes == {"train": 1483, "test_seen": 194, "test_unseen": 211}
    assert env.splits[0] == "train" and env.name == "sciworld"
    assert env.version.startswith("scienceworld==")
    first = env.tasks("train")[0]  # ETO's file starts with ["task-2a-test-conductivity", 412]
    assert first.id == "9_412" and first.split == "train" and first.max_steps == 30
    assert first.spec == {"task_name": "task-2a-test-conductivity", "variation": 412}
    ids = [t.id for s in env.splits for t in env.tasks(s)]
    assert len({t.id for t in env.tasks("train")}) == 1483
    assert all(i.split("_")[0].isdigit() for i in ids)
    json.dumps([t.spec for t in env.tasks("train")])  # specs travel as JSON
    assert env.java_pid is None  # listing tasks started no JVM


def test_split_overlap_cli_reports_etos_known_leak(monkeypatch) -> None:
    import trajkit.cli  # noqa: F401  (registers the `env` commands)
    from trajkit.cli.app import app

    monkeypatch.setenv(DATA_ENV_VAR, str(splits_dir()))
    result = CliRunner().invoke(app, ["env", "check-splits", "sciworld", "--json"])
    assert result.exit_code == 0, result.output
    report = {row["split"]: row for row in json.loads(result.output)}
    assert report["test_seen"]["tasks"] == 194 and report["test_seen"]["overlap"] == 54
    assert report["test_unseen"]["tasks"] == 211 and report["test_unseen"]["overlap"] == 0


def test_env_var_data_dir_and_task_filter(monkeypatch) -> None:
    monkeypatch.setenv(DATA_ENV_VAR, str(splits_dir().parent))  # the parent of splits/ will do
    env = ScienceWorldEnv(task_names=["task-3-find-animal", "lifespan-longest-lived"])
    names = {t.spec["task_name"] for t in env.tasks("train")}
    assert names == {"task-3-find-animal", "task-6-lifespan-(longest-lived)"}
    assert len(env.tasks("train")) == 120 + 83 and len(env.tasks("test_unseen")) == 20


def test_bad_data_files_are_named(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no train split file"):
        ScienceWorldEnv(data_dir=str(tmp_path))
    for name in ("sciworld_train.json", "sciworld_test_seen.json", "sciworld_test_unseen.json"):
        (tmp_path / name).write_text('[["task-1-boil", 3]]')
    with pytest.raises(FileNotFoundError, match="step budget"):
        ScienceWorldEnv(data_dir=str(tmp_path))
    (tmp_path / "sciworld_max_steps.json").write_text('{"task-1-boil": 0}')
    with pytest.raises(ValueError, match=r"sciworld_max_steps.json: step budget of 'task-1-boil'"):
        ScienceWorldEnv(data_dir=str(tmp_path))
    (tmp_path / "sciworld_max_steps.json").write_text('{"task-1-melt": 80}')
    with pytest.raises(ValueError, match="no step budget for task 'task-1-boil'"):
        ScienceWorldEnv(data_dir=str(tmp_path)).tasks("train")
    (tmp_path / "sciworld_max_steps.json").write_text('{"task-1-boil": 80}')
    (tmp_path / "sciworld_test_seen.json").write_text('[["task-1-boil", 3], ["task-1-boil", -1]]')
    env = ScienceWorldEnv(data_dir=str(tmp_path))
    assert env.tasks("train")[0].id == "task-1-boil_3"  # no id table: the task name stands in
    with pytest.raises(ValueError, match=r"sciworld_test_seen.json: record 1 must be"):
        env.tasks("test_seen")
    with pytest.raises(ValueError, match="max_heap"):
        ScienceWorldEnv(data_dir=str(tmp_path), max_heap="lots")


def test_instruction_and_icl_episode(monkeypatch) -> None:
    monkeypatch.delenv(PROMPTS_ENV_VAR, raising=False)
    builtin = ScienceWorldEnv(data_dir=str(splits_dir()))
    assert builtin.instruction == INSTRUCTION and builtin.icl_turns() == []
    assert "teleport to LOC" in INSTRUCTION and "focus on OBJ" in INSTRUCTION
    monkeypatch.setenv(PROMPTS_ENV_VAR, str(prompts_dir()))
    env = ScienceWorldEnv(data_dir=str(splits_dir()))
    assert env.instruction == (prompts_dir() / "sciworld_inst.txt").read_text().rstrip()
    turns = env.icl_turns()
    assert turns[0].role == TASK and turns[0].text.startswith("Your task is to use chemistry")
    assert [t.role for t in turns[1:4]] == [AGENT, OBSERVATION, AGENT]
    assert turns[2].text.startswith("Observation: ") and turns[-1].role == AGENT
    assert parse_react_action(turns[1].text) == "look around"


def test_prompts_in_etos_repo_layout(tmp_path) -> None:
    (tmp_path / "instructions").mkdir()
    (tmp_path / "icl_examples").mkdir()
    (tmp_path / "instructions" / "sciworld_inst.txt").write_text("Do science.\n")
    (tmp_path / "icl_examples" / "sciworld_icl.json").write_bytes(
        (prompts_dir() / "sciworld_icl.json").read_bytes()
    )
    env = ScienceWorldEnv(data_dir=str(splits_dir()), prompts_dir=str(tmp_path))
    assert env.instruction == "Do science." and len(env.icl_turns()) > 10
    with pytest.raises(FileNotFoundError, match="no ScienceWorld instruction"):
        ScienceWorldEnv(data_dir=str(splits_dir()), prompts_dir=str(tmp_path / "icl_examples"))


def test_name_mapping_and_package_variation_sets() -> None:
    assert simulator_task_name("task-1-boil") == "boil"
    assert simulator_task_name("task-2a-test-conductivity") == "test-conductivity"
    assert simulator_task_name("task-9-mendellian-genetics-(known-plant)") == "mendelian-genetics-known-plant"
    assert package_variation_sets(3) == ([0], [1], [2])
    train, dev, test = package_variation_sets(10)  # groups of 2: 0-1, 2-3 | 4-5 | 6-7 + 8-9
    assert (train, dev, test) == ([0, 1, 2, 3], [4, 5], [6, 7, 8, 9])
    train, dev, test = package_variation_sets(1386)
    assert sorted(train + dev + test) == list(range(1386)) and len(dev) == 346


def test_easy_path_and_thoughts() -> None:
    import random

    gold = ["open door to hallway", "go to hallway", "open door to kitchen", "go to kitchen", "look around"]
    assert easy_path(gold + ["close door to outside", "go to outside"]) == [
        "teleport to kitchen",
        "look around",
        "close door to outside",
        "teleport to outside",
    ]
    rng = random.Random(0)
    assert "thermometer" in templated_thought("pick up thermometer", rng)
    assert "red wire" in templated_thought("connect battery anode to red wire terminal 1", rng)
    assert templated_thought("dunk it", rng) == "Next I will dunk it."


# ---- episodes on the simulator ---------------------------------------------------------------


@needs_sim
def test_reset_step_reward_and_invalid_action(env) -> None:
    task = first_of(env, "train", "task-3-find-animal")
    obs = env.reset(task)
    assert obs.text.startswith("Your task is to find a(n) animal.") and obs.instruction == obs.text
    assert env.java_pid is not None
    result = env.step("fly to the moon")
    assert result.info["valid"] is False and result.observation.text
    # Some tasks give partial credit from the start (find-animal: 8); the reward is that score / 100.
    assert result.reward == result.info["score"] / 100 < 1 and not result.done and result.info["steps"] == 1
    start = result.reward
    result = env.step("look around")
    assert result.info["valid"] and "This room is called" in result.observation.text
    result = env.step("")
    assert not result.done
    assert env.valid_actions()  # offered on request only
    for _ in range(task.max_steps - 3):
        result = env.step("wait1")
    assert result.done and result.info["truncated"] and not result.info["won"]
    assert result.reward >= start  # the best score so far, never lower
    with pytest.raises(RuntimeError, match="is over"):
        env.step("look around")
    with pytest.raises(ValueError, match="variation 99999 out of range"):
        env.reset(Task("x", "train", {"task_name": "task-3-find-animal", "variation": 99999}))
    with pytest.raises(ValueError, match="has no task 'task-99-fly'"):
        env.reset(Task("x", "train", {"task_name": "task-99-fly", "variation": 0}))


@needs_sim
def test_show_look_appends_the_room(env) -> None:
    task = first_of(env, "train", "task-3-find-animal")
    env.show_look = True
    try:
        text = env.reset(task).text
    finally:
        env.show_look = False
    assert text.startswith("Your task is to find a(n) animal.") and "\n\nThis room is called" in text


@needs_sim
def test_oracle_trajectory_replays_to_full_score(env) -> None:
    task = first_of(env, "train", "task-5-chemistry-mix-paint-(secondary-color)")
    traj = oracle_trajectory(env, task, seed=0)
    assert traj.success and traj.reward == 1.0 and traj.id == f"expert/{task.id}"
    meta = traj.metadata
    assert meta["source"] == "expert" and meta["oracle"] == "scienceworld-gold-path"
    assert meta["thoughts"] == "templated" and meta["score"] == 100 and meta["path"] == "easy"
    assert meta["steps"] == len(traj.agent_turns) - 1 <= task.max_steps
    roles = [t.role for t in traj.turns]
    assert roles[:3] == [TASK, AGENT, TASK] and traj.turns[0].text == env.instruction
    assert roles[3:] == [AGENT, OBSERVATION] * (meta["steps"] - 1) + [AGENT]
    assert all(t.text.startswith("Thought: ") and "\nAction: " in t.text for t in traj.agent_turns[1:])
    # Same seed, same actions and thoughts (the simulator may list a room's objects in another order).
    again = oracle_trajectory(env, task, seed=0)
    assert [t.text for t in again.agent_turns] == [t.text for t in traj.agent_turns]

    # The actions alone, replayed through reset/step under the task's budget, reach 1.0.
    actions = [parse_react_action(t.text) for t in traj.agent_turns[1:]]
    assert env.reset(task).text == traj.turns[2].text
    for action in actions:
        result = env.step(action)
    assert result.done and result.reward == 1.0 and result.info["won"] and result.info["score"] == 100


@needs_sim
@pytest.mark.slow
def test_oracle_solves_every_train_task_type(env) -> None:
    # The first train variation of each of the 24 task types in ETO's train split (~30 s in all;
    # the gold paths of melt, measure-melting-point and test-conductivity take 2-5 s each).
    firsts: dict[str, Task] = {}
    for task in env.tasks("train"):
        firsts.setdefault(task.spec["task_name"], task)
    assert len(firsts) == 24
    failed = {}
    for name, task in firsts.items():
        traj = oracle_trajectory(env, task, seed=1)
        if not (traj.success and traj.reward == 1.0 and traj.metadata["score"] == 100):
            failed[name] = traj.metadata
    assert not failed


@needs_sim
@pytest.mark.slow
def test_close_stops_the_jvm_and_a_dead_jvm_is_replaced() -> None:
    import signal

    import psutil

    env = ScienceWorldEnv(data_dir=str(splits_dir()), max_heap="512m")
    task = env.tasks("test_seen")[0]
    before = {p.pid for p in java_children()}
    env.reset(task)
    pid = env.java_pid
    assert pid is not None and pid not in before and pid in {p.pid for p in java_children()}
    assert "-Xmx512m" in psutil.Process(pid).cmdline()
    env.close()
    assert env.java_pid is None and pid not in {p.pid for p in java_children()}

    env.reset(task)  # a closed env starts a fresh JVM when used again
    second = env.java_pid
    assert second not in (None, pid)
    os.kill(second, signal.SIGKILL)  # a crash costs the episode, not the env
    psutil.Process(second).wait(5)
    with pytest.raises(RuntimeError, match="JVM gone"):
        env.step("look around")
    env.reset(task)
    assert env.java_pid not in (None, pid, second)
    assert env.step("look around").info["valid"]
    env.close()
    env.close()  # closing twice is harmless
    assert {p.pid for p in java_children()} == before


@needs_sim
def test_without_eto_files_the_packages_own_splits(monkeypatch) -> None:
    monkeypatch.delenv(DATA_ENV_VAR, raising=False)
    env = ScienceWorldEnv(max_heap="512m")
    try:
        sizes = {s: len(env.tasks(s)) for s in env.splits}  # asks the simulator: starts the JVM
        assert sizes == {"train": 3592, "test_seen": 1796, "test_unseen": 1819}
        first = env.tasks("train")[0]
        assert first == Task("boil_0", "train", {"task_name": "boil", "variation": 0}, DEFAULT_MAX_STEPS)
        server = env._sim.server
        server.load("boil", 0, "", False)  # the simulator's own lists for the loaded task
        boil = {
            (t.split, t.spec["variation"])
            for s in env.splits
            for t in env.tasks(s)
            if t.spec["task_name"] == "boil"
        }
        expected = {("train", v) for v in server.getVariationsTrain()}
        expected |= {("test_seen", v) for v in server.getVariationsDev()}
        expected |= {("test_unseen", v) for v in server.getVariationsTest()}
        assert boil == expected
        assert env.reset(env.tasks("test_unseen")[0]).text.startswith("Your task is to boil")
    finally:
        env.close()


@needs_sim
def test_runs_in_an_env_worker() -> None:
    from trajkit.envs.worker import EnvWorker

    before = {p.pid for p in java_children()}
    worker = EnvWorker("sciworld", {"data_dir": str(splits_dir()), "max_heap": "512m"}, step_timeout=30)
    try:
        assert worker.name == "sciworld" and worker.version.startswith("scienceworld==")
        task = [t for t in worker.tasks("test_unseen") if t.spec["task_name"] == "task-3-find-plant"][0]
        obs = worker.reset(task)
        assert obs.text.startswith("Your task is to find a(n) plant")
        result = worker.step("look around")
        assert "This room is called" in result.observation.text and result.info["valid"]
        assert 0.0 <= result.reward <= 1.0
        assert len({p.pid for p in java_children()} - before) == 1  # the worker's own JVM
    finally:
        worker.close()
    assert {p.pid for p in java_children()} == before
