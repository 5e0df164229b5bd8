"""The ETO loop's commands: explore, pairs, dpo, eval, run, demo."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer

from trajkit.cli.app import UsageError, app


def _split_list(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


@app.command()
def pairs(
    expert: list[str] = typer.Option(
        ..., "--expert", "-e", help="Expert trajectories (any supported format)."
    ),
    rollouts: list[str] = typer.Option(..., "--rollouts", "-r", help="Rollouts (any supported format)."),
    out: str = typer.Option(..., "--out", "-o", help="Pairs jsonl to write."),
    strategy: str = typer.Option("trajectory", "--strategy", help="trajectory (ETO) or self."),
    extra_turns: int = typer.Option(
        5,
        "--extra-turns",
        help="Rejected side keeps expert turns + this many (ETO: 5); -1 keeps the whole failed episode "
        "(ETO on ALFWorld).",
    ),
    expert_reward: float = typer.Option(
        1.0, "--expert-reward", help="Reward assumed for experts without one."
    ),
) -> None:
    """Build contrastive pairs; prints {"win", "tie", "lose", "pairs"} as JSON."""
    import math

    from trajkit.data.files import atomic_writer, output_target
    from trajkit.data.io import load_trajectories
    from trajkit.pairs import build_pairs

    if not math.isfinite(expert_reward):
        raise UsageError(f"--expert-reward must be a finite number, got {expert_reward}")
    out_path = Path(out)
    if os.path.realpath(out_path) in {os.path.realpath(p) for p in [*expert, *rollouts]}:
        raise UsageError(f"{out}:-:file: refusing to overwrite an input file")
    try:
        output_target(out_path)  # refused before the inputs are read, not after
        experts = [t for p in expert for t in load_trajectories(p)]
        rolls = [t for p in rollouts for t in load_trajectories(p)]
        cap = extra_turns if extra_turns >= 0 else None
        result = build_pairs(rolls, experts, strategy, cap, expert_reward)
        with atomic_writer(out_path) as fh:
            for pair in result.pairs:
                fh.write(json.dumps(pair, ensure_ascii=False) + "\n")
    except (ValueError, OSError) as err:  # DataError is a ValueError
        raise UsageError(str(err)) from None
    if result.missing_expert:
        print(f"note: {result.missing_expert} rollout(s) had no expert for their task", file=sys.stderr)
    print(json.dumps(result.counts()))


@app.command()
def dpo(
    config: str = typer.Option(None, "--config", "-c", help="YAML recipe (see configs/)."),
    model: str = typer.Option(None, "--model"),
    pairs_files: list[str] = typer.Option(None, "--pairs"),
    output_dir: str = typer.Option(None, "--out", "--output-dir", "-o"),
    overrides: list[str] = typer.Option(None, "--set", help="key=value, e.g. --set beta=0.5"),
) -> None:
    """Masked multi-turn DPO on pairs (agent tokens only). Works on any pairs file."""
    from trajkit.config import ConfigError, apply_overrides, from_dict, load_yaml
    from trajkit.train.dpo import DPORecipe

    try:
        raw = load_yaml(config) if config else {}
        flags = {"model": model, "pairs": pairs_files or None, "output_dir": output_dir}
        raw.update({k: v for k, v in flags.items() if v is not None})
        recipe = from_dict(DPORecipe, apply_overrides(raw, overrides or []), where=config or "flags")
    except ConfigError as err:
        raise UsageError(str(err)) from None
    from trajkit.data.io import DataError, is_hub_id
    from trajkit.train.dpo import load_pairs, run_dpo

    try:  # checked before the model loads, so a bad file costs a second, not a traceback
        pairs = load_pairs(recipe.pairs)
    except DataError as err:
        raise UsageError(str(err)) from None
    if not pairs:
        raise UsageError(f"{', '.join(recipe.pairs)}:-:file: no pairs to train on")
    if not Path(recipe.model).is_dir() and not is_hub_id(recipe.model):
        raise UsageError(f"{recipe.model}:-:model: no such model folder")
    if Path(recipe.model).is_dir() and not (Path(recipe.model) / "config.json").is_file():
        raise UsageError(f"{recipe.model}:-:model: not a model folder (no config.json)")
    print(json.dumps({"model": str(run_dpo(recipe, pairs))}))


ENV_HELP = "Env setting key=value (repeatable), e.g. --env-arg layout=compact."


def _rollout_context(
    model: str, config: str | None, env: str | None, env_args: list[str], template, where: Path
):
    """A RunContext for rollouts outside a run, in the world the policy should act in: a recipe's
    env (`--config`), else `--env`, else the env the model was trained on (its card), else the
    household world; `--env-arg` settings go on top. The card's instruction is used when the world
    is the one it was trained in. `where` holds what the rollouts write besides trajectories."""
    import yaml

    from trajkit.config import ConfigError, apply_overrides, load_yaml
    from trajkit.pipeline.config import run_config_from_dict
    from trajkit.pipeline.stages import MODEL_CARD, RunContext
    from trajkit.policy.vlm import is_vision_model

    card_path = Path(model) / MODEL_CARD
    trained = (json.loads(card_path.read_text()) if card_path.is_file() else {}).get("env") or {}
    try:
        data = load_yaml(config) if config else {}
        data.pop("run_dir", None)
        section = data.setdefault("env", {})
        if not config:
            section["name"] = env or trained.get("name", "household")
            if section["name"] == trained.get("name"):
                section["kwargs"] = dict(trained.get("kwargs") or {})
        elif env:
            section["name"] = env
        for item in env_args:
            key, sep, raw = item.partition("=")
            if not sep or not key:
                raise ConfigError(f"--env-arg {item!r}: expected key=value")
            section.setdefault("kwargs", {})[key] = yaml.safe_load(raw)
        if template:
            data = apply_overrides(data, [f"model.template={template}"])
        if is_vision_model(model) and data.get("gui") is None:
            data["gui"] = {}
        cfg = run_config_from_dict({**data, "run_dir": str(where)}, config or "command line")
    except ConfigError as err:
        raise UsageError(str(err)) from None
    same_world = trained.get("name") == cfg.env.name and (trained.get("kwargs") or {}) == cfg.env.kwargs
    instruction = trained.get("instruction") if same_world else None
    return RunContext(cfg, instruction_override=instruction)


@app.command()
def explore(
    model: str = typer.Option(..., "--model"),
    out: str = typer.Option(..., "--out", "-o", help="Rollouts jsonl (appended; resumes)."),
    config: str = typer.Option(None, "--config", "-c", help="Run recipe whose env to use."),
    env: str = typer.Option(None, "--env", help="Env name (default: the model's own, else household)."),
    env_args: list[str] = typer.Option(None, "--env-arg", help=ENV_HELP),
    split: str = typer.Option("train", "--split"),
    limit: int = typer.Option(0, "--limit", help="First N tasks (0 = all)."),
    n_samples: int = typer.Option(1, "--n-samples"),
    temperature: float = typer.Option(
        0.0, "--temperature", help="0 = greedy, as ETO explores; > 0 samples (a deviation from ETO)."
    ),
    max_new_tokens: int = typer.Option(96, "--max-new-tokens"),
    max_steps: int = typer.Option(0, "--max-steps", help="Step budget per episode (0 = the task's own)."),
    batch_size: int = typer.Option(32, "--batch-size"),
    template: str = typer.Option(None, "--template"),
    policy_id: str = typer.Option("policy", "--policy-id"),
    mode: str = typer.Option(None, "--mode", help="GUI agents: enforced_plan or self_plan."),
) -> None:
    """Roll a policy out on an env's tasks; stores exact sampled tokens."""
    from trajkit.pipeline.stages import icl_style, rollouts
    from trajkit.policy.backends import Sampling

    if n_samples > 1 and temperature <= 0:
        raise UsageError(
            "--n-samples > 1 needs --temperature > 0 (greedy samples of one task are all the same)"
        )
    from trajkit.data.files import DataError, output_target

    try:
        output_target(out)  # rollouts are appended: a device or a pipe would take them, or hang
    except DataError as err:
        raise UsageError(str(err)) from None
    ctx = _rollout_context(model, config, env, env_args or [], template, Path(out).parent)
    try:
        tasks = ctx.env().tasks(split)
        tasks = tasks[:limit] if limit else tasks
        sampling = Sampling(temperature, max_new_tokens=max_new_tokens)
        trajs = rollouts(
            ctx, Path(out), model, tasks, sampling, batch_size, n_samples, policy_id, max_steps or None, mode,
            icl=icl_style(ctx.cfg.explore), progress=lambda m: print(m, file=sys.stderr),
        )  # fmt: skip
    finally:
        ctx.close()
    print(json.dumps({"episodes": len(trajs), "success": sum(bool(t.success) for t in trajs)}))


@app.command("eval")
def evaluate(
    model: str = typer.Option(..., "--model"),
    out_dir: str = typer.Option(..., "--out", "-o"),
    config: str = typer.Option(None, "--config", "-c", help="Run recipe whose env to use."),
    env: str = typer.Option(None, "--env", help="Env name (default: the model's own, else household)."),
    env_args: list[str] = typer.Option(None, "--env-arg", help=ENV_HELP),
    splits: str = typer.Option(
        "test_seen,test_unseen", "--split", "--splits", help="One split or a comma list."
    ),
    limit: int = typer.Option(0, "--limit"),
    max_new_tokens: int = typer.Option(96, "--max-new-tokens"),
    max_steps: int = typer.Option(0, "--max-steps", help="Step budget per episode (0 = the task's own)."),
    batch_size: int = typer.Option(32, "--batch-size"),
    template: str = typer.Option(None, "--template"),
    mode: str = typer.Option(None, "--mode", help="GUI agents: enforced_plan or self_plan."),
) -> None:
    """Greedy evaluation per split; prints success rates with 95% intervals as JSON."""
    from trajkit.evaluate import summarize
    from trajkit.pipeline.stages import icl_style, rollouts
    from trajkit.policy.backends import Sampling

    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise UsageError(f"{out_dir}:-:file: is not a folder; --out names the folder results go to")
    ctx = _rollout_context(model, config, env, env_args or [], template, Path(out_dir))
    results = {}
    try:
        for split in _split_list(splits):
            tasks = ctx.env().tasks(split)
            tasks = tasks[:limit] if limit else tasks
            sampling = Sampling(0.0, max_new_tokens=max_new_tokens)
            out = Path(out_dir) / f"{split}.jsonl"
            trajs = rollouts(
                ctx, out, model, tasks, sampling, batch_size, 1, "eval", max_steps or None, mode,
                icl=icl_style(ctx.cfg.eval),
            )  # fmt: skip
            results[split] = summarize(trajs)
    finally:
        ctx.close()
    from trajkit.data.files import DataError, write_text_atomic

    try:
        write_text_atomic(Path(out_dir) / "metrics.json", json.dumps(results, indent=2) + "\n")
    except DataError as err:
        raise UsageError(str(err)) from None
    print(json.dumps(results))


QUIET_HELP = "No progress or stage lines on stderr (all of it still goes to RUN_DIR/log.txt)."


def _execute(cfg, config_text: str, quiet: bool = False, where: str | None = None) -> None:
    """Run `cfg`; a recipe value refused only when its env is made is named with `where`."""
    from trajkit.config import ConfigError
    from trajkit.data.files import DataError
    from trajkit.pipeline import execute
    from trajkit.pipeline.envs import EnvSettingError
    from trajkit.pipeline.stage import storage_failure
    from trajkit.train.launch import LaunchError

    try:
        summary = execute(cfg, config_text, quiet=quiet)
    except LaunchError as err:  # a launched training stage failed: its own error, in one line
        raise UsageError(f"run stopped: {err}; finished stages are kept: fix it and run again") from None
    except EnvSettingError as err:
        raise UsageError(f"{where}: {err}" if where else str(err)) from None
    except ConfigError as err:
        raise UsageError(str(err)) from None
    except Exception as err:  # a full disk, a folder turned read-only, a bad data file: one line
        why = str(err) if isinstance(err, DataError) else storage_failure(err)
        if why is None:
            raise  # anything else is a bug to see whole
        raise UsageError(
            f"run stopped: {why}; finished stages are kept: run the same command again to resume"
        ) from None
    from trajkit.report import render_report

    print(render_report({k: v for k, v in summary.items() if k != "gui"}))
    if "gui" in summary:
        from trajkit.report.gui import plan_mode_table

        print(json.dumps({"plan_modes": plan_mode_table(summary)}, indent=1))
    print(f"report: {Path(cfg.run_dir) / 'report.md'}")


@app.command()
def run(
    config: str = typer.Option(..., "--config", "-c", help="Run recipe (see configs/)."),
    out: str = typer.Option(None, "--out", "-o", help="Run folder (default: the recipe's run_dir)."),
    overrides: list[str] = typer.Option(None, "--set", help="key=value, e.g. --set rounds=3"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP),
) -> None:
    """SFT → explore → pairs → DPO rounds → evaluate, resumable: re-run to continue after a crash."""
    from trajkit.config import ConfigError
    from trajkit.pipeline.config import config_to_yaml, load_run_config

    try:
        cfg = load_run_config(config, [*(overrides or []), *([f"run_dir={out}"] if out else [])])
    except ConfigError as err:
        raise UsageError(str(err)) from None
    _execute(cfg, config_to_yaml(cfg), quiet, where=config)


@app.command()
def demo(
    run_dir: str = typer.Option(
        None, "--out", "--run-dir", "-o", help="Run folder (runs/demo, runs/demo-gui)."
    ),
    overrides: list[str] = typer.Option(None, "--set", help="key=value on the built-in demo recipe"),
    gui: bool = typer.Option(
        False, "--gui", help="GUI agents: MiniWoB++ with a tiny vision-language policy (needs Chromium)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP),
) -> None:
    """The whole ETO method on CPU with a tiny model: the household world, or MiniWoB++ with --gui.
    The recipes are configs/household_eto_tiny.yaml and configs/miniwob_eto_tiny.yaml."""
    from trajkit.config import ConfigError
    from trajkit.pipeline.config import config_to_yaml, demo_config, demo_recipe_path

    try:
        cfg = demo_config(run_dir or ("runs/demo-gui" if gui else "runs/demo"), overrides or [], gui=gui)
    except ConfigError as err:
        raise UsageError(str(err)) from None
    _execute(cfg, config_to_yaml(cfg), quiet, where=str(demo_recipe_path("gui" if gui else "text")))
