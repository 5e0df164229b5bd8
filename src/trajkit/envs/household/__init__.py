"""The built-in household world: a fast, pure-Python text game modelled on ALFWorld.

Rooms (kitchen, livingroom, bedroom, bathroom) hold numbered receptacles ("cabinet 3",
"countertop 1", "fridge 1", ...), some of them closed, with objects inside or on them. The agent
uses ALFWorld's commands and reads ALFWorld's phrasing, so prompts and skills carry over. There are
six task families, as in ALFWorld: pick_and_place, pick_clean_then_place, pick_heat_then_place,
pick_cool_then_place, look_at_obj_in_light and pick_two_obj_and_place. Task i of a split has
family i mod 6, so every split is balanced across families.

Splits: `train` and `test_seen` draw from the same distribution with different seeds;
`test_unseen` draws only tasks with at least one held-out feature. Held out of `train` and
`test_seen` (the tables live in `catalog.py`):

- (family, goal object) pairs: pick_and_place with a spraybottle, pick_cool_then_place with a
  tomato, look_at_obj_in_light with a cellphone (each object is a goal in other families' train
  tasks: as ALFWorld's unseen rooms reuse its vocabulary, what is held out is the combination);
- (family, target receptacle type) pairs: pick_heat_then_place -> diningtable,
  pick_clean_then_place -> drawer, pick_two_obj_and_place -> sofa (each target type still appears
  in other families);
- (family, room type) pairs: pick_clean_then_place in a bathroom, look_at_obj_in_light in a
  livingroom (both rooms still appear in other families).

Each test_unseen task lists its held-out features in `spec["held_out"]`; for train and test_seen
that list is empty. The scripted expert (`expert_trajectory`) solves every task; the generator
keeps its worst case within the task's `max_steps`.

`HouseholdEnv(layout=...)` sets the room size: "standard" (ALFWorld-sized rooms, the default) or
"compact" (at most two receptacles of a type, less clutter, goal objects nearer their usual
place); see `generate.LAYOUTS`. The layout is part of the env version and of the task ids.
`HouseholdEnv(instruction=...)` sets every episode's first user turn: "full" (the default: the
commands, their rules and the answer format, as ETO prompts ALFWorld) or "brief" (the answer format
only, for a model trained from scratch that learns the commands from the demonstrations).
"""

from __future__ import annotations

from trajkit.envs.household.catalog import FAMILIES
from trajkit.envs.household.expert import ExpertError, expert_trajectory
from trajkit.envs.household.game import BRIEF_INSTRUCTION, INSTRUCTION, NOTHING, HouseholdEnv
from trajkit.envs.household.generate import SPLITS, VERSION, expert_step_bound, generate_task

__all__ = [
    "BRIEF_INSTRUCTION",
    "FAMILIES",
    "INSTRUCTION",
    "NOTHING",
    "SPLITS",
    "VERSION",
    "ExpertError",
    "HouseholdEnv",
    "expert_step_bound",
    "expert_trajectory",
    "generate_task",
]
