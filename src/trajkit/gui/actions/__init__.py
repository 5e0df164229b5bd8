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

Modules
    records: the action dataclasses, JSON form, option names, errors. _common: reading calls from
    the syntax tree, argument binding, coordinate scales. pyautogui, uitars, osatlas: one dialect
    each (parse table and renderer). codec: `parse_actions` / `render_actions`.
"""

from __future__ import annotations

from trajkit.gui.actions._common import PointFn
from trajkit.gui.actions.codec import convert_actions, parse_action, parse_actions, render_actions
from trajkit.gui.actions.records import (
    ACTION_TYPES,
    COORD_DECIMALS,
    DIRECTION_SCROLL_AMOUNT,
    K_RANGE,
    MAX_TEXT_CHARS,
    SCALES,
    SCROLL_CONVENTIONS,
    STYLES,
    SYNTAXES,
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
    Scale,
    Scroll,
    ScrollConvention,
    SelectOption,
    Style,
    Swipe,
    Syntax,
    Terminate,
    TripleClick,
    Wait,
    Write,
    action_from_dict,
    action_point,
    actions_from_json,
    actions_to_json,
)

__all__ = [
    "ACTION_TYPES",
    "Action",
    "ActionParseError",
    "ActionRenderError",
    "Answer",
    "Back",
    "COORD_DECIMALS",
    "Click",
    "DIRECTION_SCROLL_AMOUNT",
    "DoubleClick",
    "Drag",
    "HScroll",
    "Home",
    "Hotkey",
    "K_RANGE",
    "LongPress",
    "MAX_TEXT_CHARS",
    "Move",
    "OpenApp",
    "PointFn",
    "Press",
    "RightClick",
    "SCALES",
    "SCROLL_CONVENTIONS",
    "STYLES",
    "SYNTAXES",
    "Scale",
    "Scroll",
    "ScrollConvention",
    "SelectOption",
    "Style",
    "Swipe",
    "Syntax",
    "Terminate",
    "TripleClick",
    "Wait",
    "Write",
    "action_from_dict",
    "action_point",
    "actions_from_json",
    "actions_to_json",
    "convert_actions",
    "parse_action",
    "parse_actions",
    "render_actions",
]
