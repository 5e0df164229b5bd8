"""A scripted shopper that knows the goal's target product and buys it with the goal's options.

It reads only the task's goal and the pages it is shown, so it runs on any WebShop env, in-process
or behind a worker: search with the instruction (price clause dropped), look through up to three
result pages for the target ASIN, else go back and search the product's name, open it, click the
goal's options that the item page offers, and buy. If the target never shows up within the step
budget it buys the top result instead, as a shopper out of time would.
"""

from __future__ import annotations

import random
import re
from typing import Any

from trajkit.data.schema import AGENT, Trajectory, Turn
from trajkit.envs.base import Task, episode_prefix, observation_turn
from trajkit.envs.webshop.env import BACK_TO_SEARCH, BUY_NOW, NEXT_PAGE, PREV_PAGE, SEP

_PRICE_CLAUSE = re.compile(r",? and price lower than [\d.]+ dollars\s*$")
_MAX_PAGES = 3


class OracleError(RuntimeError):
    """The scripted shopper met a page it did not expect (a bug, or an env that differs)."""


def search_keywords(instruction: str) -> str:
    return _PRICE_CLAUSE.sub("", instruction).strip().rstrip(".")


def _option_value(value: str) -> str:
    return value.strip().replace("/", " | ").lower()


class _Shopper:
    def __init__(self, env: Any, task: Task, rng: random.Random) -> None:
        self.env, self.task, self.rng = env, task, rng
        self.goal = task.spec
        self.asin = self.goal["asin"]
        first = env.reset(task)
        self.turns: list[Turn] = episode_prefix(env.instruction, first.text)
        self.page = first.text
        self.steps = 0
        self.done = False
        self.won = False
        self.reward = 0.0
        options = self.goal["goal_options"]
        self.wanted = [_option_value(v) for v in (options.values() if isinstance(options, dict) else options)]

    def left(self) -> int:
        return self.task.max_steps - self.steps

    def act(self, thought: str, action: str) -> str:
        if self.done:
            raise OracleError(f"task {self.task.id}: the episode ended before the shopper finished")
        self.turns.append(Turn(AGENT, f"Thought: {thought}\nAction: {action}"))
        result = self.env.step(action)
        if not result.info.get("valid", True):
            raise OracleError(f"task {self.task.id}: the env rejected {action!r} on page {self.page[:200]!r}")
        self.steps += 1
        self.done, self.won, self.reward = result.done, bool(result.info.get("won")), float(result.reward)
        self.page = result.observation.text
        if not self.done:
            # ETO's layout: an episode ends on the agent's last action, not on an observation.
            self.turns.append(
                observation_turn(self.page, result.observation.image, self.env.observation_prefix)
            )
        return self.page

    def parts(self) -> list[str]:
        return self.page.split(SEP)

    def on_page(self, asin: str) -> bool:
        return asin in self.parts()

    def listed(self) -> list[str]:
        """The ASINs of a results page (each is followed by a title and a price)."""
        parts = self.parts()
        start = next((i for i, p in enumerate(parts) if p.startswith("Page ")), len(parts)) + 1
        while start < len(parts) and parts[start] in (PREV_PAGE, NEXT_PAGE):
            start += 1
        return parts[start::3]

    def look_through(self, keywords: str, thought: str, reserve: int) -> bool:
        """Search and page on until the target shows, keeping `reserve` steps for what follows."""
        self.act(thought, f"search[{keywords}]")
        pages = 1
        while not self.on_page(self.asin):
            if NEXT_PAGE not in self.parts() or pages >= _MAX_PAGES or self.left() <= reserve + 1:
                return False
            self.act(
                self.rng.choice(
                    (
                        f"I don't see {self.asin} on this page. I'll check the next page.",
                        "None of these is the product I want. Let me look at the next page.",
                    )
                ),
                f"click[{NEXT_PAGE}]",
            )
            pages += 1
        return True

    def run(self) -> None:
        n_opts = len(self.wanted)
        buy_cost = 1 + n_opts + 1  # open the item, pick the options, buy
        keywords = search_keywords(self.goal["instruction_text"]).lower()
        found = self.look_through(
            keywords,
            self.rng.choice(
                (
                    "I should use the search bar to find the product in the instruction.",
                    "I'll start by searching for the product described in the instruction.",
                )
            ),
            reserve=buy_cost + 2,
        )
        if not found and self.left() >= buy_cost + 2:
            self.act(
                "The product I want is not among these results. I'll go back and search for its name.",
                f"click[{BACK_TO_SEARCH}]",
            )
            found = self.look_through(
                self.goal["name"].lower(),
                "Searching the product's exact name should bring it up.",
                reserve=buy_cost,
            )
        if found:
            choice = self.asin
            thought = self.rng.choice(
                (
                    f"{choice} matches what I need. I'll open it.",
                    f"{choice} looks like exactly the product I am after. Let me open it.",
                )
            )
        else:
            listed = self.listed()
            if not listed or self.left() < 2:
                return  # nothing to buy within the budget: the episode runs out
            choice = listed[0]
            thought = f"I could not find a better match, so I'll take the top result, {choice}."
        self.act(thought, f"click[{choice}]")
        offered = set(self.offered_options())
        for value in self.wanted:
            if value in offered and self.left() > 1:
                self.act(
                    self.rng.choice(
                        (
                            f"I should select the '{value}' option.",
                            f"The instruction asks for {value}, so I'll click that option.",
                        )
                    ),
                    f"click[{value}]",
                )
        self.act(
            self.rng.choice(
                (
                    "Everything matches the instruction now, so I'll buy it.",
                    "All the options are set. I'll click 'Buy Now' to purchase it.",
                )
            ),
            f"click[{BUY_NOW}]",
        )

    def offered_options(self) -> list[str]:
        """Option names and values of an item page: the parts between '< Prev' and the title."""
        parts = self.parts()
        if PREV_PAGE not in parts:
            return []
        start = parts.index(PREV_PAGE) + 1
        end = next((i for i, p in enumerate(parts) if p.startswith("Price: ")), len(parts)) - 1
        return parts[start:end]


def oracle_trajectory(env: Any, task: Task, seed: int | str = 0) -> Trajectory:
    """Play `task` with the scripted shopper and return the episode as a Trajectory.

    `seed` varies the wording of thoughts only; the same seed gives the same trajectory.
    """
    shopper = _Shopper(env, task, random.Random(f"webshop-oracle/{task.id}/{seed}"))
    shopper.run()
    steps = sum(1 for t in shopper.turns if t.role == AGENT) - 1  # minus the opening "OK"
    return Trajectory(
        id=f"expert/{task.id}",
        turns=shopper.turns,
        task_id=task.id,
        env=getattr(env, "name", "webshop"),
        split=task.split,
        reward=shopper.reward,
        success=shopper.won,
        metadata={
            "source": "expert",
            "oracle": "webshop-target-product",
            "thoughts": "templated",
            "steps": steps,
            "env_version": getattr(env, "version", None),
            "expert_seed": seed,
            "asin": task.spec.get("asin"),
        },
    )
