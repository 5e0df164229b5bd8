"""Shared fixtures: the reference data folder and a tiny tokenizer/model made on the spot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_data_path(*parts: str) -> Path:
    """A path under ../shared/data. Missing data skips locally but fails under CI=true."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"reference data {path} is missing (CI=true requires ../shared/data)")
        pytest.skip(f"reference data {path} is not on this machine")
    return path


@pytest.fixture
def shared_data():
    return shared_data_path


CORPUS = [
    "Thought: I need to find an apple. It may be on the countertop.\nAction: go to countertop 1",
    "Observation: On the countertop 1, you see a apple 1, a knife 2, and a bread 1.",
    "You are in the middle of a room. Looking quickly around you, you see a cabinet 1, a fridge 1.",
    "Your task is to: put a clean apple in fridge.",
    "Interact with a household to solve a task. Nothing happened.",
    "pyautogui.click(x=0.41, y=0.178) Observation: Thought: Action: Click on the link.",
]


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from trajkit.policy.tiny import train_tokenizer

    return train_tokenizer(CORPUS * 20, vocab_size=600)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from trajkit.policy.tiny import make_tiny_model

    return make_tiny_model(CORPUS * 20, tmp_path_factory.mktemp("tiny") / "model", size="xs")
