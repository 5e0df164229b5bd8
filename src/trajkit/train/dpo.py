"""Multi-turn DPO on TRL, counting the agent's own tokens only.

TRL's DPO treats every token after the shared prompt as completion, so observation turns and role
headers inside `chosen`/`rejected` would count in each side's log-prob (about half the tokens of a
multi-turn episode). Here each side is rendered by our renderer, its loss mask becomes TRL's
`completion_mask`, and the sequence log-prob is the sum over agent tokens only. This subclasses a
few TRL internals (`_prepare_dataset`, the collator, the signature columns): TRL is pinned in the
set-up and `tests/test_dpo.py` checks the spans and a hand-computed log-prob, so an upgrade that
changes them fails loudly.

Reference log-probs are computed once per round, before training, by TRL's precompute pass (which
goes through our collator, so it is masked the same way) and cached next to the round's data.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trajkit.data.schema import Turn
from trajkit.policy.models import LoraSpec


@dataclass
class DPORecipe:
    """Everything `trajkit dpo` needs. Every key can be set in YAML or with `--set key=value`."""

    model: str  # the policy at the start of the round
    pairs: list[str]  # pair files written by `trajkit pairs`
    output_dir: str
    ref_model: str | None = None  # None: the starting policy itself (ETO); or e.g. the SFT model
    template: str | None = None
    beta: float = 0.1
    loss_type: str = "sigmoid"
    nll_weight: float = 0.0  # > 0 adds an NLL term on the chosen side's agent tokens
    epochs: float = 3.0
    max_steps: int = -1
    learning_rate: float = 1e-6
    lr_scheduler: str = "cosine"
    warmup: float = 0.1
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 4096
    lora: LoraSpec | None = None
    logging_steps: int = 10
    save_steps: int = 200
    save_total_limit: int = 1
    seed: int = 0
    dtype: str = "auto"
    resume: bool = True
    extra_args: dict[str, Any] = field(default_factory=dict)


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
            for col in ("chosen_mask", "rejected_mask"):
                if col not in self._signature_columns:
                    self._signature_columns.append(col)

    return MaskedPreferenceCollator, MaskedDPOTrainer


def load_pairs(paths: list[str]) -> list[dict[str, Any]]:
    pairs: list[dict[str, Any]] = []
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    pair = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{lineno}: not JSON ({err.msg}, column {err.colno})") from None
                for key in ("prompt", "chosen", "rejected"):
                    if not isinstance(pair.get(key), list):
                        raise ValueError(f"{path}:{lineno}:{key}: expected a list of turns")
                pairs.append(pair)
    return pairs


def run_dpo(recipe: DPORecipe, pairs: list[dict[str, Any]] | None = None) -> Path:
    """Train on the pairs and save the new policy to `{output_dir}/model`; returns that folder."""
    from datasets import load_from_disk
    from trl import DPOConfig

    from trajkit.policy.models import ModelSpec, load_policy
    from trajkit.policy.vlm import is_vision_model
    from trajkit.render import Renderer
    from trajkit.train.sft import (
        ThroughputCallback,
        last_good_checkpoint,
        save_trained_model,
        trainer_args,
    )

    if is_vision_model(recipe.model):
        return run_vlm_dpo(recipe, pairs)
    out_dir = Path(recipe.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, tokenizer, template = load_policy(
        ModelSpec(recipe.model, recipe.template, recipe.dtype, recipe.lora)
    )
    pairs = load_pairs(recipe.pairs) if pairs is None else pairs
    if not pairs:
        raise ValueError(f"no pairs to train on in {recipe.pairs}")

    # Saved to disk so TRL's reference log-prob pass caches its result beside it (once per round).
    data_dir = out_dir / "pairs_dataset"
    if not (data_dir / "dataset_info.json").is_file():
        dataset = build_pair_dataset(pairs, Renderer(tokenizer, template), recipe.max_length)
        tmp = out_dir / ".pairs_dataset.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        dataset.save_to_disk(str(tmp))
        os.replace(tmp, data_dir)
    dataset = load_from_disk(str(data_dir))

    ref_model = None
    if recipe.ref_model and recipe.ref_model != recipe.model:
        ref_model, _, _ = load_policy(ModelSpec(recipe.ref_model, template, recipe.dtype), trainable=False)
    elif recipe.lora is None:
        # TRL cannot rebuild a reference from a model object; give it a frozen copy of the start policy.
        ref_model, _, _ = load_policy(ModelSpec(recipe.model, template, recipe.dtype), trainable=False)

    loss_types = [recipe.loss_type] + (["sft"] if recipe.nll_weight > 0 else [])
    loss_weights = [1.0] + ([recipe.nll_weight] if recipe.nll_weight > 0 else [])
    args = DPOConfig(
        **trainer_args(recipe, out_dir),
        beta=recipe.beta,
        loss_type=loss_types,
        loss_weights=loss_weights,
        precompute_ref_log_probs=True,
    )
    collator_cls, trainer_cls = masked_trainer_classes()
    trainer = trainer_cls(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        data_collator=collator_cls(pad_token_id=tokenizer.pad_token_id, max_length=recipe.max_length),
        callbacks=[ThroughputCallback()],
    )
    last = last_good_checkpoint(args.output_dir) if recipe.resume else None
    trainer.train(resume_from_checkpoint=last)

    final = save_trained_model(trainer, tokenizer, template, recipe.model, out_dir)
    (out_dir / "train_log.json").write_text(
        json.dumps({"log_history": trainer.state.log_history}, indent=2) + "\n"
    )
    return final


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


def sequence_logps(model, batch: dict[str, Any]):
    """Sum of log-probs of the labelled (agent) tokens of each row."""
    import torch

    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, use_cache=False).logits[:, :-1, :].float()
    target = labels[:, 1:]
    keep = target != -100
    logp = torch.log_softmax(logits, dim=-1)
    picked = torch.gather(logp, 2, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * keep).sum(-1), keep.sum(-1)


def run_vlm_dpo(recipe: DPORecipe, pairs: list[dict[str, Any]] | None = None) -> Path:
    """Masked DPO of a Qwen2-VL-family policy; saves `{output_dir}/model`.

    A small torch loop rather than TRL's trainer: TRL's vision path re-renders conversations with
    the processor's chat template, which would bypass our renderer and its masks. Each pair is two
    rows (chosen, rejected) of `VLMCollator` batches, so pixel values and grids come for both
    sides; the sequence log-prob sums agent tokens only. The reference (the starting policy, or
    `ref_model`) is scored once before training. The vision tower stays frozen, as in AGUVIS SFT.
    Resuming is per stage (a killed round retrains from its start).
    """
    import math
    import random

    import torch

    from trajkit.policy.vlm import VisionInputs, freeze_vision, load_vlm
    from trajkit.train.vlm import VLMCollator

    if recipe.lora is not None:
        raise ValueError("LoRA is not supported for vision-language DPO yet; train the full model")
    out_dir = Path(recipe.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = load_pairs(recipe.pairs) if pairs is None else pairs
    if not pairs:
        raise ValueError(f"no pairs to train on in {recipe.pairs}")
    torch.manual_seed(recipe.seed)
    vlm = load_vlm(recipe.model, dtype=recipe.dtype, template=recipe.template)
    renderer = vlm.renderer()
    rows = [tokenize_vlm_pair(p, renderer, recipe.max_length) for p in pairs]
    collate = VLMCollator(
        VisionInputs(vlm.image_processor), vlm.tokenizer.pad_token_id, vlm.model.config.image_token_id
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"

    def batches(order: list[int]):
        for i in range(0, len(order), recipe.batch_size):
            idx = order[i : i + recipe.batch_size]
            batch = collate([rows[j][0] for j in idx] + [rows[j][1] for j in idx])
            yield idx, {k: v.to(device) for k, v in batch.items()}

    # Reference log-probs, once per round.
    ref = vlm.model if not recipe.ref_model or recipe.ref_model == recipe.model else None
    if ref is None:
        ref = load_vlm(recipe.ref_model, dtype=recipe.dtype, template=recipe.template).model
    ref.to(device).eval()
    ref_logps = torch.zeros(len(rows), 2)
    with torch.no_grad():
        for idx, batch in batches(list(range(len(rows)))):
            lp, _ = sequence_logps(ref, batch)
            n = len(idx)
            ref_logps[idx, 0], ref_logps[idx, 1] = lp[:n].cpu(), lp[n:].cpu()
    if ref is not vlm.model:
        del ref

    model = vlm.model.to(device)
    freeze_vision(model)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=recipe.learning_rate, weight_decay=0.0)
    per_epoch = math.ceil(len(rows) / recipe.batch_size)
    total = recipe.max_steps if recipe.max_steps > 0 else max(1, math.ceil(per_epoch * recipe.epochs))
    warm = int(recipe.warmup * total) if recipe.warmup < 1 else int(recipe.warmup)

    def lr_at(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        if recipe.lr_scheduler == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    rng = random.Random(recipe.seed)
    log: list[dict[str, Any]] = []
    step = 0
    while step < total:
        order = list(range(len(rows)))
        rng.shuffle(order)
        for idx, batch in batches(order):
            if step >= total:
                break
            for group in optimizer.param_groups:
                group["lr"] = recipe.learning_rate * lr_at(step)
            lp, ntok = sequence_logps(model, batch)
            n = len(idx)
            ref_c, ref_r = ref_logps[idx, 0].to(device), ref_logps[idx, 1].to(device)
            margin = (lp[:n] - ref_c) - (lp[n:] - ref_r)
            if recipe.loss_type == "ipo":
                losses = (margin - 1 / (2 * recipe.beta)) ** 2
            elif recipe.loss_type == "sigmoid":
                losses = -torch.nn.functional.logsigmoid(recipe.beta * margin)
            else:
                raise ValueError(
                    f"vision-language DPO supports loss_type sigmoid or ipo, not {recipe.loss_type!r}"
                )
            loss = losses.mean()
            if recipe.nll_weight > 0:
                loss = loss + recipe.nll_weight * (-(lp[:n] / ntok[:n].clamp(min=1))).mean()
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            step += 1
            log.append(
                {
                    "step": step,
                    "loss": float(loss.detach()),
                    "rewards/margins": float(recipe.beta * margin.detach().mean()),
                    "rewards/accuracies": float((margin.detach() > 0).float().mean()),
                    "learning_rate": optimizer.param_groups[0]["lr"],
                }
            )

    final = out_dir / "model"
    tmp = out_dir / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    vlm.save_pretrained(tmp)
    card = Path(recipe.model) / "trajkit_model.json"
    meta = json.loads(card.read_text()) if card.is_file() else {}
    meta["template"] = vlm.template
    (tmp / "trajkit_model.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    (out_dir / "train_log.json").write_text(
        json.dumps({"log_history": log, "pairs": len(rows)}, indent=2) + "\n"
    )
    return final
