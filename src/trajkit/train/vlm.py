"""Vision-language SFT, AGUVIS style: stage 1 grounding, stage 2 planning, and their collator.

Stage 1 (`gui_stage: grounding`) turns every `os` step of the data into a grounding pair
(screenshot, low-level instruction -> code) and packs the pairs that share a screenshot into
multi-turn samples (`gui.packing`), the image shown once per sample. Stage 2
(`gui_stage: planning`) keeps whole trajectories, every screenshot in place, and rewrites each
inner monologue at the reasoning level a `ReasoningMixture` picks per trajectory (`gui.reasoning`).

Samples are rendered by `render.Renderer` with the model's `image_tokens`, so ids and loss mask
come from the one renderer; `VLMCollator` pads them and adds `pixel_values`, `image_grid_thw` and
`mm_token_type_ids` (what Qwen2-VL's 3-D positions need) for the images in span order.

Training runs on TRL's SFTTrainer with `skip_prepare_dataset` and this collator: TRL's own
vision path re-renders conversations with the processor's chat template, which would bypass our
renderer and its masks, so the samples arrive finished and TRL only runs the loop and the loss.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from trajkit.data.schema import AGENT, SYSTEM, Trajectory, Turn
from trajkit.gui.packing import GroundingPair, pack_grounding
from trajkit.gui.prompts import GUI_SYSTEM_PROMPT, with_default_system
from trajkit.gui.reasoning import (
    LEVELS,
    RECIPIENT_ALL,
    RECIPIENT_OS,
    ReasoningMixture,
    monologue,
    step_from_turns,
)
from trajkit.render import IMAGE_PLACEHOLDER, RenderError

GUI_STAGES = ("grounding", "planning")
TURN_OVERHEAD = 8  # tokens of a ChatML turn beyond its text, an upper bound


def _images(turn: Turn) -> list[str]:
    return [turn.image] if isinstance(turn.image, str) else list(turn.image or [])


# ---------------------------------------------------------------------------------------------
# stage 1: grounding pairs, packed per screenshot


def grounding_pairs(trajectory: Trajectory) -> list[tuple[str, GroundingPair]]:
    """(screenshot, pair) for every `os` step: the instruction is the step's `Action:` line when
    it has a monologue, else the user text before it (a grounding record's own instruction)."""
    out: list[tuple[str, GroundingPair]] = []
    image: str | None = None
    prompt = ""
    pending: str | None = None
    for i, turn in enumerate(trajectory.turns):
        where = f"record {trajectory.id!r} turn {i}"
        if turn.role == SYSTEM:
            continue
        if turn.role != AGENT:
            shots = _images(turn)
            image = shots[-1] if shots else image
            prompt = turn.text.replace(IMAGE_PLACEHOLDER, "").strip()
            pending = None
            continue
        if turn.recipient == RECIPIENT_ALL:
            pending = turn.text
            continue
        if turn.recipient != RECIPIENT_OS:
            raise ValueError(
                f"{where}: grounding needs AGUVIS agent turns to 'all'/'os', got {turn.recipient!r}"
            )
        if image is None:
            raise ValueError(f"{where}: an 'os' step with no screenshot before it")
        try:
            step = step_from_turns(pending, turn.text) if pending else None
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        instruction = step.instruction if step is not None and step.instruction else prompt
        if not instruction:
            raise ValueError(f"{where}: no instruction for this step (no 'Action:' line, no user text)")
        out.append((image, GroundingPair(instruction, turn.text)))
        pending = None
    return out


def grounding_samples(
    trajectories: Iterable[Trajectory],
    *,
    max_turns: int = 16,
    max_tokens: int | None = None,
    count_tokens: Callable[[str], int] | None = None,
    image_tokens: Callable[[str], int] | None = None,
    system: str | None = GUI_SYSTEM_PROMPT,
) -> list[Trajectory]:
    """Stage-1 samples: grounding pairs grouped by screenshot (first seen first), then packed."""
    groups: dict[str, list[GroundingPair]] = {}
    for traj in trajectories:
        for image, pair in grounding_pairs(traj):
            groups.setdefault(image, []).append(pair)
    options: dict[str, Any] = {"max_turns": max_turns, "max_tokens": max_tokens, "system": system}
    if count_tokens is not None:
        options["count_tokens"] = count_tokens
    out: list[Trajectory] = []
    for n, (image, pairs) in enumerate(groups.items()):
        cost = image_tokens(image) if image_tokens is not None else 0
        for sample in pack_grounding(image, pairs, image_tokens=cost, id_prefix=f"ground-{n}", **options):
            sample.metadata["image"] = image
            out.append(sample)
    return out


# ---------------------------------------------------------------------------------------------
# stage 2: planning with a reasoning mixture


def _steps(trajectory: Trajectory) -> list[tuple[int | None, int]]:
    """(index of the `all` turn or None, index of the `os` turn) of every step."""
    steps: list[tuple[int | None, int]] = []
    pending: int | None = None
    for i, turn in enumerate(trajectory.turns):
        if turn.role != AGENT:
            pending = None
        elif turn.recipient == RECIPIENT_ALL:
            pending = i
        elif turn.recipient == RECIPIENT_OS:
            steps.append((pending, i))
            pending = None
    return steps


def available_levels(trajectory: Trajectory) -> tuple[str, ...]:
    """The reasoning levels every step of the trajectory can be written at."""
    levels = set(LEVELS)
    for mono, code in _steps(trajectory):
        text = trajectory.turns[mono].text if mono is not None else None
        try:
            step = step_from_turns(text, trajectory.turns[code].text)
        except ValueError as err:
            raise ValueError(f"record {trajectory.id!r} turn {mono}: {err}") from None
        levels &= set(step.available_levels())
    return tuple(lvl for lvl in LEVELS if lvl in levels)


def with_reasoning_level(trajectory: Trajectory, level: str) -> Trajectory:
    """The trajectory with each step's monologue written at `level`; every other turn (images,
    code turns and their sampled ids) is kept as it is."""
    steps = _steps(trajectory)
    if not steps:
        raise ValueError(f"record {trajectory.id!r}: no 'os' steps to write reasoning for")
    replace: dict[int, Turn | None] = {}
    insert: dict[int, Turn] = {}
    for mono, code in steps:
        text = trajectory.turns[mono].text if mono is not None else None
        step = step_from_turns(text, trajectory.turns[code].text)
        written = monologue(step, level)
        turn = None if written is None else Turn(AGENT, written, recipient=RECIPIENT_ALL, end_turn=False)
        if mono is not None:
            replace[mono] = turn
        elif turn is not None:
            insert[code] = turn
    turns: list[Turn] = []
    for i, turn in enumerate(trajectory.turns):
        if i in insert:
            turns.append(insert[i])
        if i in replace:
            if replace[i] is not None:
                turns.append(replace[i])  # type: ignore[arg-type]
            continue
        turns.append(turn)
    metadata = {**trajectory.metadata, "reasoning_level": level}
    return dataclasses.replace(trajectory, turns=turns, metadata=metadata)


def planning_samples(
    trajectories: Iterable[Trajectory],
    mixture: ReasoningMixture | None,
    seed: int | str = 0,
    system: str | None = GUI_SYSTEM_PROMPT,
) -> list[Trajectory]:
    """Stage-2 samples: each trajectory at the level the mixture picks for (seed, id), or as it is
    when there is no mixture; `system` is added where a trajectory has no system turn."""
    out = []
    for traj in trajectories:
        if mixture is not None:
            level = mixture.choose(seed, traj.id, available_levels(traj))
            traj = with_reasoning_level(traj, level)
        out.append(with_default_system(traj, system) if system else traj)
    return out


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


def _resolve_images(trajectories: list[Trajectory], source: str) -> list[Trajectory]:
    """Relative image paths are read against the data file's folder when the file is there."""
    folder = Path(source).parent if Path(source).is_file() else Path(source)
    for traj in trajectories:
        for turn in traj.turns:
            shots = _images(turn)
            if not shots:
                continue
            fixed = [
                str(folder / p) if not Path(p).is_absolute() and (folder / p).is_file() else p for p in shots
            ]
            turn.image = fixed[0] if isinstance(turn.image, str) else fixed
    return trajectories


def load_gui_trajectories(sources: Sequence[str], data_format: str = "auto") -> list[Trajectory]:
    from trajkit.data.io import load_trajectories

    out: list[Trajectory] = []
    for src in sources:
        out.extend(_resolve_images(load_trajectories(src, format=data_format), src))
    return out


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
        return planning_samples(trajectories, mixture, recipe.seed, system or None)
    raise ValueError(f"unknown gui_stage {stage!r}; expected one of {', '.join(GUI_STAGES)}")


def run_vlm_sft(recipe: Any, trajectories: list[Trajectory] | None = None) -> Path:
    """SFT of a vision-language model (see the module doc); saves `{output_dir}/model`."""
    from trl import SFTConfig, SFTTrainer

    from trajkit.policy.vlm import VisionInputs, freeze_vision, load_vlm
    from trajkit.train.sft import ThroughputCallback, last_good_checkpoint, save_trained_model, trainer_args

    if recipe.packing:
        raise ValueError("packing is not supported for vision-language SFT (each sample keeps its images)")
    out_dir = Path(recipe.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vlm = load_vlm(recipe.model, dtype=recipe.dtype, template=recipe.template)
    model = vlm.model
    frozen = freeze_vision(model) if recipe.freeze_vision else 0
    if recipe.lora is not None:
        from peft import get_peft_model

        config = recipe.lora.to_peft()
        if recipe.freeze_vision:
            # "all-linear" would put adapters on the vision tower too; frozen means untouched.
            config.exclude_modules = r".*\bvisual\b.*"
        model = get_peft_model(model, config)
    renderer = vlm.renderer()
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
    collator = VLMCollator(
        VisionInputs(vlm.image_processor), vlm.tokenizer.pad_token_id, model.config.image_token_id
    )
    throughput = ThroughputCallback()
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=vlm.tokenizer,
        data_collator=collator,
        callbacks=[throughput],
    )
    last = last_good_checkpoint(args.output_dir) if recipe.resume else None
    trainer.train(resume_from_checkpoint=last)

    final = save_trained_model(trainer, vlm, vlm.template, recipe.model, out_dir)
    log = {
        "log_history": trainer.state.log_history,
        "throughput": throughput.history,
        "samples": len(samples),
        "gui_stage": recipe.gui_stage,
        "vision_params_frozen": frozen,
    }
    (out_dir / "train_log.json").write_text(json.dumps(log, indent=2) + "\n")
    return final
