"""What each process of a launched training stage runs: `accelerate launch -m trajkit.train.launched JOB`.

JOB is the JSON file `train.launch.run_launched` writes: the stage kind (sft, dpo), its recipe, and
the run's tracker settings. Every rank builds the same trainer; the trainers share out the batches
(accelerate), only the main process writes the final model and the log (`train.common`), and the
parent process, not this one, marks the stage done.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from trajkit.config import from_dict
from trajkit.train.dpo import DPORecipe, run_dpo
from trajkit.train.hooks import TrainHooks, use_hooks
from trajkit.train.sft import SFTRecipe, run_sft

RECIPES = {"sft": (SFTRecipe, run_sft), "dpo": (DPORecipe, run_dpo)}


def run_job(path: str | Path) -> Path:
    job = json.loads(Path(path).read_text(encoding="utf-8"))
    if job.get("kind") not in RECIPES:
        raise ValueError(f"{path}: kind must be one of {', '.join(RECIPES)}, got {job.get('kind')!r}")
    cls, train = RECIPES[job["kind"]]
    recipe = from_dict(cls, job["recipe"], where=str(path))
    board = job.get("tensorboard_dir")
    hooks = TrainHooks(
        report_to=job.get("report_to", "none"),
        trainer_args=job.get("trainer_args") or {},
        tensorboard_dir=(lambda _out: board) if board else None,
    )
    with use_hooks(hooks):
        return train(recipe)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: accelerate launch -m trajkit.train.launched JOB.json", file=sys.stderr)
        return 2
    run_job(args[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
