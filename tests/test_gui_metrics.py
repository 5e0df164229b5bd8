import json

import pytest

from trajkit.gui.actions import Click, Drag, Press, Scroll, Swipe, Write
from trajkit.gui.metrics import (
    action_matches,
    evaluate_grounding,
    evaluate_grounding_files,
    evaluate_steps,
    point_in_box,
    read_jsonl,
    step_matches,
)

GOLD = [
    {"id": "a", "bbox": [0.1, 0.1, 0.3, 0.3], "platform": "mobile", "element_type": "text"},
    {"id": "b", "bbox": [0.5, 0.5, 0.9, 0.9], "platform": "mobile", "element_type": "icon"},
    {"id": "c", "bbox": [0.0, 0.0, 0.2, 0.2], "platform": "web", "element_type": "icon"},
    {
        "id": "d",
        "bbox": [100, 100, 200, 200],
        "width": 1000,
        "height": 1000,
        "data_source": "web",
        "data_type": "text",
    },
    {"id": "e", "bbox": [0.4, 0.4, 0.6, 0.6], "platform": "desktop", "element_type": "text"},
]
PRED = [
    {"id": "a", "point": [0.2, 0.2]},
    {"id": "b", "completion": "<|recipient|>os\npyautogui.click(x=0.1, y=0.1)<|diff_marker|>"},
    {"id": "c", "action": {"type": "click", "x": 0.1, "y": 0.1}},
    {"id": "d", "x": 0.15, "y": 0.15},
    {"id": "zzz", "point": [0.5, 0.5]},
]


def _write(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_point_in_box():
    assert point_in_box((0.2, 0.2), (0.1, 0.1, 0.3, 0.3))
    assert point_in_box((0.1, 0.3), (0.1, 0.1, 0.3, 0.3))  # edges count
    assert not point_in_box((0.31, 0.2), (0.1, 0.1, 0.3, 0.3))


def test_grounding_accuracy_with_breakdown():
    report = evaluate_grounding(PRED, GOLD)
    assert (report.overall.correct, report.overall.total) == (3, 5)
    assert report.missing == 1 and report.extra == 1 and report.unparseable == 0
    d = report.to_dict()
    assert d["by_platform"]["mobile"] == {"total": 2, "correct": 1, "accuracy": 0.5}
    assert d["by_platform"]["web"]["correct"] == 2
    assert d["by_element_type"]["icon"] == {"total": 2, "correct": 1, "accuracy": 0.5}
    assert d["by_platform_and_type"]["desktop/text"]["correct"] == 0


def test_unreadable_prediction_counts_as_wrong():
    report = evaluate_grounding([{"id": "a", "completion": "os.system('x')"}], GOLD[:1])
    assert report.unparseable == 1 and report.accuracy == 0.0


def test_files_and_bad_input(tmp_path):
    pred = _write(tmp_path / "p.jsonl", PRED)
    gold = _write(tmp_path / "g.jsonl", GOLD)
    assert evaluate_grounding_files(pred, gold).overall.correct == 3
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a"}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        read_jsonl(bad)
    with pytest.raises(ValueError, match="twice"):
        evaluate_grounding([{"id": "a", "point": [0, 0]}] * 2, GOLD)


def test_action_matching_rules():
    assert action_matches(Click(0.2, 0.2), Click(0.25, 0.25))
    assert not action_matches(Click(0.9, 0.9), Click(0.25, 0.25))
    assert action_matches(Click(0.29, 0.29), Click(0.2, 0.2), bbox=(0.1, 0.1, 0.3, 0.3))
    assert not action_matches(Click(0.2, 0.2), Write("x"))
    assert action_matches(Write("Bread  Buns"), Write("bread buns"))
    assert action_matches(Press(("Enter",)), Press(("enter",)))
    assert action_matches(Scroll(-0.3), Scroll(-0.1)) and not action_matches(Scroll(0.3), Scroll(-0.1))
    assert action_matches(Swipe(0.5, 0.9, 0.5, 0.1), Swipe(0.4, 0.8, 0.45, 0.3))
    assert not action_matches(Swipe(0.5, 0.1, 0.5, 0.9), Swipe(0.4, 0.8, 0.45, 0.3))
    assert action_matches(Drag(0.1, 0.1, 0.5, 0.5), Drag(0.12, 0.1, 0.5, 0.52))
    assert not step_matches([Click(0.2, 0.2)], [Click(0.2, 0.2), Write("x")])


def test_step_success_rate():
    gold = [
        {"id": "1", "action": "pyautogui.click(x=0.2, y=0.2)", "bbox": [0.1, 0.1, 0.3, 0.3]},
        {"id": "2", "action": {"type": "write", "text": "hello"}},
        {"id": "3", "action": [{"type": "wait", "seconds": 3}, {"type": "back"}]},
        {"id": "4", "action": "mobile.home()"},
    ]
    pred = [
        {"id": "1", "completion": "pyautogui.click(x=0.29, y=0.11)<|diff_marker|>"},
        {"id": "2", "code": "pyautogui.write(message='Hello')"},
        {"id": "3", "completion": "mobile.wait(seconds=1)"},
    ]
    report = evaluate_steps(pred, gold)
    assert (report.success, report.total, report.type_correct, report.missing) == (2, 4, 2, 1)
    assert report.to_dict()["by_type"]["wait+back"]["correct"] == 0
