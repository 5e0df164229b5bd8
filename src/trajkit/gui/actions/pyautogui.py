"""The pyautogui / AGUVIS dialect: `pyautogui.*`, `mobile.*`, `browser.*`, `computer.*`, `answer`,
`terminate`.

Parsing accepts both AGUVIS's keyword calls and pyautogui's own positional API. Rendering has two
styles: `aguvis` (keyword calls, normalized coordinates) and `pyautogui` (positional calls, pixels
when a screen size is given).

The `computer.*` plugin of desktop data in AGUVIS's format (`computer.terminate(status='success')`,
`computer.wait(...)`, `computer.triple_click(x=..., y=...)`) parses to the same records as
`terminate`, `mobile.wait` and `pyautogui.tripleClick`; those are what rendering writes back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trajkit.gui.actions._common import (
    Builder,
    PointFn,
    Signature,
    as_keys,
    as_number,
    as_pair,
    as_str,
    coord_text,
    num_text,
    optional_point,
)
from trajkit.gui.actions.records import (
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
    Move,
    OpenApp,
    Press,
    RightClick,
    Scroll,
    SelectOption,
    Swipe,
    Terminate,
    TripleClick,
    Wait,
    Write,
)


def _click_builder(cls: type[Action]) -> Callable[[dict[str, Any], PointFn, str], Action]:
    def build(a: dict[str, Any], pt: PointFn, what: str) -> Action:
        x, y = optional_point(a, pt, what)
        return cls(x, y)

    return build


def _build_pyautogui_click(a: dict[str, Any], pt: PointFn, what: str) -> Action:
    x, y = optional_point(a, pt, what)
    button = a.get("button", "left")
    clicks = a.get("clicks", 1)
    if button in ("left", "primary") and type(clicks) is int and clicks in (1, 2, 3):
        return (Click, DoubleClick, TripleClick)[clicks - 1](x, y)
    if button in ("right", "secondary") and clicks == 1:
        return RightClick(x, y)
    raise ActionParseError(f"{what}: unsupported button={button!r} clicks={clicks!r}")


def _build_drag(a: dict[str, Any], pt: PointFn, what: str) -> Action:
    if "from_coord" in a or "to_coord" in a:
        if "x" in a or "y" in a:
            raise ActionParseError(f"{what}: give either x, y or from_coord, to_coord, not both")
        if "to_coord" not in a:
            raise ActionParseError(f"{what}: missing argument 'to_coord'")
        to_x, to_y = pt(*as_pair(a["to_coord"], f"{what} to_coord"), what)
        if "from_coord" not in a:
            return Drag(None, None, to_x, to_y)
        x, y = pt(*as_pair(a["from_coord"], f"{what} from_coord"), what)
        return Drag(x, y, to_x, to_y)
    if "x" not in a or "y" not in a:
        raise ActionParseError(f"{what}: needs x, y or to_coord")
    to_x, to_y = pt(a["x"], a["y"], what)
    return Drag(None, None, to_x, to_y)


def _build_scroll(cls: type[Action]) -> Callable[[dict[str, Any], PointFn, str], Action]:
    def build(a: dict[str, Any], pt: PointFn, what: str) -> Action:
        x, y = optional_point(a, pt, what)
        return cls(as_number(a["page"], f"{what} page"), x, y)

    return build


def _build_swipe(a: dict[str, Any], pt: PointFn, what: str) -> Action:
    x, y = pt(*as_pair(a["from_coord"], f"{what} from_coord"), what)
    to_x, to_y = pt(*as_pair(a["to_coord"], f"{what} to_coord"), what)
    return Swipe(x, y, to_x, to_y)


def _build_wait(a: dict[str, Any], pt: PointFn, what: str) -> Action:
    if "seconds" not in a:
        return Wait()
    seconds = as_number(a["seconds"], f"{what} seconds")
    if seconds < 0:
        raise ActionParseError(f"{what}: seconds must be >= 0, got {seconds!r}")
    return Wait(seconds)


_CLICK_SIG = Signature(("x", "y"), ignored=("duration", "interval", "tween", "_pause", "logScreenshot"))
_FULL_CLICK_SIG = Signature(
    ("x", "y", "clicks", "interval", "button"), ignored=("duration", "tween", "_pause", "logScreenshot")
)
_SCROLL_SIG = Signature(
    ("page", "x", "y"),
    required=("page",),
    aliases=(("clicks", "page"), ("amount", "page")),
    ignored=("_pause",),
)


# Calls of the pyautogui / AGUVIS plugin family: name -> (signature, builder).
PYAUTOGUI_CALLS: dict[str, tuple[Signature, Builder]] = {
    "pyautogui.click": (_FULL_CLICK_SIG, _build_pyautogui_click),
    "pyautogui.doubleClick": (_CLICK_SIG, _click_builder(DoubleClick)),
    "pyautogui.rightClick": (_CLICK_SIG, _click_builder(RightClick)),
    "pyautogui.tripleClick": (_CLICK_SIG, _click_builder(TripleClick)),
    "pyautogui.moveTo": (
        Signature(("x", "y"), required=("x", "y"), ignored=_CLICK_SIG.ignored),
        lambda a, pt, w: Move(*pt(a["x"], a["y"], w)),
    ),
    "pyautogui.dragTo": (
        Signature(("x", "y", "from_coord", "to_coord"), ignored=(*_CLICK_SIG.ignored, "button")),
        _build_drag,
    ),
    "pyautogui.write": (
        Signature(("message",), required=("message",), aliases=(("text", "message"),), ignored=("interval",)),
        lambda a, pt, w: Write(as_str(a["message"], f"{w} message")),
    ),
    "pyautogui.typewrite": (
        Signature(("message",), required=("message",), aliases=(("text", "message"),), ignored=("interval",)),
        lambda a, pt, w: Write(as_str(a["message"], f"{w} message")),
    ),
    "pyautogui.press": (
        Signature(("keys",), required=("keys",), aliases=(("key", "keys"),), ignored=("interval",)),
        lambda a, pt, w: Press(as_keys(a["keys"], f"{w} keys")),
    ),
    "pyautogui.hotkey": (
        Signature(("keys",), required=("keys",), varargs="keys", ignored=("interval",)),
        lambda a, pt, w: Hotkey(as_keys(a["keys"], f"{w} keys")),
    ),
    "pyautogui.scroll": (_SCROLL_SIG, _build_scroll(Scroll)),
    "pyautogui.hscroll": (_SCROLL_SIG, _build_scroll(HScroll)),
    "mobile.swipe": (
        Signature(("from_coord", "to_coord"), required=("from_coord", "to_coord")),
        _build_swipe,
    ),
    "mobile.long_press": (
        Signature(("x", "y"), required=("x", "y")),
        lambda a, pt, w: LongPress(*pt(a["x"], a["y"], w)),
    ),
    "mobile.home": (Signature(()), lambda a, pt, w: Home()),
    "mobile.back": (Signature(()), lambda a, pt, w: Back()),
    "mobile.wait": (Signature(("seconds",)), _build_wait),
    "mobile.open_app": (
        Signature(("app_name",), required=("app_name",), aliases=(("app", "app_name"),)),
        lambda a, pt, w: OpenApp(as_str(a["app_name"], f"{w} app_name")),
    ),
    "mobile.terminate": (
        Signature(("status",)),
        lambda a, pt, w: Terminate(as_str(a.get("status", "success"), f"{w} status")),
    ),
    "terminate": (
        Signature(("status",)),
        lambda a, pt, w: Terminate(as_str(a.get("status", "success"), f"{w} status")),
    ),
    "computer.terminate": (
        Signature(("status",)),
        lambda a, pt, w: Terminate(as_str(a.get("status", "success"), f"{w} status")),
    ),
    "computer.wait": (Signature(("seconds",)), _build_wait),
    "computer.triple_click": (
        Signature(("x", "y"), required=("x", "y")),
        lambda a, pt, w: TripleClick(*pt(a["x"], a["y"], w)),
    ),
    "browser.select_option": (
        Signature(("x", "y", "value"), required=("x", "y", "value")),
        lambda a, pt, w: SelectOption(*pt(a["x"], a["y"], w), as_str(a["value"], f"{w} value")),
    ),
    "answer": (
        Signature(("answer",), required=("answer",), aliases=(("text", "answer"),)),
        lambda a, pt, w: Answer(as_str(a["answer"], f"{w} answer")),
    ),
}


# ---------------------------------------------------------------------------------------------
# rendering


def render_aguvis(action: Action, signed: Callable[[float], float]) -> str:
    def xy(a: Any) -> str:
        return "" if a.x is None else f"x={coord_text(a.x)}, y={coord_text(a.y)}"

    def at(a: Any) -> str:
        return "" if a.x is None else f", x={coord_text(a.x)}, y={coord_text(a.y)}"

    if isinstance(action, Click):
        return f"pyautogui.click({xy(action)})"
    if isinstance(action, DoubleClick):
        return f"pyautogui.doubleClick({xy(action)})"
    if isinstance(action, RightClick):
        return f"pyautogui.rightClick({xy(action)})"
    if isinstance(action, TripleClick):
        return f"pyautogui.tripleClick({xy(action)})"
    if isinstance(action, Move):
        return f"pyautogui.moveTo({xy(action)})"
    if isinstance(action, Drag):
        if action.x is None:
            return f"pyautogui.dragTo(x={coord_text(action.to_x)}, y={coord_text(action.to_y)})"
        return (
            f"pyautogui.dragTo(from_coord=[{coord_text(action.x)}, {coord_text(action.y)}], "
            f"to_coord=[{coord_text(action.to_x)}, {coord_text(action.to_y)}])"
        )
    if isinstance(action, Write):
        return f"pyautogui.write(message={action.text!r})"
    if isinstance(action, Press):
        keys = repr(action.keys[0]) if len(action.keys) == 1 else repr(list(action.keys))
        return f"pyautogui.press(keys={keys})"
    if isinstance(action, Hotkey):
        return f"pyautogui.hotkey(keys={list(action.keys)!r})"
    if isinstance(action, Scroll):
        return f"pyautogui.scroll(page={num_text(signed(action.amount))}{at(action)})"
    if isinstance(action, HScroll):
        return f"pyautogui.hscroll(page={num_text(signed(action.amount))}{at(action)})"
    return _render_plugin(action)


def _render_plugin(action: Action) -> str:
    if isinstance(action, Swipe):
        return (
            f"mobile.swipe(from_coord=[{coord_text(action.x)}, {coord_text(action.y)}], "
            f"to_coord=[{coord_text(action.to_x)}, {coord_text(action.to_y)}])"
        )
    if isinstance(action, LongPress):
        return f"mobile.long_press(x={coord_text(action.x)}, y={coord_text(action.y)})"
    if isinstance(action, Home):
        return "mobile.home()"
    if isinstance(action, Back):
        return "mobile.back()"
    if isinstance(action, Wait):
        return (
            "mobile.wait()" if action.seconds is None else f"mobile.wait(seconds={num_text(action.seconds)})"
        )
    if isinstance(action, OpenApp):
        return f"mobile.open_app(app_name={action.app!r})"
    if isinstance(action, SelectOption):
        return f"browser.select_option(x={coord_text(action.x)}, y={coord_text(action.y)}, value={action.value!r})"
    if isinstance(action, Answer):
        return f"answer({action.text!r})"
    if isinstance(action, Terminate):
        return f"terminate(status={action.status!r})"
    raise ActionRenderError(f"no text form for action {action!r}")


def render_pyautogui(
    action: Action, signed: Callable[[float], float], width: int | None, height: int | None
) -> str:
    def cx(v: float) -> str:
        return str(round(v * width)) if width else coord_text(v)

    def cy(v: float) -> str:
        return str(round(v * height)) if height else coord_text(v)

    def xy(a: Any) -> str:
        return "" if a.x is None else f"{cx(a.x)}, {cy(a.y)}"

    def at(a: Any) -> str:
        return "" if a.x is None else f", x={cx(a.x)}, y={cy(a.y)}"

    names = {
        Click: "click",
        DoubleClick: "doubleClick",
        RightClick: "rightClick",
        TripleClick: "tripleClick",
        Move: "moveTo",
    }
    if type(action) in names:
        return f"pyautogui.{names[type(action)]}({xy(action)})"
    if isinstance(action, Drag):
        drag = f"pyautogui.dragTo({cx(action.to_x)}, {cy(action.to_y)})"
        return drag if action.x is None else f"pyautogui.moveTo({cx(action.x)}, {cy(action.y)})\n{drag}"
    if isinstance(action, Write):
        return f"pyautogui.write({action.text!r})"
    if isinstance(action, Press):
        keys = repr(action.keys[0]) if len(action.keys) == 1 else repr(list(action.keys))
        return f"pyautogui.press({keys})"
    if isinstance(action, Hotkey):
        return f"pyautogui.hotkey({', '.join(repr(k) for k in action.keys)})"
    if isinstance(action, Scroll):
        return f"pyautogui.scroll({num_text(signed(action.amount))}{at(action)})"
    if isinstance(action, HScroll):
        return f"pyautogui.hscroll({num_text(signed(action.amount))}{at(action)})"
    return _render_plugin(action)
