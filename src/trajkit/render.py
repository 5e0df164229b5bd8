"""The one renderer: a trajectory becomes token ids plus a per-token loss mask.

Every consumer goes through here: SFT batches, both sides of a DPO pair, and the prompt a rollout
samples from. A chat template is a small function from turns to *segments* (text, trained?);
each segment is tokenized on its own and the ids are concatenated. Tokenizing per segment makes
the mask exact (no offset mapping, no guessing where a turn starts) and makes a rollout prompt an
exact prefix of the full rendering, so what was sampled is what gets trained. A sampled agent turn
carries the exact ids the sampler produced; those are used verbatim, never re-tokenized.

Templates: `llama2` (ETO's `[INST]` layout), `chatml` / `qwen2` (with AGUVIS `<|recipient|>`
routing and `<|diff_marker|>`), `llama3`, `tiny` (the built-in tiny model's own), and `hf`, which
defers to a tokenizer's own chat template with `{% generation %}` markers.

Images (chatml / qwen2): each image of a turn becomes its own untrained vision segment,
`<|vision_start|><|image_pad|><|vision_end|>`, where the text has `<image>` (images with no
placeholder go first in the turn, Qwen2-VL style). A Renderer given `image_tokens` (image path ->
number of visual tokens) writes as many `<|image_pad|>` ids as the vision tower yields for that
image, and `Rendered.images` lists the images in the order their spans appear, so a collator can
line pixel values up with the pads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from trajkit.data.schema import AGENT, SYSTEM, Trajectory, Turn
from trajkit.gui.tokens import (  # re-exported: other modules import these names from here
    DIFF_MARKER,
    IM_END,
    IM_START,
    IMAGE_PAD,
    IMAGE_PLACEHOLDER,
    QWEN_VISION,
    RECIPIENT,
    VISION_END,
    VISION_START,
)


class RenderError(ValueError):
    """A trajectory that cannot become a training sample, with the record named."""


@dataclass
class Segment:
    text: str
    trained: bool
    token_ids: list[int] | None = None  # exact ids to use instead of tokenizing `text`
    close: str | None = None  # the end-of-turn text a sampled turn must end with
    image: str | None = None  # set on a vision span: the image it stands for
    continuation: bool = False  # tokenized as it reads mid-string (no word-start piece of its own)


@dataclass
class Rendered:
    id: str
    input_ids: list[int]
    loss_mask: list[int]
    segments: list[Segment] = field(default_factory=list)
    images: list[str] = field(default_factory=list)  # one per vision span, in order

    @property
    def n_trained(self) -> int:
        return sum(self.loss_mask)


@dataclass(frozen=True)
class ChatTemplate:
    """A chat layout as plain functions of turns; no tokenizer knowledge here.

    `assistant_header` is the untrained text that opens an agent turn (and ends a generation
    prompt); `end_of_turn` is what closes an agent turn, trained with it; `stop` are the special
    tokens whose sampling ends a turn (each must be one token of the vocabulary).
    """

    name: str
    segments: Callable[[Sequence[Turn]], list[Segment]]
    assistant_header: str
    end_of_turn: str
    special_tokens: tuple[str, ...]
    stop: tuple[str, ...] = ()  # single tokens that end a sampled turn (default: `end_of_turn`)


def _user_side(turns: Sequence[Turn]) -> list[list[Turn]]:
    """Group turns into runs: consecutive non-agent turns together, each agent turn alone."""
    runs: list[list[Turn]] = []
    for turn in turns:
        if turn.role != AGENT and runs and runs[-1][0].role != AGENT:
            runs[-1].append(turn)
        else:
            runs.append([turn])
    return runs


def _agent_segment(turn: Turn, text: str, end: str) -> Segment:
    if turn.token_ids is None:
        return Segment(text + end, trained=turn.trained)
    return Segment(text + end, trained=turn.trained, token_ids=list(turn.token_ids), close=end)


# --- Llama-2 [INST], the layout ETO trains with --------------------------------------------------
# FastChat's "llama-2" conversation, token for token: "[INST] u0 [/INST] a0 </s><s>[INST] u1 ...".
# User segments start where the tokenizer starts a fresh section anyway (the string's start, or
# after "<s>"); an agent turn " a0 </s>" follows "[/INST]" mid-string, so it is tokenized as a
# continuation: SentencePiece would otherwise give its leading space a "▁" of its own on
# tokenizers that prepend "▁" to every section (transformers 4.x "legacy" Llama).
def _llama2(turns: Sequence[Turn]) -> list[Segment]:
    segs: list[Segment] = []
    for run in _user_side(turns):
        if run[0].role == AGENT:
            seg = _agent_segment(run[0], " " + run[0].text, " </s>")
            seg.continuation = True
            segs.append(seg)
            continue
        system = "\n\n".join(t.text for t in run if t.role == SYSTEM)
        user = "\n\n".join(t.text for t in run if t.role != SYSTEM)
        body = f"<<SYS>>\n{system}\n<</SYS>>\n\n{user}" if system else user
        trained = any(t.trained for t in run)
        if not segs:  # the string FastChat tokenizes starts here, after the tokenizer's own BOS
            segs += [Segment("<s>", trained=False), Segment(f"[INST] {body} [/INST]", trained=trained)]
        else:
            segs.append(Segment(f"<s>[INST] {body} [/INST]", trained=trained))
    return segs


# The user block already ends with " [/INST]", so an agent turn needs no header of its own. Only
# EOS stops a sampled turn: " </s>" tokenizes as "▁" + EOS, and "▁" alone is the piece Llama writes
# before every digit, so stopping on it would cut "go to cabinet 1" short.
LLAMA2 = ChatTemplate("llama2", _llama2, "", " </s>", ("<s>", "</s>"), stop=("</s>",))


# --- ChatML / Qwen2, with AGUVIS recipient routing ------------------------------------------------
_CHATML_ROLE = {"system": "system", "task": "user", "observation": "user", "agent": "assistant"}


def _turn_images(turn: Turn) -> list[str]:
    if isinstance(turn.image, str):
        return [turn.image]
    return list(turn.image or [])


def _chatml_user(turn: Turn, role: str) -> list[Segment]:
    """A non-agent turn; Qwen2-VL writes each image as a vision span where the text has `<image>`."""
    images = _turn_images(turn)
    if not images:
        return [Segment(f"{IM_START}{role}\n{turn.text}{IM_END}\n", trained=turn.trained)]
    text, spans = turn.text, images
    placeholders = text.count(IMAGE_PLACEHOLDER)
    if len(images) > placeholders:
        # Images beyond the placeholders go first, each on its own line, so none is dropped silently.
        text = (IMAGE_PLACEHOLDER + "\n") * (len(images) - placeholders) + text
        spans = images[placeholders:] + images[:placeholders]
    parts = text.split(IMAGE_PLACEHOLDER)
    segs = [Segment(f"{IM_START}{role}\n{parts[0]}", trained=turn.trained)]
    for i, part in enumerate(parts[1:]):
        # A placeholder with no image left keeps the single-pad span (a text-only rendering).
        image = spans[i] if i < len(spans) else None
        segs.append(Segment(QWEN_VISION, trained=False, image=image))
        segs.append(Segment(part, trained=turn.trained))
    segs[-1].text += f"{IM_END}\n"
    return [s for s in segs if s.text]


def _chatml(turns: Sequence[Turn], mask: str = "agent") -> list[Segment]:
    segs: list[Segment] = []
    for turn in turns:
        role = _CHATML_ROLE[turn.role]
        if turn.role != AGENT:
            segs.extend(_chatml_user(turn, role))
            continue
        whole = mask == "aguvis" and turn.trained  # header and newline trained too (MASK_MODES)
        end = DIFF_MARKER if turn.end_turn else IM_END
        if turn.recipient is not None:
            # The recipient name is the model's choice in self-plan mode, so it is trained.
            segs.append(Segment(f"{IM_START}assistant{RECIPIENT}", trained=whole))
            segs.append(_agent_segment(turn, f"{turn.recipient}\n{turn.text}", end))
        else:
            segs.append(Segment(f"{IM_START}assistant\n", trained=whole))
            segs.append(_agent_segment(turn, turn.text, end))
        segs.append(Segment("\n", trained=whole))
    return segs


CHATML = ChatTemplate(
    "chatml",
    _chatml,
    f"{IM_START}assistant\n",
    IM_END,
    (IM_START, IM_END, RECIPIENT, DIFF_MARKER, VISION_START, IMAGE_PAD, VISION_END),
)

# Loss masks (`Renderer(mask=)`): `agent` trains an agent turn's text and end marker; `aguvis` (chatml
# only) the whole assistant message, header and trailing newline too, as AGUVIS's dataset.py labels it.
MASK_MODES = ("agent", "aguvis")
CHATML_AGUVIS_MASK = replace(CHATML, segments=lambda turns: _chatml(turns, "aguvis"))


def _with_mask(name: str, template: ChatTemplate | None, mask: str) -> ChatTemplate | None:
    """`template` under loss-mask mode `mask`; `aguvis` exists for the chatml layout only."""
    if mask not in MASK_MODES:
        raise RenderError(f"unknown loss mask {mask!r}; choose one of {', '.join(MASK_MODES)}")
    if mask == "aguvis" and template is not CHATML:
        raise RenderError(f"loss mask {mask!r} needs template chatml or qwen2, not {name!r}")
    return CHATML_AGUVIS_MASK if mask == "aguvis" else template


# --- Llama-3 --------------------------------------------------------------------------------------
def _llama3(turns: Sequence[Turn]) -> list[Segment]:
    segs = [Segment("<|begin_of_text|>", trained=False)]
    for turn in turns:
        role = _CHATML_ROLE[turn.role]
        header = f"<|start_header_id|>{role}<|end_header_id|>\n\n"
        if turn.role == AGENT:
            segs.append(Segment(header, trained=False))
            segs.append(_agent_segment(turn, turn.text, "<|eot_id|>"))
        else:
            segs.append(Segment(f"{header}{turn.text}<|eot_id|>", trained=turn.trained))
    return segs


LLAMA3 = ChatTemplate(
    "llama3",
    _llama3,
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "<|eot_id|>",
    ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
)


# --- The built-in tiny model's own layout ---------------------------------------------------------
_TINY_ROLE = {"system": "<|system|>", "task": "<|user|>", "observation": "<|user|>", "agent": "<|agent|>"}


def _tiny(turns: Sequence[Turn]) -> list[Segment]:
    segs = [Segment("<|bos|>", trained=False)]
    for turn in turns:
        if turn.role == AGENT:
            segs.append(Segment("<|agent|>\n", trained=False))
            segs.append(_agent_segment(turn, turn.text, "<|end|>"))
            segs.append(Segment("\n", trained=False))
        else:
            segs.append(Segment(f"{_TINY_ROLE[turn.role]}\n{turn.text}<|end|>\n", trained=turn.trained))
    return segs


TINY = ChatTemplate(
    "tiny", _tiny, "<|agent|>\n", "<|end|>", ("<|bos|>", "<|system|>", "<|user|>", "<|agent|>", "<|end|>")
)

TEMPLATES: dict[str, ChatTemplate] = {
    "llama2": LLAMA2,
    "chatml": CHATML,
    "qwen2": CHATML,
    "llama3": LLAMA3,
    "tiny": TINY,
}
TEMPLATE_NAMES = (*TEMPLATES, "hf")

# The tiny model's template as a Jinja chat template, with generation markers, so HF's
# `apply_chat_template(..., return_assistant_tokens_mask=True)` and TRL agree with `render`.
TINY_JINJA = (
    "{{ '<|bos|>' }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|agent|>\\n' }}{% generation %}{{ message['content'] + '<|end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{% elif message['role'] == 'system' %}{{ '<|system|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% else %}{{ '<|user|>\\n' + message['content'] + '<|end|>\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|agent|>\\n' }}{% endif %}"
)


def get_template(name: str) -> ChatTemplate:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise RenderError(f"unknown template {name!r}; choose one of {', '.join(TEMPLATE_NAMES)}") from None


def to_chat_messages(turns: Sequence[Turn]) -> list[dict[str, str]]:
    """Turns as HF chat messages (system/user/assistant)."""
    return [{"role": _CHATML_ROLE[t.role], "content": t.text} for t in turns]


class Renderer:
    """Binds a template to a tokenizer. `render` for training, `prompt_ids` for sampling.

    `image_tokens` (image path -> number of visual tokens), given for a vision-language model,
    makes every vision span hold that many `<|image_pad|>` ids; without it a span holds one, as
    in text-only renderings.
    `mask` (`MASK_MODES`): `agent` trains an agent turn's text and end marker; `aguvis` (chatml /
    qwen2) the whole assistant message, role header and newline included. Prompts are the same.
    """

    def __init__(
        self,
        tokenizer: Any,
        template: str = "tiny",
        image_tokens: Callable[[str], int] | None = None,
        mask: str = "agent",
    ):
        self.tokenizer = tokenizer
        self.template_name = template
        self.mask = mask
        self.template = _with_mask(template, None if template == "hf" else get_template(template), mask)
        self.image_tokens = image_tokens
        self._cache: dict[str, list[int]] = {}
        self._stops: frozenset[int] | None = None

    def _stop_set(self) -> frozenset[int]:
        if self._stops is None:
            self._stops = frozenset(self.stop_ids)
        return self._stops

    def encode(self, text: str, continuation: bool = False) -> list[int]:
        """Ids of `text`; with `continuation`, as it reads after other text (a SentencePiece
        tokenizer adds no word-start piece there): the ids of "a" + text, less those of "a"."""
        key = ("\0" if continuation else "") + text
        ids = self._cache.get(key)
        if ids is None:
            if continuation:
                anchor = self.encode("a")
                ids = self.encode("a" + text)
                if ids[: len(anchor)] != anchor:  # the text merged into the anchor: no clean cut
                    ids = self.encode(text)
                else:
                    ids = ids[len(anchor) :]
            else:
                ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            if len(text) < 64:  # headers and end markers repeat in every sample
                self._cache[key] = ids
        return ids

    @property
    def end_of_turn_ids(self) -> list[int]:
        """The ids that close an agent turn in a rendering (appended to a turn cut off unclosed)."""
        if self.template is None:
            return [self.tokenizer.eos_token_id]
        return self.encode(self.template.end_of_turn, continuation=True)

    @property
    def stop_ids(self) -> list[int]:
        """The ids whose sampling ends a turn: single special tokens, never a piece of text."""
        if self.template is None:
            return [self.tokenizer.eos_token_id]
        ids = []
        for text in self.template.stop or (self.template.end_of_turn,):
            piece = self.encode(text)
            if len(piece) != 1:
                raise RenderError(
                    f"template {self.template_name!r}: stop token {text!r} is {len(piece)} tokens in "
                    "this tokenizer's vocabulary; a stop must be one token (add it as a special token)"
                )
            ids.append(piece[0])
        return ids

    def _vision_ids(self, record_id: str, image: str) -> list[int]:
        assert self.image_tokens is not None
        try:
            n = int(self.image_tokens(image))
        except (OSError, ValueError) as err:
            raise RenderError(f"record {record_id!r}: cannot size image {image!r}: {err}") from None
        if n < 1:
            raise RenderError(f"record {record_id!r}: image {image!r} yields no visual tokens")
        return self.encode(VISION_START) + self.encode(IMAGE_PAD) * n + self.encode(VISION_END)

    def _tokenize(self, record_id: str, segments: list[Segment]) -> Rendered:
        ids: list[int] = []
        mask: list[int] = []
        images: list[str] = []
        for seg in segments:
            if seg.image is not None:
                images.append(seg.image)
            if seg.image is not None and self.image_tokens is not None:
                seg_ids = self._vision_ids(record_id, seg.image)
            elif seg.token_ids is not None:
                seg_ids = list(seg.token_ids)
                # A sampled turn cut off by the token limit never emitted a stop token; close it so
                # the sample keeps the template's structure. A turn that stopped is kept verbatim.
                close = self.encode(seg.close or "", continuation=True)
                stopped = bool(seg_ids) and seg_ids[-1] in self._stop_set()
                if close and not stopped and seg_ids[-len(close) :] != close:
                    seg_ids += close
            else:
                seg_ids = self.encode(seg.text, continuation=seg.continuation)
            ids.extend(seg_ids)
            mask.extend([int(seg.trained)] * len(seg_ids))
        return Rendered(record_id, ids, mask, segments, images)

    def _check_images(self, record_id: str, turns: Sequence[Turn], out: Rendered) -> None:
        """With a vision model, an image the template could not show is an error, not a loss."""
        if self.image_tokens is None:
            return
        wanted = sum(len(_turn_images(t)) for t in turns)
        if len(out.images) != wanted:
            raise RenderError(
                f"record {record_id!r}: {wanted} image(s) but template {self.template_name!r} "
                f"rendered {len(out.images)} vision span(s); use template qwen2 for image turns"
            )

    def render(self, trajectory: Trajectory, *, require_trained: bool = True) -> Rendered:
        if not trajectory.turns:
            raise RenderError(f"record {trajectory.id!r}: no turns to render")
        if self.template is None:
            out = self._render_hf(trajectory)
        else:
            out = self._tokenize(trajectory.id, self.template.segments(trajectory.turns))
        self._check_images(trajectory.id, trajectory.turns, out)
        if require_trained and out.n_trained == 0:
            raise RenderError(
                f"record {trajectory.id!r}: empty loss mask (no trained agent tokens); "
                "a sample with nothing to learn is refused rather than silently skipped"
            )
        return out

    def prompt_ids(self, turns: Sequence[Turn], assistant_header: str | None = None) -> list[int]:
        """Ids of `turns` followed by the opening of a new agent turn: what the sampler continues.

        This is, token for token, the prefix the full rendering will have once the sampled turn
        is appended, so stored rollouts train on exactly what was sampled.
        """
        return self.prompt(turns, assistant_header).input_ids

    def prompt(self, turns: Sequence[Turn], assistant_header: str | None = None) -> Rendered:
        """`prompt_ids` with the images of its vision spans (`.images`), for a vision model."""
        if self.template is None:
            if any(t.image for t in turns) and self.image_tokens is not None:
                raise RenderError("prompt: template 'hf' cannot render image turns; use qwen2")
            ids = self.tokenizer.apply_chat_template(
                to_chat_messages(turns), tokenize=True, add_generation_prompt=True, return_dict=False
            )
            return Rendered("prompt", list(ids), [0] * len(ids))
        out = self._tokenize("prompt", self.template.segments(turns)) if turns else Rendered("prompt", [], [])
        self._check_images("prompt", turns, out)
        header = self.template.assistant_header if assistant_header is None else assistant_header
        if header:
            out.segments.append(Segment(header, trained=False))
            out.input_ids += self.encode(header)
            out.loss_mask += [0] * (len(out.input_ids) - len(out.loss_mask))
        return out

    def _render_hf(self, trajectory: Trajectory) -> Rendered:
        tok = self.tokenizer
        if any(t.token_ids is not None for t in trajectory.turns):
            raise RenderError(
                f"record {trajectory.id!r}: template 'hf' re-tokenizes text and cannot keep sampled "
                "token ids; use a built-in template for rollouts"
            )
        enc = tok.apply_chat_template(
            to_chat_messages(trajectory.turns),
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
        )
        ids = list(enc["input_ids"])
        mask = [int(m) for m in enc["assistant_masks"]]
        if not any(mask) and trajectory.agent_turns:
            raise RenderError(
                f"record {trajectory.id!r}: the tokenizer's chat template marks no assistant tokens; "
                "template 'hf' needs {% generation %} markers"
            )
        segments: list[Segment] = []
        start = 0
        for i in range(1, len(ids) + 1):
            if i == len(ids) or mask[i] != mask[start]:
                segments.append(Segment(tok.decode(ids[start:i]), trained=bool(mask[start])))
                start = i
        return Rendered(trajectory.id, ids, mask, segments)


def render(trajectory: Trajectory, template: str, tokenizer: Any) -> tuple[list[int], list[int]]:
    """Shortcut: `(input_ids, loss_mask)` of one trajectory."""
    out = Renderer(tokenizer, template).render(trajectory)
    return out.input_ids, out.loss_mask


def show(rendered: Rendered, color: bool = True) -> str:
    """The rendered text with trained spans in green and untrained spans in red (or [[...]])."""
    parts = []
    for seg in rendered.segments:
        if color:
            parts.append(f"\x1b[{'32' if seg.trained else '31'}m{seg.text}\x1b[0m")
        else:
            parts.append(f"[[{seg.text}]]" if seg.trained else seg.text)
    return "".join(parts)
