"""The ALFWorld adapter on real ALFWorld 2.1.1 games: splits, ETO's text, the PDDL-planner oracle."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import shared_data_path  # tests/ is on sys.path (rootdir conftest)
from typer.testing import CliRunner

from trajkit.data.schema import AGENT, OBSERVATION, TASK
from trajkit.envs.alfworld import (
    DEFAULT_MAX_STEPS,
    INSTRUCTION,
    NOTHING,
    ALFWorldDataError,
    ALFWorldEnv,
    availability,
    oracle_trajectory,
    package_reason,
    parse_task_dir,
    traj_data_stub,
    write_traj_data_overlay,
)
from trajkit.envs.base import Task, parse_react_action
from trajkit.envs.registry import EnvUnavailableError

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REASON = package_reason()
needs_alfworld = pytest.mark.skipif(
    REASON is not None and not IN_CI, reason=f"ALFWorld unavailable: {REASON}"
)

# Quick games (bedrooms, living rooms, bathrooms: reset ~1-2 s, plan < 0.3 s), by ALFWorld split.
GAMES = {
    "train": [
        "look_at_obj_in_light-Laptop-None-DeskLamp-216/trial_T20190907_185556_000181",
        "pick_and_place_simple-Pen-None-Shelf-310/trial_T20190909_113535_223329",
        "pick_and_place_simple-KeyChain-None-Dresser-317/trial_T20190908_062357_662469",
        "pick_clean_then_place_in_recep-Cloth-None-Toilet-408/trial_T20190906_221323_589436",
        "pick_clean_then_place_in_recep-SoapBar-None-GarbageCan-403/trial_T20190909_080111_999655",
    ],
    "valid_seen": [
        "look_at_obj_in_light-CD-None-DeskLamp-302/trial_T20190907_154618_526741",
        "pick_and_place_simple-RemoteControl-None-Sofa-207/trial_T20190909_153609_373481",
        "pick_clean_then_place_in_recep-DishSponge-None-Cart-401/trial_T20190907_024634_972453",
    ],
    "valid_unseen": [
        "look_at_obj_in_light-Book-None-DeskLamp-308/trial_T20190908_020048_814402",
        "pick_clean_then_place_in_recep-SoapBar-None-CounterTop-424/trial_T20190907_074106_050405",
        "pick_two_obj_and_place-SoapBar-None-GarbageCan-424/trial_T20190909_064221_368939",
    ],
}
ORACLE_GAMES = [
    (
        "test_seen",
        "valid_seen/pick_and_place_simple-RemoteControl-None-Sofa-207/trial_T20190909_153609_373481",
    ),
    (
        "test_seen",
        "valid_seen/pick_clean_then_place_in_recep-DishSponge-None-Cart-401/trial_T20190907_024634_972453",
    ),
    (
        "test_unseen",
        "valid_unseen/pick_clean_then_place_in_recep-SoapBar-None-CounterTop-424/trial_T20190907_074106_050405",
    ),
    (
        "test_unseen",
        "valid_unseen/pick_two_obj_and_place-SoapBar-None-GarbageCan-424/trial_T20190909_064221_368939",
    ),
]


@pytest.fixture(scope="module")
def games_dir(tmp_path_factory) -> Path:
    """A games folder laid out as alfworld-download makes it, holding only the games above."""
    archive = shared_data_path("alfworld", "json_2.1.1-games.tgz")
    out = tmp_path_factory.mktemp("alfworld")
    wanted = {f"json_2.1.1/{split}/{game}/game.tw-pddl" for split, games in GAMES.items() for game in games}
    with tarfile.open(archive) as tf:
        members = [m for m in tf if m.name in wanted]
        kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tf.extractall(out, members=members, **kwargs)
    assert len(members) == len(wanted), "a chosen game is missing from the archive"
    return out


@pytest.fixture(scope="module")
def env(games_dir):
    if REASON is not None:
        pytest.fail(f"ALFWorld must run under CI=true: {REASON}")
    e = ALFWorldEnv(data_dir=str(games_dir), prompts_dir=str(shared_data_path("eto", "prompts")))
    yield e
    e.close()


def task_by_id(env: ALFWorldEnv, split: str, task_id: str) -> Task:
    return next(t for t in env.tasks(split) if t.id == task_id)


# ---- files and tasks (no game engine) --------------------------------------------------------


def test_splits_ids_and_specs(games_dir) -> None:
    env = ALFWorldEnv(data_dir=str(games_dir))
    assert env.name == "alfworld" and env.splits == ("train", "test_seen", "test_unseen")
    sizes = {s: len(env.tasks(s)) for s in env.splits}
    assert sizes == {"train": 5, "test_seen": 3, "test_unseen": 3}
    first = env.tasks("test_seen")[0]
    game = GAMES["valid_seen"][0]
    assert first == Task(
        f"valid_seen/{game}",
        "test_seen",
        {"game": game, "task_name": "look_at_obj_in_light"},
        DEFAULT_MAX_STEPS,
    )
    # ALFWorld's own split names are accepted and give the same tasks.
    assert env.tasks("valid_seen") == env.tasks("test_seen")
    assert env.tasks("valid_unseen") == env.tasks("test_unseen")
    # Round-robin over task types: the first tasks of a split cover different types.
    assert [t.spec["task_name"] for t in env.tasks("train")[:3]] == [
        "look_at_obj_in_light",
        "pick_and_place_simple",
        "pick_clean_then_place_in_recep",
    ]
    # Ids are stable across instances and the data folder may also be json_2.1.1 itself.
    again = ALFWorldEnv(data_dir=str(games_dir / "json_2.1.1"))
    assert [t.id for t in again.tasks("train")] == [t.id for t in env.tasks("train")]
    json.dumps([t.spec for s in env.splits for t in env.tasks(s)])
    with pytest.raises(ValueError, match="unknown ALFWorld split 'dev'"):
        env.tasks("dev")
    only = ALFWorldEnv(data_dir=str(games_dir), task_types=[1, "look_at_obj_in_light"])
    assert {t.spec["task_name"] for t in only.tasks("train")} == {
        "pick_and_place_simple",
        "look_at_obj_in_light",
    }
    assert len(only.tasks("train")) == 3
    with pytest.raises(ValueError, match="unknown ALFWorld task type number 9"):
        ALFWorldEnv(data_dir=str(games_dir), task_types=[9])


def test_constructor_and_tasks_do_not_start_the_engine(games_dir) -> None:
    code = (
        "import sys\n"
        "from trajkit.envs.alfworld import ALFWorldEnv\n"
        f"e = ALFWorldEnv(data_dir={str(games_dir)!r})\n"
        "n = sum(len(e.tasks(s)) for s in e.splits)\n"
        "heavy = [m for m in ('textworld', 'alfworld', 'fast_downward') if m in sys.modules]\n"
        "print(n, heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "11 []"


def test_missing_or_misplaced_data_is_a_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("ALFWORLD_DATA", raising=False)
    with pytest.raises(EnvUnavailableError, match="set ALFWORLD_DATA or pass --data-dir"):
        ALFWorldEnv()
    with pytest.raises(EnvUnavailableError, match="does not exist"):
        ALFWorldEnv(data_dir=str(tmp_path / "nope"))
    (tmp_path / "other").mkdir()
    with pytest.raises(EnvUnavailableError, match=r"json_2\.1\.1/\{train,valid_seen,valid_unseen\}"):
        ALFWorldEnv(data_dir=str(tmp_path / "other"))
    (tmp_path / "json_2.1.1" / "train").mkdir(parents=True)
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path))
    env = ALFWorldEnv()  # the variable is read when no data_dir is given
    assert env.tasks("train") == []
    with pytest.raises(ALFWorldDataError, match="valid_seen: the test_seen split's folder is missing"):
        env.tasks("test_seen")


def test_traj_data_stub_follows_the_directory_name() -> None:
    stub = traj_data_stub("pick_heat_then_place_in_recep-Mug-None-Cabinet-3", "trial_T1")
    assert stub["task_type"] == "pick_heat_then_place_in_recep" and stub["task_id"] == "trial_T1"
    assert stub["scene"] == {"scene_num": 3}
    assert stub["pddl_params"] == {
        "object_target": "Mug",
        "object_sliced": False,
        "mrecep_target": "",
        "parent_target": "Cabinet",
        "toggle_target": "",
    }
    lamp = traj_data_stub("look_at_obj_in_light-CD-None-DeskLamp-302", "t")["pddl_params"]
    assert (lamp["parent_target"], lamp["toggle_target"], lamp["object_target"]) == ("", "DeskLamp", "CD")
    movable = traj_data_stub("pick_and_place_with_movable_recep-Pen-Mug-Desk-301", "t")["pddl_params"]
    assert (movable["object_target"], movable["mrecep_target"], movable["parent_target"]) == (
        "Pen",
        "Mug",
        "Desk",
    )
    sliced = traj_data_stub("pick_cool_then_place_in_recep-AppleSliced-None-DiningTable-7", "t")[
        "pddl_params"
    ]
    assert (sliced["object_target"], sliced["object_sliced"]) == ("Apple", True)
    with pytest.raises(ValueError, match="not an ALFWorld task directory name"):
        parse_task_dir("pick_and_place_simple-Mug-Desk")
    with pytest.raises(ValueError, match="unknown ALFWorld task type 'fly'"):
        parse_task_dir("fly-Mug-None-Desk-3")


@needs_alfworld
def test_overlay_lets_alfworlds_own_loader_read_the_games(games_dir, tmp_path, capsys) -> None:
    # A real traj_data.json is copied as it is; the user's folder is never written to.
    user = tmp_path / "user"
    shutil.copytree(games_dir, user)
    real = user / "json_2.1.1" / "valid_seen" / GAMES["valid_seen"][0] / "traj_data.json"
    real.write_text(json.dumps({"task_type": "look_at_obj_in_light", "marker": 1}))
    before = {p: p.stat().st_mtime_ns for p in user.rglob("*")}
    assert write_traj_data_overlay(user, tmp_path / "overlay") == 11
    assert {p: p.stat().st_mtime_ns for p in user.rglob("*")} == before
    root = tmp_path / "overlay" / "json_2.1.1"
    assert (
        json.loads((root / "valid_seen" / GAMES["valid_seen"][0] / "traj_data.json").read_text())["marker"]
        == 1
    )
    stub_path = root / "valid_unseen" / GAMES["valid_unseen"][1] / "traj_data.json"
    task_dir, trial = GAMES["valid_unseen"][1].split("/")
    assert json.loads(stub_path.read_text()) == traj_data_stub(task_dir, trial)
    # A second call keeps what is there.
    stub_path.write_text('{"task_type": "pick_clean_then_place_in_recep", "kept": true}')
    write_traj_data_overlay(user, tmp_path / "overlay")
    assert json.loads(stub_path.read_text())["kept"] is True

    from alfworld.agents.environment import get_environment

    config = {
        "env": {"goal_desc_human_anns_prob": 0, "task_types": [1, 2, 3, 4, 5, 6]},
        "dataset": {"eval_ood_data_path": str(root / "valid_unseen"), "num_eval_games": -1},
    }
    loader = get_environment("AlfredTWEnv")(config, train_eval="eval_out_of_distribution")
    assert sorted(Path(p).parent.name for p in loader.game_files) == sorted(
        g.split("/")[1] for g in GAMES["valid_unseen"]
    )


def test_availability_names_what_is_missing(games_dir, tmp_path, monkeypatch) -> None:
    import importlib.util

    from trajkit.envs.registry import env_info, make_env

    monkeypatch.delenv("ALFWORLD_DATA", raising=False)
    if REASON is None:
        assert availability() == (
            "installed; needs game files: set ALFWORLD_DATA or pass --data-dir (alfworld-download fetches them)"
        )
        assert not env_info("alfworld").available and "needs game files" in env_info("alfworld").reason
        assert availability(data_dir=str(games_dir)) is None
        assert "does not exist" in availability(data_dir=str(tmp_path / "nope"))
        # make_env hands the env's data_dir to the check, so --data-dir works without the variable.
        assert make_env("alfworld", data_dir=str(games_dir)).tasks("test_seen")
        monkeypatch.setenv("ALFWORLD_DATA", str(games_dir))
        assert availability() is None and env_info("alfworld").available
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "alfworld" else real(n, *a))
    reason = availability(data_dir=str(games_dir))
    assert reason is not None and "pip install 'trajkit[alfworld]'" in reason and "ALFWORLD_DATA" in reason


# ---- prompts --------------------------------------------------------------------------------


def test_instruction_and_in_context_episode(games_dir) -> None:
    prompts = shared_data_path("eto", "prompts")
    env = ALFWorldEnv(data_dir=str(games_dir), prompts_dir=str(prompts))
    assert env.instruction == (prompts / "alfworld_inst.txt").read_text().rstrip()
    turns = env.icl_turns()
    assert (
        turns[0].role == TASK and "Your task is to: put a toiletpaper in toiletpaperhanger." in turns[0].text
    )
    assert [t.role for t in turns[1:]] == [AGENT, OBSERVATION] * 4 + [AGENT]
    assert parse_react_action(turns[-1].text) == "put toiletpaper 1 in/on toiletpaperhanger 1"
    plain = ALFWorldEnv(data_dir=str(games_dir), prompts_dir=None)
    if "TRAJKIT_ETO_PROMPTS" not in os.environ:
        assert plain.instruction == INSTRUCTION and plain.icl_turns() == []
    # The expert data's own first turn can replace the instruction (runs evaluate with it).
    given = ALFWorldEnv(data_dir=str(games_dir), instruction="Solve it.\nThought/Action format.")
    assert given.instruction == "Solve it.\nThought/Action format."
    given.set_instruction("Another one.")
    assert given.instruction == "Another one."
    with pytest.raises(ValueError, match="empty"):
        given.set_instruction("  ")
    with pytest.raises(ValueError, match="empty"):
        ALFWorldEnv(data_dir=str(games_dir), instruction="")


def test_prompts_in_etos_repo_layout_and_per_type_examples(games_dir, tmp_path) -> None:
    prompts = shared_data_path("eto", "prompts")
    repo = tmp_path / "eval_agent" / "prompt"
    (repo / "instructions").mkdir(parents=True)
    (repo / "icl_examples").mkdir()
    shutil.copy(prompts / "alfworld_inst.txt", repo / "instructions")
    episode = json.loads((prompts / "alfworld_icl.json").read_text())[0]
    other = [{"role": "user", "content": "Your task is to: examine the cd with the desklamp."}, episode[1]]
    (repo / "icl_examples" / "alfworld_icl.json").write_text(
        json.dumps({"put": [episode], "examine": [other]})
    )
    env = ALFWorldEnv(data_dir=str(games_dir), prompts_dir=str(repo))
    assert env.instruction.startswith("Interact with a household to solve a task.")
    by_type = {t.spec["task_name"]: t for t in env.tasks("train")}
    assert "toiletpaper" in env.icl_turns(by_type["pick_and_place_simple"])[0].text
    assert env.icl_turns(by_type["look_at_obj_in_light"])[0].text.endswith("with the desklamp.")
    assert env.icl_turns(by_type["pick_clean_then_place_in_recep"]) == []
    with pytest.raises(ValueError, match="keyed by task type"):
        env.icl_turns()
    with pytest.raises(FileNotFoundError, match="alfworld_inst.txt"):
        ALFWorldEnv(data_dir=str(games_dir), prompts_dir=str(tmp_path))


def test_expert_records_map_to_train_tasks(games_dir) -> None:
    from trajkit.data.schema import Trajectory

    env = ALFWorldEnv(data_dir=str(games_dir))
    game = GAMES["train"][2]
    task = env.task_for_game_file(f"/root/.cache/alfworld/json_2.1.1/train/{game}/game.tw-pddl")
    assert task is not None and task.id == f"train/{game}"
    assert env.task_for_game_file(f"data/json_2.1.1/train/{game}") == task
    assert env.task_for_game_file(game.split("/")[1]) == task  # the trial directory alone
    assert env.task_for_game_file(f"pick_and_place_simple-Cup-None-Desk-1/{game.split('/')[1]}") is None
    seen = GAMES["valid_seen"][0]
    assert env.task_for_game_file(seen).split == "test_seen"
    assert env.task_for_game_file(seen, "train") is None
    record = Trajectory(
        id="alfworld_12", turns=[], task_id="alfworld_12", metadata={"game_file": f"x/{game}"}
    )
    assert env.expert_task_id(record) == task.id
    assert env.expert_task_id(Trajectory(id="a", turns=[], task_id=task.id)) == task.id
    assert env.expert_task_id(Trajectory(id="b", turns=[], task_id="b")) is None


# ---- episodes on the real engine ------------------------------------------------------------


@needs_alfworld
def test_reset_shows_the_intro_and_task_as_eto_does(env) -> None:
    task = task_by_id(env, "test_seen", f"valid_seen/{GAMES['valid_seen'][1]}")
    obs = env.reset(task)
    lines = obs.text.split("\n")
    assert len(lines) == 2 and "Welcome to TextWorld" not in obs.text
    assert lines[0].startswith("You are in the middle of a room. Looking quickly around you, you see a ")
    assert lines[1].startswith("Your task is to: put ") and "remotecontrol" in lines[1]
    assert obs.instruction == lines[1][len("Your task is to: ") :]
    # Movement feedback as ETO shows it: no "You arrive at loc N." prefix.
    result = env.step("go to sofa 1")
    assert result.info["valid"] and result.observation.text.startswith("On the sofa 1, you see")


@needs_alfworld
@pytest.mark.slow
def test_invalid_action_reads_nothing_happened_and_budget_truncates(games_dir) -> None:
    env = ALFWorldEnv(data_dir=str(games_dir), max_steps=3)
    try:
        task = env.tasks("test_unseen")[0]
        env.reset(task)
        result = env.step("fly to the moon")
        assert result.observation.text == NOTHING == "Nothing happened."
        assert (result.reward, result.done) == (0.0, False)
        assert result.info == {"won": False, "valid": False, "truncated": False, "steps": 1}
        env.step("put nothing in/on nowhere")
        last = env.step("inventory")
        assert last.done and last.info["truncated"] and not last.info["won"] and last.reward == 0.0
        with pytest.raises(RuntimeError, match="is over"):
            env.step("look")
        # A fresh reset on the same engine starts the game over.
        assert env.reset(task).text.startswith("You are in the middle of a room.")
    finally:
        env.close()


@needs_alfworld
@pytest.mark.slow
def test_envs_in_one_process_can_be_driven_from_threads(games_dir) -> None:
    # A rollout's thread pool drives in-process envs side by side; TextWorld's parsers are shared.
    from concurrent.futures import ThreadPoolExecutor

    envs = [ALFWorldEnv(data_dir=str(games_dir)) for _ in range(3)]
    tasks = envs[0].tasks("test_seen")

    def play(i: int) -> tuple[str, str]:
        obs = envs[i].reset(tasks[i])
        return obs.text, envs[i].step("go to nowhere 9").observation.text

    try:
        with ThreadPoolExecutor(3) as pool:
            results = list(pool.map(play, range(3)))
    finally:
        for e in envs:
            e.close()
    for first, second in results:
        assert first.startswith("You are in the middle of a room.") and second == NOTHING
    assert len({first for first, _ in results}) == 3


@needs_alfworld
@pytest.mark.slow
@pytest.mark.parametrize(
    ("split", "task_id"), ORACLE_GAMES, ids=[i.split("/")[1][:40] for _, i in ORACLE_GAMES]
)
def test_oracle_wins_and_its_actions_replay(env, split: str, task_id: str) -> None:
    task = task_by_id(env, split, task_id)
    traj = oracle_trajectory(env, task, seed=0)
    assert traj.success and traj.reward == 1.0 and traj.split == split and traj.task_id == task_id
    assert traj.id == f"expert/{task_id}" and traj.env == "alfworld"
    meta = traj.metadata
    assert meta["source"] == "expert" and meta["oracle"] == "alfworld-pddl-expert"
    assert meta["thoughts"] == "templated" and meta["env_version"].startswith("alfworld==")
    # ETO's layout: instruction, OK, task; then agent/observation turns ending on the agent.
    assert [t.role for t in traj.turns[:3]] == [TASK, AGENT, TASK] and traj.turns[1].text == "OK"
    assert traj.turns[0].text == env.instruction and "Your task is to: " in traj.turns[2].text
    body = traj.turns[3:]
    assert [t.role for t in body] == [AGENT, OBSERVATION] * (len(body) // 2) + [AGENT]
    assert all(t.text.startswith("Thought: ") and "\nAction: " in t.text for t in body if t.role == AGENT)
    assert all(t.text.startswith("Observation: ") for t in body if t.role == OBSERVATION)
    actions = [parse_react_action(t.text) for t in traj.agent_turns[1:]]
    assert len(actions) == meta["steps"] and 3 <= len(actions) <= 12
    # Replaying the actions through the plain env API wins again, on the last action only.
    env.reset(task)
    results = [env.step(a) for a in actions]
    assert all(r.info["valid"] for r in results)
    assert [r.done for r in results] == [False] * (len(actions) - 1) + [True]
    assert results[-1].info["won"] and results[-1].reward == 1.0


@needs_alfworld
def test_oracle_refuses_an_env_without_a_planner() -> None:
    with pytest.raises(TypeError, match="in-process ALFWorldEnv"):
        oracle_trajectory(object(), Task("x", "train", {}), 0)


@needs_alfworld
@pytest.mark.slow
def test_env_runs_inside_a_worker_process(games_dir) -> None:
    from trajkit.envs.worker import EnvWorker

    worker = EnvWorker("alfworld", {"data_dir": str(games_dir), "instruction": "From the expert data."})
    try:
        assert worker.name == "alfworld" and worker.version.startswith("alfworld==")
        assert worker.instruction == "From the expert data."
        task = worker.tasks("valid_unseen")[0]
        assert task.split == "test_unseen"
        obs = worker.reset(task)
        assert "Your task is to: " in obs.text
        result = worker.step("jump")
        assert result.observation.text == NOTHING and not result.done
        pid = worker.pid
        assert pid is not None
    finally:
        worker.close()
    assert worker.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


# ---- split checks through the CLI --------------------------------------------------------------


def test_check_splits_reports_no_overlap_and_finds_a_planted_duplicate(games_dir, tmp_path) -> None:
    import trajkit.cli  # noqa: F401  (registers the `env` commands)
    from trajkit.cli.app import app

    runner = CliRunner()
    args = ["env", "check-splits", "alfworld", "--data-dir", str(games_dir), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = {row["split"]: row for row in json.loads(result.output)}
    assert {s: (r["tasks"], r["overlap"]) for s, r in report.items()} == {
        "test_seen": (3, 0),
        "test_unseen": (3, 0),
    }

    planted = tmp_path / "data"
    shutil.copytree(games_dir, planted)
    game = GAMES["train"][1]
    shutil.copytree(planted / "json_2.1.1" / "train" / game, planted / "json_2.1.1" / "valid_unseen" / game)
    result = runner.invoke(app, ["env", "check-splits", "alfworld", "--data-dir", str(planted), "--json"])
    assert result.exit_code == 0, result.output
    report = {row["split"]: row for row in json.loads(result.output)}
    assert report["test_seen"]["overlap"] == 0
    assert report["test_unseen"]["overlap"] == 1 and report["test_unseen"]["overlapping"] == [
        f"valid_unseen/{game}"
    ]

    result = runner.invoke(app, ["env", "check-splits", "alfworld", "--data-dir", str(tmp_path / "missing")])
    assert result.exit_code != 0 and "does not exist" in str(result.exception or result.output)
