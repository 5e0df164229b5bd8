"""AGUVIS's claims at small scale, from one recipe, one data set and one budget.

Three SFT-only runs of the GUI demo recipe (`configs/miniwob_eto_tiny.yaml`, `rounds: 0`: the
oracle's train episodes, the tiny Qwen2-VL, evaluation on the same held-out MiniWoB++ seeds):

- `full`: stage 1 (grounding) then stage 2 (planning with the recipe's reasoning mixture);
- `stage2_only`: `gui.grounding_stage: false` (AGUVIS: the grounding stage helps planning);
- `actions_only`: stage 2 without inner monologue (`reasoning_mixture: {none: 1}`; AGUVIS:
  reasoning helps).

Each checkpoint is evaluated under enforced plan and self plan (AGUVIS: enforced plan cuts
grounding errors by about 20%). Per run and mode: episode success and first-click grounding (the
first click inside the target's DOM box, gold from the oracle on the same held-out seeds), with
95% Wilson intervals; the claims as paired differences on the same episodes (exact McNemar).

    .venv/bin/python benchmarks/gui_aguvis_claims.py --out runs/aguvis-claims [--set key=value ...]

`--set` overrides go to every run (e.g. `--set env.kwargs.n_test=10`). Rerunning resumes (each run
is a pipeline run folder). Writes `claims.json` and `claims.md` in `--out`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from trajkit.data.io import load_trajectories
from trajkit.data.stats import paired
from trajkit.data.stats import success_rate as rate
from trajkit.envs.registry import play_oracle
from trajkit.gui.click_grounding import score_first_clicks
from trajkit.pipeline import config_to_yaml, demo_config, execute

VARIANTS = {
    "full": [],
    "stage2_only": ["gui.grounding_stage=false"],
    "actions_only": ["gui.stage2.reasoning_mixture={none: 1.0}"],
}
MODES = ("enforced_plan", "self_plan")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--split", default="test")
    return p.parse_args(argv)


def first_click_flags(trajs, gold) -> dict[str, bool]:
    """Per episode (task id): did its first click land on the target? (click tasks only)."""
    out = {}
    for t in trajs:
        report = score_first_clicks([t], gold)
        if report.overall.total:
            out[t.task_id] = report.overall.correct == 1
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    outcomes: dict[str, dict[str, dict]] = {}
    minutes: dict[str, float] = {}
    gold = None
    for name, extra in VARIANTS.items():
        cfg = demo_config(str(args.out / name), ["rounds=0", "rft=false", *args.overrides, *extra], gui=True)
        t0 = time.perf_counter()
        execute(cfg, config_to_yaml(cfg), quiet=True)
        minutes[name] = round((time.perf_counter() - t0) / 60, 1)
        if gold is None:
            gold = play_oracle(
                cfg.env.name,
                args.split,
                cfg.eval.limit,
                **{**cfg.env.kwargs, "screenshot_dir": str(args.out / "gold-images")},
            )
        outcomes[name] = {}
        for mode in MODES:
            trajs = load_trajectories(
                str(args.out / name / "eval-sft" / mode / args.split / "rollouts.jsonl")
            )
            outcomes[name][mode] = {
                "success": {t.task_id: bool(t.success) for t in trajs},
                "click": first_click_flags(trajs, gold),
            }
    table = {
        name: {
            mode: {k: rate(list(v.values())) for k, v in by_mode.items()} for mode, by_mode in runs.items()
        }
        for name, runs in outcomes.items()
    }
    claims = {
        "grounding stage helps planning (full vs stage2_only, enforced plan)": {
            k: paired(outcomes["stage2_only"]["enforced_plan"][k], outcomes["full"]["enforced_plan"][k])
            for k in ("success", "click")
        },
        "enforced plan vs self plan (full)": {
            k: paired(outcomes["full"]["self_plan"][k], outcomes["full"]["enforced_plan"][k])
            for k in ("success", "click")
        },
        "reasoning mixture vs actions only (enforced plan)": {
            k: paired(outcomes["actions_only"]["enforced_plan"][k], outcomes["full"]["enforced_plan"][k])
            for k in ("success", "click")
        },
    }
    result = {"overrides": args.overrides, "minutes": minutes, "table": table, "claims": claims}
    (args.out / "claims.json").write_text(json.dumps(result, indent=2) + "\n")

    def pct(r: dict) -> str:
        return (
            f"{100 * r['rate']:.1f}% ({r['k']}/{r['n']}) [{100 * r['ci95'][0]:.0f}, {100 * r['ci95'][1]:.0f}]"
        )

    lines = ["| run | mode | episode success | first click on target |", "| --- | --- | --- | --- |"]
    for name, by_mode in table.items():
        for mode, r in by_mode.items():
            lines.append(
                f"| {name} ({minutes[name]} min) | {mode} | {pct(r['success'])} | {pct(r['click'])} |"
            )
    lines += [
        "",
        "| claim (baseline -> method, same episodes) | success: baseline only / method only, p | "
        "first click: baseline only / method only, p |",
        "| --- | --- | --- |",
    ]
    for claim, c in claims.items():
        s, k = c["success"], c["click"]
        lines.append(
            f"| {claim} | {s['baseline_only']} / {s['method_only']}, p = {s['p']:.3f} | "
            f"{k['baseline_only']} / {k['method_only']}, p = {k['p']:.3f} |"
        )
    (args.out / "claims.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
