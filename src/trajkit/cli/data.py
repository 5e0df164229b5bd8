"""`trajkit data ...` commands: validate, stats, convert, verify.

Problems print as `FILE:RECORD_INDEX:FIELD: message`, never as a traceback. Only light modules are
imported here; `datasets` and `transformers` load inside the functions that need them.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer

from trajkit.cli.app import app
from trajkit.data.files import output_target
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
        if any(os.path.realpath(out) == os.path.realpath(p) for p in inputs):
            raise _fail(f"{out}:-:file: refusing to overwrite the input", 2)
    try:
        output_target(out)  # a folder, a device or a pipe is never written over, --force or not
    except DataError as err:
        raise _fail(str(err), 2) from None
    if out.exists() and not force:
        raise _fail(f"{out}:-:file: exists; pass --force to overwrite it", 2)
    if not source_path.exists() and not is_hub_id(source):
        raise _fail(f"{source}:-:file: no such file or folder", 1)
    try:
        trajectories = load_trajectories(source, format=from_format, split=split, image_root=image_root)
        write_trajectories(trajectories, out, to)
    except DataError as err:
        raise _fail(str(err), 1) from None
    print(f"wrote {len(trajectories)} trajectories to {out} ({to})", file=sys.stderr)


def _verify_inputs(paths: list[Path], format: str):
    """Each source's trajectories, the format `--out` writes them back in, and (records.json
    layout only) the raw records, which are written back as they were read."""
    from trajkit.data.formats import detect_format
    from trajkit.data.io import data_files, iter_records, scan_records
    from trajkit.envs.verify import is_action_record, read_action_records

    sources = []
    for path in paths:
        file = path if path.is_file() else next(iter(data_files(path)), None) if path.is_dir() else None
        first = next(iter(scan_records(file)), (0, None))[1] if file is not None else None
        if format == "auto" and path.is_file() and is_action_record(first):
            raw = [record for _, record in iter_records(path)]
            sources.append((read_action_records(enumerate(raw), str(path)), "actions", raw))
            continue
        name = format if format != "auto" else detect_format(first) or "trajkit"
        sources.append((load_trajectories(path, format=format), name, None))
    return sources


def _env_kwargs(items: list[str]) -> dict:
    import yaml

    kwargs = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise _fail(f"--env-arg {item!r}: expected key=value", 2)
        try:
            kwargs[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            kwargs[key.strip()] = raw
    return kwargs


@data_app.command("verify")
def verify_command(
    paths: list[Path] = typer.Argument(
        ...,
        metavar="FILE...",
        help="expert trajectories: files or folders `data convert` reads (ETO's ShareGPT records carry "
        "`game_file`), or records.json-style {id, game_file, task, actions, observations} lists",
    ),
    env_name: str = typer.Option(..., "--env", help="the env to replay in (see `trajkit env list`)"),
    env_args: list[str] = typer.Option(
        None, "--env-arg", help="env setting key=value (repeatable), e.g. --env-arg data_dir=GAMES"
    ),
    as_json: bool = typer.Option(
        False,
        "--json",
        help="print one JSON object instead: records, won, failed (ids) and per-record details",
    ),
    out: Path | None = typer.Option(
        None, "--out", help="write the records that win here, in the input's format (atomically)"
    ),
    format: str = typer.Option("auto", "--format", "-f", help=FORMAT_HELP),
    data_dir: Path | None = typer.Option(
        None, help="benchmark data folder, for envs that need one (as --env-arg data_dir=...)"
    ),
) -> None:
    """Replay each trajectory's actions in the env: does it win, which actions does the env refuse
    ("Nothing happened."), where does a recorded observation first differ from the env's? Prints one
    line per record (`ID: won` or `ID: FAILED: <why>`), then a summary. Exit code: 0 when every record
    could be read and replayed, even if some do not win (the summary names them; --json to act on
    it); 1 for unreadable input; 2 for a usage error (unknown env, bad --env-arg) or an env that
    cannot be made.
    """
    from trajkit.cli.app import UsageError
    from trajkit.cli.env import _make
    from trajkit.envs.verify import summarize, verify_trajectories, write_json_atomic

    _check_format(format)
    kwargs = _env_kwargs(env_args or [])
    given_dir = kwargs.pop("data_dir", None)
    data_dir = data_dir if data_dir is not None else given_dir
    if out is not None:
        if out.is_dir():
            raise _fail(f"{out} is a folder; give a file name", 2)
        if any(p.exists() and out.resolve() == p.resolve() for p in paths):
            raise _fail(f"refusing to overwrite the input {out}", 2)
    try:
        sources = _verify_inputs(paths, format)
    except ValueError as err:  # DataError is a ValueError
        raise _fail(str(err), 1) from None
    formats = sorted({name for _, name, _ in sources})
    if out is not None and len(formats) > 1:
        raise _fail(f"--out writes one format, but the inputs mix {', '.join(formats)}", 2)
    trajectories = [t for trajs, _, _ in sources for t in trajs]
    try:
        env = _make(env_name, data_dir, **kwargs)
    except UsageError as err:
        raise _fail(str(err), 2) from None
    except Exception as err:  # a bad setting (TypeError, ValueError) or a simulator that cannot start
        raise _fail(f"cannot make env {env_name!r}: {type(err).__name__}: {err}", 2) from None
    try:
        results = verify_trajectories(env, trajectories, None if as_json else lambda r: print(r.line()))
    finally:
        env.close()
    summary = summarize(results)
    if as_json:
        print(json.dumps({**summary, "details": [r.to_dict() for r in results]}, ensure_ascii=False))
    else:
        failed = f"; failed: {', '.join(summary['failed'])}" if summary["failed"] else ""
        print(f"{summary['won']} of {summary['records']} records won{failed}")
    if out is not None:
        passed = [r.passed for r in results]
        if formats == ["actions"]:  # records.json's layout: the records as they were read
            raw = [record for _, _, records in sources for record in records]
            kept: list = [record for record, ok in zip(raw, passed, strict=True) if ok]
        else:
            kept = [t for t, ok in zip(trajectories, passed, strict=True) if ok]
        try:
            if formats == ["actions"]:
                write_json_atomic(kept, out)
            else:
                write_trajectories(kept, out, formats[0] if formats else "trajkit")
        except DataError as err:
            raise _fail(str(err), 1) from None
        except OSError as err:
            raise _fail(f"cannot write {out}: {err.strerror or err}", 1) from None
        print(f"wrote {len(kept)} winning record(s) to {out}", file=sys.stderr)
