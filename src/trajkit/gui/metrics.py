"""Grounding accuracy and step success for GUI agents.

Grounding (ScreenSpot style): a prediction is right when its point falls inside the gold target
box. Gold jsonl rows: `{"id", "bbox": [x1, y1, x2, y2], "platform", "element_type"}` with the box
normalized to 0-1 (`data_source`/`data_type` are read as platform/element type too; a pixel box is
accepted when the row gives `width` and `height`; `"normalized": true` says the box is 0-1 without
guessing). ScreenSpot-v2 and Mind2Web files are read into such rows by `gui.grounding_data`. Every
bucket carries a 95% Wilson interval (`ci95`). Prediction rows: `{"id"}` plus one of
`point: [x, y]` (normalized), `x` and `y`, `action` (a canonical action object), or model text in
`completion`/`text`/`code`, parsed as actions; the first action with a point counts.

Step success: the predicted step's actions match the gold step's one for one: same type, and the
point inside the gold `bbox` (when the step has one action and a box), else within
`distance_threshold` of the gold point; typed text, answers and app names equal after case and
space folding; keys equal; scrolls and swipes in the same direction; terminate with the same status.

A gold id without a prediction counts as wrong (`missing`), as does a prediction that cannot be
read (`unparseable`); predictions for unknown ids are counted in `extra` and otherwise ignored.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trajkit.data.stats import wilson_interval
from trajkit.gui.actions import (
    Action,
    ActionParseError,
    Answer,
    Drag,
    Hotkey,
    HScroll,
    OpenApp,
    Press,
    Scroll,
    SelectOption,
    Swipe,
    Terminate,
    Write,
    action_from_dict,
    action_point,
)
from trajkit.gui.grounding_data import gold_box, read_gold
from trajkit.gui.prompts import parse_completion

_TEXT_KEYS = ("completion", "text", "code")


# ---------------------------------------------------------------------------------------------
# reading


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a jsonl file; blank lines skipped, a bad line is an error naming it."""
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{n}: invalid JSON: {err.msg}") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{n}: expected a JSON object")
            rows.append(row)
    return rows


def index_by_id(rows: Iterable[Mapping[str, Any]], what: str) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for i, row in enumerate(rows):
        if "id" not in row:
            raise ValueError(f"{what} row {i} has no 'id'")
        key = str(row["id"])
        if key in out:
            raise ValueError(f"{what} has the id {key!r} twice")
        out[key] = row
    return out


# ---------------------------------------------------------------------------------------------
# reports


@dataclass
class Bucket:
    total: int = 0
    correct: int = 0

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def add(self, ok: bool) -> None:
        self.total += 1
        self.correct += int(ok)

    def to_dict(self) -> dict[str, Any]:
        lo, hi = wilson_interval(self.correct, self.total)
        return {
            "total": self.total,
            "correct": self.correct,
            "accuracy": self.accuracy,
            "ci95": [round(lo, 4), round(hi, 4)],
        }


@dataclass
class GroundingReport:
    overall: Bucket = field(default_factory=Bucket)
    by_platform: dict[str, Bucket] = field(default_factory=dict)
    by_element_type: dict[str, Bucket] = field(default_factory=dict)
    by_platform_and_type: dict[str, Bucket] = field(default_factory=dict)
    missing: int = 0
    unparseable: int = 0
    extra: int = 0

    @property
    def accuracy(self) -> float:
        return self.overall.accuracy

    def to_dict(self) -> dict[str, Any]:
        def table(buckets: dict[str, Bucket]) -> dict[str, Any]:
            return {k: buckets[k].to_dict() for k in sorted(buckets)}

        return {
            **self.overall.to_dict(),
            "missing": self.missing,
            "unparseable": self.unparseable,
            "extra": self.extra,
            "by_platform": table(self.by_platform),
            "by_element_type": table(self.by_element_type),
            "by_platform_and_type": table(self.by_platform_and_type),
        }


@dataclass
class StepReport:
    total: int = 0
    type_correct: int = 0
    success: int = 0
    missing: int = 0
    unparseable: int = 0
    extra: int = 0
    by_type: dict[str, Bucket] = field(default_factory=dict)

    @property
    def success_rate(self) -> float:
        return self.success / self.total if self.total else 0.0

    @property
    def type_accuracy(self) -> float:
        return self.type_correct / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "success": self.success,
            "success_rate": self.success_rate,
            "type_correct": self.type_correct,
            "type_accuracy": self.type_accuracy,
            "missing": self.missing,
            "unparseable": self.unparseable,
            "extra": self.extra,
            "by_type": {k: self.by_type[k].to_dict() for k in sorted(self.by_type)},
        }


# ---------------------------------------------------------------------------------------------
# grounding


def point_in_box(point: Sequence[float], box: Sequence[float]) -> bool:
    x, y = point
    x1, y1, x2, y2 = box
    return min(x1, x2) <= x <= max(x1, x2) and min(y1, y2) <= y <= max(y1, y2)


def _gold_box(row: Mapping[str, Any]) -> tuple[float, float, float, float]:
    try:
        return gold_box(row)
    except ValueError as err:
        raise ValueError(f"gold {row.get('id')!r}: {err}") from None


def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _pred_actions(row: Mapping[str, Any], scale: str, size: tuple[Any, Any]) -> list[Action]:
    action = row.get("action")
    if isinstance(action, Mapping):
        return [action_from_dict(dict(action))]
    if isinstance(action, list):
        return [action_from_dict(dict(a)) for a in action]
    text = (
        action
        if isinstance(action, str)
        else next((row[k] for k in _TEXT_KEYS if isinstance(row.get(k), str)), None)
    )
    if text is None:
        raise ActionParseError("no action, point or text in the prediction")
    width, height = size
    return parse_completion(text, scale=scale, width=width, height=height)


def predicted_point(
    row: Mapping[str, Any], scale: str = "auto", size: tuple[Any, Any] = (None, None)
) -> tuple[float, float]:
    """The normalized point a prediction row names; ActionParseError when there is none."""
    point = row.get("point")
    if point is None and "x" in row and "y" in row:
        point = [row["x"], row["y"]]
    if point is not None:
        if not isinstance(point, (list, tuple)) or len(point) != 2 or not all(_is_num(v) for v in point):
            raise ActionParseError(f"point must be [x, y], got {point!r}")
        if not all(0 <= v <= 1 for v in point):
            raise ActionParseError(f"point {list(point)} is not normalized to 0-1")
        return (float(point[0]), float(point[1]))
    for action in _pred_actions(row, scale, size):
        found = action_point(action)
        if found is not None:
            return found
    raise ActionParseError("the predicted actions have no point")


def evaluate_grounding(
    predictions: Iterable[Mapping[str, Any]], gold: Iterable[Mapping[str, Any]], *, scale: str = "auto"
) -> GroundingReport:
    preds = index_by_id(predictions, "predictions")
    golds = index_by_id(gold, "gold")
    report = GroundingReport(extra=len(set(preds) - set(golds)))
    for key, row in golds.items():
        box = _gold_box(row)
        platform = str(row.get("platform", row.get("data_source", "unknown")))
        element = str(row.get("element_type", row.get("data_type", "unknown")))
        pred = preds.get(key)
        ok = False
        if pred is None:
            report.missing += 1
        else:
            size = (pred.get("width", row.get("width")), pred.get("height", row.get("height")))
            try:
                ok = point_in_box(predicted_point(pred, scale, size), box)
            except ActionParseError:
                report.unparseable += 1
        report.overall.add(ok)
        report.by_platform.setdefault(platform, Bucket()).add(ok)
        report.by_element_type.setdefault(element, Bucket()).add(ok)
        report.by_platform_and_type.setdefault(f"{platform}/{element}", Bucket()).add(ok)
    return report


def evaluate_grounding_files(
    pred_path: str | Path,
    gold_path: str | Path | Sequence[str | Path],
    *,
    scale: str = "auto",
    gold_format: str = "auto",
    images: str | Path | None = None,
    image_size: Sequence[int] | None = None,
) -> GroundingReport:
    """Grounding accuracy of a predictions jsonl against one or more gold files (trajkit jsonl,
    ScreenSpot-v2 or Mind2Web in SeeClick's format; see `gui.grounding_data`)."""
    paths = [gold_path] if isinstance(gold_path, (str, Path)) else list(gold_path)
    gold = read_gold(paths, gold_format, images=images, image_size=image_size)
    preds = read_jsonl(pred_path)
    for i, row in enumerate(preds):
        if "id" not in row:
            raise ValueError(f"{pred_path}: record {i}: field 'id': missing")
    return evaluate_grounding(preds, gold, scale=scale)


# ---------------------------------------------------------------------------------------------
# step success


def _fold(text: str) -> str:
    return " ".join(text.casefold().split())


def _near(a: tuple[float, float] | None, b: tuple[float, float] | None, threshold: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.dist(a, b) <= threshold


def _sign(value: float) -> int:
    return (value > 0) - (value < 0)


def _direction(dx: float, dy: float) -> str:
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left" if dx < 0 else "none"
    return "down" if dy > 0 else "up"


def action_matches(
    pred: Action, gold: Action, *, bbox: Sequence[float] | None = None, distance_threshold: float = 0.14
) -> bool:
    """Whether one predicted action does what the gold action does (see the module doc)."""
    if pred.type != gold.type:
        return False
    p: Any = pred  # same class as gold from here on
    if isinstance(gold, Swipe):
        return _direction(gold.to_x - gold.x, gold.to_y - gold.y) == _direction(p.to_x - p.x, p.to_y - p.y)
    if isinstance(gold, Drag):
        gold_start = None if gold.x is None else (gold.x, gold.y)
        pred_start = None if p.x is None else (p.x, p.y)
        return _near(pred_start, gold_start, distance_threshold) and _near(
            (p.to_x, p.to_y), (gold.to_x, gold.to_y), distance_threshold
        )
    if isinstance(gold, (Scroll, HScroll)):
        return _sign(gold.amount) == _sign(p.amount)
    if isinstance(gold, (Press, Hotkey)):
        return [k.lower() for k in gold.keys] == [k.lower() for k in p.keys]
    if isinstance(gold, Terminate):
        return gold.status == p.status
    if isinstance(gold, OpenApp):
        return _fold(gold.app) == _fold(p.app)
    if isinstance(gold, (Write, Answer)):
        return _fold(gold.text) == _fold(p.text)
    if isinstance(gold, SelectOption) and _fold(gold.value) != _fold(p.value):
        return False
    gold_point, pred_point = action_point(gold), action_point(pred)
    if gold_point is None:
        return True  # e.g. a click where the pointer already is: the type says it all
    if pred_point is None:
        return False
    if bbox is not None:
        return point_in_box(pred_point, bbox)
    return _near(pred_point, gold_point, distance_threshold)


def step_matches(
    pred: Sequence[Action],
    gold: Sequence[Action],
    *,
    bbox: Sequence[float] | None = None,
    distance_threshold: float = 0.14,
) -> bool:
    """Whether a predicted step matches the gold step action for action."""
    if len(pred) != len(gold):
        return False
    box = bbox if len(gold) == 1 else None  # one box cannot say which of several actions it is for
    return all(
        action_matches(p, g, bbox=box, distance_threshold=distance_threshold)
        for p, g in zip(pred, gold, strict=True)
    )


def _gold_actions(row: Mapping[str, Any]) -> list[Action]:
    action = row.get("action")
    if isinstance(action, Mapping):
        return [action_from_dict(dict(action))]
    if isinstance(action, list):
        return [action_from_dict(dict(a)) for a in action]
    if isinstance(action, str):
        return parse_completion(action, width=row.get("width"), height=row.get("height"))
    raise ValueError(
        f"gold {row.get('id')!r}: 'action' must be action text, an action object or a list of them"
    )


def evaluate_steps(
    predictions: Iterable[Mapping[str, Any]],
    gold: Iterable[Mapping[str, Any]],
    *,
    distance_threshold: float = 0.14,
    scale: str = "auto",
) -> StepReport:
    preds = index_by_id(predictions, "predictions")
    golds = index_by_id(gold, "gold")
    report = StepReport(extra=len(set(preds) - set(golds)))
    for key, row in golds.items():
        try:
            gold_actions = _gold_actions(row)
        except ActionParseError as err:
            raise ValueError(f"gold {key!r}: {err}") from None
        box = _gold_box(row) if row.get("bbox", row.get("box")) is not None else None
        gold_type = "+".join(a.type for a in gold_actions)
        pred = preds.get(key)
        ok = typed = False
        if pred is None:
            report.missing += 1
        else:
            size = (pred.get("width", row.get("width")), pred.get("height", row.get("height")))
            try:
                pred_actions = _pred_actions(pred, scale, size)
            except ActionParseError:
                report.unparseable += 1
            else:
                typed = [a.type for a in pred_actions] == [a.type for a in gold_actions]
                ok = step_matches(pred_actions, gold_actions, bbox=box, distance_threshold=distance_threshold)
        report.total += 1
        report.type_correct += int(typed)
        report.success += int(ok)
        report.by_type.setdefault(gold_type, Bucket()).add(ok)
    return report


def evaluate_steps_files(
    pred_path: str | Path, gold_path: str | Path, *, distance_threshold: float = 0.14, scale: str = "auto"
) -> StepReport:
    return evaluate_steps(
        read_jsonl(pred_path), read_jsonl(gold_path), distance_threshold=distance_threshold, scale=scale
    )
