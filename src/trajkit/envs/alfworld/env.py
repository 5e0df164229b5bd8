"""ALFWorld's text games (TextWorld + PDDL) behind trajkit's env interface, as ETO plays them.

One env plays one game at a time on one TextWorld PDDL engine, built on the first `reset` and
reused (`load` per game), with ALFWorld's name demangler so objects read "book 2", "sidetable 1".
No `traj_data.json` is needed: the games are driven directly, not through ALFWorld's batch loader.

What the agent sees follows ETO's evaluation code: the first observation is the game's intro
without TextWorld's banner (the room, then "Your task is to: ..."), "You arrive at loc N. " is cut
from movement feedback, and an impossible command reads "Nothing happened." (the instruction's
wording; the engine itself says "Nothing happens."). The reward is 1 once the goal holds, else 0.
"""

from __future__ import annotations

import json
import os
import re
import threading
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from trajkit.envs.alfworld.games import (
    GAME_FILE,
    SPLIT_DIRS,
    canonical_split,
    list_games,
    parse_task_dir,
    resolve_games_root,
    task_type_names,
)
from trajkit.envs.base import Observation, StepResult, Task

SPLITS = ("train", "test_seen", "test_unseen")
DATA_ENV_VAR = "ALFWORLD_DATA"
PROMPTS_ENV_VAR = "TRAJKIT_ETO_PROMPTS"
INSTRUCTION_FILE = "alfworld_inst.txt"
ICL_FILE = "alfworld_icl.json"
# Where a prompts folder may keep them: flat (trajkit's reference data) or as in ETO's repo
# (eval_agent/prompt/instructions/, eval_agent/prompt/icl_examples/).
_PROMPT_SUBDIRS = {INSTRUCTION_FILE: ("", "instructions"), ICL_FILE: ("", "icl_examples")}
# ETO's step budget for ALFWorld (its task config, eval_agent/configs/task/alfworld.json).
DEFAULT_MAX_STEPS = 40
NOTHING = "Nothing happened."
ENGINE_NOTHING = "Nothing happens."
_ARRIVE = re.compile(r"^You arrive at loc \d+\. ")
# TextWorld's PDDL and grammar parsers are module-level objects that break when two threads use
# them at once, so envs in one process (a rollout's thread pool) take turns on the engine. Steps
# are CPU-bound Python either way; worker processes (env.workers) run in parallel.
_ENGINE_LOCK = threading.RLock()
# ETO's in-context files keyed by task type use these prefixes of ALFWorld's type names.
_ICL_KEYS = {
    "pick_and_place": "put",
    "pick_clean_then_place": "clean",
    "pick_heat_then_place": "heat",
    "pick_cool_then_place": "cool",
    "look_at_obj": "examine",
    "pick_two_obj": "puttwo",
}

INSTRUCTION = """\
You are an agent in a household. At the start you are told what the room around you contains and \
what your goal is; reach the goal by giving text commands, one per turn. After each command you \
get an observation that says what happened.

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
{obj} and {recep} are names written exactly as the observations write them, such as "apple 1" or \
"cabinet 3". The observation "Nothing happened." means the last command was not possible; try \
something else.

In every turn, first think about the situation and your plan, then give one command, in exactly \
this format:
Thought: <your thinking>
Action: <your command>"""


def installed_version() -> str:
    try:
        return f"alfworld=={package_version('alfworld')}"
    except PackageNotFoundError:
        return "alfworld (not installed)"


def package_reason() -> str | None:
    """None when alfworld and its engine (textworld, fast_downward) import, else how to install them."""
    import importlib.util

    missing = [m for m in ("alfworld", "textworld", "fast_downward") if importlib.util.find_spec(m) is None]
    if missing:
        return (
            f"package {missing[0]!r} not installed (pip install 'trajkit[alfworld]'); then give the game "
            f"files: set {DATA_ENV_VAR} or pass --data-dir (alfworld-download fetches them)"
        )
    return None


def availability(data_dir: str | os.PathLike[str] | None = None, **_: object) -> str | None:
    """None when the alfworld package imports and a games folder is given, else what is missing.

    `make_env` passes the env's `data_dir` here; without one, `$ALFWORLD_DATA` is the games folder
    (so `trajkit env list` says "installed; needs game files" until that variable is set).
    """
    reason = package_reason()
    if reason is not None:
        return reason
    data = data_dir if data_dir is not None else os.environ.get(DATA_ENV_VAR) or None
    if data is None:
        return (
            f"installed; needs game files: set {DATA_ENV_VAR} or pass --data-dir "
            "(alfworld-download fetches them)"
        )
    try:
        resolve_games_root(data)
    except ValueError as err:
        return str(err)
    return None


def first_observation(intro: str) -> str:
    """The game's intro as ETO shows it: TextWorld's banner dropped, paragraphs joined by newlines."""
    parts = intro.split("\n\n")
    return "\n".join(parts[1:]).strip() if len(parts) > 1 else intro.strip()


def observation_text(feedback: str) -> str:
    """Step feedback as ETO shows it."""
    text = feedback.strip()
    if text == ENGINE_NOTHING:
        return NOTHING
    return _ARRIVE.sub("", text, count=1)


class ALFWorldEnv:
    """ALFWorld's text games under ETO's splits, prompts and scoring.

    `data_dir`: the games folder (default `$ALFWORLD_DATA`), laid out as alfworld-download makes
    it (`json_2.1.1/{train,valid_seen,valid_unseen}/<task>/<trial>/game.tw-pddl`; the folder
    holding train/ etc. directly works too). Splits: train, test_seen (ALFWorld's valid_seen, ETO's
    "dev") and test_unseen (valid_unseen, ETO's "test"). `prompts_dir`: a folder with ETO's
    `alfworld_inst.txt` / `alfworld_icl.json` (default `$TRAJKIT_ETO_PROMPTS`; neither: a built-in
    instruction and no in-context episode). `instruction`: overrides both (e.g. the first user turn
    of the expert data the policy was trained on). `task_types`: keep only these ALFWorld task types
    (names or ALFWorld's numbers 1-6), as ALFWorld's `env.task_types` setting does.

    Tasks are listed round-robin over task types (each type in path order), so the first n tasks
    of a split cover the types evenly. A task's id is `<ALFWorld split>/<task dir>/<trial dir>`;
    its spec `{"game": "<task dir>/<trial dir>", "task_name": <type>}` names the game, so the same
    game in two splits is the same task.
    """

    name = "alfworld"
    splits = SPLITS

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        prompts_dir: str | os.PathLike[str] | None = None,
        instruction: str | None = None,
        max_steps: int = DEFAULT_MAX_STEPS,
        task_types: list[str | int] | None = None,
    ) -> None:
        from trajkit.envs.registry import EnvUnavailableError

        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.max_steps = max_steps
        self.version = installed_version()
        data = data_dir if data_dir is not None else os.environ.get(DATA_ENV_VAR) or None
        if data is None:
            raise EnvUnavailableError(
                f"alfworld needs its game files: set {DATA_ENV_VAR} or pass --data-dir "
                "(env.kwargs.data_dir in a run config); alfworld-download fetches them"
            )
        try:
            self.games_root = resolve_games_root(data)
        except ValueError as err:
            raise EnvUnavailableError(str(err)) from None
        self.data_dir = Path(data)
        prompts = prompts_dir if prompts_dir is not None else os.environ.get(PROMPTS_ENV_VAR) or None
        self.prompts_dir = Path(prompts) if prompts is not None else None
        self._types = task_type_names(task_types)
        self.instruction = self._read_instruction()
        if instruction is not None:
            self.set_instruction(instruction)
        self._tasks: dict[str, list[Task]] = {}
        self._by_trial: dict[str, dict[str, list[Task]]] = {}
        self._tw: Any = None  # the TextWorld engine, built on the first reset
        self._state: Any = None
        self._task: Task | None = None
        self._done = True
        self._won = False
        self._steps = 0

    # ---- prompts -----------------------------------------------------------------------------

    def _prompt_file(self, name: str) -> Path | None:
        if self.prompts_dir is None:
            return None
        for sub in _PROMPT_SUBDIRS[name]:
            path = self.prompts_dir / sub / name
            if path.is_file():
                return path
        return None

    def _read_instruction(self) -> str:
        if self.prompts_dir is None:
            return INSTRUCTION
        path = self._prompt_file(INSTRUCTION_FILE)
        if path is None:
            raise FileNotFoundError(
                f"{self.prompts_dir}: no {INSTRUCTION_FILE} (nor instructions/{INSTRUCTION_FILE}) in prompts_dir"
            )
        return path.read_text(encoding="utf-8").rstrip()

    def set_instruction(self, text: str) -> None:
        """Show `text` as the first user turn from now on (e.g. the expert data's own)."""
        if not text.strip():
            raise ValueError("the instruction is empty")
        self.instruction = text

    def icl_turns(self, task: Task | None = None) -> list:
        """ETO's in-context episode as turns (task, then agent/observation turns), or [] without one.

        ETO's file holds one episode used for every game; a file keyed by task type (as later
        ALFWorld prompt sets have) gives the episode for `task`'s type (default: the current one).
        """
        path = self._prompt_file(ICL_FILE)
        if path is None:
            return []
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
        if isinstance(data, dict):
            task = task or self._task
            if task is None:
                raise ValueError(f"{path} is keyed by task type; pass the task whose episode is wanted")
            task_type = task.spec.get("task_name", "")
            key = next((k for p, k in _ICL_KEYS.items() if task_type.startswith(p)), None)
            episodes = data.get(key) if key is not None else None
            if not episodes:
                return []
        else:
            episodes = data
        if not isinstance(episodes, list) or not episodes:
            return []
        episode = episodes[0]
        if isinstance(episode, dict):  # a bare list of messages is one episode
            episode = episodes
        return _icl_episode_turns(episode, path)

    # ---- tasks -------------------------------------------------------------------------------

    def tasks(self, split: str) -> list[Task]:
        split = canonical_split(split)
        if split not in self._tasks:
            alf_split = SPLIT_DIRS[split]
            by_type: dict[str, list[Task]] = {}
            for task_dir, trial_dir in list_games(self.games_root, split):
                task_type = parse_task_dir(task_dir).task_type
                if self._types is not None and task_type not in self._types:
                    continue
                game = f"{task_dir}/{trial_dir}"
                by_type.setdefault(task_type, []).append(
                    Task(
                        id=f"{alf_split}/{game}",
                        split=split,
                        spec={"game": game, "task_name": task_type},
                        max_steps=self.max_steps,
                    )
                )
            self._tasks[split] = _round_robin([by_type[t] for t in sorted(by_type)])
        return list(self._tasks[split])

    def task_for_game_file(self, game_file: str, split: str | None = None) -> Task | None:
        """The task a game path names (as ETO's records write it: `.../<task>/<trial>[/game.tw-pddl]`
        or just the trial directory), looked up in `split` or else in every split, train first.
        """
        parts = [p for p in Path(str(game_file)).parts if p not in ("", "/")]
        if parts and parts[-1] == GAME_FILE:
            parts = parts[:-1]
        if not parts:
            return None
        trial = parts[-1]
        task_dir = parts[-2] if len(parts) >= 2 else None
        for s in [canonical_split(split)] if split else list(SPLITS):
            if s not in self._by_trial:
                index: dict[str, list[Task]] = {}
                for task in self.tasks(s):
                    index.setdefault(task.spec["game"].split("/")[1], []).append(task)
                self._by_trial[s] = index
            for task in self._by_trial[s].get(trial, []):
                if task_dir is None or task.spec["game"].split("/")[0] == task_dir:
                    return task
        return None

    def expert_task_id(self, trajectory: Any) -> str | None:
        """The train task id an expert trajectory belongs to: its own `task_id` when that is a train
        task, else the task its `metadata["game_file"]` names (ETO's ALFWorld records carry one).
        """
        if trajectory.task_id in {t.id for t in self.tasks("train")}:
            return trajectory.task_id
        game_file = (trajectory.metadata or {}).get("game_file")
        if not isinstance(game_file, str):
            return None
        task = self.task_for_game_file(game_file, "train")
        return task.id if task is not None else None

    def game_path(self, task: Task) -> Path:
        game = task.spec.get("game")
        if not isinstance(game, str) or game.count("/") != 1 or ".." in game.split("/"):
            raise ValueError(f"task {task.id}: spec.game must be '<task dir>/<trial dir>', got {game!r}")
        path = self.games_root / SPLIT_DIRS[canonical_split(task.split)] / game / GAME_FILE
        if not path.is_file():
            raise FileNotFoundError(f"task {task.id}: no game file at {path}")
        return path

    # ---- episode -----------------------------------------------------------------------------

    def _engine(self, path: Path) -> Any:
        if self._tw is None:
            reason = package_reason()
            if reason is not None:
                raise ImportError(reason)
            import textworld
            from alfworld.agents.environment.alfred_tw_env import AlfredDemangler

            infos = textworld.EnvInfos(won=True, admissible_commands=True)
            self._tw = textworld.start(
                str(path), request_infos=infos, wrappers=[AlfredDemangler(shuffle=False)]
            )
        else:
            self._tw.load(str(path))
        return self._tw

    def reset(self, task: Task) -> Observation:
        path = self.game_path(task)
        self._task = None
        with _ENGINE_LOCK:
            self._state = self._engine(path).reset()
        self._task = task
        self._done = False
        self._won = False
        self._steps = 0
        text = first_observation(self._state.feedback)
        goal = text.rsplit("Your task is to: ", 1)[-1] if "Your task is to: " in text else None
        return Observation(text=text, instruction=goal)

    def step(self, action_text: str) -> StepResult:
        if self._task is None:
            raise RuntimeError("step() before reset(): start an episode with reset(task)")
        if self._done:
            raise RuntimeError(f"episode on {self._task.id} is over; call reset(task) to start another")
        command = action_text.strip()
        valid = command in (self._state["admissible_commands"] or [])
        with _ENGINE_LOCK:
            self._state, _, _ = self._tw.step(command)
        self._steps += 1
        self._won = bool(self._state["won"])
        truncated = not self._won and self._steps >= self._task.max_steps
        self._done = self._won or truncated
        info = {"won": self._won, "valid": valid, "truncated": truncated, "steps": self._steps}
        text = observation_text(self._state.feedback)
        return StepResult(Observation(text), 1.0 if self._won else 0.0, self._done, info)

    def expert_plan(self) -> list[str]:
        """ALFWorld's PDDL planner's commands from the current state to the goal ([] if none).

        This is the plan ALFWorld's "planner" expert gives. Planning can take a minute on the
        larger kitchen games, so it runs only when asked.
        """
        if self._task is None or self._tw is None:
            raise RuntimeError("expert_plan() before reset(): start an episode with reset(task)")
        engine = self._tw.unwrapped
        try:
            state, infos = engine._pddl_state, engine._entity_infos
        except AttributeError:
            raise RuntimeError(
                f"this textworld version's PDDL engine has no planner state ({type(engine).__name__}); "
                "install the versions alfworld==0.4.2 was tested with (textworld 1.7.0)"
            ) from None
        with _ENGINE_LOCK:
            return list(state.replan(infos))

    def close(self) -> None:
        if self._tw is not None:
            try:
                with _ENGINE_LOCK:
                    self._tw.close()
            finally:
                self._tw = None
        self._state = None
        self._task = None
        self._done = True


def _round_robin(groups: list[list[Task]]) -> list[Task]:
    out: list[Task] = []
    for i in range(max((len(g) for g in groups), default=0)):
        out.extend(g[i] for g in groups if i < len(g))
    return out


def _icl_episode_turns(messages: list, path: Path) -> list:
    from trajkit.data.schema import AGENT, OBSERVATION, TASK, Turn

    turns = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ValueError(f"{path}: message {i} is not an object")
        role = message.get("role", message.get("from"))
        text = message.get("content", message.get("value"))
        if not isinstance(text, str):
            raise ValueError(f"{path}: message {i} has no text (content/value)")
        if role in ("assistant", "gpt"):
            turns.append(Turn(AGENT, text))
        elif role in ("user", "human"):
            turns.append(Turn(TASK if not turns else OBSERVATION, text))
        else:
            raise ValueError(f"{path}: message {i} has unknown role {role!r}")
    return turns
