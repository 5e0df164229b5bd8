"""Masked multi-turn DPO: only agent tokens count, log-probs match a hand-computed masked sum."""

from __future__ import annotations

import json

import pytest

from trajkit.train.dpo import DPORecipe, build_pair_dataset, masked_trainer_classes, run_dpo, tokenize_pair


def turn(role, text):
    return {"role": role, "text": text}


PAIR = {
    "task_id": "t1",
    "prompt": [
        turn("task", "Interact with a household."),
        turn("agent", "OK"),
        turn("task", "Put a apple in fridge."),
    ],
    "chosen": [
        turn("agent", "Thought: find it.\nAction: go to countertop 1"),
        turn("observation", "Observation: On the countertop 1, you see a apple 1."),
        turn("agent", "Action: take apple 1 from countertop 1"),
    ],
    "rejected": [
        turn("agent", "Action: go to cabinet 1"),
        turn("observation", "Observation: Nothing happened."),
        turn("agent", "Action: look"),
        turn("observation", "Observation: You are in the middle of a room."),
        turn("agent", "Action: go to fridge 1"),
    ],
    "chosen_reward": 1.0,
    "rejected_reward": 0.0,
    "strategy": "trajectory",
}


@pytest.fixture
def renderer(tiny_model_dir):
    from trajkit.policy.models import load_tokenizer
    from trajkit.render import Renderer

    return Renderer(load_tokenizer(str(tiny_model_dir)), "tiny")


def masked_trainer(renderer, model_dir, tmp_path):
    """(model, dataset of PAIR, collator, trainer): trajkit's masked DPO classes on the tiny model."""
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig

    from trajkit.train.common import training_device_args

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    dataset = build_pair_dataset([PAIR], renderer, max_length=2048)
    collator_cls, trainer_cls = masked_trainer_classes()
    collator = collator_cls(pad_token_id=renderer.tokenizer.pad_token_id)
    args = DPOConfig(output_dir=str(tmp_path / "unused"), report_to="none", **training_device_args())
    trainer = trainer_cls(
        model=model,
        ref_model=AutoModelForCausalLM.from_pretrained(model_dir),
        args=args,
        train_dataset=dataset,
        processing_class=renderer.tokenizer,
        data_collator=collator,
    )
    return model, dataset, collator, trainer


def test_pair_masks_cover_agent_turns_only(renderer):
    row = tokenize_pair(PAIR, renderer)
    tok = renderer.tokenizer
    for side in ("chosen", "rejected"):
        ids, mask = row[f"{side}_ids"], row[f"{side}_mask"]
        trained = tok.decode([i for i, m in zip(ids, mask, strict=True) if m])
        untrained = tok.decode([i for i, m in zip(ids, mask, strict=True) if not m])
        agent_texts = [t["text"] + "<|end|>" for t in PAIR[side] if t["role"] == "agent"]
        assert trained == "".join(agent_texts)
        assert "Observation" in untrained  # observations are in the sequence but never scored
        assert not any(t in untrained for t in agent_texts)


def test_trl_logps_equal_masked_sum(renderer, tiny_model_dir, tmp_path):
    import torch

    model, dataset, collator, trainer = masked_trainer(renderer, tiny_model_dir, tmp_path)
    batch = collator([dataset[0]])
    chosen_logp, rejected_logp = trainer.compute_ref_log_probs(model, batch)

    row = dataset[0]
    for side, got in (("chosen", chosen_logp), ("rejected", rejected_logp)):
        ids = torch.tensor([row["prompt_ids"] + row[f"{side}_ids"]])
        mask = torch.tensor([0] * len(row["prompt_ids"]) + row[f"{side}_mask"])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
        per_token = logp.gather(1, ids[0, 1:, None])[:, 0]
        expected = (per_token * mask[1:]).sum()
        assert got.item() == pytest.approx(expected.item(), abs=1e-3)
        everything = per_token[len(row["prompt_ids"]) - 1 :].sum()
        assert abs(everything.item() - expected.item()) > 1.0  # observations would have counted


def test_observation_tokens_receive_no_gradient(renderer, tiny_model_dir, tmp_path):
    """Backpropagate the DPO loss and look at the gradient reaching the final hidden state of each
    position (it feeds only that position's next-token prediction): prompt and observation
    predictions get exactly zero, agent token predictions do not."""
    model, dataset, collator, trainer = masked_trainer(renderer, tiny_model_dir, tmp_path)
    captured = []

    def keep_hidden(module, inputs, output):
        output.retain_grad()
        captured.append(output)

    # TRL fuses the LM head with the log-prob gather, so hook the last hidden state instead.
    handle = model.model.norm.register_forward_hook(keep_hidden)
    batch = collator([dataset[0]])
    model.train()
    loss = trainer.compute_loss(model, batch)
    handle.remove()
    loss.backward()
    (hidden,) = [t for t in captured if t.requires_grad]
    grad = hidden.grad.abs().sum(-1)  # [2 rows: chosen, rejected] x positions
    scored = batch["completion_mask"][:, 1:].bool()  # position j predicts token j + 1
    width = min(grad.shape[1], scored.shape[1] + 1) - 1
    grad, scored = grad[:, :width], scored[:, :width]
    row = dataset[0]
    for r, side in enumerate(("chosen", "rejected")):
        n = len(row["prompt_ids"]) + len(row[f"{side}_ids"]) - 1
        assert scored[r, :n].sum().item() == sum(row[f"{side}_mask"])
        assert (grad[r, :n][~scored[r, :n]] == 0).all()  # prompt and observation predictions
        assert (grad[r, :n][scored[r, :n]] > 0).all()  # every agent token prediction
    assert sum((~scored[r]).sum().item() for r in range(2)) > 40  # there were many unscored ones


def test_dpo_trains_and_prefers_chosen(tmp_path, tiny_model_dir):
    pairs_file = tmp_path / "pairs.jsonl"
    pairs_file.write_text("\n".join(json.dumps(PAIR) for _ in range(4)) + "\n")
    recipe = DPORecipe(
        model=str(tiny_model_dir),
        pairs=[str(pairs_file)],
        output_dir=str(tmp_path / "dpo"),
        beta=0.1,
        learning_rate=5e-3,
        epochs=4,
        batch_size=2,
        logging_steps=1,
        save_steps=1000,
    )
    final = run_dpo(recipe)
    log = json.loads((tmp_path / "dpo" / "train_log.json").read_text())["log_history"]
    margins = [e["rewards/margins"] for e in log if "rewards/margins" in e]
    assert margins[-1] > margins[0]
    assert (final / "config.json").is_file()


def test_trl_batch_layout_is_checked_at_start_up():
    """The masked collator assumes TRL's layout; another layout fails loudly, before training."""
    import torch
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from trajkit.train.dpo import TRLLayoutError, check_trl_layout

    check_trl_layout(DataCollatorForPreference)  # the pinned TRL

    class RejectedFirst(DataCollatorForPreference):
        def torch_call(self, examples):
            batch = super().torch_call(examples)
            return {key: torch.flip(value, dims=[0]) for key, value in batch.items()}

    with pytest.raises(TRLLayoutError, match="expected"):
        check_trl_layout(RejectedFirst)


def test_set_up_pins_the_stack_the_tests_ran_with():
    from importlib.metadata import version
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    pins = dict(
        line.split("==")
        for line in (root / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    for package in ("transformers", "trl"):
        assert pins[package] == version(package), package
        assert (
            f'"{package}>={".".join(pins[package].split(".")[:2])}' in (root / "pyproject.toml").read_text()
        )
