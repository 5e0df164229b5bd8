"""ETO's ShareGPT records: `{"id", "conversations": [{"from": "human"|"gpt"|"system", "value"}]}`.

ETO episodes open with the environment's instruction (human), the agent's "OK", then the task
(human); every later human turn is an observation of the environment. Records may carry `reward`
and `game_file`; unknown keys are kept in metadata and written back. The role/content spelling
(`{"role": "user"|"assistant"|"system", "content"}`) is read too, even mixed with `from` in one
conversation as in ETO's in-context examples, and written by the `eto-role` format. A bare list of
messages (the in-context example files) is read as one record with a generated id.
"""

from __future__ import annotations

from typing import Any

from trajkit.data.formats._chat import ChatFormat
from trajkit.data.formats._common import (
    AGENT_KIND,
    SYSTEM_KIND,
    USER,
    MessageSpec,
    trajectory_fields,
    write_trajectory_fields,
)
from trajkit.data.schema import AGENT, OBSERVATION, SYSTEM, TASK, Trajectory

SPEC = MessageSpec(
    list_key="conversations",
    role_keys=("from", "role"),
    text_keys=("value", "content"),
    kinds={
        "human": USER,
        "user": USER,
        "gpt": AGENT_KIND,
        "assistant": AGENT_KIND,
        "system": SYSTEM_KIND,
    },
    spellings={SYSTEM: "system", TASK: "human", OBSERVATION: "human", AGENT: "gpt"},
    user_rule="ack",
    alternation="strict",
    allow_bare_list=True,
)
ROLE_SPELLINGS = {SYSTEM: "system", TASK: "user", OBSERVATION: "user", AGENT: "assistant"}


class EtoFormat(ChatFormat):
    name = "eto"
    spec = SPEC

    def fields(self, record: dict[str, Any], trajectory_id: str) -> dict[str, Any]:
        # ETO names an episode by its task: the record id is the task id.
        found = trajectory_fields(record)
        if found["task_id"] is None:
            found["task_id"] = trajectory_id
        return found

    def write_fields(self, trajectory: Trajectory) -> dict[str, Any]:
        out = write_trajectory_fields(trajectory)
        if out.get("task_id") == trajectory.id:
            del out["task_id"]
        return out


class EtoRoleFormat(EtoFormat):
    """ETO records written with `role`/`content` keys."""

    name = "eto-role"
    spec = MessageSpec(
        list_key=SPEC.list_key,
        role_keys=("role", "from"),
        text_keys=("content", "value"),
        kinds=SPEC.kinds,
        spellings=ROLE_SPELLINGS,
        user_rule=SPEC.user_rule,
        alternation=SPEC.alternation,
        allow_bare_list=True,
    )
