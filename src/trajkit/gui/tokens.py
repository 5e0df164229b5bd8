"""Special tokens of ChatML / Qwen2-VL GUI agents, defined once for the whole package.

`<|recipient|>` follows `<|im_start|>assistant` and names who the turn is for (`all`: the inner
monologue, `os`: code to execute). `<|diff_marker|>` ends the final turn and is the stop string at
inference. `<image>` marks where a screenshot goes in a turn's text; a Qwen2-VL renderer writes it
as the vision span `<|vision_start|><|image_pad|>...<|vision_end|>`.
"""

from __future__ import annotations

from typing import Any

# AGUVIS control tokens.
RECIPIENT = "<|recipient|>"
DIFF_MARKER = "<|diff_marker|>"
# ChatML turn delimiters.
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
# Image placeholder in turn text, and the Qwen2-VL vision span that replaces it.
IMAGE_PLACEHOLDER = "<image>"
VISION_START = "<|vision_start|>"
IMAGE_PAD = "<|image_pad|>"
VISION_END = "<|vision_end|>"
QWEN_VISION = f"{VISION_START}{IMAGE_PAD}{VISION_END}"

GUI_SPECIAL_TOKENS = (RECIPIENT, DIFF_MARKER)


def add_gui_special_tokens(tokenizer: Any, model: Any = None) -> list[int]:
    """Add the GUI control tokens to `tokenizer` as special tokens; returns their ids.

    With a model, its embeddings grow to fit and every new token's input and output embedding row
    starts as the mean of the rows that existed before (a neutral start instead of random noise).
    Calling it again changes nothing.
    """
    vocab = tokenizer.get_vocab()
    new = [t for t in GUI_SPECIAL_TOKENS if t not in vocab]
    if new:
        add_special_tokens(tokenizer, new)
    ids = tokenizer.convert_tokens_to_ids(list(GUI_SPECIAL_TOKENS))
    if model is not None:
        _init_new_rows(model, len(tokenizer), [tokenizer.convert_tokens_to_ids(t) for t in new])
    return list(ids)


def add_special_tokens(tokenizer: Any, tokens: list[str]) -> None:
    """Register `tokens` with `tokenizer` as special tokens that are never split or normalized.

    The tokenizer's existing extra special tokens are kept (transformers replaces them by default),
    and both the transformers 4 and 5 spellings of that option are handled.
    """
    import inspect

    from tokenizers import AddedToken

    added = [AddedToken(t, special=True, normalized=False, single_word=False) for t in tokens]
    params = inspect.signature(tokenizer.add_special_tokens).parameters
    # transformers 5 renamed "additional" special tokens to "extra" special tokens.
    for key, flag in (
        ("extra_special_tokens", "replace_extra_special_tokens"),
        ("additional_special_tokens", "replace_additional_special_tokens"),
    ):
        if flag in params:
            tokenizer.add_special_tokens({key: added}, **{flag: False})
            return
    tokenizer.add_tokens(added, special_tokens=True)


def _init_new_rows(model: Any, vocab_size: int, new_ids: list[int]) -> None:
    import torch

    old_rows = model.get_input_embeddings().weight.shape[0]
    if vocab_size > old_rows:
        model.resize_token_embeddings(vocab_size, mean_resizing=False)
    if not new_ids:
        return
    new_set = set(new_ids)
    # Rows that existed before; padding rows of an oversized matrix count too.
    kept = torch.tensor([i for i in range(old_rows) if i not in new_set], dtype=torch.long)
    index = torch.tensor(new_ids, dtype=torch.long)
    matrices = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and output.weight is not matrices[0]:
        matrices.append(output.weight)
    with torch.no_grad():
        for weight in matrices:
            weight[index] = weight[kept].float().mean(dim=0).to(weight.dtype)
