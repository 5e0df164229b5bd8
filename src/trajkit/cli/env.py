"""`trajkit env ...` commands."""

from __future__ import annotations

import typer

from trajkit.cli.app import app

env_app = typer.Typer(help="env commands", no_args_is_help=True)
app.add_typer(env_app, name="env")
