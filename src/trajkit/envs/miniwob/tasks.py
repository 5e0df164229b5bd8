"""Which MiniWoB++ tasks there are: the installed package's pages, whether they can run here,
the default task list and how seeds are split between train and test.

Read without importing the `miniwob` package, so listing tasks stays light.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from trajkit.envs.browser import find_chromium

SPLITS = ("train", "test")
DEFAULT_N_TRAIN = 100  # seeds per task
DEFAULT_N_TEST = 50
# Test seeds start here, so no test episode shares a seed with a training one.
TEST_SEED_OFFSET = 1_000_000

# Tasks the scripted oracle solves (the default task list: expert data exists for all of them).
ORACLE_TASKS = (
    "click-test",
    "click-test-2",
    "click-button",
    "click-checkboxes",
    "click-option",
    "click-link",
    "click-tab",
    "click-dialog",
    "click-collapsible",
    "click-widget",
    "enter-text",
    "enter-text-2",
    "enter-password",
    "focus-text",
    "focus-text-2",
    "login-user",
    "choose-list",
    "scroll-text-2",
    "drag-box",
    "copy-paste",
)


def _miniwob_dist() -> tuple[str | None, str | None]:
    """(installed version, folder of the package's html) without importing the package."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        try:
            ver: str | None = version("miniwob")
        except PackageNotFoundError:
            ver = None
        spec = importlib.util.find_spec("miniwob")
    except (ImportError, ValueError):
        return None, None
    if spec is None or not spec.submodule_search_locations:
        return ver, None
    html = Path(list(spec.submodule_search_locations)[0]) / "html"
    return ver, str(html) if html.is_dir() else None


def availability() -> str | None:
    """None when MiniWoB++ can run here, else what is missing."""
    ver, html = _miniwob_dist()
    if ver is None or html is None:
        return "package 'miniwob' not installed (pip install 'trajkit[miniwob]')"
    if importlib.util.find_spec("playwright") is None:
        return "package 'playwright' not installed (pip install 'trajkit[miniwob]')"
    if find_chromium() is None:
        return "no Chromium binary (apt-get install chromium, or set CHROMIUM_PATH)"
    return None


def task_names(html_dir: str | os.PathLike[str]) -> list[str]:
    """Every task page of a MiniWoB++ html folder (its `miniwob/*.html`)."""
    folder = Path(html_dir) / "miniwob"
    return sorted(p.stem for p in folder.glob("*.html")) if folder.is_dir() else []
