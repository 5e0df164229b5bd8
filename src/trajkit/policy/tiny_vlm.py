"""A tiny Qwen2-VL made locally: tests and CPU demos need no download.

`make_tiny_vlm(out_dir)` builds a randomly initialized Qwen2-VL of a few hundred thousand
parameters, with a byte-level BPE tokenizer trained on the spot and Qwen2-VL's image processor with
a small pixel budget sized for MiniWoB's screens, and saves them so that `policy.vlm.load_vlm(out_dir)`
loads them. Its card records `vision_init: random`: the vision encoder has learned nothing, so SFT
trains it (`freeze_vision: null`) instead of freezing it as AGUVIS freezes a pretrained one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from trajkit.gui.prompts import GUI_SYSTEM_PROMPT
from trajkit.gui.tokens import DIFF_MARKER, IM_END, add_gui_special_tokens, add_special_tokens
from trajkit.render import IMAGE_PAD, VISION_END, VISION_START

# Tokens Qwen2-VL's config and processor name besides those every chatml rendering uses.
QWEN_EXTRA_TOKENS = ("<|endoftext|>", "<|video_pad|>")
# What the tiny tokenizer learns from when no corpus is given: GUI prompts and action code.
DEFAULT_CORPUS = (
    GUI_SYSTEM_PROMPT,
    "Please generate the next move according to the UI screenshot, instruction and previous actions.",
    "Instruction: click the button. Previous actions:\nNone",
    "Observation: The page shows a form.\nThought: I need to press submit.\nAction: Click on 'Submit'.",
    "pyautogui.click(x=0.4125, y=0.1781)",
    "pyautogui.write(message='hello world')",
    "pyautogui.press(keys=['enter'])",
    "pyautogui.hotkey(keys=['ctrl', 'a'])",
    "pyautogui.scroll(page=-0.5)",
    "pyautogui.dragTo(from_coord=[0.1, 0.2], to_coord=[0.7, 0.8])",
    "answer(answer='42')",
    "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:'\"()[]{}=_-+*/<>!?",
)

CHATML_JINJA = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class TinyVLMSize:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    # (t, h, w) frequency pairs of the LM's M-RoPE, summing to head_dim / 2. Qwen2-VL hands the
    # sections out in order from the fastest frequency, so w gets the slowest: w takes the most.
    mrope_section: tuple[int, int, int]
    vision_depth: int
    vision_embed_dim: int
    vision_heads: int
    # Pixel budget of a screenshot after resizing, in 28x28 cells (one visual token each), chosen
    # for MiniWoB's 160x210 CSS-px task area: a 50-cell cap resizes it at every device scale (1-3)
    # to 168x224 px, 6x8 cells with the screen's aspect kept and about one pixel per CSS pixel, so
    # one 14-px patch is about a checkbox and one token a 28-px button; 120 cells (size s) give 9x12
    # at scales 2-3. (A 48-cell cap gave 6x7 at scale 2, squeezing the height.)
    min_cells: int = 4
    max_cells: int = 50
    max_position_embeddings: int = 8192
    # Rope bases. The vision tower has no absolute position embedding, so the LM's M-RoPE over the
    # image grid is the only place a click's position can come from; at Qwen's 10000 the w section
    # turns under 0.02 rad across 6 token columns and a trained model clicks one point for every
    # screen. At 3 every section turns at least 0.38 rad per cell.
    rope_theta: float = 3.0
    vision_rope_theta: float = 10.0


VLM_SIZES = {
    "xs": TinyVLMSize(
        vocab_size=1024,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=192,
        mrope_section=(2, 2, 4),
        vision_depth=1,
        vision_embed_dim=32,
        vision_heads=2,
    ),
    "s": TinyVLMSize(
        vocab_size=2048,
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=384,
        mrope_section=(4, 4, 8),
        vision_depth=2,
        vision_embed_dim=64,
        vision_heads=4,
        max_cells=120,
    ),
}


def _size(size: str) -> TinyVLMSize:
    if size not in VLM_SIZES:
        raise ValueError(f"unknown tiny VLM size {size!r}; choose one of {', '.join(VLM_SIZES)}")
    return VLM_SIZES[size]


def build_vlm_tokenizer(texts: Iterable[str], vocab_size: int):
    """The tiny byte-level BPE tokenizer plus Qwen2-VL's remaining special tokens, ChatML roles."""
    from trajkit.policy.tiny import train_tokenizer

    tok = train_tokenizer(texts, vocab_size)
    missing = [t for t in QWEN_EXTRA_TOKENS if t not in tok.get_vocab()]
    if missing:
        add_special_tokens(tok, missing)
    add_gui_special_tokens(tok)  # <|recipient|>, <|diff_marker|>: present already; kept explicit
    tok.eos_token = IM_END
    tok.chat_template = CHATML_JINJA
    tok.padding_side = "left"
    return tok


def build_image_processor(min_cells: int = 4, max_cells: int = 50, patch_size: int = 14, merge_size: int = 2):
    """Qwen2-VL's image processor with a small pixel budget (`*_cells` of (patch*merge)^2 pixels)."""
    try:  # the PIL backend needs no torchvision; newer transformers have it
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
            Qwen2VLImageProcessorPil as ImageProcessor,
        )
    except ImportError:  # pragma: no cover - older transformers
        from transformers import Qwen2VLImageProcessor as ImageProcessor

    cell = (patch_size * merge_size) ** 2
    # Pixels are centred on white, not on CLIP's photo mean: a GUI screen is mostly blank page.
    # Centred on the photo mean, a random tower gives every token of a white page one shared
    # direction and an element's tokens differ from it by little (cosine 0.98 after the LM's
    # RMSNorm); stage 1 then learns one click per instruction whatever the screen shows. Centred
    # on white, an element's tokens point elsewhere (cosine 0.18) and the LM can find them.
    return ImageProcessor(
        min_pixels=min_cells * cell,
        max_pixels=max_cells * cell,
        patch_size=patch_size,
        merge_size=merge_size,
        temporal_patch_size=2,
        image_mean=[1.0, 1.0, 1.0],
        image_std=[0.5, 0.5, 0.5],
    )


def build_tiny_vlm(tokenizer, size: str = "xs", seed: int = 0):
    """A randomly initialized Qwen2VLForConditionalGeneration sized by `VLM_SIZES[size]`."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    spec = _size(size)
    ids = tokenizer.convert_tokens_to_ids
    stop_ids = [ids(IM_END), ids(DIFF_MARKER)]
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": spec.hidden_size,
            "intermediate_size": spec.intermediate_size,
            "num_hidden_layers": spec.num_hidden_layers,
            "num_attention_heads": spec.num_attention_heads,
            "num_key_value_heads": spec.num_key_value_heads,
            "max_position_embeddings": spec.max_position_embeddings,
            "rope_parameters": {
                "rope_type": "default",
                "mrope_section": list(spec.mrope_section),
                "rope_theta": spec.rope_theta,
            },
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": stop_ids[0],
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "depth": spec.vision_depth,
            "embed_dim": spec.vision_embed_dim,
            "hidden_size": spec.hidden_size,
            "num_heads": spec.vision_heads,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "rope_parameters": {"rope_type": "axial", "rope_theta": spec.vision_rope_theta},
        },
        image_token_id=ids(IMAGE_PAD),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids(VISION_START),
        vision_end_token_id=ids(VISION_END),
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = stop_ids
    return model


def make_tiny_vlm(
    out_dir: str | Path, texts: Iterable[str] | None = None, size: str = "xs", seed: int = 0
) -> Path:
    """Build a tiny Qwen2-VL (tokenizer trained on `texts`, default a small GUI corpus), save it
    atomically to `out_dir` so that `load_vlm(out_dir)` loads it. Nothing is downloaded."""
    spec = _size(size)
    corpus = list(texts) if texts is not None else []
    corpus = corpus + list(DEFAULT_CORPUS) * 4
    tokenizer = build_vlm_tokenizer(corpus, spec.vocab_size)
    image_processor = build_image_processor(spec.min_cells, spec.max_cells)
    model = build_tiny_vlm(tokenizer, size, seed)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        image_processor.save_pretrained(tmp)
        spec_dict = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(spec).items()}
        # vision_init: the encoder starts random, so SFT's freeze_vision: null trains it.
        meta = {
            "size": size,
            "seed": seed,
            "template": "qwen2",
            "vision": True,
            "vision_init": "random",
            **spec_dict,
        }
        (tmp / "trajkit_model.json").write_text(json.dumps(meta, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
