"""The page's visible elements written as observation text (for `with_elements`)."""

from __future__ import annotations

import re
from typing import Any

from trajkit.envs.miniwob import page as js

_SPACES = re.compile(r"\s+")


def format_elements(elements: list[dict[str, Any]]) -> str:
    """The element list as text: one line per element, box as fractions of the task area."""
    lines = ["Elements (tag, text, box x0 y0 x1 y1 as fractions of the screen):"]
    for el in elements:
        text = el.get("text") or ""
        interactive = el["tag"] in ("input", "textarea", "select", "button", "a", "svg", "canvas")
        if not text and not interactive:
            continue
        x0, y0, x1, y1 = el["box"]
        box = (
            max(0.0, x0 / js.AREA_W),
            max(0.0, y0 / js.AREA_H),
            min(1.0, x1 / js.AREA_W),
            min(1.0, y1 / js.AREA_H),
        )
        if box[0] >= 1 or box[1] >= 1 or box[2] <= 0 or box[3] <= 0:
            continue  # outside the screen
        tag = el["tag"] + (f"[{el['type']}]" if el.get("type") and el["tag"] == "input" else "")
        parts = [tag]
        if text:
            parts.append(repr(_SPACES.sub(" ", text)[:80]))
        if el.get("value"):
            parts.append(f"value={el['value'][:80]!r}")
        if "checked" in el:
            parts.append("checked" if el["checked"] else "unchecked")
        if el.get("options"):
            chosen = el.get("selected", -1)
            if 0 <= chosen < len(el["options"]):
                parts.append(f"selected={el['options'][chosen]!r}")
            parts.append("options=" + "|".join(el["options"][:20]))
        parts.append("(" + " ".join(f"{v:.3f}" for v in box) + ")")
        lines.append(" ".join(parts))
    return "\n".join(lines)
