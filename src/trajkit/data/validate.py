"""Check trajectory files before training on them, reporting every problem, not just the first.

Each problem prints as `FILE:RECORD_INDEX:FIELD: message`, for instance
`data/train.json:12:conversations[3].from: unknown role 'bot'; expected one of gpt, human, system`.
Beyond what reading needs, the training conventions are checked: no empty values, the last turn
is the agent's, turns alternate where the format requires it, AGUVIS images exist.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trajkit.data.formats import FORMAT_NAMES, ReadOptions, detect_format, get_format
from trajkit.data.formats._common import describe
from trajkit.data.io import DataError, data_files, scan_records, undetectable


@dataclass(frozen=True)
class Problem:
    file: str
    record: int | None
    field: str
    message: str

    def __str__(self) -> str:
        record = "-" if self.record is None else str(self.record)
        return f"{self.file}:{record}:{self.field}: {self.message}"

    @classmethod
    def from_error(cls, err: DataError) -> Problem:
        return cls(err.file or "-", err.record, err.field or "-", err.message)


@dataclass
class Report:
    """What validating some paths found."""

    problems: list[Problem] = field(default_factory=list)
    files: int = 0
    records: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


_FIRST_INDEX = re.compile(r"\[(\d+)\]")


def _reading_order(problem: Problem) -> tuple[int, int]:
    """File-level problems first, then by record and by message position inside it."""
    record = -1 if problem.record is None else problem.record
    match = _FIRST_INDEX.search(problem.field)
    return record, -1 if match is None else int(match.group(1))


def _validate_one_file(
    path: Path, format: str, image_root: Path | None, check_images: bool
) -> tuple[list[Problem], int]:
    file = str(path)
    scanned = list(scan_records(path))
    problems: list[Problem] = []
    records: list[tuple[int, Any]] = []
    for index, record in scanned:
        if isinstance(record, DataError):
            problems.append(Problem.from_error(record))
        else:
            records.append((index, record))
    if not scanned:
        problems.append(Problem(file, None, "file", "no records"))
    if format == "auto":
        format = next((name for _, r in records if (name := detect_format(r)) is not None), "auto")
    options = ReadOptions(
        stem=path.stem,
        image_root=image_root if image_root is not None else path.parent,
        check_images=check_images,
    )
    seen_ids: dict[str, int] = {}
    for index, record in records:
        if format == "auto":
            if isinstance(record, (dict, list)):
                problems.append(Problem.from_error(undetectable(file, index, record)))
                continue
            problems.append(
                Problem(file, index, "record", f"record is {describe(record)}; expected an object")
            )
            continue
        for issue in get_format(format).check(record, options):
            problems.append(Problem(file, index, issue.field, issue.message))
        if isinstance(record, dict) and isinstance(record.get("id"), (str, int)):
            key = str(record["id"])
            if key in seen_ids:
                problems.append(
                    Problem(file, index, "id", f"duplicate id {key!r} (also record {seen_ids[key]})")
                )
            else:
                seen_ids[key] = index
    problems.sort(key=_reading_order)
    return problems, len(records)


def validate_paths(
    paths: Iterable[str | os.PathLike[str]],
    format: str = "auto",
    *,
    image_root: str | os.PathLike[str] | None = None,
    check_images: bool = True,
) -> Report:
    """Validate files and folders (every `.json`/`.jsonl` file inside); never raises on bad data."""
    report = Report()
    root = Path(image_root) if image_root is not None else None
    for raw in paths:
        path = Path(raw)
        if format != "auto" and format not in FORMAT_NAMES:
            report.problems.append(
                Problem(
                    str(path),
                    None,
                    "format",
                    f"unknown format {format!r}; expected auto or one of {', '.join(FORMAT_NAMES)}",
                )
            )
            continue
        if path.is_dir():
            files = data_files(path)
            if not files:
                report.problems.append(
                    Problem(str(path), None, "file", "no .json or .jsonl files in this folder")
                )
        elif path.exists():
            files = [path]
        else:
            report.problems.append(Problem(str(path), None, "file", "no such file or folder"))
            continue
        for file in files:
            problems, count = _validate_one_file(file, format, root, check_images)
            report.problems += problems
            report.files += 1
            report.records += count
    return report


def validate_file(
    path: str | os.PathLike[str],
    format: str = "auto",
    *,
    image_root: str | os.PathLike[str] | None = None,
    check_images: bool = True,
) -> list[Problem]:
    """Every problem of one file (or of each file in a folder); an empty list means valid."""
    return validate_paths([path], format, image_root=image_root, check_images=check_images).problems


__all__ = ["Problem", "Report", "validate_file", "validate_paths"]
