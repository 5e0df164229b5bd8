"""The instruction shown at the start of a WebShop episode, and ETO's in-context example."""

from __future__ import annotations

import json
import os
from pathlib import Path

INSTRUCTION_FILE = "webshop_inst.txt"
ICL_FILE = "webshop_icl.json"

# Used when ETO's prompt files are not given. Training on ETO's expert data wants ETO's own text
# (point `prompts_dir` or TRAJKIT_ETO_PROMPTS at it); this one asks for the same action format.
BUILTIN_INSTRUCTION = """\
You are shopping on a web store for a customer. Each turn you see the current page as text, its \
parts separated by [SEP], and you answer with one action.
There are two kinds of action:
search[keywords]
click[value]
Search is possible from the search page. A click names a button, product or option exactly as \
the page shows it (e.g. click[Back to Search], click[Next >], click[< Prev], a product id, an \
option value, click[Buy Now]). An action that is not possible changes nothing.
Choose your search keywords with care, open a product that fits the customer's request, select \
the options the request names, then buy it.
Answer in exactly this format:

Thought: I think ...
Action: click[something]"""


def find_prompt_file(prompts_dir: str | os.PathLike[str] | None, name: str) -> Path | None:
    """`name` in the folder, its `prompts/`, or ETO's `instructions/` / `icl_examples/` layout."""
    if not prompts_dir:
        return None
    folder = Path(prompts_dir).expanduser()
    for sub in ("", "prompts", "instructions", "icl_examples"):
        candidate = folder / sub / name
        if candidate.is_file():
            return candidate
    return None


def load_instruction(prompts_dir: str | os.PathLike[str] | None) -> tuple[str, str]:
    """(instruction text, where it came from)."""
    path = find_prompt_file(prompts_dir, INSTRUCTION_FILE)
    if path is None:
        return BUILTIN_INSTRUCTION, "built-in"
    return path.read_text(encoding="utf-8"), str(path)


def load_icl_turns(prompts_dir: str | os.PathLike[str] | None) -> list:
    """ETO's in-context episode as turns (none of them trained), or [] without the file."""
    from trajkit.data.io import DataError
    from trajkit.data.schema import AGENT, OBSERVATION, TASK, Turn

    path = find_prompt_file(prompts_dir, ICL_FILE)
    if path is None:
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"not valid JSON ({err.msg})", file=path) from None
    # ETO stores a list of episodes, each a list of {role, content} messages.
    episodes = data if data and isinstance(data[0], list) else [data]
    turns = []
    for e, episode in enumerate(episodes):
        if not isinstance(episode, list):
            raise DataError("every episode must be a list of messages", file=path, record=e)
        for m, message in enumerate(episode):
            if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                raise DataError(f"message {m} needs a string 'content'", file=path, record=e)
            role = message.get("role", message.get("from"))
            if role in ("assistant", "gpt"):
                kind = AGENT
            elif role in ("user", "human"):
                kind = TASK if m == 0 else OBSERVATION
            else:
                raise DataError(f"message {m} has unknown role {role!r}", file=path, record=e)
            turns.append(Turn(kind, message["content"], train=False))
    return turns
