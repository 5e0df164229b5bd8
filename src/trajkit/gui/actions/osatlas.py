"""The OS-Atlas dialect: one `VERB [argument]` or `VERB <point>[[x,y]]</point>` per line, on 0-1000.

It is not Python, so it is read line by line with anchored regular expressions.
"""

from __future__ import annotations

import re

from trajkit.gui.actions._common import Pending, k_text, needs_point
from trajkit.gui.actions.records import (
    DIRECTION_SCROLL_AMOUNT,
    Action,
    ActionParseError,
    ActionRenderError,
    Back,
    Click,
    Home,
    HScroll,
    LongPress,
    OpenApp,
    Press,
    Scroll,
    Terminate,
    Wait,
    Write,
)

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
OSATLAS_LINE = re.compile(r"^\s*(" + "|".join(_OSATLAS_VERBS) + r")\b")
_OSATLAS_POINT = re.compile(r"^<point>\[\[\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\]\]</point>$")
_OSATLAS_ARG = re.compile(r"^\[(.*)\]$", re.DOTALL)


def osatlas_pending(text: str) -> list[tuple[int, Pending]]:
    out: list[tuple[int, Pending]] = []
    for line_no, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.lower() in ("actions:", "action:"):
            continue
        match = OSATLAS_LINE.match(line)
        if match is None:
            raise ActionParseError(f"line {line_no}: not an OS-Atlas action: {line[:60]!r}")
        verb = match.group(1)
        rest = line[match.end() :].strip()
        out.append((line_no, _osatlas_action(verb, rest, f"line {line_no}: {verb}")))
    return out


def _osatlas_action(verb: str, rest: str, what: str) -> Pending:
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


# ---------------------------------------------------------------------------------------------
# rendering


def render_osatlas(action: Action) -> str:
    def point(x: float, y: float) -> str:
        return f"<point>[[{k_text(x)},{k_text(y)}]]</point>"

    if isinstance(action, (Click, LongPress)):
        needs_point(action, "osatlas")
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
