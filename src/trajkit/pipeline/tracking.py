"""Experiment tracking for a run: `report_to: none | tensorboard | wandb | trackio` in a recipe.

One tracker per run gets the loop's scalars, one step per round (0: the SFT policy):

- ``eval/<split>/success_rate`` and ``mean_reward`` (GUI runs: ``eval/<mode>/<split>/...``),
  ``rft/<split>/...`` for the RFT baseline;
- ``explore/success_rate``, ``explore/episodes_per_s``, ``explore/tokens_per_s`` and the same speeds
  for evaluation rollouts (``eval/episodes_per_s``, ``eval/tokens_per_s``);
- ``pairs/win``, ``pairs/tie``, ``pairs/lose``, ``pairs/pairs``.

SFT and DPO report to the same tracker through their trainers' own callbacks (`train.hooks`):
TensorBoard events under ``RUN_DIR/tracking/tensorboard/<stage>`` (the loop's under ``.../run``);
wandb and trackio into the run's one wandb / trackio run.

Nothing leaves the machine unless the user says so: wandb runs in offline mode unless WANDB_MODE is
set (its files go to ``RUN_DIR/tracking/wandb``); trackio logs to its local database unless
TRACKIO_SPACE_ID is set.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from trajkit.config import ConfigError
from trajkit.pipeline.config import RunConfig
from trajkit.pipeline.progress import Console
from trajkit.pipeline.stage import Stage
from trajkit.train.hooks import TrainHooks, use_hooks

REPORT_TO = ("none", "tensorboard", "wandb", "trackio")


class Tracker:
    """Where the loop's scalars go; the base class drops them (`report_to: none`)."""

    name = "none"

    def __init__(self, cfg: RunConfig):
        self.root = Path(cfg.run_dir) / "tracking"
        self.run_name = Path(cfg.run_dir).resolve().name

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Write the scalars not written at `step` before: a resumed or re-run run logs only what
        is new (the ledger is RUN_DIR/tracking/logged.json)."""
        if self.name == "none":
            return
        ledger_path = self.root / "logged.json"
        ledger = json.loads(ledger_path.read_text()) if ledger_path.is_file() else {}
        seen = set(ledger.get(str(step), []))
        fresh = {k: float(v) for k, v in metrics.items() if k not in seen}
        if not fresh:
            return
        self._write(fresh, step)
        ledger[str(step)] = sorted(seen | set(fresh))
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = ledger_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(ledger, indent=1) + "\n")
        os.replace(tmp, ledger_path)

    def _write(self, metrics: dict[str, float], step: int) -> None:
        pass

    def close(self) -> None:
        pass

    def trainer_args(self) -> dict[str, Any]:
        """TrainingArguments that make the trainers' callbacks write into this tracker."""
        return {}

    def tensorboard_dir(self, label: str) -> str | None:
        return None


class TensorBoardTracker(Tracker):
    name = "tensorboard"

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        self.writer: Any = None  # opened at the first scalar: a re-run with nothing new writes no file

    def _write(self, metrics: dict[str, float], step: int) -> None:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.root / "tensorboard" / "run"))
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def trainer_args(self) -> dict[str, Any]:
        return {"report_to": "tensorboard"}

    def tensorboard_dir(self, label: str) -> str:
        return str(self.root / "tensorboard" / label)


class WandbTracker(Tracker):
    name = "wandb"

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        import wandb

        self.root.mkdir(parents=True, exist_ok=True)
        # One wandb run per run folder (a resume continues it); the trainers' WandbCallback finds
        # it as `wandb.run` and logs into it.
        run_id = hashlib.sha256(str(Path(cfg.run_dir).resolve()).encode()).hexdigest()[:12]
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "trajkit"),
            name=self.run_name,
            id=run_id,
            resume="allow",
            dir=str(self.root),
            mode=os.environ.get("WANDB_MODE", "offline"),
            config=json.loads(json.dumps(asdict(cfg), default=str)),
        )
        self.run.define_metric("round")
        for prefix in ("eval/*", "rft/*", "explore/*", "pairs/*"):
            self.run.define_metric(prefix, step_metric="round")

    def _write(self, metrics: dict[str, float], step: int) -> None:
        self.run.log({**metrics, "round": step})

    def close(self) -> None:
        self.run.finish()

    def trainer_args(self) -> dict[str, Any]:
        return {"report_to": "wandb", "run_name": self.run_name}


class TrackioTracker(Tracker):
    name = "trackio"

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        import trackio

        self.trackio = trackio
        self.project = os.environ.get("TRACKIO_PROJECT", "trajkit")
        # Local database unless the user sets TRACKIO_SPACE_ID (trackio reads it itself).
        self.run = trackio.init(
            project=self.project,
            name=self.run_name,
            resume="allow",
            config=json.loads(json.dumps(asdict(cfg), default=str)),
        )

    def _write(self, metrics: dict[str, float], step: int) -> None:
        self.trackio.log({**metrics, "round": step})

    def close(self) -> None:
        self.trackio.finish()

    def trainer_args(self) -> dict[str, Any]:
        # No static Space at the end of training: that would publish to the Hub.
        return {
            "report_to": "trackio",
            "project": self.project,
            "run_name": self.run_name,
            "trackio_static_space_id": False,
        }


TRACKERS: dict[str, type[Tracker]] = {
    "none": Tracker,
    "tensorboard": TensorBoardTracker,
    "wandb": WandbTracker,
    "trackio": TrackioTracker,
}
NEEDS = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}


def open_tracker(cfg: RunConfig) -> Tracker:
    if cfg.report_to not in TRACKERS:
        raise ConfigError(f"report_to: {cfg.report_to!r} is not one of {', '.join(REPORT_TO)}")
    package = NEEDS.get(cfg.report_to)
    if package is not None:
        from importlib.util import find_spec

        if find_spec(package) is None:
            raise ConfigError(
                f"report_to: {cfg.report_to} needs the {package} package (pip install {package})"
            )
    return TRACKERS[cfg.report_to](cfg)


def stage_label(run_dir: str | Path, output_dir: str | Path) -> str:
    """A trainer's output folder as its stage's name: run/round-1/dpo.partial/checkpoints -> round-1/dpo."""
    path = Path(output_dir).resolve()
    try:
        rel = path.relative_to(Path(run_dir).resolve())
    except ValueError:
        return path.name
    parts = [p.removesuffix(".partial") for p in rel.parts if p != "checkpoints"]
    return "/".join(parts) or path.name


@contextmanager
def run_scope(cfg: RunConfig, console: Console) -> Iterator[Tracker]:
    """The run's tracker and console, and the trainer hooks that feed both, for one `execute`."""
    tracker = open_tracker(cfg)
    hooks = TrainHooks(
        report_to=tracker.trainer_args().get("report_to", "none"),
        trainer_args={k: v for k, v in tracker.trainer_args().items() if k != "report_to"},
        tensorboard_dir=(
            (lambda out: tracker.tensorboard_dir(stage_label(cfg.run_dir, out)))
            if tracker.name == "tensorboard"
            else None
        ),
        progress=console.training(lambda out: stage_label(cfg.run_dir, out)),
    )
    try:
        with console, use_hooks(hooks):
            yield tracker
    finally:
        tracker.close()


# --- what the loop logs ---------------------------------------------------------------------------
def _speed(run_dir: Path, names: list[str], prefix: str) -> dict[str, float]:
    episodes = seconds = tokens = 0.0
    for name in names:
        stage = Stage(run_dir, name)
        if not stage.done:
            continue
        done = stage.summary()
        episodes += done.get("episodes", 0)
        seconds += done.get("seconds", 0.0)
        tokens += done.get("agent_tokens", 0)
    if seconds <= 0:
        return {}
    return {f"{prefix}/episodes_per_s": episodes / seconds, f"{prefix}/tokens_per_s": tokens / seconds}


def eval_metrics(
    run_dir: Path, name: str, results: dict[Any, dict], prefix: str = "eval"
) -> dict[str, float]:
    """Success and reward per split (and mode) of an eval stage, with its rollout speed."""
    out: dict[str, float] = {}
    stages = []
    for mode, per_split in results.items():
        for split, m in per_split.items():
            key = f"{prefix}/{mode}/{split}" if mode else f"{prefix}/{split}"
            out[f"{key}/success_rate"] = float(m["success_rate"])
            out[f"{key}/mean_reward"] = float(m.get("mean_reward", 0.0))
            stages.append(f"{name}/{mode}/{split}" if mode else f"{name}/{split}")
    return {**out, **_speed(run_dir, stages, prefix)}


def round_metrics(run_dir: Path, round_no: int) -> dict[str, float]:
    """Exploration success and speed, and pair counts, of round `round_no`."""
    out: dict[str, float] = {}
    explore = Stage(run_dir, f"round-{round_no}/explore")
    if explore.done:
        done = explore.summary()
        if done.get("episodes") and "success" in done:
            out["explore/success_rate"] = done["success"] / done["episodes"]
        out.update(_speed(run_dir, [explore.name], "explore"))
    pairs = Stage(run_dir, f"round-{round_no}/pairs")
    if pairs.done:
        out.update(
            {f"pairs/{k}": float(v) for k, v in pairs.summary().items() if isinstance(v, (int, float))}
        )
    return out
