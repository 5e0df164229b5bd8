"""Inference modes and reading the model's code back out of a completion.

A generation prompt is the ChatML conversation followed by `<|im_start|>assistant` and a mode
prefix that decides how much the model plans on its own:

    self_plan           `<|recipient|>`: the model picks `all` (plan first) or `os` (act now)
    enforced_plan       `<|recipient|>all\\nThought:`: the model must reason first
    grounding           `<|recipient|>os\\n`: the model writes only the code
    given_instruction   the low-level instruction is supplied as the `all` turn, closed, and the
                        `os` turn is opened, so the model only grounds that instruction

Generation stops at `<|diff_marker|>` (STOP_STRINGS).

AGUVIS's own inference format (`aguvis_step_turns`), which AGUVIS checkpoints are trained on and
its `serve/cli.py` writes: one step is one fresh conversation, a system message naming the plugin
functions (`aguvis_system_message`: the GUI prompt, then "You have access to the following
functions:" and one JSON schema per line) and one user message with the current screenshot only,
then the task and the earlier steps as text (`aguvis_user_prompt`: "Instruction: ...",
"Previous actions:" with "Step 1: ..." lines, or "None").
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from typing import Any

from trajkit.data.schema import SYSTEM, TASK, Trajectory, Turn
from trajkit.gui.actions import Action, ActionParseError, parse_actions
from trajkit.gui.tokens import DIFF_MARKER, IM_END, IM_START, IMAGE_PLACEHOLDER, RECIPIENT

ASSISTANT_START = f"{IM_START}assistant"
MODES = ("self_plan", "enforced_plan", "grounding", "given_instruction")
# The system prompt AGUVIS renders grounding samples with when the record carries none.
GUI_SYSTEM_PROMPT = (
    "You are a GUI agent. You are given a task and a screenshot of the screen. "
    "You need to perform a series of pyautogui actions to complete the task."
)
STOP_STRINGS = (DIFF_MARKER,)
# Text that ends a turn's content wherever it shows up.
_TURN_ENDS = (DIFF_MARKER, IM_END, IM_START, "<|endoftext|>")
# A line that starts a whitelisted call, used to pick code out of stray prose.
_CALL_LINE = re.compile(r"^\s*(?:(?:pyautogui|mobile|browser|computer)\.\w+|answer|terminate)\s*\(")
_FENCE = re.compile(r"```[ \t]*(?:python|py)?[ \t]*\n?(.*?)```", re.DOTALL)


# ---------------------------------------------------------------------------------------------
# AGUVIS's inference format: the plugin functions, the system message and the per-step prompt


def _plugin(name: str, description: str, **params: tuple[str, str]) -> dict[str, Any]:
    """A plugin function schema laid out as AGUVIS writes it (key order matters: the model reads
    the JSON text). `params`: name -> (type, description); type `array` holds numbers."""
    schema: dict[str, Any] = {"name": name, "description": description}
    if params:
        props: dict[str, Any] = {}
        for key, (kind, text) in params.items():
            props[key] = {"type": kind, "items": {"type": "number"}} if kind == "array" else {"type": kind}
            props[key]["description"] = text
        schema["parameters"] = {"type": "object", "properties": props, "required": list(params)}
    return schema


def _where(what: str) -> tuple[str, str]:
    return ("number", f"The {what}")


# The plugin functions of AGUVIS's constants.py, in its order.
AGUVIS_PLUGIN_FUNCTIONS: dict[str, dict[str, Any]] = {
    f["name"]: f
    for f in (
        _plugin(
            "browser.select_option",
            "Select an option from a dropdown menu",
            x=_where("x coordinate of the dropdown menu"),
            y=_where("y coordinate of the dropdown menu"),
            value=("string", "The value of the option to select"),
        ),
        _plugin(
            "mobile.swipe",
            "Swipe on the screen",
            from_coord=("array", "The starting coordinates of the swipe"),
            to_coord=("array", "The ending coordinates of the swipe"),
        ),
        _plugin("mobile.home", "Press the home button"),
        _plugin("mobile.back", "Press the back button"),
        _plugin("mobile.wait", "wait for the change to happen", seconds=_where("seconds to wait")),
        _plugin(
            "mobile.long_press",
            "Long press on the screen",
            x=_where("x coordinate of the long press"),
            y=_where("y coordinate of the long press"),
        ),
        _plugin(
            "mobile.open_app", "Open an app on the device", app_name=("string", "The name of the app to open")
        ),
    )
}
# The functions AGUVIS's agent system message lists (its serve/cli.py, self-plan and force-plan).
AGUVIS_AGENT_FUNCTIONS = (
    "mobile.swipe",
    "mobile.home",
    "mobile.back",
    "mobile.wait",
    "mobile.long_press",
    "mobile.open_app",
)
AGUVIS_NEXT_MOVE = (
    "Please generate the next move according to the ui screenshot, instruction and previous actions."
)


def aguvis_system_message(functions: Sequence[str | dict[str, Any]] = AGUVIS_AGENT_FUNCTIONS) -> str:
    """The GUI system prompt followed by one JSON schema line per plugin function (names from
    `AGUVIS_PLUGIN_FUNCTIONS`, or schemas); no functions: the bare GUI prompt (grounding)."""
    if not functions:
        return GUI_SYSTEM_PROMPT
    lines = []
    for f in functions:
        if isinstance(f, str):
            if f not in AGUVIS_PLUGIN_FUNCTIONS:
                known = ", ".join(AGUVIS_PLUGIN_FUNCTIONS)
                raise ValueError(f"unknown plugin function {f!r}; known: {known} (or pass a schema dict)")
            f = AGUVIS_PLUGIN_FUNCTIONS[f]
        lines.append(f"- {json.dumps(f)}\n")
    return f"{GUI_SYSTEM_PROMPT}\n\nYou have access to the following functions:\n{''.join(lines)}"


def aguvis_previous_actions(actions: Sequence[str]) -> str:
    """Earlier steps as AGUVIS lists them: "Step 1: ..." lines, or "None" before the first step."""
    steps = [" ".join(a.split()) for a in actions]
    return "\n".join(f"Step {i}: {a}" for i, a in enumerate(steps, 1)) if steps else "None"


def aguvis_user_prompt(goal: str, previous_actions: Sequence[str]) -> str:
    """The text of AGUVIS's per-step user message (the screenshot goes before it)."""
    previous = aguvis_previous_actions(previous_actions)
    return f"{AGUVIS_NEXT_MOVE}\n\nInstruction: {goal}\n\nPrevious actions:\n{previous}\n"


def aguvis_step_turns(
    goal: str, previous_actions: Sequence[str], image: str | None, system: str | None
) -> list[Turn]:
    """The conversation of one AGUVIS step before the model's turns: the system message (None or
    "": none) and one user turn with the current screenshot first, then `aguvis_user_prompt`."""
    turns = [Turn(SYSTEM, system)] if system else []
    text = aguvis_user_prompt(goal, previous_actions)
    turns.append(Turn(TASK, IMAGE_PLACEHOLDER + text, image=image) if image else Turn(TASK, text))
    return turns


def task_goal(text: str) -> str:
    """The goal of a task turn: its text without screenshots and an `Instruction:` label."""
    text = text.replace(IMAGE_PLACEHOLDER, "").strip()
    return re.sub(r"^Instruction:\s*", "", text).strip()


def with_default_system(trajectory: Trajectory, system: str = GUI_SYSTEM_PROMPT) -> Trajectory:
    """The trajectory with `system` prepended when it has no system turn of its own."""
    if trajectory.turns and trajectory.turns[0].role == SYSTEM:
        return trajectory
    return dataclasses.replace(trajectory, turns=[Turn(SYSTEM, system), *trajectory.turns])


def assistant_prefix(mode: str, instruction: str | None = None) -> str:
    """The text that follows `<|im_start|>assistant` in a generation prompt for `mode`."""
    if mode == "self_plan":
        return RECIPIENT
    if mode == "enforced_plan":
        return f"{RECIPIENT}all\nThought:"
    if mode == "grounding":
        return f"{RECIPIENT}os\n"
    if mode == "given_instruction":
        if not instruction or not instruction.strip():
            raise ValueError("mode given_instruction needs a low-level instruction")
        # The monologue turn is closed exactly as in training data, so the model's next move is
        # the code itself rather than more monologue.
        return f"{RECIPIENT}all\nAction: {instruction.strip()}{IM_END}\n{ASSISTANT_START}{RECIPIENT}os\n"
    raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")


def generation_prompt(chat_prompt: str, mode: str, instruction: str | None = None) -> str:
    """`chat_prompt` (the rendered conversation so far) + `<|im_start|>assistant` + the mode prefix."""
    sep = "" if not chat_prompt or chat_prompt.endswith("\n") else "\n"
    return f"{chat_prompt}{sep}{ASSISTANT_START}{assistant_prefix(mode, instruction)}"


def _cut_at_turn_end(text: str) -> str:
    end = len(text)
    for marker in _TURN_ENDS:
        pos = text.find(marker)
        if pos != -1:
            end = min(end, pos)
    return text[:end]


def extract_os_code(completion: str) -> str:
    """The `os` code of a completion; "" when it has none.

    Handles completions that start inside the `os` turn (grounding mode), start with the recipient
    name (self-plan mode: "all\\n..." or "os\\n..."), or carry a monologue turn first; stops at
    `<|diff_marker|>`/`<|im_end|>`; drops code fences and prose lines around the calls.
    """
    text = completion
    os_header = f"{RECIPIENT}os"
    pos = text.rfind(os_header)
    if pos != -1:
        segment = text[pos + len(os_header) :]
    else:
        head = text.lstrip()
        if head == "os" or head.startswith(("os\n", "os ")):
            segment = head[2:]
        elif head.startswith(("all\n", "all ")) or f"{RECIPIENT}all" in text:
            # Monologue only: any code must come after the monologue turn has ended.
            end = text.find(IM_END)
            segment = text[end + len(IM_END) :] if end != -1 else ""
            segment = segment.replace(ASSISTANT_START, "")
        else:
            segment = text
    segment = _cut_at_turn_end(segment)
    fenced = _FENCE.findall(segment)
    if fenced:
        segment = "\n".join(fenced)
    segment = segment.strip()
    lines = [line for line in segment.splitlines() if line.strip()]
    calls = [line.strip() for line in lines if _CALL_LINE.match(line)]
    if calls and len(calls) != len(lines):
        return "\n".join(calls)
    return segment


def parse_completion(completion: str, **parse_options: Any) -> list[Action]:
    """Parse the `os` code of a completion into actions (options as in `parse_actions`)."""
    code = extract_os_code(completion)
    if not code:
        raise ActionParseError("no os code found in the completion")
    return parse_actions(code, **parse_options)
