"""The renderer: golden masks per template, the agent-turns-only property, prompt prefixes."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trajkit.data.schema import Trajectory, Turn
from trajkit.render import TEMPLATES, Renderer, RenderError, render, show


def runs(tokenizer, out):
    """The rendering as maximal runs of (decoded text, trained), grouped token by token."""
    groups: list[tuple[list[int], bool]] = []
    for tok_id, bit in zip(out.input_ids, out.loss_mask, strict=True):
        if groups and groups[-1][1] == bool(bit):
            groups[-1][0].append(tok_id)
        else:
            groups.append(([tok_id], bool(bit)))
    # Decode whole runs: a multi-byte character may span two byte-level tokens.
    return [(tokenizer.decode(ids), bit) for ids, bit in groups]


EPISODE = Trajectory(
    "golden-1",
    [
        Turn("system", "Be brief."),
        Turn("task", "Put a apple in fridge."),
        Turn("agent", "Thought: find it.\nAction: go to countertop 1"),
        Turn("observation", "Observation: you see a apple 1."),
        Turn("agent", "Action: take apple 1 from countertop 1"),
    ],
)

GOLDEN = {
    "tiny": [
        ("<|bos|><|system|>\nBe brief.<|end|>\n<|user|>\nPut a apple in fridge.<|end|>\n<|agent|>\n", False),
        ("Thought: find it.\nAction: go to countertop 1<|end|>", True),
        ("\n<|user|>\nObservation: you see a apple 1.<|end|>\n<|agent|>\n", False),
        ("Action: take apple 1 from countertop 1<|end|>", True),
        ("\n", False),
    ],
    "chatml": [
        (
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nPut a apple in fridge.<|im_end|>\n"
            "<|im_start|>assistant\n",
            False,
        ),
        ("Thought: find it.\nAction: go to countertop 1<|im_end|>", True),
        ("\n<|im_start|>user\nObservation: you see a apple 1.<|im_end|>\n<|im_start|>assistant\n", False),
        ("Action: take apple 1 from countertop 1<|im_end|>", True),
        ("\n", False),
    ],
    "llama3": [
        (
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nPut a apple in fridge.<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n",
            False,
        ),
        ("Thought: find it.\nAction: go to countertop 1<|eot_id|>", True),
        (
            "<|start_header_id|>user<|end_header_id|>\n\nObservation: you see a apple 1.<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n",
            False,
        ),
        ("Action: take apple 1 from countertop 1<|eot_id|>", True),
    ],
    "llama2": [
        ("<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nPut a apple in fridge. [/INST]", False),
        (" Thought: find it.\nAction: go to countertop 1 </s>", True),
        ("<s>[INST] Observation: you see a apple 1. [/INST]", False),
        (" Action: take apple 1 from countertop 1 </s>", True),
    ],
}


@pytest.mark.parametrize("template", sorted(GOLDEN))
def test_golden_mask_token_by_token(tiny_tokenizer, template):
    out = Renderer(tiny_tokenizer, template).render(EPISODE)
    assert runs(tiny_tokenizer, out) == GOLDEN[template]
    assert len(out.input_ids) == len(out.loss_mask)


def test_qwen2_is_chatml(tiny_tokenizer):
    a = Renderer(tiny_tokenizer, "qwen2").render(EPISODE)
    b = Renderer(tiny_tokenizer, "chatml").render(EPISODE)
    assert a.input_ids == b.input_ids and a.loss_mask == b.loss_mask


def test_chatml_recipient_routing_and_diff_marker(tiny_tokenizer):
    traj = Trajectory(
        "gui-1",
        [
            Turn("task", "<image>\nOpen settings", image="shot.png"),
            Turn("agent", "Thought: gear icon.\nAction: click the gear.", recipient="all", end_turn=False),
            Turn("agent", "pyautogui.click(x=0.9, y=0.1)", recipient="os", end_turn=True),
        ],
    )
    out = Renderer(tiny_tokenizer, "chatml").render(traj)
    assert runs(tiny_tokenizer, out) == [
        (
            "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>\nOpen settings<|im_end|>\n"
            "<|im_start|>assistant<|recipient|>",
            False,
        ),
        ("all\nThought: gear icon.\nAction: click the gear.<|im_end|>", True),
        ("\n<|im_start|>assistant<|recipient|>", False),
        ("os\npyautogui.click(x=0.9, y=0.1)<|diff_marker|>", True),
        ("\n", False),
    ]


def test_aguvis_reference_rendering(tiny_tokenizer, shared_data):
    """The shared AGUVIS planning record renders to the shared reference text, byte for byte."""
    folder = shared_data("aguvis")
    record = json.loads((folder / "example_stage2_planning.json").read_text())
    role = {"system": "system", "human": "task", "gpt": "agent"}
    turns = [
        Turn(
            role[c["from"]],
            c["value"],
            image=record["image"] if "<image>" in c["value"] else None,
            recipient=c.get("recipient"),
            end_turn=c.get("end_turn"),
        )
        for c in record["conversations"]
    ]
    out = Renderer(tiny_tokenizer, "chatml").render(Trajectory("aguvis", turns))
    # The file adds one trailing newline after the rendering.
    expected = (folder / "example_stage2_rendered.txt").read_text().removesuffix("\n")
    assert "".join(s.text for s in out.segments) == expected
    assert tiny_tokenizer.decode(out.input_ids) == expected


def test_hf_template_matches_builtin(tiny_tokenizer):
    a = Renderer(tiny_tokenizer, "tiny").render(EPISODE)
    b = Renderer(tiny_tokenizer, "hf").render(EPISODE)
    assert a.input_ids == b.input_ids
    assert a.loss_mask == b.loss_mask


def test_hf_template_without_generation_markers_is_refused(tiny_tokenizer):
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(RenderError, match="generation"):
        Renderer(tok, "hf").render(EPISODE)


def test_empty_mask_names_the_record(tiny_tokenizer):
    traj = Trajectory("no-agent-42", [Turn("task", "hello"), Turn("observation", "Observation: x")])
    with pytest.raises(RenderError, match="no-agent-42"):
        render(traj, "tiny", tiny_tokenizer)


def test_unknown_template(tiny_tokenizer):
    with pytest.raises(RenderError, match="unknown template"):
        Renderer(tiny_tokenizer, "vicuna")


def test_sampled_token_ids_are_used_verbatim(tiny_tokenizer):
    end = tiny_tokenizer.convert_tokens_to_ids("<|end|>")
    sampled = [5, 6, 7, end]  # what a sampler produced; not what tokenizing the text would give
    traj = Trajectory("s", [Turn("task", "go"), Turn("agent", "whatever text", token_ids=sampled)])
    out = Renderer(tiny_tokenizer, "tiny").render(traj)
    trained = [i for i, m in zip(out.input_ids, out.loss_mask, strict=True) if m]
    assert trained == sampled
    # A turn cut off by the token limit is closed with the end-of-turn token.
    traj.turns[1].token_ids = [5, 6, 7]
    out = Renderer(tiny_tokenizer, "tiny").render(traj)
    assert [i for i, m in zip(out.input_ids, out.loss_mask, strict=True) if m] == [5, 6, 7, end]


def test_train_override(tiny_tokenizer):
    traj = Trajectory("o", [Turn("task", "go"), Turn("agent", "OK", train=False), Turn("agent", "yes")])
    out = Renderer(tiny_tokenizer, "chatml").render(traj)
    trained_text = tiny_tokenizer.decode([i for i, m in zip(out.input_ids, out.loss_mask, strict=True) if m])
    assert trained_text == "yes<|im_end|>"


def test_show_marks_trained_spans(tiny_tokenizer):
    out = Renderer(tiny_tokenizer, "tiny").render(EPISODE)
    plain = show(out, color=False)
    assert "[[Action: take apple 1 from countertop 1<|end|>]]" in plain
    assert "\x1b[32m" in show(out, color=True)


# --- Property: trained segments are exactly the agent turns ---------------------------------------
END = {"tiny": "<|end|>", "chatml": "<|im_end|>", "llama3": "<|eot_id|>"}
TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="<>\x00"), min_size=1, max_size=25)


@st.composite
def conversations(draw):
    turns = []
    if draw(st.booleans()):
        turns.append(Turn("system", draw(TEXT)))
    for i in range(draw(st.integers(1, 5))):
        turns.append(Turn("task" if i == 0 else "observation", draw(TEXT)))
        turns.append(Turn("agent", draw(TEXT)))
    if draw(st.booleans()):
        turns.append(Turn("observation", draw(TEXT)))
    return Trajectory("prop", turns)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(conv=conversations(), template=st.sampled_from(sorted(END)))
def test_trained_runs_are_exactly_agent_turns(tiny_tokenizer, conv, template):
    renderer = Renderer(tiny_tokenizer, template)
    out = renderer.render(conv)
    trained = [text for text, bit in runs(tiny_tokenizer, out) if bit]
    assert trained == [t.text + END[template] for t in conv.agent_turns]
    # Every agent turn's prompt is an exact prefix of the full rendering.
    for i, turn in enumerate(conv.turns):
        if turn.role == "agent":
            prompt = renderer.prompt_ids(conv.turns[:i])
            assert out.input_ids[: len(prompt)] == prompt
            assert out.loss_mask[len(prompt) - 1] == 0 and out.loss_mask[len(prompt)] == 1


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(conv=conversations())
def test_llama2_trained_runs(tiny_tokenizer, conv):
    renderer = Renderer(tiny_tokenizer, "llama2")
    out = renderer.render(conv)
    trained = [text for text, bit in runs(tiny_tokenizer, out) if bit]
    assert trained == [f" {t.text} </s>" for t in conv.agent_turns]
    for i, turn in enumerate(conv.turns):
        if turn.role == "agent":
            prompt = renderer.prompt_ids(conv.turns[:i])
            assert out.input_ids[: len(prompt)] == prompt


def test_every_builtin_template_is_tested():
    assert set(TEMPLATES) - {"qwen2"} == set(GOLDEN)


def test_render_cli_jsonl_and_show(tmp_path):
    import subprocess
    import sys

    data = tmp_path / "eto.json"
    conv = [
        {"from": "human", "value": "Interact with a household."},
        {"from": "gpt", "value": "OK"},
        {"from": "human", "value": "Your task is to: put a apple in fridge."},
        {"from": "gpt", "value": "Thought: go.\nAction: go to fridge 1"},
        {"from": "human", "value": "Observation: The fridge 1 is closed."},
        {"from": "gpt", "value": "Action: open fridge 1"},
    ]
    data.write_text(json.dumps([{"id": "r0", "conversations": conv}]))
    cmd = [sys.executable, "-m", "trajkit", "render", str(data), "--template", "llama2", "--format", "jsonl"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["id"] == "r0" and len(record["input_ids"]) == len(record["loss_mask"])
    trained = [s["text"] for s in record["segments"] if s["trained"]]
    assert trained == [
        " OK </s>",
        " Thought: go.\nAction: go to fridge 1 </s>",
        " Action: open fridge 1 </s>",
    ]
    proc = subprocess.run([*cmd[:-2], "--show"], capture_output=True, text=True)
    assert proc.returncode == 0 and "[[ Action: open fridge 1 </s>]]" in proc.stdout
    bad = subprocess.run([*cmd[:5], "--template", "vicuna"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown template" in bad.stderr and "Traceback" not in bad.stderr
