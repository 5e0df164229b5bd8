"""Multi-turn DPO on TRL, counting the agent's own tokens only, for text and vision-language policies.

TRL's DPO treats every token after the shared prompt as completion, so observation turns and role
headers inside `chosen`/`rejected` would count in each side's log-prob (about half the tokens of a
multi-turn episode). Here each side is rendered by our renderer, its loss mask becomes TRL's
`completion_mask`, and the sequence log-prob is the sum over agent tokens only. This subclasses a
few TRL internals (`_prepare_dataset`, the collator, the signature columns): TRL is pinned in the
set-up and `tests/test_dpo.py` checks the spans and a hand-computed log-prob, so an upgrade that
changes them fails loudly.

Vision-language policies (GUI agents) take the same trainer. TRL's own vision path re-renders
conversations with the processor's chat template (bypassing our renderer and masks) and refuses
precomputed reference log-probs, so the pairs are rendered here instead and reach TRL as a plain
token dataset with image columns it does not recognise as "vision"; `VisionPreferenceCollator`
lays the rows out as TRL does (chosen rows, then rejected rows) through `train.vlm.VLMCollator`,
which adds `pixel_values`, `image_grid_thw` and `mm_token_type_ids`. TRL forwards every batch key
but the mask and reference log-probs to the model, so its loss, grad accumulation, scheduler, LoRA
and checkpoints apply unchanged. As in AGUVIS SFT, the vision encoder stays frozen and its merger
(projector) trains with the language model (`train.vlm.load_trainable_vlm`).

Reference log-probs are computed once per round, before training, by TRL's precompute pass (which
goes through our collator, so it is masked the same way) and cached next to the round's data; a
killed round resumes from its last complete checkpoint.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trajkit.data.schema import Turn
from trajkit.train.common import (
    ThroughputCallback,
    last_good_checkpoint,
    load_renamed_checkpoint,
    save_trained_model,
    trainer_args,
    write_train_log,
)
from trajkit.train.hooks import attach as attach_hooks
from trajkit.train.settings import DPORecipe, DPOSettings

__all__ = ["DPORecipe", "DPOSettings", "build_pair_dataset", "dpo_trainer", "load_pairs", "run_dpo"]

# Columns the trainer must keep although no model signature names them.
EXTRA_COLUMNS = ("chosen_mask", "rejected_mask", "chosen_images", "rejected_images", "pair_id")


def turns_from_dicts(items: list[dict[str, Any]]) -> list[Turn]:
    return [Turn.from_dict(t) for t in items]


def tokenize_pair(pair: dict[str, Any], renderer) -> dict[str, Any]:
    """One pair as `prompt_ids` + per-side ids and agent-token masks (the prompt is never trained)."""
    from trajkit.data.schema import Trajectory

    prompt = turns_from_dicts(pair["prompt"])
    sides = {
        side: renderer.render(
            Trajectory(f"{pair.get('task_id', '?')}:{side}", prompt + turns_from_dicts(pair[side]))
        )
        for side in ("chosen", "rejected")
    }
    prompt_ids = renderer.prompt_ids(prompt)
    if any(r.input_ids[: len(prompt_ids)] != prompt_ids for r in sides.values()):
        # A side that opens with a user turn, or an agent turn with another header (AGUVIS
        # recipients): the shared prompt is the opening turns without an assistant header.
        prompt_ids = renderer.prompt(prompt, assistant_header="").input_ids
    out: dict[str, Any] = {"prompt_ids": prompt_ids}
    for side in ("chosen", "rejected"):
        rendered = sides[side]
        if rendered.input_ids[: len(prompt_ids)] != prompt_ids:
            raise ValueError(f"pair {pair.get('task_id')!r}: {side} does not start with the shared prompt")
        mask = rendered.loss_mask[len(prompt_ids) :]
        if not any(mask):
            raise ValueError(f"pair {pair.get('task_id')!r}: {side} has no agent tokens to score")
        out[f"{side}_ids"] = rendered.input_ids[len(prompt_ids) :]
        out[f"{side}_mask"] = mask
    return out


def build_pair_dataset(pairs: list[dict[str, Any]], renderer, max_length: int):
    from datasets import Dataset

    rows = [tokenize_pair(p, renderer) for p in pairs]
    for pair, row in zip(pairs, rows, strict=True):
        longest = len(row["prompt_ids"]) + max(len(row["chosen_ids"]), len(row["rejected_ids"]))
        if longest > max_length:
            raise ValueError(
                f"pair {pair.get('task_id')!r}: {longest} tokens exceed max_length={max_length}; "
                "raise max_length (cutting would drop agent turns silently)"
            )
    return Dataset.from_list(rows)


def masked_trainer_classes():
    """The collator and trainer subclasses, built lazily so importing this module stays light."""
    import torch
    from trl import DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference
    from trl.trainer.utils import pad

    class MaskedPreferenceCollator(DataCollatorForPreference):
        """TRL's preference collator, with `completion_mask` = our agent-token masks."""

        def torch_call(self, examples):
            batch = super().torch_call(examples)
            masks = [[0] * len(e["prompt_ids"]) + list(e["chosen_mask"]) for e in examples]
            masks += [[0] * len(e["prompt_ids"]) + list(e["rejected_mask"]) for e in examples]
            if self.max_length is not None:
                masks = [m[: self.max_length] for m in masks]
            tensors = [torch.tensor(m, dtype=torch.long) for m in masks]
            padded = pad(
                tensors, padding_value=0, padding_side="right", pad_to_multiple_of=self.pad_to_multiple_of
            )
            width = batch["input_ids"].shape[1]
            batch["completion_mask"] = padded[:, :width]
            return batch

    class MaskedDPOTrainer(DPOTrainer):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if "prompt_ids" in dataset.column_names and "chosen_mask" in dataset.column_names:
                return dataset  # already rendered and masked by trajkit
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            for col in EXTRA_COLUMNS:
                if col not in self._signature_columns:
                    self._signature_columns.append(col)

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            if not load_renamed_checkpoint(self, resume_from_checkpoint, model):
                super()._load_from_checkpoint(resume_from_checkpoint, model)

    check_trl_layout(DataCollatorForPreference)
    return MaskedPreferenceCollator, MaskedDPOTrainer


class TRLLayoutError(RuntimeError):
    """TRL's preference batch is not laid out as the masked collator assumes."""


def check_trl_layout(collator_cls: Any) -> None:
    """Fail at start-up, not with silently wrong log-probs, if TRL's preference collator stops
    laying a batch out as this module assumes: chosen rows then rejected rows, each prompt +
    completion, right-padded, with a 0/1 `completion_mask` over the completion."""
    import trl

    batch = collator_cls(pad_token_id=0).torch_call(
        [{"prompt_ids": [5, 6], "chosen_ids": [7, 8, 9], "rejected_ids": [10]}]
    )
    expected = {
        "input_ids": [[5, 6, 7, 8, 9], [5, 6, 10, 0, 0]],
        "completion_mask": [[0, 0, 1, 1, 1], [0, 0, 1, 0, 0]],
    }
    got = {key: batch[key].tolist() if key in batch else None for key in expected}
    if got != expected:
        raise TRLLayoutError(
            f"TRL {trl.__version__}: its preference batch is {got}, expected {expected}; the masked "
            "DPO collator (trajkit.train.dpo) was written for the TRL in constraints.txt"
        )


def load_pairs(paths: list[str]) -> list[dict[str, Any]]:
    """The pairs of `.jsonl` files (as `trajkit pairs` writes them), each checked: `prompt`,
    `chosen` and `rejected` lists of turns, both sides non-empty. A problem is a `DataError`
    naming file, record and field."""
    from trajkit.data.formats import ReadOptions
    from trajkit.data.formats.trajkit import TrajkitFormat
    from trajkit.data.io import DataError, scan_records

    turns_format = TrajkitFormat()
    pairs: list[dict[str, Any]] = []
    for path in paths:
        for index, pair in scan_records(path):
            if isinstance(pair, DataError):
                raise pair
            if not isinstance(pair, dict):
                raise DataError("a pair must be an object", file=path, record=index, field="record")
            for key in ("prompt", "chosen", "rejected"):
                turns = pair.get(key)
                if not isinstance(turns, list) or (key != "prompt" and not turns):
                    what = "a list of turns" if key == "prompt" else "a non-empty list of turns"
                    raise DataError(f"expected {what}", file=path, record=index, field=key)
                issues = turns_format.check({"id": "pair", "turns": turns}, ReadOptions(), conventions=False)
                issues = [i for i in issues if i.field.startswith("turns[")]
                if issues:
                    field = key + issues[0].field[len("turns") :]
                    raise DataError(issues[0].message, file=path, record=index, field=field)
            pairs.append(pair)
    return pairs


# ---------------------------------------------------------------------------------------------
# vision-language policies (GUI agents)


def tokenize_vlm_pair(pair: dict[str, Any], renderer, max_length: int) -> list[dict[str, Any]]:
    """Both sides of a GUI pair as whole rendered rows (prompt included), for `VLMCollator`:
    ids, the agent-token mask (vision spans, observations and headers are 0) and the images in
    span order. Over-long sides are refused by name (a cut would drop agent turns silently)."""
    from trajkit.data.schema import Trajectory

    prompt = turns_from_dicts(pair["prompt"])
    rows = []
    for side in ("chosen", "rejected"):
        name = f"{pair.get('task_id', '?')}:{side}"
        rendered = renderer.render(Trajectory(name, prompt + turns_from_dicts(pair[side])))
        if len(rendered.input_ids) > max_length:
            raise ValueError(
                f"pair {pair.get('task_id')!r}: {side} has {len(rendered.input_ids)} tokens (images "
                f"included), over max_length={max_length}; raise max_length or cap the screenshots"
            )
        rows.append(
            {
                "id": name,
                "input_ids": rendered.input_ids,
                "assistant_masks": rendered.loss_mask,
                "image_paths": list(rendered.images),
            }
        )
    return rows


def vlm_pair_row(pair: dict[str, Any], renderer, max_length: int) -> dict[str, Any]:
    """One GUI pair in the layout of `tokenize_pair` (shared `prompt_ids`, per-side ids and agent
    masks) plus each side's images in span order, for `VisionPreferenceCollator`."""
    chosen, rejected = tokenize_vlm_pair(pair, renderer, max_length)
    ids_c, ids_r = chosen["input_ids"], rejected["input_ids"]
    mask_c, mask_r = chosen["assistant_masks"], rejected["assistant_masks"]
    n = 0
    while n < min(len(ids_c), len(ids_r)) and ids_c[n] == ids_r[n] and not mask_c[n] and not mask_r[n]:
        n += 1
    row: dict[str, Any] = {"pair_id": str(pair.get("task_id", "?")), "prompt_ids": ids_c[:n]}
    for side, rendered in (("chosen", chosen), ("rejected", rejected)):
        if not any(rendered["assistant_masks"]):
            raise ValueError(f"pair {pair.get('task_id')!r}: {side} has no agent tokens to score")
        row[f"{side}_ids"] = rendered["input_ids"][n:]
        row[f"{side}_mask"] = rendered["assistant_masks"][n:]
        row[f"{side}_images"] = rendered["image_paths"]
    return row


def build_vlm_pair_dataset(pairs: list[dict[str, Any]], renderer, max_length: int):
    from datasets import Dataset

    return Dataset.from_list([vlm_pair_row(p, renderer, max_length) for p in pairs])


class VisionPreferenceCollator:
    """Rows of `build_vlm_pair_dataset` as TRL's preference batch: chosen rows then rejected rows,
    `completion_mask` = the agent tokens, and the vision inputs of both sides' images in that
    order (so image features line up with the `<|image_pad|>` runs of the stacked rows)."""

    def __init__(self, collator: Any):
        self.collator = collator  # train.vlm.VLMCollator

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        rows = [
            {
                "id": f"{e['pair_id']}:{side}",
                "input_ids": list(e["prompt_ids"]) + list(e[f"{side}_ids"]),
                "assistant_masks": [0] * len(e["prompt_ids"]) + list(e[f"{side}_mask"]),
                "image_paths": list(e[f"{side}_images"]),
            }
            for side in ("chosen", "rejected")
            for e in examples
        ]
        batch = self.collator(rows)
        batch["completion_mask"] = (batch.pop("labels") != -100).long()
        for key in ("ref_chosen_logps", "ref_rejected_logps"):
            if key in examples[0]:
                batch[key] = torch.tensor([e[key] for e in examples])
        return batch


def _saved_dataset(out_dir: Path, build: Callable[[], Any]):
    """The round's pair dataset, built once and kept on disk: TRL's reference log-prob pass caches
    its result beside it (keyed by the dataset and the reference), so a resumed round reuses it."""
    from datasets import load_from_disk

    data_dir = out_dir / "pairs_dataset"
    if not (data_dir / "dataset_info.json").is_file():
        tmp = out_dir / ".pairs_dataset.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        build().save_to_disk(str(tmp))
        os.replace(tmp, data_dir)
    return load_from_disk(str(data_dir))


def dpo_trainer(recipe: DPORecipe, pairs: list[dict[str, Any]] | None = None):
    """(trainer, what to save beside the weights, template): the masked DPO trainer of the recipe,
    reference log-probs already computed. Text policies and Qwen2-VL-family policies alike."""
    from trl import DPOConfig

    from trajkit.policy.models import ModelSpec, load_policy
    from trajkit.policy.vlm import is_vision_model
    from trajkit.render import Renderer

    vision = is_vision_model(recipe.model)
    out_dir = Path(recipe.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    loss_types = [recipe.loss_type] + (["sft"] if recipe.nll_weight > 0 else [])
    loss_weights = [1.0] + ([recipe.nll_weight] if recipe.nll_weight > 0 else [])
    # Made first: in several processes (train.launch) the arguments set up the process group, and
    # DeepSpeed ZeRO-3 then shards the weights as they load.
    args = DPOConfig(
        **trainer_args(recipe, out_dir),
        beta=recipe.beta,
        loss_type=loss_types,
        loss_weights=loss_weights,
        precompute_ref_log_probs=True,
    )
    if vision:
        from trajkit.policy.vlm import load_vlm
        from trajkit.train.vlm import load_trainable_vlm, vlm_collator

        vlm, model, _ = load_trainable_vlm(
            recipe.model, dtype=recipe.dtype, template=recipe.template, lora=recipe.lora, freeze=True
        )
        tokenizer, template, saver = vlm.tokenizer, vlm.template, vlm
    else:
        model, tokenizer, template = load_policy(
            ModelSpec(recipe.model, recipe.template, recipe.dtype, recipe.lora)
        )
        saver = tokenizer
    pairs = load_pairs(recipe.pairs) if pairs is None else pairs
    if not pairs:
        raise ValueError(f"no pairs to train on in {recipe.pairs}")

    ref_model = None
    if vision:
        with args.main_process_first(desc="pair dataset"):  # one process writes it, the others read it
            dataset = _saved_dataset(
                out_dir, lambda: build_vlm_pair_dataset(pairs, vlm.renderer(), recipe.max_length)
            )
        if recipe.ref_model and recipe.ref_model != recipe.model:
            ref_model = load_vlm(recipe.ref_model, dtype=recipe.dtype, template=template).model
        # Otherwise TRL scores the reference with the starting policy itself (LoRA: adapters off)
        # in its precompute pass, before any step; no second copy is held.
        collator = VisionPreferenceCollator(vlm_collator(vlm))
    else:
        with args.main_process_first(desc="pair dataset"):
            dataset = _saved_dataset(
                out_dir, lambda: build_pair_dataset(pairs, Renderer(tokenizer, template), recipe.max_length)
            )
        if recipe.ref_model and recipe.ref_model != recipe.model:
            ref_model, _, _ = load_policy(
                ModelSpec(recipe.ref_model, template, recipe.dtype), trainable=False
            )
        elif recipe.lora is None:
            # A frozen copy of the start policy as the reference (kept so text runs stay as they were).
            ref_model, _, _ = load_policy(ModelSpec(recipe.model, template, recipe.dtype), trainable=False)

    collator_cls, trainer_cls = masked_trainer_classes()
    if not vision:
        collator = collator_cls(pad_token_id=tokenizer.pad_token_id, max_length=recipe.max_length)
    trainer = trainer_cls(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        data_collator=collator,
        callbacks=[ThroughputCallback()],
    )
    attach_hooks(trainer)  # a run's tracker and progress line
    return trainer, saver, template


def run_dpo(recipe: DPORecipe, pairs: list[dict[str, Any]] | None = None) -> Path:
    """Train on the pairs and save the new policy to `{output_dir}/model`; returns that folder.

    Resumes from the last complete checkpoint of `output_dir` when `recipe.resume` is on."""
    trainer, saver, template = dpo_trainer(recipe, pairs)
    last = last_good_checkpoint(trainer.args.output_dir) if recipe.resume else None
    trainer.train(resume_from_checkpoint=last)

    out_dir = Path(recipe.output_dir)
    final = save_trained_model(trainer, saver, template, recipe.model, out_dir)
    write_train_log(out_dir, trainer, pairs=len(trainer.train_dataset))
    return final
