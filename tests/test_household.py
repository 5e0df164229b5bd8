"""The built-in household world: generation, splits, commands and phrasing, the scripted expert."""

from __future__ import annotations

import re
import statistics

import pytest

from trajkit.data.schema import AGENT, OBSERVATION, TASK
from trajkit.envs.base import Task, parse_react_action
from trajkit.envs.household import (
    BRIEF_INSTRUCTION,
    FAMILIES,
    INSTRUCTION,
    NOTHING,
    VERSION,
    HouseholdEnv,
    expert_step_bound,
    expert_trajectory,
)
from trajkit.envs.household import catalog as cat

SPLITS = ("train", "test_seen", "test_unseen")


@pytest.fixture(scope="module")
def env() -> HouseholdEnv:
    return HouseholdEnv(seed=0, n_train=600, n_test=240)


def _scene(spec: dict) -> tuple:
    """The part of a spec that makes a task what it is (everything but bookkeeping)."""
    return (spec["family"], spec["goal"], repr(spec["receptacles"]), repr(spec["objects"]))


def _actions(trajectory) -> list[str]:
    return [parse_react_action(t.text) for t in trajectory.agent_turns[1:]]


# ---- a hand-written scene, to pin every command's phrasing ----------------------------------


def _kitchen_task(
    family: str = "pick_clean_then_place", target: str = "fridge", max_steps: int = 30, obj: str = "apple"
) -> Task:
    spec = {
        "version": VERSION,
        "family": family,
        "room": "kitchen",
        "goal": "put a clean apple in fridge.",
        "object": obj,
        "target": target,
        "tool": cat.TOOL_OF_FAMILY.get(family),
        "lamp": None,
        "receptacles": [
            {"name": "cabinet 1", "openable": True, "loc": 3},
            {"name": "countertop 1", "openable": False, "loc": 1},
            {"name": "fridge 1", "openable": True, "loc": 2},
            {"name": "microwave 1", "openable": True, "loc": 5},
            {"name": "sinkbasin 1", "openable": False, "loc": 4},
        ],
        "objects": [
            {"name": "apple 1", "at": "countertop 1"},
            {"name": "knife 2", "at": "countertop 1"},
            {"name": "mug 1", "at": "cabinet 1"},
        ],
        "held_out": [],
    }
    return Task(id="household/custom/kitchen", split="train", spec=spec, max_steps=max_steps)


def _bedroom_task(lamp: str = "desklamp") -> Task:
    receptacles = [
        {"name": "desk 1", "openable": False, "loc": 1},
        {"name": "drawer 1", "openable": True, "loc": 2},
    ]
    objects = [{"name": "book 1", "at": "drawer 1"}]
    if lamp == "desklamp":
        objects.append({"name": "desklamp 1", "at": "desk 1"})
    else:
        receptacles.append({"name": "floorlamp 1", "fixture": True, "loc": 3})
    spec = {
        "version": VERSION,
        "family": "look_at_obj_in_light",
        "room": "bedroom",
        "goal": f"look at book under the {lamp}.",
        "object": "book",
        "target": None,
        "tool": None,
        "lamp": lamp,
        "receptacles": receptacles,
        "objects": objects,
        "held_out": [],
    }
    return Task(id=f"household/custom/bedroom-{lamp}", split="train", spec=spec)


def _play(env: HouseholdEnv, task: Task, actions: list[str]) -> list:
    env.reset(task)
    return [env.step(a) for a in actions]


def test_first_observation_is_alfworld_like(env: HouseholdEnv) -> None:
    obs = env.reset(_kitchen_task())
    assert obs.text == (
        "You are in the middle of a room. Looking quickly around you, you see a cabinet 1, a countertop 1, "
        "a fridge 1, a microwave 1, and a sinkbasin 1.\n\nYour task is to: put a clean apple in fridge."
    )
    assert obs.instruction == "put a clean apple in fridge."
    assert env.instruction == INSTRUCTION
    for command in (
        "go to",
        "take",
        "put",
        "open",
        "close",
        "clean",
        "heat",
        "cool",
        "use",
        "examine",
        "inventory",
        "look",
    ):
        assert command in INSTRUCTION
    assert "Thought:" in INSTRUCTION and "Action:" in INSTRUCTION


def test_command_phrasing(env: HouseholdEnv) -> None:
    task = _kitchen_task()
    script = [
        ("go to countertop 1", "You arrive at loc 1. On the countertop 1, you see a apple 1, and a knife 2."),
        ("examine countertop 1", "On the countertop 1, you see a apple 1, and a knife 2."),
        ("examine apple 1", "There's nothing special about apple 1."),
        ("take apple 1 from countertop 1", "You pick up the apple 1 from the countertop 1."),
        ("inventory", "You are carrying: a apple 1."),
        ("look", "You are facing the countertop 1. On the countertop 1, you see a knife 2."),
        ("go to cabinet 1", "You arrive at loc 3. The cabinet 1 is closed."),
        ("open cabinet 1", "You open the cabinet 1. The cabinet 1 is open. In it, you see a mug 1."),
        ("close cabinet 1", "You close the cabinet 1."),
        ("go to sinkbasin 1", "You arrive at loc 4. On the sinkbasin 1, you see nothing."),
        ("clean apple 1 with sinkbasin 1", "You clean the apple 1 using the sinkbasin 1."),
        ("examine apple 1", "The apple 1 is clean."),
        ("go to microwave 1", "You arrive at loc 5. The microwave 1 is closed."),
        ("heat apple 1 with microwave 1", "You heat the apple 1 using the microwave 1."),
        ("go to fridge 1", "You arrive at loc 2. The fridge 1 is closed."),
        ("cool apple 1 with fridge 1", "You cool the apple 1 using the fridge 1."),
        ("examine apple 1", "The apple 1 is clean and cool."),
        ("open fridge 1", "You open the fridge 1. The fridge 1 is open. In it, you see nothing."),
        ("put apple 1 in/on fridge 1", "You put the apple 1 in/on the fridge 1."),
    ]
    results = _play(env, task, [a for a, _ in script])
    for (action, expected), result in zip(script, results, strict=True):
        assert result.observation.text == expected, action
        assert result.info["valid"], action
    assert results[-1].info["won"] and results[-1].done and results[-1].reward == 1.0
    assert all(r.reward == 0.0 and not r.done for r in results[:-1])


@pytest.mark.parametrize("preposition", ["in", "on", "in/on"])
def test_put_accepts_in_on_and_in_on(env: HouseholdEnv, preposition: str) -> None:
    task = _kitchen_task(family="pick_and_place", target="countertop", obj="mug")
    actions = ["go to cabinet 1", "open cabinet 1", "take mug 1 from cabinet 1", "go to countertop 1"]
    results = _play(env, task, [*actions, f"put mug 1 {preposition} countertop 1"])
    assert results[-1].observation.text == "You put the mug 1 in/on the countertop 1."
    assert results[-1].info["valid"]


def test_commands_are_case_and_space_tolerant(env: HouseholdEnv) -> None:
    results = _play(env, _kitchen_task(), ["  Go To   Countertop 1. "])
    assert results[0].info["valid"]


def test_invalid_actions_say_nothing_happened(env: HouseholdEnv) -> None:
    invalid = [
        "take apple 1 from countertop 1",  # not there yet
        "go to countertop 9",  # no such receptacle
        "fly to the moon",
        "",
        "go to countertop 1",
        "go to countertop 1",  # already here
        "take mug 1 from countertop 1",  # the mug is elsewhere
        "open countertop 1",  # cannot be opened
        "put apple 1 in/on countertop 1",  # not holding it
        "clean knife 2 with countertop 1",  # not holding it, wrong tool
        "use desklamp 1",  # no lamp
        "examine mug 1",  # not visible
        "go to cabinet 1",
        "take mug 1 from cabinet 1",  # closed
        "close cabinet 1",  # already closed
        "open cabinet 1",
        "open cabinet 1",  # already open
        "take mug 1 from cabinet 1",
        "take knife 2 from countertop 1",  # hands full (and not here)
        "heat mug 1 with sinkbasin 1",  # wrong tool, not there
        "put mug 1 in/on fridge 1",  # not at the fridge
        "go to fridge 1",
        "put mug 1 in/on fridge 1",  # fridge closed
    ]
    valid = {4, 12, 15, 17, 21}
    results = _play(env, _kitchen_task(), invalid)
    for i, (action, result) in enumerate(zip(invalid, results, strict=True)):
        if i in valid:
            assert result.info["valid"], action
        else:
            assert result.observation.text == NOTHING, action
            assert result.info["valid"] is False and result.info["won"] is False, action


def test_lamps(env: HouseholdEnv) -> None:
    results = _play(
        env,
        _bedroom_task("desklamp"),
        ["go to desk 1", "use desklamp 1", "use desklamp 1", "go to drawer 1", "open drawer 1"],
    )
    assert results[0].observation.text == "You arrive at loc 1. On the desk 1, you see a desklamp 1."
    assert [r.observation.text for r in results[1:3]] == [
        "You turn on the desklamp 1.",
        "You turn off the desklamp 1.",
    ]
    assert not any(r.info["won"] for r in results)
    more = [
        env.step(a) for a in ["take book 1 from drawer 1", "use desklamp 1", "go to desk 1", "use desklamp 1"]
    ]
    assert more[1].observation.text == NOTHING  # the lamp is on the desk, not here
    assert more[-1].observation.text == "You turn on the desklamp 1." and more[-1].info["won"]

    results = _play(
        env,
        _bedroom_task("floorlamp"),
        [
            "go to drawer 1",
            "open drawer 1",
            "take book 1 from drawer 1",
            "go to floorlamp 1",
            "use floorlamp 1",
        ],
    )
    assert results[3].observation.text == "You arrive at loc 3. The floorlamp 1 is off."
    assert results[-1].info["won"] and results[-1].reward == 1.0


def test_truncation_and_episode_end(env: HouseholdEnv) -> None:
    task = _kitchen_task(max_steps=3)
    results = _play(env, task, ["look", "inventory", "look"])
    assert [r.done for r in results] == [False, False, True]
    assert results[-1].info == {"won": False, "valid": True, "truncated": True, "steps": 3}
    assert results[-1].reward == 0.0
    with pytest.raises(RuntimeError, match="is over"):
        env.step("look")
    with pytest.raises(RuntimeError, match="before reset"):
        HouseholdEnv().step("look")


def test_reset_rejects_another_version(env: HouseholdEnv) -> None:
    task = _kitchen_task()
    stale = Task(id=task.id, split=task.split, spec={**task.spec, "version": "0"})
    with pytest.raises(ValueError, match="regenerate"):
        env.reset(stale)


# ---- generation and splits ------------------------------------------------------------------


def test_same_seed_same_tasks_and_observations() -> None:
    a, b = HouseholdEnv(seed=7, n_train=60, n_test=30), HouseholdEnv(seed=7, n_train=60, n_test=30)
    for split in SPLITS:
        assert a.tasks(split) == b.tasks(split)
    task = a.tasks("train")[5]
    actions = ["look", "go to " + task.spec["receptacles"][0]["name"], "inventory", "open cabinet 1"]
    assert [r.observation.text for r in _play(a, task, actions)] == [
        r.observation.text for r in _play(b, task, actions)
    ]
    other = HouseholdEnv(seed=8, n_train=60, n_test=30)
    assert [t.spec for t in other.tasks("train")] != [t.spec for t in a.tasks("train")]
    # A bigger split keeps the earlier tasks unchanged.
    assert HouseholdEnv(seed=7, n_train=90).tasks("train")[:60] == a.tasks("train")


def test_task_ids_and_family_balance(env: HouseholdEnv) -> None:
    all_ids = []
    for split in SPLITS:
        tasks = env.tasks(split)
        for task in tasks:
            assert re.fullmatch(rf"household/{split}/[a-z_]+/\d{{5}}", task.id)
            assert task.id.split("/")[2] == task.spec["family"]
            assert task.split == split and task.max_steps == 30
        all_ids += [t.id for t in tasks]
        counts = {f: sum(t.spec["family"] == f for t in tasks) for f in FAMILIES}
        assert max(counts.values()) - min(counts.values()) <= 1, counts
    assert len(all_ids) == len(set(all_ids))


def test_splits_are_disjoint(env: HouseholdEnv) -> None:
    train = {_scene(t.spec) for t in env.tasks("train")}
    for split in ("test_seen", "test_unseen"):
        assert not train & {_scene(t.spec) for t in env.tasks(split)}


def test_held_out_combinations_never_in_train(env: HouseholdEnv) -> None:
    train_goals = set()
    for split in ("train", "test_seen"):
        for task in env.tasks(split):
            spec = task.spec
            assert spec["held_out"] == []
            assert (spec["family"], spec["object"]) not in cat.HELD_OUT_FAMILY_OBJECTS, task.id
            assert (spec["family"], spec["target"]) not in cat.HELD_OUT_FAMILY_TARGETS
            assert (spec["family"], spec["room"]) not in cat.HELD_OUT_FAMILY_ROOMS
            train_goals.add((spec["family"], spec["object"]))
    unseen = env.tasks("test_unseen")
    kinds_seen = set()
    for task in unseen:
        spec = task.spec
        assert spec["held_out"], task.id
        assert spec["held_out"] == cat.held_out_features(
            spec["family"], spec["room"], spec["object"], spec["target"]
        )
        kinds_seen |= {f.split(":")[0] for f in spec["held_out"]}
    assert kinds_seen == {"family_object", "family_target", "family_room"}
    # Every part of a held-out combination is familiar: its object is a goal in other families.
    for family, obj in cat.HELD_OUT_FAMILY_OBJECTS:
        assert any(o == obj and f != family for f, o in train_goals), (family, obj)


def test_goal_is_not_met_at_start(env: HouseholdEnv) -> None:
    for task in env.tasks("train")[:120]:
        spec = task.spec
        if spec["target"]:
            for obj in spec["objects"]:
                if obj["name"].startswith(spec["object"] + " "):
                    assert not obj["at"].startswith(spec["target"] + " "), task.id


# ---- the scripted expert --------------------------------------------------------------------


@pytest.mark.parametrize("split", SPLITS)
def test_expert_solves_every_task_and_replays(env: HouseholdEnv, split: str) -> None:
    tasks = env.tasks(split)[:240]
    fresh = HouseholdEnv(seed=0, n_train=0, n_test=0)
    steps_by_family: dict[str, list[int]] = {f: [] for f in FAMILIES}
    for task in tasks:
        trajectory = expert_trajectory(env, task, rng_seed=0)
        assert trajectory.success is True and trajectory.reward == 1.0, task.id
        steps = trajectory.metadata["steps"]
        assert steps <= expert_step_bound(task.spec) <= task.max_steps
        steps_by_family[task.spec["family"]].append(steps)
        results = _play(fresh, task, _actions(trajectory))
        assert results[-1].info["won"] and all(r.info["valid"] for r in results), task.id
    means = {f: statistics.mean(s) for f, s in steps_by_family.items()}
    assert all(3 <= m <= 20 for m in means.values()), means
    assert 6 <= statistics.mean(s for v in steps_by_family.values() for s in v) <= 14


def test_expert_trajectory_layout(env: HouseholdEnv) -> None:
    task = env.tasks("train")[1]
    trajectory = expert_trajectory(env, task, rng_seed=3)
    assert trajectory.task_id == task.id and trajectory.env == "household" and trajectory.split == "train"
    assert trajectory.metadata["source"] == "expert" and trajectory.metadata["env_version"] == VERSION
    turns = trajectory.turns
    assert [t.role for t in turns[:3]] == [TASK, AGENT, TASK]
    assert turns[0].text == INSTRUCTION and turns[1].text == "OK"
    assert turns[2].text.startswith("You are in the middle of a room.")
    body = turns[3:]
    assert [t.role for t in body] == [AGENT, OBSERVATION] * (len(body) // 2) + [AGENT]
    for turn in body:
        if turn.role == AGENT:
            assert re.fullmatch(r"Thought: [^\n]+\nAction: [a-z0-9/ ]+", turn.text), turn.text
        else:
            assert turn.text.startswith("Observation: ")
    # Same seed, same trajectory; another seed may word or order things differently.
    assert expert_trajectory(env, task, rng_seed=3).to_dict() == trajectory.to_dict()


def test_expert_searches_instead_of_walking_straight_to_the_object(env: HouseholdEnv) -> None:
    # Over many tasks, the expert often visits receptacles that do not hold the goal object.
    detours = 0
    for task in env.tasks("train")[:120]:
        first_take = next(a for a in _actions(expert_trajectory(env, task)) if a.startswith("take"))
        gone_to = [a for a in _actions(expert_trajectory(env, task)) if a.startswith("go to")]
        source = first_take.split(" from ")[1]
        detours += gone_to.index(f"go to {source}") > 0
    assert detours > 40


def test_plain_phrasing_words_each_situation_one_way() -> None:
    varied, plain = (
        HouseholdEnv(seed=0, n_train=40, n_test=0),
        HouseholdEnv(seed=0, n_train=40, n_test=0, expert_phrasing="plain"),
    )

    def openings(env):
        texts = set()
        for task in env.tasks("train"):
            traj = expert_trajectory(env, task, rng_seed=1)
            assert traj.success and traj.metadata["expert_phrasing"] == env.expert_phrasing
            texts |= {t.text.split(" ")[1] for t in traj.agent_turns[1:]}  # first word of each thought
        return texts

    assert len(openings(plain)) < len(openings(varied))
    with pytest.raises(ValueError, match="expert_phrasing"):
        HouseholdEnv(expert_phrasing="fancy")


def test_compact_layout_makes_smaller_rooms_the_expert_still_solves() -> None:
    standard = HouseholdEnv(seed=0, n_train=60, n_test=0)
    compact = HouseholdEnv(seed=0, n_train=60, n_test=0, layout="compact")
    assert (standard.version, compact.version) == ("3", "3-compact")

    def room_stats(env):
        sizes, clutter = [], []
        for task in env.tasks("train"):
            types = [r["name"].rsplit(" ", 1)[0] for r in task.spec["receptacles"]]
            sizes.append(max(types.count(t) for t in set(types)))
            clutter.append(
                sum(not o["name"].startswith(task.spec["object"] + " ") for o in task.spec["objects"])
            )
            assert expert_trajectory(env, task).success
        return max(sizes), sum(clutter) / len(clutter)

    (std_most, std_clutter), (cmp_most, cmp_clutter) = room_stats(standard), room_stats(compact)
    assert cmp_most <= 2 < std_most
    assert cmp_clutter < std_clutter
    task = compact.tasks("train")[0]
    assert task.id.startswith("household/compact/train/") and task.spec["layout"] == "compact"
    # The standard layout's tasks do not move when other layouts exist.
    assert standard.tasks("train")[0].id == "household/train/pick_and_place/00000"
    with pytest.raises(ValueError, match="layout"):
        HouseholdEnv(layout="huge")


def test_brief_instruction_changes_only_the_first_turn() -> None:
    full = HouseholdEnv(seed=0, n_train=6, n_test=0, expert_phrasing="plain")
    brief = HouseholdEnv(seed=0, n_train=6, n_test=0, expert_phrasing="plain", instruction="brief")
    assert brief.instruction == BRIEF_INSTRUCTION and "Commands you can give" not in BRIEF_INSTRUCTION
    assert "Thought: <your thinking>\nAction: <one command>" in BRIEF_INSTRUCTION
    assert len(BRIEF_INSTRUCTION) < len(INSTRUCTION) / 3
    for task in brief.tasks("train"):
        long, short = expert_trajectory(full, task), expert_trajectory(brief, task)
        assert short.turns[0].text == BRIEF_INSTRUCTION and long.turns[0].text == INSTRUCTION
        assert [t.text for t in short.turns[1:]] == [t.text for t in long.turns[1:]]
        assert short.success
    with pytest.raises(ValueError, match="instruction"):
        HouseholdEnv(instruction="terse")
