import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from trajkit.cli import app
from trajkit.data.io import write_trajectories
from trajkit.data.schema import Trajectory, Turn

runner = CliRunner()


def test_parse_json():
    result = runner.invoke(
        app, ["gui", "parse", "pyautogui.moveTo(x=0.1, y=0.2)\npyautogui.dragTo(x=0.3, y=0.4)", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [{"type": "drag", "x": 0.1, "y": 0.2, "to_x": 0.3, "to_y": 0.4}]


def test_parse_pixels():
    result = runner.invoke(
        app,
        [
            "gui",
            "parse",
            "pyautogui.click(960, 540)",
            "--json",
            "--scale",
            "px",
            "--width",
            "1920",
            "--height",
            "1080",
        ],
    )
    assert json.loads(result.stdout) == [{"type": "click", "x": 0.5, "y": 0.5}]


def test_parse_error_exits_2_without_traceback():
    result = runner.invoke(app, ["gui", "parse", "__import__('os').system('ls')", "--json"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_render_styles():
    text = "pyautogui.click(x=0.8875, y=0.2281)"
    expected = {
        "aguvis": "pyautogui.click(x=0.8875, y=0.2281)",
        "pyautogui": "pyautogui.click(0.8875, 0.2281)",
        "uitars": "click(start_box='(887.5,228.1)')",
        "osatlas": "CLICK <point>[[887.5,228.1]]</point>",
    }
    for style, out in expected.items():
        result = runner.invoke(app, ["gui", "render", text, "--to", style])
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == out
    result = runner.invoke(app, ["gui", "render", "click(start_box='(500,500)')", "--to", "aguvis"])
    assert result.stdout.strip() == "pyautogui.click(x=0.5, y=0.5)"


def test_render_error():
    result = runner.invoke(app, ["gui", "render", "pyautogui.tripleClick(x=0.1, y=0.1)", "--to", "osatlas"])
    assert result.exit_code == 2 and "error: osatlas has no form" in result.stderr
    result = runner.invoke(app, ["gui", "render", "mobile.back()", "--to", "latex"])
    assert result.exit_code == 2 and "unknown style" in result.stderr


def test_eval_grounding(tmp_path):
    gold = tmp_path / "g.jsonl"
    pred = tmp_path / "p.jsonl"
    gold.write_text(
        json.dumps({"id": "1", "bbox": [0, 0, 0.5, 0.5], "platform": "web", "element_type": "text"})
        + "\n"
        + json.dumps({"id": "2", "bbox": [0.5, 0.5, 1, 1], "platform": "ios", "element_type": "icon"})
        + "\n"
    )
    pred.write_text(
        json.dumps({"id": "1", "completion": "pyautogui.click(x=0.2, y=0.2)"})
        + "\n"
        + json.dumps({"id": "2", "point": [0.1, 0.1]})
        + "\n"
    )
    result = runner.invoke(app, ["gui", "eval-grounding", "--pred", str(pred), "--gold", str(gold)])
    assert result.exit_code == 0, result.output
    assert "grounding accuracy: 50.00% (1/2)" in result.stdout
    assert "web" in result.stdout and "icon" in result.stdout
    result = runner.invoke(app, ["gui", "eval-grounding", "--pred", str(pred), "--gold", str(gold), "--json"])
    report = json.loads(result.stdout)
    assert report["accuracy"] == 0.5 and report["by_platform"]["web"]["correct"] == 1
    result = runner.invoke(
        app, ["gui", "eval-grounding", "--pred", str(tmp_path / "nope"), "--gold", str(gold)]
    )
    assert result.exit_code == 2 and result.stderr.startswith("error: ")


def test_eval_steps(tmp_path):
    gold = tmp_path / "g.jsonl"
    pred = tmp_path / "p.jsonl"
    gold.write_text(json.dumps({"id": "1", "action": "mobile.back()"}) + "\n")
    pred.write_text(json.dumps({"id": "1", "completion": "mobile.back()"}) + "\n")
    result = runner.invoke(app, ["gui", "eval-steps", "--pred", str(pred), "--gold", str(gold)])
    assert result.exit_code == 0 and "step success rate: 100.00% (1/1)" in result.stdout


def test_gui_cli_does_not_import_torch():
    code = (
        "import sys, trajkit.cli.gui, trajkit.gui.metrics, trajkit.gui.reasoning, trajkit.gui.packing, "
        "trajkit.gui.grounding_data, trajkit.gui.click_grounding; "
        "print(any(m in sys.modules for m in ('torch', 'transformers')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _one_line_error(result, *parts: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output
    for part in parts:
        assert part in lines[0], (part, lines[0])


def test_eval_grounding_on_screenspot_and_mind2web(shared_data, tmp_path):
    web = shared_data("gui", "screenspot_v2", "screenspot_web_v2.json")
    m2w = shared_data("gui", "mind2web_seeclick", "mind2web_data_test_website.json")
    rows = json.loads(web.read_text())
    # Made-up predictions: the box centre for the first 100 records (ids {img_filename}#{index}).
    preds = []
    for i, row in enumerate(rows[:100]):
        (x1, y1, x2, y2), (w, h) = row["bbox"], row["img_size"]
        preds.append({"id": f"{row['img_filename']}#{i}", "x": (x1 + x2) / 2 / w, "y": (y1 + y2) / 2 / h})
    episode = json.loads(m2w.read_text())[0]
    b = episode["actions"][0]["bbox"]
    name = f"{episode['annotation_id']}-{episode['actions'][0]['action_uid']}.jpg#0"
    preds.append({"id": name, "x": (b["x"] + b["width"] / 2) / 1280, "y": (b["y"] + b["height"] / 2) / 720})
    pred = tmp_path / "p.jsonl"
    pred.write_text("".join(json.dumps(p) + "\n" for p in preds))

    args = ["gui", "eval-grounding", "--pred", str(pred), "--gold", str(web)]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["total"] == 437 and report["correct"] == 100 and report["missing"] == 337
    assert report["accuracy"] == pytest.approx(100 / 437) and report["extra"] == 1
    assert set(report["by_platform"]) == {"web"}
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and "grounding accuracy: 22.88% (100/437)  95% CI [" in result.stdout

    both = [*args, "--gold", str(m2w), "--image-size", "1280,720", "--json"]
    report = json.loads(runner.invoke(app, both).stdout)
    assert report["total"] == 437 + 1371 and report["correct"] == 101
    assert report["by_platform"]["mind2web-website"]["correct"] == 1

    forced = runner.invoke(app, [*args, "--gold-format", "screenspot", "--json"])
    assert json.loads(forced.stdout)["correct"] == 100


def test_eval_grounding_bad_input_is_one_line(shared_data, tmp_path):
    web = shared_data("gui", "screenspot_v2", "screenspot_web_v2.json")
    m2w = shared_data("gui", "mind2web_seeclick", "mind2web_data_test_task.json")
    pred = tmp_path / "p.jsonl"
    pred.write_text(json.dumps({"id": "x", "x": 0.5, "y": 0.5}) + "\n")
    base = ["gui", "eval-grounding", "--pred", str(pred)]
    first = json.loads(web.read_text())[0]["img_filename"]
    # With --images, every record's image must be there.
    result = runner.invoke(app, [*base, "--gold", str(web), "--images", str(tmp_path)])
    _one_line_error(result, str(web), f"record 0 ({first}#0)", "field 'img_filename'", "not found")
    # Mind2Web has no image size of its own.
    result = runner.invoke(app, [*base, "--gold", str(m2w)])
    _one_line_error(result, str(m2w), "record 0", "field 'img_size'", "--image-size")
    _one_line_error(runner.invoke(app, [*base, "--gold", str(m2w), "--image-size", "big"]), "--image-size")
    _one_line_error(runner.invoke(app, [*base, "--gold", str(web), "--gold-format", "coco"]), "--gold-format")
    # A ScreenSpot file read as Mind2Web names what it lacks.
    result = runner.invoke(app, [*base, "--gold", str(web), "--gold-format", "mind2web"])
    _one_line_error(result, str(web), "episode 0", "field 'annotation_id'")
    bad = tmp_path / "bad.json"
    rows = json.loads(web.read_text())[:3]
    rows[2]["bbox"] = "top left"
    bad.write_text(json.dumps(rows))
    result = runner.invoke(app, [*base, "--gold", str(bad)])
    _one_line_error(result, str(bad), "record 2", "field 'bbox'")
    nameless = tmp_path / "nameless.jsonl"
    nameless.write_text(json.dumps({"x": 0.5, "y": 0.5}) + "\n")
    result = runner.invoke(app, ["gui", "eval-grounding", "--pred", str(nameless), "--gold", str(web)])
    _one_line_error(result, str(nameless), "record 0", "field 'id'")


def _episode(task_id: str, code: str, boxes=None) -> Trajectory:
    meta = {} if boxes is None else {"target_boxes": boxes}
    turns = [
        Turn("task", "Instruction: click"),
        Turn("observation", "<image>"),
        Turn("agent", "Action: click", recipient="all", end_turn=False),
        Turn("agent", code, recipient="os", end_turn=True),
    ]
    return Trajectory(f"r/{task_id}", turns, task_id=task_id, env="miniwob", split="test", metadata=meta)


def test_eval_clicks(tmp_path):
    expert = write_trajectories(
        [
            _episode("click-button/1000000", "pyautogui.click(x=0.2, y=0.2)", [[0.1, 0.1, 0.3, 0.3]]),
            _episode("focus-text/1000000", "pyautogui.click(x=0.5, y=0.5)", [[0.4, 0.4, 0.6, 0.6]]),
        ],
        tmp_path / "expert.jsonl",
    )
    enforced = write_trajectories(
        [
            _episode("click-button/1000000", "pyautogui.click(x=0.25, y=0.15)"),
            _episode("focus-text/1000000", "pyautogui.click(x=0.9, y=0.9)"),
        ],
        tmp_path / "enforced.jsonl",
    )
    self_plan = write_trajectories(
        [_episode("focus-text/1000000", "pyautogui.click(x=160, y=210)")], tmp_path / "self.jsonl"
    )
    args = ["gui", "eval-clicks", str(enforced), str(self_plan), "--gold", str(expert)]
    result = runner.invoke(app, [*args, "--width", "320", "--height", "420", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["correct"], report["total"], report["accuracy"]) == (2, 3, pytest.approx(2 / 3))
    assert report["by_task"]["focus-text"]["correct"] == 1 and report["by_task"]["click-button"]["total"] == 1
    assert report["ci95"][0] < 2 / 3 < report["ci95"][1]
    # Without the screen size, 160/210 read as thousandths (the parser's auto scale): a miss.
    result = runner.invoke(app, args)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].startswith("first-click grounding: 33.33% (1/3)  95% CI [6.2, 79.2]  not_click=0")
    assert lines[1] == "by task:" and lines[3] == "  focus-text      0.00%  (0/2)  [0.0, 65.8]"
    # Gold without the oracle's boxes: one line, naming the field.
    result = runner.invoke(app, ["gui", "eval-clicks", str(enforced), "--gold", str(enforced)])
    _one_line_error(result, "metadata.target_boxes")
    result = runner.invoke(app, ["gui", "eval-clicks", str(tmp_path / "nope.jsonl"), "--gold", str(expert)])
    _one_line_error(result, "nope.jsonl")
