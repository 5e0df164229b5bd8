"""Top-level training commands: render, model, sft."""

from __future__ import annotations

from trajkit.cli.app import app  # noqa: F401
