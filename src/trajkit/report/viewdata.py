"""What the viewer shows, read from a run folder or from files, as plain data.

A run folder is read as the stages write it (`pipeline.stage`, `pipeline.stages`): config.yaml,
manifest.json, summary.json, each stage's DONE summary, ``expert/expert.jsonl``, every
``rollouts.jsonl`` (finished stages and ``*.partial`` ones still running) and
``round-<r>/pairs/pairs.jsonl``. Loose files are read with `data.io` (any supported format) or, when
their records have ``chosen`` / ``rejected``, as pairs. Nothing here writes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trajkit.data.schema import Trajectory

_ROUND = re.compile(r"^round-(\d+)$")
SKIP_DIRS = {"model", "checkpoints", "pairs_dataset", "tracking", "images", "view"}


@dataclass
class Source:
    """One trajectory file and where it sits in the run."""

    path: Path
    stage: str  # e.g. "round-1/explore", "eval-sft/test_seen", "expert", or the file name
    kind: str  # expert | explore | eval | file
    round: int | None
    policy: str | None
    split: str | None
    mode: str | None = None
    running: bool = False  # a `.partial` stage: still being written


@dataclass
class RunData:
    label: str
    run_dir: Path | None
    config_text: str = ""
    manifest: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage name -> DONE summary
    sources: list[Source] = field(default_factory=list)
    pair_files: list[tuple[int | None, Path]] = field(default_factory=list)


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _stage_name(run_dir: Path, folder: Path) -> tuple[str, bool]:
    rel = folder.relative_to(run_dir).parts
    running = any(p.endswith(".partial") for p in rel)
    return "/".join(p.removesuffix(".partial") for p in rel), running


def classify(stage: str) -> tuple[str, int | None, str | None, str | None, str | None]:
    """(kind, round, policy, split, mode) of a rollout stage, from its path in the run folder."""
    parts = stage.split("/")
    if parts[0] == "expert":
        return "expert", 0, "expert", "train", None
    rnd = _ROUND.match(parts[0])
    if rnd and len(parts) >= 2 and parts[1] == "explore":
        r = int(rnd.group(1))
        return "explore", r, ("sft" if r == 1 else f"round-{r - 1}"), "train", None
    if rnd and len(parts) >= 3 and parts[1] == "eval":
        rest, r = parts[2:], int(rnd.group(1))
        policy = f"round-{r}"
    elif parts[0].startswith("eval-") and len(parts) >= 2:
        rest, policy = parts[1:], parts[0].removeprefix("eval-")
        r = 1 if policy == "rft" else 0
    else:
        return "file", None, None, None, None
    mode = rest[0] if len(rest) >= 2 else None  # GUI runs: <stage>/<mode>/<split>
    return "eval", r, policy, rest[-1], mode


def read_run(run_dir: Path) -> RunData:
    run_dir = Path(run_dir)
    data = RunData(label=run_dir.resolve().name, run_dir=run_dir)
    config = run_dir / "config.yaml"
    data.config_text = config.read_text() if config.is_file() else ""
    data.manifest = _json(run_dir / "manifest.json")
    data.summary = _json(run_dir / "summary.json")
    for done in sorted(run_dir.rglob("DONE")):
        if SKIP_DIRS & set(done.relative_to(run_dir).parts[:-1]):
            continue
        name, _ = _stage_name(run_dir, done.parent)
        data.stages[name] = _json(done)
    expert = run_dir / "expert" / "expert.jsonl"
    files = ([expert] if expert.is_file() else []) + sorted(
        p for p in run_dir.rglob("rollouts.jsonl") if not SKIP_DIRS & set(p.relative_to(run_dir).parts[:-1])
    )
    for path in files:
        stage, running = _stage_name(run_dir, path.parent)
        kind, rnd, policy, split, mode = classify(stage)
        data.sources.append(Source(path, stage, kind, rnd, policy, split, mode, running))
    for path in sorted(run_dir.glob("round-*/pairs/pairs.jsonl")) + sorted(
        run_dir.glob("round-*/pairs.partial/pairs.jsonl")
    ):
        match = _ROUND.match(path.parent.parent.name)
        data.pair_files.append((int(match.group(1)) if match else None, path))
    return data


def is_pairs_file(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8") as fh:
            first = json.loads(fh.readline() or "{}")
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(first, dict) and "chosen" in first and "rejected" in first


def read_files(paths: list[Path]) -> RunData:
    data = RunData(label="files", run_dir=None)
    for path in paths:
        if is_pairs_file(path):
            data.pair_files.append((None, path))
        else:
            data.sources.append(Source(path, path.name, "file", None, None, None))
    return data


def load_source(source: Source) -> list[Trajectory]:
    """The trajectories of one file; a torn last line of a running stage is skipped."""
    if source.kind != "file":
        out = []
        for line in source.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(Trajectory.from_dict(json.loads(line)))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                if not source.running:
                    raise
        return out
    from trajkit.data.io import load_trajectories

    return load_trajectories(str(source.path))


def load_pairs(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a pairs file being written: its last line may be torn
    return out


def family_of(traj: Trajectory) -> str:
    meta = traj.metadata
    return str(meta.get("family") or meta.get("task_name") or "")


def gui_points(text: str, size: tuple[int, int] | None) -> list[tuple[float, float]]:
    """Normalized points an action text clicks or drags at (parsed as data, never run)."""
    from trajkit.gui.actions import ActionParseError, parse_actions

    body = text.split("Action:", 1)[-1] if "pyautogui" not in text and "Action:" in text else text
    width, height = size if size else (None, None)
    try:
        actions = parse_actions(body, width=width, height=height)
    except (ActionParseError, ValueError):
        return []
    points = []
    for action in actions:
        for xk, yk in (("x", "y"), ("to_x", "to_y")):
            x, y = getattr(action, xk, None), getattr(action, yk, None)
            if isinstance(x, (int, float)) and isinstance(y, (int, float)) and 0 <= x <= 1 and 0 <= y <= 1:
                points.append((float(x), float(y)))
    return points


def target_box(traj: Trajectory, step: int) -> list[float] | None:
    """The target box of agent step `step` where the record carries one (``metadata.target_boxes``
    per step, or ``metadata.bbox`` for a one-step grounding sample), normalized [x0, y0, x1, y1]."""
    boxes = traj.metadata.get("target_boxes")
    box = boxes[step] if isinstance(boxes, list) and step < len(boxes) else None
    if box is None and step == 0:
        box = traj.metadata.get("bbox")
    if isinstance(box, (list, tuple)) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box):
        return [float(v) for v in box]
    return None
