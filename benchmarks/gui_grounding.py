"""Stage-1 grounding on MiniWoB++: does the tiny VLM learn to click the element it is told to?

One run, on CPU, in headless Chromium:

1. the scripted expert plays `--train-seeds` seeds of each task (train seeds) and `--test-seeds`
   held-out seeds (MiniWoB's test seeds, disjoint from train); every click step records the
   clicked element's DOM box (`metadata.target_boxes`);
2. a tiny Qwen2-VL is made from the train corpus (`make_tiny_vlm`, random vision tower);
3. AGUVIS stage 1 (`gui_stage: grounding`, the tower trained since it starts random) on the train
   steps, `--max-steps` optimizer steps, wall time measured;
4. the trained model answers each held-out click step (screenshot + the step's low-level
   instruction -> `pyautogui.click(x=..., y=...)`, greedy, `rollout.grounding`) and a click is right
   when it lands inside the target's box (`gui.metrics.evaluate_grounding`), per task and overall
   with 95% Wilson intervals.

Two references from the same data: `prior`, clicking each task's mean train target centre (what
position alone earns, no screen read), and the trained model on its own train steps (fit).

    .venv/bin/python benchmarks/gui_grounding.py [--train-seeds 96 --test-seeds 10 --max-steps 4000]

Writes `--out` (default benchmarks/results/gui-grounding-<date>.json) and a Markdown table beside
it; the work folder is temporary unless `--work` is given.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from trajkit.data.io import write_trajectories
from trajkit.envs.registry import play_oracle
from trajkit.gui.grounding_data import read_trajectory_gold
from trajkit.gui.metrics import evaluate_grounding

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.60
# MiniWoB++ tasks with a scripted expert whose steps are clicks on one named element.
CLICK_TASKS = (
    "click-test",
    "click-test-2",
    "click-button",
    "click-link",
    "click-tab",
    "click-dialog",
    "click-widget",
    "click-option",
    "click-checkboxes",
    "click-collapsible",
    "focus-text",
    "focus-text-2",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default=",".join(CLICK_TASKS), help="comma-separated MiniWoB++ tasks")
    p.add_argument("--train-seeds", type=int, default=96, help="train seeds per task")
    p.add_argument("--test-seeds", type=int, default=10, help="held-out seeds per task")
    p.add_argument("--size", default="xs", help="tiny VLM size (xs, s)")
    p.add_argument("--max-steps", type=int, default=4000, help="stage-1 optimizer steps")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--freeze-vision",
        choices=("auto", "true", "false"),
        default="auto",
        help="auto: train the tiny VLM's random tower (SFTSettings.freeze_vision null)",
    )
    p.add_argument("--freeze-merger", action="store_true", help="with --freeze-vision true: the merger too")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--work", type=Path, default=None, help="keep the work here (default: a temp folder)")
    p.add_argument("--out", type=Path, default=None, help="results .json (a .md is written beside it)")
    return p.parse_args(argv)


def play(tasks: list[str], split: str, n_train: int, n_test: int, out: Path) -> tuple[Path, float]:
    """The oracle's trajectories of every `split` seed, written to `out`; (path, seconds). A `--work`
    folder that already holds them for the same tasks and seeds is reused (a second model size or
    step budget on the same data)."""
    stamp = out.with_suffix(".played.json")
    played = {"tasks": tasks, "n_train": n_train, "n_test": n_test}
    if out.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == played:
        print(f"  reusing {out}")
        return out, 0.0
    t0 = time.perf_counter()
    trajectories = play_oracle(
        "miniwob",
        split,
        tasks=tasks,
        n_train=n_train,
        n_test=n_test,
        screenshot_dir=str(out.parent / f"{split}-shots"),
    )
    failed = [t.id for t in trajectories if not t.success]
    if failed:
        print(f"  oracle failed {len(failed)} {split} episodes: {failed[:5]}", file=sys.stderr)
    write_trajectories(trajectories, out)
    stamp.write_text(json.dumps(played))
    return out, time.perf_counter() - t0


def prior_predictions(train_gold: list[dict], test_gold: list[dict]) -> list[dict]:
    """Each test record clicked at its task's mean train target centre."""
    centres: dict[str, list[tuple[float, float]]] = {}
    for row in train_gold:
        x1, y1, x2, y2 = row["bbox"]
        centres.setdefault(row["element_type"], []).append(((x1 + x2) / 2, (y1 + y2) / 2))
    out = []
    for row in test_gold:
        pts = centres.get(row["element_type"], [(0.5, 0.5)])
        out.append(
            {
                "id": row["id"],
                "point": [statistics.fmean(p[0] for p in pts), statistics.fmean(p[1] for p in pts)],
            }
        )
    return out


def stage1(model_dir: Path, data: Path, out_dir: Path, args: argparse.Namespace) -> tuple[Path, dict]:
    from trajkit.train.sft import SFTRecipe, run_sft

    recipe = SFTRecipe(
        model=str(model_dir),
        data=[str(data)],
        output_dir=str(out_dir),
        gui_stage="grounding",
        pack_max_turns=16,
        freeze_vision={"auto": None, "true": True, "false": False}[args.freeze_vision],
        train_merger=not args.freeze_merger,
        weight_decay=args.weight_decay,
        loss_mask="agent",
        epochs=1000,  # bounded by max_steps
        max_steps=args.max_steps,
        learning_rate=args.lr,
        lr_scheduler="cosine",
        warmup=0.03,
        batch_size=args.batch_size,
        max_length=2048,
        logging_steps=100,
        save_steps=args.max_steps + 1,
        seed=args.seed,
    )
    t0 = time.perf_counter()
    model = run_sft(recipe)
    seconds = time.perf_counter() - t0
    log = out_dir / "train_log.json"
    history = json.loads(log.read_text())["log_history"] if log.is_file() else []
    losses = [round(h["loss"], 4) for h in history if "loss" in h]
    return model, {"seconds": round(seconds, 1), "steps": args.max_steps, "losses": losses}


def predict(model: Path, gold: list[dict]) -> tuple[list[dict], float]:
    from trajkit.policy.vlm import load_vlm_sampler
    from trajkit.rollout.grounding import predict_grounding

    t0 = time.perf_counter()
    backend, renderer = load_vlm_sampler(str(model), batch_size=32)
    rows = predict_grounding(backend, renderer, gold, batch_size=32)
    return rows, time.perf_counter() - t0


def vision_spread(model: Path, images: list[str]) -> float:
    """How much a screen's visual tokens differ from each other, relative to their size: the mean
    over screens of the per-dimension std across tokens divided by the mean token norm. Near 0, the
    tower hands the LM the same vector for every token (after the LM's RMSNorm nothing is left to
    point with)."""
    import torch

    from trajkit.policy.vlm import VisionInputs, load_vlm

    vlm = load_vlm(str(model))
    batch = VisionInputs(vlm.image_processor).batch(images)
    with torch.no_grad():
        out = vlm.model.model.visual(batch["pixel_values"], grid_thw=batch["image_grid_thw"])
    feats = out if torch.is_tensor(out) else out.pooler_output
    feats = feats.reshape(len(images), -1, feats.shape[-1])
    return float(feats.std(1).mean() / feats.norm(dim=-1).mean())


def table(name: str, report: dict) -> list[str]:
    def pct(b: dict) -> str:
        lo, hi = b["ci95"]
        return f"{100 * b['accuracy']:.1f}% ({b['correct']}/{b['total']}) [{100 * lo:.1f}, {100 * hi:.1f}]"

    lines = [f"| {name}: overall | {pct(report)} |"]
    for task, bucket in sorted(report["by_element_type"].items()):
        lines.append(f"| {name}: {task} | {pct(bucket)} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    work = args.work or Path(tempfile.mkdtemp(prefix="trajkit-grounding-"))
    work.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.timezone.utc)
    try:
        train_path, t_train = play(tasks, "train", args.train_seeds, 0, work / "train.jsonl")
        test_path, t_test = play(tasks, "test", 0, args.test_seeds, work / "test.jsonl")
        train_gold, test_gold = read_trajectory_gold(train_path), read_trajectory_gold(test_path)
        print(
            f"oracle: {len(train_gold)} train / {len(test_gold)} held-out click steps ({t_train + t_test:.0f} s)"
        )

        from trajkit.data.io import load_trajectories
        from trajkit.policy.vlm import make_tiny_vlm

        texts = [t.text for traj in load_trajectories(str(train_path)) for t in traj.turns]
        run = (
            f"{args.size}-{args.max_steps}-lr{args.lr:g}-wd{args.weight_decay:g}-seed{args.seed}"
            f"-freeze{args.freeze_vision}{'-merger' if args.freeze_merger else ''}"
        )
        shutil.rmtree(work / f"stage1-{run}", ignore_errors=True)  # a fresh run, never a resumed one
        model_dir = make_tiny_vlm(
            work / f"tiny-vlm-{args.size}-seed{args.seed}", texts, size=args.size, seed=args.seed
        )
        model, train_info = stage1(model_dir, train_path, work / f"stage1-{run}", args)
        print(f"stage 1: {args.max_steps} steps in {train_info['seconds']:.0f} s")

        shots = sorted({row["img_filename"] for row in test_gold})[:16]
        spread = {"untrained": vision_spread(model_dir, shots), "stage1": vision_spread(model, shots)}
        print(
            f"vision spread (token std / norm): untrained {spread['untrained']:.4f}, stage 1 {spread['stage1']:.4f}"
        )
        test_rows, t_pred = predict(model, test_gold)
        fit_gold = train_gold[: len(test_gold)]
        fit_rows, _ = predict(model, fit_gold)
        reports = {
            "stage1_heldout": evaluate_grounding(test_rows, test_gold).to_dict(),
            "prior_heldout": evaluate_grounding(
                prior_predictions(train_gold, test_gold), test_gold
            ).to_dict(),
            "stage1_train_fit": evaluate_grounding(fit_rows, fit_gold).to_dict(),
        }
        (work / f"heldout-{run}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test_rows))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)

    held = reports["stage1_heldout"]
    result = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}",
        "command": "benchmarks/gui_grounding.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "tasks": tasks,
        "train_steps": len(train_gold),
        "heldout_steps": len(test_gold),
        "stage1": train_info,
        "predict_seconds": round(t_pred, 1),
        "vision_spread": spread,
        "oracle_seconds": round(t_train + t_test, 1),
        "target": TARGET,
        "met": held["accuracy"] >= TARGET and train_info["seconds"] <= 15 * 60,
        "reports": reports,
    }
    out = args.out or ROOT / "benchmarks" / "results" / f"gui-grounding-{started:%Y-%m-%d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    md = [
        f"# Stage-1 grounding on MiniWoB++ ({result['date']})",
        "",
        f"`{result['command']}` on {result['machine']}.",
        f"{len(train_gold)} train click steps, {len(test_gold)} held-out; stage 1 "
        f"{args.max_steps} steps, batch {args.batch_size}, lr {args.lr}: {train_info['seconds']:.0f} s.",
        f"Target: >= {100 * TARGET:.0f}% held-out within 15 min of training: {'met' if result['met'] else 'not met'}.",
        "",
        "| what | clicks inside the target box, 95% CI |",
        "| --- | --- |",
        *table("stage 1, held-out", held),
        *table("prior (task's mean target centre), held-out", reports["prior_heldout"]),
        f"| stage 1 on its own train steps (fit) | {100 * reports['stage1_train_fit']['accuracy']:.1f}% |",
        "",
        f"Vision spread (std of a screen's visual tokens / their norm): untrained {spread['untrained']:.4f}, "
        f"after stage 1 {spread['stage1']:.4f}.",
    ]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
