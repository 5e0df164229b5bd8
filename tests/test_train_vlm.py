"""Masked DPO of a vision-language policy on the shared TRL trainer: agent-token log-probs equal a
hand computation, grad accumulation and the configured schedule apply, LoRA trains and merges, and a
killed round resumes from its last checkpoint. Also the typed training settings."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from trajkit.data.schema import AGENT, OBSERVATION, SYSTEM, TASK, Trajectory, Turn
from trajkit.pairs import build_pairs
from trajkit.render import IMAGE_PAD
from trajkit.train.dpo import DPORecipe, dpo_trainer, run_dpo


def screenshot(path: Path, x: float, y: float) -> str:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (160, 210), (245, 245, 245))
    ImageDraw.Draw(img).rectangle([x * 160 - 12, y * 210 - 8, x * 160 + 12, y * 210 + 8], fill=(40, 70, 220))
    img.save(path)
    return str(path)


def gui_traj(tid: str, xs: list[float], reward: float, images: list[str]) -> Trajectory:
    turns = [Turn(SYSTEM, "You are a GUI agent."), Turn(TASK, "Instruction: Click the box.")]
    for k, x in enumerate(xs):
        turns.append(Turn(OBSERVATION, "<image>", image=images[k]))
        turns.append(
            Turn(AGENT, f"Thought: the box.\nAction: Click at {x}.", recipient="all", end_turn=False)
        )
        turns.append(Turn(AGENT, f"pyautogui.click(x={x}, y=0.5)", recipient="os", end_turn=True))
    return Trajectory(tid, turns, task_id=tid.split(":")[0], reward=reward, success=reward > 0)


@pytest.fixture(scope="module")
def gui_pairs(tmp_path_factory):
    """Four GUI pairs: the expert clicks once, the failed rollout twice (one screenshot more)."""
    root = tmp_path_factory.mktemp("shots")
    pairs = []
    for i in range(4):
        shots = [screenshot(root / f"{i}_{k}.png", 0.5, 0.3 + 0.2 * k) for k in range(2)]
        x = round(0.2 + 0.15 * i, 2)
        expert = gui_traj(f"box/{i}:expert", [0.5], 1.0, shots)
        bad = gui_traj(f"box/{i}:roll", [x, x], 0.0, shots)
        pairs += build_pairs([bad], [expert]).pairs
    assert len(pairs) == 4
    return pairs


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    from trajkit.policy.vlm import make_tiny_vlm

    return make_tiny_vlm(tmp_path_factory.mktemp("vlm") / "model", size="xs", seed=0)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices gain nothing from a second thread on a busy 2-core machine (see test_vlm)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def recipe(model: Path, out: Path, **kw) -> DPORecipe:
    base = dict(beta=0.5, learning_rate=3e-3, batch_size=1, warmup=0, logging_steps=1, save_steps=1000)
    return DPORecipe(model=str(model), pairs=[], output_dir=str(out), **{**base, **kw})


def history(out: Path) -> list[dict]:
    return json.loads((out / "train_log.json").read_text())["log_history"]


def test_vision_logps_are_masked_sums_over_agent_tokens(tmp_path, tiny_vlm, gui_pairs):
    import torch

    trainer, _, _ = dpo_trainer(recipe(tiny_vlm, tmp_path / "dpo"), gui_pairs[:2])
    model = trainer.model
    row = trainer.train_dataset[0]
    batch = trainer.data_collator([row])
    assert batch["image_grid_thw"].shape[0] == 3  # one screenshot chosen, two rejected
    pad = model.config.image_token_id
    assert not batch["completion_mask"][batch["input_ids"] == pad].any(), "vision spans are never scored"
    chosen, rejected = trainer.compute_ref_log_probs(model, batch)
    # The cached reference pass gave the same numbers: the policy starts as its own reference.
    assert row["ref_chosen_logps"] == pytest.approx(chosen.item(), abs=1e-4)

    inputs = {
        k: v
        for k, v in batch.items()
        if k not in ("completion_mask", "ref_chosen_logps", "ref_rejected_logps")
    }
    with torch.no_grad():
        logits = model(**inputs).logits[:, :-1].float()
    ids = batch["input_ids"][:, 1:]
    per_token = torch.log_softmax(logits, -1).gather(2, ids[..., None])[..., 0]
    scored = batch["completion_mask"][:, 1:]
    expected = (per_token * scored).sum(-1)
    assert torch.allclose(torch.stack([chosen[0], rejected[0]]), expected, atol=1e-3)
    text = (per_token * batch["attention_mask"][:, 1:]).sum(-1)
    assert ((text - expected).abs() > 1.0).all()  # observations and images would have counted
    tok = trainer.processing_class
    agent = tok.decode(batch["input_ids"][0][batch["completion_mask"][0].bool()])
    assert "pyautogui.click" in agent and "Instruction" not in agent and IMAGE_PAD not in agent


@pytest.mark.slow
def test_vision_dpo_honours_grad_accum_and_the_scheduler(tmp_path, tiny_vlm, gui_pairs):
    """4 pairs, batch 1, grad_accum 2, 2 epochs: 4 optimizer steps; `linear` decays the learning
    rate, `constant` keeps it."""
    rates = {}
    for schedule in ("linear", "constant"):
        out = tmp_path / schedule
        run_dpo(recipe(tiny_vlm, out, grad_accum=2, epochs=2, lr_scheduler=schedule), gui_pairs)
        log = history(out)
        steps = [e for e in log if "loss" in e]
        assert [e["step"] for e in steps] == [1, 2, 3, 4]
        assert log[-1]["step"] == 4 and "train_loss" in log[-1]
        rates[schedule] = [e["learning_rate"] for e in steps]
    assert rates["constant"] == [3e-3] * 4
    linear = rates["linear"]
    assert all(a > b for a, b in zip(linear, linear[1:], strict=False)) and linear[0] <= 3e-3


@pytest.mark.slow
def test_vision_dpo_with_lora_trains_and_merges(tmp_path, tiny_vlm, gui_pairs):
    import torch
    from safetensors.torch import load_file

    from trajkit.policy.models import LoraSpec

    out = tmp_path / "lora"
    final = run_dpo(
        recipe(tiny_vlm, out, lora=LoraSpec(r=4, alpha=8, dropout=0.0), learning_rate=2e-2, max_steps=4),
        gui_pairs,
    )
    log = history(out)
    losses = [e["loss"] for e in log if "loss" in e]
    assert abs(losses[0] - 0.6931) < 1e-3, "the base model (adapter off) is the reference"
    assert losses[-1] < losses[0]
    assert not any(Path(final).glob("adapter_*")), "the adapter is merged into the saved model"
    before, after = load_file(tiny_vlm / "model.safetensors"), load_file(Path(final) / "model.safetensors")
    assert set(before) == set(after)
    visual = [k for k in before if "visual." in k]
    encoder = [k for k in visual if ".merger." not in k]
    assert encoder and all(torch.equal(before[k], after[k]) for k in encoder), "the encoder stays fixed"
    assert any(not torch.equal(before[k], after[k]) for k in visual if k not in encoder), "the merger trains"
    assert any(not torch.equal(before[k], after[k]) for k in before if k not in visual)


@pytest.mark.slow
def test_vision_dpo_resumes_mid_round_from_the_last_checkpoint(tmp_path, tiny_vlm, gui_pairs, monkeypatch):
    import shutil

    import torch
    from safetensors.torch import load_file
    from trl import DPOTrainer

    import trajkit.train.dpo as dpo

    out = tmp_path / "dpo"
    settings = dict(max_steps=3, save_steps=1, save_total_limit=5)
    run_dpo(recipe(tiny_vlm, out, **settings), gui_pairs)
    ckpts = out / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("checkpoint-*")) == [f"checkpoint-{i}" for i in (1, 2, 3)]
    whole = load_file(out / "model" / "model.safetensors")
    # A kill during step 3: its checkpoint and the final model never got written.
    shutil.rmtree(ckpts / "checkpoint-3")
    shutil.rmtree(out / "model")
    cache = sorted((out / "pairs_dataset").glob("cache-*.arrow"))
    assert cache, "reference log-probs are cached beside the round's data"

    resumed_from, steps = [], []
    last_good = dpo.last_good_checkpoint
    monkeypatch.setattr(
        dpo, "last_good_checkpoint", lambda d: resumed_from.append(last_good(d)) or resumed_from[-1]
    )
    step = DPOTrainer.training_step
    monkeypatch.setattr(
        DPOTrainer, "training_step", lambda self, *a, **k: steps.append(1) or step(self, *a, **k)
    )
    run_dpo(recipe(tiny_vlm, out, **settings), gui_pairs)
    assert resumed_from == [str(ckpts / "checkpoint-2")]
    assert len(steps) == 1, "only the lost step is trained again"
    assert (ckpts / "checkpoint-3").is_dir() and (out / "model" / "config.json").is_file()
    assert sorted((out / "pairs_dataset").glob("cache-*.arrow")) == cache, "reference pass not redone"
    again = load_file(out / "model" / "model.safetensors")
    assert all(torch.allclose(whole[k], again[k], atol=1e-6) for k in whole), (
        "same weights as without the kill"
    )


def test_vision_dpo_refuses_pairs_over_max_length(tmp_path, tiny_vlm, gui_pairs):
    with pytest.raises(ValueError, match="over max_length=64"):
        dpo_trainer(recipe(tiny_vlm, tmp_path / "dpo", max_length=64), gui_pairs[:1])


# ---------------------------------------------------------------------------------------------
# typed settings


def test_settings_are_the_recipes_without_their_inputs():
    from trajkit.config import from_dict
    from trajkit.train.settings import DPOSettings, SFTRecipe, SFTSettings

    def names(cls):
        return {f.name for f in dataclasses.fields(cls)}

    assert names(SFTRecipe) - names(SFTSettings) == {"model", "data", "output_dir"}
    assert names(DPORecipe) - names(DPOSettings) == {"model", "pairs", "output_dir", "ref_model"}
    sft = from_dict(SFTRecipe, {"model": "m", "data": "d.jsonl", "output_dir": "o", "learning_rate": "1e-5"})
    assert sft.data == ["d.jsonl"] and sft.learning_rate == 1e-5
    assert from_dict(DPOSettings, {"beta": 0.5}).beta == 0.5
    with pytest.raises(TypeError):
        SFTRecipe("m", ["d"], "o")  # keyword-only: a positional call cannot shift fields


@pytest.mark.parametrize(
    ("cls", "field", "value"),
    [
        ("SFTSettings", "learning_rate", -1e-5),
        ("SFTSettings", "batch_size", 0),
        ("SFTSettings", "grad_accum", 0),
        ("SFTSettings", "lr_scheduler", "cosin"),
        ("SFTSettings", "gui_stage", "stage3"),
        ("SFTSettings", "reasoning_mixture", {"l9": 1.0}),
        ("DPOSettings", "beta", 0.0),
        ("DPOSettings", "loss_type", "kto"),
        ("DPOSettings", "warmup", -0.1),
        ("DPOSettings", "nll_weight", -1.0),
    ],
)
def test_clearly_wrong_settings_are_refused_by_name(cls, field, value):
    from trajkit.config import ConfigError, from_dict
    from trajkit.train import settings

    with pytest.raises(ConfigError, match=f"^recipe.yaml: {field}: "):
        from_dict(getattr(settings, cls), {field: value}, where="recipe.yaml")
    with pytest.raises(ValueError, match=f"^{field}: "):
        getattr(settings, cls)(**{field: value})


def test_accepted_schedulers_and_losses_are_what_transformers_and_trl_take():
    import inspect

    from transformers.trainer_utils import SchedulerType
    from trl import DPOTrainer

    from trajkit.train.settings import DPO_LOSS_TYPES, LR_SCHEDULERS

    assert set(LR_SCHEDULERS) == {s.value for s in SchedulerType}
    source = inspect.getsource(DPOTrainer._compute_loss)
    assert all(f'loss_type == "{loss}"' in source for loss in DPO_LOSS_TYPES)


@pytest.mark.slow
def test_vision_sft_resumes_with_the_checkpoint_weights(tmp_path, tiny_vlm, gui_pairs):
    """Qwen2-VL checkpoints are saved under the original weight names; resuming must load them
    (a plain `Trainer` resume loads none of them and trains on from the starting weights)."""
    import shutil

    from safetensors.torch import load_file

    from trajkit.train.sft import SFTRecipe, run_sft

    experts = [
        Trajectory.from_dict({"id": p["task_id"], "turns": p["prompt"] + p["chosen"]}) for p in gui_pairs
    ]
    out = tmp_path / "sft"
    settings = dict(learning_rate=3e-3, batch_size=2, max_steps=3, save_steps=1, save_total_limit=5, warmup=0)
    sft = SFTRecipe(model=str(tiny_vlm), data=[], output_dir=str(out), freeze_vision=True, **settings)
    run_sft(sft, experts)
    whole = load_file(out / "model" / "model.safetensors")
    shutil.rmtree(out / "checkpoints" / "checkpoint-3")
    shutil.rmtree(out / "model")
    run_sft(sft, experts)
    again = load_file(out / "model" / "model.safetensors")
    assert all(torch_equal(whole[k], again[k]) for k in whole)


def torch_equal(a, b) -> bool:
    import torch

    return torch.allclose(a, b, atol=1e-6)
