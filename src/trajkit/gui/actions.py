"""GUI actions as data: parse action text into typed records and render them back.

Action text is read with `ast.parse` and checked node by node against a whitelist of call names and
literal argument forms. Nothing is ever evaluated: an argument must be a literal (number, string, or
a list/tuple of them), so a model cannot make Python run anything.

Canonical form
    Every action is a frozen dataclass whose `to_dict()` is `{"type": ..., field: value, ...}`
    (None fields left out, key tuples written as lists). Coordinates (`x`, `y`, `to_x`, `to_y`) are
    normalized floats in [0, 1], rounded to `COORD_DECIMALS` places on parse, so rendering and
    parsing again gives back the identical record.

Coordinate scales (`scale=`)
    norm: 0-1 floats (AGUVIS); k: 0-1000 (UI-TARS, OS-Atlas); px: pixels of a `width` x `height`
    screen; auto: pyautogui text is norm when every coordinate is <= 1, else px when a screen size
    is given, else k when every coordinate is <= 1000. UI-TARS and OS-Atlas text is k unless a screen
    size is given and some coordinate exceeds 1000.

Scroll sign (`scroll_convention=`)
    `amount` is the number as written (AGUVIS: a fraction of a page) with pyautogui's sign: a
    positive `scroll` goes up, a positive `hscroll` goes right. Text written with the opposite sign
    (some converters read AGUVIS's negative values as "up") is read and written with
    `scroll_convention="inverted"`, which flips the sign at the text boundary only.

Text styles (`render_actions(..., style=)`)
    aguvis: keyword calls as the AGUVIS data writes them (`pyautogui.click(x=0.41, y=0.178)`).
    pyautogui: positional calls of pyautogui's own API; pixels when a screen size is given.
    uitars: `click(start_box='(x,y)')` etc. on 0-1000. osatlas: `CLICK <point>[[x,y]]</point>` etc.
    UI-TARS and OS-Atlas have no scroll amount (only a direction) and fewer action kinds; rendering
    an action a style cannot express raises `ActionRenderError`.
"""

from __future__ import annotations

import ast
import math
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal

Scale = Literal["auto", "norm", "k", "px"]
Style = Literal["aguvis", "pyautogui", "uitars", "osatlas"]
Syntax = Literal["auto", "pyautogui", "uitars", "osatlas"]
ScrollConvention = Literal["pyautogui", "inverted"]

SCALES = ("auto", "norm", "k", "px")
STYLES = ("aguvis", "pyautogui", "uitars", "osatlas")
SYNTAXES = ("auto", "pyautogui", "uitars", "osatlas")
SCROLL_CONVENTIONS = ("pyautogui", "inverted")

COORD_DECIMALS = 4
K_RANGE = 1000
# UI-TARS / OS-Atlas scrolls carry only a direction; this is the page fraction they are read as.
DIRECTION_SCROLL_AMOUNT = 0.5
MAX_TEXT_CHARS = 20_000
_MAX_LITERAL_DEPTH = 4


class ActionParseError(ValueError):
    """Action text that is not a whitelisted action; the message says what was wrong."""


class ActionRenderError(ValueError):
    """An action that the requested text style cannot express."""


# ---------------------------------------------------------------------------------------------
# records

_COORD_FIELDS = frozenset({"x", "y", "to_x", "to_y"})
_TEXT_FIELDS = frozenset({"text", "app", "value", "status"})
_NUMBER_FIELDS = frozenset({"amount", "seconds"})


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Action:
    """Base of all actions. Field values are checked on construction."""

    type: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if f.name in _COORD_FIELDS:
                if not _is_number(value) or not math.isfinite(value) or not 0.0 <= value <= 1.0:
                    raise ValueError(
                        f"{self.type}: {f.name}={value!r} is not a normalized coordinate in [0, 1]"
                    )
            elif f.name in _TEXT_FIELDS:
                if not isinstance(value, str):
                    raise ValueError(f"{self.type}: {f.name} must be a string, got {value!r}")
            elif f.name in _NUMBER_FIELDS:
                if not _is_number(value) or not math.isfinite(value):
                    raise ValueError(f"{self.type}: {f.name} must be a finite number, got {value!r}")
            elif f.name == "keys":
                keys = tuple(value) if isinstance(value, (list, tuple)) else value
                if not isinstance(keys, tuple) or not keys or not all(isinstance(k, str) and k for k in keys):
                    raise ValueError(
                        f"{self.type}: keys must be a non-empty list of key names, got {value!r}"
                    )
                object.__setattr__(self, "keys", keys)
        # A point is all or nothing: half a coordinate means nothing.
        if (getattr(self, "x", None) is None) != (getattr(self, "y", None) is None):
            raise ValueError(f"{self.type}: x and y must be given together")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True)
class Click(Action):
    type: ClassVar[str] = "click"
    x: float | None = None
    y: float | None = None


@dataclass(frozen=True)
class DoubleClick(Action):
    type: ClassVar[str] = "double_click"
    x: float | None = None
    y: float | None = None


@dataclass(frozen=True)
class RightClick(Action):
    type: ClassVar[str] = "right_click"
    x: float | None = None
    y: float | None = None


@dataclass(frozen=True)
class TripleClick(Action):
    type: ClassVar[str] = "triple_click"
    x: float | None = None
    y: float | None = None


@dataclass(frozen=True)
class Move(Action):
    type: ClassVar[str] = "move"
    x: float
    y: float


@dataclass(frozen=True)
class Drag(Action):
    """Drag to (to_x, to_y); from (x, y), or from wherever the pointer is when x, y are None."""

    type: ClassVar[str] = "drag"
    x: float | None
    y: float | None
    to_x: float
    to_y: float


@dataclass(frozen=True)
class Write(Action):
    type: ClassVar[str] = "write"
    text: str


@dataclass(frozen=True)
class Press(Action):
    """Press each key in turn (pyautogui.press with a list presses them one after another)."""

    type: ClassVar[str] = "press"
    keys: tuple[str, ...]


@dataclass(frozen=True)
class Hotkey(Action):
    """Hold the keys down together, in order."""

    type: ClassVar[str] = "hotkey"
    keys: tuple[str, ...]


@dataclass(frozen=True)
class Scroll(Action):
    """Vertical scroll by `amount` (page fraction as written; positive = up), optionally at a point."""

    type: ClassVar[str] = "scroll"
    amount: float
    x: float | None = None
    y: float | None = None


@dataclass(frozen=True)
class HScroll(Action):
    """Horizontal scroll by `amount` (positive = right), optionally at a point."""

    type: ClassVar[str] = "hscroll"
    amount: float
    x: float | None = None
    y: float | None = None


@dataclass(frozen=True)
class Swipe(Action):
    type: ClassVar[str] = "swipe"
    x: float
    y: float
    to_x: float
    to_y: float


@dataclass(frozen=True)
class LongPress(Action):
    type: ClassVar[str] = "long_press"
    x: float
    y: float


@dataclass(frozen=True)
class Home(Action):
    type: ClassVar[str] = "home"


@dataclass(frozen=True)
class Back(Action):
    type: ClassVar[str] = "back"


@dataclass(frozen=True)
class Wait(Action):
    """Wait `seconds`; None leaves the duration to the environment."""

    type: ClassVar[str] = "wait"
    seconds: float | None = None


@dataclass(frozen=True)
class OpenApp(Action):
    type: ClassVar[str] = "open_app"
    app: str


@dataclass(frozen=True)
class SelectOption(Action):
    type: ClassVar[str] = "select_option"
    x: float
    y: float
    value: str


@dataclass(frozen=True)
class Answer(Action):
    type: ClassVar[str] = "answer"
    text: str


@dataclass(frozen=True)
class Terminate(Action):
    type: ClassVar[str] = "terminate"
    status: str = "success"


ACTION_TYPES: dict[str, type[Action]] = {
    cls.type: cls
    for cls in (
        Click,
        DoubleClick,
        RightClick,
        TripleClick,
        Move,
        Drag,
        Write,
        Press,
        Hotkey,
        Scroll,
        HScroll,
        Swipe,
        LongPress,
        Home,
        Back,
        Wait,
        OpenApp,
        SelectOption,
        Answer,
        Terminate,
    )
}


def action_from_dict(data: dict[str, Any]) -> Action:
    """Build an action from its canonical JSON object; raises ActionParseError on a bad object."""
    if not isinstance(data, dict):
        raise ActionParseError(f"an action must be a JSON object, got {type(data).__name__}")
    kind = data.get("type")
    cls = ACTION_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ActionParseError(f"unknown action type {kind!r}; expected one of {', '.join(ACTION_TYPES)}")
    allowed = {f.name for f in fields(cls)}
    extra = sorted(set(data) - allowed - {"type"})
    if extra:
        raise ActionParseError(f"{kind}: unexpected field(s) {', '.join(extra)}")
    try:
        return cls(**{k: v for k, v in data.items() if k != "type"})
    except (TypeError, ValueError) as err:
        raise ActionParseError(f"{kind}: {err}") from None


def actions_to_json(actions: Iterable[Action]) -> list[dict[str, Any]]:
    return [a.to_dict() for a in actions]


def actions_from_json(items: Iterable[dict[str, Any]]) -> list[Action]:
    return [action_from_dict(d) for d in items]


def action_point(action: Action) -> tuple[float, float] | None:
    """The screen point an action targets (the start of a drag or swipe), if it has one."""
    x, y = getattr(action, "x", None), getattr(action, "y", None)
    if x is None or y is None:
        if isinstance(action, Drag):
            return (action.to_x, action.to_y)
        return None
    return (x, y)


# ---------------------------------------------------------------------------------------------
# reading literals out of the syntax tree


def _describe(node: ast.AST) -> str:
    if isinstance(node, ast.Call):
        return "a nested call"
    if isinstance(node, ast.Name):
        return f"the name {node.id!r} (only literal values are allowed)"
    if isinstance(node, ast.Attribute):
        return "attribute access"
    if isinstance(node, ast.Lambda):
        return "a lambda"
    if isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
        return "a comprehension"
    if isinstance(node, ast.Starred):
        return "a starred argument"
    if isinstance(node, ast.JoinedStr):
        return "an f-string"
    if isinstance(node, (ast.Dict, ast.Set)):
        return "a dict or set"
    if isinstance(node, (ast.BinOp, ast.BoolOp, ast.Compare, ast.IfExp)):
        return "an expression (only literal values are allowed)"
    if isinstance(node, ast.Constant):
        return f"the constant {node.value!r}"
    return f"a {type(node).__name__} node"


def _literal(node: ast.AST, where: str, depth: int = 0) -> Any:
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, str):
            return value
        if _is_number(value):
            if not math.isfinite(value):
                raise ActionParseError(f"{where}: number {value!r} is not finite")
            return value
        raise ActionParseError(f"{where}: {_describe(node)} is not allowed")
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, (ast.USub, ast.UAdd))
        and isinstance(node.operand, ast.Constant)
        and _is_number(node.operand.value)
    ):
        value = node.operand.value
        if not math.isfinite(value):
            raise ActionParseError(f"{where}: number is not finite")
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, (ast.List, ast.Tuple)):
        if depth >= _MAX_LITERAL_DEPTH:
            raise ActionParseError(f"{where}: lists nested too deeply")
        return [_literal(e, where, depth + 1) for e in node.elts]
    raise ActionParseError(f"{where}: {_describe(node)} is not allowed")


def _call_name(func: ast.AST, line: int) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        if isinstance(func.value, ast.Name):
            return f"{func.value.id}.{func.attr}"
        raise ActionParseError(f"line {line}: attribute access outside the whitelist ({ast.unparse(func)})")
    raise ActionParseError(f"line {line}: {_describe(func)} cannot be called")


@dataclass(frozen=True)
class _Call:
    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    line: int


def _read_calls(text: str) -> list[_Call]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escapes in model text are not our concern
            tree = ast.parse(text, mode="exec")
    except SyntaxError as err:
        raise ActionParseError(f"syntax error at line {err.lineno}: {err.msg}") from None
    except (ValueError, RecursionError, MemoryError) as err:
        raise ActionParseError(f"unreadable action text: {err}") from None
    calls: list[_Call] = []
    for stmt in tree.body:
        line = getattr(stmt, "lineno", 0)
        if not isinstance(stmt, ast.Expr) or not isinstance(stmt.value, ast.Call):
            kind = type(stmt.value).__name__ if isinstance(stmt, ast.Expr) else type(stmt).__name__
            raise ActionParseError(f"line {line}: only action calls are allowed, got {kind}")
        call = stmt.value
        name = _call_name(call.func, line)
        where = f"line {line}: {name}()"
        args = []
        for arg in call.args:
            if isinstance(arg, ast.Starred):
                raise ActionParseError(f"{where}: a starred argument is not allowed")
            args.append(_literal(arg, where))
        kwargs: dict[str, Any] = {}
        for kw in call.keywords:
            if kw.arg is None:
                raise ActionParseError(f"{where}: **keyword unpacking is not allowed")
            kwargs[kw.arg] = _literal(kw.value, f"{where} argument {kw.arg!r}")
        calls.append(_Call(name, tuple(args), kwargs, line))
    return calls


# ---------------------------------------------------------------------------------------------
# call signatures and builders


@dataclass(frozen=True)
class _Signature:
    params: tuple[str, ...]  # in positional order
    required: tuple[str, ...] = ()
    aliases: tuple[tuple[str, str], ...] = ()  # (spelling, parameter)
    varargs: str | None = None  # parameter collecting extra positionals
    ignored: tuple[str, ...] = ()  # timing knobs that change nothing about what is done


def _bind(call: _Call, sig: _Signature) -> dict[str, Any]:
    where = f"line {call.line}: {call.name}()"
    bound: dict[str, Any] = {}
    positional = list(call.args)
    if sig.varargs is not None and len(positional) > 1:
        # hotkey('ctrl', 'c'): every positional is one key.
        bound[sig.varargs] = positional
        positional = []
    if len(positional) > len(sig.params):
        raise ActionParseError(
            f"{where} takes at most {len(sig.params)} positional arguments, got {len(call.args)}"
        )
    for name, value in zip(sig.params, positional, strict=False):
        bound[name] = value
    aliases = dict(sig.aliases)
    for key, value in call.kwargs.items():
        if key in sig.ignored:
            continue
        name = aliases.get(key, key)
        if name not in sig.params:
            raise ActionParseError(f"{where}: unexpected argument {key!r}")
        if name in bound:
            raise ActionParseError(f"{where}: argument {name!r} given twice")
        bound[name] = value
    missing = [p for p in sig.required if p not in bound]
    if missing:
        raise ActionParseError(f"{where}: missing argument {', '.join(repr(m) for m in missing)}")
    return bound


# A point function turns raw (x, y) values into normalized coordinates under the chosen scale.
PointFn = Callable[[Any, Any, str], tuple[float, float]]


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ActionParseError(f"{what} must be a string, got {value!r}")
    return value


def _number(value: Any, what: str) -> float:
    if not _is_number(value):
        raise ActionParseError(f"{what} must be a number, got {value!r}")
    return value


def _keys(value: Any, what: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(k, str) and k for k in items):
        raise ActionParseError(f"{what} must be a key name or a non-empty list of key names, got {value!r}")
    return tuple(items)


def _pair(value: Any, what: str) -> tuple[Any, Any]:
    if not isinstance(value, list) or len(value) != 2:
        raise ActionParseError(f"{what} must be a [x, y] pair, got {value!r}")
    return value[0], value[1]


def _optional_point(a: dict[str, Any], pt: PointFn, what: str) -> tuple[float | None, float | None]:
    if "x" not in a and "y" not in a:
        return None, None
    if "x" not in a or "y" not in a:
        raise ActionParseError(f"{what}: x and y must be given together")
    return pt(a["x"], a["y"], what)


def _click_builder(cls: type[Action]) -> Callable[[dict[str, Any], PointFn, str], Action]:
    def build(a: dict[str, Any], pt: PointFn, what: str) -> Action:
        x, y = _optional_point(a, pt, what)
        return cls(x, y)

    return build


def _build_pyautogui_click(a: dict[str, Any], pt: PointFn, what: str) -> Action:
    x, y = _optional_point(a, pt, what)
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
        to_x, to_y = pt(*_pair(a["to_coord"], f"{what} to_coord"), what)
        if "from_coord" not in a:
            return Drag(None, None, to_x, to_y)
        x, y = pt(*_pair(a["from_coord"], f"{what} from_coord"), what)
        return Drag(x, y, to_x, to_y)
    if "x" not in a or "y" not in a:
        raise ActionParseError(f"{what}: needs x, y or to_coord")
    to_x, to_y = pt(a["x"], a["y"], what)
    return Drag(None, None, to_x, to_y)


def _build_scroll(cls: type[Action]) -> Callable[[dict[str, Any], PointFn, str], Action]:
    def build(a: dict[str, Any], pt: PointFn, what: str) -> Action:
        x, y = _optional_point(a, pt, what)
        return cls(_number(a["page"], f"{what} page"), x, y)

    return build


def _build_swipe(a: dict[str, Any], pt: PointFn, what: str) -> Action:
    x, y = pt(*_pair(a["from_coord"], f"{what} from_coord"), what)
    to_x, to_y = pt(*_pair(a["to_coord"], f"{what} to_coord"), what)
    return Swipe(x, y, to_x, to_y)


def _build_wait(a: dict[str, Any], pt: PointFn, what: str) -> Action:
    if "seconds" not in a:
        return Wait()
    seconds = _number(a["seconds"], f"{what} seconds")
    if seconds < 0:
        raise ActionParseError(f"{what}: seconds must be >= 0, got {seconds!r}")
    return Wait(seconds)


_CLICK_SIG = _Signature(("x", "y"), ignored=("duration", "interval", "tween", "_pause", "logScreenshot"))
_FULL_CLICK_SIG = _Signature(
    ("x", "y", "clicks", "interval", "button"), ignored=("duration", "tween", "_pause", "logScreenshot")
)
_SCROLL_SIG = _Signature(
    ("page", "x", "y"),
    required=("page",),
    aliases=(("clicks", "page"), ("amount", "page")),
    ignored=("_pause",),
)

_Builder = Callable[[dict[str, Any], PointFn, str], Action]

# Calls of the pyautogui / AGUVIS plugin family: name -> (signature, builder).
_PYAUTOGUI_CALLS: dict[str, tuple[_Signature, _Builder]] = {
    "pyautogui.click": (_FULL_CLICK_SIG, _build_pyautogui_click),
    "pyautogui.doubleClick": (_CLICK_SIG, _click_builder(DoubleClick)),
    "pyautogui.rightClick": (_CLICK_SIG, _click_builder(RightClick)),
    "pyautogui.tripleClick": (_CLICK_SIG, _click_builder(TripleClick)),
    "pyautogui.moveTo": (
        _Signature(("x", "y"), required=("x", "y"), ignored=_CLICK_SIG.ignored),
        lambda a, pt, w: Move(*pt(a["x"], a["y"], w)),
    ),
    "pyautogui.dragTo": (
        _Signature(("x", "y", "from_coord", "to_coord"), ignored=(*_CLICK_SIG.ignored, "button")),
        _build_drag,
    ),
    "pyautogui.write": (
        _Signature(
            ("message",), required=("message",), aliases=(("text", "message"),), ignored=("interval",)
        ),
        lambda a, pt, w: Write(_str(a["message"], f"{w} message")),
    ),
    "pyautogui.typewrite": (
        _Signature(
            ("message",), required=("message",), aliases=(("text", "message"),), ignored=("interval",)
        ),
        lambda a, pt, w: Write(_str(a["message"], f"{w} message")),
    ),
    "pyautogui.press": (
        _Signature(("keys",), required=("keys",), aliases=(("key", "keys"),), ignored=("interval",)),
        lambda a, pt, w: Press(_keys(a["keys"], f"{w} keys")),
    ),
    "pyautogui.hotkey": (
        _Signature(("keys",), required=("keys",), varargs="keys", ignored=("interval",)),
        lambda a, pt, w: Hotkey(_keys(a["keys"], f"{w} keys")),
    ),
    "pyautogui.scroll": (_SCROLL_SIG, _build_scroll(Scroll)),
    "pyautogui.hscroll": (_SCROLL_SIG, _build_scroll(HScroll)),
    "mobile.swipe": (
        _Signature(("from_coord", "to_coord"), required=("from_coord", "to_coord")),
        _build_swipe,
    ),
    "mobile.long_press": (
        _Signature(("x", "y"), required=("x", "y")),
        lambda a, pt, w: LongPress(*pt(a["x"], a["y"], w)),
    ),
    "mobile.home": (_Signature(()), lambda a, pt, w: Home()),
    "mobile.back": (_Signature(()), lambda a, pt, w: Back()),
    "mobile.wait": (_Signature(("seconds",)), _build_wait),
    "mobile.open_app": (
        _Signature(("app_name",), required=("app_name",), aliases=(("app", "app_name"),)),
        lambda a, pt, w: OpenApp(_str(a["app_name"], f"{w} app_name")),
    ),
    "mobile.terminate": (
        _Signature(("status",)),
        lambda a, pt, w: Terminate(_str(a.get("status", "success"), f"{w} status")),
    ),
    "terminate": (
        _Signature(("status",)),
        lambda a, pt, w: Terminate(_str(a.get("status", "success"), f"{w} status")),
    ),
    "browser.select_option": (
        _Signature(("x", "y", "value"), required=("x", "y", "value")),
        lambda a, pt, w: SelectOption(*pt(a["x"], a["y"], w), _str(a["value"], f"{w} value")),
    ),
    "answer": (
        _Signature(("answer",), required=("answer",), aliases=(("text", "answer"),)),
        lambda a, pt, w: Answer(_str(a["answer"], f"{w} answer")),
    ),
}

_BOX_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_BOX_NOISE = re.compile(r"<\|box_start\|>|<\|box_end\|>|</?point>|</?bbox>")


def _box_point(value: Any, what: str) -> tuple[float, float]:
    """A UI-TARS box string, '(x,y)' or '(x1,y1,x2,y2)' (centre), as raw numbers."""
    text = _BOX_NOISE.sub("", _str(value, what))
    nums = [float(n) if "." in n else int(n) for n in _BOX_NUMBER.findall(text)]
    if len(nums) == 2:
        return nums[0], nums[1]
    if len(nums) == 4:
        return (nums[0] + nums[2]) / 2, (nums[1] + nums[3]) / 2
    raise ActionParseError(f"{what} must look like '(x,y)' or '(x1,y1,x2,y2)', got {value!r}")


def _uitars_point(a: dict[str, Any], key: str, pt: PointFn, what: str) -> tuple[float, float]:
    return pt(*_box_point(a[key], f"{what} {key}"), what)


def _build_uitars_hotkey(a: dict[str, Any], pt: PointFn, what: str) -> Action:
    keys = _str(a["key"], f"{what} key").split()
    if not keys:
        raise ActionParseError(f"{what}: key is empty")
    return Press((keys[0],)) if len(keys) == 1 else Hotkey(tuple(keys))


def _build_uitars_scroll(a: dict[str, Any], pt: PointFn, what: str) -> Action:
    direction = _str(a["direction"], f"{what} direction").strip().lower()
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
        return Answer(_str(a["content"], f"{what} content"))
    return Terminate("success")


_UITARS_CALLS: dict[str, tuple[_Signature, _Builder]] = {
    "click": (
        _Signature(("start_box",), required=("start_box",), aliases=(("point", "start_box"),)),
        lambda a, pt, w: Click(*_uitars_point(a, "start_box", pt, w)),
    ),
    "left_double": (
        _Signature(("start_box",), required=("start_box",), aliases=(("point", "start_box"),)),
        lambda a, pt, w: DoubleClick(*_uitars_point(a, "start_box", pt, w)),
    ),
    "right_single": (
        _Signature(("start_box",), required=("start_box",), aliases=(("point", "start_box"),)),
        lambda a, pt, w: RightClick(*_uitars_point(a, "start_box", pt, w)),
    ),
    "drag": (
        _Signature(("start_box", "end_box"), required=("start_box", "end_box")),
        lambda a, pt, w: Drag(*_uitars_point(a, "start_box", pt, w), *_uitars_point(a, "end_box", pt, w)),
    ),
    "hotkey": (_Signature(("key",), required=("key",)), _build_uitars_hotkey),
    "type": (
        _Signature(("content",), required=("content",)),
        lambda a, pt, w: Write(_str(a["content"], f"{w} content")),
    ),
    "scroll": (
        _Signature(("start_box", "direction"), required=("direction",), aliases=(("point", "start_box"),)),
        _build_uitars_scroll,
    ),
    "wait": (_Signature(()), lambda a, pt, w: Wait()),
    "finished": (_Signature(("content",)), _build_uitars_finished),
    "long_press": (
        _Signature(("start_box",), required=("start_box",), aliases=(("point", "start_box"),)),
        lambda a, pt, w: LongPress(*_uitars_point(a, "start_box", pt, w)),
    ),
    "open_app": (
        _Signature(("app_name",), required=("app_name",)),
        lambda a, pt, w: OpenApp(_str(a["app_name"], f"{w} app_name")),
    ),
    "press_home": (_Signature(()), lambda a, pt, w: Home()),
    "press_back": (_Signature(()), lambda a, pt, w: Back()),
}

_OSATLAS_VERBS = (
    "CLICK",
    "LONG_PRESS",
    "TYPE",
    "SCROLL",
    "PRESS_BACK",
    "PRESS_HOME",
    "ENTER",
    "WAIT",
    "COMPLETE",
    "IMPOSSIBLE",
    "OPEN_APP",
)
_OSATLAS_LINE = re.compile(r"^\s*(" + "|".join(_OSATLAS_VERBS) + r")\b")
_OSATLAS_POINT = re.compile(r"^<point>\[\[\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\]\]</point>$")
_OSATLAS_ARG = re.compile(r"^\[(.*)\]$", re.DOTALL)


# ---------------------------------------------------------------------------------------------
# coordinate scale


def _check_raw(value: Any, what: str) -> float:
    if not _is_number(value):
        raise ActionParseError(f"{what}: coordinate must be a number, got {value!r}")
    if value < 0:
        raise ActionParseError(f"{what}: coordinate {value!r} is negative")
    return value


def _resolve_scale(
    scale: str, family: str, raw: Sequence[float], width: int | None, height: int | None
) -> tuple[str, float, float]:
    """The scale in force and the divisors for x and y."""
    if scale not in SCALES:
        raise ActionParseError(f"unknown scale {scale!r}; expected one of {', '.join(SCALES)}")
    has_size = width is not None and height is not None
    if scale == "px" or (
        scale == "auto" and has_size and raw and max(raw) > (1 if family == "pyautogui" else K_RANGE)
    ):
        if not has_size:
            raise ActionParseError("scale px needs the screen width and height")
        if width <= 0 or height <= 0:  # type: ignore[operator]
            raise ActionParseError(f"screen size must be positive, got {width}x{height}")
        return "px", float(width), float(height)  # type: ignore[arg-type]
    if scale == "norm" or (scale == "auto" and family == "pyautogui" and (not raw or max(raw) <= 1)):
        return "norm", 1.0, 1.0
    if scale == "auto" and family == "pyautogui" and any(0 < v < 1 for v in raw):
        # 0.2 next to 1.5 reads as a normalized point gone out of range, not as 0-1000.
        raise ActionParseError(
            f"coordinate {max(raw)!r} is out of range for normalized coordinates "
            "(other values are below 1); pass the scale explicitly if this is 0-1000 or pixels"
        )
    if scale == "k" or (scale == "auto" and (not raw or max(raw) <= K_RANGE)):
        return "k", float(K_RANGE), float(K_RANGE)
    raise ActionParseError(
        f"coordinate {max(raw)!r} is beyond the 0-1000 range; give the screen size to read pixels"
    )


def _normalize(value: float, divisor: float, scale: str, what: str) -> float:
    out = round(value / divisor, COORD_DECIMALS)
    if out > 1.0:
        limit = {"norm": "1", "k": "1000"}.get(scale, f"{divisor:g} pixels")
        raise ActionParseError(
            f"{what}: coordinate {value!r} is out of range for scale {scale} (max {limit})"
        )
    return float(out)


# ---------------------------------------------------------------------------------------------
# parsing


# A step's action, waiting for the coordinate scale to be known.
_Pending = Callable[[PointFn], Action]


def _osatlas_pending(text: str) -> list[tuple[int, _Pending]]:
    out: list[tuple[int, _Pending]] = []
    for line_no, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.lower() in ("actions:", "action:"):
            continue
        match = _OSATLAS_LINE.match(line)
        if match is None:
            raise ActionParseError(f"line {line_no}: not an OS-Atlas action: {line[:60]!r}")
        verb = match.group(1)
        rest = line[match.end() :].strip()
        out.append((line_no, _osatlas_action(verb, rest, f"line {line_no}: {verb}")))
    return out


def _osatlas_action(verb: str, rest: str, what: str) -> _Pending:
    if verb in ("CLICK", "LONG_PRESS"):
        point = _OSATLAS_POINT.match(rest)
        if point is None:
            raise ActionParseError(f"{what}: expected <point>[[x,y]]</point>, got {rest[:60]!r}")
        nx, ny = (float(g) if "." in g else int(g) for g in point.groups())
        cls = Click if verb == "CLICK" else LongPress
        return lambda pt: cls(*pt(nx, ny, what))
    if verb in ("TYPE", "SCROLL", "OPEN_APP"):
        arg = _OSATLAS_ARG.match(rest)
        if arg is None:
            raise ActionParseError(f"{what}: expected [argument], got {rest[:60]!r}")
        value = arg.group(1)
        if verb == "TYPE":
            return lambda pt: Write(value)
        if verb == "OPEN_APP":
            return lambda pt: OpenApp(value)
        signed = {"UP": (Scroll, 1), "DOWN": (Scroll, -1), "RIGHT": (HScroll, 1), "LEFT": (HScroll, -1)}.get(
            value.strip().upper()
        )
        if signed is None:
            raise ActionParseError(f"{what}: direction must be UP, DOWN, LEFT or RIGHT, got {value!r}")
        scroll_cls, sign = signed
        return lambda pt: scroll_cls(sign * DIRECTION_SCROLL_AMOUNT)
    if rest:
        raise ActionParseError(f"{what} takes no argument, got {rest[:60]!r}")
    fixed: dict[str, Action] = {
        "PRESS_BACK": Back(),
        "PRESS_HOME": Home(),
        "ENTER": Press(("enter",)),
        "WAIT": Wait(),
        "COMPLETE": Terminate("success"),
        "IMPOSSIBLE": Terminate("failure"),
    }
    action = fixed[verb]
    return lambda pt: action


def _call_pending(body: str, syntax: str) -> tuple[str, list[tuple[int, _Pending]]]:
    calls = _read_calls(body)
    if syntax == "auto":
        families = {"uitars" if c.name in _UITARS_CALLS else "pyautogui" for c in calls}
        if len(families) > 1:
            raise ActionParseError("the text mixes UI-TARS calls with pyautogui calls")
        syntax = families.pop() if families else "pyautogui"
    table = _UITARS_CALLS if syntax == "uitars" else _PYAUTOGUI_CALLS
    pending: list[tuple[int, _Pending]] = []
    for call in calls:
        entry = table.get(call.name)
        if entry is None:
            raise ActionParseError(f"line {call.line}: unknown function {call.name!r}")
        sig, build = entry
        bound = _bind(call, sig)
        what = f"line {call.line}: {call.name}()"
        pending.append((call.line, lambda pt, b=build, a=bound, w=what: b(a, pt, w)))
    return syntax, pending


def _run(pending: list[tuple[int, _Pending]], pt: PointFn) -> list[Action]:
    actions: list[Action] = []
    for line, build in pending:
        try:
            actions.append(build(pt))
        except ActionParseError:
            raise
        except (TypeError, ValueError, IndexError) as err:
            raise ActionParseError(f"line {line}: {err}") from None
    return actions


def parse_actions(
    text: str,
    *,
    scale: Scale | str = "auto",
    width: int | None = None,
    height: int | None = None,
    syntax: Syntax | str = "auto",
    scroll_convention: ScrollConvention | str = "pyautogui",
) -> list[Action]:
    """Parse one step's action text (one action per line) into canonical actions.

    Raises ActionParseError, naming the line and the problem, for anything outside the whitelist.
    A `moveTo` immediately followed by a `dragTo` without a start point becomes one drag.
    """
    if not isinstance(text, str):
        raise ActionParseError(f"action text must be a string, got {type(text).__name__}")
    if len(text) > MAX_TEXT_CHARS:
        raise ActionParseError(f"action text is too long ({len(text)} characters, max {MAX_TEXT_CHARS})")
    if syntax not in SYNTAXES:
        raise ActionParseError(f"unknown syntax {syntax!r}; expected one of {', '.join(SYNTAXES)}")
    if scroll_convention not in SCROLL_CONVENTIONS:
        raise ActionParseError(
            f"unknown scroll convention {scroll_convention!r}; expected one of {', '.join(SCROLL_CONVENTIONS)}"
        )
    body = text.strip()
    if not body:
        raise ActionParseError("no action found (empty text)")

    if syntax == "osatlas" or (syntax == "auto" and _OSATLAS_LINE.match(body) is not None):
        family, pending = "osatlas", _osatlas_pending(body)
    else:
        family, pending = _call_pending(body, syntax)
    if not pending:
        raise ActionParseError("no action found")

    # A first pass collects the raw coordinates so that one scale holds for the whole step.
    raw: list[float] = []

    def collect(x: Any, y: Any, what: str) -> tuple[float, float]:
        raw.extend((_check_raw(x, what), _check_raw(y, what)))
        return 0.0, 0.0

    _run(pending, collect)
    scale_used, div_x, div_y = _resolve_scale(scale, family, raw, width, height)

    def point(x: Any, y: Any, what: str) -> tuple[float, float]:
        return (
            _normalize(_check_raw(x, what), div_x, scale_used, what),
            _normalize(_check_raw(y, what), div_y, scale_used, what),
        )

    actions = _run(pending, point)
    if scroll_convention == "inverted":
        actions = [_flip_scroll(a) for a in actions]
    return _merge_move_drag(actions)


def _flip_scroll(action: Action) -> Action:
    if isinstance(action, (Scroll, HScroll)):
        return type(action)(-action.amount, action.x, action.y)
    return action


def _merge_move_drag(actions: list[Action]) -> list[Action]:
    out: list[Action] = []
    for action in actions:
        if isinstance(action, Drag) and action.x is None and out and isinstance(out[-1], Move):
            start = out.pop()
            action = Drag(start.x, start.y, action.to_x, action.to_y)
        out.append(action)
    return out


def parse_action(text: str, **options: Any) -> Action:
    """Parse text that must hold exactly one action (after the moveTo/dragTo merge)."""
    actions = parse_actions(text, **options)
    if len(actions) != 1:
        raise ActionParseError(f"expected one action, found {len(actions)}")
    return actions[0]


# ---------------------------------------------------------------------------------------------
# rendering


def _num(value: float) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


def _coord(value: float) -> str:
    return repr(float(round(value, COORD_DECIMALS)))


def _k(value: float) -> str:
    # One decimal on 0-1000 keeps all four decimals of the normalized value, so parsing is exact.
    scaled = round(value * K_RANGE, 1)
    return str(int(scaled)) if scaled == int(scaled) else repr(scaled)


def _render_aguvis(action: Action, signed: Callable[[float], float]) -> str:
    def xy(a: Any) -> str:
        return "" if a.x is None else f"x={_coord(a.x)}, y={_coord(a.y)}"

    def at(a: Any) -> str:
        return "" if a.x is None else f", x={_coord(a.x)}, y={_coord(a.y)}"

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
            return f"pyautogui.dragTo(x={_coord(action.to_x)}, y={_coord(action.to_y)})"
        return (
            f"pyautogui.dragTo(from_coord=[{_coord(action.x)}, {_coord(action.y)}], "
            f"to_coord=[{_coord(action.to_x)}, {_coord(action.to_y)}])"
        )
    if isinstance(action, Write):
        return f"pyautogui.write(message={action.text!r})"
    if isinstance(action, Press):
        keys = repr(action.keys[0]) if len(action.keys) == 1 else repr(list(action.keys))
        return f"pyautogui.press(keys={keys})"
    if isinstance(action, Hotkey):
        return f"pyautogui.hotkey(keys={list(action.keys)!r})"
    if isinstance(action, Scroll):
        return f"pyautogui.scroll(page={_num(signed(action.amount))}{at(action)})"
    if isinstance(action, HScroll):
        return f"pyautogui.hscroll(page={_num(signed(action.amount))}{at(action)})"
    return _render_plugin(action)


def _render_plugin(action: Action) -> str:
    if isinstance(action, Swipe):
        return (
            f"mobile.swipe(from_coord=[{_coord(action.x)}, {_coord(action.y)}], "
            f"to_coord=[{_coord(action.to_x)}, {_coord(action.to_y)}])"
        )
    if isinstance(action, LongPress):
        return f"mobile.long_press(x={_coord(action.x)}, y={_coord(action.y)})"
    if isinstance(action, Home):
        return "mobile.home()"
    if isinstance(action, Back):
        return "mobile.back()"
    if isinstance(action, Wait):
        return "mobile.wait()" if action.seconds is None else f"mobile.wait(seconds={_num(action.seconds)})"
    if isinstance(action, OpenApp):
        return f"mobile.open_app(app_name={action.app!r})"
    if isinstance(action, SelectOption):
        return f"browser.select_option(x={_coord(action.x)}, y={_coord(action.y)}, value={action.value!r})"
    if isinstance(action, Answer):
        return f"answer({action.text!r})"
    if isinstance(action, Terminate):
        return f"terminate(status={action.status!r})"
    raise ActionRenderError(f"no text form for action {action!r}")


def _render_pyautogui(
    action: Action, signed: Callable[[float], float], width: int | None, height: int | None
) -> str:
    def cx(v: float) -> str:
        return str(round(v * width)) if width else _coord(v)

    def cy(v: float) -> str:
        return str(round(v * height)) if height else _coord(v)

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
        return f"pyautogui.scroll({_num(signed(action.amount))}{at(action)})"
    if isinstance(action, HScroll):
        return f"pyautogui.hscroll({_num(signed(action.amount))}{at(action)})"
    return _render_plugin(action)


def _needs_point(action: Any, style: str) -> None:
    if action.x is None:
        raise ActionRenderError(f"{style} cannot express {action.type} without a point")


def _render_uitars(action: Action) -> list[str]:
    def box(x: float, y: float) -> str:
        return f"'({_k(x)},{_k(y)})'"

    simple = {Click: "click", DoubleClick: "left_double", RightClick: "right_single", LongPress: "long_press"}
    if type(action) in simple:
        _needs_point(action, "uitars")
        return [f"{simple[type(action)]}(start_box={box(action.x, action.y)})"]  # type: ignore[attr-defined]
    if isinstance(action, (Drag, Swipe)):
        _needs_point(action, "uitars")
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


def _render_osatlas(action: Action) -> str:
    def point(x: float, y: float) -> str:
        return f"<point>[[{_k(x)},{_k(y)}]]</point>"

    if isinstance(action, (Click, LongPress)):
        _needs_point(action, "osatlas")
        verb = "CLICK" if isinstance(action, Click) else "LONG_PRESS"
        return f"{verb} {point(action.x, action.y)}"  # type: ignore[arg-type]
    if isinstance(action, (Write, OpenApp)):
        value = action.text if isinstance(action, Write) else action.app
        if "\n" in value or "\r" in value:
            raise ActionRenderError("osatlas cannot express text with line breaks")
        return f"{'TYPE' if isinstance(action, Write) else 'OPEN_APP'} [{value}]"
    if isinstance(action, (Scroll, HScroll)):
        if action.amount == 0:
            raise ActionRenderError("osatlas cannot express a zero scroll")
        up = action.amount > 0
        direction = ("UP" if up else "DOWN") if isinstance(action, Scroll) else ("RIGHT" if up else "LEFT")
        return f"SCROLL [{direction}]"
    if isinstance(action, Press) and action.keys == ("enter",):
        return "ENTER"
    fixed = {Home: "PRESS_HOME", Back: "PRESS_BACK", Wait: "WAIT"}
    if type(action) in fixed:
        return fixed[type(action)]
    if isinstance(action, Terminate) and action.status in ("success", "failure"):
        return "COMPLETE" if action.status == "success" else "IMPOSSIBLE"
    raise ActionRenderError(f"osatlas has no form for {action.to_dict()}")


def render_actions(
    actions: Action | Iterable[Action],
    style: Style | str = "aguvis",
    *,
    width: int | None = None,
    height: int | None = None,
    scroll_convention: ScrollConvention | str = "pyautogui",
) -> str:
    """Render actions as text in `style`, one action per line.

    `width`/`height` apply to the pyautogui style only and switch it to integer pixels (lossy).
    """
    if style not in STYLES:
        raise ActionRenderError(f"unknown style {style!r}; expected one of {', '.join(STYLES)}")
    if scroll_convention not in SCROLL_CONVENTIONS:
        raise ActionRenderError(f"unknown scroll convention {scroll_convention!r}")
    if (width is None) != (height is None):
        raise ActionRenderError("give both width and height, or neither")
    sign = -1 if scroll_convention == "inverted" else 1

    def signed(amount: float) -> float:
        return sign * amount if amount != 0 else amount

    items = [actions] if isinstance(actions, Action) else list(actions)
    lines: list[str] = []
    for action in items:
        if not isinstance(action, Action):
            raise ActionRenderError(f"not an action: {action!r}")
        if style == "aguvis":
            lines.append(_render_aguvis(action, signed))
        elif style == "pyautogui":
            lines.append(_render_pyautogui(action, signed, width, height))
        elif style == "uitars":
            lines.extend(_render_uitars(action))
        else:
            lines.append(_render_osatlas(action))
    return "\n".join(lines)


def convert_actions(text: str, style: Style | str, **parse_options: Any) -> str:
    """Parse action text and render it in another style."""
    return render_actions(parse_actions(text, **parse_options), style)
