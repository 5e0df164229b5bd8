"""Run-scoped settings the trainers pick up: where metrics go and where progress goes.

Outside a run nothing is set and SFT, vision SFT and DPO behave as before (`report_to: none`, the
transformers progress bar; a recipe's `extra_args` can still set `report_to`). A run sets them once
for all its training stages (`pipeline.tracking`) with `use_hooks`, so no stage passes them along:

- `report_to`: the tracker the trainers' own callbacks write to (tensorboard, wandb, trackio), plus
  any TrainingArguments it needs (`trainer_args`, e.g. trackio's project and run name);
- `tensorboard_dir(output_dir)`: where a stage's TensorBoard events go (default: under output_dir);
- `progress(output_dir, step, max_steps, logs)`: replaces the tqdm bar and the printed log dicts
  with the run's own progress line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

Progress = Callable[[str, int, int, dict[str, Any]], None]


@dataclass(frozen=True)
class TrainHooks:
    report_to: str = "none"
    trainer_args: dict[str, Any] = field(default_factory=dict)
    tensorboard_dir: Callable[[str], str] | None = None
    progress: Progress | None = None


_HOOKS: ContextVar[TrainHooks | None] = ContextVar("trajkit_train_hooks", default=None)


@contextmanager
def use_hooks(hooks: TrainHooks) -> Iterator[TrainHooks]:
    token = _HOOKS.set(hooks)
    try:
        yield hooks
    finally:
        _HOOKS.reset(token)


def tracking_args() -> dict[str, Any]:
    """TrainingArguments for the active hooks: `report_to` and what its tracker needs."""
    hooks = _HOOKS.get()
    if hooks is None:
        return {"report_to": "none"}
    return {"report_to": hooks.report_to, **hooks.trainer_args}


def attach(trainer: Any) -> None:
    """Fold a built trainer into the active hooks (no-op outside a run): its tqdm bar and printed
    log dicts give way to the run's progress line, its TensorBoard events go where the run says."""
    hooks = _HOOKS.get()
    if hooks is None:
        return
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    if hooks.progress is not None:
        trainer.remove_callback(ProgressCallback)
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(_reporter(hooks.progress))
    if hooks.tensorboard_dir is not None:
        from transformers.integrations import TensorBoardCallback

        for cb in trainer.callback_handler.callbacks:
            # An explicit TENSORBOARD_LOGGING_DIR (the user's) wins.
            if isinstance(cb, TensorBoardCallback) and cb.logging_dir is None:
                cb.logging_dir = hooks.tensorboard_dir(str(trainer.args.output_dir))


def _reporter(progress: Progress) -> Any:
    from transformers import TrainerCallback

    class _Reporter(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            progress(str(args.output_dir), state.global_step, state.max_steps, {})

        def on_log(self, args, state, control, logs=None, **kw):
            progress(str(args.output_dir), state.global_step, state.max_steps, dict(logs or {}))

    return _Reporter()
