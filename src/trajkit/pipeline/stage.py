"""Atomic, resumable stages and the run folder's manifest.

    model/ expert/ sft/ eval-sft/ round-1/{explore,pairs,dpo,eval}/ round-2/... report.md

Each stage works in `<name>.partial/` and is renamed to `<name>/` with a `DONE` marker (its
summary) when it finishes, so a re-run skips finished stages; a half-done rollout resumes at the
next unfinished episode and half-done training from its last checkpoint. The run folder holds the
config it was started with and a manifest (versions, seeds, git commit, split hashes).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from trajkit.config import ConfigError
from trajkit.data.files import DataError, clean_temporaries, reason, write_text_atomic
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
        clean_temporaries(self.partial)  # what a killed atomic write left; the run lock is held
        return self.partial

    def commit(self, summary: dict[str, Any] | None = None) -> None:
        (self.partial / "DONE").write_text(json.dumps(summary or {}, indent=2) + "\n")
        os.replace(self.partial, self.final)


LOCK_FILE = ".lock"
# Errors of the storage, not of trajkit: a run stopped by one resumes once it is fixed.
STORAGE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}
)


class RunFolderBusy(ConfigError):
    """Another process holds the run folder's lock."""


# How libraries that write without raising OSError report a failed write: Rust crates
# (safetensors, tokenizers) as "(os error N)", torch's checkpoint writer as an iostream failure.
_OS_ERROR = re.compile(r"os error (\d+)")
_TORCH_WRITE = ("iostream error", "PytorchStreamWriter failed", "file write failed", "unexpected pos")


def storage_failure(err: BaseException) -> str | None:
    """Why `err` (or an error it came from) is the storage's fault, a full disk, a size limit, a
    folder that turned read-only, in a few words; None when it is not."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DataError) and current.message.startswith("cannot write"):
            return str(current)
        if isinstance(current, OSError) and current.errno in STORAGE_ERRNOS:
            return f"{current.filename or '-'}: {reason(current)}"
        text = str(current)
        code = _OS_ERROR.search(text)
        if code and int(code.group(1)) in STORAGE_ERRNOS:
            return f"a write failed: {reason(OSError(int(code.group(1)), os.strerror(int(code.group(1)))))}"
        if isinstance(current, RuntimeError) and any(mark in text for mark in _TORCH_WRITE):
            return "a checkpoint write failed (a full disk or a file-size limit)"
        current = current.__cause__ or current.__context__
    return None


def _lock_holder(fd: int) -> str | None:
    """The pid holding a flock on `fd`'s file, from /proc/locks (Linux); None when unknown. The
    lock file itself is never written, so a finished run folder stays byte for byte as it was."""
    info = os.fstat(fd)
    inode = f":{info.st_ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        if len(parts) > 5 and parts[1] == "FLOCK" and parts[5].endswith(inode) and parts[4].isdigit():
            return parts[4]
    return None


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold RUN_DIR/.lock for the block: one process per run folder, so two runs cannot tear each
    other's stages. The kernel drops the lock when the process dies, even by kill -9."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as err:
        raise ConfigError(f"{run_dir}: cannot use this run folder: {err.strerror or err}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd)
            who = f" (pid {holder})" if holder else ""
            raise RunFolderBusy(
                f"{run_dir}: another trajkit process{who} is running in this run folder; "
                "wait for it to end, or give another run_dir"
            ) from None
        yield
    finally:
        os.close(fd)  # closing releases the lock


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
    write_text_atomic(path, json.dumps(manifest, indent=2) + "\n")


def write_if_changed(path: Path, text: str) -> None:
    """Write `text` whole (never torn by a kill), and only when it differs: a finished run's
    files keep their times. Only for paths inside a locked run folder."""
    clean_temporaries(path.parent)
    try:
        same = path.is_file() and path.read_text(encoding="utf-8") == text
    except (OSError, UnicodeDecodeError):
        same = False
    if not same:
        write_text_atomic(path, text)


def write_jsonl(path: Path, trajs: list[Trajectory]) -> None:
    from trajkit.data.io import write_trajectories

    write_trajectories(trajs, path, format="trajkit")


def read_jsonl(path: Path) -> list[Trajectory]:
    from trajkit.data.io import load_trajectories

    return load_trajectories(str(path), format="trajkit")
