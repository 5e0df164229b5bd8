"""Every recipe under configs/ loads, says how to launch itself, and the demo recipe is the demo."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from trajkit.config import from_dict, load_yaml
from trajkit.pipeline.config import RunConfig, demo_config, load_run_config
from trajkit.train.dpo import DPORecipe
from trajkit.train.sft import SFTRecipe

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
KINDS = {"run": RunConfig, "sft": SFTRecipe, "dpo": DPORecipe}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_loads_and_names_its_command(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# trajkit "), f"{path.name}: the first line must be the launch command"
    command = first.split()[2]
    assert f"--config configs/{path.name}" in first
    if command == "run":
        load_run_config(path)
    else:
        from_dict(KINDS[command], load_yaml(path), where=str(path))


def test_demo_is_the_config_file():
    path = Path(__file__).resolve().parents[1] / "configs" / "household_eto_tiny.yaml"
    from_file = load_run_config(path)
    assert dataclasses.replace(from_file, run_dir="x") == demo_config("x")
    assert demo_config().run_dir == "runs/demo" and demo_config().sft.learning_rate == 5e-3


def _recipe(tmp_path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text("run_dir: r\n" + text)
    return path


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("dpo: {betta: 0.1}\n", "dpo.*betta"),
        ("sft: {learning_rate: fast}\n", "sft.learning_rate"),
        ("dpo_later_rounds: {bta: 0.5}\n", "dpo_later_rounds.*bta"),
        ("dpo_later_rounds: {beta: high}\n", "dpo_later_rounds.beta"),
        ("rft_sft: {epoch: 2}\n", "rft_sft.*epoch"),
        ("sft: {template: llama2}\n", "sft.template.*model.template"),
        ("pairs: {strategy: bogus}\n", "pairs.strategy"),
        ("explore: {batch_size: 0}\n", "explore.batch_size"),
        ("explore: {temperature: -1}\n", "explore.temperature"),
        ("rounds: -1\n", "rounds"),
        ("env: {name: miniwob}\ngui: {stage1: {epochz: 1}}\n", "gui.stage1.*epochz"),
    ],
)
def test_bad_recipe_keys_are_refused_at_load_with_file_and_key(tmp_path, text, names):
    from trajkit.config import ConfigError

    path = _recipe(tmp_path, text)
    with pytest.raises(ConfigError, match=str(path)) as err:
        load_run_config(path)
    assert re.search(names, str(err.value)), str(err.value)


def test_overrides_are_checked_like_the_file(tmp_path):
    from trajkit.config import ConfigError

    with pytest.raises(ConfigError, match="dpo.*lr"):
        demo_config("x", ["dpo.lr=0.1"])
    with pytest.raises(ConfigError, match="sft.batch_size"):
        load_run_config(_recipe(tmp_path, ""), ["sft.batch_size=many"])
    assert load_run_config(_recipe(tmp_path, ""), ["dpo.beta=0.5"]).dpo.beta == 0.5


def test_cli_refuses_a_bad_recipe_in_one_line_before_any_stage(tmp_path):
    import subprocess
    import sys

    path = _recipe(tmp_path, "dpo: {betta: 0.1}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "trajkit", "run", "--config", str(path), "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "betta" in proc.stderr and str(path) in proc.stderr
    assert not (tmp_path / "run").exists(), "nothing is written for a refused recipe"
    proc = subprocess.run(
        [sys.executable, "-m", "trajkit", "demo", "--out", str(tmp_path / "d"), "--set", "sft.epohcs=1"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "epohcs" in proc.stderr and "Traceback" not in proc.stderr
