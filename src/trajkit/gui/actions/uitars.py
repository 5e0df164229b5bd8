"""The UI-TARS dialect: `click(start_box='(x,y)')`, `scroll(direction=...)`, `finished()` etc. on 0-1000.

Scrolls carry only a direction (read as `DIRECTION_SCROLL_AMOUNT` of a page); actions it has no
form for raise `ActionRenderError` when rendered.
"""

from __future__ import annotations

import re
from typing import Any

from trajkit.gui.actions._common import Builder, PointFn, Signature, as_str, k_text, needs_point
from trajkit.gui.actions.records import (
    DIRECTION_SCROLL_AMOUNT,
    Action,
    ActionParseError,
    ActionRenderError,
    Answer,
    Back,
    Click,
    DoubleClick,
    Drag,
    Home,
    Hotkey,
    HScroll,
    LongPress,
    OpenApp,
    Press,
    RightClick,
    Scroll,
    Swipe,
    Terminate,
    Wait,
    Write,
)

_BOX_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_BOX_NOISE = re.compile(r"<\|box_start\|>|<\|box_end\|>|</?point>|</?bbox>")


def _box_point(value: Any, what: str) -> tuple[float, float]:
    """A UI-TARS box string, '(x,y)' or '(x1,y1,x2,y2)' (centre), as raw numbers."""
    text = _BOX_NOISE.sub("", as_str(value, what))
    nums = [float(n) if "." in n else int(n) for n in _BOX_NUMBER.findall(text)]
    if len(nums) == 2:
        return nums[0], nums[1]
    if len(nums) == 4:
        return (nums[0] + nums[2]) / 2, (nums[1] + nums[3]) / 2
    raise ActionParseError(f"{what} must look like '(x,y)' or '(x1,y1,x2,y2)', got {value!r}")


def _uitars_point(a: dict[str, Any], key: str, pt: PointFn, what: str) -> tuple[float, float]:
    return pt(*_box_point(a[key], f"{what} {key}"), what)


def _build_uitars_hotkey(a: dict[str, Any], pt: PointFn, what: str) -> Action:
    keys = as_str(a["key"], f"{what} key").split()
    if not keys:
        raise ActionParseError(f"{what}: key is empty")
    return Press((keys[0],)) if len(keys) == 1 else Hotkey(tuple(keys))


def _build_uitars_scroll(a: dict[str, Any], pt: PointFn, what: str) -> Action:
    direction = as_str(a["direction"], f"{what} direction").strip().lower()
    x, y = _uitars_point(a, "start_box", pt, what) if "start_box" in a else (None, None)
    signed = {
        "up": (Scroll, 1),
        "down": (Scroll, -1),
        "right": (HScroll, 1),
        "left": (HScroll, -1),
    }.get(direction)
    if signed is None:
        raise ActionParseError(f"{what}: direction must be up, down, left or right, got {direction!r}")
    cls, sign = signed
    return cls(sign * DIRECTION_SCROLL_AMOUNT, x, y)


def _build_uitars_finished(a: dict[str, Any], pt: PointFn, what: str) -> Action:
    if "content" in a:
        return Answer(as_str(a["content"], f"{what} content"))
    return Terminate("success")


UITARS_CALLS: dict[str, tuple[Signature, Builder]] = {
    "click": (
        Signature(("start_box",), required=("start_box",), aliases=(("point", "start_box"),)),
        lambda a, pt, w: Click(*_uitars_point(a, "start_box", pt, w)),
    ),
    "left_double": (
        Signature(("start_box",), required=("start_box",), aliases=(("point", "start_box"),)),
        lambda a, pt, w: DoubleClick(*_uitars_point(a, "start_box", pt, w)),
    ),
    "right_single": (
        Signature(("start_box",), required=("start_box",), aliases=(("point", "start_box"),)),
        lambda a, pt, w: RightClick(*_uitars_point(a, "start_box", pt, w)),
    ),
    "drag": (
        Signature(("start_box", "end_box"), required=("start_box", "end_box")),
        lambda a, pt, w: Drag(*_uitars_point(a, "start_box", pt, w), *_uitars_point(a, "end_box", pt, w)),
    ),
    "hotkey": (Signature(("key",), required=("key",)), _build_uitars_hotkey),
    "type": (
        Signature(("content",), required=("content",)),
        lambda a, pt, w: Write(as_str(a["content"], f"{w} content")),
    ),
    "scroll": (
        Signature(("start_box", "direction"), required=("direction",), aliases=(("point", "start_box"),)),
        _build_uitars_scroll,
    ),
    "wait": (Signature(()), lambda a, pt, w: Wait()),
    "finished": (Signature(("content",)), _build_uitars_finished),
    "long_press": (
        Signature(("start_box",), required=("start_box",), aliases=(("point", "start_box"),)),
        lambda a, pt, w: LongPress(*_uitars_point(a, "start_box", pt, w)),
    ),
    "open_app": (
        Signature(("app_name",), required=("app_name",)),
        lambda a, pt, w: OpenApp(as_str(a["app_name"], f"{w} app_name")),
    ),
    "press_home": (Signature(()), lambda a, pt, w: Home()),
    "press_back": (Signature(()), lambda a, pt, w: Back()),
}


# ---------------------------------------------------------------------------------------------
# rendering


def render_uitars(action: Action) -> list[str]:
    def box(x: float, y: float) -> str:
        return f"'({k_text(x)},{k_text(y)})'"

    simple = {Click: "click", DoubleClick: "left_double", RightClick: "right_single", LongPress: "long_press"}
    if type(action) in simple:
        needs_point(action, "uitars")
        return [f"{simple[type(action)]}(start_box={box(action.x, action.y)})"]  # type: ignore[attr-defined]
    if isinstance(action, (Drag, Swipe)):
        needs_point(action, "uitars")
        return [f"drag(start_box={box(action.x, action.y)}, end_box={box(action.to_x, action.to_y)})"]  # type: ignore[arg-type]
    if isinstance(action, Write):
        return [f"type(content={action.text!r})"]
    if isinstance(action, Press):
        return [f"hotkey(key={k!r})" for k in action.keys]
    if isinstance(action, Hotkey):
        return [f"hotkey(key={' '.join(action.keys)!r})"]
    if isinstance(action, (Scroll, HScroll)):
        if action.amount == 0:
            raise ActionRenderError("uitars cannot express a zero scroll")
        up = action.amount > 0
        direction = ("up" if up else "down") if isinstance(action, Scroll) else ("right" if up else "left")
        where = "" if action.x is None else f"start_box={box(action.x, action.y)}, "  # type: ignore[arg-type]
        return [f"scroll({where}direction={direction!r})"]
    if isinstance(action, Wait):
        return ["wait()"]
    if isinstance(action, Home):
        return ["press_home()"]
    if isinstance(action, Back):
        return ["press_back()"]
    if isinstance(action, OpenApp):
        return [f"open_app(app_name={action.app!r})"]
    if isinstance(action, Answer):
        return [f"finished(content={action.text!r})"]
    if isinstance(action, Terminate) and action.status == "success":
        return ["finished()"]
    raise ActionRenderError(f"uitars has no form for {action.to_dict()}")
