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
from trajkit.pipeline.config import RunConfig
from trajkit.pipeline.stage import Stage, write_manifest


def execute(cfg: RunConfig, config_text: str, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every unfinished stage of `cfg` and return the summary (metrics per stage and split,
    pair counts per round). `config_text` is saved in the run folder; a folder started with
    another config is refused."""
    ctx = st.RunContext(cfg, log) if log is not None else st.RunContext(cfg)
    try:
        return _execute(ctx, config_text)
    finally:
        ctx.close()


def _execute(ctx: st.RunContext, config_text: str) -> dict[str, Any]:
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
    train_tasks = st.explore_tasks(ctx, expert_path)
    pair_files: list[Path] = []
    for r in range(1, cfg.rounds + 1):
        explored = st.explore_stage(ctx, r, policy, train_tasks)
        if r == 1 and cfg.rft:
            rft_model = st.rft_stage(ctx, sft_model, explored)
            if rft_model is not None:
                evals["rft"] = st.eval_stage(ctx, "eval-rft", rft_model, "rft")
        pair_files.append(st.pairs_stage(ctx, r, expert_path, explored))
        policy = st.dpo_stage(ctx, r, policy, sft_model, pair_files[-1])
        evals[f"round-{r}"] = st.eval_stage(ctx, f"round-{r}/eval", policy, f"round-{r}")
    summary = ctx.kind.summarize(evals)
    for r in range(1, cfg.rounds + 1):
        summary[f"round-{r}"]["pairs"] = Stage(ctx.dir, f"round-{r}/pairs").summary()
    st.report_stage(ctx, summary, pair_files)
    return summary
