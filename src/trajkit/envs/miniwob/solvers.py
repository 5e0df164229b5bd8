"""The scripted expert's per-task solvers: each yields the steps of one episode, reading the
page again before each, and `_SOLVERS` maps a task name to its solver.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

from trajkit.envs.miniwob import page as js
from trajkit.envs.miniwob.boxes import _choice_inputs, _Ctx, _quoted, _step, _Stuck, _xy
from trajkit.gui.actions import Drag, Hotkey, Press, Scroll, Write, render_actions
from trajkit.gui.reasoning import GuiStep


def _solve_single_click(target_id: str, noun: str) -> Callable[[_Ctx], Iterator[GuiStep]]:
    def solve(ctx: _Ctx) -> Iterator[GuiStep]:
        el = ctx.by_id(target_id, noun)
        yield _step(
            f"The page shows {noun} in the task area.",
            ctx.pick(
                f"The task asks me to click {noun}; it is visible, so I click it.",
                f"I only need to click {noun}.",
            ),
            f"Click {noun}.",
            ctx.click(el),
        )

    return solve


def _solve_click_button(ctx: _Ctx) -> Iterator[GuiStep]:
    label = _quoted(ctx.utterance, r'Click on the "(.*)" button', "the button label").group(1)
    el = ctx.find(lambda e: e["tag"] == "button" and e["label"] == label, f'the "{label}" button')
    yield _step(
        "The page shows a few text fields and buttons with different labels.",
        f'I need the button labelled "{label}"; I found it among the buttons.',
        f'Click the "{label}" button.',
        ctx.click(el),
    )


def _solve_choices(kind: str) -> Callable[[_Ctx], Iterator[GuiStep]]:
    """click-checkboxes (several, or none) and click-option (one radio button)."""

    def solve(ctx: _Ctx) -> Iterator[GuiStep]:
        names_text = _quoted(ctx.utterance, r"^Select (.*) and click Submit\.$", "the items").group(1)
        wanted = [] if names_text == "nothing" and kind == "checkbox" else names_text.split(", ")
        for i, name in enumerate(wanted):
            choices = _choice_inputs(ctx.elements(), kind)
            box, label = choices.get(name, ({}, {}))
            if not box.get("point"):
                raise _Stuck(f'the {kind} "{name}" is not on the page or not reachable')
            if box.get("checked"):
                continue
            rest = len(wanted) - i - 1
            # Any wanted item not yet selected is as right a click as this one: its input or its
            # label (clicking a label toggles its input).
            also = [label] + [
                part
                for other in wanted[i + 1 :]
                if other in choices and not choices[other][0].get("checked")
                for part in choices[other]
            ]
            yield _step(
                f'The page lists {kind}es with labels; "{name}" is not selected yet.',
                f'"{name}" is one of the items to select'
                + (f"; {rest} more after this one." if rest else "; it is the last one."),
                f'Click the {kind} next to "{name}".',
                ctx.click(box, *also),
            )
        submit = ctx.by_id("subbtn", "the Submit button")
        yield _step(
            "The requested items are selected." if wanted else "No item needs to be selected.",
            "Everything the task asks for is selected, so I submit.",
            "Click the Submit button.",
            ctx.click(submit),
        )

    return solve


def _solve_click_link(ctx: _Ctx) -> Iterator[GuiStep]:
    text = _quoted(ctx.utterance, r'Click on the link "(.*)"\.', "the link text").group(1)
    el = ctx.find(lambda e: "alink" in e["classes"].split() and e["label"] == text, f'the link "{text}"')
    yield _step(
        "The page shows a paragraph of text with some words marked as links.",
        f'The link to click reads "{text}".',
        f'Click the link "{text}".',
        ctx.click(el),
    )


def _solve_click_tab(ctx: _Ctx) -> Iterator[GuiStep]:
    n = _quoted(ctx.utterance, r"Click on Tab #(\d+)", "the tab number").group(1)
    el = ctx.find(lambda e: e["tag"] == "a" and e["attrs"].get("href") == f"#tabs-{n}", f"Tab #{n}")
    yield _step(
        "The page shows a row of tabs above a text panel.",
        f"The task is to open Tab #{n}, which is in the tab row.",
        f"Click the tab labelled Tab #{n}.",
        ctx.click(el),
    )


def _solve_click_dialog(ctx: _Ctx) -> Iterator[GuiStep]:
    el = ctx.find(lambda e: e["tag"] == "button" and "ui-dialog-titlebar-close" in e["classes"], "the x")
    yield _step(
        "A dialog box is open with a close button (x) in its title bar.",
        "To close the dialog I click its x button.",
        'Click the "x" in the dialog\'s title bar.',
        ctx.click(el),
    )


def _solve_click_collapsible(ctx: _Ctx) -> Iterator[GuiStep]:
    header = ctx.find(lambda e: e["tag"] == "h3", "the section header")
    yield _step(
        f'The page shows a collapsed section "{header["label"]}".',
        "I first expand the section by clicking its header, then submit.",
        f'Click the section header "{header["label"]}".',
        ctx.click(header),
    )
    submit = ctx.by_id("subbtn", "the Submit button")
    yield _step(
        "The section is expanded and shows its text; the Submit button is below it.",
        "The section is open, so I can submit now.",
        "Click the Submit button.",
        ctx.click(submit),
    )


def _solve_click_widget(ctx: _Ctx) -> Iterator[GuiStep]:
    kind = _quoted(ctx.utterance, r'Click on a "(\w+)" widget', "the widget type").group(1)
    el = ctx.find(lambda e: e["attrs"].get("data-type") == kind, f"a {kind} widget")
    yield _step(
        "The page shows a column of widgets: buttons, text fields, check boxes and others.",
        f"I need a widget of type {kind}; this one is a {kind}.",
        f"Click the {kind} widget.",
        ctx.click(el),
    )


def _type_into(ctx: _Ctx, el: dict[str, Any], text: str, name: str) -> Iterator[GuiStep]:
    yield _step(
        f"The page shows {name}, which is empty.",
        ctx.pick(
            f"I need to type into {name}, so I click it first to focus it.",
            f"To enter text I first focus {name} by clicking it.",
        ),
        f"Click {name}.",
        ctx.click(el),
    )
    yield _step(
        f"{name[0].upper() + name[1:]} is focused.",
        ctx.pick(f'Now I type "{text}".', f'The field has the focus, so I type "{text}".'),
        f'Type "{text}".',
        render_actions(Write(text)),
    )


def _submit(ctx: _Ctx, label: str = "Submit") -> Iterator[GuiStep]:
    yield _step(
        "The text is entered.",
        ctx.pick(f"All fields are filled in, so I press {label}.", f"The form is complete; I click {label}."),
        f"Click the {label} button.",
        ctx.click(ctx.by_id("subbtn", f"the {label} button")),
    )


def _solve_enter_text(ctx: _Ctx) -> Iterator[GuiStep]:
    text = _quoted(ctx.utterance, r'^Enter "(.*)" into the text field', "the text").group(1)
    yield from _type_into(ctx, ctx.by_id("tt", "the text field"), text, "the text field")
    yield from _submit(ctx)


def _solve_enter_text_2(ctx: _Ctx) -> Iterator[GuiStep]:
    m = _quoted(ctx.utterance, r'^Type "(.*)" in all (upper|lower) case letters', "the text")
    text = m.group(1).upper() if m.group(2) == "upper" else m.group(1).lower()
    yield from _type_into(ctx, ctx.by_id("tt", "the text field"), text, "the text field")
    yield from _submit(ctx)


def _solve_enter_password(ctx: _Ctx) -> Iterator[GuiStep]:
    pw = _quoted(ctx.utterance, r'^Enter the password "(.*)" into both', "the password").group(1)
    yield from _type_into(ctx, ctx.by_id("password", "the password field"), pw, "the password field")
    yield from _type_into(ctx, ctx.by_id("verify", "the verify field"), pw, "the verify password field")
    yield from _submit(ctx)


def _solve_login_user(ctx: _Ctx) -> Iterator[GuiStep]:
    m = _quoted(ctx.utterance, r'username "(.*)" and the password "(.*)" into', "the login")
    user, pw = m.group(1), m.group(2)
    yield from _type_into(ctx, ctx.by_id("username", "the username field"), user, "the username field")
    yield from _type_into(ctx, ctx.by_id("password", "the password field"), pw, "the password field")
    yield from _submit(ctx, "Login")


def _solve_focus_text_2(ctx: _Ctx) -> Iterator[GuiStep]:
    pos = _quoted(ctx.utterance, r"Focus into the (1st|2nd|3rd) input", "the text box").group(1)
    el = ctx.by_id(f"tt{'123'['1st 2nd 3rd'.split().index(pos)]}", f"the {pos} text box")
    yield _step(
        "The page shows three text boxes, one under the other.",
        f"The task wants the {pos} text box focused; clicking it focuses it.",
        f"Click the {pos} text box.",
        ctx.click(el),
    )


def _solve_choose_list(ctx: _Ctx) -> Iterator[GuiStep]:
    item = _quoted(ctx.utterance, r"^Select (.*) from the list and click Submit", "the item").group(1)
    sel = ctx.find(lambda e: e["tag"] == "select", "the drop-down list")
    options = sel.get("options") or []
    if item not in options:
        raise _Stuck(f"the list has no option {item!r}")
    shown = options[sel["selected"]] if 0 <= sel.get("selected", -1) < len(options) else None
    moves = options.index(item) - (sel["selected"] if shown is not None else 0)
    if shown == item:
        yield _step(
            f'The page shows a drop-down list that already shows "{item}", and a Submit button.',
            f'The list already has "{item}" chosen, so I can submit right away.',
            "Click the Submit button.",
            ctx.click(ctx.find(lambda e: e["tag"] == "button", "the Submit button")),
        )
        return
    yield _step(
        f'The page shows a drop-down list showing "{shown}" and a Submit button.',
        f'I need "{item}" in the list; I open it first.',
        "Click the drop-down list.",
        ctx.click(sel),
    )
    keys = ["down" if moves > 0 else "up"] * abs(moves) + ["enter"]
    yield _step(
        "The drop-down list is open.",
        f'"{item}" is {abs(moves)} {"place" if abs(moves) == 1 else "places"} '
        f"{'below' if moves > 0 else 'above'} the current choice; "
        "I move there with the arrow keys and confirm with Enter.",
        f'Choose "{item}" with the arrow keys and press Enter.',
        render_actions(Press(tuple(keys))),
    )
    yield _step(
        f'The list shows "{item}".',
        "The right item is chosen, so I submit.",
        "Click the Submit button.",
        ctx.click(ctx.find(lambda e: e["tag"] == "button", "the Submit button")),
    )


def _solve_scroll_text_2(ctx: _Ctx) -> Iterator[GuiStep]:
    where = _quoted(ctx.utterance, r"to the (bottom|top) of the text", "the direction").group(1)
    area = ctx.by_id("text-area", "the text area")
    top, height, client = area.get("scroll") or [0, 0, 0]
    distance = (height - client - top) if where == "bottom" else top
    # A little more than needed: a scroll stops at the end anyway.
    pages = max(1.0, math.ceil((distance / js.AREA_H + 0.5) * 2) / 2)
    amount = -pages if where == "bottom" else pages
    yield _step(
        "The page shows a text area with a long text, scrolled to the middle, and a Submit button.",
        f"The task is to scroll the text area to the {where}; I scroll over it.",
        f"Scroll the text area to the {where}.",
        render_actions(Scroll(amount, *_xy(area["point"]))),
    )
    yield _step(
        f"The text area is scrolled to the {where}.",
        "The text area is where it should be, so I submit.",
        "Click the Submit button.",
        ctx.click(ctx.by_id("subbtn", "the Submit button")),
    )


def _solve_drag_box(ctx: _Ctx) -> Iterator[GuiStep]:
    small = ctx.by_id("draggableSmall", "the small box")
    large = ctx.find(lambda e: e["id"] == "draggableLarge", "the large box")
    # The task checks the small box's offset from the large one's corner: strictly between 0 and
    # 30 px; aim for the middle, 15 px.
    dx = large["box"][0] + 15 - small["box"][0]
    dy = large["box"][1] + 15 - small["box"][1]
    sx, sy = small["point"]
    to = (min(max(sx + dx, 0.5), js.AREA_W - 0.5), min(max(sy + dy, 0.5), js.AREA_H - 0.5))
    yield _step(
        "The page shows a small red box and a larger blue box.",
        "I drag the small box onto the middle of the large box so that it sits completely inside.",
        "Drag the small box into the large box.",
        render_actions(Drag(*_xy([sx, sy]), *_xy(list(to)))),
    )
    yield _step(
        "The small box is inside the large box.",
        "The boxes are placed, so I submit.",
        "Click the Submit button.",
        ctx.click(ctx.by_id("subbtn", "the Submit button")),
    )


def _solve_copy_paste(ctx: _Ctx) -> Iterator[GuiStep]:
    source = ctx.by_id("to-copy", "the text area")
    yield _step(
        "The page shows a text area with some text, a text box and a Submit button.",
        "I copy the text area's text: first I click into it.",
        "Click the text area.",
        ctx.click(source),
    )
    yield _step(
        "The text area is focused.",
        "I select all of its text and copy it.",
        "Select all the text and copy it.",
        render_actions([Hotkey(("ctrl", "a")), Hotkey(("ctrl", "c"))]),
    )
    yield _step(
        "The text is copied.",
        "Now I paste it into the text box: I click the text box first.",
        "Click the text box.",
        ctx.click(ctx.by_id("answer-input", "the text box")),
    )
    yield _step(
        "The text box is focused.",
        "I paste the copied text.",
        "Paste the text.",
        render_actions(Hotkey(("ctrl", "v"))),
    )
    yield from _submit(ctx)


_SOLVERS: dict[str, Callable[[_Ctx], Iterator[GuiStep]]] = {
    "click-test": _solve_single_click("subbtn", "the button"),
    "click-test-2": _solve_single_click("subbtn", 'the button "ONE"'),
    "click-button": _solve_click_button,
    "click-checkboxes": _solve_choices("checkbox"),
    "click-option": _solve_choices("radio"),
    "click-link": _solve_click_link,
    "click-tab": _solve_click_tab,
    "click-dialog": _solve_click_dialog,
    "click-collapsible": _solve_click_collapsible,
    "click-widget": _solve_click_widget,
    "enter-text": _solve_enter_text,
    "enter-text-2": _solve_enter_text_2,
    "enter-password": _solve_enter_password,
    "focus-text": _solve_single_click("tt", "the text box"),
    "focus-text-2": _solve_focus_text_2,
    "login-user": _solve_login_user,
    "choose-list": _solve_choose_list,
    "scroll-text-2": _solve_scroll_text_2,
    "drag-box": _solve_drag_box,
    "copy-paste": _solve_copy_paste,
}
