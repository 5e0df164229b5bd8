"""The records every stage of trajkit reads and writes.

A `Trajectory` is one episode (or one expert demonstration): an ordered list of `Turn`s plus what
happened (reward, success) and where it came from (task, env, split, metadata). Formats on disk
(ETO ShareGPT, AGUVIS, OpenAI messages, ...) are converted to and from this one shape.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Canonical roles. `task` is a user turn that states a task or instruction; `observation` is a user
# turn the environment produced. Neither is trained; only `agent` turns are.
SYSTEM, TASK, OBSERVATION, AGENT = "system", "task", "observation", "agent"
ROLES = (SYSTEM, TASK, OBSERVATION, AGENT)
# Accepted spellings on input, mapped to the canonical role.
ROLE_ALIASES = {
    "system": SYSTEM,
    "task": TASK,
    "user": TASK,
    "human": TASK,
    "observation": OBSERVATION,
    "agent": AGENT,
    "assistant": AGENT,
    "gpt": AGENT,
}


@dataclass
class Turn:
    """One message of a trajectory.

    `train` overrides the default (agent turns trained, others not); None means by role.
    `token_ids` holds the exact ids a sampler produced for this turn, so training never
    re-tokenizes sampled text differently.
    """

    role: str
    text: str
    image: str | list[str] | None = None
    recipient: str | None = None
    end_turn: bool | None = None
    token_ids: list[int] | None = None
    train: bool | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            canonical = ROLE_ALIASES.get(self.role)
            if canonical is None:
                raise ValueError(f"unknown role {self.role!r}; expected one of {', '.join(ROLES)}")
            self.role = canonical

    @property
    def trained(self) -> bool:
        return self.role == AGENT if self.train is None else self.train

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Turn:
        return cls(
            role=d["role"],
            text=d["text"],
            image=d.get("image"),
            recipient=d.get("recipient"),
            end_turn=d.get("end_turn"),
            token_ids=d.get("token_ids"),
            train=d.get("train"),
        )


@dataclass
class Trajectory:
    id: str
    turns: list[Turn]
    task_id: str | None = None
    env: str | None = None
    split: str | None = None
    reward: float | None = None
    success: bool | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def agent_turns(self) -> list[Turn]:
        return [t for t in self.turns if t.role == AGENT]

    @property
    def images(self) -> list[str]:
        out: list[str] = []
        for t in self.turns:
            if isinstance(t.image, str):
                out.append(t.image)
            elif t.image:
                out.extend(t.image)
        return out

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id}
        for key in ("task_id", "env", "split", "reward", "success"):
            value = getattr(self, key)
            if value is not None:
                d[key] = value
        d["turns"] = [t.to_dict() for t in self.turns]
        if self.metadata:
            d["metadata"] = self.metadata
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trajectory:
        return cls(
            id=str(d["id"]),
            turns=[Turn.from_dict(t) for t in d["turns"]],
            task_id=d.get("task_id"),
            env=d.get("env"),
            split=d.get("split"),
            reward=d.get("reward"),
            success=d.get("success"),
            metadata=dict(d.get("metadata") or {}),
        )
