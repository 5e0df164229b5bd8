"""Supervised fine-tuning on expert trajectories, on TRL's SFTTrainer.

Samples reach TRL already tokenized by our renderer (`input_ids` + `assistant_masks`), so TRL's
loss covers exactly the agent tokens `render` marks: the same mask DPO and rollouts use. Packing
(padding-free, best-fit decreasing) keeps each sample's mask and resets positions per sample.
"""

from __future__ import annotations

from pathlib import Path

from trajkit.train.common import (
    ThroughputCallback,
    last_good_checkpoint,
    save_trained_model,
    trainer_args,
    write_train_log,
)
from trajkit.train.hooks import attach as attach_hooks
from trajkit.train.settings import SFTRecipe, SFTSettings

__all__ = ["SFTRecipe", "SFTSettings", "build_sft_dataset", "run_sft"]


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


def run_sft(recipe: SFTRecipe, trajectories=None) -> Path:
    """Train and save the final model to `{output_dir}/model`; returns that folder."""
    from trl import SFTConfig, SFTTrainer

    from trajkit.policy.models import ModelSpec, load_policy
    from trajkit.policy.vlm import is_vision_model
    from trajkit.render import Renderer

    if is_vision_model(recipe.model):
        from trajkit.train.vlm import run_vlm_sft

        return run_vlm_sft(recipe, trajectories)
    if recipe.freeze_vision or recipe.gui_stage is not None or recipe.min_pixels or recipe.max_pixels:
        raise ValueError(
            f"{recipe.model}: freeze_vision / gui_stage / min_pixels / max_pixels need a "
            "vision-language model (Qwen2-VL family)"
        )
    out_dir = Path(recipe.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Made first: in several processes (train.launch) the arguments set up the process group, and
    # DeepSpeed ZeRO-3 then shards the weights as they load.
    args = SFTConfig(
        **trainer_args(recipe, out_dir),
        weight_decay=recipe.weight_decay,
        packing=recipe.packing,
        packing_strategy="bfd",
        padding_free=recipe.packing,
        dataset_num_proc=None,
    )
    model, tokenizer, template = load_policy(
        ModelSpec(recipe.model, recipe.template, recipe.dtype, recipe.lora), trainable=True
    )
    if trajectories is None:
        from trajkit.data.io import load_trajectories

        trajectories = [t for src in recipe.data for t in load_trajectories(src, format=recipe.data_format)]
    if not trajectories:
        raise ValueError(f"no trajectories found in {recipe.data}")
    renderer = Renderer(tokenizer, template, mask=recipe.loss_mask)
    dataset = build_sft_dataset(trajectories, renderer, recipe.max_length)
    throughput = ThroughputCallback()
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[throughput],
    )
    attach_hooks(trainer)  # a run's tracker and progress line
    last = last_good_checkpoint(args.output_dir) if recipe.resume else None
    trainer.train(resume_from_checkpoint=last)

    final = save_trained_model(trainer, tokenizer, template, recipe.model, out_dir)
    write_train_log(out_dir, trainer, throughput=throughput.history)
    return final
