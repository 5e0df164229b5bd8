"""Typed training settings, and the SFT / DPO recipes built on them.

`SFTSettings` / `DPOSettings` hold how to train (every key a YAML recipe or `--set key=value`
can give), so a run recipe can embed them as typed sections; `SFTRecipe` / `DPORecipe` add what
to train (model, data, output folder). Values that are clearly wrong are refused when the settings
are made, naming the field, instead of deep inside a trainer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from trajkit.gui.samples import GUI_STAGES, REASONING_UNITS
from trajkit.policy.models import LoraSpec
from trajkit.render import MASK_MODES

# transformers' `SchedulerType` values (a test keeps the two equal).
LR_SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "cosine_warmup_with_min_lr",
    "warmup_stable_decay",
    "greedy",
)
# The losses of TRL's DPOTrainer that the masked DPO runs (a test checks TRL still has each).
DPO_LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sigmoid_norm",
)


def _check(ok: bool, name: str, rule: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"{name}: must be {rule}, got {value!r}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_common(s: Any) -> None:
    """Checks of the fields SFT and DPO share."""
    _check(_number(s.learning_rate) and s.learning_rate >= 0, "learning_rate", ">= 0", s.learning_rate)
    _check(_number(s.epochs) and s.epochs >= 0, "epochs", ">= 0", s.epochs)
    _check(s.epochs > 0 or s.max_steps > 0, "epochs", "> 0 unless max_steps > 0", s.epochs)
    _check(_number(s.warmup) and s.warmup >= 0, "warmup", ">= 0 (a fraction below 1, else steps)", s.warmup)
    _check(
        s.lr_scheduler in LR_SCHEDULERS, "lr_scheduler", f"one of {', '.join(LR_SCHEDULERS)}", s.lr_scheduler
    )
    for name in ("batch_size", "grad_accum", "max_length", "logging_steps", "save_steps"):
        value = getattr(s, name)
        _check(isinstance(value, int) and value >= 1, name, "an integer >= 1", value)
    _check(s.save_total_limit >= 1, "save_total_limit", ">= 1", s.save_total_limit)


@dataclass(kw_only=True)
class SFTSettings:
    """How to run supervised fine-tuning (`trajkit sft`, the run recipe's SFT stages)."""

    # Prompt template; None: the one the model folder's trajkit card names, else inferred.
    template: str | None = None
    # Format of the data files (see `trajkit.data.io`); "auto" detects it.
    data_format: str = "auto"
    # Passes over the data; ignored when `max_steps` > 0.
    epochs: float = 3.0
    # Optimizer steps to run; > 0 overrides `epochs`, -1 trains for `epochs`.
    max_steps: int = -1
    # Peak learning rate.
    learning_rate: float = 2e-5
    # Learning-rate schedule after warm-up, by transformers' name (linear, cosine, constant, ...).
    lr_scheduler: str = "cosine"
    # Warm-up: below 1 a fraction of the steps, from 1 on a number of steps.
    warmup: float = 0.03
    # AdamW weight decay.
    weight_decay: float = 0.0
    # Samples per device per forward pass.
    batch_size: int = 8
    # Forward passes per optimizer step (global batch = batch_size x grad_accum x devices).
    grad_accum: int = 1
    # Longest sample in tokens (images included); longer samples are refused by name, never cut.
    max_length: int = 2048
    # Pack samples into rows of max_length (padding-free, each sample keeps its mask); text models only.
    packing: bool = False
    # Train a LoRA adapter (merged into the saved model) instead of every weight; None: full training.
    lora: LoraSpec | None = None
    # Log the loss every this many steps.
    logging_steps: int = 10
    # Write a checkpoint every this many steps (resuming starts from the newest complete one).
    save_steps: int = 200
    # Most checkpoints kept on disk.
    save_total_limit: int = 2
    # Seed of the data order, dropout and adapter initialization.
    seed: int = 0
    # Weight dtype: auto (the checkpoint's), float32, bfloat16 or float16.
    dtype: str = "auto"
    # Continue from the last complete checkpoint in output_dir.
    resume: bool = True
    # Further SFTConfig / TrainingArguments keys, passed as they are (they win over the above).
    extra_args: dict[str, Any] = field(default_factory=dict)
    # Which tokens of an agent turn are trained: agent (its text and end marker) or aguvis (the
    # whole assistant message, `<|im_start|>assistant<|recipient|>` header included, as AGUVIS
    # labels it; chatml / qwen2 templates only).
    loss_mask: str = "agent"
    # Vision-language models (Qwen2-VL family, see trajkit.train.vlm), chosen by the model's config.
    # Keep the vision encoder (patch embedding, blocks) fixed, as AGUVIS does (--freeze_visual_encoder)
    # with its pretrained encoder. None: freeze it when it is pretrained, train it when it starts
    # random (the model card says `vision_init: random`, as trajkit's tiny VLM does): a random
    # encoder left frozen gives every screenshot the same useless features.
    freeze_vision: bool | None = None
    # With freeze_vision: still train the vision merger (projector), as AGUVIS does; false freezes it too.
    train_merger: bool = True
    # Screenshot budget of the image processor in pixels (28x28 = one visual token); None keeps the
    # checkpoint's. AGUVIS: min_pixels 200704 (256 cells), max_pixels 937664 (46x26 cells, "720p").
    min_pixels: int | None = None
    max_pixels: int | None = None
    # AGUVIS stage: grounding (stage 1), planning (stage 2), or None: the data as it is.
    gui_stage: str | None = None
    # Planning: reasoning level -> weight, e.g. {l1: 1, l3: 1}; None keeps each monologue as written.
    reasoning_mixture: dict[str, float] | None = None
    # Planning: trajectory (one sample per trajectory, at one level the mixture draws) or step (as
    # AGUVIS: one single-screenshot sample per step and per level, the weights being whole copies,
    # e.g. {l1: 1, l2: 1}; the prompt is AGUVIS's, with the earlier steps as "Previous actions", so
    # sample such a model with `AguvisAgent(prompt_style="aguvis")`).
    reasoning_unit: str = "trajectory"
    # Grounding: most instruction/code pairs packed into one sample per screenshot.
    pack_max_turns: int = 16
    # GUI stages: system turn added where a sample has none ("" for none; None: the GUI default).
    system_prompt: str | None = None

    def __post_init__(self) -> None:
        _check_common(self)
        _check(
            _number(self.weight_decay) and self.weight_decay >= 0, "weight_decay", ">= 0", self.weight_decay
        )
        stages = f"one of {', '.join(GUI_STAGES)} or null"
        _check(self.gui_stage is None or self.gui_stage in GUI_STAGES, "gui_stage", stages, self.gui_stage)
        _check(self.pack_max_turns >= 1, "pack_max_turns", ">= 1", self.pack_max_turns)
        frozen = self.freeze_vision
        _check(frozen is None or isinstance(frozen, bool), "freeze_vision", "true, false or null", frozen)
        _check(self.loss_mask in MASK_MODES, "loss_mask", f"one of {', '.join(MASK_MODES)}", self.loss_mask)
        units = f"one of {', '.join(REASONING_UNITS)}"
        _check(self.reasoning_unit in REASONING_UNITS, "reasoning_unit", units, self.reasoning_unit)
        for name in ("min_pixels", "max_pixels"):
            value = getattr(self, name)
            whole = isinstance(value, int) and not isinstance(value, bool)
            _check(value is None or (whole and value >= 1), name, "an integer >= 1 or null", value)
        if self.min_pixels is not None and self.max_pixels is not None:
            _check(self.min_pixels <= self.max_pixels, "min_pixels", "<= max_pixels", self.min_pixels)
        if self.reasoning_mixture is not None:
            from trajkit.gui.reasoning import ReasoningMixture
            from trajkit.gui.samples import step_copies

            try:
                mixture = ReasoningMixture(self.reasoning_mixture)
                if self.reasoning_unit == "step":
                    step_copies(mixture)
            except ValueError as err:
                raise ValueError(f"reasoning_mixture: {err}") from None


@dataclass(kw_only=True)
class SFTRecipe(SFTSettings):
    """Everything `trajkit sft` needs. Every key can be set in YAML or with `--set key=value`."""

    # HF hub id or local folder of the model to train.
    model: str
    # Files, folders or hub ids of expert trajectories (any supported format).
    data: list[str]
    # Where checkpoints, the log and the final `model/` go.
    output_dir: str


@dataclass(kw_only=True)
class DPOSettings:
    """How to run masked multi-turn DPO (`trajkit dpo`, the run recipe's DPO rounds)."""

    # Prompt template; None: the one the model folder's trajkit card names, else inferred.
    template: str | None = None
    # DPO temperature: how far the policy may move from the reference (> 0).
    beta: float = 0.1
    # TRL DPO loss: sigmoid (DPO), ipo, hinge, ...
    loss_type: str = "sigmoid"
    # > 0 adds an NLL term on the chosen side's agent tokens with this weight.
    nll_weight: float = 0.0
    # Passes over the pairs; ignored when `max_steps` > 0.
    epochs: float = 3.0
    # Optimizer steps to run; > 0 overrides `epochs`, -1 trains for `epochs`.
    max_steps: int = -1
    # Peak learning rate.
    learning_rate: float = 1e-6
    # Learning-rate schedule after warm-up, by transformers' name (linear, cosine, constant, ...).
    lr_scheduler: str = "cosine"
    # Warm-up: below 1 a fraction of the steps, from 1 on a number of steps.
    warmup: float = 0.1
    # Pairs per device per forward pass (each pair is two rows: chosen and rejected).
    batch_size: int = 4
    # Forward passes per optimizer step.
    grad_accum: int = 1
    # Longest side in tokens (prompt and images included); longer pairs are refused by name.
    max_length: int = 4096
    # Train a LoRA adapter (merged into the saved model); the reference is the model without it.
    lora: LoraSpec | None = None
    # Log the loss and rewards every this many steps.
    logging_steps: int = 10
    # Write a checkpoint every this many steps (resuming starts from the newest complete one).
    save_steps: int = 200
    # Most checkpoints kept on disk.
    save_total_limit: int = 1
    # Seed of the pair order, dropout and adapter initialization.
    seed: int = 0
    # Weight dtype: auto (the checkpoint's), float32, bfloat16 or float16.
    dtype: str = "auto"
    # Continue from the last complete checkpoint in output_dir.
    resume: bool = True
    # Further DPOConfig / TrainingArguments keys, passed as they are (they win over the above).
    extra_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_common(self)
        _check(_number(self.beta) and self.beta > 0, "beta", "> 0", self.beta)
        losses = f"one of {', '.join(DPO_LOSS_TYPES)}"
        _check(self.loss_type in DPO_LOSS_TYPES, "loss_type", losses, self.loss_type)
        _check(_number(self.nll_weight) and self.nll_weight >= 0, "nll_weight", ">= 0", self.nll_weight)


@dataclass(kw_only=True)
class DPORecipe(DPOSettings):
    """Everything `trajkit dpo` needs. Every key can be set in YAML or with `--set key=value`."""

    # The policy at the start of the round (folder or hub id).
    model: str
    # Pair files written by `trajkit pairs`.
    pairs: list[str]
    # Where checkpoints, the cached dataset, the log and the final `model/` go.
    output_dir: str
    # Reference policy; None: the starting policy itself (ETO), or e.g. the SFT model.
    ref_model: str | None = None
