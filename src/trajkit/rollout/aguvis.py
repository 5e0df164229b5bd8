"""The AGUVIS GUI agent: a plan turn to `all`, then a code turn to `os`, over screenshots.

An episode opens as the GUI oracle writes its data: the GUI system prompt, the task turn
(`Instruction: ...`) and an observation turn carrying the first screenshot. Each env step is one or
two generations, by inference mode:

- `enforced_plan`: the model must write an `all` turn first (the prompt ends with
  `<|recipient|>all\\nThought:`), then an `os` turn (prompt ends with `<|recipient|>os\\n`);
- `self_plan`: the prompt ends with `<|recipient|>` and the model picks the recipient; when it
  picks `all`, a second generation writes the `os` turn.

Both agent turns are stored with their recipients and exact token ids (the forced prefix ids
followed by the sampled ids), so DPO trains on what was sampled. The env gets the `os` turn's text
(it extracts the code itself, as data, never executed). Every observation turn keeps its
screenshot in the stored trajectory; `max_images` caps the screenshots shown in a prompt (the most
recent ones; older observation turns keep their text, the image replaced by a note).

`prompt_style` picks what a prompt shows. `trajkit` (default): the episode so far, one growing
conversation, so each prompt is a prefix of the stored trajectory (what DPO trains on is what was
sampled). `aguvis`: AGUVIS's own inference format (`gui.prompts.aguvis_step_turns`, the layout its
checkpoints were trained on): every step a fresh conversation of AGUVIS's agent system message
(plugin functions listed) and one user turn with the current screenshot only, the task and the
earlier steps' low-level instructions as "Previous actions"; the step's own plan turn follows when
the code turn is generated. The stored trajectory keeps the whole episode either way, so rollouts
in `aguvis` style are for evaluating a policy: their prompts are not a prefix of that record.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from trajkit.data.schema import AGENT, OBSERVATION, SYSTEM, TASK, Turn
from trajkit.envs.base import Observation, StepResult
from trajkit.gui.prompts import GUI_SYSTEM_PROMPT, aguvis_step_turns, aguvis_system_message
from trajkit.gui.reasoning import RECIPIENT_ALL, RECIPIENT_OS, split_monologue
from trajkit.gui.tokens import (
    DIFF_MARKER,
    IM_END,
    IMAGE_PAD,
    IMAGE_PLACEHOLDER,
    RECIPIENT,
    VISION_END,
    VISION_START,
)
from trajkit.rollout.engine import Episode, Generate

PLAN_MODES = ("enforced_plan", "self_plan")
PROMPT_STYLES = ("trajkit", "aguvis")
_STYLE_DEFAULT: Any = object()  # `system` not given: the prompt style's own system message
HEADER = f"<|im_start|>assistant{RECIPIENT}"
OMITTED = "[earlier screenshot not shown]"


def gui_episode_prefix(obs: Observation, system: str | None = GUI_SYSTEM_PROMPT) -> list[Turn]:
    """The opening turns of a GUI episode, laid out as the MiniWoB++ oracle writes its data."""
    utterance = obs.instruction or obs.text.split("\n", 1)[0]
    turns = [Turn(SYSTEM, system)] if system else []
    turns.append(Turn(TASK, f"Instruction: {utterance}"))
    turns.append(screen_turn(obs, utterance))
    return turns


def screen_turn(obs: Observation, utterance: str | None) -> Turn:
    """An observation turn: `<image>` plus whatever text the env shows beyond the instruction."""
    text = obs.text or ""
    first, _, rest = text.partition("\n")
    extra = rest if utterance is not None and first == utterance else text
    if obs.image is None:
        return Turn(OBSERVATION, extra or "(no screenshot)")
    return Turn(OBSERVATION, IMAGE_PLACEHOLDER + (f"\n{extra}" if extra else ""), image=obs.image)


def cap_images(turns: list[Turn], max_images: int | None) -> list[Turn]:
    """`turns` with only the last `max_images` screenshots kept (None: all)."""
    if max_images is None:
        return turns
    seen = 0
    out: list[Turn] = []
    for turn in reversed(turns):
        if turn.image:
            seen += 1
            if seen > max_images:
                text = turn.text.replace(IMAGE_PLACEHOLDER, OMITTED)
                turn = dataclasses.replace(turn, text=text, image=None)
        out.append(turn)
    return out[::-1]


def _step_instruction(turns: list[Turn]) -> str:
    """What AGUVIS lists for a finished step: its low-level instruction, else its code."""
    code = next((t.text for t in reversed(turns) if t.recipient != RECIPIENT_ALL), "")
    for turn in turns:
        if turn.recipient == RECIPIENT_ALL:
            try:
                instruction = split_monologue(turn.text).get("instruction")
            except ValueError:
                instruction = None
            if instruction:
                return instruction
    return code.strip() or "(no action)"


def aguvis_prompt_turns(turns: list[Turn], goal: str, system: str | None) -> list[Turn]:
    """An episode's next prompt in AGUVIS's format: the step prompt over the latest screenshot,
    earlier steps as "Previous actions", then the current step's agent turns so far."""
    last = max((i for i, t in enumerate(turns) if t.role != AGENT), default=-1)
    image = next((t.image for t in reversed(turns[: last + 1]) if t.image and t.role != SYSTEM), None)
    if isinstance(image, list):
        image = image[-1] if image else None
    steps: list[list[Turn]] = []
    for i, turn in enumerate(turns[: last + 1]):
        if turn.role == AGENT:
            if i == 0 or turns[i - 1].role != AGENT:
                steps.append([])
            steps[-1].append(turn)
    previous = [_step_instruction(step) for step in steps]
    return [*aguvis_step_turns(goal, previous, image, system), *turns[last + 1 :]]


def read_agent_turn(ids: list[int], forced: list[int], decode, recipient: str | None = None) -> Turn:
    """An agent turn from the forced prefix ids + sampled ids; the recipient is the text before the
    first newline when not forced (self plan: anything but `all` is taken as `os`)."""
    full = list(forced) + list(ids)
    text = decode(full)
    end_turn: bool | None = None
    for marker, ends in ((DIFF_MARKER, True), (IM_END, False)):
        if text.endswith(marker):
            text, end_turn = text[: -len(marker)], ends
            break
    name, sep, body = text.partition("\n")
    chosen = RECIPIENT_ALL if name.strip() == RECIPIENT_ALL else RECIPIENT_OS
    if recipient is None:
        recipient = chosen
    if sep and name.strip() in (RECIPIENT_ALL, RECIPIENT_OS):
        text = body
    if end_turn is None:  # cut off by the token limit: closed as this recipient's turns close
        end_turn = recipient == RECIPIENT_OS
    return Turn(AGENT, text, recipient=recipient, end_turn=end_turn, token_ids=full)


class AguvisAgent:
    generations_per_step = 2

    def __init__(
        self,
        renderer: Any,
        mode: str = "enforced_plan",
        max_images: int | None = None,
        system: str | None = _STYLE_DEFAULT,
        prompt_style: str = "trajkit",
    ):
        """`renderer`: the VLM's renderer (with `image_tokens`); `mode`: enforced_plan | self_plan;
        `max_images`: screenshots kept in a prompt, most recent first (None: all; `aguvis` style
        shows one); `system`: the system turn of every episode ("" or None: none; not given: the
        GUI prompt, or in `aguvis` style AGUVIS's agent system message with its plugin functions);
        `prompt_style`: trajkit | aguvis (see the module doc)."""
        if mode not in PLAN_MODES:
            raise ValueError(f"unknown GUI rollout mode {mode!r}; choose one of {', '.join(PLAN_MODES)}")
        if prompt_style not in PROMPT_STYLES:
            raise ValueError(
                f"unknown prompt style {prompt_style!r}; choose one of {', '.join(PROMPT_STYLES)}"
            )
        if system is _STYLE_DEFAULT:
            system = aguvis_system_message() if prompt_style == "aguvis" else GUI_SYSTEM_PROMPT
        self.renderer = renderer
        self.mode = mode
        self.max_images = max_images
        self.system = system
        self.prompt_style = prompt_style
        # A (small, random) policy can sample vision-span tokens; in a prompt they would stand for
        # an image that is not there, so a turn is cut before the first one (counted in metadata).
        self.vision_ids = {i for t in (VISION_START, IMAGE_PAD, VISION_END) for i in renderer.encode(t)}
        self.forced_all = renderer.encode(f"{RECIPIENT_ALL}\nThought:")
        self.forced_os = renderer.encode(f"{RECIPIENT_OS}\n")

    def _decode(self, ids: list[int]) -> str:
        return self.renderer.tokenizer.decode(ids, skip_special_tokens=False)

    def open(self, ep: Episode, obs: Observation) -> list[Turn]:
        ep.info["mode"] = self.mode
        ep.info["utterance"] = obs.instruction or obs.text.split("\n", 1)[0]
        if self.prompt_style != "trajkit":
            ep.info["prompt_style"] = self.prompt_style
        if "task_name" in ep.task.spec:  # per-task success in `evaluate.summarize`
            ep.info["family"] = ep.task.spec["task_name"]
        return gui_episode_prefix(obs, self.system)

    def _generate(self, eps: list[Episode], forced: list[int], phase: int, generate: Generate):
        prompts = []
        for ep in eps:
            rendered = self.renderer.prompt(self.prompt_turns(ep), assistant_header=HEADER)
            prompts.append((rendered.input_ids + list(forced), list(rendered.images)))
        outs = generate(eps, prompts, phase)
        for k, (ep, ids) in enumerate(zip(eps, outs, strict=True)):
            cut = next((i for i, t in enumerate(ids) if t in self.vision_ids), None)
            if cut is not None:
                outs[k] = list(ids[:cut])
                ep.info["vision_tokens_cut"] = ep.info.get("vision_tokens_cut", 0) + 1
        return outs

    def prompt_turns(self, ep: Episode) -> list[Turn]:
        """The turns the next generation of `ep` is prompted with (before the assistant header)."""
        if self.prompt_style == "aguvis":
            return aguvis_prompt_turns(ep.turns, ep.info.get("utterance") or "", self.system)
        return cap_images(ep.turns, self.max_images)

    def act(self, live: list[Episode], generate: Generate) -> None:
        # First generation of the step: the plan (enforced) or the model's own recipient choice.
        enforced = self.mode == "enforced_plan"
        forced = self.forced_all if enforced else []
        first = list(live)
        outs = self._generate(first, forced, 0, generate)
        need_os: list[Episode] = []
        for ep, ids in zip(first, outs, strict=True):
            turn = read_agent_turn(ids, forced, self._decode, RECIPIENT_ALL if enforced else None)
            ep.turns.append(turn)
            if turn.recipient == RECIPIENT_ALL:
                need_os.append(ep)
        # Second generation for those that planned: the code turn, recipient forced to `os`.
        if need_os:
            outs = self._generate(need_os, self.forced_os, 1, generate)
            for ep, ids in zip(need_os, outs, strict=True):
                ep.turns.append(read_agent_turn(ids, self.forced_os, self._decode, RECIPIENT_OS))

    def action(self, ep: Episode) -> str:
        return ep.turns[-1].text

    def observe(self, ep: Episode, result: StepResult) -> Turn:
        return screen_turn(result.observation, ep.info.get("utterance"))
