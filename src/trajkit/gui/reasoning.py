"""AGUVIS step records and the reasoning mixture.

A step keeps its parts apart (`GuiStep`: observation, thought, low-level instruction, code), so the
inner monologue is written only when a sample is built, at a chosen level:

    none  the bare code: one `os` turn
    l1    "Action: {instruction}", then the code
    l2    "Thought: ...", "Action: ...", then the code
    l3    "Observation: ...", "Thought: ...", "Action: ...", then the code

The monologue is an agent turn to recipient `all` (end_turn False); the code is an agent turn to
recipient `os` (end_turn True), as in AGUVIS's own records.

A `ReasoningMixture` says how often each level is used for a dataset. It is a mapping, so a level
cannot be listed twice, and `load_mixture_yaml` refuses YAML with a repeated key rather than letting
the last one silently win. The level of a sample is a pure function of (seed, sample id).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from trajkit.data.schema import AGENT, OBSERVATION, SYSTEM, TASK, Trajectory, Turn

LEVELS = ("none", "l1", "l2", "l3")
# Monologue lines of each level, in the order they are written.
LEVEL_FIELDS: dict[str, tuple[str, ...]] = {
    "none": (),
    "l1": ("instruction",),
    "l2": ("thought", "instruction"),
    "l3": ("observation", "thought", "instruction"),
}
FIELD_LABELS = {"observation": "Observation", "thought": "Thought", "instruction": "Action"}
_LABEL_FIELDS = {label: name for name, label in FIELD_LABELS.items()}
_LABEL_LINE = re.compile(r"^(Observation|Thought|Action):[ \t]?", re.MULTILINE)

RECIPIENT_ALL, RECIPIENT_OS = "all", "os"


class MixtureError(ValueError):
    """A reasoning mixture that is not a valid level -> weight mapping."""


@dataclass(frozen=True)
class GuiStep:
    """One GUI step with its reasoning parts kept apart."""

    code: str
    instruction: str | None = None  # low-level instruction, written as "Action: ..."
    thought: str | None = None
    observation: str | None = None

    def available_levels(self) -> tuple[str, ...]:
        """The levels whose monologue fields this step has."""
        return tuple(lvl for lvl in LEVELS if all(getattr(self, f) for f in LEVEL_FIELDS[lvl]))


@dataclass(frozen=True)
class GuiExchange:
    """A user prompt and the step that answers it."""

    prompt: str
    step: GuiStep


@dataclass
class GuiSample:
    """One AGUVIS record: a screenshot, an optional system prompt, and its exchanges."""

    id: str
    image: str | list[str] | None
    exchanges: list[GuiExchange]
    system: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def available_levels(self) -> tuple[str, ...]:
        levels = set(LEVELS)
        for ex in self.exchanges:
            levels &= set(ex.step.available_levels())
        return tuple(lvl for lvl in LEVELS if lvl in levels)


def _check_level(level: str) -> None:
    if level not in LEVELS:
        raise ValueError(f"unknown reasoning level {level!r}; expected one of {', '.join(LEVELS)}")


def monologue(step: GuiStep, level: str) -> str | None:
    """The inner monologue of `step` at `level`, or None for level `none`."""
    _check_level(level)
    names = LEVEL_FIELDS[level]
    if not names:
        return None
    missing = [n for n in names if not getattr(step, n)]
    if missing:
        raise ValueError(f"level {level} needs {', '.join(missing)}, which this step lacks")
    return "\n".join(f"{FIELD_LABELS[n]}: {getattr(step, n)}" for n in names)


def step_turns(step: GuiStep, level: str) -> list[Turn]:
    """The agent turns of a step: an optional `all` monologue turn, then the `os` code turn."""
    text = monologue(step, level)
    code_turn = Turn(role=AGENT, text=step.code, recipient=RECIPIENT_OS, end_turn=True)
    if text is None:
        return [code_turn]
    return [Turn(role=AGENT, text=text, recipient=RECIPIENT_ALL, end_turn=False), code_turn]


def split_monologue(text: str) -> dict[str, str]:
    """Split an `all` turn ("Observation: ...\\nThought: ...\\nAction: ...") into its fields.

    Returns a dict with the keys found among observation, thought, instruction. A value may span
    several lines; a label counts only at the start of a line.
    """
    matches = list(_LABEL_LINE.finditer(text))
    if not matches:
        raise ValueError(f"monologue has no Observation:/Thought:/Action: line: {text[:80]!r}")
    lead = text[: matches[0].start()].strip()
    if lead:
        raise ValueError(f"monologue has text before its first label: {lead[:80]!r}")
    out: dict[str, str] = {}
    for i, m in enumerate(matches):
        name = _LABEL_FIELDS[m.group(1)]
        if name in out:
            raise ValueError(f"monologue repeats the label {m.group(1)!r}")
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        out[name] = text[m.end() : end].strip()
    return out


def step_from_turns(monologue_text: str | None, code: str) -> GuiStep:
    """Rebuild a step from an optional `all` turn and its `os` code turn."""
    parts = split_monologue(monologue_text) if monologue_text and monologue_text.strip() else {}
    return GuiStep(code=code, **parts)


# ---------------------------------------------------------------------------------------------
# records and trajectories


def _stable_id(record: Mapping[str, Any]) -> str:
    blob = json.dumps(record, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _exchanges_from_messages(
    messages: Iterable[tuple[str, str, str | None]], where: str
) -> tuple[str | None, list[GuiExchange]]:
    """Group (role, text, recipient) messages into a system prompt and exchanges."""
    system: str | None = None
    exchanges: list[GuiExchange] = []
    prompt: str | None = None
    pending_monologue: str | None = None
    for index, (role, text, recipient) in enumerate(messages):
        at = f"{where}: message {index}"
        if role == SYSTEM:
            if exchanges or prompt is not None or system is not None:
                raise ValueError(f"{at}: a system message may only come first")
            system = text
        elif role in (TASK, OBSERVATION):  # env trajectories carry each screen as an observation
            if prompt is not None:
                # Two user messages in a row: keep both, as one prompt.
                prompt = f"{prompt}\n{text}"
            else:
                prompt = text
        elif role == AGENT:
            if prompt is None:
                raise ValueError(f"{at}: an assistant message with no user message before it")
            if recipient == RECIPIENT_ALL:
                if pending_monologue is not None:
                    raise ValueError(f"{at}: two 'all' turns in a row")
                pending_monologue = text
                continue
            if recipient not in (None, RECIPIENT_OS):
                raise ValueError(f"{at}: unknown recipient {recipient!r}")
            exchanges.append(GuiExchange(prompt, step_from_turns(pending_monologue, text)))
            prompt, pending_monologue = None, None
        else:
            raise ValueError(f"{at}: unexpected role {role!r}")
    if pending_monologue is not None or prompt is not None:
        raise ValueError(f"{where}: ends without an 'os' code turn")
    if not exchanges:
        raise ValueError(f"{where}: no exchanges")
    return system, exchanges


def sample_from_aguvis(record: Mapping[str, Any], sample_id: str | None = None) -> GuiSample:
    """Read an AGUVIS record ({"image", "conversations": [{"from", "value", "recipient"}...]}).

    The id is `sample_id`, else the record's `id`, else a hash of the record (stable across runs).
    """
    conversations = record.get("conversations")
    if not isinstance(conversations, list):
        raise ValueError("an AGUVIS record needs a 'conversations' list")
    sid = sample_id if sample_id is not None else str(record.get("id") or _stable_id(record))
    messages = []
    for i, msg in enumerate(conversations):
        if not isinstance(msg, Mapping) or "from" not in msg or "value" not in msg:
            raise ValueError(f"record {sid}: message {i} needs 'from' and 'value'")
        role = Turn(role=msg["from"], text="").role  # canonical role, with the schema's aliases
        messages.append((role, str(msg["value"]), msg.get("recipient")))
    system, exchanges = _exchanges_from_messages(messages, f"record {sid}")
    metadata = {k: v for k, v in record.items() if k not in ("image", "conversations", "id")}
    return GuiSample(id=sid, image=record.get("image"), exchanges=exchanges, system=system, metadata=metadata)


def sample_to_aguvis(sample: GuiSample, level: str) -> dict[str, Any]:
    """Write a sample back as an AGUVIS record with its monologue at `level`."""
    conversations: list[dict[str, Any]] = []
    if sample.system is not None:
        conversations.append({"from": "system", "value": sample.system, "recipient": None, "end_turn": None})
    for ex in sample.exchanges:
        conversations.append({"from": "human", "value": ex.prompt, "recipient": None, "end_turn": None})
        for turn in step_turns(ex.step, level):
            conversations.append(
                {"from": "gpt", "value": turn.text, "recipient": turn.recipient, "end_turn": turn.end_turn}
            )
    return {"id": sample.id, "image": sample.image, "conversations": conversations}


def sample_to_trajectory(sample: GuiSample, level: str, *, env: str | None = None) -> Trajectory:
    """Build the trajkit trajectory of a sample, monologue at `level`.

    The first user turn carries the screenshot (the `<image>` placeholder stays in its text).
    """
    turns: list[Turn] = []
    if sample.system is not None:
        turns.append(Turn(role=SYSTEM, text=sample.system))
    for i, ex in enumerate(sample.exchanges):
        turns.append(Turn(role=TASK, text=ex.prompt, image=sample.image if i == 0 else None))
        turns.extend(step_turns(ex.step, level))
    metadata = {**sample.metadata, "format": "aguvis", "reasoning_level": level}
    return Trajectory(id=sample.id, turns=turns, env=env, metadata=metadata)


def sample_from_trajectory(trajectory: Trajectory) -> GuiSample:
    """Split a trajectory's `all` turns back into step fields."""
    messages = [(t.role, t.text, t.recipient) for t in trajectory.turns]
    system, exchanges = _exchanges_from_messages(messages, f"trajectory {trajectory.id}")
    image = next((t.image for t in trajectory.turns if t.image), None)
    metadata = {k: v for k, v in trajectory.metadata.items() if k not in ("format", "reasoning_level")}
    return GuiSample(id=trajectory.id, image=image, exchanges=exchanges, system=system, metadata=metadata)


# ---------------------------------------------------------------------------------------------
# mixture


@dataclass(frozen=True)
class ReasoningMixture:
    """How often each reasoning level is used: level -> weight (weights need not sum to 1)."""

    weights: Mapping[str, float]

    def __post_init__(self) -> None:
        if not isinstance(self.weights, Mapping):
            raise MixtureError(
                f"a mixture is a mapping of level -> weight, got {type(self.weights).__name__}"
            )
        clean: dict[str, float] = {}
        for level, weight in self.weights.items():
            if level not in LEVELS:
                raise MixtureError(f"unknown reasoning level {level!r}; expected one of {', '.join(LEVELS)}")
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
                raise MixtureError(f"weight of {level} must be a finite number, got {weight!r}")
            if weight < 0:
                raise MixtureError(f"weight of {level} must be >= 0, got {weight!r}")
            clean[level] = float(weight)
        if sum(clean.values()) <= 0:
            raise MixtureError("mixture weights must sum to more than 0")
        object.__setattr__(self, "weights", clean)

    def probabilities(self) -> dict[str, float]:
        total = sum(self.weights.values())
        return {lvl: self.weights.get(lvl, 0.0) / total for lvl in LEVELS}

    def choose(self, seed: int | str, sample_id: str, available: Iterable[str] = LEVELS) -> str:
        """The level for one sample: deterministic in (seed, sample_id).

        Levels the sample cannot express (`available`) are left out and the rest renormalized.
        """
        allowed = set(available)
        candidates = [(lvl, self.weights.get(lvl, 0.0)) for lvl in LEVELS if lvl in allowed]
        candidates = [(lvl, w) for lvl, w in candidates if w > 0]
        if not candidates:
            raise MixtureError(
                f"sample {sample_id}: no level with weight > 0 is available (has {', '.join(sorted(allowed)) or 'none'})"
            )
        total = sum(w for _, w in candidates)
        u = _unit_hash(seed, sample_id) * total
        for lvl, w in candidates:
            if u < w:
                return lvl
            u -= w
        return candidates[-1][0]  # float round-off at the top end


def _unit_hash(seed: int | str, sample_id: str) -> float:
    digest = hashlib.sha256(f"{seed}\x00{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML loader that refuses a mapping with a repeated key."""


def _construct_unique_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise MixtureError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1}")
        seen[key] = True
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def load_strict_yaml(text: str) -> Any:
    """Parse YAML safely, refusing repeated keys in any mapping."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: builds no objects
    except yaml.YAMLError as err:
        raise MixtureError(f"invalid YAML: {err}") from None


def load_mixture_yaml(text: str) -> ReasoningMixture:
    """Read one mixture, e.g. `{l1: 0.5, l2: 0.3, l3: 0.2}`."""
    data = load_strict_yaml(text)
    if not isinstance(data, Mapping):
        raise MixtureError("a mixture YAML must be a mapping of level -> weight")
    return ReasoningMixture(data)


def load_dataset_mixtures_yaml(text: str) -> dict[str, ReasoningMixture]:
    """Read one mixture per dataset: `{dataset_name: {l1: 0.5, ...}, ...}`."""
    data = load_strict_yaml(text)
    if not isinstance(data, Mapping):
        raise MixtureError("expected a mapping of dataset name -> mixture")
    out: dict[str, ReasoningMixture] = {}
    for name, weights in data.items():
        try:
            out[str(name)] = ReasoningMixture(weights)
        except MixtureError as err:
            raise MixtureError(f"dataset {name}: {err}") from None
    return out


def mix_samples(
    samples: Iterable[GuiSample], mixture: ReasoningMixture, seed: int | str, *, env: str | None = None
) -> list[Trajectory]:
    """Trajectories of samples, each at the level the mixture picks for (seed, sample id)."""
    out = []
    for sample in samples:
        level = mixture.choose(seed, sample.id, sample.available_levels())
        out.append(sample_to_trajectory(sample, level, env=env))
    return out


def with_level(trajectory: Trajectory, level: str) -> Trajectory:
    """Re-render a trajectory's monologues at another level."""
    sample = sample_from_trajectory(trajectory)
    out = sample_to_trajectory(sample, level, env=trajectory.env)
    return replace(
        out,
        task_id=trajectory.task_id,
        split=trajectory.split,
        reward=trajectory.reward,
        success=trajectory.success,
    )
