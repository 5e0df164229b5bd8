"""The household text game: state, commands and their ALFWorld-style observations."""

from __future__ import annotations

import re
from typing import Any

from trajkit.envs.base import Observation, StepResult, Task
from trajkit.envs.household import catalog as cat
from trajkit.envs.household.generate import SPLITS, VERSION, generate_task, get_layout, receptacle_type

NOTHING = "Nothing happened."
DEFAULT_N_TRAIN = 3000
DEFAULT_N_TEST = 150  # per test split

INSTRUCTION = """\
You are an agent working in a household. At the start you are told what the room around you \
contains and what your goal is; reach the goal by giving text commands, one per turn. After each \
command you get an observation that says what happened.

Commands you can give:
1. go to {recep}
2. open {recep}
3. close {recep}
4. take {obj} from {recep}
5. put {obj} in/on {recep}
6. clean {obj} with {recep}
7. heat {obj} with {recep}
8. cool {obj} with {recep}
9. use {lamp}
10. examine {obj} or examine {recep}
11. inventory
12. look
{obj} and {recep} are names written exactly as the observations write them, such as "apple 1" or \
"cabinet 3". You carry at most one object, you can only reach the receptacle you are at, and a \
closed receptacle must be opened before you take from it or put into it. The observation \
"Nothing happened." means the last command was not possible; try something else.

In every turn, first think about the situation and your plan, then give one command, in exactly \
this format:
Thought: <your thinking>
Action: <one command>"""

# The first paragraph and the answer format only: for a small model trained from scratch, which
# learns the commands from demonstrations, the full list is a third of every episode's tokens.
BRIEF_INSTRUCTION = (
    INSTRUCTION.split("\n\n", 1)[0]
    + "\n\nIn every turn, think first, then give one command:\nThought: <your thinking>\nAction: <one command>"
)
INSTRUCTIONS = {"full": INSTRUCTION, "brief": BRIEF_INSTRUCTION}

_NAME = r"([a-z]+ \d+)"
_COMMANDS = [
    ("go", re.compile(rf"go to {_NAME}")),
    ("open", re.compile(rf"open {_NAME}")),
    ("close", re.compile(rf"close {_NAME}")),
    ("take", re.compile(rf"take {_NAME} from {_NAME}")),
    ("put", re.compile(rf"put {_NAME} (?:in|on|in/on) {_NAME}")),
    ("clean", re.compile(rf"clean {_NAME} with {_NAME}")),
    ("heat", re.compile(rf"heat {_NAME} with {_NAME}")),
    ("cool", re.compile(rf"cool {_NAME} with {_NAME}")),
    ("use", re.compile(rf"(?:use|toggle) {_NAME}")),
    ("examine", re.compile(rf"examine {_NAME}")),
    ("inventory", re.compile(r"inventory")),
    ("look", re.compile(r"look")),
]
_TOOL_OF_COMMAND = {"clean": "sinkbasin", "heat": "microwave", "cool": "fridge"}
_STATE_OF_COMMAND = {"clean": "clean", "heat": "hot", "cool": "cool"}
_UNDOES = {"hot": "cool", "cool": "hot"}
_HAND = "<hand>"


def list_things(names: list[str]) -> str:
    """ALFWorld's enumeration: 'nothing', 'a x 1', 'a x 1, and a y 2', 'a x 1, a y 2, and a z 1'."""
    if not names:
        return "nothing"
    items = [f"a {n}" for n in names]
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + ", and " + items[-1]


def normalize_command(action_text: str) -> str:
    return " ".join(action_text.strip().lower().split()).rstrip(".")


class HouseholdEnv:
    """Procedurally generated household rooms with ALFWorld's commands and phrasing.

    `tasks(split)` is generated lazily and cached; `reset` accepts any task whose spec came from
    this world version, so tasks can travel as data (JSON) between processes.
    """

    splits = SPLITS

    name = "household"
    version = VERSION
    instruction = INSTRUCTION

    def __init__(
        self,
        seed: int = 0,
        n_train: int = DEFAULT_N_TRAIN,
        n_test: int = DEFAULT_N_TEST,
        max_steps: int = 30,
        expert_phrasing: str = "varied",
        layout: str = "standard",
        instruction: str = "full",
    ) -> None:
        get_layout(layout)  # fail early on an unknown name
        if instruction not in INSTRUCTIONS:
            raise ValueError(f"instruction must be one of {', '.join(INSTRUCTIONS)}, got {instruction!r}")
        # The first user turn of every episode: "full" lists the commands, "brief" does not.
        self.instruction = INSTRUCTIONS[instruction]
        # Room size and clutter (see `generate.Layout`); part of the version, since it changes tasks.
        self.layout = layout
        self.version = VERSION if layout == "standard" else f"{VERSION}-{layout}"
        if expert_phrasing not in ("varied", "plain"):
            raise ValueError(f"expert_phrasing must be 'varied' or 'plain', got {expert_phrasing!r}")
        # How the scripted expert words its thoughts: "varied" draws among several wordings,
        # "plain" always uses one (a small model learns it in far fewer steps).
        self.expert_phrasing = expert_phrasing
        if n_train < 0 or n_test < 0:
            raise ValueError(f"task counts must be >= 0, got n_train={n_train}, n_test={n_test}")
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.seed = seed
        self.max_steps = max_steps
        self._split_sizes = {"train": n_train, "test_seen": n_test, "test_unseen": n_test}
        self._tasks: dict[str, list[Task]] = {}
        self._task: Task | None = None
        self._done = True

    # ---- tasks -------------------------------------------------------------------------------

    def tasks(self, split: str) -> list[Task]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        if split not in self._tasks:
            self._tasks[split] = [
                generate_task(self.seed, split, i, self.max_steps, self.layout)
                for i in range(self._split_sizes[split])
            ]
        return list(self._tasks[split])

    # ---- episode -----------------------------------------------------------------------------

    def reset(self, task: Task) -> Observation:
        spec = task.spec
        if spec.get("version") != VERSION:
            raise ValueError(
                f"task {task.id} was generated by household version {spec.get('version')!r}; "
                f"this is version {VERSION!r}: regenerate the tasks"
            )
        self._task = task
        self._spec = spec
        self._receptacles = [r["name"] for r in spec["receptacles"]]
        self._loc_number = {r["name"]: r["loc"] for r in spec["receptacles"]}
        self._openable = {r["name"] for r in spec["receptacles"] if r.get("openable")}
        self._fixtures = {r["name"] for r in spec["receptacles"] if r.get("fixture")}
        self._contents: dict[str, list[str]] = {r: [] for r in self._receptacles}
        self._where: dict[str, str] = {}
        for obj in spec["objects"]:
            self._contents[obj["at"]].append(obj["name"])
            self._where[obj["name"]] = obj["at"]
        self._opened: set[str] = set()
        self._states: dict[str, set[str]] = {}
        self._lamps_on: set[str] = set()
        self._at: str | None = None
        self._held: str | None = None
        self._steps = 0
        self._won = False
        self._done = False
        text = f"{self._room_view()}\n\nYour task is to: {spec['goal']}"
        return Observation(text=text, instruction=spec["goal"])

    def step(self, action_text: str) -> StepResult:
        if self._task is None:
            raise RuntimeError("step() before reset(): start an episode with reset(task)")
        if self._done:
            raise RuntimeError(f"episode on {self._task.id} is over; call reset(task) to start another")
        self._steps += 1
        text = self._apply(normalize_command(action_text))
        valid = text is not None
        if not valid:
            text = NOTHING
        elif not self._won and self._goal_reached():
            self._won = True
        truncated = not self._won and self._steps >= self._task.max_steps
        self._done = self._won or truncated
        info = {"won": self._won, "valid": valid, "truncated": truncated, "steps": self._steps}
        return StepResult(Observation(text), 1.0 if self._won else 0.0, self._done, info)

    def close(self) -> None:
        self._task = None
        self._done = True

    # ---- commands ----------------------------------------------------------------------------

    def _apply(self, command: str) -> str | None:
        """The observation for `command`, or None when it is not possible here."""
        for verb, pattern in _COMMANDS:
            match = pattern.fullmatch(command)
            if match:
                return getattr(self, f"_do_{verb}")(*match.groups())
        return None

    def _do_go(self, target: str) -> str | None:
        if target not in self._contents or target == self._at:
            return None
        self._at = target
        return f"You arrive at loc {self._loc_number[target]}. {self._describe(target)}"

    def _do_open(self, target: str) -> str | None:
        if target != self._at or target not in self._openable or target in self._opened:
            return None
        self._opened.add(target)
        return f"You open the {target}. {self._describe(target)}"

    def _do_close(self, target: str) -> str | None:
        if target != self._at or target not in self._opened:
            return None
        self._opened.discard(target)
        return f"You close the {target}."

    def _do_take(self, obj: str, source: str) -> str | None:
        if (
            self._held is not None
            or source != self._at
            or self._where.get(obj) != source
            or not self._reachable(source)
            or receptacle_type(obj) in cat.LAMP_TYPES
        ):
            return None
        self._contents[source].remove(obj)
        self._where[obj] = _HAND
        self._held = obj
        return f"You pick up the {obj} from the {source}."

    def _do_put(self, obj: str, dest: str) -> str | None:
        if (
            obj != self._held
            or dest != self._at
            or dest in self._fixtures
            or dest not in self._contents
            or not self._reachable(dest)
        ):
            return None
        self._contents[dest].append(obj)
        self._where[obj] = dest
        self._held = None
        return f"You put the {obj} in/on the {dest}."

    def _transform(self, verb: str, obj: str, tool: str) -> str | None:
        if obj != self._held or tool != self._at or receptacle_type(tool) != _TOOL_OF_COMMAND[verb]:
            return None
        state = _STATE_OF_COMMAND[verb]
        states = self._states.setdefault(obj, set())
        states.add(state)
        states.discard(_UNDOES.get(state, ""))
        return f"You {verb} the {obj} using the {tool}."

    def _do_clean(self, obj: str, tool: str) -> str | None:
        return self._transform("clean", obj, tool)

    def _do_heat(self, obj: str, tool: str) -> str | None:
        return self._transform("heat", obj, tool)

    def _do_cool(self, obj: str, tool: str) -> str | None:
        return self._transform("cool", obj, tool)

    def _do_use(self, lamp: str) -> str | None:
        if receptacle_type(lamp) not in cat.LAMP_TYPES or self._at is None:
            return None
        here = lamp == self._at or (lamp in self._where and self._where[lamp] == self._at)
        if not here:
            return None
        if lamp in self._lamps_on:
            self._lamps_on.discard(lamp)
            return f"You turn off the {lamp}."
        self._lamps_on.add(lamp)
        return f"You turn on the {lamp}."

    def _do_examine(self, name: str) -> str | None:
        if name == self._at:
            return self._describe(name)
        visible = name == self._held or (
            self._at is not None and self._where.get(name) == self._at and self._reachable(self._at)
        )
        if not visible:
            return None
        if receptacle_type(name) in cat.LAMP_TYPES:
            return f"The {name} is {'on' if name in self._lamps_on else 'off'}."
        states = sorted(self._states.get(name, ()))
        if not states:
            return f"There's nothing special about {name}."
        return f"The {name} is {' and '.join(states)}."

    def _do_inventory(self) -> str:
        if self._held is None:
            return "You are not carrying anything."
        return f"You are carrying: a {self._held}."

    def _do_look(self) -> str:
        if self._at is None:
            return self._room_view()
        return f"You are facing the {self._at}. {self._describe(self._at)}"

    # ---- views and goal ----------------------------------------------------------------------

    def _reachable(self, receptacle: str) -> bool:
        return receptacle not in self._openable or receptacle in self._opened

    def _room_view(self) -> str:
        return (
            "You are in the middle of a room. Looking quickly around you, you see "
            f"{list_things(self._receptacles)}."
        )

    def _describe(self, receptacle: str) -> str:
        if receptacle in self._fixtures:
            return f"The {receptacle} is {'on' if receptacle in self._lamps_on else 'off'}."
        if receptacle in self._openable:
            if receptacle not in self._opened:
                return f"The {receptacle} is closed."
            return f"The {receptacle} is open. In it, you see {list_things(self._contents[receptacle])}."
        return f"On the {receptacle}, you see {list_things(self._contents[receptacle])}."

    def _goal_reached(self) -> bool:
        spec = self._spec
        wanted = spec["object"]
        family = spec["family"]
        if family == "look_at_obj_in_light":
            if self._held is None or receptacle_type(self._held) != wanted:
                return False
            return any(
                receptacle_type(lamp) == spec["lamp"]
                and (lamp == self._at or self._where.get(lamp) == self._at)
                for lamp in self._lamps_on
            )
        state = cat.STATE_OF_FAMILY.get(family)
        needed = 2 if family == "pick_two_obj_and_place" else 1
        for rec, objs in self._contents.items():
            if receptacle_type(rec) != spec["target"]:
                continue
            count = sum(
                1
                for o in objs
                if receptacle_type(o) == wanted and (state is None or state in self._states.get(o, ()))
            )
            if count >= needed:
                return True
        return False

    # ---- introspection for tests and tools ---------------------------------------------------

    @property
    def current_task(self) -> Task | None:
        return self._task

    def state_summary(self) -> dict[str, Any]:
        """A snapshot of the episode state (for debugging and tests; agents never see it)."""
        return {
            "at": self._at,
            "held": self._held,
            "opened": sorted(self._opened),
            "lamps_on": sorted(self._lamps_on),
            "states": {k: sorted(v) for k, v in self._states.items() if v},
            "steps": self._steps,
            "won": self._won,
            "done": self._done,
        }
