"""`trajkit gui ...` commands."""

from __future__ import annotations

import typer

from trajkit.cli.app import app

gui_app = typer.Typer(help="gui commands", no_args_is_help=True)
app.add_typer(gui_app, name="gui")
