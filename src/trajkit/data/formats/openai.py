"""OpenAI chat records: `{"messages": [{"role": "system"|"user"|"assistant"|"tool", "content"}], "id"?}`.

The first user turn is the task; later user and tool turns are observations (as in ETO, user turns
stay tasks while the assistant has only acknowledged with "OK"). A missing id becomes
`"{stem}-{index}"`. `tool` turns, `tool_call_id`, `tool_calls` and other message keys come back on
writing. Content must be a string (or null beside `tool_calls`); lists of content parts are not read.
"""

from __future__ import annotations

from typing import Any

from trajkit.data.formats._chat import ChatFormat
from trajkit.data.formats._common import AGENT_KIND, OBSERVATION_KIND, SYSTEM_KIND, USER, MessageSpec
from trajkit.data.schema import AGENT, OBSERVATION, SYSTEM, TASK


class OpenAIFormat(ChatFormat):
    name = "openai"
    spec = MessageSpec(
        list_key="messages",
        role_keys=("role",),
        text_keys=("content",),
        kinds={"system": SYSTEM_KIND, "user": USER, "assistant": AGENT_KIND, "tool": OBSERVATION_KIND},
        spellings={SYSTEM: "system", TASK: "user", OBSERVATION: "user", AGENT: "assistant"},
        user_rule="ack",
        alternation="agent",
    )
    remembered_spellings = ("tool",)

    def text_may_be_missing(self, message: dict[str, Any]) -> bool:
        return bool(message.get("tool_calls"))
