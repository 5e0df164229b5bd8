"""`execute()`: the whole method as resumable stages, for text and GUI agents alike.

expert -> model -> SFT (AGUVIS: grounding, then planning) -> eval
round r: explore -> [RFT baseline, round 1] -> pairs -> masked DPO -> eval
report
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from trajkit.pipeline import stages as st
from trajkit.pipeline import tracking
from trajkit.pipeline.config import RunConfig
from trajkit.pipeline.probes import step_probe_stage
from trajkit.pipeline.progress import LOG_FILE, Console
from trajkit.pipeline.stage import Stage, run_lock, write_manifest


def execute(
    cfg: RunConfig, config_text: str, log: Callable[[str], None] | None = None, quiet: bool = False
) -> dict[str, Any]:
    """Run every unfinished stage of `cfg` and return the summary (metrics per stage and split,
    pair counts per round). `config_text` is saved in the run folder; a folder started with
    another config is refused. Messages and progress go to stderr (`quiet`: none) and to
    RUN_DIR/log.txt; `log`, when given, gets the messages instead of stderr."""
    console = Console(Path(cfg.run_dir) / LOG_FILE, quiet=quiet)
    # The lock comes first: a second run on a busy folder is refused before it writes anything.
    with run_lock(Path(cfg.run_dir)), tracking.run_scope(cfg, console) as tracker:
        say = console.log if log is None else (lambda msg: (console.file_only(msg), log(msg)))
        ctx = st.RunContext(cfg, say, console=console)
        try:
            return _execute(ctx, config_text, tracker)
        finally:
            ctx.close()


def _execute(ctx: st.RunContext, config_text: str, tracker: tracking.Tracker) -> dict[str, Any]:
    cfg = ctx.cfg
    st.prepare_dir(ctx, config_text)
    st.check_splits(ctx)
    write_manifest(ctx.dir, ctx.env(), cfg.seed, ["train", *cfg.eval.splits])
    expert_path = st.expert_stage(ctx)
    model = st.model_stage(ctx, expert_path)
    for plan in ctx.kind.sft_plan():
        model = st.sft_stage(ctx, model, expert_path, plan)
    sft_model = policy = model
    evals: dict[str, dict] = {"sft": st.eval_stage(ctx, "eval-sft", sft_model, "sft")}
    tracker.log(tracking.eval_metrics(ctx.dir, "eval-sft", evals["sft"]), step=0)
    train_tasks = st.explore_tasks(ctx, expert_path)
    pair_files: list[Path] = []
    for r in range(1, cfg.rounds + 1):
        explored = st.explore_stage(ctx, r, policy, train_tasks)
        if r == 1 and cfg.rft:
            rft_model = st.rft_stage(ctx, sft_model, explored)
            if rft_model is not None:
                evals["rft"] = st.eval_stage(ctx, "eval-rft", rft_model, "rft")
                tracker.log(tracking.eval_metrics(ctx.dir, "eval-rft", evals["rft"], "rft"), step=1)
        probes = step_probe_stage(ctx, r, policy, expert_path) if cfg.pairs.strategy == "step_mc" else None
        pair_files.append(st.pairs_stage(ctx, r, expert_path, explored, probes))
        policy = st.dpo_stage(ctx, r, policy, sft_model, pair_files[-1])
        evals[f"round-{r}"] = st.eval_stage(ctx, f"round-{r}/eval", policy, f"round-{r}")
        round_eval = tracking.eval_metrics(ctx.dir, f"round-{r}/eval", evals[f"round-{r}"])
        tracker.log({**tracking.round_metrics(ctx.dir, r), **round_eval}, step=r)
    summary = ctx.kind.summarize(evals)
    for r in range(1, cfg.rounds + 1):
        summary[f"round-{r}"]["pairs"] = Stage(ctx.dir, f"round-{r}/pairs").summary()
    st.report_stage(ctx, summary, pair_files)
    return summary
