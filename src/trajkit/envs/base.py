"""The one small interface every environment implements.

An environment is created once and reused: `reset(task)` starts an episode on one task and
returns the first observation; `step(action_text)` applies the agent's raw text action. Envs
never see token ids or prompts; the rollout engine owns those.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
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


def task_identity(task: Task) -> str:
    """What makes two tasks the same episode: the spec (split names aside)."""
    import json

    return json.dumps(task.spec, sort_keys=True) if task.spec else task.id


def split_overlap(env: Env, train_split: str, test_split: str) -> list[str]:
    """Ids of `test_split` tasks that are also `train_split` tasks (an honest split has none)."""
    train = {task_identity(t) for t in env.tasks(train_split)}
    return [t.id for t in env.tasks(test_split) if task_identity(t) in train]


ICL_INTRO = "Here is an example."
ICL_HANDOVER = "Now, it's your turn and here is the task.\n"


def episode_prefix(
    instruction: str, first_observation: str, icl: list | None = None, intro: bool = False
) -> list:
    """The opening turns of a text-env episode, in ETO's layout.

    ETO data opens with the env's instruction as a user turn, the agent's "OK", then the task
    (initial observation + goal). Experts and rollouts both start from this, so their prompts
    cannot drift apart. With `icl` (one worked episode as turns, task turn first), the example
    is replayed as plain conversation turns between the "OK" and the task, as ETO's chat agent
    sends it; `intro` adds ETO's single-prompt wording around it ("Here is an example." / "Now,
    it's your turn and here is the task."). Example turns are never trained.
    """
    from trajkit.data.schema import AGENT, TASK, Turn

    turns = [Turn(TASK, instruction), Turn(AGENT, "OK")]
    if not icl:
        return turns + [Turn(TASK, first_observation)]
    example = [Turn(t.role, t.text, train=False) for t in icl]
    if not intro:
        return turns + example + [Turn(TASK, first_observation)]
    example[0] = Turn(example[0].role, f"{ICL_INTRO}\n{example[0].text}", train=False)
    return turns + example + [Turn(TASK, ICL_HANDOVER + first_observation)]


ICL_SPAN = "icl_turns"  # trajectory metadata: [start, end) of the example's turns


def without_example(turns: list, span: list[int] | tuple[int, int] | None) -> list:
    """The turns with an in-context example's span removed, and the task turn as the expert data
    writes it (the intro's handover line dropped): the prompt the policy is trained on."""
    if not span:
        return list(turns)
    start, end = span
    rest = list(turns[:start]) + list(turns[end:])
    task = rest[start] if len(rest) > start else None
    if task is not None and task.text.startswith(ICL_HANDOVER):
        rest[start] = replace(task, text=task.text[len(ICL_HANDOVER) :])
    return rest


OBSERVATION_PREFIX = "Observation: "  # as ETO's data writes observations; an env may set its own


def observation_turn(text: str, image: str | None = None, prefix: str = OBSERVATION_PREFIX):
    """An environment observation as a turn, prefixed the way ETO's data writes it for the env
    (an env's `observation_prefix`: WebShop's is "Observation:\n")."""
    from trajkit.data.schema import OBSERVATION, Turn

    return Turn(OBSERVATION, f"{prefix}{text}", image=image)


def parse_react_action(agent_text: str) -> str:
    """The action an agent turn asks for: the text after the last `Action:`.

    A turn without `Action:` is passed on whole (stripped), so the env answers it as an invalid
    action instead of the rollout failing.
    """
    marker = "Action:"
    idx = agent_text.rfind(marker)
    action = agent_text[idx + len(marker) :] if idx >= 0 else agent_text
    return action.strip().splitlines()[0].strip() if action.strip() else ""
