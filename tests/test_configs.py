"""Every recipe under configs/ loads, says how to launch itself, and the demo recipe is the demo."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from trajkit.config import from_dict, load_yaml
from trajkit.run import RunConfig, demo_config
from trajkit.train.dpo import DPORecipe
from trajkit.train.sft import SFTRecipe

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
KINDS = {"run": RunConfig, "sft": SFTRecipe, "dpo": DPORecipe}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_loads_and_names_its_command(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# trajkit "), f"{path.name}: the first line must be the launch command"
    command = first.split()[2]
    cls = KINDS[command]
    assert f"--config configs/{path.name}" in first
    from_dict(cls, load_yaml(path), where=str(path))


def test_demo_recipe_matches_the_config_file():
    path = Path(__file__).resolve().parents[1] / "configs" / "household_eto_tiny.yaml"
    from_file = from_dict(RunConfig, load_yaml(path), where=str(path))
    assert dataclasses.replace(from_file, run_dir="x") == dataclasses.replace(demo_config(), run_dir="x")
