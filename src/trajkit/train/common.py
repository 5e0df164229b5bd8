"""Trainer plumbing that SFT, vision SFT and DPO share: arguments, checkpoints, the final save."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from trajkit.train.hooks import tracking_args


def training_device_args() -> dict[str, Any]:
    """bf16 and activation checkpointing are TRL defaults that make CPU training ~30x slower."""
    import dataclasses

    import torch
    from transformers import TrainingArguments

    # transformers renamed gradient_checkpointing to activation_checkpointing; set whichever exists.
    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    ckpt = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    if torch.cuda.is_available():
        return {"bf16": torch.cuda.is_bf16_supported(), ckpt: True}
    return {"bf16": False, "fp16": False, ckpt: False, "use_cpu": True}


def trainer_args(recipe, out_dir: Path) -> dict[str, Any]:
    """The TrainingArguments that SFT and DPO recipes share, by their transformers names.

    Device settings come first so a recipe's `extra_args` can still override them.
    """
    return {
        "output_dir": str(out_dir / "checkpoints"),
        "num_train_epochs": recipe.epochs,
        "max_steps": recipe.max_steps,
        "learning_rate": recipe.learning_rate,
        "lr_scheduler_type": recipe.lr_scheduler,
        "warmup_steps": recipe.warmup,
        "per_device_train_batch_size": recipe.batch_size,
        "gradient_accumulation_steps": recipe.grad_accum,
        "max_length": recipe.max_length,
        "logging_steps": recipe.logging_steps,
        "save_steps": recipe.save_steps,
        "save_total_limit": recipe.save_total_limit,
        "seed": recipe.seed,
        **tracking_args(),  # report_to: "none" outside a run that sets a tracker
        **training_device_args(),
        **recipe.extra_args,
    }


def save_trained_model(trainer, tokenizer, template: str, source_model: str, out_dir: Path) -> Path:
    """Save the trained policy (LoRA merged in) to `out_dir/model` atomically, carrying over the
    source model's trajkit card with the template it was trained with. `tokenizer` is anything with
    `save_pretrained` (a tokenizer, or a `policy.vlm.VLM` that adds its image processor)."""
    from peft import PeftModel

    final = out_dir / "model"
    tmp = out_dir / ".model.tmp"
    acc = trainer.accelerator  # several processes (train.launch): only the main one writes
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    acc.wait_for_everyone()
    model = trainer.model
    zero = getattr(getattr(acc.state, "deepspeed_plugin", None), "zero_stage", None)
    if getattr(acc.state, "fsdp_plugin", None) is not None or zero == 3:
        trainer.save_model(str(tmp))  # sharded weights: every rank helps gather them, rank 0 writes
    elif acc.is_main_process:
        (model.merge_and_unload() if isinstance(model, PeftModel) else model).save_pretrained(tmp)
    if acc.is_main_process:
        tokenizer.save_pretrained(tmp)
        card = Path(source_model) / "trajkit_model.json"
        meta = json.loads(card.read_text()) if card.is_file() else {}
        meta["template"] = template
        (tmp / "trajkit_model.json").write_text(json.dumps(meta, indent=2) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    acc.wait_for_everyone()
    return final


def last_good_checkpoint(folder: str | Path) -> str | None:
    """The newest checkpoint that was written completely, or None.

    A process killed while saving leaves a checkpoint folder with missing or empty files; resuming
    from it would crash. Such a folder is removed and the previous checkpoint is used.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    candidates = sorted(
        (p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
        reverse=True,
    )
    for ckpt in candidates:
        try:
            json.loads((ckpt / "trainer_state.json").read_text())
            if _complete_weights(ckpt):
                return str(ckpt)
        except (OSError, json.JSONDecodeError):
            pass
        shutil.rmtree(ckpt, ignore_errors=True)
    return None


def _complete_weights(ckpt: Path) -> bool:
    """Weights, optimizer and scheduler of a checkpoint are all there: the plain layout, FSDP's
    (`pytorch_model_fsdp*`, `optimizer*.bin` or sharded folders) or DeepSpeed's (`latest` naming a
    `global_step*` folder that holds model and optimizer states)."""
    latest = ckpt / "latest"
    if latest.is_file():
        tag = ckpt / latest.read_text().strip()
        return tag.is_dir() and any(tag.glob("*optim_states.pt")) and any(tag.glob("*model_states.pt"))
    weights = ("*.safetensors", "adapter_model.*", "pytorch_model_fsdp*")
    optimizer = ("optimizer.pt", "optimizer*.bin", "optimizer_*")
    return (
        any(any(ckpt.glob(p)) for p in weights)
        and any(any(ckpt.glob(p)) for p in optimizer)
        and (ckpt / "scheduler.pt").is_file()
    )


def load_renamed_checkpoint(trainer, checkpoint: str, model=None) -> bool:
    """Load a full-model checkpoint whose weight names differ from the model's; True if it did.

    transformers 5 saves some architectures (Qwen2-VL among them) under their original weight
    names and renames them on `from_pretrained`, but `Trainer`'s resume loads the file with
    `load_state_dict(strict=False)`, which then silently loads nothing. Such a checkpoint is read
    through `from_pretrained` instead (a second copy of the weights, once per resume) and copied
    in strictly. Checkpoints whose names already match (text models, adapters) are left to
    `Trainer`, unchanged.
    """
    from safetensors import safe_open
    from transformers import PreTrainedModel

    target = trainer.accelerator.unwrap_model(model if model is not None else trainer.model)
    folder = Path(checkpoint)
    index = folder / "model.safetensors.index.json"
    if not isinstance(target, PreTrainedModel):
        return False
    if index.is_file():
        saved = set(json.loads(index.read_text())["weight_map"])
    elif (folder / "model.safetensors").is_file():
        with safe_open(str(folder / "model.safetensors"), "pt") as fh:
            saved = set(fh.keys())
    else:
        return False
    if saved <= set(target.state_dict()):
        return False
    loaded = type(target).from_pretrained(str(folder), dtype=target.dtype)
    target.load_state_dict(loaded.state_dict(), strict=True)
    return True


def write_train_log(out_dir: Path, trainer, **extra: Any) -> None:
    """`{out_dir}/train_log.json`: the trainer's log history plus whatever the caller adds."""
    if not trainer.is_world_process_zero():
        return  # several processes: their log history is the same, the main one writes it
    log = {"log_history": trainer.state.log_history, **extra}
    (out_dir / "train_log.json").write_text(json.dumps(log, indent=2) + "\n")


class ThroughputCallback:
    """Adds tokens/s (over TRL's `num_tokens` count, since this run started) to every log."""

    def __new__(cls, *args, **kwargs):
        # Subclass TrainerCallback lazily so importing this module does not import transformers.
        from transformers import TrainerCallback

        class _Throughput(TrainerCallback):
            def __init__(self):
                self.start: float | None = None
                self.tokens_at_start: float | None = None
                self.history: list[dict[str, float]] = []

            def on_train_begin(self, args, state, control, **kw):
                self.start = time.perf_counter()

            def on_log(self, args, state, control, logs=None, **kw):
                if logs is None or self.start is None or "num_tokens" not in logs:
                    return
                if self.tokens_at_start is None:
                    # First log after (re)start: tokens before it belong to an earlier process.
                    self.tokens_at_start = float(logs["num_tokens"])
                    self.start = time.perf_counter()
                    return
                elapsed = max(time.perf_counter() - self.start, 1e-9)
                logs["tokens_per_s"] = round((float(logs["num_tokens"]) - self.tokens_at_start) / elapsed, 1)
                self.history.append({"step": state.global_step, **logs})

        return _Throughput()
