"""Record formats: each reads one raw record into a `Trajectory` and writes one back.

| name           | record shape                                                                  |
|----------------|-------------------------------------------------------------------------------|
| `trajkit`      | `Trajectory.to_dict()`                                                        |
| `eto`          | `{"id", "conversations": [{"from": "human"/"gpt"/"system", "value"}], ...}`    |
| `eto-role`     | the same with `{"role": "user"/"assistant"/"system", "content"}` (writing)    |
| `aguvis`       | `{"image", "conversations": [{"from", "value", "recipient", "end_turn"}]}`    |
| `openai`       | `{"messages": [{"role", "content"}], "id"?}`                                  |
| `llamafactory` | `{"conversations": [{"from": "human"/"gpt"/"observation"/...}], "system"?}`   |

Every format object has `check(record, options, conventions=True) -> list[Issue]`,
`read(record, index, options) -> Trajectory` (raises `RecordError`) and
`write(trajectory, options) -> dict`.
"""

from __future__ import annotations

from typing import Any, Protocol

from trajkit.data.formats._common import Issue, ReadOptions, RecordError, WriteOptions
from trajkit.data.formats.aguvis import AguvisFormat
from trajkit.data.formats.eto import EtoFormat, EtoRoleFormat
from trajkit.data.formats.llamafactory import LlamaFactoryFormat
from trajkit.data.formats.openai import OpenAIFormat
from trajkit.data.formats.trajkit import TrajkitFormat
from trajkit.data.schema import Trajectory


class Format(Protocol):
    name: str

    def check(self, record: Any, options: ReadOptions, conventions: bool = True) -> list[Issue]: ...

    def read(self, record: Any, index: int, options: ReadOptions) -> Trajectory: ...

    def write(self, trajectory: Trajectory, options: WriteOptions) -> dict[str, Any]: ...


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        TrajkitFormat(),
        EtoFormat(),
        EtoRoleFormat(),
        AguvisFormat(),
        OpenAIFormat(),
        LlamaFactoryFormat(),
    )
}
FORMAT_NAMES = tuple(FORMATS)

# Message keys only LLaMA-Factory's ShareGPT uses, and only AGUVIS's.
_LLAMAFACTORY_ROLES = {"observation", "function_call"}
_AGUVIS_MESSAGE_KEYS = {"recipient", "end_turn"}


def get_format(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown format {name!r}; expected one of {', '.join(FORMAT_NAMES)}") from None


def detect_format(record: Any) -> str | None:
    """The format a record is in, judged from its keys; None when it cannot be told."""
    if isinstance(record, list):
        # A bare list of messages, as in ETO's in-context example files.
        return "eto" if record and all(isinstance(m, dict) for m in record) else None
    if not isinstance(record, dict):
        return None
    if "turns" in record:
        return "trajkit"
    if "messages" in record:
        return "openai"
    if "conversations" not in record:
        return None
    messages = record["conversations"]
    messages = [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []
    if "image" in record or any(_AGUVIS_MESSAGE_KEYS & m.keys() for m in messages):
        return "aguvis"
    if "system" in record or "tools" in record or any(m.get("from") in _LLAMAFACTORY_ROLES for m in messages):
        return "llamafactory"
    return "eto"


__all__ = [
    "FORMATS",
    "FORMAT_NAMES",
    "Format",
    "Issue",
    "ReadOptions",
    "RecordError",
    "WriteOptions",
    "detect_format",
    "get_format",
]
