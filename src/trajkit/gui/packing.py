"""Pack grounding pairs that share a screenshot into multi-turn samples.

Grounding data has many (instruction -> action) pairs per screenshot. Packing them into one
conversation puts the image in the prompt once: the first user turn carries it (and the `<image>`
placeholder), each later pair adds a user turn and an `os` answer turn.

A sample holds at most `max_turns` pairs (one pair = one user turn + one answer turn) and at most
`max_tokens` approximate tokens, counted over every turn's text by `count_tokens`. A pair too long
for the budget on its own still becomes a sample by itself, flagged `over_budget` in its metadata,
so nothing is dropped without a trace. Pairs keep their input order unless `shuffle_seed` is given,
in which case the order is a fixed function of that seed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from trajkit.data.schema import AGENT, SYSTEM, TASK, Trajectory, Turn
from trajkit.gui.tokens import IMAGE_PLACEHOLDER

# What the first user turn of a sample starts with: the placeholder on a line of its own.
IMAGE_LINE = f"{IMAGE_PLACEHOLDER}\n"


@dataclass(frozen=True)
class GroundingPair:
    """One instruction and the action code that grounds it."""

    instruction: str
    code: str


def estimate_tokens(text: str) -> int:
    """Rough token count without a tokenizer: words, or characters / 4 when that is larger."""
    return max(len(text.split()), math.ceil(len(text) / 4))


def _pair_turns(pair: GroundingPair, first: bool, image: str | list[str] | None) -> list[Turn]:
    prompt = pair.instruction
    if first and not prompt.startswith(IMAGE_LINE):
        prompt = IMAGE_LINE + prompt
    return [
        Turn(role=TASK, text=prompt, image=image if first else None),
        Turn(role=AGENT, text=pair.code, recipient="os", end_turn=True),
    ]


def pack_grounding(
    image: str | list[str],
    pairs: Sequence[GroundingPair],
    *,
    max_turns: int = 16,
    max_tokens: int | None = 4096,
    count_tokens: Callable[[str], int] = estimate_tokens,
    system: str | None = None,
    image_tokens: int = 0,
    id_prefix: str | None = None,
    shuffle_seed: int | None = None,
) -> list[Trajectory]:
    """Pack the pairs of one screenshot into as few samples as the caps allow.

    `image_tokens` is what the screenshot itself costs in the budget (counted once per sample).
    Sample ids are `{id_prefix}-{n}` (id_prefix defaults to the image name).
    """
    if max_turns < 1:
        raise ValueError(f"max_turns must be >= 1, got {max_turns}")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1 or None, got {max_tokens}")
    order = list(pairs)
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(order)
    prefix = id_prefix if id_prefix is not None else (image if isinstance(image, str) else image[0])
    base_cost = image_tokens + (count_tokens(system) if system else 0)

    groups: list[tuple[list[GroundingPair], int]] = []
    current: list[GroundingPair] = []
    cost = base_cost
    for pair in order:
        pair_cost = sum(count_tokens(t.text) for t in _pair_turns(pair, not current, image))
        fits_tokens = max_tokens is None or cost + pair_cost <= max_tokens
        if current and (len(current) >= max_turns or not fits_tokens):
            groups.append((current, cost))
            current, cost = [], base_cost
            pair_cost = sum(count_tokens(t.text) for t in _pair_turns(pair, True, image))
        current.append(pair)
        cost += pair_cost
    if current:
        groups.append((current, cost))

    out: list[Trajectory] = []
    for n, (group, group_cost) in enumerate(groups):
        turns: list[Turn] = [Turn(role=SYSTEM, text=system)] if system else []
        for i, pair in enumerate(group):
            turns.extend(_pair_turns(pair, i == 0, image))
        metadata: dict[str, Any] = {
            "format": "aguvis-grounding",
            "pairs": len(group),
            "approx_tokens": group_cost,
        }
        if max_tokens is not None and group_cost > max_tokens:
            metadata["over_budget"] = True
        out.append(Trajectory(id=f"{prefix}-{n}", turns=turns, metadata=metadata))
    return out


def group_by_image(records: Iterable[Mapping[str, Any]]) -> dict[str, list[GroundingPair]]:
    """Group `{"image", "instruction", "code"}` records by image, in first-seen order."""
    groups: dict[str, list[GroundingPair]] = {}
    for i, rec in enumerate(records):
        missing = [k for k in ("image", "instruction", "code") if k not in rec]
        if missing:
            raise ValueError(f"record {i}: missing {', '.join(missing)}")
        groups.setdefault(str(rec["image"]), []).append(
            GroundingPair(str(rec["instruction"]), str(rec["code"]))
        )
    return groups


def pack_grounding_records(records: Iterable[Mapping[str, Any]], **options: Any) -> list[Trajectory]:
    """Group records by screenshot and pack each group (options as in `pack_grounding`)."""
    out: list[Trajectory] = []
    for image, pairs in group_by_image(records).items():
        out.extend(pack_grounding(image, pairs, **options))
    return out
