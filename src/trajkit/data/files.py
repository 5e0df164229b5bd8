"""Files a user gives trajkit and files trajkit writes, checked the same way everywhere.

Reading takes regular files only (a named pipe or a device would block or never end), at most
`max_input_bytes()` of them. Writing is whole or not at all: the text goes to a temporary file in
the target's folder, which then replaces the target. A target that is not a regular file (a
device such as /dev/full, a folder, a pipe) is refused, never replaced, and every failure (no
permission, a full disk, a file-size limit) is one `DataError` line naming the file.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

MAX_INPUT_ENV = "TRAJKIT_MAX_INPUT_BYTES"
DEFAULT_MAX_INPUT = 1 << 30  # 1 GiB: parsed JSON takes several times its size in memory


class DataError(ValueError):
    """A data problem, located: `str()` is `FILE:RECORD_INDEX:FIELD: message` (`-` where unknown)."""

    def __init__(
        self,
        message: str,
        *,
        file: str | os.PathLike[str] | None = None,
        record: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.file = None if file is None else str(file)
        self.record = record
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        record = "-" if self.record is None else str(self.record)
        return f"{self.file or '-'}:{record}:{self.field or '-'}: {self.message}"


def max_input_bytes() -> int:
    raw = os.environ.get(MAX_INPUT_ENV, "")
    return int(raw) if raw.strip().isdigit() else DEFAULT_MAX_INPUT


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def kind_of(mode: int) -> str | None:
    """What a non-regular file is, in words; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def reason(err: OSError) -> str:
    """An OSError as the few words a user needs ("no space left on device")."""
    if err.errno == errno.EFBIG:
        return "file too large (a file-size limit was reached)"
    text = err.strerror or str(err)
    return text[:1].lower() + text[1:]


def read_bytes(path: str | os.PathLike[str], limit: int | None = None) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (default `max_input_bytes()`)."""
    file = str(path)
    limit = max_input_bytes() if limit is None else limit
    try:
        kind = kind_of(os.stat(file).st_mode)
        if kind is not None:
            raise DataError(f"is {kind}, not a regular file", file=file, field="file")
        # O_NONBLOCK: were a pipe swapped in after the check, opening it must not wait for a writer.
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise DataError("no such file", file=file, field="file") from None
    except OSError as err:
        raise DataError(f"cannot read: {reason(err)}", file=file, field="file") from None
    try:
        info = os.fstat(fd)
        kind = kind_of(info.st_mode)
        if kind is not None:
            raise DataError(f"is {kind}, not a regular file", file=file, field="file")
        too_big = DataError(
            f"larger than the {_size(limit)} read limit (set {MAX_INPUT_ENV} to raise it)",
            file=file,
            field="file",
        )
        if info.st_size > limit:
            raise too_big
        chunks, total = [], 0
        while True:  # the size can lie (a file still growing, /proc): read at most limit + 1
            chunk = os.read(fd, min(1 << 24, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise too_big
        return b"".join(chunks)
    except OSError as err:
        raise DataError(f"cannot read: {reason(err)}", file=file, field="file") from None
    finally:
        os.close(fd)


def read_text(path: str | os.PathLike[str], limit: int | None = None) -> str:
    """A regular file as UTF-8 text (a leading BOM dropped); anything else is a `DataError`."""
    data = read_bytes(path, limit)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(
            f"not UTF-8 text ({err.reason} at byte {err.start})", file=str(path), field="file"
        ) from None


def output_target(path: str | os.PathLike[str]) -> Path:
    """Where writing `path` lands (a symlink's target, so the link stays), after refusing a target
    that exists and is not a regular file."""
    path = Path(path)
    real = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        kind = kind_of(os.stat(real).st_mode)
    except FileNotFoundError:
        return real
    except OSError as err:
        raise DataError(f"cannot write: {reason(err)}", file=str(path), field="file") from None
    if kind is not None:
        raise DataError(
            f"is {kind}, not a regular file; refusing to write over it", file=str(path), field="file"
        )
    return real


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_writer(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO]:
    """A handle whose content replaces `path` when the block ends without error; the target is
    untouched otherwise. A missing folder is created. `mode`: "w" (UTF-8 text) or "wb"."""
    shown = str(path)
    target = output_target(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as err:
        raise DataError(f"cannot write: {reason(err)}", file=shown, field="file") from None
    try:
        with os.fdopen(handle, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        try:  # keep an existing file's mode; a new one gets what a plain open would give it
            new_mode = stat.S_IMODE(os.stat(target).st_mode)
        except FileNotFoundError:
            new_mode = 0o666 & ~_current_umask()
        os.chmod(temp, new_mode)
        os.replace(temp, target)
    except OSError as err:
        Path(temp).unlink(missing_ok=True)
        raise DataError(f"cannot write: {reason(err)}", file=shown, field="file") from None
    except UnicodeEncodeError as err:  # a lone surrogate from code, not from a file (those are refused)
        Path(temp).unlink(missing_ok=True)
        message = f"cannot write: text holds {err.object[err.start : err.end]!r}, which is not valid Unicode"
        raise DataError(message, file=shown, field="file") from None
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """`text` as the whole new content of `path` (see `atomic_writer`)."""
    with atomic_writer(path) as fh:
        fh.write(text)
    return Path(path)


def clean_temporaries(folder: str | os.PathLike[str]) -> None:
    """Remove the temporary files an interrupted `atomic_writer` left in `folder` (not below it).
    Only for folders no other process writes to (a locked run folder, a stage's work folder)."""
    for leftover in Path(folder).glob(".*.tmp"):
        if leftover.is_file() and not leftover.is_symlink():
            leftover.unlink(missing_ok=True)


__all__ = [
    "DataError",
    "atomic_writer",
    "clean_temporaries",
    "kind_of",
    "max_input_bytes",
    "output_target",
    "read_bytes",
    "read_text",
    "reason",
    "write_text_atomic",
]
