"""ALFWorld's game files on disk: the folder layout, task types, and `traj_data.json` stubs.

The layout is the one `alfworld-download` creates under `$ALFWORLD_DATA`:

    json_2.1.1/{train,valid_seen,valid_unseen}/<task dir>/<trial dir>/game.tw-pddl

A task directory is named `task_type-Object-MovableRecep-ParentRecep-Scene` (for example
`pick_and_place_simple-Book-None-SideTable-329`). Nothing here imports alfworld or textworld.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GAME_FILE = "game.tw-pddl"
TRAJ_DATA_FILE = "traj_data.json"
VERSION_DIR = "json_2.1.1"
# trajkit's split names (ETO's) -> ALFWorld's folders.
SPLIT_DIRS = {"train": "train", "test_seen": "valid_seen", "test_unseen": "valid_unseen"}
SPLIT_ALIASES = {"valid_seen": "test_seen", "valid_unseen": "test_unseen"}
# ALFWorld's own numbering of the six task types (its config's env.task_types).
TASK_TYPES = {
    1: "pick_and_place_simple",
    2: "look_at_obj_in_light",
    3: "pick_clean_then_place_in_recep",
    4: "pick_heat_then_place_in_recep",
    5: "pick_cool_then_place_in_recep",
    6: "pick_two_obj_and_place",
}
# Not a playable type on its own in ALFWorld's text games, but its directories exist in ALFRED.
MOVABLE_TYPE = "pick_and_place_with_movable_recep"


class ALFWorldDataError(ValueError):
    """The game folder is missing, laid out differently, or holds a malformed entry."""


@dataclass(frozen=True)
class GameName:
    """The fields of a task directory name."""

    task_type: str
    object_target: str
    mrecep_target: str
    parent_target: str
    scene: int

    @property
    def sliced(self) -> bool:
        return self.object_target.endswith("Sliced")


def parse_task_dir(name: str) -> GameName:
    """Split `task_type-Object-MovableRecep-ParentRecep-Scene` into its fields."""
    parts = name.split("-")
    if len(parts) != 5 or not parts[4].isdigit():
        raise ALFWorldDataError(
            f"{name!r} is not an ALFWorld task directory name (task_type-Object-MovableRecep-ParentRecep-Scene)"
        )
    task_type, obj, mrecep, parent, scene = parts
    if task_type not in TASK_TYPES.values() and task_type != MOVABLE_TYPE:
        raise ALFWorldDataError(f"{name!r}: unknown ALFWorld task type {task_type!r}")
    return GameName(task_type, obj, mrecep, parent, int(scene))


def traj_data_stub(task_dir: str, trial_dir: str) -> dict[str, Any]:
    """The parts of ALFRED's `traj_data.json` that ALFWorld's text-game loader reads.

    ALFWorld's loader needs `task_type` (its task-type filter) and `pddl_params` (the hand-coded
    expert); all of it follows from the directory name. For look_at_obj_in_light the fourth field
    names the lamp (`toggle_target`) and there is no parent receptacle. A sliced object
    (`AppleSliced`) is written as the object plus `object_sliced: true`, as ALFRED writes it.
    """
    name = parse_task_dir(task_dir)
    obj = name.object_target
    sliced = name.sliced
    if sliced:
        obj = obj[: -len("Sliced")]
    mrecep = "" if name.mrecep_target == "None" else name.mrecep_target
    last = "" if name.parent_target == "None" else name.parent_target
    lamp_task = name.task_type == "look_at_obj_in_light"
    return {
        "task_id": trial_dir,
        "task_type": name.task_type,
        "scene": {"scene_num": name.scene},
        "pddl_params": {
            "object_target": obj,
            "object_sliced": sliced,
            "mrecep_target": mrecep,
            "parent_target": "" if lamp_task else last,
            "toggle_target": last if lamp_task else "",
        },
        "trajkit_stub": "derived from the task directory name; not ALFRED's full record",
    }


def resolve_games_root(data_dir: str | os.PathLike[str]) -> Path:
    """The folder holding train/ valid_seen/ valid_unseen/: `data_dir/json_2.1.1` or `data_dir`."""
    base = Path(data_dir).expanduser()
    if not base.is_dir():
        raise ALFWorldDataError(f"{base}: ALFWorld data folder does not exist")
    for root in (base / VERSION_DIR, base):
        if any((root / d).is_dir() for d in SPLIT_DIRS.values()):
            return root
    raise ALFWorldDataError(
        f"{base}: no ALFWorld games here; expected {base}/{VERSION_DIR}/{{train,valid_seen,valid_unseen}}/"
        f"<task dir>/<trial dir>/{GAME_FILE} (the layout alfworld-download creates)"
    )


def canonical_split(split: str) -> str:
    """trajkit's split name for `split`, which may be ALFWorld's valid_seen / valid_unseen."""
    split = SPLIT_ALIASES.get(split, split)
    if split not in SPLIT_DIRS:
        names = ", ".join([*SPLIT_DIRS, *SPLIT_ALIASES])
        raise ValueError(f"unknown ALFWorld split {split!r}; expected one of {names}")
    return split


def list_games(root: Path, split: str) -> list[tuple[str, str]]:
    """(task dir, trial dir) of every game of a split, sorted; ALFWorld's own filters applied.

    Like ALFWorld's loader, directories of movable-receptacle and sliced-object tasks are skipped
    (the text engine does not support them).
    """
    folder = root / SPLIT_DIRS[canonical_split(split)]
    if not folder.is_dir():
        raise ALFWorldDataError(f"{folder}: the {split} split's folder is missing")
    games = []
    for task_entry in os.scandir(folder):
        if not task_entry.is_dir():
            continue
        if "movable" in task_entry.name or "Sliced" in task_entry.name:
            continue
        for trial_entry in os.scandir(task_entry.path):
            if trial_entry.is_dir() and os.path.isfile(os.path.join(trial_entry.path, GAME_FILE)):
                games.append((task_entry.name, trial_entry.name))
    games.sort()
    return games


def write_traj_data_overlay(data_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> int:
    """Mirror the games under `out_dir` so that ALFWorld's own loader can read them.

    Each game file is linked (symlink) from `out_dir/json_2.1.1/<split>/<task>/<trial>/`, next to
    the game's real `traj_data.json` (copied) or, when there is none, a stub from the directory
    name. The user's folder is only read. Existing files under `out_dir` are left as they are.
    Returns the number of games mirrored. Point `$ALFWORLD_DATA` at `out_dir` to use
    `alfworld.agents.environment.get_environment("AlfredTWEnv")` or its hand-coded expert.
    """
    root = resolve_games_root(data_dir)
    out_root = Path(out_dir).expanduser() / VERSION_DIR
    count = 0
    for split, split_dir in SPLIT_DIRS.items():
        if not (root / split_dir).is_dir():
            continue
        for task_dir, trial_dir in list_games(root, split):
            src = root / split_dir / task_dir / trial_dir
            dst = out_root / split_dir / task_dir / trial_dir
            dst.mkdir(parents=True, exist_ok=True)
            game = dst / GAME_FILE
            if not game.exists() and not game.is_symlink():
                game.symlink_to((src / GAME_FILE).resolve())
            traj = dst / TRAJ_DATA_FILE
            if not traj.exists():
                real = src / TRAJ_DATA_FILE
                text = (
                    real.read_text(encoding="utf-8")
                    if real.is_file()
                    else json.dumps(traj_data_stub(task_dir, trial_dir), indent=2) + "\n"
                )
                traj.write_text(text, encoding="utf-8")
            count += 1
    return count


def task_type_names(types: list[str | int] | None) -> set[str] | None:
    """ALFWorld task types by name or by ALFWorld's number (1-6); None keeps every type."""
    if types is None:
        return None
    names = set()
    for t in types:
        if isinstance(t, int) and not isinstance(t, bool):
            if t not in TASK_TYPES:
                raise ValueError(f"unknown ALFWorld task type number {t}; expected 1-6")
            names.add(TASK_TYPES[t])
        elif isinstance(t, str) and t in TASK_TYPES.values():
            names.add(t)
        else:
            known = ", ".join(TASK_TYPES.values())
            raise ValueError(f"unknown ALFWorld task type {t!r}; expected a number 1-6 or one of {known}")
    if not names:
        raise ValueError("task_types is empty; give null for every task type")
    return names
