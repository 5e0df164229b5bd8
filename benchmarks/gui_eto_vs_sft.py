"""ETO against SFT for GUI agents, paired, from a finished GUI run (`trajkit demo --gui`, or
`trajkit run` on a GUI recipe).

Both checkpoints were evaluated greedily on the same held-out MiniWoB++ seeds under each inference
mode (`eval-sft/<mode>/<split>` and `round-<last>/eval/<mode>/<split>`). Per mode:

- success of each with 95% Wilson intervals, and the paired difference on the same episodes
  (exact McNemar test on the discordant episodes: SFT only / ETO only);
- error analysis: where each checkpoint's first click lands against the target element's DOM box
  (`gui.click_grounding`, gold from the scripted expert on the same held-out seeds, played here),
  and how its failures end (wrong first click, another first action, unparseable, out of steps).

    .venv/bin/python benchmarks/gui_eto_vs_sft.py runs/demo-gui [--split test]

Writes `eto_vs_sft.json` and `eto_vs_sft.md` in the run folder (or `--out`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from trajkit.data.io import load_trajectories
from trajkit.data.stats import paired
from trajkit.data.stats import success_rate as rate
from trajkit.envs.registry import play_oracle
from trajkit.gui.click_grounding import score_first_clicks
from trajkit.pipeline.config import load_run_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--split", default="test")
    p.add_argument("--out", type=Path, default=None, help="results .json (default: RUN_DIR/eto_vs_sft.json)")
    return p.parse_args(argv)


def ending(traj, max_steps: int) -> str:
    if traj.success:
        return "success"
    if traj.metadata.get("error"):
        return "env error"
    out_of_steps = traj.metadata.get("truncated") or traj.metadata.get("steps", 0) >= max_steps
    return "out of steps" if out_of_steps else "ended failed"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = args.run_dir
    cfg = load_run_config(run / "config.yaml")
    if cfg.gui is None:
        print(f"error: {run}: not a GUI run (no gui: section in its config.yaml)", file=sys.stderr)
        return 2
    rounds = sorted(int(p.name.split("-")[1]) for p in run.glob("round-*") if (p / "eval").is_dir())
    if not rounds:
        print(f"error: {run}: no evaluated round (round-N/eval) yet", file=sys.stderr)
        return 2
    last = f"round-{rounds[-1]}"
    with tempfile.TemporaryDirectory() as tmp:
        gold = play_oracle(
            cfg.env.name, args.split, cfg.eval.limit, **{**cfg.env.kwargs, "screenshot_dir": tmp}
        )
        result: dict = {"run": str(run), "split": args.split, "eto": last, "modes": {}}
        for mode in cfg.gui.eval_modes:
            sides = {
                "sft": load_trajectories(str(run / "eval-sft" / mode / args.split / "rollouts.jsonl")),
                "eto": load_trajectories(str(run / last / "eval" / mode / args.split / "rollouts.jsonl")),
            }
            success = {k: {t.task_id: bool(t.success) for t in v} for k, v in sides.items()}
            block = {"paired": paired(success["sft"], success["eto"])}
            for name, trajs in sides.items():
                clicks = score_first_clicks(trajs, gold).to_dict()
                endings: dict[str, int] = {}
                for t in trajs:
                    kind = ending(t, cfg.eval.max_steps)
                    endings[kind] = endings.get(kind, 0) + 1
                block[name] = {
                    "success": rate([bool(t.success) for t in trajs]),
                    "first_click": clicks,
                    "endings": endings,
                }
            result["modes"][mode] = block
    out = args.out or run / "eto_vs_sft.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# ETO ({last}) vs SFT on {run} ({args.split})", ""]
    lines += [
        "| mode | SFT success | ETO success | SFT only / ETO only (McNemar p) | first click on target: SFT / ETO |"
    ]
    lines += ["| --- | --- | --- | --- | --- |"]

    def pct(r: dict) -> str:
        return (
            f"{100 * r['rate']:.1f}% ({r['k']}/{r['n']}) [{100 * r['ci95'][0]:.1f}, {100 * r['ci95'][1]:.1f}]"
        )

    for mode, b in result["modes"].items():
        p = b["paired"]
        fc = f"{100 * b['sft']['first_click']['accuracy']:.1f}% / {100 * b['eto']['first_click']['accuracy']:.1f}%"
        lines.append(
            f"| {mode} | {pct(b['sft']['success'])} | {pct(b['eto']['success'])} | "
            f"{p['baseline_only']} / {p['method_only']} (p = {p['p']:.3f}) | {fc} |"
        )
    lines += ["", "First click on target per task (SFT / ETO), and how episodes ended:", ""]
    for mode, b in result["modes"].items():
        tasks = sorted(b["sft"]["first_click"]["by_task"])
        per = ", ".join(
            f"{t} {b['sft']['first_click']['by_task'][t]['correct']}/{b['sft']['first_click']['by_task'][t]['total']}"
            f" / {b['eto']['first_click']['by_task'].get(t, {}).get('correct', 0)}"
            for t in tasks
        )
        lines.append(f"- {mode}: {per}; endings SFT {b['sft']['endings']}, ETO {b['eto']['endings']}")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
