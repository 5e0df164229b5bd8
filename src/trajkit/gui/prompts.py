"""Inference modes and reading the model's code back out of a completion.

A generation prompt is the ChatML conversation followed by `<|im_start|>assistant` and a mode
prefix that decides how much the model plans on its own:

    self_plan           `<|recipient|>`: the model picks `all` (plan first) or `os` (act now)
    enforced_plan       `<|recipient|>all\\nThought:`: the model must reason first
    grounding           `<|recipient|>os\\n`: the model writes only the code
    given_instruction   the low-level instruction is supplied as the `all` turn, closed, and the
                        `os` turn is opened, so the model only grounds that instruction

Generation stops at `<|diff_marker|>` (STOP_STRINGS).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from trajkit.data.schema import SYSTEM, Trajectory, Turn
from trajkit.gui.actions import Action, ActionParseError, parse_actions
from trajkit.gui.tokens import DIFF_MARKER, IM_END, IM_START, RECIPIENT

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
_CALL_LINE = re.compile(r"^\s*(?:(?:pyautogui|mobile|browser)\.\w+|answer|terminate)\s*\(")
_FENCE = re.compile(r"```[ \t]*(?:python|py)?[ \t]*\n?(.*?)```", re.DOTALL)


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
