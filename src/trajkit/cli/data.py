"""`trajkit data ...` commands."""

from __future__ import annotations

import typer

from trajkit.cli.app import app

data_app = typer.Typer(help="data commands", no_args_is_help=True)
app.add_typer(data_app, name="data")
