"""Replay expert trajectories in the real env: do their actions still reach the goal?

Published demonstrations can be unplayable in the env version at hand: an object written with a
name the game does not know ("dining table 1" for "diningtable 1"), a step the data skipped, two
objects held at once. `verify_trajectory(env, traj)` resets the env on the trajectory's task, sends
each agent turn's action (`parse_react_action`) in order, and reports whether the episode is won,
which actions the env refused ("Nothing happened.", or `info["valid"]` false), the first step where
the recorded observation differs from the env's, and an error when the task cannot be found or
the env fails. Step k is the k-th action; the observation compared at step k is the one that
follows it (ETO's data ends with the winning action, whose observation is not recorded).

The opening observation (the room and the goal) is not compared: ALFWorld's intro is joined with
one newline where ETO's data has two, so it would differ on every record for no fault of the data.

A trajectory's task is the one the env names it by: `env.expert_task_id(traj)` where the env has
one (ALFWorld maps ETO's `game_file` to its train task), else its `task_id`, looked up in its own
split first and then every split of the env; an env with `task_for_game_file` finds games outside
train too. The step budget is lifted to the number of actions, so a replay is never cut short.

`records.json`-style files (`{"id", "game_file", "task", "actions", "observations"}`, one
observation per action but the last) are read by `read_action_records`, since `data.io` does not
know that layout.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trajkit.data.formats._common import is_acknowledgement
from trajkit.data.schema import AGENT, OBSERVATION, TASK, Trajectory, Turn
from trajkit.envs.base import Task, parse_react_action

NOTHING = "Nothing happened."
OBSERVATION_PREFIX = "Observation:"
DEFAULT_SPLITS = ("train", "test_seen", "test_unseen")
ACTION_RECORD_KEYS = ("actions", "observations")


def normalize_observation(text: str) -> str:
    """An observation as compared: ends stripped, and a leading "Observation: " dropped."""
    text = text.strip()
    if text.startswith(OBSERVATION_PREFIX):
        text = text[len(OBSERVATION_PREFIX) :].strip()
    return text


def _clip(text: str, width: int = 120) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


@dataclass
class InvalidAction:
    step: int
    action: str
    observation: str


@dataclass
class Mismatch:
    step: int
    recorded: str
    env: str


@dataclass
class Verification:
    """What replaying one trajectory gave. `passed` is `won`: the actions reach the goal."""

    id: str
    task_id: str | None = None
    won: bool = False
    steps: int = 0  # actions replayed
    actions: int = 0  # actions in the record
    invalid: list[InvalidAction] = field(default_factory=list)
    mismatch: Mismatch | None = None
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.won and self.error is None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"passed": self.passed}

    def problems(self) -> list[str]:
        """What went wrong (or looked odd), one phrase each, most important first."""
        if self.error is not None:
            return [self.error]
        out = []
        if not self.won:
            out.append(f"not won after {self.steps} step{'s' if self.steps != 1 else ''}")
        elif self.steps < self.actions:
            out.append(f"won at step {self.steps}; {self.actions - self.steps} later action(s) not replayed")
        if self.invalid:
            shown = ", ".join(f"{i.step} ({i.action!r} -> {_clip(i.observation)!r})" for i in self.invalid)
            s = "s" if len(self.invalid) > 1 else ""
            out.append(f"invalid action{s} at step{s} {shown}")
        if self.mismatch is not None:
            m = self.mismatch
            recorded, env = _clip(m.recorded), _clip(m.env)
            out.append(f"first observation mismatch at step {m.step}: recorded {recorded!r} / env {env!r}")
        return out

    def line(self) -> str:
        """One line for people: `ID: won` or `ID: FAILED: <problems>`."""
        if self.passed:
            notes = self.problems()
            return f"{self.id}: won" + (f" ({'; '.join(notes)})" if notes else "")
        return f"{self.id}: FAILED: {'; '.join(self.problems())}"


def summarize(results: Iterable[Verification]) -> dict[str, Any]:
    results = list(results)
    return {
        "records": len(results),
        "won": sum(r.passed for r in results),
        "failed": [r.id for r in results if not r.passed],
    }


# ---- trajectories -> steps -----------------------------------------------------------------------


def episode_steps(traj: Trajectory) -> tuple[list[str], list[str | None]]:
    """The actions of a trajectory and, for each, the observation recorded after it (None: none).

    The episode starts at the first agent turn that is more than an acknowledgement ("OK") and is
    not part of an in-context example (`train=False`); every later agent turn is an action, and the
    user turns right after it its observation.
    """
    turns = traj.turns
    start = next(
        (
            i
            for i, t in enumerate(turns)
            if t.role == AGENT and t.train is not False and not is_acknowledgement(t.text)
        ),
        len(turns),
    )
    actions: list[str] = []
    observations: list[str | None] = []
    for turn in turns[start:]:
        if turn.role == AGENT:
            actions.append(parse_react_action(turn.text))
            observations.append(None)
        elif actions and observations[-1] is None and turn.role in (OBSERVATION, TASK):
            observations[-1] = turn.text
    return actions, observations


# ---- task lookup ---------------------------------------------------------------------------------


class TaskFinder:
    """The env task a trajectory belongs to (see the module docstring); indexes each split once."""

    def __init__(self, env: Any) -> None:
        self.env = env
        self._by_split: dict[str, dict[str, Task]] = {}

    def _index(self, split: str) -> dict[str, Task]:
        if split not in self._by_split:
            try:
                tasks = self.env.tasks(split)
            except (KeyError, ValueError, OSError):
                tasks = []
            self._by_split[split] = {t.id: t for t in tasks}
        return self._by_split[split]

    def find(self, traj: Trajectory) -> Task | None:
        resolve = getattr(self.env, "expert_task_id", None)
        task_id = (resolve(traj) if resolve is not None else None) or traj.task_id or traj.id
        splits = list(getattr(self.env, "splits", DEFAULT_SPLITS))
        if traj.split in splits:
            splits.remove(traj.split)
            splits.insert(0, traj.split)
        for split in splits:
            task = self._index(split).get(task_id)
            if task is not None:
                return task
        game_file = (traj.metadata or {}).get("game_file")
        by_game = getattr(self.env, "task_for_game_file", None)
        if by_game is not None and isinstance(game_file, str):
            return by_game(game_file)
        return None


def _not_found(env: Any, traj: Trajectory) -> str:
    game_file = (traj.metadata or {}).get("game_file")
    named = (
        f"game_file {game_file!r}" if isinstance(game_file, str) else f"task_id {traj.task_id or traj.id!r}"
    )
    return f"no {getattr(env, 'name', 'env')} task found for {named}"


# ---- replay --------------------------------------------------------------------------------------


def verify_trajectory(env: Any, traj: Trajectory, finder: TaskFinder | None = None) -> Verification:
    """Replay `traj`'s actions on `env` (see the module docstring)."""
    actions, recorded = episode_steps(traj)
    result = Verification(id=traj.id, actions=len(actions))
    try:
        task = (finder or TaskFinder(env)).find(traj)
    except Exception as err:  # an env's lookup failing is this record's problem, not the batch's
        result.error = f"task lookup failed: {type(err).__name__}: {err}"
        return result
    if task is None:
        result.error = _not_found(env, traj)
        return result
    result.task_id = task.id
    if not actions:
        result.error = "no actions: the trajectory has no agent turn after its task"
        return result
    task = dataclasses.replace(task, max_steps=max(task.max_steps, len(actions)))
    try:
        env.reset(task)
    except Exception as err:
        result.error = f"cannot reset {task.id}: {type(err).__name__}: {err}"
        return result
    for step, (action, seen) in enumerate(zip(actions, recorded, strict=True), start=1):
        try:
            out = env.step(action)
        except Exception as err:
            result.error = f"step {step} ({action!r}) failed: {type(err).__name__}: {err}"
            return result
        result.steps = step
        text = normalize_observation(out.observation.text)
        if out.info.get("valid") is False or text == NOTHING:
            result.invalid.append(InvalidAction(step, action, text))
        if result.mismatch is None and seen is not None and normalize_observation(seen) != text:
            result.mismatch = Mismatch(step, normalize_observation(seen), text)
        result.won = bool(out.info.get("won", out.done and out.reward >= 1.0))
        if out.done:
            break
    return result


def verify_trajectories(
    env: Any, trajectories: Iterable[Trajectory], progress: Callable[[Verification], None] | None = None
) -> list[Verification]:
    """`verify_trajectory` for each, sharing one task index; `progress` sees each result."""
    finder = TaskFinder(env)
    out = []
    for traj in trajectories:
        out.append(verify_trajectory(env, traj, finder))
        if progress is not None:
            progress(out[-1])
    return out


# ---- records.json: {"id", "game_file", "task", "actions", "observations"} ------------------------


def is_action_record(record: Any) -> bool:
    return (
        isinstance(record, dict)
        and all(isinstance(record.get(k), list) for k in ACTION_RECORD_KEYS)
        and not ({"conversations", "messages", "turns"} & record.keys())
    )


def action_record_trajectory(record: dict[str, Any], index: int) -> Trajectory:
    """One action record as a Trajectory in ETO's layout (task turn, then Action / Observation turns).

    Raises ValueError naming the field that is wrong.
    """
    if not is_action_record(record):
        raise ValueError("actions: expected 'actions' and 'observations' lists")
    actions, observations = record["actions"], record["observations"]
    for key, values in (("actions", actions), ("observations", observations)):
        bad = next((i for i, v in enumerate(values) if not isinstance(v, str)), None)
        if bad is not None:
            raise ValueError(f"{key}[{bad}]: expected a string")
    if len(observations) > len(actions):
        raise ValueError(f"observations: {len(observations)} for {len(actions)} actions")
    task = record.get("task")
    if not isinstance(task, str):
        raise ValueError("task: expected a string")
    turns = [Turn(TASK, task)]
    for i, action in enumerate(actions):
        turns.append(Turn(AGENT, f"Action: {action}"))
        if i < len(observations):
            turns.append(Turn(OBSERVATION, f"Observation: {observations[i]}"))
    rid = str(record.get("id", index))
    extra = {k: v for k, v in record.items() if k not in ("id", "task", *ACTION_RECORD_KEYS)}
    return Trajectory(id=rid, turns=turns, task_id=rid, metadata=extra)


def read_action_records(records: Iterable[tuple[int, Any]], file: str) -> list[Trajectory]:
    """Trajectories of `(index, record)` pairs in the records.json layout; ValueError names
    `FILE:INDEX:FIELD` of the first bad record."""
    out = []
    for index, record in records:
        if isinstance(record, Exception):
            raise record
        try:
            out.append(action_record_trajectory(record, index))
        except ValueError as err:
            raise ValueError(f"{file}:{index}:{err}") from None
    return out


def write_json_atomic(records: list[Any], path: str | os.PathLike[str]) -> Path:
    """Raw records as a JSON list (`.json`) or JSON lines, written to a temporary file that then
    replaces `path`, so the file appears whole or not at all."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        text = json.dumps(records, ensure_ascii=False, indent=2) + "\n"
    else:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    from trajkit.data.files import write_text_atomic

    return write_text_atomic(path, text)
