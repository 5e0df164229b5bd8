"""Learning benchmark: does learning from exploration beat supervised fine-tuning?

Within each seed, one SFT model (its own expert data, tokenizer and training) and every method
started from that same checkpoint, evaluated greedily on the same test tasks:

- `sft`: the SFT policy itself (the baseline every other row is paired against);
- `rft`: SFT continued on the SFT policy's own successful explorations (ETO's RFT baseline);
- `eto`: ETO as published: greedy exploration of every train task with an expert trajectory,
  failed rollout vs the expert of the same task (trajectory pairs), masked DPO;
- `step`: IPR-style step pairs (`pairs.strategy: step_mc`): the policy's own step vs the expert's
  at states along expert trajectories where the policy's step has the lower Monte-Carlo return;
  masked DPO with an NLL term on the chosen step;
- `step_sft`: the matching SFT baseline: the expert's step at those same states, as SFT data;
- `bon`: Best-of-N, N sampled episodes per test task, a success when any succeeds: an upper
  reference that uses the env's reward at test time (not a policy).

Per split: success and mean reward x100 with Wilson 95% intervals, and each method's paired
difference against SFT on the same tasks (exact McNemar test per seed, and pooled over seeds:
the discordant counts summed). Writes `results.json`, `results.md` and `results.png` to `--out`;
rerunning resumes (every step is a pipeline stage with a done marker).

    .venv/bin/python benchmarks/learning.py --out runs/learning            # 3 seeds, full test splits
    .venv/bin/python benchmarks/learning.py --out /tmp/l --toy             # seconds-scale smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from trajkit.data.stats import mcnemar_exact, paired
from trajkit.evaluate import wilson_interval
from trajkit.pipeline import stages as st
from trajkit.pipeline.config import config_to_yaml, demo_config
from trajkit.pipeline.probes import step_probe_stage
from trajkit.pipeline.stage import Stage, read_jsonl, write_jsonl, write_manifest
from trajkit.policy.backends import Sampling

METHODS = ("sft", "rft", "eto", "step", "step_sft", "bon")
SPLITS = ("test_seen", "test_unseen")

TOY = [  # a few seconds per stage: the CI smoke size
    "env.kwargs.n_train=40",
    "env.kwargs.n_test=6",
    "expert.limit=12",
    "sft.max_steps=3",
    "sft.batch_size=4",
    "explore.limit=4",
    "explore.batch_size=4",
    "explore.max_new_tokens=12",
    "explore.max_steps=4",
    "eval.max_new_tokens=12",
    "eval.max_steps=4",
    "eval.batch_size=6",
    "dpo.max_steps=2",
    "dpo.batch_size=2",
    "pairs.probe_tasks=3",
    "pairs.probe_steps=2",
    "rft_sft.max_steps=2",
]


# --- statistics ----------------------------------------------------------------------------------
def rate(outcomes: list[bool]) -> dict[str, Any]:
    n, k = len(outcomes), sum(outcomes)
    lo, hi = wilson_interval(k, n)
    return {
        "n": n,
        "success": round(100 * k / n, 1) if n else 0.0,
        "ci95": [round(100 * lo, 1), round(100 * hi, 1)],
    }


def failure_kind(traj) -> str:
    """Why an episode failed, from its turns: the error analysis's categories."""
    if traj.metadata.get("error"):
        return "env error"
    if traj.metadata.get("context_exhausted"):
        return "context exhausted"
    agent = [t.text for t in traj.turns[3:] if t.role == "agent"]
    if any("Action:" not in text for text in agent):
        return "no action"
    observations = [t.text for t in traj.turns[3:] if t.role == "observation"]
    invalid = sum("Nothing happened" in text for text in observations)
    actions = [text.rsplit("Action:", 1)[-1].strip() for text in agent]
    if len(actions) >= 3 and len(set(actions[-3:])) == 1:
        return "repeats an action"
    if invalid:
        return "invalid action"
    return "out of steps (valid actions)"


# --- one seed ------------------------------------------------------------------------------------
@dataclasses.dataclass
class Outcomes:
    success: dict[str, bool]
    reward: dict[str, float]
    failures: dict[str, int]


def outcomes(trajs, best_of: bool = False) -> Outcomes:
    by_task: dict[str, list] = {}
    for traj in trajs:
        by_task.setdefault(traj.task_id, []).append(traj)
    success, reward, failures = {}, {}, {}
    for task, group in by_task.items():
        success[task] = any(bool(t.success) for t in group)
        reward[task] = max(float(t.reward or 0.0) for t in group)
        if not best_of and not success[task]:
            kind = failure_kind(group[0])
            failures[kind] = failures.get(kind, 0) + 1
    return Outcomes(success, reward, failures)


def eval_outcomes(ctx, name: str, model: str, policy_id: str) -> dict[str, Outcomes]:
    st.eval_stage(ctx, name, model, policy_id)
    return {split: outcomes(read_jsonl(ctx.dir / name / split / "rollouts.jsonl")) for split in SPLITS}


def method_ctx(ctx, sub: str, overrides: dict[str, Any] | None = None):
    cfg = dataclasses.replace(ctx.cfg, run_dir=str(ctx.dir / sub))
    for section, values in (overrides or {}).items():
        setattr(cfg, section, dataclasses.replace(getattr(cfg, section), **values))
    return st.RunContext(cfg, ctx.log)


def run_seed(seed: int, out: Path, args, log) -> dict[str, dict[str, Outcomes]]:
    # ETO as published: greedy exploration (of every expert-covered train task unless limited).
    overrides = [
        f"seed={seed}",
        "rounds=1",
        "rft=true",
        "explore.temperature=0",
        *(TOY if args.toy else []),
        *args.set,
    ]
    cfg = demo_config(str(out / f"seed-{seed}"), overrides)
    cfg.eval.limit = None if not args.toy else cfg.eval.limit
    cfg.explore.limit = args.explore_limit if not args.toy else cfg.explore.limit
    ctx = st.RunContext(cfg, log)
    contexts = [ctx]
    results: dict[str, dict[str, Outcomes]] = {}
    try:
        st.prepare_dir(ctx, config_to_yaml(cfg))
        write_manifest(ctx.dir, ctx.env(), cfg.seed, ["train", *cfg.eval.splits])
        expert = st.expert_stage(ctx)
        model = st.model_stage(ctx, expert)
        for plan in ctx.kind.sft_plan():
            model = st.sft_stage(ctx, model, expert, plan)
        sft = model
        results["sft"] = eval_outcomes(ctx, "eval-sft", sft, "sft")
        tasks = st.explore_tasks(ctx, expert)

        eto = method_ctx(ctx, "eto")
        contexts.append(eto)
        explored = st.explore_stage(eto, 1, sft, tasks)
        if "rft" in args.methods:
            rft = st.rft_stage(eto, sft, explored)
            results["rft"] = eval_outcomes(eto, "eval-rft", rft or sft, "rft")
        if "eto" in args.methods:
            pairs = st.pairs_stage(eto, 1, expert, explored)
            policy = st.dpo_stage(eto, 1, sft, sft, pairs)
            results["eto"] = eval_outcomes(eto, "eval", policy, "eto")

        if "step" in args.methods or "step_sft" in args.methods:
            step = method_ctx(ctx, "step", {"pairs": {"strategy": "step_mc"}})
            step.cfg.dpo = dataclasses.replace(step.cfg.dpo, **args.step_dpo)
            contexts.append(step)
            pairs = st.pairs_stage(step, 1, expert, [], step_probe_stage(step, 1, sft, expert))
            if "step" in args.methods:
                policy = st.dpo_stage(step, 1, sft, sft, pairs)
                results["step"] = eval_outcomes(step, "eval", policy, "step")
            if "step_sft" in args.methods:
                model = step_sft_stage(step, sft, pairs)
                results["step_sft"] = eval_outcomes(step, "eval-step-sft", model, "step_sft")

        if "bon" in args.methods:
            results["bon"] = best_of_n(ctx, sft, args.bon_n)
    finally:
        for c in contexts:
            c.close()
    return results


def step_sft_stage(ctx, sft: str, pairs_path: Path) -> str:
    """SFT continued on the expert's step at the probed states (prompt + chosen, chosen trained)."""
    from trajkit.data.schema import Trajectory, Turn
    from trajkit.pipeline.agents import SFTPlan

    stage = Stage(ctx.dir, "step-sft")
    if stage.done:
        return str(stage.final / "model") if (stage.final / "model").is_dir() else sft
    work = stage.begin()
    rows = [json.loads(line) for line in pairs_path.read_text().splitlines() if line.strip()]
    if not rows:
        stage.commit({"skipped": "no step pairs"})
        return sft
    trajs = []
    for i, pair in enumerate(rows):
        prompt = [Turn.from_dict({**t, "train": False}) for t in pair["prompt"]]
        trajs.append(
            Trajectory(f"step-{i}", prompt + [Turn.from_dict(pair["chosen"][0])], task_id=pair["task_id"])
        )
    write_jsonl(work / "steps.jsonl", trajs)
    st._train_sft(
        ctx, work, sft, work / "steps.jsonl", SFTPlan("step-sft", ctx.cfg.sft_settings(ctx.cfg.rft_sft))
    )
    stage.commit({"samples": len(trajs)})
    return str(stage.final / "model")


def best_of_n(ctx, sft: str, n: int) -> dict[str, Outcomes]:
    ev = ctx.cfg.eval
    out = {}
    for split in SPLITS:
        trajs = st.rollout_stage(
            ctx,
            f"bon/{split}",
            sft,
            ctx.env().tasks(split)[: ev.limit],
            Sampling(temperature=1.0, max_new_tokens=ev.max_new_tokens, seed=ctx.cfg.seed),
            ev.batch_size,
            n,
            "bon",
            ev.max_steps,
        )
        out[split] = outcomes(trajs, best_of=True)
    return out


# --- the table -----------------------------------------------------------------------------------
def summarize(per_seed: dict[int, dict[str, dict[str, Outcomes]]], methods: list[str]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for method in methods:
        row: dict[str, Any] = {}
        for split in SPLITS:
            seeds = [s for s in per_seed if method in per_seed[s]]
            pooled = [v for s in seeds for v in per_seed[s][method][split].success.values()]
            rewards = [v for s in seeds for v in per_seed[s][method][split].reward.values()]
            entry: dict[str, Any] = {
                **rate(pooled),
                "reward": round(100 * sum(rewards) / max(1, len(rewards)), 1),
            }
            entry["per_seed"] = {s: rate(list(per_seed[s][method][split].success.values())) for s in seeds}
            entry["failures"] = {s: per_seed[s][method][split].failures for s in seeds}
            if method != "sft":
                tests = {
                    s: paired(per_seed[s]["sft"][split].success, per_seed[s][method][split].success)
                    for s in seeds
                }
                b = sum(t["baseline_only"] for t in tests.values())
                c = sum(t["method_only"] for t in tests.values())
                n = sum(t["n"] for t in tests.values())
                entry["vs_sft"] = {
                    "per_seed": tests,
                    "pooled": {"n": n, "baseline_only": b, "method_only": c, "p": mcnemar_exact(b, c)},
                    "difference": round(100 * (c - b) / max(1, n), 1),
                }
            row[split] = entry
        table[method] = row
    return table


def markdown(table: dict[str, Any], seeds: list[int], minutes: float) -> str:
    lines = [
        f"Seeds {seeds}; success % pooled over seeds [Wilson 95%]; paired difference vs SFT in points "
        f"(exact McNemar p, pooled). Wall time {minutes:.1f} min.",
        "",
        "| method | test_seen | vs SFT | test_unseen | vs SFT | reward x100 (seen / unseen) |",
        "|---|---|---|---|---|---|",
    ]
    for method, row in table.items():
        cells = []
        for split in SPLITS:
            e = row[split]
            cells.append(f"{e['success']} [{e['ci95'][0]}, {e['ci95'][1]}] (n={e['n']})")
            vs = e.get("vs_sft")
            cells.append("—" if vs is None else f"{vs['difference']:+.1f} (p={vs['pooled']['p']:.3g})")
        lines.append(
            f"| {method} | {' | '.join(cells)} | {row['test_seen']['reward']} / {row['test_unseen']['reward']} |"
        )
    lines += ["", "test_unseen failures by kind (summed over seeds):", ""]
    kinds = sorted({k for row in table.values() for f in row["test_unseen"]["failures"].values() for k in f})
    lines += ["| method | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    for method, row in table.items():
        if method == "bon":
            continue
        sums = {k: sum(f.get(k, 0) for f in row["test_unseen"]["failures"].values()) for k in kinds}
        lines.append(f"| {method} | " + " | ".join(str(sums[k]) for k in kinds) + " |")
    return "\n".join(lines) + "\n"


def plot(table: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    methods = list(table)
    for j, split in enumerate(SPLITS):
        xs = [i + (j - 0.5) * 0.38 for i in range(len(methods))]
        ys = [table[m][split]["success"] for m in methods]
        err = [
            [y - table[m][split]["ci95"][0] for m, y in zip(methods, ys, strict=True)],
            [table[m][split]["ci95"][1] - y for m, y in zip(methods, ys, strict=True)],
        ]
        ax.bar(xs, ys, width=0.36, yerr=err, capsize=3, label=split)
    ax.set_xticks(range(len(methods)), methods)
    ax.set_ylabel("success % (pooled, 95% CI)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--bon-n", type=int, default=4)
    parser.add_argument("--explore-limit", type=int, default=None, help="train tasks explored (default: all)")
    parser.add_argument(
        "--step-dpo", default='{"nll_weight": 1.0}', help="DPO overrides for step pairs (JSON)"
    )
    parser.add_argument("--set", action="append", default=[], help="recipe override key=value (repeatable)")
    parser.add_argument("--toy", action="store_true", help="seconds-scale sizes (the CI smoke test)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    args.methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    args.methods = ["sft", *[m for m in args.methods if m != "sft"]]
    args.step_dpo = json.loads(args.step_dpo)
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    per_seed = {seed: run_seed(seed, args.out, args, log) for seed in args.seeds}
    minutes = (time.perf_counter() - t0) / 60
    table = summarize(per_seed, args.methods)
    result = {
        "seeds": args.seeds,
        "minutes": round(minutes, 1),
        "methods": table,
        "argv": sys.argv[1:] if argv is None else argv,
    }
    (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown(table, args.seeds, minutes))
    plot(table, args.out / "results.png")
    print((args.out / "results.md").read_text())
    return result


if __name__ == "__main__":
    main()
