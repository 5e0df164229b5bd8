"""Vision-language policies of the Qwen2-VL family: loading, image inputs, sampling.

`load_vlm(path)` loads a Qwen2-VL / Qwen2.5-VL checkpoint (hub id or folder) with its tokenizer and
image processor. The text side of a sample never goes through the HF processor: the renderer
(`render.Renderer` with `image_tokens`) writes the ids, `<|image_pad|>` runs included, and the
image processor only turns screenshots into `pixel_values` + `image_grid_thw`. (Qwen2-VL's
`AutoProcessor` also insists on a video processor, which needs torchvision; nothing here does.)

`VLMBackend` samples from it through the decode loop every HF backend shares (`policy.decode`).
The tiny VLM made locally lives in `policy.tiny_vlm`; its names are re-exported here.

Pixel budget: `load_vlm(..., min_pixels=, max_pixels=)` sets the image processor's resize range
(each 28x28 cell of the resized screenshot is one visual token). AGUVIS trains with
`AGUVIS_MIN_PIXELS` (256 cells) and `AGUVIS_MAX_PIXELS` (46x26 cells, "720p"); the budget is saved
with the model's image processor, so sampling from a trained folder sizes screenshots the same way.

Freezing (`freeze_vision`): as AGUVIS's `--freeze_visual_encoder`, the vision encoder's patch
embedding and blocks are frozen and its merger (the projector into the language model's width) is
trained; `train_merger=False` freezes the merger too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trajkit.gui.tokens import DIFF_MARKER
from trajkit.policy.decode import DecodingBackend, VisionPrefill
from trajkit.policy.tiny_vlm import (  # noqa: F401  re-exported: imported from here elsewhere
    CHATML_JINJA,
    DEFAULT_CORPUS,
    QWEN_EXTRA_TOKENS,
    VLM_SIZES,
    TinyVLMSize,
    build_image_processor,
    build_tiny_vlm,
    build_vlm_tokenizer,
    make_tiny_vlm,
)
from trajkit.render import Renderer

VISION_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl")
# AGUVIS's image budget (its train.py): at least 256 and at most 46x26 cells of 28x28 pixels.
AGUVIS_MIN_PIXELS = 256 * 28 * 28
AGUVIS_MAX_PIXELS = 46 * 26 * 28 * 28


def is_vision_model(name_or_path: str) -> bool:
    """Whether a checkpoint has a vision tower (its config has a `vision_config`)."""
    config_file = Path(name_or_path) / "config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text())
        return "vision_config" in config
    if Path(name_or_path).exists():
        return False
    from transformers import AutoConfig

    return hasattr(AutoConfig.from_pretrained(name_or_path), "vision_config")


class ImageTokenCounter:
    """Image path -> number of `<|image_pad|>` tokens the vision tower yields for it.

    grid_t * grid_h * grid_w / merge_size^2, from the image processor's own resize rule; only
    the image header is read (PIL opens lazily), and answers are cached per path.
    """

    def __init__(self, image_processor: Any):
        self.image_processor = image_processor
        self.merge = int(image_processor.merge_size)
        self._cache: dict[str, int] = {}

    def __call__(self, image: str) -> int:
        n = self._cache.get(image)
        if n is None:
            from PIL import Image

            with Image.open(image) as im:
                width, height = im.size
            patches = self.image_processor.get_number_of_image_patches(height, width, {})
            n = self._cache[image] = int(patches) // self.merge**2
        return n


class VisionInputs:
    """Screenshots -> (`pixel_values`, `image_grid_thw`), cached per path (images repeat a lot)."""

    def __init__(self, image_processor: Any, cache_size: int = 1024):
        self.image_processor = image_processor
        self.merge = int(image_processor.merge_size)
        self.cache_size = cache_size
        self._cache: dict[str, tuple[Any, Any]] = {}

    def one(self, image: Any) -> tuple[Any, Any]:
        """(pixel rows, grid_thw row) of one image (a path or a PIL image)."""
        key = image if isinstance(image, str) else None
        if key is not None and key in self._cache:
            return self._cache[key]
        from PIL import Image

        if isinstance(image, (str, os.PathLike)):
            with Image.open(image) as im:
                pil = im.convert("RGB")
        else:
            pil = image.convert("RGB")
        out = self.image_processor(images=[pil], return_tensors="pt")
        item = (out["pixel_values"], out["image_grid_thw"])
        if key is not None:
            if len(self._cache) >= self.cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = item
        return item

    def batch(self, images: Sequence[Any]) -> dict[str, Any]:
        """Pixel values of `images`, concatenated in order, and their grids; {} when there are none."""
        import torch

        if not images:
            return {}
        items = [self.one(im) for im in images]
        return {
            "pixel_values": torch.cat([p for p, _ in items]),
            "image_grid_thw": torch.cat([g for _, g in items]),
        }

    def tokens(self, grid_thw: Any) -> list[int]:
        """Visual tokens per image of a grid tensor."""
        return [int(n) // self.merge**2 for n in grid_thw.prod(-1).tolist()]


@dataclass
class VLM:
    """A loaded vision-language policy and what renders for it."""

    model: Any
    tokenizer: Any
    image_processor: Any
    template: str

    def renderer(self, mask: str = "agent") -> Renderer:
        """The renderer for this model; `mask` is the loss-mask mode (`render.MASK_MODES`)."""
        counter = ImageTokenCounter(self.image_processor)
        return Renderer(self.tokenizer, self.template, image_tokens=counter, mask=mask)

    def stop_ids(self) -> list[int]:
        """End of turn and AGUVIS's `<|diff_marker|>`: either ends a sampled turn."""
        ids = self.renderer().stop_ids
        diff = self.tokenizer.convert_tokens_to_ids(DIFF_MARKER)
        if diff is not None and diff != self.tokenizer.unk_token_id and diff not in ids:
            ids = [*ids, diff]
        return ids

    def save_pretrained(self, path: str | Path) -> None:
        """Tokenizer and image processor (the model is saved by whoever trained it)."""
        self.tokenizer.save_pretrained(path)
        self.image_processor.save_pretrained(path)


def _card_template(path: str) -> str | None:
    card = Path(path) / "trajkit_model.json"
    if card.is_file():
        return json.loads(card.read_text()).get("template")
    return None


def check_pixel_budget(min_pixels: int | None, max_pixels: int | None) -> None:
    """Refuse a resize range that is not one: each bound a positive integer, min <= max."""
    for name, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name}: must be a positive integer or null, got {value!r}")
    if min_pixels is not None and max_pixels is not None and min_pixels > max_pixels:
        raise ValueError(f"min_pixels ({min_pixels}) must not exceed max_pixels ({max_pixels})")


def load_image_processor(name_or_path: str, min_pixels: int | None = None, max_pixels: int | None = None):
    """The checkpoint's image processor, its resize range replaced where a bound is given."""
    from transformers import AutoImageProcessor

    check_pixel_budget(min_pixels, max_pixels)
    budget = {k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v is not None}
    processor = AutoImageProcessor.from_pretrained(name_or_path, **budget)
    size = getattr(processor, "size", None) or {}
    lo, hi = size.get("shortest_edge"), size.get("longest_edge")
    if budget and lo is not None and hi is not None and lo > hi:
        raise ValueError(f"{name_or_path}: pixel budget min {lo} > max {hi} after applying {budget}")
    return processor


def load_vlm(
    name_or_path: str,
    *,
    dtype: str = "auto",
    template: str | None = None,
    gui_tokens: bool = True,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
) -> VLM:
    """Load a Qwen2-VL-family checkpoint (hub id, needs internet, or folder) for training or sampling.

    `gui_tokens` adds AGUVIS's `<|recipient|>` / `<|diff_marker|>` as special tokens when the
    tokenizer lacks them (new embedding rows start at the mean of the old ones). The template is
    the trajkit card's, else `qwen2` (Qwen2-VL's ChatML with vision spans). `min_pixels` /
    `max_pixels` replace the image processor's resize range (None: the checkpoint's own).
    """
    from transformers import AutoModelForImageTextToText

    from trajkit.gui.tokens import add_gui_special_tokens
    from trajkit.policy.models import load_tokenizer, resolve_dtype

    tokenizer = load_tokenizer(name_or_path)
    image_processor = load_image_processor(name_or_path, min_pixels, max_pixels)
    model = AutoModelForImageTextToText.from_pretrained(name_or_path, dtype=resolve_dtype(dtype))
    model_type = getattr(model.config, "model_type", "")
    if model_type not in VISION_MODEL_TYPES:
        raise ValueError(
            f"{name_or_path}: model type {model_type!r} is not a supported vision-language model "
            f"({', '.join(VISION_MODEL_TYPES)})"
        )
    if gui_tokens:
        add_gui_special_tokens(tokenizer, model)
    return VLM(model, tokenizer, image_processor, template or _card_template(name_or_path) or "qwen2")


def vision_tower(model: Any) -> Any:
    """The vision encoder (patch embedding, blocks and the merger into the text width)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    tower = getattr(getattr(base, "model", base), "visual", None)
    if tower is None:
        tower = getattr(base, "visual", None)
    if tower is None:
        raise ValueError(f"{type(base).__name__} has no vision tower to freeze")
    return tower


def merger_name(model: Any) -> str | None:
    """The qualified module name of the vision tower's merger (projector), if it has one."""
    merger = getattr(vision_tower(model), "merger", None)
    if merger is None:
        return None
    return next((name for name, module in model.named_modules() if module is merger), None)


def freeze_vision(model: Any, train_merger: bool = True) -> int:
    """Freeze the vision encoder as AGUVIS does (`--freeze_visual_encoder`): patch embedding and
    blocks fixed, the merger (projector into the text width) left trainable unless `train_merger`
    is False. Returns the number of parameters frozen."""
    tower = vision_tower(model)
    merger = getattr(tower, "merger", None) if train_merger else None
    if train_merger and merger is None:
        raise ValueError(f"{type(tower).__name__} has no merger to keep trainable")
    keep = {id(p) for p in merger.parameters()} if merger is not None else set()
    n = 0
    for p in tower.parameters():
        if id(p) in keep:
            p.requires_grad_(True)
            continue
        p.requires_grad_(False)
        n += p.numel()
    return n


class VLMBackend(DecodingBackend):
    """Prompts with images on a Qwen2-VL-family model: the shared decode loop (`policy.decode`)
    with the vision prefill, in micro-batches of `batch_size`.

    `generate(prompts, sampling, seeds, keys, images)` (`backends.GenerationBackend`) takes each
    prompt's ids from the renderer (`Renderer.prompt(...).input_ids`, `<|image_pad|>` runs already
    sized) and its images in span order (`Renderer.prompt(...).images`: paths or PIL images).
    Positions are Qwen2-VL's 3-D (M-RoPE) ones; every sampled token takes the next text position
    of its row. With `keys`, a row's KV, ids, images and positions are kept, and its next prompt
    prefills only the suffix after the longest shared prefix (whole image spans of the same
    images), its new screenshot included.
    """

    logits_to_keep = 1  # a prefill of hundreds of visual tokens needs logits for its last one only

    def __init__(
        self,
        model,
        tokenizer,
        image_processor,
        stop_ids: list[int],
        batch_size: int = 16,
        prefix_cache: bool = True,
        max_cached_tokens: int = 1_000_000,
    ):
        self.vision = VisionInputs(image_processor)
        self.image_token_id = int(model.config.image_token_id)
        super().__init__(
            model,
            tokenizer,
            stop_ids,
            VisionPrefill(self.vision, self.image_token_id),
            batch_size=batch_size,
            prefix_cache=prefix_cache,
            max_cached_tokens=max_cached_tokens,
        )


def load_vlm_sampler(model_path: str, template: str | None = None, batch_size: int = 16):
    """(VLMBackend, Renderer) for a vision-language model folder or hub id, on the GPU if any."""
    import torch

    vlm = load_vlm(model_path, template=template)
    if torch.cuda.is_available():
        vlm.model = vlm.model.to("cuda")
    backend = VLMBackend(vlm.model, vlm.tokenizer, vlm.image_processor, vlm.stop_ids(), batch_size=batch_size)
    return backend, vlm.renderer()
