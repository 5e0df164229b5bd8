"""Atomic, resumable stages and the run folder's manifest.

    model/ expert/ sft/ eval-sft/ round-1/{explore,pairs,dpo,eval}/ round-2/... report.md

Each stage works in `<name>.partial/` and is renamed to `<name>/` with a `DONE` marker (its
summary) when it finishes, so a re-run skips finished stages; a half-done rollout resumes at the
next unfinished episode and half-done training from its last checkpoint. The run folder holds the
config it was started with and a manifest (versions, seeds, git commit, split hashes).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from trajkit.data.schema import Trajectory
from trajkit.envs.base import task_identity

# Env packages too: their versions decide the text and scores the agent sees.
RECORDED_PACKAGES = (
    "trajkit",
    "torch",
    "transformers",
    "trl",
    "peft",
    "accelerate",
    "datasets",
    "tokenizers",
    "scienceworld",
    "alfworld",
    "textworld",
    "miniwob",
    "playwright",
)


class Stage:
    def __init__(self, run_dir: Path, name: str):
        self.name = name
        self.final = run_dir / name
        self.partial = run_dir / f"{name}.partial"

    @property
    def done(self) -> bool:
        return (self.final / "DONE").is_file()

    def summary(self) -> dict[str, Any]:
        return json.loads((self.final / "DONE").read_text())

    def begin(self) -> Path:
        if self.final.exists() and not self.done:
            shutil.rmtree(self.final)  # an unfinished final folder cannot happen by rename; clear it
        self.partial.mkdir(parents=True, exist_ok=True)
        return self.partial

    def commit(self, summary: dict[str, Any] | None = None) -> None:
        (self.partial / "DONE").write_text(json.dumps(summary or {}, indent=2) + "\n")
        os.replace(self.partial, self.final)


def _sha(items: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(items)).encode()).hexdigest()[:16]


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in RECORDED_PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def write_manifest(run_dir: Path, env, seed: int, splits: list[str]) -> None:
    """Versions, git commit, seed, env and split hashes; written once, when the run starts."""
    path = run_dir / "manifest.json"
    if path.is_file():
        return  # a resume keeps it as it was
    manifest = {
        "versions": versions(),
        "git_commit": git_commit(),
        "seed": seed,
        "env": {"name": env.name, "version": env.version},
        "split_hashes": {s: _sha([task_identity(t) for t in env.tasks(s)]) for s in splits},
        "split_sizes": {s: len(env.tasks(s)) for s in splits},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path.write_text(json.dumps(manifest, indent=2) + "\n")


def write_if_changed(path: Path, text: str) -> None:
    if not (path.is_file() and path.read_text() == text):
        path.write_text(text)


def write_jsonl(path: Path, trajs: list[Trajectory]) -> None:
    from trajkit.data.io import write_trajectories

    write_trajectories(trajs, path, format="trajkit")


def read_jsonl(path: Path) -> list[Trajectory]:
    from trajkit.data.io import load_trajectories

    return load_trajectories(str(path), format="trajkit")
