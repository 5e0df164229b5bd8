"""Expert trajectories from ScienceWorld's gold paths, with templated ReAct thoughts.

The simulator can compute a gold action sequence for any task variation. The oracle loads the
variation with it, replays it through the env's own `step` (so observations, rewards and the step
budget are exactly what a policy would see), and writes each action as an ETO-style agent turn
"Thought: ...\\nAction: ...". The thoughts are short templates keyed on the action's verb, worded
with some seeded variety; they explain the action, they are not the simulator's reasoning.
"""

from __future__ import annotations

import random
import re
from typing import Any

from trajkit.data.schema import AGENT, Trajectory, Turn
from trajkit.envs.base import Task, episode_prefix, observation_turn

ORACLE_NAME = "scienceworld-gold-path"

# (pattern over the action, thought templates); the first matching pattern wins. Named groups fill
# the templates.
_TEMPLATES: list[tuple[re.Pattern[str], tuple[str, ...]]] = [
    (
        re.compile(r"open door to (?P<a>.+)"),
        (
            "The way to the {a} goes through a door; I'll make sure it is open.",
            "I want to reach the {a}, so first I open the door to it.",
        ),
    ),
    (
        re.compile(r"(?:go|teleport) to (?P<a>.+)"),
        (
            "What I need next should be in the {a}. I'll go there.",
            "Next I head to the {a}.",
            "The {a} is where I should continue, so I'll move there.",
        ),
    ),
    (
        re.compile(r"look around"),
        (
            "Let me look around to see what is here.",
            "I should check what this room contains.",
            "First I'll take a look at my surroundings.",
        ),
    ),
    (
        re.compile(r"(?:look at|examine) (?P<a>.+)"),
        (
            "I'll take a closer look at the {a}.",
            "Let me examine the {a} to learn more about it.",
        ),
    ),
    (
        re.compile(r"read (?P<a>.+)"),
        ("The {a} may tell me something useful. I'll read it.",),
    ),
    (
        re.compile(r"focus on (?P<a>.+)"),
        (
            "The {a} is the object this task is about, so I'll focus on it.",
            "I should signal that the {a} is what the task concerns.",
        ),
    ),
    (
        re.compile(r"pick up (?P<a>.+)"),
        (
            "I need the {a}. I'll pick it up.",
            "The {a} will be useful; let me take it.",
        ),
    ),
    (
        re.compile(r"move (?P<a>.+?) (?:to|in|into) (?P<b>.+)"),
        (
            "Now I'll put the {a} into the {b}.",
            "The {a} should go to the {b}.",
        ),
    ),
    (
        re.compile(r"pour (?P<a>.+?) (?:into|in) (?P<b>.+)"),
        (
            "I'll pour the {a} into the {b}.",
            "Next, the {a} goes into the {b}.",
        ),
    ),
    (
        re.compile(r"mix (?P<a>.+)"),
        ("Everything is in the {a}; now I mix it.", "Time to mix the {a}."),
    ),
    (
        re.compile(r"deactivate (?P<a>.+)"),
        ("I'll turn the {a} off.", "The {a} is no longer needed on; I switch it off."),
    ),
    (
        re.compile(r"activate (?P<a>.+)"),
        ("I'll turn on the {a}.", "The {a} has to be running, so I switch it on."),
    ),
    (
        re.compile(r"disconnect (?P<a>.+)"),
        ("I'll disconnect the {a}.",),
    ),
    (
        re.compile(r"connect (?P<a>.+?) to (?P<b>.+)"),
        (
            "To build the circuit I connect the {a} to the {b}.",
            "The {a} has to be wired to the {b}.",
        ),
    ),
    (
        re.compile(r"use (?P<a>.+?) on (?P<b>.+)"),
        ("I'll use the {a} on the {b}.", "Let me apply the {a} to the {b}."),
    ),
    (
        re.compile(r"use (?P<a>.+)"),
        ("I'll use the {a}.",),
    ),
    (
        re.compile(r"wait1?"),
        (
            "Now I need to wait for the change to happen.",
            "This takes time; I'll wait.",
            "Nothing more to do until time passes, so I wait.",
        ),
    ),
    (
        re.compile(r"close (?P<a>.+)"),
        ("I'll close the {a}.",),
    ),
    (
        re.compile(r"open (?P<a>.+)"),
        ("I'll open the {a}.", "Let me open the {a} to get at what is inside."),
    ),
    (
        re.compile(r"\d+"),
        ("Several things match my request; I choose the intended option.",),
    ),
]


def templated_thought(action: str, rng: random.Random) -> str:
    """A short thought that explains `action` (one of a few wordings, picked by `rng`)."""
    text = action.strip()
    for pattern, templates in _TEMPLATES:
        match = pattern.fullmatch(text)
        if match:
            return rng.choice(templates).format(**match.groupdict())
    return f"Next I will {text}."


def easy_path(gold: list[str]) -> list[str]:
    """The gold path shortened for the "easy" simplifications: doors are already open, so
    "open door to X" is dropped, and a walk through rooms ("go to A", "go to B", ...) becomes one
    "teleport to <last room>". The oracle checks the result and falls back to the raw path."""
    out: list[str] = []
    for action in gold:
        if action.startswith("open door to "):
            continue
        if action.startswith("go to "):
            if out and out[-1].startswith("teleport to "):
                out.pop()
            out.append("teleport to " + action[len("go to ") :])
            continue
        out.append(action)
    return out


def _teleport_allowed(simplification: str) -> bool:
    parts = set(simplification.split(","))
    return bool(parts & {"easy", "teleportAction"}) and bool(parts & {"easy", "openDoors"})


def _replay(env: Any, task: Task, first_text: str, actions: list[str], rng: random.Random) -> dict[str, Any]:
    """Step `actions` on an episode that was just reset; the turns and how it ended."""
    turns: list[Turn] = episode_prefix(env.instruction, first_text)
    reward, won, score, steps, stopped = 0.0, False, 0, 0, "the path ended before the task was complete"
    for action in actions:
        turns.append(Turn(AGENT, f"Thought: {templated_thought(action, rng)}\nAction: {action}"))
        result = env.step(action)
        steps += 1
        reward, won, score = result.reward, bool(result.info.get("won")), int(result.info.get("score", 0))
        if result.done:
            stopped = "" if won else f"episode ended with score {score}"
            break
        turns.append(observation_turn(result.observation.text, result.observation.image))
    if not actions:
        stopped = "the simulator produced no gold path"
    if turns[-1].role != AGENT and len(turns) > 3:
        turns.pop()  # an unfinished replay still ends on the agent's last action
    return {"turns": turns, "reward": reward, "won": won, "score": score, "steps": steps, "stopped": stopped}


def oracle_trajectory(env: Any, task: Task, seed: int | str = 0) -> Trajectory:
    """Replay the simulator's gold path for `task` on `env` (an in-process ScienceWorldEnv).

    Under the "easy" simplifications the path is first shortened (`easy_path`); if the short path
    does not reach the full score, the raw gold path is replayed instead. The replay ignores the
    task's step budget, as ETO's own expert data does (some gold paths are longer than ETO's
    budgets); metadata["over_budget"] marks those. The trajectory ends at the agent's last action
    (ETO's layout). A replay that does not reach the full score is still returned, with
    `success` False and metadata["stopped"] saying why, so callers can filter it out.
    """
    reset_with_gold = getattr(env, "reset_with_gold", None)
    if reset_with_gold is None:
        raise TypeError(
            "the ScienceWorld oracle needs an in-process ScienceWorldEnv (it asks the simulator for "
            f"the gold path); got {type(env).__name__}"
        )
    first, gold = reset_with_gold(task, enforce_budget=False)
    path, kind = gold, "raw"
    if _teleport_allowed(getattr(env, "simplification", "")):
        short = easy_path(gold)
        if short != gold:
            path, kind = short, "easy"
    rng = random.Random(f"sciworld-expert/{task.id}/{seed}")
    out = _replay(env, task, first.text, path, rng)
    if not out["won"] and kind == "easy":
        first = env.reset(task, enforce_budget=False)
        rng = random.Random(f"sciworld-expert/{task.id}/{seed}")
        path, kind = gold, "raw"
        out = _replay(env, task, first.text, path, rng)
    metadata: dict[str, Any] = {
        "source": "expert",
        "oracle": ORACLE_NAME,
        "thoughts": "templated",
        "steps": out["steps"],
        "score": out["score"],
        "path": kind,
        "gold_length": len(gold),
        "env_version": getattr(env, "version", None),
        "task_name": task.spec.get("task_name"),
        "variation": task.spec.get("variation"),
        "expert_seed": seed,
    }
    if out["steps"] > task.max_steps:
        metadata["over_budget"] = True
    if out["stopped"]:
        metadata["stopped"] = out["stopped"]
    return Trajectory(
        id=f"expert/{task.id}",
        turns=out["turns"],
        task_id=task.id,
        env=getattr(env, "name", "sciworld"),
        split=task.split,
        reward=out["reward"],
        success=out["won"],
        metadata=metadata,
    )
