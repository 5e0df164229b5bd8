"""`trajkit view` (a static site over runs and trajectory files) and `trajkit runs compare`."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import typer

from trajkit.cli.app import UsageError, app

runs_app = typer.Typer(help="Compare run folders.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@app.command()
def view(
    inputs: list[Path] = typer.Argument(..., help="Run folders and/or trajectory or pairs files."),
    out: Path = typer.Option(
        None, "--out", "-o", help="Site folder (default: RUN_DIR/view, else ./trajkit-view)."
    ),
    serve: bool = typer.Option(False, "--serve", help="Serve the site on 127.0.0.1 after building it."),
    port: int = typer.Option(0, "--port", help="Port for --serve (0: a free one)."),
    tokenizer: str = typer.Option(
        None, "--tokenizer", help="Model folder whose tokenizer shows trained tokens (default: the run's)."
    ),
    template: str = typer.Option(None, "--template", help="Chat template (default: the model card's)."),
) -> None:
    """Write a static site (opens from disk): run overview, trajectory browser, pairs side by side,
    GUI screenshots with clicks, and each task across rounds."""
    missing = [str(p) for p in inputs if not p.exists()]
    if missing:
        raise UsageError(f"not found: {', '.join(missing)}")
    if out is None:
        runs = [p for p in inputs if p.is_dir()]
        out = runs[0] / "view" if len(inputs) == 1 and runs else Path("trajkit-view")
    from trajkit.report.view import build_site

    t0 = time.perf_counter()
    try:
        site = build_site(inputs, out, tokenizer, template)
    except (ValueError, OSError) as err:
        raise UsageError(str(err)) from None
    seconds = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "page": str(out / "index.html"),
                "trajectories": site.trajectories,
                "pairs": site.pairs,
                "bytes": _size(out),
                "seconds": round(seconds, 1),
                "tokens": site.token_note,
            }
        )
    )
    if not serve:
        return
    from trajkit.report.serve import make_server

    server, url = make_server(out, site.files, port)
    print(f"serving {url} (127.0.0.1 only; Ctrl-C stops)", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@runs_app.command("compare")
def compare(
    run_dirs: list[Path] = typer.Argument(..., help="Run folders."),
    as_json: bool = typer.Option(False, "--json", help="The table as JSON."),
) -> None:
    """Runs side by side: config differences, success per policy and split with 95% intervals."""
    from trajkit.report.compare import compare_runs, render_compare

    bad = [str(d) for d in run_dirs if not (d / "config.yaml").is_file()]
    if bad:
        raise UsageError(f"not a run folder (no config.yaml): {', '.join(bad)}")
    table = compare_runs(run_dirs)
    print(json.dumps(table, indent=1) if as_json else render_compare(table), end="" if not as_json else "\n")
