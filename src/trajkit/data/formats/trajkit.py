"""trajkit's own records: one `Trajectory.to_dict()` per record, lossless."""

from __future__ import annotations

from typing import Any

from trajkit.data.formats._common import (
    TURN_KEYS,
    Issue,
    ReadOptions,
    RecordError,
    WriteOptions,
    check_trajectory_keys,
    check_turn_keys,
    describe,
)
from trajkit.data.schema import AGENT, ROLE_ALIASES, ROLES, Trajectory


class TrajkitFormat:
    name = "trajkit"

    def check(self, record: Any, options: ReadOptions, conventions: bool = True) -> list[Issue]:
        if not isinstance(record, dict):
            return [Issue("record", f"record is {describe(record)}; expected an object")]
        issues = check_trajectory_keys(record)
        if "id" not in record:
            issues.append(Issue("id", "missing 'id'"))
        metadata = record.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            issues.append(Issue("metadata", f"metadata is {describe(metadata)}; expected an object"))
        if "turns" not in record:
            return [*issues, Issue("turns", "missing 'turns'")]
        turns = record["turns"]
        if not isinstance(turns, list):
            return [*issues, Issue("turns", f"turns is {describe(turns)}; expected a list")]
        if not turns:
            return [*issues, Issue("turns", "no turns")]
        last_role = None
        for i, turn in enumerate(turns):
            where = f"turns[{i}]"
            last_role = None
            if not isinstance(turn, dict):
                issues.append(Issue(where, f"turn is {describe(turn)}; expected an object"))
                continue
            role = turn.get("role")
            if "role" not in turn:
                issues.append(Issue(f"{where}.role", "missing 'role'"))
            elif not isinstance(role, str) or (role not in ROLES and role not in ROLE_ALIASES):
                issues.append(
                    Issue(f"{where}.role", f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
                )
            else:
                last_role = ROLE_ALIASES.get(role, role)
            text = turn.get("text")
            if "text" not in turn:
                issues.append(Issue(f"{where}.text", "missing 'text'"))
            elif not isinstance(text, str):
                issues.append(Issue(f"{where}.text", f"value is {describe(text)}; expected a string"))
            elif not text.strip():
                issues.append(Issue(f"{where}.text", "empty value", structural=False))
            issues += check_turn_keys(turn, where, TURN_KEYS)
        if last_role is not None and last_role != AGENT:
            issues.append(
                Issue(
                    f"turns[{len(turns) - 1}].role",
                    f"trajectory ends with a {last_role!r} turn; expected an agent turn",
                    False,
                )
            )
        return issues if conventions else [i for i in issues if i.structural]

    def read(self, record: Any, index: int, options: ReadOptions) -> Trajectory:
        issues = self.check(record, options, conventions=False)
        if issues:
            raise RecordError(issues[0].field, issues[0].message)
        return Trajectory.from_dict(record)

    def write(self, trajectory: Trajectory, options: WriteOptions) -> dict[str, Any]:
        return trajectory.to_dict()
