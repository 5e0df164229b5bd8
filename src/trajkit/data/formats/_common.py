"""Pieces shared by the chat-style formats: checks, role assignment, field round-tripping.

A format turns one raw record (a parsed JSON value) into a `Trajectory` and back. It knows nothing
about files: problems are reported as `Issue(field, message)` with `field` a path inside the record
such as `conversations[3].from`; the I/O layer adds the file name and record index.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trajkit.data.schema import AGENT, OBSERVATION, SYSTEM, TASK, Trajectory

# Metadata keys the chat formats use to give back what their own record shape cannot hold.
TURN_EXTRAS = "turn_extras"  # {turn index: {unknown message key: value}}
TURN_ROLES = "turn_roles"  # {turn index: original role spelling}, only where it is not the default
BOOKKEEPING_KEYS = (TURN_EXTRAS, TURN_ROLES)

# Trajectory fields every chat format reads from and writes to optional top-level record keys.
TRAJECTORY_KEYS = ("id", "task_id", "env", "split", "reward", "success")
# Turn fields a chat message may carry as optional keys next to its role and text.
TURN_KEYS = ("image", "recipient", "end_turn", "token_ids", "train")

# Raw role kinds; "user" becomes TASK or OBSERVATION depending on the format's rule.
USER, AGENT_KIND, SYSTEM_KIND, OBSERVATION_KIND = "user", "agent", "system", "observation"
KIND_OF_ROLE = {SYSTEM: SYSTEM_KIND, TASK: USER, OBSERVATION: OBSERVATION_KIND, AGENT: AGENT_KIND}


class RecordError(ValueError):
    """A record that cannot be read; `field` says where in the record."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Issue:
    field: str
    message: str
    # Structural issues make a record unreadable; the rest only break a training convention.
    structural: bool = True


@dataclass
class ReadOptions:
    """How to read records: `stem` names generated ids, `image_root` anchors relative image paths."""

    stem: str = "record"
    image_root: Path | None = None
    check_images: bool = False


@dataclass
class WriteOptions:
    """How to write records: image paths under `image_root` are written relative to it."""

    image_root: Path | None = None


@dataclass
class MessageSpec:
    """The shape of one chat format's message list."""

    list_key: str
    role_keys: tuple[str, ...]
    text_keys: tuple[str, ...]
    # Role spelling -> raw kind (system, user, agent, observation).
    kinds: dict[str, str]
    # Canonical role -> spelling written out.
    spellings: dict[str, str]
    # "ack": a user turn is a task until the agent says something other than OK, then observations
    # (ETO: instruction, "OK", task, then observations). "task": every user turn is a task.
    user_rule: str = "ack"
    # None: any order; "agent": no two agent turns in a row; "strict": user side and agent side alternate.
    alternation: str | None = "strict"
    allow_bare_list: bool = False
    extra_turn_keys: tuple[str, ...] = field(default=TURN_KEYS)


def describe(value: Any) -> str:
    """Name a JSON value's type the way a user reading the file would."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def is_acknowledgement(text: str) -> bool:
    return text.strip().rstrip(".!").strip().lower() in {"ok", "okay"}


def assign_user_roles(kinds: list[str], texts: list[str], rule: str) -> list[str]:
    """Canonical roles for raw kinds; user turns become TASK or OBSERVATION by `rule`."""
    roles: list[str] = []
    agent_has_acted = False  # said something other than an acknowledgement
    for kind, text in zip(kinds, texts, strict=True):
        if kind == SYSTEM_KIND:
            roles.append(SYSTEM)
        elif kind == AGENT_KIND:
            roles.append(AGENT)
            agent_has_acted = agent_has_acted or not is_acknowledgement(text)
        elif kind == OBSERVATION_KIND:
            roles.append(OBSERVATION)
        elif rule == "task" or not agent_has_acted:
            roles.append(TASK)
        else:
            roles.append(OBSERVATION)
    return roles


def check_trajectory_keys(record: dict[str, Any]) -> list[Issue]:
    issues: list[Issue] = []
    if "id" in record and (isinstance(record["id"], bool) or not isinstance(record["id"], (str, int))):
        issues.append(Issue("id", f"id is {describe(record['id'])}; expected a string"))
    for key in ("task_id", "env", "split"):
        if record.get(key) is not None and not isinstance(record[key], str):
            issues.append(Issue(key, f"{key} is {describe(record[key])}; expected a string"))
    reward = record.get("reward")
    if reward is not None and (isinstance(reward, bool) or not isinstance(reward, (int, float))):
        issues.append(Issue("reward", f"reward is {describe(reward)}; expected a number"))
    elif isinstance(reward, float) and not math.isfinite(reward):
        # NaN compares false with everything: pairs would call it a tie, metrics would be NaN.
        issues.append(Issue("reward", f"reward is {reward}; expected a finite number"))
    success = record.get("success")
    if success is not None and not isinstance(success, bool):
        issues.append(Issue("success", f"success is {describe(success)}; expected true or false"))
    return issues


def check_turn_keys(message: dict[str, Any], where: str, keys: tuple[str, ...]) -> list[Issue]:
    """Types of the optional turn fields a message may carry."""
    issues: list[Issue] = []
    for key in keys:
        value = message.get(key)
        if value is None:
            continue
        if key == "recipient" and not isinstance(value, str):
            issues.append(Issue(f"{where}.{key}", f"recipient is {describe(value)}; expected a string"))
        elif key in ("end_turn", "train") and not isinstance(value, bool):
            issues.append(Issue(f"{where}.{key}", f"{key} is {describe(value)}; expected true or false"))
        elif key == "token_ids" and not (
            isinstance(value, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in value)
        ):
            issues.append(Issue(f"{where}.{key}", "token_ids must be a list of integers"))
        elif key == "image":
            issues.extend(check_image_value(value, f"{where}.{key}"))
    return issues


def check_image_value(value: Any, where: str) -> list[Issue]:
    if isinstance(value, str):
        return [] if value.strip() else [Issue(where, "image path is empty")]
    if isinstance(value, list) and value:
        issues = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                issues.append(Issue(f"{where}[{i}]", f"image path is {describe(item)}; expected a string"))
            elif not item.strip():
                issues.append(Issue(f"{where}[{i}]", "image path is empty"))
        return issues
    return [Issue(where, f"image is {describe(value)}; expected a path or a non-empty list of paths")]


def record_id(record: dict[str, Any], index: int, options: ReadOptions) -> str:
    value = record.get("id")
    return f"{options.stem}-{index}" if value is None else str(value)


def trajectory_fields(record: dict[str, Any]) -> dict[str, Any]:
    """The optional trajectory fields a chat record carries at its top level."""
    reward = record.get("reward")
    success = record.get("success")
    if success is None and reward is not None:
        success = reward >= 1
    return {
        "task_id": record.get("task_id"),
        "env": record.get("env"),
        "split": record.get("split"),
        "reward": reward,
        "success": success,
    }


def write_trajectory_fields(trajectory: Trajectory) -> dict[str, Any]:
    out: dict[str, Any] = {"id": trajectory.id}
    for key in ("task_id", "env", "split", "reward"):
        value = getattr(trajectory, key)
        if value is not None:
            out[key] = value
    # success is written only where the reward does not already say it.
    derived = None if trajectory.reward is None else trajectory.reward >= 1
    if trajectory.success is not None and trajectory.success != derived:
        out["success"] = trajectory.success
    return out


def extra_metadata(record: dict[str, Any], reserved: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in reserved and k not in TRAJECTORY_KEYS}


def metadata_to_write(trajectory: Trajectory, reserved: tuple[str, ...]) -> dict[str, Any]:
    skip = set(reserved) | set(TRAJECTORY_KEYS) | set(BOOKKEEPING_KEYS)
    return {k: v for k, v in trajectory.metadata.items() if k not in skip}


def resolve_image(path: str, root: Path | None) -> str:
    if root is None:
        return path
    return os.path.abspath(os.path.join(root, path))


def relative_image(path: str, root: Path | None) -> str:
    """Write `path` relative to `root` when it lies under it, otherwise as it is."""
    if root is None or not os.path.isabs(path):
        return path
    root_abs = os.path.abspath(root)
    if os.path.commonpath([root_abs, path]) != root_abs:
        return path
    return Path(os.path.relpath(path, root_abs)).as_posix()


def map_images(image: str | list[str] | None, fn: Any) -> str | list[str] | None:
    if image is None:
        return None
    if isinstance(image, str):
        return fn(image)
    return [fn(p) for p in image]
