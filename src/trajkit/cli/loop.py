"""The ETO loop's commands: explore, pairs, dpo, eval, run, demo."""

from __future__ import annotations

import json
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
    extra_turns: int = typer.Option(5, "--extra-turns", help="Rejected side keeps expert turns + this many."),
    expert_reward: float = typer.Option(
        1.0, "--expert-reward", help="Reward assumed for experts without one."
    ),
) -> None:
    """Build contrastive pairs; prints {"win", "tie", "lose", "pairs"} as JSON."""
    from trajkit.data.io import load_trajectories
    from trajkit.pairs import build_pairs

    try:
        experts = [t for p in expert for t in load_trajectories(p)]
        rolls = [t for p in rollouts for t in load_trajectories(p)]
        result = build_pairs(rolls, experts, strategy, extra_turns, expert_reward)
    except (ValueError, OSError) as err:
        raise UsageError(str(err)) from None
    out_path = Path(out)
    if out_path.resolve() in {Path(p).resolve() for p in [*expert, *rollouts]}:
        raise UsageError(f"{out}: refusing to overwrite an input file")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for pair in result.pairs:
            fh.write(json.dumps(pair, ensure_ascii=False) + "\n")
    tmp.replace(out_path)
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
    from trajkit.train.dpo import run_dpo

    print(json.dumps({"model": str(run_dpo(recipe))}))


@app.command()
def explore(
    model: str = typer.Option(..., "--model"),
    out: str = typer.Option(..., "--out", "-o", help="Rollouts jsonl (appended; resumes)."),
    env: str = typer.Option("household", "--env"),
    split: str = typer.Option("train", "--split"),
    limit: int = typer.Option(0, "--limit", help="First N tasks (0 = all)."),
    n_samples: int = typer.Option(1, "--n-samples"),
    temperature: float = typer.Option(1.0, "--temperature", help="0 = greedy."),
    max_new_tokens: int = typer.Option(96, "--max-new-tokens"),
    batch_size: int = typer.Option(32, "--batch-size"),
    template: str = typer.Option(None, "--template"),
    policy_id: str = typer.Option("policy", "--policy-id"),
) -> None:
    """Roll a policy out on an env's tasks; stores exact sampled tokens."""
    from trajkit.envs.registry import make_env
    from trajkit.policy.backends import Sampling, load_sampler
    from trajkit.rollout import RolloutConfig, run_rollouts

    tasks = make_env(env).tasks(split)
    tasks = tasks[:limit] if limit else tasks
    backend, renderer = load_sampler(model, template, batch_size)
    cfg = RolloutConfig(
        n_samples, Sampling(temperature, max_new_tokens=max_new_tokens), None, batch_size, policy_id=policy_id
    )
    envs = [make_env(env) for _ in range(min(batch_size, len(tasks) * n_samples) or 1)]
    trajs = run_rollouts(tasks, envs, backend, renderer, out, cfg, lambda m: print(m, file=sys.stderr))
    print(json.dumps({"episodes": len(trajs), "success": sum(bool(t.success) for t in trajs)}))


@app.command("eval")
def evaluate(
    model: str = typer.Option(..., "--model"),
    out_dir: str = typer.Option(..., "--out", "-o"),
    env: str = typer.Option("household", "--env"),
    splits: str = typer.Option(
        "test_seen,test_unseen", "--split", "--splits", help="One split or a comma list."
    ),
    limit: int = typer.Option(0, "--limit"),
    max_new_tokens: int = typer.Option(96, "--max-new-tokens"),
    batch_size: int = typer.Option(32, "--batch-size"),
    template: str = typer.Option(None, "--template"),
) -> None:
    """Greedy evaluation per split; prints success rates with 95% intervals as JSON."""
    from trajkit.envs.registry import make_env
    from trajkit.evaluate import summarize
    from trajkit.policy.backends import Sampling, load_sampler
    from trajkit.rollout import RolloutConfig, run_rollouts

    backend, renderer = load_sampler(model, template, batch_size)
    the_env = make_env(env)
    results = {}
    for split in _split_list(splits):
        tasks = the_env.tasks(split)
        tasks = tasks[:limit] if limit else tasks
        cfg = RolloutConfig(
            1, Sampling(0.0, max_new_tokens=max_new_tokens), None, batch_size, policy_id="eval"
        )
        envs = [make_env(env) for _ in range(min(batch_size, len(tasks)) or 1)]
        trajs = run_rollouts(tasks, envs, backend, renderer, Path(out_dir) / f"{split}.jsonl", cfg)
        results[split] = summarize(trajs)
    (Path(out_dir) / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results))


def _execute(cfg, config_text: str) -> None:
    from trajkit.config import ConfigError
    from trajkit.run import Run

    try:
        summary = Run(cfg).execute(config_text)
    except ConfigError as err:
        raise UsageError(str(err)) from None
    from trajkit.report import render_report

    print(render_report({k: v for k, v in summary.items() if k != "gui"}))
    if "gui" in summary:
        from trajkit.gui.report import plan_mode_table

        print(json.dumps({"plan_modes": plan_mode_table(summary)}, indent=1))
    print(f"report: {Path(cfg.run_dir) / 'report.md'}")


@app.command()
def run(
    config: str = typer.Option(..., "--config", "-c", help="Run recipe (see configs/)."),
    out: str = typer.Option(None, "--out", "-o", help="Run folder (default: the recipe's run_dir)."),
    overrides: list[str] = typer.Option(None, "--set", help="key=value, e.g. --set rounds=3"),
) -> None:
    """SFT → explore → pairs → DPO rounds → evaluate, resumable: re-run to continue after a crash."""
    from trajkit.config import ConfigError
    from trajkit.run import config_to_yaml, load_run_config

    try:
        cfg = load_run_config(config, [*(overrides or []), *([f"run_dir={out}"] if out else [])])
    except ConfigError as err:
        raise UsageError(str(err)) from None
    _execute(cfg, config_to_yaml(cfg))


@app.command()
def demo(
    run_dir: str = typer.Option("runs/demo", "--out", "--run-dir", "-o", help="Run folder."),
    overrides: list[str] = typer.Option(None, "--set", help="key=value on the built-in demo recipe"),
    gui: bool = typer.Option(
        False, "--gui", help="GUI agents: MiniWoB++ with a tiny vision-language policy (needs Chromium)."
    ),
) -> None:
    """The whole ETO method on CPU with a tiny model: the household world, or MiniWoB++ with --gui."""
    import dataclasses

    from trajkit.config import ConfigError, apply_overrides, from_dict
    from trajkit.run import RunConfig, check_gui, config_to_yaml, demo_config, gui_demo_config

    try:
        if gui:
            if run_dir == "runs/demo":
                run_dir = "runs/demo-gui"
            base = dataclasses.asdict(gui_demo_config(run_dir))
        else:
            base = dataclasses.asdict(demo_config(run_dir))
        cfg = from_dict(RunConfig, apply_overrides(base, overrides or []), where="demo")
        check_gui(cfg, "demo")
    except ConfigError as err:
        raise UsageError(str(err)) from None
    _execute(cfg, config_to_yaml(cfg))
