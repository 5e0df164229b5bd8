"""`trajkit data verify` and `envs.verify`: replaying expert trajectories in the real env."""

from __future__ import annotations

import copy
import json
import os
import tarfile
from pathlib import Path

import pytest
from conftest import shared_data_path  # tests/ is on sys.path (rootdir conftest)
from typer.testing import CliRunner

from trajkit.cli import app
from trajkit.data.io import iter_records, load_trajectories, write_trajectories
from trajkit.data.schema import AGENT, OBSERVATION, Trajectory, Turn
from trajkit.envs.household import HouseholdEnv, expert_trajectory
from trajkit.envs.verify import (
    episode_steps,
    normalize_observation,
    read_action_records,
    summarize,
    verify_trajectories,
    verify_trajectory,
)

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def run(*args) -> object:
    return CliRunner().invoke(app, ["data", "verify", *map(str, args)])


# ---- household (built in, fast) ------------------------------------------------------------------

HOUSEHOLD_ARGS = {"n_train": 6, "n_test": 0, "layout": "compact"}


@pytest.fixture(scope="module")
def household():
    return HouseholdEnv(**HOUSEHOLD_ARGS)


@pytest.fixture(scope="module")
def oracle(household) -> list[Trajectory]:
    return [expert_trajectory(household, task) for task in household.tasks("train")[:3]]


def edit_action(traj: Trajectory, step: int, new_action: str) -> Trajectory:
    """A copy of `traj` whose `step`-th action (1-based) is `new_action`."""
    out = copy.deepcopy(traj)
    agents = [t for t in out.turns if t.role == AGENT and t.text != "OK"]
    turn = agents[step - 1]
    turn.text = turn.text.rsplit("Action:", 1)[0] + f"Action: {new_action}"
    return out


def test_oracle_trajectory_verifies_as_won(household, oracle) -> None:
    result = verify_trajectory(household, oracle[0])
    assert result.passed and result.won and result.error is None
    assert result.task_id == oracle[0].task_id
    assert result.steps == result.actions == oracle[0].metadata["steps"]
    assert result.invalid == [] and result.mismatch is None
    assert result.line() == f"{oracle[0].id}: won"
    assert result.to_dict()["passed"] is True


def test_edited_action_fails_and_names_the_invalid_action(household, oracle) -> None:
    actions, _ = episode_steps(oracle[0])
    take = next(i for i, a in enumerate(actions, start=1) if a.startswith("take "))
    obj = actions[take - 1].split()[1]
    bad = edit_action(oracle[0], take, f"take {obj} 9 from sofa 7")
    result = verify_trajectory(household, bad)
    assert not result.passed and not result.won
    first = result.invalid[0]
    assert (first.step, first.action, first.observation) == (
        take,
        f"take {obj} 9 from sofa 7",
        "Nothing happened.",
    )
    assert result.mismatch is not None and result.mismatch.step == take
    line = result.line()
    assert line.startswith(f"{bad.id}: FAILED: not won after {result.steps} steps; invalid action")
    assert f"{take} ('take {obj} 9 from sofa 7' -> 'Nothing happened.')" in line


def test_observation_mismatch_names_the_step_and_both_texts(household, oracle) -> None:
    edited = copy.deepcopy(oracle[1])
    observations = [t for t in edited.turns if t.role == OBSERVATION]
    original = normalize_observation(observations[1].text)
    observations[1].text = "Observation: On the shelf 1, you see a unicorn 1."
    result = verify_trajectory(household, edited)
    assert result.won  # the actions still win; only the recorded text is wrong
    assert result.mismatch is not None
    assert (result.mismatch.step, result.mismatch.recorded, result.mismatch.env) == (
        2,
        "On the shelf 1, you see a unicorn 1.",
        original,
    )
    assert (
        "first observation mismatch at step 2: recorded 'On the shelf 1, you see a unicorn 1.'"
        in result.line()
    )


def test_whitespace_at_the_ends_and_the_prefix_are_not_mismatches(household, oracle) -> None:
    edited = copy.deepcopy(oracle[0])
    for turn in edited.turns:
        if turn.role == OBSERVATION:
            turn.text = "  " + turn.text.removeprefix("Observation: ") + " \n"
    assert verify_trajectory(household, edited).mismatch is None


def test_unknown_task_is_an_error_not_a_crash(household, oracle) -> None:
    lost = Trajectory("lost", list(oracle[0].turns), task_id="household/train/nowhere/99999")
    result = verify_trajectory(household, lost)
    assert not result.passed and result.error is not None and "nowhere" in result.error
    assert result.line() == f"lost: FAILED: {result.error}"
    assert summarize([result, verify_trajectory(household, oracle[0])]) == {
        "records": 2,
        "won": 1,
        "failed": ["lost"],
    }


def test_expert_turns_in_eto_layout_give_actions_and_observations() -> None:
    traj = Trajectory(
        "x",
        [
            Turn("task", "instruction"),
            Turn(AGENT, "OK"),
            Turn("task", "room; Your task is to: x"),
            Turn(AGENT, "Thought: go.\nAction: go to desk 1"),
            Turn(OBSERVATION, "Observation: On the desk 1, you see nothing."),
            Turn(AGENT, "Thought: done.\nAction: look"),
        ],
    )
    assert episode_steps(traj) == (
        ["go to desk 1", "look"],
        ["Observation: On the desk 1, you see nothing.", None],
    )


# ---- CLI ---------------------------------------------------------------------------------------


@pytest.fixture
def household_file(tmp_path, oracle) -> tuple[Path, str]:
    """Three oracle trajectories in ETO's format, the second taking from a table that is not there."""
    actions, _ = episode_steps(oracle[1])
    take = next(i for i, a in enumerate(actions, start=1) if a.startswith("take "))
    bad = edit_action(oracle[1], take, actions[take - 1].rsplit(" from ", 1)[0] + " from dining table 1")
    path = tmp_path / "expert.json"
    write_trajectories([oracle[0], bad, oracle[2]], path, "eto")
    return path, bad.id


def env_args() -> list[str]:
    return [a for k, v in HOUSEHOLD_ARGS.items() for a in ("--env-arg", f"{k}={v}")]


def test_cli_lines_and_summary(household_file) -> None:
    path, bad_id = household_file
    result = run("--env", "household", *env_args(), path)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 4
    assert lines[1].startswith(f"{bad_id}: FAILED: not won after ")
    assert " from dining table 1' -> 'Nothing happened.')" in lines[1]
    assert lines[3] == f"2 of 3 records won; failed: {bad_id}"


def test_cli_json_summary(household_file) -> None:
    path, bad_id = household_file
    result = run("--env", "household", *env_args(), "--json", path)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert {k: out[k] for k in ("records", "won", "failed")} == {"records": 3, "won": 2, "failed": [bad_id]}
    assert [d["passed"] for d in out["details"]] == [True, False, True]
    invalid = out["details"][1]["invalid"][0]
    assert (
        invalid["action"].endswith(" from dining table 1") and invalid["observation"] == "Nothing happened."
    )


def test_cli_out_keeps_the_winning_records_in_the_input_format(household_file, tmp_path) -> None:
    path, bad_id = household_file
    out = tmp_path / "clean" / "ok.json"
    result = run("--env", "household", *env_args(), "--out", out, path)
    assert result.exit_code == 0, result.output
    assert "wrote 2 winning record(s)" in result.stderr
    raw = json.loads(out.read_text())
    assert all("conversations" in r for r in raw)  # ETO in, ETO out
    kept = load_trajectories(out)
    originals = [t for t in load_trajectories(path) if t.id != bad_id]
    assert [t.to_dict() for t in kept] == [t.to_dict() for t in originals]
    assert not [p for p in out.parent.iterdir() if p.name != "ok.json"]  # no temporary left


def test_cli_reads_and_writes_the_actions_layout(oracle, tmp_path) -> None:
    records = []
    for traj in oracle[:2]:
        actions, observations = episode_steps(traj)
        records.append(
            {
                "id": traj.task_id,
                "task": traj.turns[2].text,
                "actions": actions,
                "observations": [normalize_observation(o) for o in observations if o is not None],
            }
        )
    take = next(i for i, a in enumerate(records[1]["actions"]) if a.startswith("take "))
    records[1]["actions"][take] = records[1]["actions"][take].rsplit(" from ", 1)[0] + " from dining table 1"
    path, out = tmp_path / "records.json", tmp_path / "ok.json"
    path.write_text(json.dumps(records))
    result = run("--env", "household", *env_args(), "--out", out, path)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == f"1 of 2 records won; failed: {records[1]['id']}"
    assert json.loads(out.read_text()) == records[:1]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--env", "household", "missing.json"], "missing.json:-:file: no such file or folder"),
        (["--env", "no-such-env", "FILE"], "unknown env 'no-such-env'"),
        (["--env", "household", "--env-arg", "layout", "FILE"], "--env-arg 'layout': expected key=value"),
        (["--env", "household", "--env-arg", "colour=red", "FILE"], "cannot make env 'household'"),
    ],
)
def test_cli_bad_input_is_one_error_line(household_file, tmp_path, args, expected) -> None:
    path, _ = household_file
    args = [str(path) if a == "FILE" else str(tmp_path / a) if a == "missing.json" else a for a in args]
    result = run(*args)
    assert result.exit_code != 0
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_cli_malformed_records_are_one_error_line(tmp_path) -> None:
    path = tmp_path / "records.json"
    path.write_text(json.dumps([{"id": "a", "task": "t", "actions": ["look", 3], "observations": []}]))
    result = run("--env", "household", path)
    assert result.exit_code == 1
    assert result.stderr == f"error: {path}:0:actions[1]: expected a string\n"


# ---- the run's expert stage ----------------------------------------------------------------------


def test_run_expert_verify_drops_an_unplayable_demonstration(household_file, tmp_path) -> None:
    from trajkit.pipeline.config import run_config_from_dict
    from trajkit.pipeline.stages import RunContext, expert_stage

    path, bad_id = household_file
    cfg = run_config_from_dict(
        {
            "run_dir": str(tmp_path / "run"),
            "env": {"name": "household", "kwargs": HOUSEHOLD_ARGS},
            "expert": {"source": "file", "paths": [str(path)], "verify": True},
        },
        "test",
    )
    ctx = RunContext(cfg, log=lambda msg: None)
    try:
        out = expert_stage(ctx)
    finally:
        ctx.close()
    kept = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert len(kept) == 2 and bad_id not in kept
    done = json.loads((out.parent / "DONE").read_text())
    assert done["trajectories"] == done["verified"] == 2
    assert (done["dropped_unplayable"], done["dropped_ids"]) == (1, [bad_id])


# ---- ALFWorld: ETO's published expert sample ----------------------------------------------------

SAMPLE = ("eto", "alfworld_expert_sample")


@pytest.fixture(scope="module")
def alfworld(tmp_path_factory):
    """An ALFWorld env over the games the sample names, extracted to a temporary folder."""
    from trajkit.envs.alfworld import ALFWorldEnv, package_reason

    reason = package_reason()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"ALFWorld must run under CI=true: {reason}")
        pytest.skip(f"ALFWorld unavailable: {reason}")
    records = json.loads(shared_data_path(*SAMPLE, "records.json").read_text())
    archive = shared_data_path("alfworld", "json_2.1.1-games.tgz")
    out = tmp_path_factory.mktemp("alfworld")
    wanted = {r["game_file"].split("data/", 1)[1] + "/game.tw-pddl" for r in records}
    with tarfile.open(archive) as tf:
        members = [m for m in tf if m.name in wanted]
        kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tf.extractall(out, members=members, **kwargs)
    assert len(members) == len(wanted) == 16
    env = ALFWorldEnv(data_dir=str(out))
    yield env
    env.close()


@pytest.fixture(scope="module")
def sample_results(alfworld):
    path = shared_data_path(*SAMPLE, "records.json")
    results = verify_trajectories(alfworld, read_action_records(iter_records(path), str(path)))
    return {r.id: r for r in results}


@pytest.mark.slow
def test_alfworld_sample_12_of_16_win(sample_results) -> None:
    summary = summarize(sample_results.values())
    assert summary == {
        "records": 16,
        "won": 12,
        "failed": ["alfworld_6", "alfworld_9", "alfworld_12", "alfworld_15"],
    }
    for result in sample_results.values():
        assert result.error is None and result.task_id.startswith("train/")


@pytest.mark.slow
def test_alfworld_sample_failures_name_their_reason(sample_results) -> None:
    r = sample_results
    # A hot-cup task whose cup is never heated: every action works, the goal is not met.
    assert (r["alfworld_6"].won, r["alfworld_6"].steps, r["alfworld_6"].invalid) == (False, 9, [])
    assert "not won after 9 steps" in r["alfworld_6"].line()
    # "dining table 1" for ALFWorld's "diningtable 1".
    assert r["alfworld_9"].invalid[0].step == 1 and "dining table 1" in r["alfworld_9"].invalid[0].action
    assert "'go to dining table 1' -> 'Nothing happened.'" in r["alfworld_9"].line()
    # "credit card 1" for "creditcard 1", and two cards held at once.
    assert any("credit card 1" in i.action for i in r["alfworld_12"].invalid)
    # A pen put down that was never taken.
    pen = r["alfworld_15"]
    assert (pen.won, pen.steps) == (False, 8)
    assert [(i.step, i.action) for i in pen.invalid] == [(3, "put pen 3 in/on garbagecan 1")]
    assert pen.mismatch is not None and pen.mismatch.step == 3
    assert (pen.mismatch.recorded, pen.mismatch.env) == (
        "You put the pen 3 in/on the garbagecan 1.",
        "Nothing happened.",
    )


@pytest.mark.slow
def test_alfworld_eto_sharegpt_records_verify_and_out_keeps_game_file(alfworld, tmp_path) -> None:
    source = shared_data_path(*SAMPLE, "eto_sft_4.json")
    assert all(t.metadata.get("game_file") for t in load_trajectories(source))
    out = tmp_path / "ok.json"
    result = run("--env", "alfworld", "--env-arg", f"data_dir={alfworld.data_dir}", "--out", out, source)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "3 of 4 records won; failed: alfworld_9"
    kept = json.loads(out.read_text())
    originals = {r["id"]: r for r in json.loads(source.read_text())}
    assert [r["id"] for r in kept] == ["alfworld_0", "alfworld_11", "alfworld_14"]
    assert all(r == originals[r["id"]] for r in kept)  # written back as read, game_file included
