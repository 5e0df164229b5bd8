"""Vision-language SFT, AGUVIS style: the stage samples rendered, collated with their images,
and trained.

`prepare_stage` picks the recipe's `gui_stage` samples (built in `gui.samples`). Samples are
rendered by `render.Renderer` with the model's `image_tokens`, so ids and loss mask come from the
one renderer; `VLMCollator` pads them and adds `pixel_values`, `image_grid_thw` and
`mm_token_type_ids` (what Qwen2-VL's 3-D positions need) for the images in span order. DPO of
vision policies collates its rows with the same collator (`train.dpo`).

Training runs on TRL's SFTTrainer with `skip_prepare_dataset` and this collator: TRL's own
vision path re-renders conversations with the processor's chat template, which would bypass our
renderer and its masks, so the samples arrive finished and TRL only runs the loop and the loss.

What trains: the language model and the vision merger (projector); the vision encoder's patch
embedding and blocks stay fixed when it is pretrained, as AGUVIS (`train.py` with
`--freeze_visual_encoder True`), and train when it starts random (`freeze_vision: null`, the
default, reads `vision_init` from the model's trajkit card: trajkit's tiny VLM says `random`, and a
random encoder left frozen would give the policy no usable view of the screen); `freeze_vision:
true/false` decides outright (`resolve_freeze_vision`). With LoRA, adapters go on the language side
only, never on the vision tower; the merger is trained whole beside them (PEFT `modules_to_save`), and with
`freeze_vision: false` the whole tower is. `loss_mask: aguvis` trains whole assistant messages (role
header included) as AGUVIS labels them; `min_pixels` / `max_pixels` set the screenshot budget
(AGUVIS: `policy.vlm.AGUVIS_MIN_PIXELS` / `AGUVIS_MAX_PIXELS`). Not reproduced: AGUVIS's
`preprocess_qwen2vl` also labels every `<|im_start|>`, `<|im_end|>`, `<|recipient|>`,
`<|diff_marker|>` and lone-newline token of system and user turns (a pass over all ids after the
per-message labels); those are prompt tokens the policy never writes, so no mode trains them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trajkit.data.schema import Trajectory
from trajkit.gui.prompts import GUI_SYSTEM_PROMPT
from trajkit.gui.reasoning import ReasoningMixture
from trajkit.gui.samples import (
    GUI_STAGES,
    TURN_OVERHEAD,
    grounding_samples,
    load_gui_trajectories,
    planning_samples,
)
from trajkit.render import RenderError
from trajkit.train.common import (
    ThroughputCallback,
    last_good_checkpoint,
    load_renamed_checkpoint,
    save_trained_model,
    trainer_args,
    write_train_log,
)
from trajkit.train.hooks import attach as attach_hooks
from trajkit.train.settings import SFTRecipe

# ---------------------------------------------------------------------------------------------
# dataset and collator


def build_vlm_dataset(trajectories: Sequence[Trajectory], renderer: Any, max_length: int):
    """Rendered samples with their images, as a `datasets.Dataset`; over-long ones refused by name."""
    from datasets import Dataset

    rows: dict[str, list] = {"id": [], "input_ids": [], "assistant_masks": [], "image_paths": []}
    for traj in trajectories:
        out = renderer.render(traj)
        if len(out.input_ids) > max_length:
            raise RenderError(
                f"record {traj.id!r}: {len(out.input_ids)} tokens (images included) exceed "
                f"max_length={max_length}; raise max_length or shrink the image budget"
            )
        rows["id"].append(traj.id)
        rows["input_ids"].append(out.input_ids)
        rows["assistant_masks"].append(out.loss_mask)
        rows["image_paths"].append(list(out.images))
    return Dataset.from_dict(rows)


class VLMCollator:
    """Right-pads rendered rows and adds the vision inputs of their images, in span order.

    Labels are the ids where the loss mask is 1, else -100 (so image pads, prompts and padding
    never count). Each row's `<|image_pad|>` count is checked against its images' grids: an image
    that changed size since rendering is an error naming the record, not a shifted embedding.
    """

    def __init__(self, vision: Any, pad_id: int, image_token_id: int):
        self.vision = vision  # policy.vlm.VisionInputs
        self.pad_id = int(pad_id)
        self.image_token_id = int(image_token_id)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        n = len(rows)
        input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        labels = torch.full((n, width), -100, dtype=torch.long)
        for i, row in enumerate(rows):
            ids = torch.tensor(row["input_ids"], dtype=torch.long)
            mask = torch.tensor(row["assistant_masks"], dtype=torch.bool)
            input_ids[i, : len(ids)] = ids
            attention[i, : len(ids)] = 1
            labels[i, : len(ids)] = torch.where(mask, ids, torch.full_like(ids, -100))
        images = [p for row in rows for p in row.get("image_paths") or []]
        batch: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
        is_image = (input_ids == self.image_token_id) & (attention == 1)
        per_image: list[int] = []
        if images:
            try:
                vision = self.vision.batch(images)
            except OSError as err:
                ids = ", ".join(repr(r.get("id")) for r in rows)
                raise ValueError(f"records {ids}: cannot read an image: {err}") from None
            batch.update(vision)
            per_image = self.vision.tokens(vision["image_grid_thw"])
        k = 0
        for i, row in enumerate(rows):
            count = len(row.get("image_paths") or [])
            want = sum(per_image[k : k + count])
            k += count
            have = int(is_image[i].sum())
            if have != want:
                raise ValueError(
                    f"record {row.get('id')!r}: {have} image pad tokens but its {count} image(s) give "
                    f"{want} visual tokens (re-render after changing images or the image processor)"
                )
        batch["mm_token_type_ids"] = is_image.long()
        return batch


# ---------------------------------------------------------------------------------------------
# the recipe


def prepare_stage(recipe: Any, trajectories: list[Trajectory], renderer: Any) -> list[Trajectory]:
    """The samples of the recipe's `gui_stage` (none: the trajectories as they are)."""
    stage = recipe.gui_stage
    system = recipe.system_prompt if recipe.system_prompt is not None else GUI_SYSTEM_PROMPT
    if stage is None:
        return trajectories
    if stage == "grounding":
        return grounding_samples(
            trajectories,
            max_turns=recipe.pack_max_turns,
            max_tokens=recipe.max_length,
            # Text tokens plus a turn's role header and end markers, so packs fit max_length.
            count_tokens=lambda text: len(renderer.encode(text)) + TURN_OVERHEAD,
            image_tokens=renderer.image_tokens,
            system=system or None,
        )
    if stage == "planning":
        mixture = ReasoningMixture(recipe.reasoning_mixture) if recipe.reasoning_mixture else None
        unit = recipe.reasoning_unit
        return planning_samples(trajectories, mixture, recipe.seed, system or None, unit=unit)
    raise ValueError(f"unknown gui_stage {stage!r}; expected one of {', '.join(GUI_STAGES)}")


def vision_init(model: str) -> str | None:
    """The card's `vision_init` ("random" for trajkit's tiny VLM; None when the card has none)."""
    card = Path(model) / "trajkit_model.json"
    if not card.is_file():
        return None
    try:
        value = json.loads(card.read_text()).get("vision_init")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def resolve_freeze_vision(freeze_vision: bool | None, model: str) -> bool:
    """`freeze_vision` as set, or for None: freeze unless the model's encoder started random."""
    if freeze_vision is not None:
        return freeze_vision
    return vision_init(model) != "random"


def load_trainable_vlm(
    model: str,
    *,
    dtype: str,
    template: str | None,
    lora: Any,
    freeze: bool,
    train_merger: bool = True,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
):
    """(VLM, the model to train, parameters frozen). `freeze`: the vision encoder fixed, its merger
    trained unless `train_merger` is False (AGUVIS freezes the encoder and trains the merger). With
    a `LoraSpec`, adapters go on the language side only; what of the vision side trains (the merger,
    or the whole tower when not frozen) is trained whole as PEFT `modules_to_save`."""
    from trajkit.policy.vlm import freeze_vision, load_vlm, merger_name, vision_tower

    vlm = load_vlm(model, dtype=dtype, template=template, min_pixels=min_pixels, max_pixels=max_pixels)
    trained = vlm.model
    frozen = freeze_vision(trained, train_merger=train_merger) if freeze else 0
    if lora is not None:
        from peft import get_peft_model

        config = lora.to_peft()
        # "all-linear" would put adapters on the vision tower too: LoRA stays on the language side.
        config.exclude_modules = r".*\bvisual\b.*"
        tower = vision_tower(trained)
        if not freeze:
            whole = next(name for name, module in trained.named_modules() if module is tower)
            config.modules_to_save = [whole]
        elif train_merger:
            config.modules_to_save = [merger_name(trained)]
        trained = get_peft_model(trained, config)
    return vlm, trained, frozen


def vlm_collator(vlm: Any) -> VLMCollator:
    """The collator for a loaded `policy.vlm.VLM`."""
    from trajkit.policy.vlm import VisionInputs

    return VLMCollator(
        VisionInputs(vlm.image_processor), vlm.tokenizer.pad_token_id, vlm.model.config.image_token_id
    )


def run_vlm_sft(recipe: SFTRecipe, trajectories: list[Trajectory] | None = None) -> Path:
    """SFT of a vision-language model (see the module doc); saves `{output_dir}/model`."""
    from trl import SFTConfig, SFTTrainer

    if recipe.packing:
        raise ValueError("packing is not supported for vision-language SFT (each sample keeps its images)")
    out_dir = Path(recipe.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vlm, model, frozen = load_trainable_vlm(
        recipe.model,
        dtype=recipe.dtype,
        template=recipe.template,
        lora=recipe.lora,
        freeze=resolve_freeze_vision(recipe.freeze_vision, recipe.model),
        train_merger=recipe.train_merger,
        min_pixels=recipe.min_pixels,
        max_pixels=recipe.max_pixels,
    )
    renderer = vlm.renderer(mask=recipe.loss_mask)
    if trajectories is None:
        trajectories = load_gui_trajectories(recipe.data, recipe.data_format)
    if not trajectories:
        raise ValueError(f"no trajectories found in {recipe.data}")
    samples = prepare_stage(recipe, trajectories, renderer)
    dataset = build_vlm_dataset(samples, renderer, recipe.max_length)

    args = SFTConfig(
        **{
            **trainer_args(recipe, out_dir),
            # The collator needs the id and image columns that no model signature names.
            "remove_unused_columns": False,
            "dataset_kwargs": {"skip_prepare_dataset": True},
            **recipe.extra_args,
        },
        weight_decay=recipe.weight_decay,
        packing=False,
        padding_free=False,
        dataset_num_proc=None,
    )

    class VisionSFTTrainer(SFTTrainer):
        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            if not load_renamed_checkpoint(self, resume_from_checkpoint, model):
                super()._load_from_checkpoint(resume_from_checkpoint, model)

    throughput = ThroughputCallback()
    trainer = VisionSFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=vlm.tokenizer,
        data_collator=vlm_collator(vlm),
        callbacks=[throughput],
    )
    attach_hooks(trainer)  # a run's tracker and progress line
    last = last_good_checkpoint(args.output_dir) if recipe.resume else None
    trainer.train(resume_from_checkpoint=last)

    final = save_trained_model(trainer, vlm, vlm.template, recipe.model, out_dir)
    write_train_log(
        out_dir,
        trainer,
        throughput=throughput.history,
        samples=len(samples),
        gui_stage=recipe.gui_stage,
        vision_params_frozen=frozen,
        vision_init=vision_init(recipe.model),
        loss_mask=recipe.loss_mask,
    )
    return final
