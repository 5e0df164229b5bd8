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
_GOLD_HELP = (
    "gold file (repeatable): trajkit jsonl (id, bbox 0-1, platform, element_type), ScreenSpot-v2 "
    "json, Mind2Web json in SeeClick's format, or GUI trajectories with metadata.target_boxes (the "
    "MiniWoB++ oracle's: one record per click step); records without an id are named "
    "{img_filename}#{index}"
)
_GOLD_FORMAT_HELP = "auto, trajkit, screenspot, mind2web or trajectories"
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
    line = f"  {name:<{width}}  {100 * bucket['accuracy']:6.2f}%  ({bucket['correct']}/{bucket['total']})"
    return line + (f"  {_ci(bucket)}" if "ci95" in bucket else "")


def _print_table(title: str, table: dict) -> None:
    if not table:
        return
    typer.echo(f"{title}:")
    width = max(len(k) for k in table)
    for name, bucket in table.items():
        typer.echo(_bucket_line(name, bucket, width))


def _image_size_option(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.lower().replace("x", ",").split(",")
    try:
        width, height = (int(p) for p in parts)
    except ValueError:
        _fail(f"--image-size: expected W,H in pixels (e.g. 1280,720), got {text!r}")
    if width <= 0 or height <= 0:
        _fail(f"--image-size: width and height must be > 0, got {text!r}")
    return width, height


def _ci(bucket: dict) -> str:
    lo, hi = bucket.get("ci95", (0.0, 0.0))
    return f"[{100 * lo:.1f}, {100 * hi:.1f}]"


@gui_app.command("eval-grounding")
def eval_grounding_command(
    pred: str = typer.Option(..., "--pred", help="predictions jsonl: id + point/x,y (0-1)/action/completion"),
    gold: list[str] = typer.Option(
        ...,
        "--gold",
        help=_GOLD_HELP,
    ),
    gold_format: str = typer.Option("auto", "--gold-format", help=_GOLD_FORMAT_HELP),
    images: str | None = typer.Option(
        None, "--images", help="folder of the screenshots: each record's image must be there"
    ),
    image_size: str | None = typer.Option(
        None, "--image-size", help="W,H of Mind2Web screenshots when --images is not given"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    scale: str = typer.Option("auto", "--scale", help="scale of coordinates in predicted text"),
) -> None:
    """Grounding accuracy: predicted point inside the target box, overall and per platform/type,
    with 95% Wilson intervals."""
    from trajkit.gui.grounding_data import GOLD_FORMATS
    from trajkit.gui.metrics import evaluate_grounding_files

    if gold_format not in GOLD_FORMATS:
        _fail(f"--gold-format: choose one of {', '.join(GOLD_FORMATS)}, got {gold_format!r}")
    size = _image_size_option(image_size)
    try:
        report = evaluate_grounding_files(
            pred, gold, scale=scale, gold_format=gold_format, images=images, image_size=size
        ).to_dict()
    except (OSError, ValueError) as err:
        _fail(str(err))
    if as_json:
        typer.echo(json.dumps(report, ensure_ascii=False, indent=2))
        return
    typer.echo(
        f"grounding accuracy: {100 * report['accuracy']:.2f}% ({report['correct']}/{report['total']})"
        f"  95% CI {_ci(report)}"
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


@gui_app.command("eval-clicks")
def eval_clicks_command(
    rollouts: list[str] = typer.Argument(..., help="rollout trajectories (trajkit jsonl)"),
    gold: list[str] = typer.Option(
        ...,
        "--gold",
        help="expert trajectories of the same task ids with metadata.target_boxes (the MiniWoB++ "
        "oracle's: trajkit env oracle miniwob --split test ...); repeatable",
    ),
    width: int | None = typer.Option(None, "--width", help="screenshot width, for pixel coordinates"),
    height: int | None = typer.Option(None, "--height", help="screenshot height, for pixel coordinates"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Click grounding of rollouts: each episode's first click inside the target element's box
    (the oracle's DOM boxes), per task and overall, with 95% Wilson intervals."""
    from trajkit.gui.click_grounding import read_trajectory_files, score_first_clicks, summary_lines

    try:
        report = score_first_clicks(
            read_trajectory_files(rollouts), read_trajectory_files(gold), width=width, height=height
        ).to_dict()
    except (OSError, ValueError) as err:
        _fail(str(err))
    if as_json:
        typer.echo(json.dumps(report, ensure_ascii=False, indent=2))
        return
    for line in summary_lines(report):
        typer.echo(line)


@gui_app.command("predict-grounding")
def predict_grounding_command(
    model: str = typer.Option(..., "--model", help="vision-language model folder or hub id"),
    gold: list[str] = typer.Option(..., "--gold", help=_GOLD_HELP),
    out: str = typer.Option(..., "--out", help="predictions jsonl to write (eval-grounding --pred)"),
    gold_format: str = typer.Option("auto", "--gold-format", help=_GOLD_FORMAT_HELP),
    images: str | None = typer.Option(None, "--images", help="folder of the screenshots"),
    image_size: str | None = typer.Option(
        None, "--image-size", help="W,H of Mind2Web screenshots when --images is not given"
    ),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="prompts per forward pass"),
    max_new_tokens: int = typer.Option(48, "--max-new-tokens", min=1, help="tokens per answer"),
) -> None:
    """Point at each gold record's element: the model's greedy stage-1 answer (screenshot +
    instruction -> os code) per record, written as predictions for eval-grounding."""
    from trajkit.data.files import write_text_atomic
    from trajkit.gui.grounding_data import GOLD_FORMATS, read_gold
    from trajkit.policy.vlm import load_vlm_sampler
    from trajkit.rollout.grounding import predict_grounding

    if gold_format not in GOLD_FORMATS:
        _fail(f"--gold-format: choose one of {', '.join(GOLD_FORMATS)}, got {gold_format!r}")
    size = _image_size_option(image_size)
    try:
        records = read_gold(gold, gold_format, images=images, image_size=size)
        backend, renderer = load_vlm_sampler(model, batch_size=batch_size)
        rows = predict_grounding(
            backend,
            renderer,
            records,
            images=images,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
        )
        write_text_atomic(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    except (OSError, ValueError) as err:
        _fail(str(err))
    pointed = sum(r["point"] is not None for r in rows)
    typer.echo(f"wrote {len(rows)} predictions to {out} ({pointed} with a point)")
