"""The shared AGUVIS examples load, round-trip and render exactly as their reference renders."""

from __future__ import annotations

import json

import pytest

from trajkit.data.io import load_trajectories, write_trajectories
from trajkit.gui.prompts import with_default_system
from trajkit.render import Renderer


@pytest.mark.parametrize("stage", ["stage1_grounding", "stage2_planning"])
def test_example_renders_exactly(shared_data, tiny_tokenizer, stage):
    folder = shared_data("aguvis")
    traj = load_trajectories(str(folder / f"example_{stage}.json"), format="aguvis")[0]
    out = Renderer(tiny_tokenizer, "qwen2").render(with_default_system(traj))
    expected = (folder / f"example_{stage.split('_')[0]}_rendered.txt").read_text().removesuffix("\n")
    assert "".join(s.text for s in out.segments) == expected
    assert tiny_tokenizer.decode(out.input_ids) == expected
    # Only the assistant turns (recipient name, content, end marker) are trained.
    trained = tiny_tokenizer.decode([i for i, m in zip(out.input_ids, out.loss_mask, strict=True) if m])
    expected_trained = "".join(
        f"{t.recipient}\n{t.text}{'<|diff_marker|>' if t.end_turn else '<|im_end|>'}"
        for t in traj.agent_turns
    )
    assert trained == expected_trained


@pytest.mark.parametrize("stage", ["stage1_grounding", "stage2_planning"])
def test_example_round_trips(shared_data, tmp_path, stage):
    src = shared_data("aguvis") / f"example_{stage}.json"
    traj = load_trajectories(str(src), format="aguvis")
    out = tmp_path / "copy.json"
    write_trajectories(traj, out, format="aguvis", image_root=src.parent)
    written = json.loads(out.read_text())
    written = written[0] if isinstance(written, list) else written
    original = json.loads(src.read_text())
    assert written["image"] == original["image"]
    assert [(c["from"], c["value"]) for c in written["conversations"]] == [
        (c["from"], c["value"]) for c in original["conversations"]
    ]
    assert [(c.get("recipient"), c.get("end_turn")) for c in written["conversations"]] == [
        (c.get("recipient"), c.get("end_turn")) for c in original["conversations"]
    ]
