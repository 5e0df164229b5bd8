"""Bad input everywhere: a sample of benchmarks/fuzz_inputs.py, and the failures it found, each
pinned: NaN rewards, empty conversations, lone surrogates, deep nesting, non-files, dpo's pairs
files, recipes that only the env can refuse."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trajkit.cli import app

ROOT = Path(__file__).resolve().parents[1]
VALID = ROOT / "tests" / "fixtures" / "data" / "valid"


@pytest.fixture(scope="module")
def fuzz():
    spec = importlib.util.spec_from_file_location("fuzz_bench", ROOT / "benchmarks" / "fuzz_inputs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def trajkit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trajkit", *map(str, args)], capture_output=True, text=True)


def data(*args) -> object:
    return CliRunner().invoke(app, ["data", *map(str, args)])


def test_fuzz_sample_has_no_traceback_hang_or_unnamed_rejection(fuzz, tmp_path):
    result = fuzz.fuzz(tmp_path, seed=0, sample=40, jobs=2, say=lambda line: None)
    assert result["cases"] == 40
    assert result["failures"] == [], json.dumps(result["failures"], indent=1)[:3000]
    assert result["counts"].get("rejected", 0) >= 20


def record(**fields) -> str:
    base = {"id": "a", "turns": [{"role": "task", "text": "do it"}, {"role": "agent", "text": "done"}]}
    return json.dumps({**base, **fields}) + "\n"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_rewards_are_refused(tmp_path, literal):
    path = tmp_path / "r.jsonl"
    path.write_text(record(reward=0.5).replace("0.5", literal))
    result = data("validate", path)
    assert result.exit_code == 1
    assert (
        result.stdout.startswith(f"{path}:0:reward: value is ")
        and "expected a finite number" in result.stdout
    )
    result = data("convert", path, tmp_path / "out.jsonl", "--to", "eto")
    assert result.exit_code == 1 and ":0:reward:" in result.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_pairs_refuse_nan_rewards_instead_of_calling_them_ties(tmp_path):
    from trajkit.data.schema import AGENT, TASK, Trajectory, Turn
    from trajkit.pairs import build_pairs

    turns = [Turn(TASK, "t"), Turn(AGENT, "a")]
    expert = Trajectory("e", turns, task_id="x", reward=float("nan"))
    rollout = Trajectory("r", turns, task_id="x", reward=0.0)
    with pytest.raises(ValueError, match="'e': reward is nan; expected a finite number"):
        build_pairs([rollout], [expert])
    bad = tmp_path / "expert.jsonl"
    bad.write_text(record(reward=1.0, task_id="x").replace("1.0", "NaN"))
    good = tmp_path / "rollouts.jsonl"
    good.write_text(record(id="r", reward=0.0, task_id="x"))
    proc = trajkit("pairs", "--expert", bad, "--rollouts", good, "--out", tmp_path / "p.jsonl")
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: {bad}:0:reward:")
    assert not (tmp_path / "p.jsonl").exists() and "Traceback" not in proc.stderr


def test_an_empty_conversation_is_refused_even_with_a_system_prompt(tmp_path):
    path = tmp_path / "lf.json"
    path.write_text(json.dumps([{"system": "be brief", "conversations": []}]))
    result = data("validate", path)
    assert result.exit_code == 1 and result.stdout == f"{path}:0:conversations: no messages\n"


def test_lone_surrogates_are_refused_where_they_are(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(record().replace("done", "do\\udc80ne"))
    result = data("validate", path)
    assert (
        result.stdout == f"{path}:0:turns[1].text: text holds a lone surrogate \\udc80 (not valid Unicode)\n"
    )
    for args in (("convert", path, tmp_path / "o.jsonl", "--to", "eto"), ("stats", path)):
        result = data(*args)
        assert result.exit_code == 1 and "lone surrogate" in result.stderr


@pytest.mark.parametrize(
    "text", ["[" * 5000 + "]" * 5000, '{"id": "a", "turns": ' + "[" * 150 + "]" * 150 + "}"]
)
def test_deep_nesting_is_one_line_in_every_command(tmp_path, text):
    path = tmp_path / "deep.json"
    path.write_text(text)
    expected = f"{path}:0:json: nested deeper than 100 levels"
    assert data("validate", path).stdout == expected + "\n"
    assert data("stats", path).stderr == f"error: {expected}\n"
    for proc in (
        trajkit("render", path, "--template", "tiny"),
        trajkit("pairs", "--expert", path, "--rollouts", path, "--out", tmp_path / "p.jsonl"),
    ):
        assert proc.returncode == 2 and proc.stderr == f"error: {expected}\n"


def test_non_files_are_refused_before_reading(tmp_path):
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    (tmp_path / "urandom.jsonl").symlink_to("/dev/urandom")
    proc = subprocess.run(
        [sys.executable, "-m", "trajkit", "data", "validate", fifo, tmp_path / "urandom.jsonl"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        f"{fifo}:-:file: is a named pipe, not a regular file",
        f"{tmp_path / 'urandom.jsonl'}:-:file: is a character device, not a regular file",
    ]


def test_dpo_refuses_a_bad_pairs_file_in_one_line(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    no_side = tmp_path / "no_side.jsonl"
    no_side.write_text(json.dumps({"prompt": [], "chosen": [{"role": "agent", "text": "a"}]}) + "\n")
    bad_role = tmp_path / "bad_role.jsonl"
    turn = {"role": "bot", "text": "a"}
    bad_role.write_text(json.dumps({"prompt": [], "chosen": [turn], "rejected": [turn]}) + "\n")
    cases = [
        (tmp_path / "missing.jsonl", f"{tmp_path / 'missing.jsonl'}:-:file: no such file"),
        (empty, f"{empty}:-:file: no pairs to train on"),
        (no_side, f"{no_side}:0:rejected: expected a non-empty list of turns"),
        (
            bad_role,
            f"{bad_role}:0:chosen[0].role: unknown role 'bot'; expected one of system, task, observation, agent",
        ),
    ]
    for pairs, message in cases:
        proc = trajkit("dpo", "--model", model, "--pairs", pairs, "--out", tmp_path / "out")
        assert (proc.returncode, proc.stderr) == (2, f"error: {message}\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("env.name=nowhere", "env.name 'nowhere' is not an env; registered: "),
        ("env.kwargs={colour: red}", "env.kwargs: env 'household' refused its settings: "),
        ("env.kwargs={layout: huge}", "unknown household layout 'huge'"),
        ("expert.limit=-3", "expert.limit must be >= 0"),
        ("seed=-1", "seed must be >= 0"),
        ("env.step_timeout=0", "env.step_timeout must be > 0"),
    ],
)
def test_run_refuses_what_only_the_env_or_the_checks_catch(tmp_path, setting, message):
    recipe = ROOT / "configs" / "household_eto_tiny.yaml"
    proc = trajkit("run", "--config", recipe, "--out", tmp_path / "run", "--set", setting)
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: {recipe}: ") and message in proc.stderr
    assert len(proc.stderr.splitlines()) == 1
    assert not (tmp_path / "run" / "config.yaml").exists()  # fixing the recipe is not refused later


def test_run_refuses_a_binary_recipe_in_one_line(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_bytes(b"run_dir: x\n\xff\xfe\x00garbage")
    proc = trajkit("run", "--config", recipe)
    assert (
        proc.returncode == 2
        and proc.stderr == f"error: {recipe}: not UTF-8 text (invalid start byte at byte 11)\n"
    )
