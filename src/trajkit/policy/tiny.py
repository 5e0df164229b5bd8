"""A tiny Llama-architecture model made from scratch: the embedded default, nothing downloaded.

`make_tiny_model(corpus_texts, out_dir, size)` trains a byte-level BPE tokenizer on the corpus,
builds a randomly initialized LlamaForCausalLM, and saves both so that the usual
`AutoModelForCausalLM.from_pretrained(dir)` / `AutoTokenizer.from_pretrained(dir)` load them.
The tokenizer knows the special tokens of every built-in chat template, so one tiny model can
render (and be tested on) any of them; its own chat template is `tiny`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from trajkit.render import TEMPLATES, TINY_JINJA


@dataclass(frozen=True)
class TinySize:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 4096


SIZES = {
    "xs": TinySize(
        vocab_size=1024, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=192
    ),
    "s": TinySize(
        vocab_size=2048, hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=384
    ),
    "m": TinySize(
        vocab_size=4096, hidden_size=256, num_hidden_layers=6, num_attention_heads=8, intermediate_size=768
    ),
}

PAD = "<|pad|>"


def special_tokens() -> list[str]:
    """Pad first, then every template's special tokens, in a fixed order (stable ids)."""
    seen = [PAD]
    for template in TEMPLATES.values():
        for tok in template.special_tokens:
            if tok not in seen:
                seen.append(tok)
    return seen


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on `texts`, wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = special_tokens()
    tok = Tokenizer(models.BPE())
    # Byte-level with no prefix space: any text round-trips, and segments concatenate exactly.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|end|>",
        pad_token=PAD,
        additional_special_tokens=[t for t in specials if t not in (PAD, "<|bos|>", "<|end|>")],
    )
    fast.chat_template = TINY_JINJA
    fast.padding_side = "left"  # batched generation continues every prompt from its last token
    return fast


def build_model(tokenizer, size: str = "xs", seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if size not in SIZES:
        raise ValueError(f"unknown tiny size {size!r}; choose one of {', '.join(SIZES)}")
    spec = SIZES[size]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_attention_heads,
        max_position_embeddings=spec.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def make_tiny_model(texts: Iterable[str], out_dir: str | Path, size: str = "xs", seed: int = 0) -> Path:
    """Train a tokenizer, build the model, save both to `out_dir` atomically."""
    if size not in SIZES:
        raise ValueError(f"unknown tiny size {size!r}; choose one of {', '.join(SIZES)}")
    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(texts, SIZES[size].vocab_size)
    model = build_model(tokenizer, size, seed)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        meta = {"size": size, "seed": seed, "template": "tiny", **asdict(SIZES[size])}
        (tmp / "trajkit_model.json").write_text(json.dumps(meta, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
