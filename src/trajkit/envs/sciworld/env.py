"""ScienceWorld behind trajkit's env interface, one bounded-heap JVM per env instance.

Tasks are `[task_name, variation]` pairs. With ETO's split files (a folder given as `data_dir`, or
the `TRAJKIT_ETO_DATA` environment variable) the splits are ETO's: train (1483 pairs), test_seen
(194, ETO's "dev"; 54 of them also occur in train) and test_unseen (211, ETO's "test"), with ETO's
per-task step budgets. Without that folder the splits are ScienceWorld's own train / dev / test
variation lists (mapped to train / test_seen / test_unseen) with a budget of `DEFAULT_MAX_STEPS`;
listing them asks the simulator how many variations each task has, so that mode starts the JVM.

Episodes follow ETO: the task is loaded with the "easy" simplifications, one "look around" is taken
(as the package's own reset does), and the first observation is the task description. The reward
is the best score reached so far divided by 100; a negative score (the simulator's failure signal,
-100) ends the episode and counts as 0. Stepping calls the simulator's own step and score methods
directly: the package's `step()` also lists every valid action each time, which is ~5x slower.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import weakref
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from trajkit.envs.base import Observation, StepResult, Task

SPLITS = ("train", "test_seen", "test_unseen")
DATA_ENV_VAR = "TRAJKIT_ETO_DATA"
PROMPTS_ENV_VAR = "TRAJKIT_ETO_PROMPTS"
# Budget per episode when no ETO budget file is given: the package's own default step limit.
DEFAULT_MAX_STEPS = 100
# File names as shipped in trajkit's reference data, then as in ETO's repo (eval_agent/data/sciworld).
SPLIT_FILES = {
    "train": ("sciworld_train.json", "train_indices.json"),
    "test_seen": ("sciworld_test_seen.json", "dev_indices.json"),
    "test_unseen": ("sciworld_test_unseen.json", "test_indices.json"),
}
BUDGET_FILES = ("sciworld_max_steps.json", "max_steps.json")
TASK_ID_FILES = ("sciworld_taskname2id.json", "taskname2id.json")
# In a prompts folder as trajkit's reference data has them, or as in ETO's repo (eval_agent/prompt).
INSTRUCTION_FILES = ("sciworld_inst.txt", "instructions/sciworld_inst.txt")
ICL_FILES = ("sciworld_icl.json", "icl_examples/sciworld_icl.json")
# ScienceWorld's own splits under trajkit's split names (used without ETO files).
PACKAGE_SPLITS = {"train": "train", "test_seen": "dev", "test_unseen": "test"}

INVALID_ACTION_TEXT = "No known action matches that input."
TASK_DESCRIPTION_PREFIX = "Task Description:"
_HEAP = re.compile(r"[1-9][0-9]*[kKmMgG]?")
_SHUTDOWN_GRACE_S = 5.0

INSTRUCTION = """\
You are an agent carrying out a science experiment in a simulated world.
The world has these rooms: kitchen, foundry, workshop, bathroom, outside, living room, bedroom, \
greenhouse, art studio, hallway.
Explore it, find the objects the experiment needs and use them to complete the task.
Teleporting to any room takes one step. Every container is already open.

Actions (OBJ is an object, LOC a room):
open OBJ / close OBJ: open or close a container
activate OBJ / deactivate OBJ: switch a device on or off
connect OBJ to OBJ / disconnect OBJ: wire or unwire electrical components
use OBJ [on OBJ]: use a device or item
look around: describe the room you are in
examine OBJ: describe an object in detail
look at OBJ: list what a container holds
read OBJ: read a note or book
move OBJ to OBJ: put an object into a container
pick up OBJ: take an object into your inventory
pour OBJ into OBJ: pour a liquid into a container
mix OBJ: mix the contents of a container chemically
teleport to LOC: go to a room
focus on OBJ: declare the object the task is about
wait: let 10 steps pass
wait1: let one step pass

Answer every turn as:
Thought: <your reasoning>
Action: <one action>"""


def availability() -> str | None:
    """None when ScienceWorld can run here, else why not."""
    import importlib.util

    if importlib.util.find_spec("scienceworld") is None:
        return "package 'scienceworld' not installed (pip install 'trajkit[sciworld]')"
    if shutil.which("java") is None:
        return "no Java on PATH (ScienceWorld needs Java 1.8+)"
    return None


def installed_version() -> str:
    try:
        return f"scienceworld=={package_version('scienceworld')}"
    except PackageNotFoundError:
        return "scienceworld (not installed)"


def simulator_task_name(name: str) -> str:
    """ETO's task names ("task-1-boil", "task-9-mendellian-genetics-(known-plant)") as the
    simulator of scienceworld 1.2 spells them ("boil", "mendelian-genetics-known-plant")."""
    name = re.sub(r"^task-[0-9ab]+-", "", name.strip())
    return name.replace("(", "").replace(")", "").replace("mendellian", "mendelian")


def package_variation_sets(n_variations: int) -> tuple[list[int], list[int], list[int]]:
    """ScienceWorld's train/dev/test variations of a task with `n_variations` variations: halves,
    then quarters, with fixed assignments for tasks with fewer than 5 (as the simulator does)."""
    small = {
        0: ([], [], []),
        1: ([0], [], [0]),
        2: ([0], [], [1]),
        3: ([0], [1], [2]),
        4: ([0, 1], [2], [3]),
    }
    if n_variations in small:
        train, dev, test = small[n_variations]
        return list(train), list(dev), list(test)
    size = n_variations // 4
    groups = [list(range(i, min(i + size, n_variations))) for i in range(0, n_variations, size)]
    test = groups[3] + (groups[4] if len(groups) > 4 else [])
    return groups[0] + groups[1], groups[2], test


def _first_existing(folder: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read JSON: {err}") from None


def read_split_file(path: Path) -> list[tuple[str, int]]:
    """ETO's `[[task_name, variation], ...]` list, checked record by record."""
    data = _load_json(path)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of [task_name, variation] pairs")
    pairs = []
    for i, item in enumerate(data):
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not isinstance(item[0], str)
            or not item[0]
            or isinstance(item[1], bool)
            or not isinstance(item[1], int)
            or item[1] < 0
        ):
            raise ValueError(f"{path}: record {i} must be [task_name, variation >= 0], got {item!r}")
        pairs.append((item[0], item[1]))
    return pairs


def read_name_table(path: Path, what: str, minimum: int) -> dict[str, int]:
    data = _load_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of task name -> {what}")
    for key, value in data.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{path}: {what} of {key!r} must be an integer >= {minimum}, got {value!r}")
    return dict(data)


class _Simulator:
    """One JVM running the ScienceWorld jar, reached over a py4j gateway bound to 127.0.0.1."""

    def __init__(self, max_heap: str | None, java_options: list[str]) -> None:
        from py4j.java_gateway import GatewayParameters, JavaGateway, launch_gateway
        from scienceworld.constants import BASEPATH, JAR_PATH

        options = ([f"-Xmx{max_heap}"] if max_heap else []) + list(java_options)
        try:
            # die_on_exit: the JVM quits when our end of its stdin closes, even if we are killed.
            port, proc = launch_gateway(
                classpath=JAR_PATH, die_on_exit=True, cwd=BASEPATH, javaopts=options, return_proc=True
            )
        except (OSError, ValueError) as err:
            raise RuntimeError(
                f"the ScienceWorld JVM did not start (java options {options}): {err}"
            ) from None
        self.process: subprocess.Popen = proc
        self.gateway = JavaGateway(
            gateway_parameters=GatewayParameters(port=port, auto_field=True), java_process=proc
        )
        # Runs on close(), when the env is garbage-collected, or at interpreter exit.
        self._finalizer = weakref.finalize(self, _stop_process, proc, self.gateway)
        self.server = self.gateway.jvm.scienceworld.runtime.pythonapi.PythonInterface()
        self._variations: dict[str, int] | None = None

    def variations(self) -> dict[str, int]:
        """Task name (simulator spelling) -> number of variations, asked once per JVM."""
        if self._variations is None:
            self._variations = {
                str(n): int(self.server.getTaskMaxVariations(n)) for n in self.server.getTaskNames()
            }
        return self._variations

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        self._finalizer()


def _stop_process(proc: subprocess.Popen, gateway: Any) -> None:
    """Close the gateway, let the JVM exit on end of stdin, kill it if it lingers; always reap it."""
    if proc.poll() is None:
        try:
            gateway.shutdown()
        except Exception:
            pass  # it died meanwhile
    client = getattr(gateway, "_gateway_client", None)
    if client is not None:
        # Otherwise py4j's object finalizers keep calling a dead JVM and log connection errors.
        client.is_connected = False
    try:
        if proc.stdin is not None:
            proc.stdin.close()
    except OSError:
        pass
    try:
        proc.wait(timeout=_SHUTDOWN_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class ScienceWorldEnv:
    """ScienceWorld tasks under ETO's splits, prompts and scoring.

    `data_dir`: a folder with ETO's split files and step budgets (default: `$TRAJKIT_ETO_DATA`;
    neither: ScienceWorld's own variation splits). `prompts_dir`: a folder with ETO's
    `sciworld_inst.txt` / `sciworld_icl.json` (default: `$TRAJKIT_ETO_PROMPTS`; neither: a short
    built-in instruction and no in-context episode). `max_heap`: the JVM's -Xmx (None: Java's
    default, about a quarter of the machine's memory). `task_names`: keep only tasks of these
    types in every split (ETO or simulator spelling). `show_look`: append the initial room
    description to the first observation (ETO shows the task description only).
    """

    name = "sciworld"
    splits = SPLITS

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        prompts_dir: str | os.PathLike[str] | None = None,
        max_heap: str | None = "1g",
        simplification: str = "easy",
        task_names: list[str] | None = None,
        show_look: bool = False,
        java_options: list[str] | None = None,
    ) -> None:
        if max_heap is not None and not _HEAP.fullmatch(str(max_heap)):
            raise ValueError(f"max_heap must look like 512m or 1g (or be null), got {max_heap!r}")
        self.max_heap = None if max_heap is None else str(max_heap)
        self.simplification = simplification
        self.show_look = show_look
        self.java_options = list(java_options or [])
        self.version = installed_version()
        data = data_dir if data_dir is not None else os.environ.get(DATA_ENV_VAR) or None
        self.data_dir = Path(data) if data is not None else None
        prompts = prompts_dir if prompts_dir is not None else os.environ.get(PROMPTS_ENV_VAR) or None
        self.prompts_dir = Path(prompts) if prompts is not None else None
        self._task_filter = None if task_names is None else {simulator_task_name(n) for n in task_names}
        if self._task_filter is not None and not self._task_filter:
            raise ValueError("task_names is empty; give null for every task type")
        self.instruction = self._read_instruction()
        self._split_files: dict[str, Path] = {}
        self._budgets: dict[str, int] | None = None
        self._task_ids: dict[str, int] = {}
        if self.data_dir is not None:
            self._find_data_files(self.data_dir)
        self._tasks: dict[str, list[Task]] = {}
        self._sim: _Simulator | None = None
        self._task: Task | None = None
        self._done = True
        self._steps = 0
        self._best = 0
        self._budget: int | None = None

    # ---- data files --------------------------------------------------------------------------

    def _read_instruction(self) -> str:
        if self.prompts_dir is None:
            return INSTRUCTION
        if not self.prompts_dir.is_dir():
            raise FileNotFoundError(f"{self.prompts_dir}: prompts folder does not exist")
        path = _first_existing(self.prompts_dir, INSTRUCTION_FILES)
        if path is None:
            raise FileNotFoundError(
                f"{self.prompts_dir}: no ScienceWorld instruction (expected {' or '.join(INSTRUCTION_FILES)})"
            )
        return path.read_text(encoding="utf-8").rstrip()

    def _find_data_files(self, given: Path) -> None:
        if not given.is_dir():
            raise FileNotFoundError(f"{given}: ScienceWorld data folder does not exist")
        # The folder itself, or a parent holding it as splits/ (trajkit's reference data) or
        # sciworld/ (ETO's eval_agent/data).
        folder = next(
            (
                d
                for d in (given, given / "splits", given / "sciworld")
                if _first_existing(d, SPLIT_FILES["train"])
            ),
            given,
        )
        for split, names in SPLIT_FILES.items():
            path = _first_existing(folder, names)
            if path is None:
                raise FileNotFoundError(f"{folder}: no {split} split file (expected {' or '.join(names)})")
            self._split_files[split] = path
        budgets = _first_existing(folder, BUDGET_FILES)
        if budgets is None:
            raise FileNotFoundError(f"{folder}: no step budget file (expected {' or '.join(BUDGET_FILES)})")
        self._budgets = read_name_table(budgets, "step budget", 1)
        self._budget_file = budgets
        ids = _first_existing(folder, TASK_ID_FILES)
        if ids is not None:
            self._task_ids = read_name_table(ids, "task id", 0)

    def icl_turns(self, task: Task | None = None) -> list:
        """ETO's one in-context episode (task, then agent/observation turns), or [] without one."""
        path = None if self.prompts_dir is None else _first_existing(self.prompts_dir, ICL_FILES)
        if path is None:
            return []
        from trajkit.data.io import load_trajectories

        episodes = load_trajectories(path, format="eto")
        return list(episodes[0].turns) if episodes else []

    # ---- tasks -------------------------------------------------------------------------------

    def tasks(self, split: str) -> list[Task]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        if split not in self._tasks:
            if self._split_files:
                pairs = read_split_file(self._split_files[split])
            else:
                pairs = self._package_pairs(split)
            tasks = [self._make_task(name, variation, split) for name, variation in pairs]
            if self._task_filter is not None:
                tasks = [t for t in tasks if simulator_task_name(t.spec["task_name"]) in self._task_filter]
            self._tasks[split] = tasks
        return list(self._tasks[split])

    def _make_task(self, task_name: str, variation: int, split: str) -> Task:
        if self._budgets is None:
            budget = DEFAULT_MAX_STEPS
        elif task_name in self._budgets:
            budget = self._budgets[task_name]
        else:
            raise ValueError(f"{self._budget_file}: no step budget for task {task_name!r} ({split} split)")
        number = self._task_ids.get(task_name)
        task_id = f"{number if number is not None else task_name}_{variation}"
        return Task(task_id, split, {"task_name": task_name, "variation": variation}, budget)

    def _package_pairs(self, split: str) -> list[tuple[str, int]]:
        which = ("train", "dev", "test").index(PACKAGE_SPLITS[split])
        pairs = []
        for name, count in self._simulator().variations().items():
            pairs += [(name, v) for v in package_variation_sets(count)[which]]
        return pairs

    # ---- simulator ---------------------------------------------------------------------------

    def _simulator(self) -> _Simulator:
        if self._sim is not None and not self._sim.alive:
            self._sim.close()  # it died (e.g. out of memory): start a fresh one
            self._sim = None
        if self._sim is None:
            self._sim = _Simulator(self.max_heap, self.java_options)
        return self._sim

    @property
    def java_pid(self) -> int | None:
        """The JVM's process id while it runs (None before the first reset and after close)."""
        return self._sim.process.pid if self._sim is not None and self._sim.alive else None

    def _load(self, task: Task, gold: bool) -> Any:
        for key in ("task_name", "variation"):
            if key not in task.spec:
                raise ValueError(f"task {task.id}: spec has no {key!r} (not a sciworld task?)")
        sim = self._simulator()
        server = sim.server
        name = simulator_task_name(str(task.spec["task_name"]))
        n_variations = sim.variations().get(name)
        if n_variations is None:
            raise ValueError(f"task {task.id}: ScienceWorld has no task {task.spec['task_name']!r}")
        variation = int(task.spec["variation"])
        if not 0 <= variation < n_variations:
            raise ValueError(f"task {task.id}: variation {variation} out of range (0..{n_variations - 1})")
        error = server.load(name, variation, self.simplification, gold)
        if error:
            raise RuntimeError(f"task {task.id}: ScienceWorld could not load it: {error}")
        return server

    def reset(self, task: Task, enforce_budget: bool = True) -> Observation:
        """Start an episode on `task`. `enforce_budget=False` lets it run past `task.max_steps`
        (for replaying expert paths longer than ETO's budgets)."""
        return self._reset(task, gold=False, enforce_budget=enforce_budget)[0]

    def reset_with_gold(self, task: Task, enforce_budget: bool = True) -> tuple[Observation, list[str]]:
        """Start an episode like `reset` and also return the simulator's gold action sequence
        (computing it takes up to ~10 s on the longest tasks)."""
        return self._reset(task, gold=True, enforce_budget=enforce_budget)

    def _reset(self, task: Task, gold: bool, enforce_budget: bool) -> tuple[Observation, list[str]]:
        self._task, self._done = None, True
        self._budget = task.max_steps if enforce_budget else None
        server = self._load(task, gold)
        gold_actions = [str(a) for a in server.getGoldActionSequence()] if gold else []
        # The simulator keeps the last episode's score until the first step; the package's reset
        # takes this same "look around" step, so ETO's episodes start after it too.
        look = str(server.step("look around"))
        description = str(server.getTaskDescription()).strip()
        if description.startswith(TASK_DESCRIPTION_PREFIX):
            description = description[len(TASK_DESCRIPTION_PREFIX) :].strip()
        self._task, self._done = task, False
        self._steps, self._best = 0, max(0, self._score(server))
        text = f"{description}\n\n{look.strip()}" if self.show_look else description
        return Observation(text=text, instruction=description), gold_actions

    @staticmethod
    def _score(server: Any) -> int:
        return int(round(100 * float(server.getScore())))

    def step(self, action_text: str) -> StepResult:
        if self._task is None:
            raise RuntimeError("step() before reset(): start an episode with reset(task)")
        if self._done:
            raise RuntimeError(f"episode on {self._task.id} is over; call reset(task) to start another")
        assert self._sim is not None
        server = self._sim.server
        action = action_text.strip()
        try:
            text = str(server.step(action))
            score = self._score(server)
            completed = bool(server.getCompleted())
        except Exception as err:  # py4j errors: the JVM died or stopped answering
            self._done = True
            alive = "running" if self._sim.alive else f"gone (exit code {self._sim.process.poll()})"
            raise RuntimeError(
                f"ScienceWorld failed on {self._task.id} at step {self._steps + 1} (JVM {alive}): {err}; "
                "the next reset starts a fresh JVM if needed"
            ) from None
        self._steps += 1
        self._best = max(self._best, score)
        won = score >= 100
        failed = score < 0
        over = self._budget is not None and self._steps >= self._budget
        truncated = not (won or completed or failed) and over
        self._done = won or completed or failed or truncated
        info = {
            "won": won,
            "valid": not text.startswith(INVALID_ACTION_TEXT),
            "score": score,
            "failed": failed,
            "truncated": truncated,
            "steps": self._steps,
        }
        return StepResult(Observation(text), self._best / 100.0, self._done, info)

    def valid_actions(self) -> list[str]:
        """Every valid action-object combination in the current state (slow: ~0.1 s)."""
        if self._task is None or self._sim is None:
            raise RuntimeError("valid_actions() needs an episode: call reset(task) first")
        return [str(a) for a in self._sim.server.getValidActionObjectCombinations()]

    def close(self) -> None:
        """Stop the JVM (and reap it). The env can be reset again later: a new JVM starts then."""
        sim, self._sim = self._sim, None
        self._task, self._done = None, True
        if sim is not None:
            sim.close()

    def __enter__(self) -> ScienceWorldEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
