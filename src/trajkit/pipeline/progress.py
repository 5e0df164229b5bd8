"""A run's output: messages and one progress display per stage, on stderr and in RUN_DIR/log.txt.

On a terminal a stage's progress is one line redrawn in place; anywhere else (CI, `make demo >
file`, a pipe) it is a clean line every `interval` seconds and one when the stage finishes, so a
log reads as a page of lines. log.txt gets every message and those same clean lines, with the
time, even with `quiet` (which keeps stderr to errors).

Third-party bars (datasets, transformers, huggingface_hub) are switched off for the run, the
trainers' bars and log dicts are folded into the run's line (`train.hooks`), and library warnings
become log lines.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, TextIO

LOG_FILE = "log.txt"


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Console:
    def __init__(
        self,
        log_path: str | Path | None = None,
        quiet: bool = False,
        stream: TextIO | None = None,
        interval: float | None = None,
    ):
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval if interval is not None else (0.5 if self.tty else 15.0)
        self.file_interval = interval if interval is not None else 15.0
        self.log_path = Path(log_path) if log_path is not None else None
        self._file: TextIO | None = None
        self._bar = False  # a progress line is drawn and not yet ended
        self._displays: dict[str, Progress] = {}
        self._restore: list[Any] = []

    # --- lines ------------------------------------------------------------------------------------
    def _to_file(self, line: str) -> None:
        if self.log_path is None:
            return
        if self._file is None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.log_path.open("a", encoding="utf-8")
        self._file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
        self._file.flush()

    def _end_bar(self) -> None:
        if self._bar:
            self.stream.write("\n")
            self._bar = False

    def log(self, message: str) -> None:
        """A message: one line (or several) on stderr unless quiet, and in log.txt."""
        for line in str(message).splitlines() or [""]:
            self._to_file(line)
        if not self.quiet:
            self._end_bar()
            self.stream.write(f"{message}\n")
            self.stream.flush()

    def file_only(self, message: str) -> None:
        for line in str(message).splitlines() or [""]:
            self._to_file(line)

    def status(self, line: str, final: bool, to_console: bool, to_file: bool) -> None:
        if to_file:
            self._to_file(line)
        if self.quiet or not to_console:
            return
        if self.tty:
            self.stream.write("\r\x1b[2K" + line + ("\n" if final else ""))
            self._bar = not final
        else:
            self._end_bar()
            self.stream.write(line + "\n")
        self.stream.flush()

    # --- displays -----------------------------------------------------------------------------------
    def progress(self, label: str, unit: str) -> Progress:
        """The progress display of one stage (the same object for the same label)."""
        if label not in self._displays:
            self._displays[label] = Progress(self, label, unit)
        return self._displays[label]

    def rollouts(self, label: str):
        """A `run_rollouts` progress callback drawing this stage's line."""
        display = self.progress(label, "episodes")

        def report(p: Any) -> None:
            display.update(p.finished, p.total, steps=p.steps, tokens=p.tokens, seconds=p.seconds)

        return report

    def training(self, label_of):
        """A `train.hooks` progress callback; `label_of(output_dir)` names the stage."""

        def report(output_dir: str, step: int, max_steps: int, logs: dict[str, Any]) -> None:
            display = self.progress(label_of(output_dir), "steps")
            display.update(step, max_steps, **{k: logs[k] for k in ("loss", "tokens_per_s") if k in logs})

        return report

    # --- the run's scope ----------------------------------------------------------------------------
    def __enter__(self) -> Console:
        self._quiet_libraries()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._end_bar()
        for undo in reversed(self._restore):
            undo()
        self._restore.clear()
        if self._file is not None:
            self._file.close()
            self._file = None

    def _quiet_libraries(self) -> None:
        """Library bars off, library warnings as log lines; undone on exit."""
        for module, off, on, is_off in (
            (
                "datasets.utils.logging",
                "disable_progress_bar",
                "enable_progress_bar",
                "is_progress_bar_enabled",
            ),
            (
                "transformers.utils.logging",
                "disable_progress_bar",
                "enable_progress_bar",
                "is_progress_bar_enabled",
            ),
            (
                "huggingface_hub.utils",
                "disable_progress_bars",
                "enable_progress_bars",
                "are_progress_bars_disabled",
            ),
        ):
            try:
                mod = __import__(module, fromlist=[off])
            except ImportError:
                continue
            enabled = getattr(mod, is_off)()
            enabled = not enabled if is_off.startswith("are_") else enabled
            getattr(mod, off)()
            if enabled:
                self._restore.append(getattr(mod, on))
        # TRL's reference log-prob pass draws its own tqdm bar unless this is set (read per call).
        old_env = os.environ.get("TQDM_DISABLE")
        os.environ["TQDM_DISABLE"] = "1"
        self._restore.append(
            lambda: (
                os.environ.pop("TQDM_DISABLE", None)
                if old_env is None
                else os.environ.__setitem__("TQDM_DISABLE", old_env)
            )
        )
        handler = _LineHandler(self)
        for name in ("transformers", "datasets", "trl", "accelerate", "py.warnings"):
            logger = logging.getLogger(name)
            old = logger.propagate
            logger.addHandler(handler)
            logger.propagate = False
            self._restore.append(
                lambda lg=logger, p=old: (lg.removeHandler(handler), setattr(lg, "propagate", p))
            )
        try:  # transformers writes through its own stderr handler; ours replaces it for the run
            from transformers.utils import logging as hf_logging

            hf_logging.disable_default_handler()
            self._restore.append(hf_logging.enable_default_handler)
        except ImportError:
            pass
        old_show = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            self.log(f"warning: {category.__name__}: {str(message).splitlines()[0] if str(message) else ''}")

        warnings.showwarning = show
        self._restore.append(lambda: setattr(warnings, "showwarning", old_show))


class _LineHandler(logging.Handler):
    def __init__(self, console: Console):
        super().__init__(logging.WARNING)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            first = record.getMessage().strip().splitlines()
        except Exception:  # a bad format string in a library's message must not stop the run
            first = [str(record.msg)]
        self.console.log(f"{record.levelname.lower()}: {record.name}: {first[0] if first else ''}")


class Progress:
    """One stage's display: done / total, rate, env steps, tokens/s, loss, ETA. Drawn at most every
    interval, and once more when done reaches total."""

    def __init__(self, console: Console, label: str, unit: str):
        self.console = console
        self.label = label
        self.unit = unit
        self.start = time.perf_counter()
        self.first: int | None = None  # count at the first update: a resume does not start at 0
        self.last_console = self.last_file = -1e9
        self.extra: dict[str, float] = {}
        self.done = self.total = 0
        self.finished = False

    def line(self, now: float) -> str:
        # Rollouts report their own clock (`seconds`, from the engine's start); training counts
        # from its first update, so the rate is this process's speed, not a resumed stage's history.
        elapsed = self.extra.get("seconds", now - self.start)
        rate = (self.done - (self.first or 0)) / max(elapsed, 1e-9)
        head = f"[{self.label}] {self.done}/{self.total} {self.unit}"
        parts = [head + (f" ({100 * self.done / self.total:.0f}%)" if self.total else "")]
        if elapsed > 0 and self.done > (self.first or 0):
            parts.append(f"{rate:.2f} {self.unit}/s")
        if "steps" in self.extra:
            parts.append(f"{int(self.extra['steps'])} env steps")
        if "tokens" in self.extra and elapsed > 0:
            parts.append(f"{self.extra['tokens'] / max(elapsed, 1e-9):.0f} tokens/s")
        if "tokens_per_s" in self.extra:
            parts.append(f"{self.extra['tokens_per_s']:.0f} tokens/s")
        if "loss" in self.extra:
            parts.append(f"loss {self.extra['loss']:.4g}")
        if self.total and self.done < self.total and rate > 0:
            parts.append(f"ETA {_clock((self.total - self.done) / rate)}")
        else:
            parts.append(f"{_clock(elapsed)} elapsed")
        return " · ".join(parts)

    def update(self, done: int, total: int, **extra: float) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = 0 if "seconds" in extra else done
            self.start = now
        self.extra.update({k: float(v) for k, v in extra.items() if v is not None})
        self.done, self.total = done, total
        final = bool(total) and done >= total
        if self.finished:
            return  # the closing line is drawn once (training logs once more after its last step)
        to_console = final or now - self.last_console >= self.console.interval
        to_file = final or now - self.last_file >= self.console.file_interval
        if not (to_console or to_file):
            return
        self.console.status(self.line(now), final, to_console, to_file)
        self.finished = final
        if to_console:
            self.last_console = now
        if to_file:
            self.last_file = now
