"""GUI agents: actions as data, reasoning levels, grounding packing, prompts and metrics.

Nothing here imports torch or transformers at import time (`tokens.add_gui_special_tokens` imports
them when called).
"""

from trajkit.gui.actions import (
    Action,
    ActionParseError,
    ActionRenderError,
    action_from_dict,
    actions_to_json,
    parse_action,
    parse_actions,
    render_actions,
)
from trajkit.gui.reasoning import GuiSample, GuiStep, ReasoningMixture, load_mixture_yaml
from trajkit.gui.tokens import DIFF_MARKER, RECIPIENT

__all__ = [
    "DIFF_MARKER",
    "RECIPIENT",
    "Action",
    "ActionParseError",
    "ActionRenderError",
    "GuiSample",
    "GuiStep",
    "ReasoningMixture",
    "action_from_dict",
    "actions_to_json",
    "load_mixture_yaml",
    "parse_action",
    "parse_actions",
    "render_actions",
]
