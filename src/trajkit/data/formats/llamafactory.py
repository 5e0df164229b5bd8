"""LLaMA-Factory ShareGPT records.

`{"conversations": [{"from": "human"|"gpt"|"observation"|"function_call", "value"}], "system"?, "tools"?}`.
Human turns are tasks, `observation` turns observations, `gpt` and `function_call` turns the agent's.
The `system` string becomes a leading system turn and is written back as that key.
"""

from __future__ import annotations

from typing import Any

from trajkit.data.formats._chat import ChatFormat
from trajkit.data.formats._common import (
    AGENT_KIND,
    OBSERVATION_KIND,
    SYSTEM_KIND,
    TURN_EXTRAS,
    TURN_ROLES,
    USER,
    Issue,
    MessageSpec,
    ReadOptions,
    describe,
)
from trajkit.data.schema import AGENT, OBSERVATION, SYSTEM, TASK, Trajectory, Turn


class LlamaFactoryFormat(ChatFormat):
    name = "llamafactory"
    spec = MessageSpec(
        list_key="conversations",
        role_keys=("from",),
        text_keys=("value",),
        kinds={
            "system": SYSTEM_KIND,
            "human": USER,
            "observation": OBSERVATION_KIND,
            "gpt": AGENT_KIND,
            "function_call": AGENT_KIND,
        },
        spellings={SYSTEM: "system", TASK: "human", OBSERVATION: "observation", AGENT: "gpt"},
        user_rule="task",
        alternation="strict",
    )
    reserved = ("system",)
    remembered_spellings = ("function_call",)

    def check_record_keys(self, record: dict[str, Any], options: ReadOptions) -> list[Issue]:
        system = record.get("system")
        if system is not None and not isinstance(system, str):
            return [Issue("system", f"system is {describe(system)}; expected a string")]
        return []

    def prefix_turns(self, record: Any) -> list[Turn]:
        system = record.get("system") if isinstance(record, dict) else None
        return [Turn(role=SYSTEM, text=system)] if isinstance(system, str) and system else []

    def split_turns(self, trajectory: Trajectory, out: dict[str, Any]) -> int:
        turns = trajectory.turns
        if not turns or turns[0].role != SYSTEM or turns[0].text == "":
            return 0
        first = turns[0]
        # Only a plain system turn fits the `system` key; anything richer stays a message.
        has_more = any(v is not None for v in (first.image, first.recipient, first.end_turn, first.token_ids))
        has_more = has_more or first.train is not None
        for key in (TURN_EXTRAS, TURN_ROLES):
            has_more = has_more or "0" in (trajectory.metadata.get(key) or {})
        if has_more:
            return 0
        out["system"] = first.text
        return 1
