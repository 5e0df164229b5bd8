"""`trajkit gui ...` commands: parse, render and evaluate GUI actions.

Only light modules load here; nothing imports torch or transformers.
"""

from __future__ import annotations

import json
import sys
from typing import NoReturn

import typer

from trajkit.cli.app import app

gui_app = typer.Typer(
    help="GUI actions: parse, convert between styles, evaluate grounding.", no_args_is_help=True
)
app.add_typer(gui_app, name="gui")

_SCALE_HELP = "coordinate scale of the input: auto, norm (0-1), k (0-1000) or px (needs --width/--height)"
_SYNTAX_HELP = "input syntax: auto, pyautogui (AGUVIS too), uitars or osatlas"
_SCROLL_HELP = "sign of scroll amounts in the text: pyautogui (positive = up) or inverted"


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def _read_text(text: str) -> str:
    return sys.stdin.read() if text == "-" else text


def _parse(text: str, scale: str, width: int | None, height: int | None, syntax: str, scroll: str) -> list:
    from trajkit.gui.actions import ActionParseError, parse_actions

    try:
        return parse_actions(
            _read_text(text), scale=scale, width=width, height=height, syntax=syntax, scroll_convention=scroll
        )
    except ActionParseError as err:
        _fail(str(err))


@gui_app.command("parse")
def parse_command(
    text: str = typer.Argument(..., help="action text, one action per line; '-' reads stdin"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON list instead of one object per line"),
    scale: str = typer.Option("auto", "--scale", help=_SCALE_HELP),
    width: int | None = typer.Option(None, "--width", help="screen width in pixels"),
    height: int | None = typer.Option(None, "--height", help="screen height in pixels"),
    syntax: str = typer.Option("auto", "--from", help=_SYNTAX_HELP),
    scroll: str = typer.Option("pyautogui", "--scroll-convention", help=_SCROLL_HELP),
) -> None:
    """Parse action text into canonical actions ({"type": ..., ...}, coordinates 0-1)."""
    actions = [a.to_dict() for a in _parse(text, scale, width, height, syntax, scroll)]
    if as_json:
        typer.echo(json.dumps(actions, ensure_ascii=False))
    else:
        for action in actions:
            typer.echo(json.dumps(action, ensure_ascii=False))


@gui_app.command("render")
def render_command(
    text: str = typer.Argument(..., help="action text, one action per line; '-' reads stdin"),
    to: str = typer.Option("aguvis", "--to", help="output style: aguvis, pyautogui, uitars or osatlas"),
    scale: str = typer.Option("auto", "--scale", help=_SCALE_HELP),
    width: int | None = typer.Option(None, "--width", help="screen width in pixels (input)"),
    height: int | None = typer.Option(None, "--height", help="screen height in pixels (input)"),
    syntax: str = typer.Option("auto", "--from", help=_SYNTAX_HELP),
    scroll: str = typer.Option("pyautogui", "--scroll-convention", help=_SCROLL_HELP),
    out_width: int | None = typer.Option(
        None, "--out-width", help="pyautogui style: write pixels of this width"
    ),
    out_height: int | None = typer.Option(
        None, "--out-height", help="pyautogui style: write pixels of this height"
    ),
) -> None:
    """Convert action text to another style."""
    from trajkit.gui.actions import ActionRenderError, render_actions

    actions = _parse(text, scale, width, height, syntax, scroll)
    try:
        typer.echo(render_actions(actions, to, width=out_width, height=out_height, scroll_convention=scroll))
    except ActionRenderError as err:
        _fail(str(err))


def _bucket_line(name: str, bucket: dict, width: int) -> str:
    return f"  {name:<{width}}  {100 * bucket['accuracy']:6.2f}%  ({bucket['correct']}/{bucket['total']})"


def _print_table(title: str, table: dict) -> None:
    if not table:
        return
    typer.echo(f"{title}:")
    width = max(len(k) for k in table)
    for name, bucket in table.items():
        typer.echo(_bucket_line(name, bucket, width))


@gui_app.command("eval-grounding")
def eval_grounding_command(
    pred: str = typer.Option(..., "--pred", help="predictions jsonl: id + point/x,y/action/completion"),
    gold: str = typer.Option(
        ..., "--gold", help="gold jsonl: id, bbox [x1,y1,x2,y2] (0-1), platform, element_type"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    scale: str = typer.Option("auto", "--scale", help="scale of coordinates in predicted text"),
) -> None:
    """Grounding accuracy: predicted point inside the target box, overall and per platform/type."""
    from trajkit.gui.metrics import evaluate_grounding_files

    try:
        report = evaluate_grounding_files(pred, gold, scale=scale).to_dict()
    except (OSError, ValueError) as err:
        _fail(str(err))
    if as_json:
        typer.echo(json.dumps(report, ensure_ascii=False, indent=2))
        return
    typer.echo(
        f"grounding accuracy: {100 * report['accuracy']:.2f}% ({report['correct']}/{report['total']})"
        f"  missing={report['missing']} unparseable={report['unparseable']} extra={report['extra']}"
    )
    _print_table("by platform", report["by_platform"])
    _print_table("by element type", report["by_element_type"])
    _print_table("by platform/element type", report["by_platform_and_type"])


@gui_app.command("eval-steps")
def eval_steps_command(
    pred: str = typer.Option(..., "--pred", help="predictions jsonl: id + action/completion"),
    gold: str = typer.Option(..., "--gold", help="gold jsonl: id, action (text or object), optional bbox"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    distance: float = typer.Option(
        0.14, "--distance", help="max distance (0-1) of a point without a gold box"
    ),
    scale: str = typer.Option("auto", "--scale", help="scale of coordinates in predicted text"),
) -> None:
    """Step success rate: same action types, points on target, same text/keys/direction."""
    from trajkit.gui.metrics import evaluate_steps_files

    try:
        report = evaluate_steps_files(pred, gold, distance_threshold=distance, scale=scale).to_dict()
    except (OSError, ValueError) as err:
        _fail(str(err))
    if as_json:
        typer.echo(json.dumps(report, ensure_ascii=False, indent=2))
        return
    typer.echo(
        f"step success rate: {100 * report['success_rate']:.2f}% ({report['success']}/{report['total']})"
        f"  type accuracy: {100 * report['type_accuracy']:.2f}%"
        f"  missing={report['missing']} unparseable={report['unparseable']} extra={report['extra']}"
    )
    _print_table("by gold action type", report["by_type"])
