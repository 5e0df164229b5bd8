"""ALFWorld's PDDL-planner expert as a trajkit oracle, with templated thoughts.

The planner sees the whole game state, so it walks straight to objects hidden in closed
receptacles; its plans are short (4-12 commands) and always win on the 2.1.1 games. The text
engine is deterministic, so one plan made at reset is followed to the end; if a command is
refused anyway, the expert plans again from where it is.
"""

from __future__ import annotations

import random
import re
import time
from typing import Any

from trajkit.data.schema import AGENT, Trajectory, Turn
from trajkit.envs.base import Task, episode_prefix, observation_turn

ORACLE_NAME = "alfworld-pddl-expert"
_MAX_REPLANS = 3
_TOOL_VERBS = ("clean", "heat", "cool")
_TYPE_PLANS = {
    "pick_and_place_simple": "find a {o}, pick it up and put it in/on a {r}",
    "look_at_obj_in_light": "find a {o}, pick it up and look at it under a {l}",
    "pick_clean_then_place_in_recep": "find a {o}, clean it with the sinkbasin, then put it in/on a {r}",
    "pick_heat_then_place_in_recep": "find a {o}, heat it with the microwave, then put it in/on a {r}",
    "pick_cool_then_place_in_recep": "find a {o}, cool it with the fridge, then put it in/on a {r}",
    "pick_two_obj_and_place": "find two {os} and put them in/on a {r}, one at a time",
}
_COMMAND = re.compile(
    r"^(?:(?P<go>go to) (?P<go_r>.+)"
    r"|take (?P<take_o>.+) from (?P<take_r>.+)"
    r"|put (?P<put_o>.+) in/on (?P<put_r>.+)"
    r"|(?P<tool>clean|heat|cool) (?P<tool_o>.+) with (?P<tool_r>.+)"
    r"|(?P<oc>open|close) (?P<oc_r>.+)"
    r"|use (?P<use_l>.+))$"
)


class ExpertError(RuntimeError):
    """The planner found no plan, or its plan did not reach the goal."""


def _lower(name: str) -> str:
    return name.lower()


def _plural(noun: str) -> str:
    return noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")


class _Thoughts:
    """A short thought for each planned command: what it is for, in words."""

    def __init__(self, task: Task, goal: str | None, plan: list[str], rng: random.Random) -> None:
        from trajkit.envs.alfworld.games import parse_task_dir

        self.rng = rng
        self.goal = goal
        name = parse_task_dir(task.spec["game"].split("/")[0])
        self.task_type = name.task_type
        self.obj = _lower(name.object_target.removesuffix("Sliced"))
        self.recep = _lower(name.parent_target)
        self.plan = plan
        self.held: str | None = None

    def opening(self) -> str:
        template = _TYPE_PLANS.get(self.task_type)
        if template is None:
            return ""
        steps = template.format(o=self.obj, os=_plural(self.obj), r=self.recep, l=self.recep)
        goal = f"My goal: {self.goal.rstrip('.')}. " if self.goal else ""
        return f"{goal}So I need to {steps}. "

    def for_command(self, index: int, command: str, plan: list[str], first: bool) -> str:
        nxt = plan[index + 1] if index + 1 < len(plan) else ""
        m = _COMMAND.match(command)
        text = f"Next I'll {command}."
        if m is None:
            pass
        elif m["go"]:
            text = self._go(m["go_r"], nxt)
        elif m["take_o"]:
            self.held = m["take_o"]
            text = self.rng.choice(
                (
                    f"There is a {m['take_o']} here. I'll pick it up.",
                    f"I see the {m['take_o']} on the {m['take_r']}. I'll take it.",
                )
            )
        elif m["put_o"]:
            self.held = None
            text = self.rng.choice(
                (
                    f"Now I put the {m['put_o']} in/on the {m['put_r']}.",
                    f"I'm at the {m['put_r']}. I'll put the {m['put_o']} here.",
                )
            )
        elif m["tool"]:
            text = f"I'm at the {m['tool_r']}. I'll {m['tool']} the {m['tool_o']} with it."
        elif m["oc"] == "open":
            text = self.rng.choice(
                (f"The {m['oc_r']} is closed. I'll open it.", f"I need to open the {m['oc_r']} first.")
            )
        elif m["oc"] == "close":
            text = f"I'll close the {m['oc_r']}."
        elif m["use_l"]:
            what = f" and look at the {self.held} under it" if self.held else ""
            text = f"The {m['use_l']} is here. I'll turn it on{what}."
        return (self.opening() if first else "") + text

    def _go(self, place: str, nxt: str) -> str:
        m = _COMMAND.match(nxt) if nxt else None
        if m is None:
            return f"I'll go to the {place}."
        if m["take_o"]:
            return self.rng.choice(
                (
                    f"A {self.obj} may be at the {place}. I'll go there.",
                    f"Let me look for a {self.obj} at the {place}.",
                )
            )
        if m["tool"]:
            return f"Now I {m['tool']} the {m['tool_o']} with the {place}, so I go there."
        if m["put_o"] or m["oc"] == "open":
            what = self.held or "it"
            return self.rng.choice(
                (f"Now I take the {what} to the {place}.", f"Next I bring the {what} to the {place}.")
            )
        if m["use_l"]:
            return f"The {m['use_l']} should be at the {place}. I'll go there."
        return f"I'll go to the {place}."


def oracle_trajectory(env: Any, task: Task, seed: int | str = 0) -> Trajectory:
    """Play `task` with ALFWorld's PDDL-planner expert on `env` (an in-process ALFWorldEnv).

    Thoughts are templated from the planned commands; `seed` varies their wording only. The
    trajectory ends at the agent's last action (ETO's layout). If the plan does not win within
    the task's step budget the trajectory is still returned, with success False.
    """
    expert_plan = getattr(env, "expert_plan", None)
    if expert_plan is None:
        raise TypeError(
            "the ALFWorld oracle needs an in-process ALFWorldEnv (it asks the game's PDDL planner for "
            f"a plan); got {type(env).__name__}"
        )
    first = env.reset(task)
    t0 = time.perf_counter()
    plan = expert_plan()
    plan_seconds = time.perf_counter() - t0
    if not plan:
        raise ExpertError(f"ALFWorld's planner found no plan for {task.id}")
    rng = random.Random(f"alfworld-expert/{task.id}/{seed}")
    thoughts = _Thoughts(task, first.instruction, plan, rng)
    turns: list[Turn] = episode_prefix(env.instruction, first.text)
    won, done, reward, steps, replans, i = False, False, 0.0, 0, 0, 0
    while not done:
        if i >= len(plan):
            raise ExpertError(f"the plan for {task.id} ended without reaching the goal")
        command = plan[i]
        turns.append(
            Turn(AGENT, f"Thought: {thoughts.for_command(i, command, plan, steps == 0)}\nAction: {command}")
        )
        result = env.step(command)
        steps += 1
        done, won, reward = result.done, bool(result.info.get("won")), float(result.reward)
        if not done:
            turns.append(observation_turn(result.observation.text))
        if not result.info.get("valid", True) and not done:
            replans += 1
            if replans > _MAX_REPLANS:
                raise ExpertError(f"planned command {command!r} was refused on {task.id}")
            t0 = time.perf_counter()
            plan, i = expert_plan(), 0
            plan_seconds += time.perf_counter() - t0
            continue
        i += 1
    return Trajectory(
        id=f"expert/{task.id}",
        turns=turns,
        task_id=task.id,
        env=getattr(env, "name", "alfworld"),
        split=task.split,
        reward=reward,
        success=won,
        metadata={
            "source": "expert",
            "oracle": ORACLE_NAME,
            "thoughts": "templated",
            "steps": steps,
            "env_version": getattr(env, "version", None),
            "task_name": task.spec.get("task_name"),
            "game": task.spec.get("game"),
            "plan_seconds": round(plan_seconds, 2),
            "replans": replans,
            "expert_seed": seed,
        },
    )
