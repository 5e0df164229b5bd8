"""The oracle's reading of the page: element boxes found through the env, and the helpers that
turn a box into a click step at a point `document.elementFromPoint` hits.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trajkit.envs.miniwob import page as js
from trajkit.gui.actions import Click, render_actions
from trajkit.gui.reasoning import GuiStep


@dataclass
class _Ctx:
    env: Any
    utterance: str
    rng: random.Random
    # Boxes (0-1 of the screenshot) a click of the step being written may land in: the grounding
    # targets the oracle records for its click steps.
    targets: list[list[float]] = field(default_factory=list)

    def click(self, el: dict[str, Any], *also: dict[str, Any]) -> str:
        """Code clicking `el` at its reachable point; `el`'s box, and those of `also` (elements a
        click would serve the task as well, e.g. a checkbox's label), become the step's targets."""
        self.targets = [norm_box(e) for e in (el, *also)]
        return _click(el)

    def take_targets(self) -> list[list[float]] | None:
        boxes, self.targets = self.targets, []
        return boxes or None

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


def norm_box(el: dict[str, Any]) -> list[float]:
    """An element's box as fractions of the task area (= of the screenshot), clipped to it."""
    x0, y0, x1, y1 = el["box"]
    fx = [min(1.0, max(0.0, v / js.AREA_W)) for v in (x0, x1)]
    fy = [min(1.0, max(0.0, v / js.AREA_H)) for v in (y0, y1)]
    return [round(fx[0], 4), round(fy[0], 4), round(fx[1], 4), round(fy[1], 4)]


def _click(el: dict[str, Any]) -> str:
    return render_actions(Click(*_xy(el["point"])))


def _step(observation: str, thought: str, instruction: str, code: str) -> GuiStep:
    return GuiStep(code=code, instruction=instruction, thought=thought, observation=observation)


def _quoted(utterance: str, pattern: str, what: str) -> re.Match[str]:
    m = re.search(pattern, utterance)
    if m is None:
        raise _Stuck(f"cannot read {what} from the instruction {utterance!r}")
    return m


def _choice_inputs(
    elements: list[dict[str, Any]], kind: str
) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Each checkbox / radio button, with the label wrapping it, by the label's text."""
    out: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    label = None
    for el in elements:  # document order: a label comes right before the input inside it
        if el["tag"] == "label":
            label = el
        elif el["tag"] == "input" and el["type"] == kind and label is not None:
            out.setdefault(label["label"], (el, label))
    return out
