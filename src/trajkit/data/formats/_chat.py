"""`ChatFormat`: a record holding a list of role-tagged messages, read and written generically.

Subclasses describe their message shape with a `MessageSpec` and override the small hooks for what
is special about them (ETO's task id, AGUVIS images, LLaMA-Factory's `system` key).
"""

from __future__ import annotations

from typing import Any

from trajkit.data.formats._common import (
    AGENT_KIND,
    OBSERVATION_KIND,
    SYSTEM_KIND,
    TURN_EXTRAS,
    TURN_KEYS,
    TURN_ROLES,
    USER,
    Issue,
    MessageSpec,
    ReadOptions,
    RecordError,
    WriteOptions,
    assign_user_roles,
    check_trajectory_keys,
    check_turn_keys,
    describe,
    extra_metadata,
    metadata_to_write,
    record_id,
    trajectory_fields,
    write_trajectory_fields,
)
from trajkit.data.schema import AGENT, OBSERVATION, SYSTEM, TASK, Trajectory, Turn

# Raw kinds a canonical role may be written as.
_KINDS_FOR_ROLE = {
    SYSTEM: {SYSTEM_KIND},
    TASK: {USER},
    OBSERVATION: {USER, OBSERVATION_KIND},
    AGENT: {AGENT_KIND},
}


class ChatFormat:
    name: str = ""
    spec: MessageSpec
    # Top-level record keys the format owns; every other key is kept in metadata.
    reserved: tuple[str, ...] = ()
    # Role spellings remembered in metadata so writing gives them back (OpenAI "tool", ...).
    remembered_spellings: tuple[str, ...] = ()

    def __init__(self, name: str | None = None, role_key: str | None = None, text_key: str | None = None):
        if name:
            self.name = name
        # The keys written out; reading accepts every key in the spec.
        self.role_key = role_key or self.spec.role_keys[0]
        self.text_key = text_key or self.spec.text_keys[0]

    # ---- checking -------------------------------------------------------------------------------

    def check(self, record: Any, options: ReadOptions, conventions: bool = True) -> list[Issue]:
        """Every problem of one record; with `conventions` off, only those that stop reading it."""
        spec = self.spec
        issues: list[Issue] = []
        if isinstance(record, list) and spec.allow_bare_list:
            messages: Any = record
            prefix = ""
        elif not isinstance(record, dict):
            return [Issue("record", f"record is {describe(record)}; expected an object")]
        else:
            issues += check_trajectory_keys(record)
            issues += self.check_record_keys(record, options)
            if spec.list_key not in record:
                issues.append(Issue(spec.list_key, f"missing '{spec.list_key}'"))
                return issues
            messages = record[spec.list_key]
            prefix = spec.list_key
        if not isinstance(messages, list):
            issues.append(Issue(prefix or "record", f"{describe(messages)}; expected a list of messages"))
            return issues
        if not messages:  # a system prompt alone has no turn to train on
            issues.append(Issue(prefix or "record", "no messages"))
            return issues

        kinds: list[str | None] = []
        for i, message in enumerate(messages):
            kind, message_issues = self.check_message(message, f"{prefix}[{i}]")
            kinds.append(kind)
            issues += message_issues
        if conventions:
            issues += self.check_order(messages, kinds, prefix, record)
            issues += self.check_conventions(record, messages, options)
        return issues if conventions else [i for i in issues if i.structural]

    def check_message(self, message: Any, where: str) -> tuple[str | None, list[Issue]]:
        spec = self.spec
        if not isinstance(message, dict):
            return None, [Issue(where, f"message is {describe(message)}; expected an object")]
        issues: list[Issue] = []
        kind = None
        role_keys = [k for k in spec.role_keys if k in message]
        if not role_keys:
            issues.append(Issue(f"{where}.{spec.role_keys[0]}", f"missing '{spec.role_keys[0]}'"))
        else:
            role_key = role_keys[0]
            spelling = message[role_key]
            # Both spellings present (`from` and `role`) is fine as long as they mean the same.
            meanings = {
                spec.kinds.get(message[k]) if isinstance(message[k], str) else None for k in role_keys
            }
            if len(role_keys) > 1 and len(meanings) > 1:
                issues.append(Issue(f"{where}.{role_key}", f"'{role_keys[0]}' and '{role_keys[1]}' disagree"))
            elif not isinstance(spelling, str) or spelling not in spec.kinds:
                expected = ", ".join(sorted(spec.kinds))
                issues.append(
                    Issue(f"{where}.{role_key}", f"unknown role {spelling!r}; expected one of {expected}")
                )
            else:
                kind = spec.kinds[spelling]
        text_keys = [k for k in spec.text_keys if k in message]
        if not text_keys:
            if not self.text_may_be_missing(message):
                issues.append(Issue(f"{where}.{spec.text_keys[0]}", f"missing '{spec.text_keys[0]}'"))
        else:
            text_key = text_keys[0]
            text = message[text_key]
            if text is None and self.text_may_be_missing(message):
                pass
            elif not isinstance(text, str):
                issues.append(Issue(f"{where}.{text_key}", f"value is {describe(text)}; expected a string"))
            elif not text.strip():
                issues.append(Issue(f"{where}.{text_key}", "empty value", structural=False))
        issues += check_turn_keys(message, where, spec.extra_turn_keys)
        return kind, issues

    def check_order(
        self, messages: list[Any], kinds: list[str | None], prefix: str, record: Any
    ) -> list[Issue]:
        """Training conventions on the order of turns."""
        issues: list[Issue] = []
        has_system_prefix = bool(self.prefix_turns(record))

        def role_key(i: int) -> str:
            return next(k for k in self.spec.role_keys if k in messages[i])

        def where(i: int) -> str:
            return f"{prefix}[{i}].{role_key(i)}"

        def side(kind: str) -> str:
            return "agent" if kind == AGENT_KIND else "human"

        previous: str | None = None
        first_non_system_seen = False
        for i, kind in enumerate(kinds):
            if kind is None:
                previous = None
                continue
            if kind == SYSTEM_KIND:
                if i > 0 or has_system_prefix:
                    issues.append(Issue(where(i), "a system message may only come first", structural=False))
                previous = None
                continue
            if not first_non_system_seen:
                first_non_system_seen = True
                if kind == AGENT_KIND:
                    issues.append(
                        Issue(
                            where(i),
                            "conversation starts with an agent turn; expected a human turn first",
                            False,
                        )
                    )
            if previous is not None and side(previous) == side(kind):
                both = f"{prefix}[{i - 1}] and {prefix}[{i}]"
                if side(kind) == "agent" and self.spec.alternation in ("agent", "strict"):
                    issues.append(Issue(where(i), f"two agent turns in a row ({both})", structural=False))
                elif side(kind) == "human" and self.spec.alternation == "strict":
                    issues.append(Issue(where(i), f"two human turns in a row ({both})", structural=False))
            previous = kind
        last = len(kinds) - 1
        if last >= 0 and kinds[last] is not None and kinds[last] != AGENT_KIND:
            spelling = messages[last][role_key(last)]
            issues.append(
                Issue(
                    where(last), f"conversation ends with a {spelling!r} turn; expected an agent turn", False
                )
            )
        return issues

    # ---- hooks ----------------------------------------------------------------------------------

    def check_record_keys(self, record: dict[str, Any], options: ReadOptions) -> list[Issue]:
        return []

    def check_conventions(self, record: Any, messages: list[Any], options: ReadOptions) -> list[Issue]:
        return []

    def text_may_be_missing(self, message: dict[str, Any]) -> bool:
        return False

    def prefix_turns(self, record: Any) -> list[Turn]:
        """Turns held outside the message list (LLaMA-Factory's `system` key)."""
        return []

    def fields(self, record: dict[str, Any], trajectory_id: str) -> dict[str, Any]:
        return trajectory_fields(record)

    def finish_read(self, trajectory: Trajectory, record: dict[str, Any], options: ReadOptions) -> None:
        """Adjust a freshly read trajectory in place."""

    def finish_write(self, out: dict[str, Any], trajectory: Trajectory, options: WriteOptions) -> None:
        """Adjust a freshly written record in place."""

    def write_fields(self, trajectory: Trajectory) -> dict[str, Any]:
        return write_trajectory_fields(trajectory)

    def split_turns(self, trajectory: Trajectory, out: dict[str, Any]) -> int:
        """Move leading turns into record keys; returns how many turns were taken."""
        return 0

    # ---- reading --------------------------------------------------------------------------------

    def read(self, record: Any, index: int, options: ReadOptions) -> Trajectory:
        issues = self.check(record, options, conventions=False)
        if issues:
            raise RecordError(issues[0].field, issues[0].message)
        spec = self.spec
        messages = record if isinstance(record, list) else record[spec.list_key]
        record_dict: dict[str, Any] = record if isinstance(record, dict) else {}

        turns = self.prefix_turns(record_dict)
        offset = len(turns)
        kinds, texts, spellings = [], [], []
        extras: dict[str, dict[str, Any]] = {}
        turn_fields: list[dict[str, Any]] = []
        for i, message in enumerate(messages):
            role_key = next(k for k in spec.role_keys if k in message)
            text_key = next((k for k in spec.text_keys if k in message), None)
            spellings.append(message[role_key])
            kinds.append(spec.kinds[message[role_key]])
            texts.append((message[text_key] if text_key else None) or "")
            turn_fields.append({k: message[k] for k in spec.extra_turn_keys if message.get(k) is not None})
            unknown = {
                k: v
                for k, v in message.items()
                if k not in spec.role_keys and k not in spec.text_keys and k not in spec.extra_turn_keys
            }
            if unknown:
                extras[str(offset + i)] = unknown
        roles = assign_user_roles(kinds, texts, spec.user_rule)
        remembered: dict[str, str] = {}
        for i, (role, text, spelling, more) in enumerate(
            zip(roles, texts, spellings, turn_fields, strict=True)
        ):
            turns.append(Turn(role=role, text=text, **more))
            if spelling in self.remembered_spellings:
                remembered[str(offset + i)] = spelling

        trajectory_id = record_id(record_dict, index, options)
        metadata = extra_metadata(record_dict, (spec.list_key, *self.reserved))
        if extras:
            metadata[TURN_EXTRAS] = extras
        if remembered:
            metadata[TURN_ROLES] = remembered
        trajectory = Trajectory(
            id=trajectory_id, turns=turns, metadata=metadata, **self.fields(record_dict, trajectory_id)
        )
        self.finish_read(trajectory, record_dict, options)
        return trajectory

    # ---- writing --------------------------------------------------------------------------------

    def write(self, trajectory: Trajectory, options: WriteOptions) -> dict[str, Any]:
        spec = self.spec
        out = self.write_fields(trajectory)
        out.update(metadata_to_write(trajectory, (spec.list_key, *self.reserved)))
        extras = trajectory.metadata.get(TURN_EXTRAS) or {}
        remembered = trajectory.metadata.get(TURN_ROLES) or {}
        start = self.split_turns(trajectory, out)
        messages = []
        for index in range(start, len(trajectory.turns)):
            turn = trajectory.turns[index]
            spelling = remembered.get(str(index))
            if spelling not in spec.kinds or spec.kinds[spelling] not in _KINDS_FOR_ROLE[turn.role]:
                spelling = spec.spellings[turn.role]
            message: dict[str, Any] = {self.role_key: spelling, self.text_key: turn.text}
            for key in spec.extra_turn_keys:
                value = getattr(turn, key)
                if value is not None:
                    message[key] = value
            for key, value in (extras.get(str(index)) or {}).items():
                message.setdefault(key, value)
            messages.append(message)
        out[spec.list_key] = messages
        self.finish_write(out, trajectory, options)
        return out


__all__ = ["ChatFormat", "TURN_KEYS"]
