"""`trajkit env ...` commands: list the environments, write scripted-expert trajectories."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from trajkit.cli.app import UsageError, app

env_app = typer.Typer(help="env commands", no_args_is_help=True)
app.add_typer(env_app, name="env")


@env_app.command("list")
def list_command(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
) -> None:
    """Show every registered environment, whether it can run here, and why not."""
    from trajkit.envs.registry import list_envs

    infos = list_envs()
    if as_json:
        typer.echo(
            json.dumps([{"name": i.name, "available": i.available, "reason": i.reason} for i in infos])
        )
        return
    rows = [("name", "available", "reason")] + [
        (i.name, "yes" if i.available else "no", i.reason) for i in infos
    ]
    widths = [max(len(row[col]) for row in rows) for col in range(2)]
    for name, available, reason in rows:
        typer.echo(f"{name:<{widths[0]}}  {available:<{widths[1]}}  {reason}")


def _make(env_name: str, data_dir: Path | None, **kwargs):
    """The env by registry name; `--data-dir` reaches adapters that read user-provided files."""
    from trajkit.envs.registry import EnvUnavailableError, UnknownEnvError, make_env

    if data_dir is not None:
        kwargs["data_dir"] = str(data_dir)
    try:
        return make_env(env_name, **kwargs)
    except (UnknownEnvError, EnvUnavailableError) as err:
        raise UsageError(str(err)) from None


@env_app.command("oracle")
def oracle_command(
    env_name: str = typer.Argument(
        ..., metavar="ENV", help="An env with a scripted expert (see `env list`)."
    ),
    split: str = typer.Option("train", help="Which split's tasks, e.g. train, test_seen, test_unseen."),
    limit: int | None = typer.Option(None, min=1, help="Number of tasks (default: the whole split)."),
    episodes: int | None = typer.Option(None, min=1, help="Same as --limit (GUI envs count episodes)."),
    task: str | None = typer.Option(None, help="Only tasks of this task type (e.g. a MiniWoB++ task)."),
    out: Path = typer.Option(..., "--out", help="Output .jsonl file, one Trajectory per line."),
    data_dir: Path | None = typer.Option(None, help="Benchmark data folder, for envs that need one."),
    seed: int = typer.Option(0, help="World seed: which tasks are generated (household)."),
    expert_seed: int = typer.Option(0, help="Expert seed: its search order and wording."),
) -> None:
    """Write scripted-expert trajectories for the first LIMIT tasks of a split."""
    from trajkit.data.files import output_target
    from trajkit.data.io import DataError, write_trajectories
    from trajkit.envs.registry import EnvUnavailableError, get_oracle

    if limit is not None and episodes is not None and limit != episodes:
        raise UsageError("give --limit or --episodes, not both")
    try:
        output_target(out)  # a device or a folder is refused before any episode is played
    except DataError as err:
        raise UsageError(str(err)) from None
    n = limit if limit is not None else episodes
    try:
        oracle = get_oracle(env_name)
    except EnvUnavailableError:
        raise UsageError(f"no scripted expert for env {env_name!r}") from None
    except KeyError as err:
        raise UsageError(str(err)) from None

    if env_name == "household":
        from trajkit.envs.household import SPLITS
        from trajkit.envs.household.game import DEFAULT_N_TEST, DEFAULT_N_TRAIN

        if split not in SPLITS:
            raise UsageError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        size = (
            n if n is not None and task is None else (DEFAULT_N_TRAIN if split == "train" else DEFAULT_N_TEST)
        )
        # Task i does not depend on the split size, so generating only the first n tasks is exact.
        sizes = {"n_train": size, "n_test": 0} if split == "train" else {"n_train": 0, "n_test": size}
        env = _make(env_name, data_dir, seed=seed, **sizes)
    elif env_name == "miniwob":
        # Screenshots are kept beside the output file, so the trajectories stay valid after the env closes.
        env = _make(env_name, data_dir, screenshot_dir=str(out.parent / f"{out.stem}-images"))
    else:
        env = _make(env_name, data_dir)
    try:
        try:
            tasks = env.tasks(split)
        except (KeyError, ValueError) as err:
            raise UsageError(f"{env_name}: {err}") from None
        if task is not None:
            tasks = [t for t in tasks if t.spec.get("task_name") == task]
            if not tasks:
                raise UsageError(f"{env_name} has no {split} tasks of type {task!r}")
        tasks = tasks[:n] if n is not None else tasks
        trajectories = []
        for t in tasks:
            trajectories.append(oracle(env, t, expert_seed))
    finally:
        env.close()
    try:
        write_trajectories(trajectories, out)
    except DataError as err:
        raise UsageError(str(err)) from None
    n_success = sum(bool(t.success) for t in trajectories)
    mean_steps = sum(t.metadata.get("steps", 0) for t in trajectories) / max(1, len(trajectories))
    typer.echo(
        f"wrote {len(trajectories)} {env_name} expert trajectories ({split}, seed {seed}) to {out}: "
        f"{n_success}/{len(trajectories)} successful, {mean_steps:.1f} steps on average"
    )


@env_app.command("check-splits")
def check_splits_command(
    env_name: str = typer.Argument(..., metavar="ENV", help="A registered env."),
    data_dir: Path | None = typer.Option(None, help="Benchmark data folder, for envs that need one."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of lines of text."),
) -> None:
    """Report test tasks that are also training tasks (runs refuse to evaluate on those)."""
    from trajkit.envs.base import split_overlap

    env = _make(env_name, data_dir)
    try:
        test_splits = [
            s for s in getattr(env, "splits", ("train", "test_seen", "test_unseen")) if s != "train"
        ]
        report = []
        for split in test_splits:
            try:
                overlap = split_overlap(env, "train", split)
            except (KeyError, ValueError, OSError) as err:
                raise UsageError(f"{env_name}: {err}") from None
            report.append(
                {
                    "split": split,
                    "tasks": len(env.tasks(split)),
                    "overlap": len(overlap),
                    "overlapping": overlap,
                }
            )
    finally:
        env.close()
    if as_json:
        typer.echo(json.dumps(report))
        return
    for row in report:
        shown = ", ".join(row["overlapping"][:5]) + (" ..." if row["overlap"] > 5 else "")
        typer.echo(
            f"{env_name} {row['split']}: {row['overlap']} of {row['tasks']} tasks also in train"
            + (f" ({shown})" if row["overlap"] else "")
        )
