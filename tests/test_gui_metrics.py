import json

import pytest

from trajkit.data.schema import Trajectory, Turn
from trajkit.gui.actions import Click, Drag, Press, Scroll, Swipe, Write
from trajkit.gui.click_grounding import first_click, score_first_clicks, step_codes
from trajkit.gui.metrics import (
    action_matches,
    evaluate_grounding,
    evaluate_grounding_files,
    evaluate_steps,
    point_in_box,
    read_jsonl,
    step_matches,
    wilson_interval,
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
    mobile = {"total": 2, "correct": 1, "accuracy": 0.5, "ci95": [0.0945, 0.9055]}
    assert d["by_platform"]["mobile"] == mobile
    assert d["by_platform"]["web"]["correct"] == 2
    assert d["by_element_type"]["icon"] == mobile
    assert d["ci95"] == [0.2307, 0.8824]  # 3/5, Wilson
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


def test_wilson_interval():
    assert wilson_interval(0, 0) == (0.0, 0.0)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and 0.27 < hi < 0.28  # not the degenerate [0, 0] of a normal interval
    lo, hi = wilson_interval(10, 10)
    assert 0.72 < lo < 0.73 and hi == 1.0
    lo, hi = wilson_interval(50, 100)
    assert abs(lo - 0.4038) < 1e-3 and abs(hi - 0.5962) < 1e-3


# ---- click grounding of rollouts: first click vs the oracle's DOM boxes -------------------------


def _episode(
    task_id: str, codes: list[str], target_boxes=None, alternatives=None, plan: bool = True
) -> Trajectory:
    turns = [Turn("task", "Instruction: do it")]
    for code in codes:
        turns.append(Turn("observation", "<image>", image="s.png"))
        if plan:
            turns.append(Turn("agent", "Thought: t\nAction: a", recipient="all", end_turn=False))
        turns.append(Turn("agent", code, recipient="os", end_turn=True))
    meta = {"task_name": task_id.rsplit("/", 1)[0]}
    if target_boxes is not None:
        meta["target_boxes"] = target_boxes
    if alternatives is not None:
        meta["target_alternatives"] = alternatives
    return Trajectory(f"x/{task_id}", turns, task_id=task_id, env="miniwob", split="test", metadata=meta)


# Hand-made oracle records: a button at the top left; two checkboxes (either is a right first click);
# a task whose first step is no click (not scored).
EXPERTS = [
    _episode("click-button/1000000", ["pyautogui.click(x=0.2, y=0.2)"], [[0.1, 0.1, 0.3, 0.3]]),
    _episode("click-button/1000001", ["pyautogui.click(x=0.8, y=0.8)"], [[0.7, 0.7, 0.9, 0.9]], [None]),
    _episode(
        "click-checkboxes/1000000",
        ["pyautogui.click(x=0.1, y=0.5)", "pyautogui.click(x=0.5, y=0.9)"],
        [[0.05, 0.45, 0.15, 0.55], [0.4, 0.85, 0.6, 0.95]],
        [[[0.05, 0.65, 0.15, 0.75]], None],
    ),
    _episode("scroll-text-2/1000000", ["pyautogui.scroll(page=-1)"], [None]),
]


def test_step_codes_and_first_click():
    ep = _episode("t/1", ["pyautogui.click(x=0.25, y=0.5)", "pyautogui.write(message='a')"])
    assert step_codes(ep) == ["pyautogui.click(x=0.25, y=0.5)", "pyautogui.write(message='a')"]
    assert first_click(ep) == (0.25, 0.5)
    assert first_click(_episode("t/1", ["pyautogui.doubleClick(x=0.1, y=0.2)"], plan=False)) == (0.1, 0.2)
    assert first_click(_episode("t/1", ["pyautogui.write(message='a')"])) == "not_click"
    assert first_click(_episode("t/1", ["import os; os.system('x')"])) == "unparseable"
    # Pixels need the screenshot's size.
    assert first_click(_episode("t/1", ["pyautogui.click(x=80, y=210)"]), 320, 420) == (0.25, 0.5)


def test_first_click_grounding_on_hand_made_boxes():
    rollouts = [
        _episode("click-button/1000000", ["pyautogui.click(x=0.3, y=0.1)"]),  # on the box edge: in
        _episode("click-button/1000000", ["pyautogui.click(x=0.5, y=0.5)"]),  # out
        _episode("click-button/1000001", ["pyautogui.write(message='hi')"]),  # no click: wrong
        # The second checkbox first is right too; the later steps do not count.
        _episode("click-checkboxes/1000000", ["pyautogui.click(x=0.1, y=0.7)", "pyautogui.click(x=0, y=0)"]),
        _episode("click-checkboxes/1000000", ["pyautogui.click(x=0.1, y=0.6)"]),  # between the two
        _episode("scroll-text-2/1000000", ["pyautogui.click(x=0.5, y=0.5)"]),  # not a click task
        _episode("click-button/7", ["pyautogui.click(x=0.2, y=0.2)"]),  # no oracle record
    ]
    report = score_first_clicks(rollouts, EXPERTS)
    assert (report.overall.correct, report.overall.total) == (2, 5)
    assert (report.not_click, report.unparseable, report.no_expert, report.not_click_task) == (1, 0, 1, 1)
    d = report.to_dict()
    assert d["by_task"]["click-button"]["correct"] == 1 and d["by_task"]["click-button"]["total"] == 3
    assert d["by_task"]["click-checkboxes"] == {
        "total": 2,
        "correct": 1,
        "accuracy": 0.5,
        "ci95": [0.0945, 0.9055],
    }
    assert d["ci95"] == [round(v, 4) for v in wilson_interval(2, 5)]
    # The oracle scored against itself is always right.
    assert score_first_clicks(EXPERTS, EXPERTS).accuracy == 1.0


def test_click_grounding_needs_oracle_boxes():
    plain = _episode("click-button/1000000", ["pyautogui.click(x=0.2, y=0.2)"])
    with pytest.raises(ValueError, match="metadata.target_boxes"):
        score_first_clicks([plain], [plain])
    broken = _episode("click-button/1000000", ["pyautogui.click(x=0.2, y=0.2)"], [[0.1, 0.1]])
    with pytest.raises(ValueError, match=r"target_boxes\[0\]"):
        score_first_clicks([plain], [broken])
    broken = _episode("click-button/1000000", ["pyautogui.click(x=0.2, y=0.2)"], [[0, 0, 1, 1]], [[0.1]])
    with pytest.raises(ValueError, match=r"target_alternatives\[0\]"):
        score_first_clicks([plain], [broken])


def test_miniwob_oracle_records_target_boxes_of_its_clicks(tmp_path):
    """In real Chromium, on held-out seeds: each oracle click lands in its recorded boxes, steps
    that are not clicks have none, and a policy clicking one fixed point scores below the oracle."""
    import os

    from trajkit.envs.miniwob import TEST_SEED_OFFSET, MiniWoBEnv, availability, oracle_trajectory
    from trajkit.gui.prompts import parse_completion

    reason = availability()
    if reason is not None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"MiniWoB++ must run in CI: {reason}")
        pytest.skip(reason)
    tasks = ["click-button", "click-checkboxes", "enter-text", "scroll-text-2"]
    experts = []
    with MiniWoBEnv(tasks=tasks, scale=2) as env:
        for name in tasks:
            for seed in range(TEST_SEED_OFFSET, TEST_SEED_OFFSET + 3):
                traj = oracle_trajectory(env, MiniWoBEnv.task_for(name, seed, "test"), 0, image_dir=tmp_path)
                assert traj.success, traj.id
                boxes = traj.metadata["target_boxes"]
                more = traj.metadata["target_alternatives"]
                codes = step_codes(traj)
                assert len(boxes) == len(more) == len(codes) == traj.metadata["steps"]
                for code, box, extra in zip(codes, boxes, more, strict=True):
                    action = parse_completion(code)[0]
                    if action.type == "click":
                        assert all(0 <= v <= 1 for b in [box, *(extra or [])] for v in b)
                        assert point_in_box((action.x, action.y), box), (traj.id, code, box)
                    else:
                        assert box is None and extra is None, (traj.id, code)
                if name == "click-checkboxes" and len(codes) > 1:  # not "select nothing"
                    assert more[0], traj.id  # the checkbox's label counts as well
                experts.append(traj)
    assert score_first_clicks(experts, experts).accuracy == 1.0
    fixed = [_episode(t.task_id, ["pyautogui.click(x=0.5, y=0.05)"]) for t in experts]
    report = score_first_clicks(fixed, experts)
    assert report.overall.total == 9 and report.not_click_task == 3 and report.accuracy < 0.5
