"""Reading and writing trajectory files, folders and Hugging Face datasets.

`load_trajectories` turns any supported source into `Trajectory` records; `write_trajectories`
writes them in any format, atomically. Errors are `DataError`s naming file, record and field:
`FILE:RECORD_INDEX:FIELD: message`. `datasets` is imported only when a hub dataset is asked for.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from trajkit.data.files import DataError, atomic_writer, read_text
from trajkit.data.formats import (
    FORMAT_NAMES,
    ReadOptions,
    RecordError,
    WriteOptions,
    detect_format,
    get_format,
)
from trajkit.data.formats._common import describe
from trajkit.data.schema import Trajectory

DATA_SUFFIXES = (".json", ".jsonl")
# `owner/name`: what a Hugging Face dataset id looks like.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# ---- raw records ---------------------------------------------------------------------------------


def _position(text: str, pos: int) -> tuple[int, int]:
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return line, column


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _json_error(file: str, record: int | None, line: int, column: int, message: str) -> DataError:
    return DataError(
        f"invalid JSON at line {line}, column {column}: {message}", file=file, record=record, field="json"
    )


# JSON nested deeper than this is refused: readers walk records recursively.
MAX_DEPTH = 100
_SURROGATE = re.compile("[\ud800-\udfff]")


def _too_deep(file: str, record: int | None) -> DataError:
    return DataError(f"nested deeper than {MAX_DEPTH} levels", file=file, record=record, field="json")


def _path(node: tuple | None) -> str:
    parts: list[str] = []
    while node is not None:
        node, key = node
        parts.append(f"[{key}]" if isinstance(key, int) else f".{key}")
    return "".join(reversed(parts)).lstrip(".") or "record"


def checked_value(value: Any, file: str, record: int | None) -> Any:
    """`value` after refusing what Python's JSON reader takes but no reader can use: nesting
    deeper than MAX_DEPTH, numbers that are not finite, and text with a lone surrogate
    (`\\udc80`: not Unicode, cannot be written as UTF-8)."""
    # Iterative, and paths are built only for the error: a walk must be cheap and cannot recurse.
    stack: list[tuple[Any, int, tuple | None]] = [(value, 0, None)]
    while stack:
        item, depth, node = stack.pop()
        if depth > MAX_DEPTH:
            raise _too_deep(file, record)
        if isinstance(item, str):
            found = _SURROGATE.search(item)
            if found:
                message = f"text holds a lone surrogate \\u{ord(found.group()):04x} (not valid Unicode)"
                raise DataError(message, file=file, record=record, field=_path(node))
        elif isinstance(item, float) and not math.isfinite(item):
            # NaN / Infinity / 1e999: Python reads them, JSON has no such numbers and NaN compares
            # false with everything (a NaN reward would be a tie); refused wherever they are.
            message = f"value is {item}; expected a finite number"
            raise DataError(message, file=file, record=record, field=_path(node))
        elif isinstance(item, dict):
            for key, child in item.items():
                if _SURROGATE.search(key):
                    message = "a key holds a lone surrogate (not valid Unicode)"
                    raise DataError(message, file=file, record=record, field=_path(node))
                stack.append((child, depth + 1, (node, key)))
        elif isinstance(item, list):
            stack.extend((child, depth + 1, (node, i)) for i, child in enumerate(item))
    return value


def _scan_jsonl(text: str, file: str) -> Iterator[tuple[int, Any]]:
    index = 0
    # Split on "\n" only: str.splitlines would also break inside strings at U+2028 and friends.
    for line_number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            yield index, checked_value(json.loads(line), file, index)
        except json.JSONDecodeError as err:
            yield index, _json_error(file, index, line_number, err.colno, err.msg)
        except RecursionError:
            yield index, _too_deep(file, index)
        except DataError as err:
            yield index, err
        index += 1


def _scan_json_list(text: str, file: str, start: int) -> Iterator[tuple[int, Any]]:
    """Elements of the top-level list one by one, so a syntax error names the record it is in."""
    decoder = json.JSONDecoder()
    index = 0
    pos = _skip_space(text, start + 1)
    if pos < len(text) and text[pos] == "]":
        pos = _skip_space(text, pos + 1)
    else:
        while True:
            try:
                value, end = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as err:
                yield index, _json_error(file, index, err.lineno, err.colno, err.msg)
                return
            except RecursionError:
                yield index, _too_deep(file, index)
                return
            try:
                yield index, checked_value(value, file, index)
            except DataError as err:
                yield index, err
            index += 1
            pos = _skip_space(text, end)
            if pos < len(text) and text[pos] == ",":
                pos = _skip_space(text, pos + 1)
                continue
            if pos < len(text) and text[pos] == "]":
                pos = _skip_space(text, pos + 1)
                break
            found = "end of file" if pos >= len(text) else repr(text[pos])
            yield (
                index,
                _json_error(file, index, *_position(text, pos), f"expected ',' or ']' but found {found}"),
            )
            return
    if pos < len(text):
        yield index, _json_error(file, index, *_position(text, pos), "extra data after the top-level list")


def scan_records(path: str | os.PathLike[str]) -> Iterator[tuple[int, Any]]:
    """Yield `(index, record)` for each record of a file, or `(index, DataError)` where one is unreadable.

    A `.jsonl` file holds one record per line; keeps going past broken lines. A `.json` file holds a
    list of records or one record object (JSON lines in a `.json` file are read as such too).
    A file-level failure (missing, unreadable, empty) is yielded as `(-1, DataError)`.
    """
    file = str(path)
    try:
        text = read_text(path)
    except DataError as err:
        yield -1, err
        return
    if Path(path).suffix.lower() in (".jsonl", ".ndjson"):
        yield from _scan_jsonl(text, file)
        return
    start = _skip_space(text, 0)
    if start == len(text):
        yield (
            -1,
            DataError(
                "empty file; expected a JSON list of records or one record object", file=file, field="file"
            ),
        )
        return
    if text[start] == "[":
        yield from _scan_json_list(text, file, start)
        return
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data" and text[start] == "{":
            yield from _scan_jsonl(text, file)
        else:
            yield 0, _json_error(file, 0, err.lineno, err.colno, err.msg)
        return
    except RecursionError:
        yield 0, _too_deep(file, 0)
        return
    if isinstance(value, dict):
        try:
            yield 0, checked_value(value, file, 0)
        except DataError as err:
            yield 0, err
        return
    kind = type(value).__name__ if value is not None else "null"
    kind = {"str": "a string", "int": "a number", "float": "a number", "bool": "a boolean"}.get(kind, kind)
    yield (
        -1,
        DataError(
            f"top-level JSON value is {kind}; expected a list of records or one record object",
            file=file,
            field="file",
        ),
    )


def iter_records(path: str | os.PathLike[str]) -> Iterator[tuple[int, Any]]:
    """Yield `(index, record)` for each record of a `.json` or `.jsonl` file; raise `DataError` on bad JSON."""
    for index, record in scan_records(path):
        if isinstance(record, DataError):
            raise record
        yield index, record


def data_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The `.json` and `.jsonl` files under a folder, sorted; hidden files (temporaries) are skipped."""
    root = Path(folder)
    found = [
        p
        for p in root.rglob("*")
        if p.suffix.lower() in DATA_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    return sorted(found)


# ---- trajectories --------------------------------------------------------------------------------


def _check_format_name(format: str, file: str | None) -> None:
    if format != "auto" and format not in FORMAT_NAMES:
        raise DataError(
            f"unknown format {format!r}; expected auto or one of {', '.join(FORMAT_NAMES)}",
            file=file,
            field="format",
        )


def undetectable(file: str, index: int, record: Any) -> DataError:
    keys = f" (keys: {', '.join(sorted(record)[:8])})" if isinstance(record, dict) else ""
    return DataError(
        "cannot tell the format: expected a 'conversations', 'messages' or 'turns' list" + keys,
        file=file,
        record=index,
        field="conversations",
    )


def records_to_trajectories(
    records: Iterable[tuple[int, Any]], file: str, format: str = "auto", options: ReadOptions | None = None
) -> list[Trajectory]:
    """Read raw `(index, record)` pairs; the format is detected from the first record when "auto"."""
    _check_format_name(format, file)
    options = options or ReadOptions()
    reader = None if format == "auto" else get_format(format)
    out: list[Trajectory] = []
    for index, record in records:
        if isinstance(record, DataError):
            raise record
        if reader is None:
            name = detect_format(record)
            if name is None and not isinstance(record, (dict, list)):
                message = f"record is {describe(record)}; expected an object"
                raise DataError(message, file=file, record=index, field="record")
            if name is None:
                raise undetectable(file, index, record)
            reader = get_format(name)
        try:
            out.append(reader.read(record, index, options))
        except RecordError as err:
            raise DataError(err.message, file=file, record=index, field=err.field) from None
    return out


def read_file(
    path: str | os.PathLike[str], format: str = "auto", image_root: str | os.PathLike[str] | None = None
) -> list[Trajectory]:
    """Trajectories of one `.json`/`.jsonl` file; image paths resolve against `image_root` or the file's folder."""
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    options = ReadOptions(stem=path.stem, image_root=root)
    return records_to_trajectories(scan_records(path), str(path), format, options)


def is_hub_id(source: str) -> bool:
    return bool(_HUB_ID.match(source)) and not Path(source).exists()


def _drop_nulls(value: Any) -> Any:
    # Arrow fills keys a row lacks with null; treat those as absent.
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def load_hub_records(dataset_id: str, split: str = "train") -> list[tuple[int, Any]]:
    import datasets  # heavy; only for hub sources

    try:
        dataset = datasets.load_dataset(dataset_id, split=split)
    except Exception as err:  # any failure (offline, missing split) becomes one clear line
        raise DataError(
            f"cannot load dataset split {split!r}: {err}", file=dataset_id, field="dataset"
        ) from err
    return [(i, _drop_nulls(row)) for i, row in enumerate(dataset)]


def load_trajectories(
    source: str | os.PathLike[str],
    format: str = "auto",
    split: str = "train",
    image_root: str | os.PathLike[str] | None = None,
) -> list[Trajectory]:
    """Trajectories from a `.json`/`.jsonl` file, a folder of them, or a Hugging Face dataset id.

    `format` is "auto" (detected per file from its first record) or a format name. `split` applies
    to hub datasets only. `image_root` anchors relative image paths (default: each file's folder).
    """
    _check_format_name(format, str(source))
    path = Path(source)
    if path.is_dir():
        files = data_files(path)
        if not files:
            raise DataError("no .json or .jsonl files in this folder", file=str(path), field="file")
        out: list[Trajectory] = []
        for file in files:
            out += read_file(file, format, image_root)
        return out
    if path.exists():
        return read_file(path, format, image_root)
    if isinstance(source, str) and is_hub_id(source):
        stem = source.rsplit("/", 1)[-1]
        root = Path(image_root) if image_root is not None else None
        options = ReadOptions(stem=stem, image_root=root)
        return records_to_trajectories(load_hub_records(source, split), source, format, options)
    raise DataError("no such file or folder", file=str(source), field="file")


def write_trajectories(
    trajectories: Iterable[Trajectory],
    path: str | os.PathLike[str],
    format: str = "trajkit",
    *,
    image_root: str | os.PathLike[str] | None = None,
) -> Path:
    """Write trajectories atomically: a `.json` path gets a JSON list, any other path JSON lines.

    The file appears complete or not at all: records go to a temporary file in the same folder,
    which then replaces `path`. Image paths under `image_root` (default: the file's folder) are
    written relative to it (AGUVIS).
    """
    path = Path(path)
    if format == "auto" or format not in FORMAT_NAMES:
        raise DataError(
            f"unknown format {format!r}; expected one of {', '.join(FORMAT_NAMES)}",
            file=str(path),
            field="format",
        )
    writer = get_format(format)
    options = WriteOptions(image_root=Path(image_root) if image_root is not None else path.parent)
    records = [writer.write(t, options) for t in trajectories]
    if path.suffix.lower() == ".json":
        text = json.dumps(records, ensure_ascii=False, indent=2) + "\n"
    else:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    with atomic_writer(path) as fh:
        fh.write(text)
    return path


__all__ = [
    "DATA_SUFFIXES",
    "DataError",
    "data_files",
    "is_hub_id",
    "iter_records",
    "load_trajectories",
    "read_file",
    "records_to_trajectories",
    "scan_records",
    "write_trajectories",
]
