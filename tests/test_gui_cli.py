import json
import subprocess
import sys

from typer.testing import CliRunner

from trajkit.cli import app

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
        "import sys, trajkit.cli.gui, trajkit.gui.metrics, trajkit.gui.reasoning, trajkit.gui.packing; "
        "print(any(m in sys.modules for m in ('torch', 'transformers')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
