"""The canonical action records, their JSON form, the option names and the two errors.

Every action is a frozen dataclass whose `to_dict()` is `{"type": ..., field: value, ...}`; field
values are checked on construction, so an action that exists is a valid one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
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


class ActionParseError(ValueError):
    """Action text that is not a whitelisted action; the message says what was wrong."""


class ActionRenderError(ValueError):
    """An action that the requested text style cannot express."""


_COORD_FIELDS = frozenset({"x", "y", "to_x", "to_y"})
_TEXT_FIELDS = frozenset({"text", "app", "value", "status"})
_NUMBER_FIELDS = frozenset({"amount", "seconds"})


def is_number(value: Any) -> bool:
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
                if not is_number(value) or not math.isfinite(value) or not 0.0 <= value <= 1.0:
                    raise ValueError(
                        f"{self.type}: {f.name}={value!r} is not a normalized coordinate in [0, 1]"
                    )
            elif f.name in _TEXT_FIELDS:
                if not isinstance(value, str):
                    raise ValueError(f"{self.type}: {f.name} must be a string, got {value!r}")
            elif f.name in _NUMBER_FIELDS:
                if not is_number(value) or not math.isfinite(value):
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
