"""The tiny VLM's vision tower learns: it starts random, so stage-1 SFT trains it (freeze_vision
null), while a pretrained tower stays frozen as AGUVIS keeps it. A few steps on CPU, seconds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trajkit.train.settings import SFTSettings

REPO = Path(__file__).resolve().parents[1]


def _shot(path: Path, x: float, y: float) -> None:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (320, 420), (245, 245, 245))
    ImageDraw.Draw(img).rectangle(
        [x * 320 - 20, y * 420 - 14, x * 320 + 20, y * 420 + 14], fill=(220, 40, 40)
    )
    img.save(path)


@pytest.fixture(scope="module")
def grounding(tmp_path_factory) -> tuple[Path, Path]:
    """(tiny VLM folder, stage-1 grounding records): red boxes at different places per screenshot."""
    from trajkit.policy.tiny_vlm import make_tiny_vlm

    root = tmp_path_factory.mktemp("tower")
    records = []
    for n, (x, y) in enumerate([(0.2, 0.3), (0.7, 0.6), (0.5, 0.85), (0.8, 0.15)]):
        _shot(root / f"s{n}.png", x, y)
        code = f"pyautogui.click(x={x:.4f}, y={y:.4f})"
        records.append(
            {
                "id": f"g{n}",
                "image": f"s{n}.png",
                "conversations": [
                    {"from": "human", "value": "<image>\nClick on the red box"},
                    {"from": "gpt", "value": code, "recipient": "os", "end_turn": True},
                ],
            }
        )
    data = root / "grounding.json"
    data.write_text(json.dumps(records))
    model = make_tiny_vlm(root / "tiny-vlm", [r["conversations"][1]["value"] for r in records])
    return model, data


def _train(model: Path, data: Path, out: Path, freeze_vision: bool | None) -> Path:
    import torch

    from trajkit.train.sft import SFTRecipe, run_sft

    recipe = SFTRecipe(
        model=str(model),
        data=[str(data)],
        output_dir=str(out),
        gui_stage="grounding",
        freeze_vision=freeze_vision,
        max_steps=3,
        batch_size=2,
        learning_rate=0.01,
        lr_scheduler="constant",
        warmup=0,
        logging_steps=1,
        save_steps=1000,
        dtype="float32",
    )
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: a second thread only waits
    try:
        return run_sft(recipe)
    finally:
        torch.set_num_threads(before)


def _changed(before: dict, after: dict, keys: list[str]) -> list[str]:
    import torch

    return [k for k in keys if not torch.equal(before[k], after[k])]


def test_the_tiny_vlm_card_says_its_tower_is_random(grounding):
    from trajkit.train.vlm import resolve_freeze_vision, vision_init

    model, _ = grounding
    assert json.loads((model / "trajkit_model.json").read_text())["vision_init"] == "random"
    assert vision_init(str(model)) == "random"
    assert resolve_freeze_vision(None, str(model)) is False
    # A hub id or a folder without the card is a pretrained encoder: frozen, as AGUVIS.
    assert resolve_freeze_vision(None, "Qwen/Qwen2-VL-2B-Instruct") is True
    assert resolve_freeze_vision(True, str(model)) is True and resolve_freeze_vision(False, "x") is False


def test_the_lm_rope_tells_image_rows_and_columns_apart(grounding):
    """The tower has no absolute position embedding, so where a click goes comes from the LM's
    M-RoPE over the image grid: its h and w sections must each turn by at least a radian across
    MiniWoB's grid of 6x8 tokens (at Qwen's rope_theta 10000 the w section turns 0.02 rad)."""
    from transformers import AutoConfig
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLRotaryEmbedding

    model, _ = grounding
    config = AutoConfig.from_pretrained(model).text_config
    rope = Qwen2VLRotaryEmbedding(config)
    t, h, w = rope.mrope_section
    assert t + h + w == len(rope.inv_freq)
    slowest_h, slowest_w = float(rope.inv_freq[t : t + h].min()), float(rope.inv_freq[t + h :].min())
    assert slowest_h * (8 - 1) >= 1.0 and slowest_w * (6 - 1) >= 1.0


def test_an_element_stands_out_from_the_blank_page(grounding, tmp_path):
    """Pixels are centred on white, so a drawn element's visual tokens point elsewhere than the
    blank page's (measured: cosine 0.18 to the page's token; centred on CLIP's photo mean, 0.98: after
    the LM's RMSNorm every token of the screen would look the same)."""
    import torch
    from PIL import Image, ImageDraw

    from trajkit.policy.vlm import VisionInputs, load_vlm

    model, _ = grounding
    vlm = load_vlm(str(model))
    page = Image.new("RGB", (320, 420), "white")
    ImageDraw.Draw(page).rectangle([20, 180, 280, 215], outline=(90, 90, 90), width=2)  # a text box
    page.save(tmp_path / "page.png")
    batch = VisionInputs(vlm.image_processor).batch([str(tmp_path / "page.png")])
    with torch.no_grad():
        out = vlm.model.model.visual(batch["pixel_values"], grid_thw=batch["image_grid_thw"])
    feats = out if torch.is_tensor(out) else out.pooler_output
    blank = feats.median(0).values  # most of the 6x8 tokens are blank page
    cosine = torch.nn.functional.cosine_similarity(feats, blank[None], dim=-1)
    assert cosine.max() > 0.99 and cosine.min() < 0.5


def test_freeze_vision_defaults_to_null_and_refuses_non_booleans():
    assert SFTSettings().freeze_vision is None
    with pytest.raises(ValueError, match="freeze_vision"):
        SFTSettings(freeze_vision="yes")  # type: ignore[arg-type]


def test_stage1_trains_a_random_tower_and_keeps_a_frozen_one(grounding, tmp_path):
    from safetensors.torch import load_file

    model, data = grounding
    start = load_file(model / "model.safetensors")
    visual = [k for k in start if k.startswith("visual.") or ".visual." in k]
    merger = [k for k in visual if ".merger." in k]
    encoder = [k for k in visual if k not in merger]
    assert encoder and merger

    trained = load_file(_train(model, data, tmp_path / "auto", None) / "model.safetensors")
    log = json.loads((tmp_path / "auto" / "train_log.json").read_text())
    assert log["vision_params_frozen"] == 0 and log["vision_init"] == "random"
    # The patch embedding and the blocks move, not only the merger.
    moved = _changed(start, trained, encoder)
    assert any("patch_embed" in k for k in moved) and any(".blocks." in k for k in moved), moved
    assert _changed(start, trained, merger)

    frozen = load_file(_train(model, data, tmp_path / "frozen", True) / "model.safetensors")
    assert not _changed(start, frozen, encoder)
    assert _changed(start, frozen, merger)


def test_gui_runs_no_longer_force_a_frozen_tower():
    from trajkit.pipeline.agents import GuiAgents
    from trajkit.pipeline.config import load_run_config

    cfg = load_run_config(REPO / "configs" / "miniwob_eto_tiny.yaml")
    plans = GuiAgents(cfg).sft_plan()
    assert [p.gui_stage for p in plans] == ["grounding", "planning"]
    assert all(p.settings.freeze_vision is None for p in plans)
    frozen = load_run_config(REPO / "configs" / "miniwob_eto_tiny.yaml", ["gui.stage2.freeze_vision=true"])
    assert [p.settings.freeze_vision for p in GuiAgents(frozen).sft_plan()] == [None, True]
