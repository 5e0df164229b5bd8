"""AGUVIS records: `{"image": str | [str], "conversations": [{"from", "value", "recipient", "end_turn"}]}`.

Every human turn is an instruction (a task turn). Consecutive `gpt` turns are normal: an inner
monologue to `all` followed by an action to `os`. `recipient` and `end_turn` stay on the turns.
The record's image(s) attach to the first human turn whose text holds `<image>` (the placeholder
stays in the text). Relative image paths are resolved against the image root (the file's folder
unless given) when read, and written relative to the output's image root when they lie under it.
"""

from __future__ import annotations

import os
from typing import Any

from trajkit.data.formats._chat import ChatFormat
from trajkit.data.formats._common import (
    AGENT_KIND,
    SYSTEM_KIND,
    USER,
    Issue,
    MessageSpec,
    ReadOptions,
    WriteOptions,
    check_image_value,
    map_images,
    relative_image,
    resolve_image,
)
from trajkit.data.schema import AGENT, OBSERVATION, SYSTEM, TASK, Trajectory
from trajkit.gui.tokens import IMAGE_PLACEHOLDER


def image_turn_index(texts: list[str], is_human: list[bool]) -> int | None:
    """Where the record's image belongs: the first human turn showing `<image>`, else the first human turn."""
    humans = [i for i, human in enumerate(is_human) if human]
    for i in humans:
        if IMAGE_PLACEHOLDER in texts[i]:
            return i
    return humans[0] if humans else None


class AguvisFormat(ChatFormat):
    name = "aguvis"
    spec = MessageSpec(
        list_key="conversations",
        role_keys=("from",),
        text_keys=("value",),
        kinds={"system": SYSTEM_KIND, "human": USER, "gpt": AGENT_KIND},
        spellings={SYSTEM: "system", TASK: "human", OBSERVATION: "human", AGENT: "gpt"},
        user_rule="task",
        alternation=None,
    )
    reserved = ("image",)

    def check_record_keys(self, record: dict[str, Any], options: ReadOptions) -> list[Issue]:
        if record.get("image") is None:
            return []
        return check_image_value(record["image"], "image")

    def check_conventions(self, record: Any, messages: list[Any], options: ReadOptions) -> list[Issue]:
        issues: list[Issue] = []
        paths: list[tuple[str, str]] = []  # (field, path)
        image = record.get("image") if isinstance(record, dict) else None
        if isinstance(image, str):
            paths.append(("image", image))
        elif isinstance(image, list):
            paths += [(f"image[{i}]", p) for i, p in enumerate(image) if isinstance(p, str)]
        placeholders = 0
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                continue
            value = message.get("value")
            if isinstance(value, str):
                placeholders += value.count(IMAGE_PLACEHOLDER)
            inner = message.get("image")
            if isinstance(inner, str):
                paths.append((f"conversations[{i}].image", inner))
            elif isinstance(inner, list):
                paths += [
                    (f"conversations[{i}].image[{j}]", p) for j, p in enumerate(inner) if isinstance(p, str)
                ]
        if options.check_images and options.image_root is not None:
            for where, path in paths:
                if path.strip() and not os.path.isfile(resolve_image(path, options.image_root)):
                    issues.append(Issue(where, f"image {path!r} not found under {options.image_root}", False))
        # A malformed image value is reported already; counting its paths would only add noise.
        well_formed = (
            image is None
            or isinstance(image, str)
            or (isinstance(image, list) and all(isinstance(p, str) for p in image))
        )
        if well_formed and placeholders != len(paths) and (paths or placeholders):
            issues.append(
                Issue(
                    "image",
                    f"{len(paths)} image(s) but {placeholders} '{IMAGE_PLACEHOLDER}' placeholder(s) in the text",
                    False,
                )
            )
        return issues

    def finish_read(self, trajectory: Trajectory, record: dict[str, Any], options: ReadOptions) -> None:
        root = options.image_root
        for turn in trajectory.turns:
            turn.image = map_images(turn.image, lambda p: resolve_image(p, root))
        image = record.get("image")
        if image is None:
            return
        texts = [t.text for t in trajectory.turns]
        target = image_turn_index(texts, [t.role == TASK for t in trajectory.turns])
        target = 0 if target is None else target
        resolved = map_images(image, lambda p: resolve_image(p, root))
        turn = trajectory.turns[target]
        if turn.image is None:
            turn.image = resolved
        else:
            # A turn with its own image key too: keep both, record image first.
            own = [turn.image] if isinstance(turn.image, str) else turn.image
            turn.image = ([resolved] if isinstance(resolved, str) else resolved) + own

    def finish_write(self, out: dict[str, Any], trajectory: Trajectory, options: WriteOptions) -> None:
        messages = out["conversations"]
        root = options.image_root
        for message in messages:
            if "image" in message:
                message["image"] = map_images(message["image"], lambda p: relative_image(p, root))
        turns = trajectory.turns
        # Mirror the reader: every turn written as "human" counts.
        target = image_turn_index([t.text for t in turns], [t.role in (TASK, OBSERVATION) for t in turns])
        if target is None and turns:
            target = 0
        if target is not None and "image" in messages[target]:
            image = messages[target].pop("image")
            # Put the image first, where AGUVIS records keep it.
            rest = {k: v for k, v in out.items() if k != "image"}
            out.clear()
            out["image"] = image
            out.update(rest)
