"""ETO's ReAct text agent: one generation per env step, `Thought: ... Action: ...` turns.

An episode opens as ETO's data does (instruction, "OK", task; optionally one worked example
episode before the task, as ETO's evaluation shows it), so rollout prompts are token-for-token
prefixes of what SFT trained on. The env gets the text after the turn's last `Action:`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trajkit.data.schema import AGENT, Turn
from trajkit.envs.base import (
    ICL_SPAN,
    OBSERVATION_PREFIX,
    Observation,
    StepResult,
    Task,
    episode_prefix,
    observation_turn,
    parse_react_action,
)
from trajkit.rollout.engine import Episode, Generate


class ReactAgent:
    generations_per_step = 1

    def __init__(
        self,
        renderer: Any,
        instruction: str | None = None,
        icl: Callable[[Task], list[Turn]] | None = None,
        icl_intro: bool = False,
    ):
        """`instruction`: the first user turn (None: the env's own). A run passes the expert
        data's, so a policy is evaluated on the prompts it was trained on. `icl`: task -> turns of
        one worked example episode shown before the task (ETO's exploration and evaluation), as
        plain turns unless `icl_intro`; None: no example."""
        self.renderer = renderer
        self.instruction = instruction
        self.icl = icl
        self.icl_intro = icl_intro

    def open(self, ep: Episode, obs: Observation) -> list[Turn]:
        instruction = self.instruction or getattr(ep.env, "instruction", "")
        example = self.icl(ep.task) if self.icl is not None else None
        turns = episode_prefix(instruction, obs.text, example, intro=self.icl_intro)
        if example:
            ep.info[ICL_SPAN] = [2, 2 + len(example)]  # after instruction and "OK"
        ep.info["opening_turns"] = len(turns)
        return turns

    def fit(self, ep: Episode, budget: int) -> tuple[list[int], list] | None:
        """A prompt of at most `budget` tokens: the opening turns (instruction, example, task) and
        the most recent history, the oldest (agent, observation) pairs dropped, as FastChat drops
        the oldest history of an over-long conversation. None when even the opening is too long."""
        keep = ep.info.get("opening_turns", 0)
        head, history = ep.turns[:keep], ep.turns[keep:]
        start = ep.info.get("dropped_turns", 0)  # history only grows: never drop fewer than before
        for drop in range(start + start % 2, len(history) + 1, 2):
            ids = self.renderer.prompt_ids(head + history[drop:])
            if len(ids) <= budget:
                ep.info["dropped_turns"] = drop
                ep.info["truncated_steps"] = ep.info.get("truncated_steps", 0) + 1
                return ids, []
        return None

    def act(self, live: list[Episode], generate: Generate) -> None:
        prompts = [(self.renderer.prompt_ids(ep.turns), []) for ep in live]
        outs = generate(live, prompts)
        for ep, ids in zip(live, outs, strict=True):
            ep.turns.append(Turn(AGENT, turn_text(self.renderer, ids), token_ids=list(ids)))

    def action(self, ep: Episode) -> str:
        return parse_react_action(ep.turns[-1].text)

    def observe(self, ep: Episode, result: StepResult) -> Turn:
        prefix = getattr(ep.env, "observation_prefix", OBSERVATION_PREFIX)
        return observation_turn(result.observation.text, result.observation.image, prefix)


def turn_text(renderer: Any, ids: list[int]) -> str:
    """The text of a sampled turn: its ids decoded without the stop token that ended it, and
    without the space a template writes before its end marker (Llama-2's " </s>"). The ids
    themselves are stored untouched beside it."""
    stops = set(renderer.stop_ids)
    body = ids[:-1] if ids and ids[-1] in stops else ids
    text = renderer.tokenizer.decode(body, skip_special_tokens=False)
    template = renderer.template
    if template is not None and template.end_of_turn.startswith(" ") and text.endswith(" "):
        text = text[:-1]
    return text
