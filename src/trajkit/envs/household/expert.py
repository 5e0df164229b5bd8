"""A scripted demonstrator that solves household tasks the way a person would.

It knows the goal and the world's common sense (where an object type is usually kept), but not
where the objects actually are: it learns that only from the observations it reads. It searches
likely receptacles in a likely order (with seeded variation), opens closed ones, remembers what it
saw, then carries out the family's steps. Every turn is "Thought: ...\\nAction: ...".
"""

from __future__ import annotations

import random
import re
from typing import Any

from trajkit.data.schema import AGENT, Trajectory, Turn
from trajkit.envs.base import Task, episode_prefix, observation_turn
from trajkit.envs.household import catalog as cat
from trajkit.envs.household.generate import object_kind, receptacle_type

_NAMES = re.compile(r"\ba ([a-z]+ \d+)")
_VERB_OF_TOOL = {"sinkbasin": "clean", "microwave": "heat", "fridge": "cool"}
_STATE_WORD = {"clean": "clean", "heat": "hot", "cool": "cool"}


class ExpertError(RuntimeError):
    """The scripted expert could not go on (a bug in the expert or a task it cannot solve)."""


def plural(noun: str) -> str:
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    return noun + "s"


def _seen_names(text: str) -> list[str] | None:
    """Object names listed after 'you see' in an observation, or None if it lists nothing."""
    idx = text.rfind("you see ")
    if idx < 0:
        return None
    return _NAMES.findall(text[idx:])


def _is_openable(room: str, receptacle_name: str) -> bool:
    kind = cat.layout_kind(room, receptacle_type(receptacle_name))
    return kind is not None and kind.openable


def _in_on(receptacle_name: str, openable: set[str]) -> str:
    return "in" if receptacle_name in openable else "on"


class _Demonstrator:
    def __init__(self, env: Any, task: Task, rng: random.Random, phrasing: str = "varied") -> None:
        self.env = env
        self.task = task
        self.spec = task.spec
        self.rng = rng
        self.phrasing = phrasing
        self.family = self.spec["family"]
        self.wanted = self.spec["object"]
        first = env.reset(task)
        self.turns: list[Turn] = episode_prefix(env.instruction, first.text)
        room_part = first.text.split("\n\n", 1)[0]
        self.receptacles = _NAMES.findall(room_part)
        self.openable = {r for r in self.receptacles if _is_openable(self.spec["room"], r)}
        self.at: str | None = None
        self.held: str | None = None
        self.opened: set[str] = set()
        self.seen: dict[str, list[str]] = {}  # receptacle -> objects it held when last seen
        self.placed: set[str] = set()  # goal objects already delivered
        self.done = False
        self.won = False
        self.reward = 0.0

    def say(self, wordings):
        """One of several wordings of a thought: drawn at random ("varied", as people write), or
        always the first ("plain": one wording per situation, far easier for a small model)."""
        return wordings[0] if self.phrasing == "plain" else self.rng.choice(wordings)

    # ---- acting ------------------------------------------------------------------------------

    def act(self, thought: str, action: str) -> str:
        if self.done:
            raise ExpertError(f"episode on {self.task.id} ended before the expert finished")
        self.turns.append(Turn(AGENT, f"Thought: {thought}\nAction: {action}"))
        result = self.env.step(action)
        if not result.info.get("valid", True):
            raise ExpertError(f"expert action {action!r} was invalid on {self.task.id}")
        self.done, self.won, self.reward = result.done, bool(result.info.get("won")), result.reward
        text = result.observation.text
        if not self.done:
            # ETO's layout: an episode ends on the agent's last action, not on an observation.
            self.turns.append(observation_turn(text, result.observation.image))
        self._remember(action, text)
        return text

    def _remember(self, action: str, text: str) -> None:
        verb = action.split(" ", 1)[0]
        if verb == "go":
            self.at = action[len("go to ") :]
        elif verb == "open":
            self.opened.add(self.at or "")
        elif verb == "take":
            obj = action.split(" from ")[0][len("take ") :]
            self.held = obj
            if self.at in self.seen and obj in self.seen[self.at]:
                self.seen[self.at].remove(obj)
            return
        elif verb == "put":
            self.seen.setdefault(self.at or "", []).append(self.held or "")
            self.placed.add(self.held or "")
            self.held = None
            return
        if verb in ("go", "open") and self.at is not None:
            names = _seen_names(text)
            if names is not None:
                self.seen[self.at] = names

    def go(self, thought: str, receptacle: str) -> str | None:
        if self.at == receptacle:
            return None
        return self.act(thought, f"go to {receptacle}")

    def open_if_closed(self, receptacle: str, thought: str | None = None) -> None:
        if receptacle in self.openable and receptacle not in self.opened:
            thought = thought or self.say(
                (
                    f"The {receptacle} is closed. I'll open it to see what is inside.",
                    f"I need to open the {receptacle} to look inside.",
                    f"The {receptacle} is shut; let me open it.",
                )
            )
            self.act(thought, f"open {receptacle}")

    # ---- knowledge ---------------------------------------------------------------------------

    def _ordered_types(self, types: list[str], jitter: float) -> list[str]:
        # Mostly the usual order, sometimes two neighbours swapped: people differ a little.
        keyed = sorted((i + self.rng.uniform(0.0, jitter), t) for i, t in enumerate(types))
        return [t for _, t in keyed]

    def _instances(self, types: list[str]) -> list[str]:
        return [r for t in types for r in self.receptacles if receptacle_type(r) == t]

    def search_plan(self) -> tuple[list[str], list[str]]:
        kind = object_kind(self.spec["room"], self.wanted)
        types = [t for t in kind.found_in if t != self.spec.get("target")]
        types = [t for t in types if any(receptacle_type(r) == t for r in self.receptacles)]
        types = self._ordered_types(types, 1.6)
        return types, self._instances(types)

    def _known(self, object_type: str) -> tuple[str, str] | None:
        """A receptacle where an undelivered object of this type was seen, and that object."""
        for rec, names in self.seen.items():
            for name in names:
                if receptacle_type(name) == object_type and name not in self.placed:
                    return rec, name
        return None

    # ---- routines ----------------------------------------------------------------------------

    def find_and_take(self, first_thought: str | None, order: list[str]) -> str:
        """Walk to a goal object (remembered or searched for) and pick it up; returns its name."""
        o = self.wanted
        thought: str | None = first_thought
        known = self._known(o)
        if known is not None:
            rec, name = known
            self.go(
                thought
                or self.say(
                    (
                        f"I saw a {name} {_in_on(rec, self.openable)} the {rec} earlier. I'll go back for it.",
                        f"There was another {o} at the {rec}. Let me go get it.",
                    )
                ),
                rec,
            )
            return self._take(name, rec)
        previous: str | None = None
        for rec in order:
            if rec in self.seen:
                continue
            if thought is None:
                thought = self.say(
                    (
                        # Naming the object first, then whether it is here, makes the check a
                        # look-up of that word in the observation just above.
                        f"The {o} is not here. Next I'll check the {rec}.",
                        f"No {o} {_in_on(previous or '', self.openable)} the {previous}. Let me try the {rec}.",
                        f"Still no {o}. The {rec} is another likely place.",
                    )
                    if previous
                    else (f"I'll look for a {o} at the {rec}.",)
                )
            self.go(thought, rec)
            self.open_if_closed(rec)
            previous, thought = rec, None
            found = self._known_at(rec, o)
            if found is not None:
                return self._take(found, rec)
        raise ExpertError(f"searched every likely place and found no {o} in {self.task.id}")

    def _known_at(self, rec: str, object_type: str) -> str | None:
        for name in self.seen.get(rec, []):
            if receptacle_type(name) == object_type and name not in self.placed:
                return name
        return None

    def _take(self, name: str, rec: str) -> str:
        thought = self.say(
            (
                f"The {self.wanted} is here: the {name}. I'll take it.",
                f"I found a {self.wanted}: the {name}. Let me pick it up.",
                f"Here is the {name}. I'll pick it up.",
            )
        )
        self.act(thought, f"take {name} from {rec}")
        return name

    def deliver(self, obj: str, target: str, thought: str) -> None:
        self.go(thought, target)
        self.open_if_closed(
            target,
            self.say(
                (
                    f"The {target} is closed, so I'll open it first.",
                    f"I have to open the {target} before putting anything in.",
                )
            ),
        )
        self.act(
            self.say(
                (
                    f"Now I put the {obj} {_in_on(target, self.openable)} the {target}.",
                    f"I'm at the {target}. I'll put the {obj} there.",
                )
            ),
            f"put {obj} in/on {target}",
        )

    # ---- the six families --------------------------------------------------------------------

    def plan_thought(self, types: list[str], first: str) -> str:
        o, target = self.wanted, self.spec.get("target")
        goals = {
            "pick_and_place": f"I need to find a {o} and put it in the {target}.",
            "pick_clean_then_place": f"I need to find a {o}, clean it with the sinkbasin, then put it in the {target}.",
            "pick_heat_then_place": f"I need to find a {o}, heat it with the microwave, then put it in the {target}.",
            "pick_cool_then_place": f"I need to find a {o}, cool it with the fridge, then put it in the {target}.",
            "look_at_obj_in_light": f"I need to find a {o} and look at it under the {self.spec['lamp']}.",
            "pick_two_obj_and_place": f"I need to find two {plural(o)} and put both in the {target}.",
        }
        places = ", ".join(types[:-1]) + f" or {types[-1]}" if len(types) > 1 else types[0]
        where = self.say(
            (
                f"A {o} is usually kept at a {places}, so I'll check those one by one, starting with the {first}.",
                f"The likely places for a {o} are the {places}. I'll start with the {first}.",
            )
        )
        return f"{goals[self.family]} {where}"

    def run(self) -> None:
        types, order = self.search_plan()
        if not order:
            raise ExpertError(f"no likely place for a {self.wanted} in {self.task.id}")
        obj = self.find_and_take(self.plan_thought(types, order[0]), order)
        if self.family == "look_at_obj_in_light":
            self._look_under_lamp(obj)
            return
        target = self._choose_target()
        tool = cat.TOOL_OF_FAMILY.get(self.family)
        if tool is not None:
            obj_state = self._transform(obj, tool)
            thought = self.say(
                (
                    f"The {obj} is {obj_state} now. I'll take it to the {target}.",
                    f"Done; next I bring the {obj} to the {target}.",
                )
            )
        else:
            thought = self.say(
                (
                    f"Now I'll bring the {obj} to the {target}.",
                    f"With the {obj} in hand, I go to the {target}.",
                )
            )
        self.deliver(obj, target, thought)
        if self.family == "pick_two_obj_and_place" and not self.done:
            remaining = [r for r in order if r not in self.seen]
            first_thought = None
            if self._known(self.wanted) is None and remaining:
                first_thought = self.say(
                    (
                        f"That's one {self.wanted}. I still need a second one, so I'll keep looking, next at the {remaining[0]}.",
                        f"One is in place. Now for the second {self.wanted}; the {remaining[0]} is next on my list.",
                    )
                )
            second = self.find_and_take(first_thought, order)
            self.deliver(
                second,
                target,
                self.say(
                    (
                        f"Now I take the {second} to the {target} as well.",
                        f"Back to the {target} with the {second}.",
                    )
                ),
            )

    def _choose_target(self) -> str:
        targets = self._instances([self.spec["target"]])
        if not targets:
            raise ExpertError(f"no {self.spec['target']} in the room of {self.task.id}")
        return self.rng.choice(targets)  # a decision, not wording

    def _transform(self, obj: str, tool_type: str) -> str:
        tool = self._instances([tool_type])[0]
        verb = _VERB_OF_TOOL[tool_type]
        if self.at == tool:
            thought = f"I'm already at the {tool}, so I can {verb} the {obj} right away."
        else:
            self.go(
                self.say(
                    (
                        f"Now I have the {obj}. I need to {verb} it with the {tool}, so I'll go there.",
                        f"Next, the {tool}, to {verb} the {obj}.",
                    )
                ),
                tool,
            )
            thought = self.say(
                (f"I'm at the {tool}. I'll {verb} the {obj} with it.", f"Now I can {verb} the {obj} here.")
            )
        self.act(thought, f"{verb} {obj} with {tool}")
        return _STATE_WORD[verb]

    def _look_under_lamp(self, obj: str) -> None:
        lamp_type = self.spec["lamp"]
        lamp_at, lamp = self._find_lamp(lamp_type)
        if lamp_at is not None and lamp is not None:
            if self.at != lamp_at:
                self.go(
                    f"Now I have the {obj}. I saw a {lamp} at the {lamp_at}, so I'll go there."
                    if lamp_at != lamp
                    else f"Now I have the {obj}. I'll take it to the {lamp} and turn it on.",
                    lamp_at,
                )
            self._use_lamp(lamp, obj)
            return
        order = self._instances(self._ordered_types(list(cat.DESKLAMP_PLACES), 1.2))
        thought = f"Now I have the {obj}. I need a {lamp_type}; desks and side tables often have one."
        previous = None
        for rec in order:
            if rec in self.seen:
                continue
            if previous is not None:
                thought = self.say(
                    (
                        f"No {lamp_type} here. I'll try the {rec}.",
                        f"The {previous} has no lamp. Next, the {rec}.",
                    )
                )
            self.go(thought, rec)
            previous = rec
            found = next((n for n in self.seen.get(rec, []) if receptacle_type(n) == lamp_type), None)
            if found is not None:
                self._use_lamp(found, obj)
                return
        raise ExpertError(f"found no {lamp_type} in {self.task.id}")

    def _find_lamp(self, lamp_type: str) -> tuple[str | None, str | None]:
        for rec in self.receptacles:
            if receptacle_type(rec) == lamp_type:
                return rec, rec  # a floor lamp stands on its own and is listed with the room
        for rec, names in self.seen.items():
            for name in names:
                if receptacle_type(name) == lamp_type:
                    return rec, name
        return None, None

    def _use_lamp(self, lamp: str, obj: str) -> None:
        thought = self.say(
            (
                f"Here is the {lamp}. I'll turn it on and look at the {obj} under it.",
                f"The {lamp} is here. Turning it on lets me examine the {obj}.",
            )
        )
        self.act(thought, f"use {lamp}")


def expert_trajectory(env: Any, task: Task, rng_seed: int | str = 0) -> Trajectory:
    """Play `task` on `env` with the scripted expert and return the episode as a Trajectory.

    `rng_seed` varies the search order and (with the env's `expert_phrasing="varied"`) the
    wording of thoughts; the same seed gives the same trajectory. `env` is any household env (in-process or behind a worker) with `instruction`.
    """
    rng = random.Random(f"household-expert/{task.id}/{rng_seed}")
    phrasing = getattr(env, "expert_phrasing", "varied")
    demo = _Demonstrator(env, task, rng, phrasing)
    demo.run()
    n_steps = sum(1 for t in demo.turns if t.role == AGENT) - 1  # minus the opening "OK"
    return Trajectory(
        id=f"expert/{task.id}",
        turns=demo.turns,
        task_id=task.id,
        env=getattr(env, "name", "household"),
        split=task.split,
        reward=demo.reward,
        success=demo.won,
        metadata={
            "source": "expert",
            "env_version": env.version,
            "expert_seed": rng_seed,
            "expert_phrasing": phrasing,
            "family": task.spec.get("family"),
            "steps": n_steps,
        },
    )
