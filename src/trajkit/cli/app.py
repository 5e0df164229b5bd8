"""The `trajkit` command. Sub-commands live in sibling modules that register on `app`.

Modules here import only light libraries at top level: torch and transformers are imported inside
the commands that need them, so `trajkit data ...`, `trajkit gui ...` and `--help` start fast.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="trajkit",
    help="Teach LLM agents from trajectories: data, SFT, exploration, contrastive DPO, evaluation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


class UsageError(Exception):
    """A user-facing error: printed as one line, exit code 2, no traceback."""
