"""Supervised fine-tuning on expert trajectories, on TRL's SFTTrainer.

Samples reach TRL already tokenized by our renderer (`input_ids` + `assistant_masks`), so TRL's
loss covers exactly the agent tokens `render` marks: the same mask DPO and rollouts use. Packing
(padding-free, best-fit decreasing) keeps each sample's mask and resets positions per sample.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trajkit.policy.models import LoraSpec


@dataclass
class SFTRecipe:
    """Everything `trajkit sft` needs. Every key can be set in YAML or with `--set key=value`."""

    model: str  # HF id or local folder
    data: list[str]  # files/folders/hub ids of expert trajectories (any supported format)
    output_dir: str
    template: str | None = None  # None: from the model folder
    data_format: str = "auto"
    epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides epochs
    learning_rate: float = 2e-5
    lr_scheduler: str = "cosine"
    warmup: float = 0.03  # < 1: fraction of the steps; >= 1: a number of steps
    weight_decay: float = 0.0
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 2048
    packing: bool = False
    lora: LoraSpec | None = None
    logging_steps: int = 10
    save_steps: int = 200
    save_total_limit: int = 2
    seed: int = 0
    dtype: str = "auto"
    resume: bool = True  # continue from the last checkpoint in output_dir
    extra_args: dict[str, Any] = field(default_factory=dict)  # passed to SFTConfig as-is
    # Vision-language models (Qwen2-VL family; see trajkit.train.vlm). Chosen by the model's config.
    freeze_vision: bool = False  # keep the vision tower (merger included) fixed, as AGUVIS does
    gui_stage: str | None = None  # grounding (AGUVIS stage 1) | planning (stage 2) | None: data as is
    reasoning_mixture: dict[str, float] | None = None  # planning: level -> weight, e.g. {l1: 1, l3: 1}
    pack_max_turns: int = 16  # grounding: most instruction/code pairs packed per screenshot
    system_prompt: str | None = None  # GUI stages: system turn where a sample has none ("" for none)


def build_sft_dataset(trajectories, renderer, max_length: int):
    """Rendered samples as a `datasets.Dataset`. Over-long samples are refused by name, not cut."""
    from datasets import Dataset

    rows: dict[str, list] = {"input_ids": [], "assistant_masks": []}
    for traj in trajectories:
        out = renderer.render(traj)
        if len(out.input_ids) > max_length:
            raise ValueError(
                f"record {traj.id!r}: {len(out.input_ids)} tokens exceed max_length={max_length}; "
                "raise max_length (cutting would drop agent turns silently)"
            )
        rows["input_ids"].append(out.input_ids)
        rows["assistant_masks"].append(out.loss_mask)
    return Dataset.from_dict(rows)


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
        "report_to": "none",
        **training_device_args(),
        **recipe.extra_args,
    }


def save_trained_model(trainer, tokenizer, template: str, source_model: str, out_dir: Path) -> Path:
    """Save the trained policy (LoRA merged in) to `out_dir/model` atomically, carrying over the
    source model's trajkit card with the template it was trained with."""
    from peft import PeftModel

    final = out_dir / "model"
    tmp = out_dir / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model = trainer.model
    (model.merge_and_unload() if isinstance(model, PeftModel) else model).save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    card = Path(source_model) / "trajkit_model.json"
    meta = json.loads(card.read_text()) if card.is_file() else {}
    meta["template"] = template
    (tmp / "trajkit_model.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
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
            has_weights = any(ckpt.glob("*.safetensors")) or any(ckpt.glob("adapter_model.*"))
            if has_weights and (ckpt / "optimizer.pt").is_file() and (ckpt / "scheduler.pt").is_file():
                return str(ckpt)
        except (OSError, json.JSONDecodeError):
            pass
        shutil.rmtree(ckpt, ignore_errors=True)
    return None


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


def run_sft(recipe: SFTRecipe, trajectories=None) -> Path:
    """Train and save the final model to `{output_dir}/model`; returns that folder."""
    from trl import SFTConfig, SFTTrainer

    from trajkit.policy.models import ModelSpec, load_policy
    from trajkit.policy.vlm import is_vision_model
    from trajkit.render import Renderer

    if is_vision_model(recipe.model):
        from trajkit.train.vlm import run_vlm_sft

        return run_vlm_sft(recipe, trajectories)
    if recipe.freeze_vision or recipe.gui_stage is not None:
        raise ValueError(
            f"{recipe.model}: freeze_vision / gui_stage need a vision-language model (Qwen2-VL family)"
        )
    out_dir = Path(recipe.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, tokenizer, template = load_policy(
        ModelSpec(recipe.model, recipe.template, recipe.dtype, recipe.lora), trainable=True
    )
    if trajectories is None:
        from trajkit.data.io import load_trajectories

        trajectories = [t for src in recipe.data for t in load_trajectories(src, format=recipe.data_format)]
    if not trajectories:
        raise ValueError(f"no trajectories found in {recipe.data}")
    dataset = build_sft_dataset(trajectories, Renderer(tokenizer, template), recipe.max_length)

    args = SFTConfig(
        **trainer_args(recipe, out_dir),
        weight_decay=recipe.weight_decay,
        packing=recipe.packing,
        packing_strategy="bfd",
        padding_free=recipe.packing,
        dataset_num_proc=None,
    )
    throughput = ThroughputCallback()
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[throughput],
    )
    last = last_good_checkpoint(args.output_dir) if recipe.resume else None
    trainer.train(resume_from_checkpoint=last)

    final = save_trained_model(trainer, tokenizer, template, recipe.model, out_dir)
    log = {"log_history": trainer.state.log_history, "throughput": throughput.history}
    (out_dir / "train_log.json").write_text(json.dumps(log, indent=2) + "\n")
    return final
