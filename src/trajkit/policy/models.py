"""Loading a causal LM policy: any HF id or local folder, optionally wrapped with LoRA."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class LoraSpec:
    """LoRA adapter settings (PEFT). `target_modules="all-linear"` adapts every linear layer."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"

    def __post_init__(self) -> None:  # refused when the recipe is read, not deep inside PEFT
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"lora.r: must be an integer >= 1, got {self.r!r}")
        if not self.alpha > 0:
            raise ValueError(f"lora.alpha: must be > 0, got {self.alpha!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"lora.dropout: must be in [0, 1), got {self.dropout!r}")

    def to_peft(self):
        from peft import LoraConfig

        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=self.target_modules,
            task_type="CAUSAL_LM",
        )


@dataclass
class ModelSpec:
    path: str
    template: str | None = None  # None: read from the model folder (see `infer_template`)
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    lora: LoraSpec | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def infer_template(path: str | Path, tokenizer: Any = None) -> str:
    """The renderer template for a model: from trajkit's model card, else the tokenizer's own
    chat template when it carries `{% generation %}` markers."""
    meta = Path(path) / "trajkit_model.json"
    if meta.is_file():
        return json.loads(meta.read_text()).get("template", "hf")
    chat = getattr(tokenizer, "chat_template", None) or ""
    if "generation" in chat:
        return "hf"
    raise ValueError(
        f"{path}: cannot tell which chat template to render with; give `template:` "
        "(llama2, chatml, llama3, tiny, or hf for a tokenizer template with {% generation %} markers)"
    )


def resolve_dtype(name: str):
    import torch

    if name == "auto":
        # CPUs here lack fast bf16: full precision on CPU, bf16 where a GPU supports it.
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def load_policy(spec: ModelSpec, trainable: bool = True):
    """(model, tokenizer, template). `spec.path` may be a hub id (needs internet) or a folder."""
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(spec.path)
    model = AutoModelForCausalLM.from_pretrained(spec.path, dtype=resolve_dtype(spec.dtype))
    template = spec.template or infer_template(spec.path, tokenizer)
    if spec.lora is not None and trainable:
        from peft import get_peft_model

        model = get_peft_model(model, spec.lora.to_peft())
    return model, tokenizer, template
