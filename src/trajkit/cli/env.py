"""`trajkit env ...` commands: list the environments, write scripted-expert trajectories."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from trajkit.cli.app import UsageError, app

env_app = typer.Typer(help="env commands", no_args_is_help=True)
app.add_typer(env_app, name="env")

# Envs with a scripted expert (an oracle) that `env oracle` can run.
ORACLE_ENVS = ("household",)


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


@env_app.command("oracle")
def oracle_command(
    env_name: str = typer.Argument(
        ..., metavar="ENV", help=f"Env with a scripted expert: {', '.join(ORACLE_ENVS)}."
    ),
    split: str = typer.Option("train", help="train, test_seen or test_unseen."),
    limit: int | None = typer.Option(None, min=1, help="Number of tasks (default: the whole split)."),
    out: Path = typer.Option(..., "--out", help="Output .jsonl file, one Trajectory per line."),
    seed: int = typer.Option(0, help="World seed: which tasks are generated."),
    expert_seed: int = typer.Option(0, help="Expert seed: its search order and wording."),
) -> None:
    """Write scripted-expert trajectories for the first LIMIT tasks of a split."""
    if env_name not in ORACLE_ENVS:
        raise UsageError(f"no scripted expert for env {env_name!r}; available: {', '.join(ORACLE_ENVS)}")
    from trajkit.envs.household import SPLITS, HouseholdEnv, expert_trajectory
    from trajkit.envs.household.game import DEFAULT_N_TEST, DEFAULT_N_TRAIN

    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    n_tasks = limit if limit is not None else (DEFAULT_N_TRAIN if split == "train" else DEFAULT_N_TEST)
    # Task i does not depend on the split size, so generating only the first n_tasks is exact.
    if split == "train":
        env = HouseholdEnv(seed=seed, n_train=n_tasks, n_test=0)
    else:
        env = HouseholdEnv(seed=seed, n_train=0, n_test=n_tasks)
    tasks = env.tasks(split)

    out.parent.mkdir(parents=True, exist_ok=True)
    n_success = total_steps = 0
    # Write beside the target, then rename: readers never see a half-written file.
    tmp_path = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with tmp_path.open("w", encoding="utf-8") as f:
            for task in tasks:
                trajectory = expert_trajectory(env, task, rng_seed=expert_seed)
                n_success += bool(trajectory.success)
                total_steps += trajectory.metadata["steps"]
                f.write(json.dumps(trajectory.to_dict(), ensure_ascii=False) + "\n")
        os.replace(tmp_path, out)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    mean_steps = total_steps / len(tasks) if tasks else 0.0
    typer.echo(
        f"wrote {len(tasks)} {env_name} expert trajectories ({split}, seed {seed}) to {out}: "
        f"{n_success}/{len(tasks)} successful, {mean_steps:.1f} steps on average"
    )
