"""One function per stage of a run: expert, model, sft, explore, pairs, dpo, rft, eval, report.

Each takes the run's `RunContext` and is written once for text and GUI agents; what differs comes
from `ctx.kind` (`pipeline.agents`). Each is atomic (`pipeline.stage.Stage`): a finished stage is
read back, never redone. `rollouts()` and `evaluate()` are also what `trajkit explore` and
`trajkit eval` call outside a run.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from trajkit.config import ConfigError
from trajkit.data.schema import Trajectory
from trajkit.envs.base import ICL_SPAN, Task, split_overlap, without_example
from trajkit.pipeline.agents import TextAgents, agent_kind
from trajkit.pipeline.config import RunConfig
from trajkit.pipeline.envs import EnvSettingError, make_rollout_env, make_run_env
from trajkit.pipeline.progress import Console
from trajkit.pipeline.samplers import Samplers
from trajkit.pipeline.stage import Stage, read_jsonl, write_if_changed, write_jsonl
from trajkit.policy.backends import Sampling
from trajkit.train.launch import check_launch_here, train_stage

MODEL_CARD = "trajkit_model.json"


@dataclass
class RunContext:
    """A run's config, its agent kind, its log, and the envs it opened (closed by `close`)."""

    cfg: RunConfig
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr, flush=True))
    instruction_override: str | None = None  # outside a run: the model card's instruction
    _env: Any = None
    _pool: list = field(default_factory=list)
    splits_checked: bool = False
    console: Console = field(default_factory=Console)  # progress lines (and log.txt inside a run)

    def __post_init__(self):
        self.kind: TextAgents = agent_kind(self.cfg)
        self.samplers = Samplers(self.kind)  # rollouts' sampler, stopped when they end

    @property
    def dir(self) -> Path:
        return Path(self.cfg.run_dir)

    def env(self):
        """The env that lists tasks and runs the oracle (never with injected faults)."""
        if self._env is None:
            self._env = make_run_env(self.cfg.env.name, self.cfg.env.kwargs)
        return self._env

    def rollout_envs(self, n: int) -> list:
        """`n` envs for a rollout, from a pool kept for the whole run (a simulator or browser
        start costs seconds; `reset(task)` starts every episode afresh)."""
        kwargs = {**self.cfg.env.kwargs, **self.kind.env_kwargs(self.dir)}
        while len(self._pool) < n:
            self._pool.append(make_rollout_env(self.cfg.env, kwargs))
        return self._pool[:n]

    def close(self) -> None:
        """Close every env the run opened: a simulator (a JVM, a browser) must not outlive it."""
        envs, self._pool = [*self._pool, *([self._env] if self._env is not None else [])], []
        self._env = None
        for env in envs:
            env.close()

    def instruction(self) -> str | None:
        """The expert data's first user turn when every expert trajectory opens with the same one
        (and the run asks for it); else None, so rollouts use the env's own instruction."""
        if self.instruction_override is not None:
            return self.instruction_override
        if self.cfg.env.instruction_from != "expert":
            return None
        path = Stage(self.dir, "expert").final / "expert.jsonl"
        if not path.is_file():
            return None
        firsts = {traj.turns[0].text for traj in read_jsonl(path) if traj.turns}
        return firsts.pop() if len(firsts) == 1 else None

    def icl_source(self):
        env = self.env()
        if not hasattr(env, "icl_turns"):
            raise ConfigError(f"icl: env {self.cfg.env.name!r} has no in-context example")
        return env.icl_turns


# --- checks before any stage ----------------------------------------------------------------------
def prepare_dir(ctx: RunContext, config_text: str) -> None:
    # What the env refuses (its settings, a split, overlapping splits) ends the run before its
    # config is saved as the folder's: the fixed recipe must not be refused as a different one.
    check_splits(ctx)
    if ctx.cfg.launch is not None:  # more processes than GPUs, no DeepSpeed: refused before training
        check_launch_here(ctx.cfg.launch, lora=ctx.cfg.model.lora is not None)
    ctx.dir.mkdir(parents=True, exist_ok=True)
    saved = ctx.dir / "config.yaml"
    if saved.exists() and saved.read_text() != config_text:
        raise ConfigError(
            f"{saved}: this run folder was started with a different config; "
            "use a new run_dir (or restore the original config) so finished stages stay valid"
        )
    write_if_changed(saved, config_text)


def check_splits(ctx: RunContext) -> None:
    if ctx.splits_checked:
        return
    env = ctx.env()
    for split in ctx.cfg.eval.splits:
        try:
            overlap = split_overlap(env, "train", split)
        except (KeyError, ValueError) as err:  # an unknown split (a KeyError's str() is quoted)
            message = err.args[0] if isinstance(err, KeyError) and err.args else err
            raise EnvSettingError(f"eval.splits: {message}") from None
        if overlap and not ctx.cfg.eval.allow_overlap:
            raise ConfigError(
                f"{len(overlap)} {split} task(s) are also training tasks (e.g. {overlap[0]}); "
                "evaluation would be dishonest. Set eval.allow_overlap: true to proceed anyway"
            )
    ctx.splits_checked = True


# --- stages -----------------------------------------------------------------------------------------
def expert_stage(ctx: RunContext) -> Path:
    """Expert trajectories: the env's scripted expert on train tasks (unsolved ones dropped), or
    the configured files with their records mapped to env task ids."""
    stage = Stage(ctx.dir, "expert")
    path = stage.final / "expert.jsonl"
    if stage.done:
        return path
    work = stage.begin()
    expert = ctx.cfg.expert
    t0 = time.perf_counter()
    if expert.source == "oracle":
        from trajkit.envs.registry import get_oracle

        env = ctx.env()
        oracle = get_oracle(ctx.cfg.env.name)
        extra = ctx.kind.oracle_kwargs(ctx.dir)
        trajs = [oracle(env, task, ctx.cfg.seed, **extra) for task in env.tasks("train")[: expert.limit]]
        failed = [t.task_id for t in trajs if not t.success]
        if failed:  # an expert that did not solve its task teaches nothing good
            ctx.log(f"[expert] dropped {len(failed)} unsolved oracle episodes (e.g. {failed[0]})")
        trajs = [t for t in trajs if t.success]
    else:
        from trajkit.data.io import load_trajectories

        trajs = [t for p in expert.paths for t in load_trajectories(p, format=expert.format)]
        trajs = trajs[: expert.limit]
        # Published expert data names tasks its own way (ALFWorld: by game file); an env that
        # can map a record to its task id does so, so exploration and pairs find the tasks.
        resolve = getattr(ctx.env(), "expert_task_id", None)
        if resolve is not None:
            for t in trajs:
                t.task_id = resolve(t) or t.task_id
    verified: dict[str, Any] = {}
    if expert.verify and expert.source != "oracle":  # oracle episodes were just played in the env
        from trajkit.envs.verify import verify_trajectories

        results = verify_trajectories(ctx.env(), trajs)
        dropped = [r.id for r in results if not r.passed]
        trajs = [t for t, r in zip(trajs, results, strict=True) if r.passed]
        verified = {"verified": len(trajs), "dropped_unplayable": len(dropped), "dropped_ids": dropped}
        if dropped:
            reason = next(r for r in results if not r.passed).line()
            ctx.log(f"[expert] dropped {len(dropped)} unplayable demonstrations (e.g. {reason})")
    write_jsonl(work / "expert.jsonl", trajs)
    stage.commit(
        {
            "trajectories": len(trajs),
            "success": sum(bool(t.success) for t in trajs),
            "seconds": round(time.perf_counter() - t0, 1),
            **verified,
        }
    )
    ctx.log(f"[expert] {len(trajs)} expert trajectories")
    return path


def model_stage(ctx: RunContext, expert_path: Path) -> str:
    """The base model: the configured one, or a tiny one (a VLM for GUI runs) built on the spot."""
    model = ctx.cfg.model
    if model.base != "tiny":
        return model.base
    stage = Stage(ctx.dir, "model")
    if not stage.done:
        work = stage.begin()
        texts = [t.text for traj in read_jsonl(expert_path) for t in traj.turns]
        ctx.kind.make_tiny(texts, work / "model", model.tiny_size, ctx.cfg.seed)
        stage.commit({"size": model.tiny_size, **({"vision": True} if ctx.kind.vision else {})})
        ctx.log(
            f"[model] tiny{' VLM' if ctx.kind.vision else ''}-{model.tiny_size} built from the expert corpus"
        )
    return str(stage.final / "model")


def _run_owned(ctx: RunContext) -> dict[str, Any]:
    return {"template": ctx.cfg.model.template, "lora": ctx.cfg.model.lora, "seed": ctx.cfg.seed}


def _settings(obj) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def remember_env(ctx: RunContext, model_dir: Path) -> None:
    """Write the env settings a model was trained on into its card, so `trajkit eval --model`
    evaluates it in the same world by default."""
    card = model_dir / MODEL_CARD
    if not model_dir.is_dir():
        return
    meta = json.loads(card.read_text()) if card.is_file() else {}
    meta["env"] = {"name": ctx.cfg.env.name, "kwargs": ctx.cfg.env.kwargs, "instruction": ctx.instruction()}
    card.write_text(json.dumps(meta, indent=2) + "\n")


def _train_sft(ctx: RunContext, work: Path, base: str, data: Path, plan) -> float:
    """SFT of `base` on `data` into `work/model`; returns the seconds it took."""
    from trajkit.train.sft import SFTRecipe

    recipe = SFTRecipe(
        **{**_settings(plan.settings), **_run_owned(ctx), "gui_stage": plan.gui_stage},
        model=base,
        data=[str(data)],
        output_dir=str(work),
    )
    t0 = time.perf_counter()
    train_stage("sft", recipe, ctx.cfg.launch, ctx.log)  # in this process, or launched (cfg.launch)
    remember_env(ctx, work / "model")
    return time.perf_counter() - t0


def sft_stage(ctx: RunContext, base: str, data: Path, plan) -> str:
    """SFT of `base` on the expert data with `plan.settings` (an AGUVIS stage when
    `plan.gui_stage` is set)."""
    stage = Stage(ctx.dir, plan.name)
    if not stage.done:
        seconds = _train_sft(ctx, stage.begin(), base, data, plan)
        gui = {"gui_stage": plan.gui_stage} if plan.gui_stage else {}
        stage.commit({"seconds": round(seconds, 1), **gui})
        label = f"{plan.gui_stage} " if plan.gui_stage else ""
        ctx.log(f"[{plan.name}] {label}done in {seconds:.0f}s")
    return str(stage.final / "model")


def rollouts(
    ctx: RunContext,
    out_path: Path,
    model: str,
    tasks: list[Task],
    sampling: Sampling,
    batch_size: int,
    n_samples: int,
    policy_id: str,
    max_steps: int | None,
    mode: str | None = None,
    icl: str = "none",
    progress: Callable[[Any], None] | None = None,  # gets a rollout.engine.RolloutProgress
) -> list[Trajectory]:
    """Roll `model` out on `tasks` into `out_path` (resumes what is there) with the run's agent
    protocol, sampler and envs. `icl`: none, plain or intro (see `icl_style`)."""
    from trajkit.rollout import RolloutConfig, run_rollouts

    width = ctx.kind.rollout_width(batch_size)
    backend, renderer = ctx.samplers.get(model, ctx.cfg.model.template, width)
    example = ctx.icl_source() if icl != "none" else None
    agent = ctx.kind.agent(renderer, mode, ctx.instruction(), example, icl_intro=icl == "intro")
    config = RolloutConfig(
        n_samples=n_samples,
        sampling=sampling,
        batch_size=width,
        max_steps=max_steps,
        max_context=ctx.cfg.explore.max_context,
        context_overflow=ctx.cfg.explore.context_overflow,
        policy_id=policy_id,
    )
    envs = ctx.rollout_envs(min(width, max(1, len(tasks) * n_samples)))
    try:
        return run_rollouts(tasks, envs, backend, agent, out_path, config, progress)
    finally:
        ctx.samplers.done()


def rollout_stage(
    ctx: RunContext,
    name: str,
    model: str,
    tasks: list[Task],
    sampling: Sampling,
    batch_size: int,
    n_samples: int,
    policy_id: str,
    max_steps: int | None,
    mode: str | None = None,
    icl: str = "none",
) -> list[Trajectory]:
    stage = Stage(ctx.dir, name)
    if stage.done:
        return read_jsonl(stage.final / "rollouts.jsonl")
    work = stage.begin()
    t0 = time.perf_counter()
    progress = ctx.console.rollouts(name)
    trajs = rollouts(
        ctx, work / "rollouts.jsonl", model, tasks, sampling, batch_size, n_samples, policy_id, max_steps,
        mode, icl, progress,
    )  # fmt: skip
    steps = sum(t.metadata.get("steps", 0) for t in trajs)
    summary = {"episodes": len(trajs), "seconds": round(time.perf_counter() - t0, 1), "env_steps": steps}
    # For tracking (pipeline.tracking): success and sampled tokens, so speeds need no re-read.
    summary["success"] = sum(bool(t.success) for t in trajs)
    summary["agent_tokens"] = sum(len(u.token_ids or ()) for t in trajs for u in t.agent_turns)
    from trajkit.rollout.engine import accounting

    summary.update(accounting(trajs))  # every episode: finished, failed with an env error, retried
    if summary["env_errors"] or summary["retried"]:
        ctx.log(
            f"[{name}] {len(trajs)} episodes: {summary['finished']} finished, "
            f"{summary['env_errors']} failed with an env error, {summary['retried']} retried"
        )
    stage.commit({**summary, **({"mode": mode} if mode else {})})
    return trajs


def explore_tasks(ctx: RunContext, expert_path: Path) -> list[Task]:
    """The train tasks explored each round: those with expert data, up to `explore.limit`."""
    expert_ids = {t.task_id for t in read_jsonl(expert_path)}
    return [t for t in ctx.env().tasks("train") if t.id in expert_ids][: ctx.cfg.explore.limit]


def explore_stage(ctx: RunContext, round_no: int, policy: str, tasks: list[Task]) -> list[Trajectory]:
    ex = ctx.cfg.explore
    sampling = Sampling(
        temperature=ex.temperature,
        top_p=ex.top_p,
        max_new_tokens=ex.max_new_tokens,
        seed=ctx.cfg.seed + round_no,
    )
    return rollout_stage(
        ctx,
        f"round-{round_no}/explore",
        policy,
        tasks,
        sampling,
        ex.batch_size,
        ex.n_samples,
        f"round-{round_no - 1}" if round_no > 1 else "sft",
        ex.max_steps,
        ctx.kind.explore_mode(),
        icl=icl_style(ex),
    )


def icl_style(section) -> str:
    """How a rollout shows the in-context example: none, plain (ETO's chat turns) or intro."""
    if not section.icl:
        return "none"
    return "intro" if section.icl_intro else "plain"


def eval_stage(ctx: RunContext, name: str, model: str, policy_id: str) -> dict[str | None, dict]:
    """Greedy evaluation on every eval split under every inference mode of the agent kind;
    returns {mode: {split: metrics}} (text agents have one mode, None)."""
    from trajkit.evaluate import summarize

    ev = ctx.cfg.eval
    results: dict[str | None, dict] = {}
    with ctx.samplers.hold():  # one sampler (one vLLM engine) for every split and mode
        for mode in ctx.kind.eval_modes():
            results[mode] = {}
            for split in ev.splits:
                trajs = rollout_stage(
                    ctx,
                    f"{name}/{mode}/{split}" if mode else f"{name}/{split}",
                    model,
                    ctx.env().tasks(split)[: ev.limit],
                    Sampling(temperature=0, max_new_tokens=ev.max_new_tokens),
                    ev.batch_size,
                    1,
                    f"{policy_id}-{mode}" if mode else policy_id,
                    ev.max_steps,
                    mode,
                    icl=icl_style(ev),
                )
                m = results[mode][split] = summarize(trajs)
                label = f"{mode} {split}" if mode else split
                ctx.log(
                    f"[{name}] {label}: success {m['success_rate']:.3f} (n={m['n']}, CI95 {m['success_ci95']})"
                )
    saved = results[None] if list(results) == [None] else results
    write_if_changed(ctx.dir / name / "metrics.json", json.dumps(saved, indent=2) + "\n")
    return results


def rft_stage(ctx: RunContext, sft_model: str, explored: list[Trajectory]) -> str | None:
    """Rejection-sampling fine-tuning baseline: the SFT policy trained on its own successes."""
    from trajkit.pipeline.agents import SFTPlan

    stage = Stage(ctx.dir, "rft")
    if stage.done:
        model = stage.final / "model"
        return str(model) if model.is_dir() else None
    work = stage.begin()
    # Trained on the expert data's prompt: an in-context example a rollout was shown is left out.
    successes = [
        dataclasses.replace(t, turns=without_example(t.turns, t.metadata.get(ICL_SPAN)))
        for t in explored
        if t.success
    ]
    if not successes:
        stage.commit({"skipped": "no successful explorations"})
        ctx.log("[rft] no successful explorations: baseline skipped")
        return None
    write_jsonl(work / "successes.jsonl", successes)
    plan = SFTPlan("rft", ctx.cfg.sft_settings(ctx.cfg.rft_sft))
    seconds = _train_sft(ctx, work, sft_model, work / "successes.jsonl", plan)
    stage.commit({"successes": len(successes), "of": len(explored), "seconds": round(seconds, 1)})
    ctx.log(f"[rft] trained on {len(successes)}/{len(explored)} successful explorations")
    return str(stage.final / "model")


def pairs_stage(
    ctx: RunContext, round_no: int, expert_path: Path, explored: list[Trajectory], probes: Path | None = None
) -> Path:
    """The round's pairs: ETO's trajectory pairs from `explored`, or (strategy step_mc) step pairs
    from the scored step probes in `probes` (`pipeline.probes.step_probe_stage`)."""
    from trajkit.pairs import build_pairs, step_pairs

    stage = Stage(ctx.dir, f"round-{round_no}/pairs")
    path = stage.final / "pairs.jsonl"
    if stage.done:
        return path
    if ctx.cfg.pairs.strategy == "step_mc":
        if probes is None:
            raise ValueError("pairs_stage: strategy step_mc needs the round's scored step probes")
        with probes.open(encoding="utf-8") as fh:
            records = [json.loads(line) for line in fh if line.strip()]
        work = stage.begin()
        result = step_pairs(records, ctx.cfg.pairs.margin)
    else:
        work = stage.begin()
        expert = ctx.kind.pair_expert(read_jsonl(expert_path))
        result = build_pairs(explored, expert, ctx.cfg.pairs.strategy, ctx.cfg.pairs.extra_turns)
    with (work / "pairs.jsonl").open("w", encoding="utf-8") as fh:
        for pair in result.pairs:
            fh.write(json.dumps(pair, ensure_ascii=False) + "\n")
    stage.commit(result.counts())
    ctx.log(f"[round-{round_no}/pairs] {json.dumps(result.counts())}")
    return path


def dpo_stage(ctx: RunContext, round_no: int, policy: str, sft_model: str, pairs_path: Path) -> str:
    """Masked DPO of the round's policy on its pairs; no pairs: the policy is kept as it is."""
    from trajkit.train.dpo import DPORecipe, load_pairs

    stage = Stage(ctx.dir, f"round-{round_no}/dpo")
    if stage.done:
        model = stage.final / "model"
        return str(model) if model.is_dir() else policy
    if not load_pairs([str(pairs_path)]):
        ctx.log(f"[round-{round_no}/dpo] no pairs: the policy is kept as it is")
        stage.begin()
        stage.commit({"skipped": "no pairs"})
        return policy
    work = stage.begin()
    settings = ctx.cfg.dpo_settings(round_no)
    recipe = DPORecipe(
        **{**_settings(settings), **_run_owned(ctx)},
        model=policy,
        ref_model=sft_model if ctx.cfg.dpo_reference == "sft" else None,
        pairs=[str(pairs_path)],
        output_dir=str(work),
    )
    t0 = time.perf_counter()
    train_stage("dpo", recipe, ctx.cfg.launch, ctx.log)
    remember_env(ctx, work / "model")
    seconds = round(time.perf_counter() - t0, 1)
    stage.commit({"seconds": seconds, "beta": recipe.beta, "learning_rate": recipe.learning_rate})
    ctx.log(f"[round-{round_no}/dpo] done in {seconds:.0f}s")
    model = stage.final / "model"
    return str(model) if model.is_dir() else policy


def report_stage(ctx: RunContext, summary: dict[str, Any], pair_files: list[Path]) -> None:
    saved = ctx.dir / "summary.json"
    if saved.is_file() and json.loads(saved.read_text()) == summary:
        return  # a re-run of a finished run rewrites nothing
    ctx.kind.write_report(ctx.dir, summary, pair_files)
