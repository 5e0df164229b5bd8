"""ScreenSpot-v2 and Mind2Web (SeeClick's format) read into trajkit's grounding records, from the
annotation files in ../shared/data/gui (images are not there: tests make tiny stand-ins)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trajkit.gui.grounding_data import (
    GroundingDataError,
    detect_format,
    read_gold,
    read_mind2web,
    read_screenspot,
)
from trajkit.gui.metrics import evaluate_grounding, evaluate_grounding_files

SCREENSPOT = {"desktop": 334, "mobile": 501, "web": 437}
# (episodes, actions, actions with a bbox): SeeClick skips the 14 + 2 without one.
MIND2WEB = {"task": (252, 2094, 2080), "website": (177, 1373, 1371)}


def _screenspot(shared_data, group: str) -> Path:
    return shared_data("gui", "screenspot_v2", f"screenspot_{group}_v2.json")


def _mind2web(shared_data, split: str) -> Path:
    return shared_data("gui", "mind2web_seeclick", f"mind2web_data_test_{split}.json")


@pytest.mark.parametrize("group", list(SCREENSPOT))
def test_screenspot_v2_records(shared_data, group):
    path = _screenspot(shared_data, group)
    raw = json.loads(path.read_text())
    records = read_screenspot(path)
    assert len(records) == len(raw) == SCREENSPOT[group]
    assert detect_format(path) == "screenspot"
    for i, (rec, src) in enumerate(zip(records, raw, strict=True)):
        assert rec["id"] == f"{src['img_filename']}#{i}"
        w, h = src["img_size"]
        x1, y1, x2, y2 = src["bbox"]
        want = [x1 / w, y1 / h, min(1.0, x2 / w), min(1.0, y2 / h)]  # one mobile box ends 1 px past
        assert rec["bbox"] == pytest.approx(want)
        assert all(0 <= v <= 1 for v in rec["bbox"]) and rec["normalized"] is True
        assert rec["platform"] == group and rec["element_type"] in ("text", "icon")
        assert (rec["width"], rec["height"]) == (w, h) and rec["instruction"] == src["instruction"]
    assert len({r["id"] for r in records}) == len(records)


@pytest.mark.parametrize("split", list(MIND2WEB))
def test_mind2web_seeclick_records(shared_data, split):
    path = _mind2web(shared_data, split)
    raw = json.loads(path.read_text())
    episodes, actions, with_box = MIND2WEB[split]
    assert len(raw) == episodes and sum(len(e["actions"]) for e in raw) == actions
    assert detect_format(path) == "mind2web"
    records = read_mind2web(path, image_size=(1280, 720))
    assert len(records) == with_box
    flat = [(e, a) for e in raw for a in e["actions"]]
    by_id = {r["id"]: r for r in records}
    for index, (episode, action) in enumerate(flat):
        name = f"{episode['annotation_id']}-{action['action_uid']}.jpg"
        rec = by_id.get(f"{name}#{index}")
        if "bbox" not in action:
            assert rec is None
            continue
        b = action["bbox"]
        want = [b["x"] / 1280, b["y"] / 720, (b["x"] + b["width"]) / 1280, (b["y"] + b["height"]) / 720]
        assert rec["bbox"] == pytest.approx([min(1.0, max(0.0, v)) for v in want])
        assert rec["img_filename"] == name and rec["img_size"] == [1280, 720]
        assert rec["platform"] == f"mind2web-{split}"
        assert rec["element_type"] == action["operation"]["op"].lower()
        assert rec["instruction"] == episode["confirmed_task"]
    assert {r["element_type"] for r in records} == {"click", "type", "select"}


def test_mind2web_needs_an_image_size(shared_data):
    path = _mind2web(shared_data, "website")
    with pytest.raises(GroundingDataError) as err:
        read_mind2web(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "record 0" in message
    assert "'img_size'" in message and "--images" in message


def test_image_folder_gives_mind2web_sizes_and_names_a_missing_image(shared_data, tmp_path):
    from PIL import Image

    path = _mind2web(shared_data, "website")
    episode = json.loads(path.read_text())[0]
    names = [f"{episode['annotation_id']}-{a['action_uid']}.jpg" for a in episode["actions"]]
    for name in names:
        Image.new("RGB", (640, 360)).save(tmp_path / name)
    one = tmp_path / "one.json"
    one.write_text(json.dumps([episode]))
    records = read_mind2web(one, images=tmp_path)
    assert len(records) == len(names) and all(r["img_size"] == [640, 360] for r in records)
    b = episode["actions"][0]["bbox"]
    assert records[0]["bbox"][0] == pytest.approx(b["x"] / 640)
    (tmp_path / names[1]).unlink()
    with pytest.raises(GroundingDataError) as err:
        read_mind2web(one, images=tmp_path)
    message = str(err.value)
    assert f"{names[1]}#1" in message and "'img_filename'" in message and "not found" in message


def test_screenspot_with_images(shared_data, tmp_path):
    from PIL import Image

    path = _screenspot(shared_data, "web")
    raw = json.loads(path.read_text())[:3]
    for row in raw:
        Image.new("RGB", (8, 8)).save(tmp_path / row["img_filename"])
    few = tmp_path / "few.json"
    few.write_text(json.dumps(raw))
    assert len(read_gold([few], images=tmp_path)) == 3
    raw.append(dict(raw[0], img_filename="gone.png"))
    few.write_text(json.dumps(raw))
    with pytest.raises(
        GroundingDataError, match=r"record 3 \(gone.png#3\): field 'img_filename': image gone.png"
    ):
        read_gold([few], images=tmp_path)


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"bbox": [1, 2, 3], "img_size": [10, 10]}, "bbox"),
        ({"bbox": [1, 2, 3, 4], "img_size": [10]}, "img_size"),
        ({"bbox": [5, 5, 1, 1], "img_size": [10, 10]}, "bbox"),
        ({"img_filename": 3, "bbox": [1, 2, 3, 4], "img_size": [10, 10]}, "img_filename"),
    ],
)
def test_bad_screenspot_records_name_file_record_and_field(tmp_path, row, field):
    good = {"img_filename": "a.png", "bbox": [1, 1, 2, 2], "img_size": [10, 10], "instruction": "x"}
    path = tmp_path / "ss.json"
    path.write_text(json.dumps([good, {**good, **row}]))
    with pytest.raises(GroundingDataError) as err:
        read_screenspot(path)
    message = str(err.value)
    assert message.startswith(f"{path}: record 1") and f"field '{field}'" in message and "\n" not in message


def test_bad_files(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    with pytest.raises(GroundingDataError, match="broken.json: invalid JSON"):
        read_gold([broken], "screenspot")
    other = tmp_path / "other.json"
    other.write_text(json.dumps([{"foo": 1}]))
    with pytest.raises(GroundingDataError, match="cannot tell its format"):
        read_gold([other])
    with pytest.raises(GroundingDataError, match="unknown gold format"):
        read_gold([other], "coco")
    gold = tmp_path / "g.jsonl"
    gold.write_text(json.dumps({"id": "1", "bbox": [10, 10, 20, 20]}) + "\n")
    with pytest.raises(
        GroundingDataError, match=r"g.jsonl: record on line 1 \(1\): 'bbox' is not normalized"
    ):
        read_gold([gold])


def test_duplicate_ids_across_files(shared_data, tmp_path):
    path = _screenspot(shared_data, "desktop")
    copy = tmp_path / "copy.json"
    copy.write_text(path.read_text())
    with pytest.raises(GroundingDataError, match=f"duplicate id \\(also in {path}\\)"):
        read_gold([path, copy])


def test_screenspot_accuracy_with_made_up_predictions(shared_data, tmp_path):
    """Centre clicks on every even record, a near miss on every odd one: half right, and the
    breakdown follows ScreenSpot's table (group x text/icon)."""
    paths = [_screenspot(shared_data, g) for g in SCREENSPOT]
    gold = read_gold(paths)
    assert len(gold) == sum(SCREENSPOT.values())
    preds = []
    for i, rec in enumerate(gold):
        x1, y1, x2, y2 = rec["bbox"]
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        if i % 2:  # just outside the box, on the screen
            options = [(x2 + 0.01, cy), (x1 - 0.01, cy), (cx, y2 + 0.01), (cx, y1 - 0.01)]
            cx, cy = next((x, y) for x, y in options if 0 <= x <= 1 and 0 <= y <= 1)
        preds.append({"id": rec["id"], "x": cx, "y": cy})
    # A pixel prediction on the first record: read against its own screen size.
    first = gold[0]
    cx = (first["bbox"][0] + first["bbox"][2]) / 2 * first["width"]
    cy = (first["bbox"][1] + first["bbox"][3]) / 2 * first["height"]
    preds[0] = {"id": first["id"], "completion": f"pyautogui.click(x={cx:.0f}, y={cy:.0f})"}
    report = evaluate_grounding(preds, gold).to_dict()
    assert report["total"] == 1272 and report["correct"] == 636
    assert set(report["by_platform"]) == set(SCREENSPOT)
    assert set(report["by_element_type"]) == {"text", "icon"}
    lo, hi = report["ci95"]
    assert lo < report["accuracy"] < hi
    pred_file = tmp_path / "p.jsonl"
    pred_file.write_text("".join(json.dumps(p) + "\n" for p in preds))
    assert evaluate_grounding_files(pred_file, paths).to_dict()["correct"] == report["correct"]
