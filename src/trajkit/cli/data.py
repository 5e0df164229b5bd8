"""`trajkit data ...` commands: validate, stats, convert.

Problems print as `FILE:RECORD_INDEX:FIELD: message`, never as a traceback. Only light modules are
imported here; `datasets` and `transformers` load inside the functions that need them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from trajkit.cli.app import app
from trajkit.data.formats import FORMAT_NAMES
from trajkit.data.io import DataError, is_hub_id, load_trajectories, write_trajectories
from trajkit.data.validate import validate_paths

data_app = typer.Typer(help="data commands", no_args_is_help=True)
app.add_typer(data_app, name="data")

FORMAT_HELP = f"record format: auto or one of {', '.join(FORMAT_NAMES)}"


def _fail(message: str, code: int) -> typer.Exit:
    print(message if message.startswith("error:") else f"error: {message}", file=sys.stderr)
    return typer.Exit(code)


def _check_format(name: str, allow_auto: bool = True) -> None:
    allowed = (("auto",) if allow_auto else ()) + FORMAT_NAMES
    if name not in allowed:
        raise _fail(f"unknown format {name!r}; expected one of {', '.join(allowed)}", 2)


@data_app.command("validate")
def validate_command(
    paths: list[Path] = typer.Argument(..., help="files or folders of .json/.jsonl records"),
    format: str = typer.Option("auto", "--format", "-f", help=FORMAT_HELP),
    image_root: Path | None = typer.Option(
        None, help="folder AGUVIS image paths are relative to (default: the file's)"
    ),
    check_images: bool = typer.Option(
        True, "--check-images/--no-check-images", help="check AGUVIS images exist"
    ),
) -> None:
    """Check files; print one `FILE:RECORD_INDEX:FIELD: message` line per problem (exit 1), or OK (exit 0)."""
    _check_format(format)
    report = validate_paths(paths, format, image_root=image_root, check_images=check_images)
    for problem in report.problems:
        print(problem)
    if report.problems:
        print(
            f"{len(report.problems)} problem(s) in {report.files} file(s), {report.records} record(s)",
            file=sys.stderr,
        )
        raise typer.Exit(1)
    print(f"OK: {report.files} file(s), {report.records} record(s), no problems", file=sys.stderr)


@data_app.command("stats")
def stats_command(
    path: str = typer.Argument(..., help="a .json/.jsonl file, a folder, or a Hugging Face dataset id"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    tokenizer: Path | None = typer.Option(None, help="tokenizer folder; adds token counts"),
    format: str = typer.Option("auto", "--format", "-f", help=FORMAT_HELP),
    split: str = typer.Option("train", help="split of a Hugging Face dataset"),
    image_root: Path | None = typer.Option(None, help="folder AGUVIS image paths are relative to"),
) -> None:
    """Count records, turns, characters and (with --tokenizer) tokens."""
    from trajkit.data.stats import compute_stats, load_tokenizer

    _check_format(format)
    try:
        trajectories = load_trajectories(path, format=format, split=split, image_root=image_root)
    except DataError as err:
        raise _fail(str(err), 1) from None
    loaded_tokenizer = None
    if tokenizer is not None:
        try:
            loaded_tokenizer = load_tokenizer(tokenizer)
        except (OSError, ValueError) as err:
            raise _fail(f"cannot load tokenizer from {tokenizer}: {err}", 1) from None
    stats = compute_stats(trajectories, loaded_tokenizer, str(tokenizer) if tokenizer else None)
    if as_json:
        print(json.dumps({"source": path, **stats.to_dict()}))
    else:
        print(f"{'source':<14}{path}")
        for line in stats.lines():
            print(line)


@data_app.command("convert")
def convert_command(
    source: str = typer.Argument(..., help="a .json/.jsonl file, a folder, or a Hugging Face dataset id"),
    out: Path = typer.Argument(..., help="output file: .json writes a JSON list, anything else JSON lines"),
    to: str = typer.Option(..., "--to", "-t", help=f"output format: one of {', '.join(FORMAT_NAMES)}"),
    from_format: str = typer.Option("auto", "--from", help=FORMAT_HELP),
    force: bool = typer.Option(False, "--force", help="overwrite an existing output file"),
    split: str = typer.Option("train", help="split of a Hugging Face dataset"),
    image_root: Path | None = typer.Option(None, help="folder input AGUVIS image paths are relative to"),
) -> None:
    """Convert records between formats; never overwrites the input, nor the output without --force."""
    _check_format(from_format)
    _check_format(to, allow_auto=False)
    source_path = Path(source)
    if source_path.exists() and out.exists():
        inputs = [source_path] if source_path.is_file() else []
        if source_path.is_dir():
            from trajkit.data.io import data_files

            inputs = data_files(source_path)
        if any(out.resolve() == p.resolve() for p in inputs):
            raise _fail(f"refusing to overwrite the input {out}", 2)
    if out.is_dir():
        raise _fail(f"{out} is a folder; give a file name", 2)
    if out.exists() and not force:
        raise _fail(f"{out} exists; pass --force to overwrite it", 2)
    if not source_path.exists() and not is_hub_id(source):
        raise _fail(f"{source}:-:file: no such file or folder", 1)
    try:
        trajectories = load_trajectories(source, format=from_format, split=split, image_root=image_root)
        write_trajectories(trajectories, out, to)
    except DataError as err:
        raise _fail(str(err), 1) from None
    except OSError as err:
        raise _fail(f"cannot write {out}: {err.strerror or err}", 1) from None
    print(f"wrote {len(trajectories)} trajectories to {out} ({to})", file=sys.stderr)
