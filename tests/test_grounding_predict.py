"""Grounding records from oracle trajectories, and a policy's one-step grounding predictions."""

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from trajkit.cli import app
from trajkit.data.io import write_trajectories
from trajkit.data.schema import Trajectory, Turn
from trajkit.gui.grounding_data import GroundingDataError, detect_format, read_gold

runner = CliRunner()


def _shot(path: Path, colour: str) -> str:
    Image.new("RGB", (160, 210), colour).save(path)
    return str(path)


def _oracle_episode(
    folder: Path, task: str, seed: int, steps: list[tuple[str, str, list | None]]
) -> Trajectory:
    """An episode as MiniWoB++'s oracle writes it: per step a screenshot, a plan turn with the step's
    `Action:` line, an `os` code turn, and the clicked element's box (None: not a click)."""
    turns = [Turn("system", "You are a GUI agent."), Turn("task", f"Instruction: do {task}")]
    boxes = []
    for k, (action, code, box) in enumerate(steps):
        image = _shot(folder / f"{task}-{seed}-{k}.png", ["white", "grey", "black"][k % 3])
        turns.append(Turn("observation", "<image>", image=image))
        turns.append(Turn("agent", f"Thought: next.\nAction: {action}", recipient="all", end_turn=False))
        turns.append(Turn("agent", code, recipient="os", end_turn=True))
        boxes.append(box)
    meta = {"task_name": task, "target_boxes": boxes}
    return Trajectory(
        f"expert/{task}/{seed}", turns, task_id=f"{task}/{seed}", env="miniwob", split="test", metadata=meta
    )


@pytest.fixture
def oracle_file(tmp_path) -> Path:
    episodes = [
        _oracle_episode(
            tmp_path,
            "click-button",
            7,
            [("Click the OK button.", "pyautogui.click(x=0.2, y=0.3)", [0.1, 0.2, 0.3, 0.4])],
        ),
        _oracle_episode(
            tmp_path,
            "enter-text",
            8,
            [
                ("Click the text field.", "pyautogui.click(x=0.5, y=0.5)", [0.2, 0.45, 0.8, 0.55]),
                ("Type the word.", "pyautogui.write(message='hi')", None),
                ("Click Submit.", "pyautogui.click(x=0.5, y=0.9)", [0.4, 0.85, 0.6, 0.95]),
            ],
        ),
    ]
    return write_trajectories(episodes, tmp_path / "expert.jsonl")


def test_click_steps_of_oracle_trajectories_become_grounding_records(oracle_file):
    assert detect_format(oracle_file) == "trajectories"
    rows = read_gold([oracle_file])
    assert [r["id"] for r in rows] == [
        "expert/click-button/7#0",
        "expert/enter-text/8#0",
        "expert/enter-text/8#2",
    ]
    assert [r["instruction"] for r in rows] == [
        "Click the OK button.",
        "Click the text field.",
        "Click Submit.",
    ]
    assert [r["element_type"] for r in rows] == ["click-button", "enter-text", "enter-text"]
    assert (
        rows[2]["bbox"] == [0.4, 0.85, 0.6, 0.95]
        and rows[2]["normalized"]
        and rows[2]["platform"] == "miniwob"
    )
    # each record's screenshot is the one its step was taken on (the typing step's is skipped)
    assert rows[2]["img_filename"].endswith("enter-text-8-2.png") and Path(rows[2]["img_filename"]).is_file()


def test_trajectories_without_boxes_are_refused_by_name(tmp_path, oracle_file):
    records = [json.loads(line) for line in oracle_file.read_text().splitlines()]
    del records[1]["metadata"]["target_boxes"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(
        GroundingDataError,
        match=r"bad.jsonl: trajectory 'expert/enter-text/8': field 'metadata.target_boxes': missing",
    ):
        read_gold([bad])
    records[1]["metadata"]["target_boxes"] = [[0.1, 0.1, 0.2, 0.2]]
    bad.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(GroundingDataError, match=r"1 boxes for 3 steps"):
        read_gold([bad])


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory) -> Path:
    from trajkit.policy.tiny_vlm import make_tiny_vlm

    return make_tiny_vlm(tmp_path_factory.mktemp("vlm") / "tiny-vlm", ["pyautogui.click(x=0.25, y=0.5)"])


class ScriptedBackend:
    """Answers every prompt with the same code; keeps what it was asked."""

    def __init__(self, renderer, code: str):
        self.answer = renderer.encode(code) + renderer.stop_ids[:1]
        self.calls = []

    def generate(self, prompts, sampling, seeds=None, keys=None, images=None):
        self.calls.append((prompts, images, sampling))
        return [list(self.answer) for _ in prompts]


def test_a_grounding_prompt_is_the_stage1_sample_up_to_its_answer(tiny_vlm, oracle_file):
    from trajkit.gui.samples import grounding_samples, load_gui_trajectories
    from trajkit.policy.vlm import load_vlm
    from trajkit.rollout.grounding import predict_grounding

    vlm = load_vlm(str(tiny_vlm))
    renderer = vlm.renderer()
    records = read_gold([oracle_file])
    backend = ScriptedBackend(renderer, "pyautogui.click(x=0.25, y=0.35)")
    rows = predict_grounding(backend, renderer, records, batch_size=2)
    assert [r["id"] for r in rows] == [r["id"] for r in records]
    assert (
        all(r["point"] == [0.25, 0.35] for r in rows)
        and rows[0]["completion"] == "pyautogui.click(x=0.25, y=0.35)"
    )
    (first, second), sampling = backend.calls, backend.calls[0][2]
    assert len(first[0]) == 2 and len(second[0]) == 1 and sampling.greedy  # batches of 2
    assert first[1][0] == [records[0]["img_filename"]]
    # What stage 1 trained on, token for token: the packed sample of the same screenshot and
    # instruction starts with the prompt (system, screenshot + instruction, `os` header).
    trajectories = load_gui_trajectories([str(oracle_file)])
    sample = next(
        s for s in grounding_samples(trajectories) if s.metadata["image"] == records[0]["img_filename"]
    )
    trained = renderer.render(sample).input_ids
    assert trained[: len(first[0][0])] == first[0][0]
    assert renderer.tokenizer.decode(first[0][0]).endswith("<|recipient|>os\n")


def test_predict_then_eval_grounding_from_the_cli(tiny_vlm, oracle_file, tmp_path):
    preds = tmp_path / "preds.jsonl"
    result = runner.invoke(
        app,
        [
            "gui",
            "predict-grounding",
            "--model",
            str(tiny_vlm),
            "--gold",
            str(oracle_file),
            "--out",
            str(preds),
            "--max-new-tokens",
            "8",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    assert [r["id"] for r in rows] == [
        "expert/click-button/7#0",
        "expert/enter-text/8#0",
        "expert/enter-text/8#2",
    ]
    assert all(set(r) == {"id", "completion", "point"} for r in rows)
    result = runner.invoke(
        app, ["gui", "eval-grounding", "--pred", str(preds), "--gold", str(oracle_file), "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (
        report["total"] == 3
        and report["missing"] == 0
        and set(report["by_element_type"]) == {"click-button", "enter-text"}
    )
    # A gold file that is not there: one line, no traceback, nothing written.
    out = tmp_path / "none.jsonl"
    result = runner.invoke(
        app,
        [
            "gui",
            "predict-grounding",
            "--model",
            str(tiny_vlm),
            "--gold",
            str(tmp_path / "nope.json"),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 2 and "nope.json" in result.stderr and "Traceback" not in result.output
    assert not out.exists()
