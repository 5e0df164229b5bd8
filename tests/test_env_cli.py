"""The env registry and the `trajkit env ...` commands."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import trajkit.cli  # noqa: F401  (registers every sub-command on `app`)
from trajkit.cli.app import UsageError, app
from trajkit.data.schema import Trajectory
from trajkit.envs.base import parse_react_action
from trajkit.envs.household import HouseholdEnv
from trajkit.envs.registry import (
    EnvInfo,
    EnvUnavailableError,
    UnknownEnvError,
    env_info,
    list_envs,
    make_env,
    register_env,
    unregister_env,
)

runner = CliRunner()
PENDING = ("alfworld", "miniwob", "sciworld", "webshop")


# ---- registry -------------------------------------------------------------------------------


def test_household_is_registered_and_available() -> None:
    info = env_info("household")
    assert info.available and info.reason
    env = make_env("household", seed=3, n_train=4, n_test=2)
    assert isinstance(env, HouseholdEnv) and env.seed == 3 and len(env.tasks("train")) == 4


def test_real_adapters_are_listed_with_a_reason() -> None:
    infos = {i.name: i for i in list_envs()}
    assert set(infos) >= {"household", *PENDING}
    for name in PENDING:
        assert infos[name].reason and "check failed" not in infos[name].reason


def test_unknown_env_names_the_registered_ones() -> None:
    with pytest.raises(UnknownEnvError, match="registered envs: .*household"):
        make_env("nope")


def test_register_with_check_and_replace() -> None:
    state = {"reason": "server down"}
    try:
        register_env("toy", lambda **kw: ("toy", kw), check=lambda: state["reason"], description="a toy")
        assert env_info("toy") == EnvInfo("toy", False, "server down")
        with pytest.raises(EnvUnavailableError, match="server down"):
            make_env("toy")
        state["reason"] = None
        assert env_info("toy") == EnvInfo("toy", True, "a toy")
        assert make_env("toy", a=1) == ("toy", {"a": 1})
        with pytest.raises(ValueError, match="already registered"):
            register_env("toy", lambda **kw: None)
        register_env("toy", "trajkit.envs.household:HouseholdEnv", replace=True)
        assert isinstance(make_env("toy", n_train=1), HouseholdEnv)
        register_env("toy", None, check=lambda: 1 / 0, replace=True)
        assert "ZeroDivisionError" in env_info("toy").reason  # a broken check is reported, not raised
    finally:
        unregister_env("toy")
    with pytest.raises(ValueError, match="module:attribute"):
        register_env("toy", "no_colon_here")


# ---- CLI ------------------------------------------------------------------------------------


def test_env_list_table_and_json() -> None:
    result = runner.invoke(app, ["env", "list"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["name", "available", "reason"]
    rows = {line.split()[0]: line.split()[1] for line in lines[1:]}
    assert rows["household"] == "yes" and set(rows) >= set(PENDING)

    result = runner.invoke(app, ["env", "list", "--json"])
    assert result.exit_code == 0, result.output
    entries = {e["name"]: e for e in json.loads(result.output)}
    assert entries["household"]["available"] is True
    info = env_info("webshop")
    assert entries["webshop"] == {"name": "webshop", "available": info.available, "reason": info.reason}


@pytest.mark.parametrize("split", ["train", "test_unseen"])
def test_oracle_writes_loadable_trajectories(tmp_path, split: str) -> None:
    out = tmp_path / "deep" / "expert.jsonl"
    args = ["env", "oracle", "household", "--split", split, "--limit", "12", "--out", str(out), "--seed", "5"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "12/12 successful" in result.output
    assert [p.name for p in out.parent.iterdir()] == ["expert.jsonl"]  # no temp file left behind

    trajectories = [Trajectory.from_dict(json.loads(line)) for line in out.read_text().splitlines()]
    env = HouseholdEnv(seed=5, n_train=12, n_test=12)
    tasks = env.tasks(split)
    assert [t.task_id for t in trajectories] == [t.id for t in tasks]
    for trajectory, task in zip(trajectories, tasks, strict=True):
        assert trajectory.success and trajectory.split == split and trajectory.env == "household"
        assert trajectory.metadata["source"] == "expert"
        env.reset(task)
        for turn in trajectory.agent_turns[1:]:
            result_step = env.step(parse_react_action(turn.text))
        assert result_step.info["won"]


def test_oracle_usage_errors(tmp_path) -> None:
    out = str(tmp_path / "x.jsonl")
    register_env("toy-no-oracle", lambda **kw: None)
    try:
        result = runner.invoke(app, ["env", "oracle", "toy-no-oracle", "--out", out])
    finally:
        unregister_env("toy-no-oracle")
    assert isinstance(result.exception, UsageError) and "no scripted expert" in str(result.exception)
    result = runner.invoke(app, ["env", "oracle", "household", "--split", "valid", "--out", out])
    assert isinstance(result.exception, UsageError) and "unknown split" in str(result.exception)
    result = runner.invoke(app, ["env", "oracle", "household", "--limit", "0", "--out", out])
    assert result.exit_code == 2


def test_env_modules_do_not_import_torch() -> None:
    code = (
        "import sys, trajkit.cli, trajkit.cli.env, trajkit.envs.registry, trajkit.envs.worker, "
        "trajkit.envs.household; "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_availability_check_sees_the_env_kwargs() -> None:
    def check(data_dir=None):
        return None if data_dir == "/data" else "needs data_dir"

    register_env("toy-data", lambda **kw: kw, check=check)
    try:
        assert make_env("toy-data", data_dir="/data", other=1) == {"data_dir": "/data", "other": 1}
        with pytest.raises(EnvUnavailableError, match="needs data_dir"):
            make_env("toy-data", other=1)
        assert env_info("toy-data").reason == "needs data_dir"
    finally:
        unregister_env("toy-data")
