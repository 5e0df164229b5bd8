"""SFT end to end on a tiny model: from an ETO-format file, loss falls, resume continues the steps."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from trajkit.train.sft import SFTRecipe, run_sft


def eto_file(path, n=24, seed=0):
    rng = random.Random(seed)
    records = []
    for i in range(n):
        obj = rng.choice(["apple", "mug", "knife"])
        conv = [
            {"from": "human", "value": "Interact with a household to solve a task."},
            {"from": "gpt", "value": "OK"},
            {
                "from": "human",
                "value": f"You are in the middle of a room.\nYour task is to: put a {obj} in fridge.",
            },
        ]
        for k in range(rng.randint(2, 4)):
            conv.append(
                {"from": "gpt", "value": f"Thought: look for the {obj}.\nAction: go to cabinet {k + 1}"}
            )
            conv.append(
                {"from": "human", "value": f"Observation: On the cabinet {k + 1}, you see a {obj} {k}."}
            )
        conv.append({"from": "gpt", "value": f"Thought: found it.\nAction: put {obj} 1 in/on fridge 1"})
        records.append({"id": f"eto-{i}", "conversations": conv, "reward": 1.0})
    path.write_text(json.dumps(records))
    return path


@pytest.fixture
def tiny_from_cli(tmp_path):
    data = eto_file(tmp_path / "expert.json")
    out = tmp_path / "tiny"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "trajkit",
            "model",
            "tiny",
            "--corpus",
            str(data),
            "--out",
            str(out),
            "--size",
            "xs",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["size"] == "xs"
    return data, out


def test_tiny_model_loads_with_auto_classes(tiny_from_cli):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, out = tiny_from_cli
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.model_type == "llama"
    assert tok.convert_tokens_to_ids("<|end|>") == model.config.eos_token_id
    assert "{% generation %}" in tok.chat_template


def test_sft_loss_falls_and_resume_continues(tmp_path, tiny_from_cli):
    data, model_dir = tiny_from_cli
    recipe = dict(
        model=str(model_dir),
        data=[str(data)],
        output_dir=str(tmp_path / "sft"),
        learning_rate=3e-3,
        batch_size=4,
        logging_steps=1,
        save_steps=4,
        max_steps=8,
        lr_scheduler="constant",
        warmup=0,
    )
    run_sft(SFTRecipe(**recipe))
    log = json.loads((tmp_path / "sft" / "train_log.json").read_text())["log_history"]
    losses = [e["loss"] for e in log if "loss" in e]
    assert len(losses) == 8
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3
    assert any(
        "tokens_per_s" in e
        for e in json.loads((tmp_path / "sft" / "train_log.json").read_text())["throughput"]
    )

    # Ask for more steps: training resumes from checkpoint-8 instead of starting over.
    run_sft(SFTRecipe(**{**recipe, "max_steps": 12}))
    log = json.loads((tmp_path / "sft" / "train_log.json").read_text())["log_history"]
    steps = [e["step"] for e in log if "loss" in e]
    assert steps[0] == 1 and steps[-1] == 12
    assert (tmp_path / "sft" / "checkpoints" / "checkpoint-12").is_dir()
    assert (tmp_path / "sft" / "model" / "trajkit_model.json").is_file()


def test_sft_cli_with_config(tmp_path, tiny_from_cli):
    data, model_dir = tiny_from_cli
    cfg = tmp_path / "sft.yaml"
    cfg.write_text(
        f"model: {model_dir}\ndata: [{data}]\noutput_dir: {tmp_path / 'out'}\nmax_steps: 2\nbatch_size: 4\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "trajkit", "sft", "--config", str(cfg), "--set", "learning_rate=1e-3"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["model"].endswith("model")


def test_sft_config_errors_are_one_line(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("model: x\ndata: [y]\noutput_dir: z\nlearning_rat: 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "trajkit", "sft", "--config", str(cfg)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "unknown key(s) learning_rat" in proc.stderr and "Traceback" not in proc.stderr


def test_last_good_checkpoint_skips_a_torn_save(tmp_path):
    from trajkit.train.common import last_good_checkpoint

    assert last_good_checkpoint(tmp_path / "none") is None
    for step, state in ((2, '{"global_step": 2}'), (4, "")):  # checkpoint-4 was killed mid-save
        ckpt = tmp_path / f"checkpoint-{step}"
        ckpt.mkdir()
        for name in ("model.safetensors", "optimizer.pt", "scheduler.pt"):
            (ckpt / name).write_bytes(b"x")
        (ckpt / "trainer_state.json").write_text(state)
    assert last_good_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")
    assert not (tmp_path / "checkpoint-4").exists()


def test_lora_sft_trains_adapters_and_saves_a_merged_model(tmp_path, tiny_from_cli):
    from transformers import AutoModelForCausalLM

    from trajkit.policy.models import LoraSpec

    data, model_dir = tiny_from_cli
    recipe = SFTRecipe(
        model=str(model_dir),
        data=[str(data)],
        output_dir=str(tmp_path / "lora"),
        lora=LoraSpec(r=4, alpha=8, dropout=0.0),
        learning_rate=1e-2,
        max_steps=3,
        batch_size=4,
        logging_steps=1,
    )
    final = run_sft(recipe)
    merged = AutoModelForCausalLM.from_pretrained(final)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    assert not any("lora" in name for name in merged.state_dict())
    changed = [n for n, p in merged.state_dict().items() if not (p == base.state_dict()[n]).all()]
    assert any("q_proj" in n for n in changed)  # the adapters were trained and merged in
