"""What a household holds: room layouts, object types, task families, and the held-out combinations.

These tables are the world's common sense. The generator places objects only where they plausibly
live, and the scripted expert searches the same places, so a learner can pick up the same priors.
"""

from __future__ import annotations

from dataclasses import dataclass

FAMILIES = (
    "pick_and_place",
    "pick_clean_then_place",
    "pick_heat_then_place",
    "pick_cool_then_place",
    "look_at_obj_in_light",
    "pick_two_obj_and_place",
)

# The appliance each transform family needs, and the state it gives the object.
TOOL_OF_FAMILY = {
    "pick_clean_then_place": "sinkbasin",
    "pick_heat_then_place": "microwave",
    "pick_cool_then_place": "fridge",
}
STATE_OF_FAMILY = {
    "pick_clean_then_place": "clean",
    "pick_heat_then_place": "hot",
    "pick_cool_then_place": "cool",
}
ROOMS_OF_FAMILY = {
    "pick_and_place": ("kitchen", "livingroom", "bedroom", "bathroom"),
    "pick_clean_then_place": ("kitchen", "bathroom"),
    "pick_heat_then_place": ("kitchen",),
    "pick_cool_then_place": ("kitchen",),
    "look_at_obj_in_light": ("bedroom", "livingroom"),
    "pick_two_obj_and_place": ("kitchen", "livingroom", "bedroom", "bathroom"),
}

LAMP_TYPES = ("desklamp", "floorlamp")
# Receptacle types a desklamp stands on.
DESKLAMP_PLACES = ("desk", "sidetable", "dresser")


@dataclass(frozen=True)
class ReceptacleKind:
    type: str
    min_count: int
    max_count: int
    openable: bool = False


_K = ReceptacleKind
LAYOUTS: dict[str, tuple[ReceptacleKind, ...]] = {
    "kitchen": (
        _K("cabinet", 2, 5, True),
        _K("coffeemachine", 1, 1),
        _K("countertop", 1, 2),
        _K("diningtable", 1, 1),
        _K("drawer", 1, 3, True),
        _K("fridge", 1, 1, True),
        _K("garbagecan", 1, 1),
        _K("microwave", 1, 1, True),
        _K("shelf", 0, 2),
        _K("sinkbasin", 1, 1),
        _K("stoveburner", 2, 4),
        _K("toaster", 1, 1),
    ),
    "livingroom": (
        _K("armchair", 1, 2),
        _K("cabinet", 1, 3, True),
        _K("coffeetable", 1, 1),
        _K("drawer", 1, 3, True),
        _K("garbagecan", 1, 1),
        _K("shelf", 1, 3),
        _K("sidetable", 1, 2),
        _K("sofa", 1, 1),
        _K("tvstand", 1, 1),
    ),
    "bedroom": (
        _K("armchair", 0, 1),
        _K("bed", 1, 1),
        _K("desk", 1, 2),
        _K("drawer", 2, 4, True),
        _K("dresser", 1, 1),
        _K("garbagecan", 1, 1),
        _K("laundryhamper", 1, 1),
        _K("safe", 0, 1, True),
        _K("shelf", 1, 3),
        _K("sidetable", 1, 2),
    ),
    "bathroom": (
        _K("bathtubbasin", 1, 1),
        _K("cabinet", 2, 4, True),
        _K("countertop", 1, 1),
        _K("drawer", 0, 2, True),
        _K("garbagecan", 1, 1),
        _K("handtowelholder", 1, 1),
        _K("shelf", 0, 2),
        _K("sinkbasin", 1, 2),
        _K("toilet", 1, 1),
        _K("toiletpaperhanger", 1, 1),
        _K("towelholder", 1, 1),
    ),
}


@dataclass(frozen=True)
class ObjectKind:
    """An object type in one room: where it is found (most likely first) and where tasks send it."""

    type: str
    found_in: tuple[str, ...]
    targets: tuple[str, ...]
    states: frozenset[str] = frozenset()  # which of clean/hot/cool a task may ask for


def _obj(type_: str, found_in: str, targets: str, states: str = "") -> ObjectKind:
    return ObjectKind(type_, tuple(found_in.split()), tuple(targets.split()), frozenset(states.split()))


_FOOD = "countertop diningtable fridge garbagecan microwave sinkbasin"
_FOOD_TARGETS = "countertop diningtable fridge microwave garbagecan"
OBJECTS: dict[str, tuple[ObjectKind, ...]] = {
    "kitchen": (
        _obj("apple", _FOOD, _FOOD_TARGETS, "clean hot cool"),
        _obj("tomato", _FOOD, _FOOD_TARGETS, "clean hot cool"),
        _obj("potato", _FOOD, _FOOD_TARGETS, "clean hot cool"),
        _obj("egg", _FOOD, _FOOD_TARGETS, "clean hot cool"),
        _obj("lettuce", "countertop diningtable fridge sinkbasin", _FOOD_TARGETS, "clean cool"),
        _obj(
            "bread",
            "countertop diningtable fridge cabinet",
            "countertop diningtable fridge microwave",
            "hot cool",
        ),
        _obj(
            "mug",
            "coffeemachine countertop cabinet diningtable shelf sinkbasin",
            "coffeemachine cabinet countertop diningtable shelf",
            "clean hot cool",
        ),
        _obj(
            "cup",
            "countertop cabinet diningtable fridge shelf sinkbasin microwave",
            "cabinet countertop diningtable shelf",
            "clean hot cool",
        ),
        _obj(
            "bowl",
            "cabinet countertop diningtable shelf fridge sinkbasin microwave",
            "cabinet countertop diningtable shelf",
            "clean cool",
        ),
        _obj(
            "plate",
            "cabinet countertop diningtable shelf sinkbasin",
            "cabinet countertop diningtable shelf",
            "clean hot cool",
        ),
        _obj(
            "pan",
            "stoveburner countertop cabinet sinkbasin",
            "stoveburner countertop cabinet diningtable",
            "clean cool",
        ),
        _obj(
            "pot",
            "stoveburner countertop cabinet diningtable sinkbasin",
            "stoveburner countertop cabinet",
            "clean cool",
        ),
        _obj("knife", "countertop drawer diningtable sinkbasin", "drawer countertop diningtable", "clean"),
        _obj(
            "butterknife", "drawer countertop diningtable sinkbasin", "drawer countertop diningtable", "clean"
        ),
        _obj("fork", "drawer countertop diningtable sinkbasin", "drawer countertop diningtable", "clean"),
        _obj("spoon", "drawer diningtable countertop sinkbasin", "drawer countertop diningtable", "clean"),
        _obj("spatula", "countertop drawer diningtable sinkbasin", "drawer countertop diningtable", "clean"),
        _obj("ladle", "countertop drawer diningtable sinkbasin", "drawer countertop diningtable", "clean"),
        _obj("dishsponge", "sinkbasin countertop cabinet drawer", "cabinet countertop drawer", "clean"),
        _obj(
            "saltshaker",
            "countertop diningtable shelf cabinet",
            "cabinet countertop diningtable drawer shelf",
        ),
        _obj(
            "peppershaker",
            "countertop diningtable shelf cabinet",
            "cabinet countertop diningtable drawer shelf",
        ),
        _obj("soapbottle", "countertop sinkbasin cabinet shelf", "cabinet countertop shelf"),
        _obj(
            "winebottle",
            "countertop diningtable fridge cabinet",
            "cabinet countertop diningtable shelf",
            "cool",
        ),
    ),
    "livingroom": (
        _obj(
            "remotecontrol",
            "sofa coffeetable armchair sidetable tvstand drawer",
            "sofa armchair coffeetable sidetable",
        ),
        _obj(
            "keychain",
            "coffeetable sidetable drawer sofa armchair shelf",
            "drawer coffeetable sidetable sofa armchair",
        ),
        _obj(
            "creditcard",
            "coffeetable sidetable drawer armchair sofa shelf",
            "drawer coffeetable sofa armchair",
        ),
        _obj(
            "newspaper",
            "sofa coffeetable sidetable armchair shelf",
            "sofa armchair coffeetable sidetable garbagecan",
        ),
        _obj("laptop", "sofa coffeetable armchair sidetable", "sofa armchair coffeetable tvstand"),
        _obj("pillow", "sofa armchair", "sofa armchair"),
        _obj("book", "shelf coffeetable sidetable sofa drawer armchair", "shelf sofa coffeetable sidetable"),
        _obj("cellphone", "sofa coffeetable sidetable drawer armchair", "sofa armchair coffeetable drawer"),
        _obj("statue", "shelf coffeetable sidetable tvstand", "shelf coffeetable sidetable tvstand"),
        _obj("vase", "shelf coffeetable sidetable cabinet", "shelf coffeetable sidetable tvstand"),
        _obj("watch", "sidetable coffeetable drawer shelf", "drawer sidetable coffeetable"),
        _obj("box", "coffeetable shelf sofa cabinet", "sofa armchair coffeetable cabinet"),
    ),
    "bedroom": (
        _obj("alarmclock", "desk sidetable dresser shelf", "desk sidetable dresser shelf"),
        _obj("book", "bed desk shelf sidetable drawer", "bed desk shelf sidetable"),
        _obj("cellphone", "bed desk sidetable drawer dresser", "bed desk sidetable dresser"),
        _obj("pen", "desk drawer sidetable shelf dresser", "desk drawer sidetable shelf"),
        _obj("pencil", "desk drawer sidetable shelf dresser", "desk drawer sidetable shelf"),
        _obj("cd", "desk drawer shelf safe sidetable", "desk drawer shelf safe"),
        _obj("laptop", "bed desk dresser", "bed desk"),
        _obj("pillow", "bed armchair", "bed armchair"),
        _obj("keychain", "desk dresser drawer sidetable safe", "dresser drawer safe"),
        _obj("creditcard", "desk dresser drawer sidetable shelf", "desk dresser drawer"),
        _obj("mug", "desk shelf sidetable dresser", "desk shelf sidetable"),
        _obj("cloth", "laundryhamper dresser drawer bed", "laundryhamper dresser drawer"),
        _obj("teddybear", "bed armchair shelf", "bed armchair shelf"),
    ),
    "bathroom": (
        _obj("toiletpaper", "toilet cabinet countertop shelf drawer", "toiletpaperhanger cabinet countertop"),
        _obj(
            "soapbar",
            "countertop sinkbasin bathtubbasin toilet cabinet",
            "cabinet countertop toilet",
            "clean",
        ),
        _obj("soapbottle", "countertop toilet cabinet shelf", "cabinet countertop toilet shelf"),
        _obj(
            "spraybottle", "cabinet toilet countertop garbagecan", "cabinet countertop toilet shelf", "clean"
        ),
        _obj("candle", "countertop toilet cabinet shelf", "cabinet countertop toilet shelf"),
        _obj("cloth", "countertop cabinet bathtubbasin drawer", "cabinet countertop bathtubbasin", "clean"),
        _obj(
            "handtowel", "handtowelholder countertop cabinet", "handtowelholder countertop cabinet", "clean"
        ),
        _obj("dishsponge", "countertop cabinet bathtubbasin toilet", "cabinet countertop toilet", "clean"),
        _obj("tissuebox", "toilet countertop shelf cabinet", "toilet countertop shelf cabinet"),
        _obj("scrubbrush", "toilet cabinet garbagecan", "cabinet garbagecan toilet"),
    ),
}

# Held out of `train` and `test_seen`, present only in `test_unseen` (see the package docstring).
# Every held-out combination is made of parts a learner has met: each object here is a goal object
# in other families' train tasks, each target and room appears in other families.
HELD_OUT_FAMILY_OBJECTS = frozenset(
    {
        ("pick_and_place", "spraybottle"),
        ("pick_cool_then_place", "tomato"),
        ("look_at_obj_in_light", "cellphone"),
    }
)
HELD_OUT_FAMILY_TARGETS = frozenset(
    {
        ("pick_heat_then_place", "diningtable"),
        ("pick_clean_then_place", "drawer"),
        ("pick_two_obj_and_place", "sofa"),
    }
)
HELD_OUT_FAMILY_ROOMS = frozenset(
    {
        ("pick_clean_then_place", "bathroom"),
        ("look_at_obj_in_light", "livingroom"),
    }
)


def held_out_features(family: str, room: str, object_type: str, target: str | None) -> list[str]:
    """The held-out features a task has, as readable tags; empty for a train-distribution task."""
    features = []
    if (family, object_type) in HELD_OUT_FAMILY_OBJECTS:
        features.append(f"family_object:{family}/{object_type}")
    if (family, target) in HELD_OUT_FAMILY_TARGETS:
        features.append(f"family_target:{family}/{target}")
    if (family, room) in HELD_OUT_FAMILY_ROOMS:
        features.append(f"family_room:{family}/{room}")
    return features


def eligible_objects(room: str, family: str) -> list[ObjectKind]:
    """Object kinds of `room` a task of `family` can be about."""
    kinds = OBJECTS[room]
    state = STATE_OF_FAMILY.get(family)
    if state is not None:
        return [k for k in kinds if state in k.states]
    return list(kinds)


def eligible_targets(kind: ObjectKind, family: str) -> list[str]:
    """Target receptacle types for `kind` in `family` (no target for the lamp family)."""
    if family == "look_at_obj_in_light":
        return []
    tool = TOOL_OF_FAMILY.get(family)
    return [t for t in kind.targets if t != tool]


def layout_kind(room: str, receptacle_type: str) -> ReceptacleKind | None:
    for kind in LAYOUTS[room]:
        if kind.type == receptacle_type:
            return kind
    return None


def _check_tables() -> None:
    # Catch table typos at import: every referenced receptacle must exist in its room.
    for room, kinds in OBJECTS.items():
        types = {k.type for k in LAYOUTS[room]}
        for kind in kinds:
            missing = (set(kind.found_in) | set(kind.targets)) - types
            if missing:
                raise ValueError(
                    f"{room}/{kind.type} refers to receptacles not in the room: {sorted(missing)}"
                )


_check_tables()
