"""The one small interface every environment implements.

An environment is created once and reused: `reset(task)` starts an episode on one task and
returns the first observation; `step(action_text)` applies the agent's raw text action. Envs
never see token ids or prompts; the rollout engine owns those.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Task:
    """One task of an environment: `id` is stable across runs and unique within the env."""

    id: str
    split: str
    spec: dict[str, Any] = field(default_factory=dict)
    max_steps: int = 30


@dataclass
class Observation:
    text: str
    image: str | None = None  # path to a screenshot, for GUI envs
    # The instruction shown to the agent at reset (task goal); None after the first observation.
    instruction: str | None = None


@dataclass
class StepResult:
    observation: Observation
    reward: float
    done: bool
    info: dict[str, Any] = field(default_factory=dict)


class Env(Protocol):
    name: str
    version: str

    def tasks(self, split: str) -> list[Task]: ...

    def reset(self, task: Task) -> Observation: ...

    def step(self, action_text: str) -> StepResult: ...

    def close(self) -> None: ...
