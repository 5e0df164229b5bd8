"""Action dispatch: parsed `trajkit.gui.actions` actions sent to the page as playwright mouse
and keyboard events.

`PageActions` is mixed into `MiniWoBEnv`; it keeps the pointer position (`_mouse`) and whether a
button is held (`_mouse_down`) on the env, which resets them between episodes.
"""

from __future__ import annotations

import time
from typing import Any

from trajkit.envs.miniwob import page as js

# Longest wait an agent may ask for (mobile.wait).
MAX_WAIT_S = 5.0
# Mouse moves a drag is made of (jQuery UI starts a drag only after the pointer has moved).
DRAG_STEPS = 8

# pyautogui key names -> the names playwright's keyboard uses.
_KEY_NAMES = {
    "enter": "Enter",
    "return": "Enter",
    "tab": "Tab",
    "space": "Space",
    "backspace": "Backspace",
    "delete": "Delete",
    "del": "Delete",
    "esc": "Escape",
    "escape": "Escape",
    "up": "ArrowUp",
    "down": "ArrowDown",
    "left": "ArrowLeft",
    "right": "ArrowRight",
    "home": "Home",
    "end": "End",
    "pageup": "PageUp",
    "pagedown": "PageDown",
    "pgup": "PageUp",
    "pgdn": "PageDown",
    "insert": "Insert",
    "capslock": "CapsLock",
    "ctrl": "Control",
    "ctrlleft": "Control",
    "ctrlright": "Control",
    "control": "Control",
    "shift": "Shift",
    "shiftleft": "Shift",
    "shiftright": "Shift",
    "alt": "Alt",
    "altleft": "Alt",
    "altright": "Alt",
    "option": "Alt",
    "cmd": "Meta",
    "command": "Meta",
    "win": "Meta",
    "winleft": "Meta",
    "winright": "Meta",
    "super": "Meta",
    "meta": "Meta",
    **{f"f{i}": f"F{i}" for i in range(1, 13)},
}
_SUPPORTED = frozenset(
    {
        "click",
        "double_click",
        "right_click",
        "triple_click",
        "move",
        "drag",
        "write",
        "press",
        "hotkey",
        "scroll",
        "hscroll",
        "wait",
        "select_option",
        "answer",
        "terminate",
    }
)


class PageActions:
    """The env's action methods: checking an action is supported, then performing it on the page."""

    _mouse: tuple[float, float]
    _mouse_down: bool

    @staticmethod
    def _check_supported(action: Any) -> None:
        from trajkit.gui.actions import ActionParseError

        if action.type not in _SUPPORTED:
            raise ActionParseError(f"{action.type} is not available in a web page")
        for key in getattr(action, "keys", None) or ():
            _key_name(key)

    # ---- doing ---------------------------------------------------------------------------------

    def _px(self, x: float, y: float) -> tuple[float, float]:
        return x * js.AREA_W, y * js.AREA_H

    def _perform(self, page: Any, actions: list[Any]) -> tuple[dict[str, Any], bool]:
        """Run the actions in order; stop early when the task ends (the rest would hit the cover)."""
        state: dict[str, Any] = {"done": False, "raw_reward": 0.0, "reason": None}
        for action in actions:
            if action.type in ("terminate", "answer"):
                return dict(page.evaluate(js.STATE_JS)), True
            self._do(page, action)
            state = dict(page.evaluate(js.STATE_JS))
            if state["done"]:
                break
        return state, False

    def _point(self, page: Any, action: Any) -> tuple[float, float]:
        if getattr(action, "x", None) is None:
            return self._mouse
        return self._px(action.x, action.y)

    def _do(self, page: Any, action: Any) -> None:
        mouse, keyboard = page.mouse, page.keyboard
        kind = action.type
        if kind in ("click", "double_click", "right_click", "triple_click", "move"):
            x, y = self._point(page, action)
            self._mouse = (x, y)
            if kind == "click":
                mouse.click(x, y)
            elif kind == "double_click":
                mouse.dblclick(x, y)
            elif kind == "right_click":
                mouse.click(x, y, button="right")
            elif kind == "triple_click":
                mouse.click(x, y, click_count=3)
            else:
                mouse.move(x, y)
        elif kind == "drag":
            x, y = self._point(page, action)
            to = self._px(action.to_x, action.to_y)
            mouse.move(x, y)
            mouse.down()
            self._mouse_down = True
            mouse.move(to[0], to[1], steps=DRAG_STEPS)
            mouse.up()
            self._mouse_down = False
            self._mouse = to
        elif kind == "write":
            keyboard.type(action.text)
        elif kind == "press":
            for key in action.keys:
                keyboard.press(_key_name(key))
        elif kind == "hotkey":
            names = [_key_name(k) for k in action.keys]
            for name in names:
                keyboard.down(name)
            for name in reversed(names):
                keyboard.up(name)
        elif kind in ("scroll", "hscroll"):
            if action.x is not None:
                self._mouse = self._px(action.x, action.y)
                mouse.move(*self._mouse)
            if kind == "scroll":  # positive scrolls up, as in pyautogui
                mouse.wheel(0, -action.amount * js.AREA_H)
            else:
                mouse.wheel(action.amount * js.AREA_W, 0)
            page.evaluate(js.SETTLE_FRAMES_JS)
        elif kind == "wait":
            time.sleep(min(MAX_WAIT_S, 1.0 if action.seconds is None else action.seconds))
        elif kind == "select_option":
            self._select_option(page, action)
        else:  # filtered out before
            raise ValueError(f"unsupported action {kind}")

    def _select_option(self, page: Any, action: Any) -> None:
        from trajkit.gui.actions import ActionParseError

        x, y = self._px(action.x, action.y)
        handle = page.evaluate_handle(
            "([x, y]) => { const e = document.elementFromPoint(x, y); return e && e.closest('select'); }",
            [x, y],
        )
        element = handle.as_element()
        if element is None:
            raise ActionParseError("select_option: there is no drop-down list at that point")
        try:
            element.select_option(label=action.value, timeout=2000)
        except Exception:
            raise ActionParseError(f"select_option: the list has no option {action.value!r}") from None


def _key_name(key: str) -> str:
    """A pyautogui key name as playwright spells it; single characters pass through."""
    from trajkit.gui.actions import ActionParseError

    low = key.lower()
    if low in _KEY_NAMES:
        return _KEY_NAMES[low]
    if len(key) == 1 and key.isprintable():
        return key
    raise ActionParseError(f"unknown key {key!r}")
