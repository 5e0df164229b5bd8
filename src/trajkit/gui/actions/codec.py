"""Entry points: parse a step's action text in any dialect, render actions in any style.

Parsing picks the dialect, reads every call, fixes one coordinate scale for the whole step, then
builds the actions; rendering dispatches each action to its style's renderer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from trajkit.gui.actions._common import (
    Pending,
    PointFn,
    bind,
    check_raw,
    normalize,
    read_calls,
    resolve_scale,
)
from trajkit.gui.actions.osatlas import OSATLAS_LINE, osatlas_pending, render_osatlas
from trajkit.gui.actions.pyautogui import PYAUTOGUI_CALLS, render_aguvis, render_pyautogui
from trajkit.gui.actions.records import (
    MAX_TEXT_CHARS,
    SCROLL_CONVENTIONS,
    STYLES,
    SYNTAXES,
    Action,
    ActionParseError,
    ActionRenderError,
    Drag,
    HScroll,
    Move,
    Scale,
    Scroll,
    ScrollConvention,
    Style,
    Syntax,
)
from trajkit.gui.actions.uitars import UITARS_CALLS, render_uitars


def _call_pending(body: str, syntax: str) -> tuple[str, list[tuple[int, Pending]]]:
    calls = read_calls(body)
    if syntax == "auto":
        families = {"uitars" if c.name in UITARS_CALLS else "pyautogui" for c in calls}
        if len(families) > 1:
            raise ActionParseError("the text mixes UI-TARS calls with pyautogui calls")
        syntax = families.pop() if families else "pyautogui"
    table = UITARS_CALLS if syntax == "uitars" else PYAUTOGUI_CALLS
    pending: list[tuple[int, Pending]] = []
    for call in calls:
        entry = table.get(call.name)
        if entry is None:
            raise ActionParseError(
                f"line {call.line}: unknown function {call.name!r}{_known_in(call.name, table)}"
            )
        sig, build = entry
        bound = bind(call, sig)
        what = f"line {call.line}: {call.name}()"
        pending.append((call.line, lambda pt, b=build, a=bound, w=what: b(a, pt, w)))
    return syntax, pending


def _known_in(name: str, table: dict[str, Any]) -> str:
    """For `plugin.fn` of a known plugin: the functions that plugin does have."""
    prefix = name.split(".", 1)[0] + "." if "." in name else None
    known = sorted(n for n in table if prefix and n.startswith(prefix))
    return f"; the {prefix[:-1]} plugin has {', '.join(known)}" if prefix and known else ""


def _run(pending: list[tuple[int, Pending]], pt: PointFn) -> list[Action]:
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

    if syntax == "osatlas" or (syntax == "auto" and OSATLAS_LINE.match(body) is not None):
        family, pending = "osatlas", osatlas_pending(body)
    else:
        family, pending = _call_pending(body, syntax)
    if not pending:
        raise ActionParseError("no action found")

    # A first pass collects the raw coordinates so that one scale holds for the whole step.
    raw: list[float] = []

    def collect(x: Any, y: Any, what: str) -> tuple[float, float]:
        raw.extend((check_raw(x, what), check_raw(y, what)))
        return 0.0, 0.0

    _run(pending, collect)
    scale_used, div_x, div_y = resolve_scale(scale, family, raw, width, height)

    def point(x: Any, y: Any, what: str) -> tuple[float, float]:
        return (
            normalize(check_raw(x, what), div_x, scale_used, what),
            normalize(check_raw(y, what), div_y, scale_used, what),
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
            lines.append(render_aguvis(action, signed))
        elif style == "pyautogui":
            lines.append(render_pyautogui(action, signed, width, height))
        elif style == "uitars":
            lines.extend(render_uitars(action))
        else:
            lines.append(render_osatlas(action))
    return "\n".join(lines)


def convert_actions(text: str, style: Style | str, **parse_options: Any) -> str:
    """Parse action text and render it in another style."""
    return render_actions(parse_actions(text, **parse_options), style)
