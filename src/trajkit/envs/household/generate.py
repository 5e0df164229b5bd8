"""Seeded procedural generation of household tasks.

Task `index` of a split is drawn from its own `random.Random`, seeded by a string naming the world
seed, the split and the index (string seeds hash with SHA-512, so they do not depend on
PYTHONHASHSEED). Growing `n_train` therefore keeps every earlier task unchanged.

A task's `spec` is the whole scene (receptacles, their loc numbers, every object and where it is),
so an episode can be rebuilt from the spec alone, without re-running the generator.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from trajkit.envs.base import Task
from trajkit.envs.household import catalog as cat

SPLITS = ("train", "test_seen", "test_unseen")
VERSION = "3"  # 3: test_unseen holds out (family, object) pairs rather than whole object types
# How strongly goal objects favour their most usual place. Low enough that the expert's search is
# often several receptacles long, so a learner sees real searching and has room to improve.
GOAL_PLACE_SKEW = 0.0


@dataclass(frozen=True)
class Layout:
    """How big and cluttered a generated room is (the world's difficulty knob).

    "standard" rooms are ALFWorld-sized: up to five cabinets, five to ten clutter objects. "compact"
    rooms keep every receptacle type but at most `max_instances` of each and less clutter, so
    episodes are shorter and observations easier to read: a small model learns them far sooner.
    """

    name: str
    max_instances: int | None  # cap on receptacles of one type (None: the room table's own maximum)
    clutter: tuple[int, int]  # fewest and most objects besides the goal objects
    goal_skew: float  # how strongly goal objects favour their most usual place (0: any likely place)


LAYOUTS = {
    "standard": Layout("standard", None, (5, 10), GOAL_PLACE_SKEW),
    "compact": Layout("compact", 2, (2, 5), 2.0),
}


def get_layout(name: str) -> Layout:
    if name not in LAYOUTS:
        raise ValueError(f"unknown household layout {name!r}; expected one of {', '.join(LAYOUTS)}")
    return LAYOUTS[name]


GOAL_TEMPLATES = {
    "pick_and_place": ("put a {o} in {t}.", "put some {o} on {t}."),
    "pick_clean_then_place": ("put a clean {o} in {t}.", "clean some {o} and put it in {t}."),
    "pick_heat_then_place": ("put a hot {o} in {t}.", "heat some {o} and put it in {t}."),
    "pick_cool_then_place": ("put a cool {o} in {t}.", "cool some {o} and put it in {t}."),
    "look_at_obj_in_light": ("look at {o} under the {t}.", "examine the {o} with the {t}."),
    "pick_two_obj_and_place": ("put two {o} in {t}.", "find two {o} and put them in {t}."),
}

# Steps the expert needs beyond searching, per family (see `expert_step_bound`).
_FAMILY_OVERHEAD = {
    "pick_and_place": 4,  # take, go to target, open it, put
    "pick_clean_then_place": 6,  # take, go to tool, use tool, go to target, open it, put
    "pick_heat_then_place": 6,
    "pick_cool_then_place": 6,
    "pick_two_obj_and_place": 8,  # take, go, open, put, go back, take, go, put
    "look_at_obj_in_light": 3,  # take, go to lamp, use it (plus the lamp search)
}


def object_kind(room: str, object_type: str) -> cat.ObjectKind:
    for kind in cat.OBJECTS[room]:
        if kind.type == object_type:
            return kind
    raise ValueError(f"no object type {object_type!r} in a {room}")


def receptacle_type(name: str) -> str:
    return name.rsplit(" ", 1)[0]


def search_candidates(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Receptacles where the goal object may be: its usual places, minus the goal's target type."""
    kind = object_kind(spec["room"], spec["object"])
    by_type: dict[str, list[dict[str, Any]]] = {}
    for rec in spec["receptacles"]:
        by_type.setdefault(receptacle_type(rec["name"]), []).append(rec)
    return [rec for t in kind.found_in if t != spec.get("target") for rec in by_type.get(t, [])]


def lamp_candidates(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [rec for rec in spec["receptacles"] if receptacle_type(rec["name"]) in cat.DESKLAMP_PLACES]


def expert_step_bound(spec: dict[str, Any]) -> int:
    """The most steps the scripted expert can take on this scene, whatever its search order.

    Each searched receptacle costs a `go to`, plus an `open` if it opens; the rest is fixed per
    family. The generator keeps this within max_steps, so the expert solves every task.
    """
    steps = sum(1 + bool(rec.get("openable")) for rec in search_candidates(spec))
    steps += _FAMILY_OVERHEAD[spec["family"]]
    if spec["family"] == "look_at_obj_in_light" and spec["lamp"] == "desklamp":
        steps += len(lamp_candidates(spec))
    return steps


def _weighted_pick(rng: random.Random, options: list[str], skew: float = 1.0) -> str:
    # Earlier options are likelier (the tables list the most usual place first); skew 0 = uniform.
    weights = [1.0 + skew * (len(options) - 1 - i) for i in range(len(options))]
    return rng.choices(options, weights=weights)[0]


def _unseen_rules(family: str) -> list[tuple[str, str]]:
    rules = [("object", o) for f, o in sorted(cat.HELD_OUT_FAMILY_OBJECTS) if f == family]
    rules += [("target", t) for f, t in sorted(cat.HELD_OUT_FAMILY_TARGETS) if f == family]
    rules += [("room", r) for f, r in sorted(cat.HELD_OUT_FAMILY_ROOMS) if f == family]
    return rules


def _draw_goal(rng: random.Random, family: str, unseen: bool) -> tuple[str, cat.ObjectKind, str | None]:
    """Room, object kind and target for one task, honouring the split's held-out rules."""
    rule = rng.choice(_unseen_rules(family)) if unseen else None
    for _ in range(1000):
        rooms = list(cat.ROOMS_OF_FAMILY[family])
        if rule and rule[0] == "room":
            rooms = [rule[1]]
        room = rng.choice(rooms)
        kinds = cat.eligible_objects(room, family)
        if rule and rule[0] == "object":
            kinds = [k for k in kinds if k.type == rule[1]]
        if not kinds:
            continue
        kind = rng.choice(kinds)
        targets = cat.eligible_targets(kind, family)
        if rule and rule[0] == "target":
            targets = [t for t in targets if t == rule[1]]
        target = None
        if family != "look_at_obj_in_light":
            if not targets:
                continue
            target = rng.choice(targets)
        features = cat.held_out_features(family, room, kind.type, target)
        if bool(features) == unseen:
            return room, kind, target
    raise RuntimeError(f"could not draw a {family} goal (held-out tables leave nothing to draw)")


def _draw_counts(
    rng: random.Random, room: str, required: set[str], lamp_place_needed: bool, layout: Layout
) -> dict[str, int]:
    counts = {}
    for k in cat.LAYOUTS[room]:
        most = k.max_count if layout.max_instances is None else min(k.max_count, layout.max_instances)
        counts[k.type] = rng.randint(min(k.min_count, most), most)
    for t in required:
        counts[t] = max(counts[t], 1)
    if lamp_place_needed and not any(counts.get(t) for t in cat.DESKLAMP_PLACES):
        counts[next(t for t in cat.DESKLAMP_PLACES if t in counts)] = 1
    return counts


def generate_task(seed: int, split: str, index: int, max_steps: int = 30, layout: str = "standard") -> Task:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    room_layout = get_layout(layout)
    # The standard layout keeps its original seed string, so its tasks are unchanged.
    tag = "" if layout == "standard" else f"/{layout}"
    rng = random.Random(f"household{tag}/{seed}/{split}/{index}")
    family = cat.FAMILIES[index % len(cat.FAMILIES)]
    unseen = split == "test_unseen"
    for _ in range(200):
        room, kind, target = _draw_goal(rng, family, unseen)
        spec = _draw_scene(rng, family, room, kind, target, room_layout)
        if spec is not None and expert_step_bound(spec) <= max_steps:
            spec["held_out"] = cat.held_out_features(family, room, kind.type, target)
            if layout != "standard":
                spec["layout"] = layout
            return Task(
                id=f"household{tag}/{split}/{family}/{index:05d}",
                split=split,
                spec=spec,
                max_steps=max_steps,
            )
    raise RuntimeError(f"could not generate {split} task {index} within {max_steps} expert steps")


def _draw_scene(
    rng: random.Random,
    family: str,
    room: str,
    kind: cat.ObjectKind,
    target: str | None,
    layout: Layout,
) -> dict[str, Any] | None:
    lamp = None
    if room in ("bedroom", "livingroom"):
        floorlamp_chance = 0.3 if room == "bedroom" else 0.6
        lamp = "floorlamp" if rng.random() < floorlamp_chance else "desklamp"
    tool = cat.TOOL_OF_FAMILY.get(family)
    required = {t for t in (target, tool) if t}
    counts = _draw_counts(rng, room, required, lamp == "desklamp", layout)

    candidate_types = [t for t in kind.found_in if t != target and counts.get(t)]
    if not candidate_types:
        return None
    receptacles = []
    for rkind in cat.LAYOUTS[room]:
        for n in range(1, counts[rkind.type] + 1):
            receptacles.append({"name": f"{rkind.type} {n}", "openable": rkind.openable})
    if lamp == "floorlamp":
        receptacles.append({"name": "floorlamp 1", "fixture": True})
        receptacles.sort(key=lambda r: (receptacle_type(r["name"]), int(r["name"].rsplit(" ", 1)[1])))
    locs = list(range(1, len(receptacles) + 1))
    rng.shuffle(locs)
    for rec, loc in zip(receptacles, locs, strict=True):
        rec["loc"] = loc

    def instance_of(rtype: str) -> str:
        return f"{rtype} {rng.randint(1, counts[rtype])}"

    placed: list[tuple[str, str]] = []  # (object type, receptacle name)
    n_goal = rng.choice((2, 2, 3)) if family == "pick_two_obj_and_place" else rng.choice((1, 1, 1, 1, 2))
    for _ in range(n_goal):
        placed.append((kind.type, instance_of(_weighted_pick(rng, candidate_types, layout.goal_skew))))
    distractor_kinds = [k for k in cat.OBJECTS[room] if k.type != kind.type]
    for _ in range(rng.randint(*layout.clutter)):
        other = rng.choice(distractor_kinds)
        places = [t for t in other.found_in if counts.get(t)]
        if places:
            placed.append((other.type, instance_of(_weighted_pick(rng, places))))
    rng.shuffle(placed)
    numbers: dict[str, int] = {}
    objects = []
    for otype, where in placed:
        numbers[otype] = numbers.get(otype, 0) + 1
        objects.append({"name": f"{otype} {numbers[otype]}", "at": where})
    if lamp == "desklamp":
        places = [t for t in cat.DESKLAMP_PLACES if counts.get(t)]
        objects.insert(
            rng.randint(0, len(objects)), {"name": "desklamp 1", "at": instance_of(rng.choice(places))}
        )

    goal_target = lamp if family == "look_at_obj_in_light" else target
    goal = rng.choice(GOAL_TEMPLATES[family]).format(o=kind.type, t=goal_target)
    return {
        "version": VERSION,
        "family": family,
        "room": room,
        "goal": goal,
        "object": kind.type,
        "target": target,
        "tool": tool,
        "lamp": lamp,
        "receptacles": receptacles,
        "objects": objects,
    }
