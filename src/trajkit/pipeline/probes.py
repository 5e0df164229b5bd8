"""The step-probe stage: Monte-Carlo returns of the policy's own steps against the expert's, at
states along the expert trajectories (`rollout.steps`); `pairs.step_pairs` turns them into pairs."""

from __future__ import annotations

import json
import time
from pathlib import Path

from trajkit.pipeline.stage import Stage, read_jsonl
from trajkit.pipeline.stages import explore_tasks
from trajkit.policy.backends import Sampling


def step_probe_stage(ctx, round_no: int, policy: str, expert_path: Path, name: str = "") -> Path:
    """`policy`'s own step at states along the expert trajectories of the explored tasks, and the
    Monte-Carlo returns of its step and the expert's where they differ (`rollout.steps`)."""
    from trajkit.rollout import RolloutConfig
    from trajkit.rollout.steps import expert_probes, propose_steps, score_steps, write_records

    stage = Stage(ctx.dir, name or f"round-{round_no}/steps")
    path = stage.final / "probes.jsonl"
    if stage.done:
        return path
    work = stage.begin()
    pc, ex = ctx.cfg.pairs, ctx.cfg.explore
    tasks = explore_tasks(ctx, expert_path)[: pc.probe_tasks]
    wanted = {t.id for t in tasks}
    experts = [e for e in read_jsonl(expert_path) if e.task_id in wanted]
    probes = expert_probes(experts, {t.id: t for t in tasks}, pc.probe_steps, ctx.cfg.seed + round_no)
    width = ctx.kind.rollout_width(ex.batch_size)
    t0 = time.perf_counter()
    with ctx.samplers.hold():  # proposing and scoring share one sampler (one vLLM engine)
        backend, renderer = ctx.samplers.get(policy, ctx.cfg.model.template, width)
        propose_steps(probes, backend, renderer, Sampling(temperature=0, max_new_tokens=ex.max_new_tokens))
        config = RolloutConfig(
            n_samples=pc.probe_samples,
            sampling=Sampling(
                pc.probe_temperature, ex.top_p, ex.max_new_tokens, seed=ctx.cfg.seed + round_no
            ),
            batch_size=width,
            max_context=ex.max_context,
            context_overflow=ex.context_overflow,
            policy_id=f"probe-{round_no}",
        )
        agent = ctx.kind.agent(renderer, None, ctx.instruction(), None)
        progress = lambda msg: ctx.log(f"[{stage.name}] {msg}")  # noqa: E731
        records = score_steps(
            probes, ctx.env(), ctx.rollout_envs(width), backend, agent, work, config, progress
        )
    write_records(work / "probes.jsonl", records)
    summary = {
        "probes": len(probes),
        "differing_steps": len(records),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    stage.commit(summary)
    ctx.log(f"[{stage.name}] {json.dumps(summary)}")
    return path
