"""The oracle's reading of the page: element boxes found through the env, and the helpers that
turn a box into a click step at a point `document.elementFromPoint` hits.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trajkit.envs.miniwob import page as js
from trajkit.gui.actions import Click, render_actions
from trajkit.gui.reasoning import GuiStep


@dataclass
class _Ctx:
    env: Any
    utterance: str
    rng: random.Random

    def elements(self) -> list[dict[str, Any]]:
        return self.env.elements()

    def find(self, pred: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        """The first element matching `pred` that a click can reach."""
        found = [e for e in self.elements() if pred(e)]
        reachable = [e for e in found if e.get("point")]
        if not reachable:
            state = "is not reachable inside the task area" if found else "is not on the page"
            raise _Stuck(f"{what} {state}")
        return reachable[0]

    def by_id(self, element_id: str, what: str | None = None) -> dict[str, Any]:
        return self.find(lambda e: e["id"] == element_id, what or f"#{element_id}")

    def pick(self, *options: str) -> str:
        return self.rng.choice(options)


class _Stuck(Exception):
    """The expected target is missing: the episode is given up (and counted as a failure)."""


def _xy(point: list[float]) -> tuple[float, float]:
    # Pixel centres in CSS px -> fractions of the task area (rounded as the renderer rounds).
    return point[0] / js.AREA_W, point[1] / js.AREA_H


def _click(el: dict[str, Any]) -> str:
    return render_actions(Click(*_xy(el["point"])))


def _step(observation: str, thought: str, instruction: str, code: str) -> GuiStep:
    return GuiStep(code=code, instruction=instruction, thought=thought, observation=observation)


def _quoted(utterance: str, pattern: str, what: str) -> re.Match[str]:
    m = re.search(pattern, utterance)
    if m is None:
        raise _Stuck(f"cannot read {what} from the instruction {utterance!r}")
    return m


def _choice_inputs(elements: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """Each checkbox / radio button by the text of the label wrapping it."""
    out: dict[str, dict[str, Any]] = {}
    label = None
    for el in elements:  # document order: a label comes right before the input inside it
        if el["tag"] == "label":
            label = el
        elif el["tag"] == "input" and el["type"] == kind and label is not None:
            out.setdefault(label["label"], el)
    return out
