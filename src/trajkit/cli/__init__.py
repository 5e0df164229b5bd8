"""Entry point of the `trajkit` console command and `python -m trajkit`."""

from __future__ import annotations

import sys

# Importing a module registers its commands on `app`.
from trajkit.cli import data as _data  # noqa: E402,F401
from trajkit.cli import env as _env  # noqa: E402,F401
from trajkit.cli import gui as _gui  # noqa: E402,F401
from trajkit.cli import loop as _loop  # noqa: E402,F401
from trajkit.cli import train as _train  # noqa: E402,F401
from trajkit.cli import view as _view  # noqa: E402,F401
from trajkit.cli.app import UsageError, app


def main() -> None:
    try:
        app()
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
