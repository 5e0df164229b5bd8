"""AGUVIS training samples from GUI trajectories: stage-1 grounding packs, stage-2 planning at a
reasoning level, and loading GUI data with its screenshots.

Stage 1 turns every `os` step into a grounding pair (screenshot, low-level instruction -> code)
and packs the pairs that share a screenshot into multi-turn samples (`gui.packing`), the image
shown once per sample. Stage 2, by `unit`:

- `trajectory` (default): whole trajectories, every screenshot in place, each inner monologue
  rewritten at the one reasoning level a `ReasoningMixture` picks per trajectory (`gui.reasoning`);
- `step` (AGUVIS): every step becomes its own sample in AGUVIS's layout (`step_samples`: the
  current screenshot only, the task, the earlier steps as "Previous actions"), written once per
  copy of every level of the mixture. AGUVIS's stage-2 data lists each dataset's `-l1` and `-l2`
  files side by side (its data/stage2.yaml; Mind2Web, AMEX and GUI-Odyssey list `-l2` twice), so
  every step is trained at both levels; the weights here are those whole copies, e.g. {l1: 1, l2: 1}.

Pure data: nothing here tokenizes or trains.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from trajkit.data.schema import AGENT, SYSTEM, Trajectory, Turn
from trajkit.gui.packing import GroundingPair, pack_grounding
from trajkit.gui.prompts import GUI_SYSTEM_PROMPT, aguvis_step_turns, task_goal, with_default_system
from trajkit.gui.reasoning import (
    LEVELS,
    RECIPIENT_ALL,
    RECIPIENT_OS,
    GuiStep,
    ReasoningMixture,
    monologue,
    step_from_turns,
    step_turns,
)
from trajkit.gui.tokens import IMAGE_PLACEHOLDER

GUI_STAGES = ("grounding", "planning")
REASONING_UNITS = ("trajectory", "step")
TURN_OVERHEAD = 8  # tokens of a ChatML turn beyond its text, an upper bound


def _images(turn: Turn) -> list[str]:
    return [turn.image] if isinstance(turn.image, str) else list(turn.image or [])


# ---------------------------------------------------------------------------------------------
# stage 1: grounding pairs, packed per screenshot


def grounding_pairs(trajectory: Trajectory) -> list[tuple[str, GroundingPair]]:
    """(screenshot, pair) for every `os` step: the instruction is the step's `Action:` line when
    it has a monologue, else the user text before it (a grounding record's own instruction)."""
    out: list[tuple[str, GroundingPair]] = []
    image: str | None = None
    prompt = ""
    pending: str | None = None
    for i, turn in enumerate(trajectory.turns):
        where = f"record {trajectory.id!r} turn {i}"
        if turn.role == SYSTEM:
            continue
        if turn.role != AGENT:
            shots = _images(turn)
            image = shots[-1] if shots else image
            prompt = turn.text.replace(IMAGE_PLACEHOLDER, "").strip()
            pending = None
            continue
        if turn.recipient == RECIPIENT_ALL:
            pending = turn.text
            continue
        if turn.recipient != RECIPIENT_OS:
            raise ValueError(
                f"{where}: grounding needs AGUVIS agent turns to 'all'/'os', got {turn.recipient!r}"
            )
        if image is None:
            raise ValueError(f"{where}: an 'os' step with no screenshot before it")
        try:
            step = step_from_turns(pending, turn.text) if pending else None
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        instruction = step.instruction if step is not None and step.instruction else prompt
        if not instruction:
            raise ValueError(f"{where}: no instruction for this step (no 'Action:' line, no user text)")
        out.append((image, GroundingPair(instruction, turn.text)))
        pending = None
    return out


def grounding_samples(
    trajectories: Iterable[Trajectory],
    *,
    max_turns: int = 16,
    max_tokens: int | None = None,
    count_tokens: Callable[[str], int] | None = None,
    image_tokens: Callable[[str], int] | None = None,
    system: str | None = GUI_SYSTEM_PROMPT,
) -> list[Trajectory]:
    """Stage-1 samples: grounding pairs grouped by screenshot (first seen first), then packed."""
    groups: dict[str, list[GroundingPair]] = {}
    for traj in trajectories:
        for image, pair in grounding_pairs(traj):
            groups.setdefault(image, []).append(pair)
    options: dict[str, Any] = {"max_turns": max_turns, "max_tokens": max_tokens, "system": system}
    if count_tokens is not None:
        options["count_tokens"] = count_tokens
    out: list[Trajectory] = []
    for n, (image, pairs) in enumerate(groups.items()):
        cost = image_tokens(image) if image_tokens is not None else 0
        for sample in pack_grounding(image, pairs, image_tokens=cost, id_prefix=f"ground-{n}", **options):
            sample.metadata["image"] = image
            out.append(sample)
    return out


# ---------------------------------------------------------------------------------------------
# stage 2: planning with a reasoning mixture


def _steps(trajectory: Trajectory) -> list[tuple[int | None, int]]:
    """(index of the `all` turn or None, index of the `os` turn) of every step."""
    steps: list[tuple[int | None, int]] = []
    pending: int | None = None
    for i, turn in enumerate(trajectory.turns):
        if turn.role != AGENT:
            pending = None
        elif turn.recipient == RECIPIENT_ALL:
            pending = i
        elif turn.recipient == RECIPIENT_OS:
            steps.append((pending, i))
            pending = None
    return steps


def available_levels(trajectory: Trajectory) -> tuple[str, ...]:
    """The reasoning levels every step of the trajectory can be written at."""
    levels = set(LEVELS)
    for mono, code in _steps(trajectory):
        text = trajectory.turns[mono].text if mono is not None else None
        try:
            step = step_from_turns(text, trajectory.turns[code].text)
        except ValueError as err:
            raise ValueError(f"record {trajectory.id!r} turn {mono}: {err}") from None
        levels &= set(step.available_levels())
    return tuple(lvl for lvl in LEVELS if lvl in levels)


def with_reasoning_level(trajectory: Trajectory, level: str) -> Trajectory:
    """The trajectory with each step's monologue written at `level`; every other turn (images,
    code turns and their sampled ids) is kept as it is."""
    steps = _steps(trajectory)
    if not steps:
        raise ValueError(f"record {trajectory.id!r}: no 'os' steps to write reasoning for")
    replace: dict[int, Turn | None] = {}
    insert: dict[int, Turn] = {}
    for mono, code in steps:
        text = trajectory.turns[mono].text if mono is not None else None
        step = step_from_turns(text, trajectory.turns[code].text)
        written = monologue(step, level)
        turn = None if written is None else Turn(AGENT, written, recipient=RECIPIENT_ALL, end_turn=False)
        if mono is not None:
            replace[mono] = turn
        elif turn is not None:
            insert[code] = turn
    turns: list[Turn] = []
    for i, turn in enumerate(trajectory.turns):
        if i in insert:
            turns.append(insert[i])
        if i in replace:
            if replace[i] is not None:
                turns.append(replace[i])  # type: ignore[arg-type]
            continue
        turns.append(turn)
    metadata = {**trajectory.metadata, "reasoning_level": level}
    return dataclasses.replace(trajectory, turns=turns, metadata=metadata)


def step_copies(mixture: ReasoningMixture) -> dict[str, int]:
    """Level -> copies of every step under the `step` unit: the weights as whole numbers."""
    copies: dict[str, int] = {}
    for level, weight in mixture.weights.items():
        if weight != int(weight):
            raise ValueError(
                f"with reasoning_unit step a weight is a whole number of copies of every step "
                f"(AGUVIS: {{l1: 1, l2: 1}}), got {level}: {weight}"
            )
        if weight:
            copies[level] = int(weight)
    return copies


def _step_parts(trajectory: Trajectory) -> list[tuple[str | None, GuiStep, int | None]]:
    """(screenshot shown before it, step, index of its `all` turn or None) of every step."""
    steps = {code: mono for mono, code in _steps(trajectory)}
    out: list[tuple[str | None, GuiStep, int | None]] = []
    image: str | None = None
    for i, turn in enumerate(trajectory.turns):
        if turn.role not in (AGENT, SYSTEM):
            shots = _images(turn)
            image = shots[-1] if shots else image
        if i in steps:
            mono = steps[i]
            text = trajectory.turns[mono].text if mono is not None else None
            try:
                out.append((image, step_from_turns(text, turn.text), mono))
            except ValueError as err:
                raise ValueError(f"record {trajectory.id!r} turn {mono}: {err}") from None
    return out


def _record_copies(
    trajectory: Trajectory, copies: dict[str, int] | None, system: str | None
) -> list[Trajectory]:
    """A record already in AGUVIS's step layout, once per copy of each level it can express."""
    if copies is None:
        return [with_default_system(trajectory, system) if system else trajectory]
    kept = set(available_levels(trajectory))
    levels = [(lvl, c) for lvl, n in copies.items() if lvl in kept for c in range(n)]
    if not levels:
        raise ValueError(f"record {trajectory.id!r}: cannot be written at {', '.join(copies)}")
    out = []
    for lvl, c in levels:
        traj = with_reasoning_level(trajectory, lvl)
        traj = with_default_system(traj, system) if system else traj
        out.append(dataclasses.replace(traj, id=f"{trajectory.id}/{lvl}" + (f"/{c}" if c else "")))
    return out


def step_samples(
    trajectory: Trajectory, copies: dict[str, int] | None, system: str | None = GUI_SYSTEM_PROMPT
) -> list[Trajectory]:
    """AGUVIS's stage-2 samples of one trajectory: per step, the AGUVIS step prompt (its screenshot,
    the task, the earlier steps' low-level instructions, else their code, as "Previous actions")
    and the step's turns at each level of `copies` (level -> copies), levels the step cannot
    express left out; `copies` None keeps each step's monologue as written. A trajectory already in
    that layout (a "Previous actions:" prompt, e.g. AGUVIS's own records) keeps its prompt."""
    if any("Previous actions:" in t.text for t in trajectory.turns if t.role not in (AGENT, SYSTEM)):
        return _record_copies(trajectory, copies, system)
    task = next((t for t in trajectory.turns if t.role not in (AGENT, SYSTEM)), None)
    goal = task_goal(task.text) if task is not None else ""
    if not goal:
        raise ValueError(f"record {trajectory.id!r}: no task text to write as the AGUVIS instruction")
    parts = _step_parts(trajectory)
    if not parts:
        raise ValueError(f"record {trajectory.id!r}: no 'os' steps to write reasoning for")
    out: list[Trajectory] = []
    done: list[str] = []
    for k, (image, step, mono) in enumerate(parts):
        prompt = aguvis_step_turns(goal, done, image, system)
        written: list[tuple[str | None, int, list[Turn]]]
        if copies is None:
            kept = [trajectory.turns[mono]] if mono is not None else []
            code = Turn(AGENT, step.code, recipient=RECIPIENT_OS, end_turn=True)
            written = [(None, 0, [*prompt, *kept, code])]
        else:
            levels = [lvl for lvl in copies if lvl in step.available_levels()]
            if not levels:
                raise ValueError(
                    f"record {trajectory.id!r} step {k}: cannot be written at {', '.join(copies)}"
                )
            written = [
                (lvl, c, [*prompt, *step_turns(step, lvl)]) for lvl in levels for c in range(copies[lvl])
            ]
        for lvl, c, turns in written:
            meta = {**trajectory.metadata, "step": k, "layout": "aguvis_step"}
            if lvl is not None:
                meta["reasoning_level"] = lvl
            sid = f"{trajectory.id}/step{k}" + (f"/{lvl}" if lvl else "") + (f"/{c}" if c else "")
            out.append(dataclasses.replace(trajectory, id=sid, turns=turns, metadata=meta))
        done.append(step.instruction or step.code)
    return out


def planning_samples(
    trajectories: Iterable[Trajectory],
    mixture: ReasoningMixture | None,
    seed: int | str = 0,
    system: str | None = GUI_SYSTEM_PROMPT,
    *,
    unit: str = "trajectory",
) -> list[Trajectory]:
    """Stage-2 samples. `unit` trajectory: each trajectory at the level the mixture picks for
    (seed, id), or as it is when there is no mixture; `system` is added where a trajectory has no
    system turn. `unit` step: `step_samples` of every trajectory (AGUVIS; see the module doc)."""
    if unit not in REASONING_UNITS:
        raise ValueError(f"unknown reasoning unit {unit!r}; expected one of {', '.join(REASONING_UNITS)}")
    out = []
    for traj in trajectories:
        if unit == "step":
            out.extend(step_samples(traj, step_copies(mixture) if mixture is not None else None, system))
            continue
        if mixture is not None:
            level = mixture.choose(seed, traj.id, available_levels(traj))
            traj = with_reasoning_level(traj, level)
        out.append(with_default_system(traj, system) if system else traj)
    return out


# ---------------------------------------------------------------------------------------------
# loading GUI data


def _resolve_images(trajectories: list[Trajectory], source: str) -> list[Trajectory]:
    """Relative image paths are read against the data file's folder when the file is there."""
    folder = Path(source).parent if Path(source).is_file() else Path(source)
    for traj in trajectories:
        for turn in traj.turns:
            shots = _images(turn)
            if not shots:
                continue
            fixed = [
                str(folder / p) if not Path(p).is_absolute() and (folder / p).is_file() else p for p in shots
            ]
            turn.image = fixed[0] if isinstance(turn.image, str) else fixed
    return trajectories


def load_gui_trajectories(sources: Sequence[str], data_format: str = "auto") -> list[Trajectory]:
    """Trajectories of every source, their relative screenshot paths made readable from here."""
    from trajkit.data.io import load_trajectories

    out: list[Trajectory] = []
    for src in sources:
        out.extend(_resolve_images(load_trajectories(src, format=data_format), src))
    return out
