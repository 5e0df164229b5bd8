"""A scripted expert for MiniWoB++ that acts only through the env's parsed action text.

It reads the task (the utterance) and the page's element boxes, picks points where
`document.elementFromPoint` hits the target, and writes each step as AGUVIS-style pyautogui code
(`pyautogui.click(x=0.41, y=0.18)`, normalized coordinates) which it sends through `env.step`,
the same path a model's text takes. Drop-down lists are worked with the keyboard (their options
take no clicks in headless Chromium).

A trajectory is AGUVIS-shaped: a task turn with the instruction, then per step an observation
turn carrying the screenshot, an agent turn to `all` with the inner monologue (Observation /
Thought / Action lines, the fields `trajkit.gui.reasoning` mixes levels from) and an agent turn to
`os` with the code. Screenshots outlive the env: when the env keeps them in its own temporary
folder they are copied to `image_dir` (default `oracle_image_dir()`).

Each click step's target element box, as fractions of the screenshot, goes into the record's
`metadata["target_boxes"]` (one `[x0, y0, x1, y1]` per step, None for steps that are not clicks),
and boxes that would do as well (a checkbox's label, the other boxes still to tick) into
`metadata["target_alternatives"]`: the DOM's answer to "where may this click land", which
`gui.click_grounding` scores a policy's clicks against.

The page reading lives in `boxes.py`, the per-task solvers in `solvers.py`; this module plays an
episode with them and records it.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

from trajkit.data.schema import OBSERVATION, TASK, Trajectory, Turn
from trajkit.envs.base import Task
from trajkit.envs.miniwob.boxes import _Ctx, _Stuck
from trajkit.envs.miniwob.solvers import _SOLVERS
from trajkit.gui.reasoning import step_turns

IMAGE_DIR_ENV_VAR = "TRAJKIT_MINIWOB_IMAGES"
ORACLE_NAME = "miniwob-dom-boxes"


class OracleError(RuntimeError):
    """The oracle cannot play this task or page (not a failed episode: those are returned)."""


def oracle_image_dir() -> Path:
    """Where oracle screenshots are kept when the env's own folder is temporary."""
    env = os.environ.get(IMAGE_DIR_ENV_VAR)
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "trajkit" / "miniwob-oracle"


def supported_tasks() -> tuple[str, ...]:
    return tuple(_SOLVERS)


class _ImageKeeper:
    """Copies screenshots out of the env's temporary folder, so the trajectory can outlive it."""

    def __init__(self, env: Any, task: Task, image_dir: str | os.PathLike[str] | None) -> None:
        owned = getattr(env, "owns_screenshot_dir", True)
        self.dest: Path | None = None
        # The oracle's screens depend only on the task, seed and scale: a rerun overwrites its own
        # files instead of piling up copies.
        self.stem = f"{task.spec.get('task_name')}_{task.spec.get('seed')}_x{getattr(env, 'scale', 1):g}"
        self.count = 0
        if image_dir is not None or owned:
            self.dest = Path(image_dir) if image_dir is not None else oracle_image_dir()
            self.dest.mkdir(parents=True, exist_ok=True)

    def keep(self, path: str | None) -> str | None:
        if path is None or self.dest is None:
            return path
        target = self.dest / f"{self.stem}_{self.count:02d}.png"
        self.count += 1
        shutil.copyfile(path, target)
        return str(target.resolve())


def oracle_trajectory(
    env: Any, task: Task, seed: int = 0, *, image_dir: str | os.PathLike[str] | None = None
) -> Trajectory:
    """Play `task` with the scripted expert through `env.step` and return the AGUVIS-style record.

    `seed` varies only the wording of the monologue. A failed episode is returned (success False),
    not raised; a task without a solver raises OracleError.
    """
    name = task.spec.get("task_name")
    solver = _SOLVERS.get(name) if isinstance(name, str) else None
    if solver is None:
        raise OracleError(
            f"no MiniWoB++ oracle for task {name!r} (task {task.id}); it knows {', '.join(_SOLVERS)}"
        )
    rng = random.Random(f"{seed}\x00{task.id}")
    keeper = _ImageKeeper(env, task, image_dir)
    obs = env.reset(task)
    utterance = obs.instruction or obs.text.split("\n", 1)[0]
    turns = [Turn(TASK, f"Instruction: {utterance}")]
    ctx = _Ctx(env, utterance, rng)
    extra = obs.text.split("\n", 1)[1] if "\n" in obs.text else ""
    image = keeper.keep(obs.image)
    steps, raw, done, stuck = 0, 0.0, False, None
    targets: list[list[float] | None] = []
    alternatives: list[list[list[float]] | None] = []
    result = None
    try:
        for gui_step in solver(ctx):
            boxes = ctx.take_targets()
            targets.append(boxes[0] if boxes else None)
            alternatives.append(boxes[1:] if boxes and len(boxes) > 1 else None)
            turns.append(Turn(OBSERVATION, "<image>" + (f"\n{extra}" if extra else ""), image=image))
            turns.extend(step_turns(gui_step, "l3"))
            result = env.step(gui_step.code)
            steps += 1
            if not result.info.get("valid", True):
                raise OracleError(
                    f"task {task.id}: the env refused the oracle's action {gui_step.code!r}: "
                    f"{result.info.get('error') or result.observation.text}"
                )
            if result.done:
                done = True
                break
            image = keeper.keep(result.observation.image)
            extra = result.observation.text.split("\n", 1)[1] if "\n" in result.observation.text else ""
    except _Stuck as err:
        stuck = str(err)
    if result is not None:
        raw = float(result.info.get("raw_reward", 0.0))
    success = done and raw > 0
    metadata: dict[str, Any] = {
        "source": "expert",
        "oracle": ORACLE_NAME,
        "steps": steps,
        "raw_reward": raw,
        "task_name": name,
        "seed": task.spec.get("seed"),
        "env_version": getattr(env, "version", None),
        # Per step (in order of the `os` turns), 0-1 of the screenshot, None for steps that are not
        # clicks: the clicked element's box (the viewer draws it), and other boxes a click would
        # serve as well (`gui.click_grounding` counts a click in any of them).
        "target_boxes": targets,
        "target_alternatives": alternatives,
    }
    if keeper.dest is not None:
        metadata["image_dir"] = str(keeper.dest.resolve())
    if stuck is not None:
        metadata["stuck"] = stuck
    elif not done:
        metadata["unfinished"] = True
    return Trajectory(
        id=f"expert/{task.id}",
        turns=turns,
        task_id=task.id,
        env=getattr(env, "name", "miniwob"),
        split=task.split,
        reward=max(0.0, raw) if done else 0.0,
        success=success,
        metadata=metadata,
    )
