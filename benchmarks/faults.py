"""Kill a tiny `trajkit run` at random moments of every stage and check that it resumes exactly.

    .venv/bin/python benchmarks/faults.py [--kills 20] [--seed 0] [--recipe harness|smoke]
    .venv/bin/python benchmarks/faults.py --env-faults [--rate 0.1]

Kills: the recipe runs once uninterrupted (the reference), then `--kills` times with `kill -9` of
its whole process group at a random moment of one stage (stages taken in turn: expert, model,
SFT, eval, explore, RFT, pairs, DPO, report; the moment drawn within the stage's span in the
reference), each followed by the same command run to the end. A trial counts as identical when
the final `metrics.json` and every sampled token id (all `rollouts.jsonl` files) equal the
reference's. Each finished run folder is also searched for half-written artifacts: JSON that does
not parse, a JSONL file with a torn line, a `.partial` folder, a temporary file.

Env faults (`--env-faults`): the same recipe with every rollout env in a worker process and
`env.faults` injecting crashes, hangs, exceptions, garbage observations and slow resets on a
`--rate` fraction of env calls; the run must end, and every rollout stage must account for each
of its episodes (finished, failed with an env error, retried).

Prints one line per trial and a summary; `--json FILE` writes everything.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

COMMON = """\
seed: 0
rounds: 1
rft: true
env: {{name: household, kwargs: {{n_train: 6, n_test: 4, layout: compact, instruction: brief, expert_phrasing: plain}}{env_extra}}}
model: {{tiny_size: xs}}
pairs: {{strategy: trajectory, extra_turns: 2}}
rft_sft: {{max_steps: 3, batch_size: 1, save_steps: 1, logging_steps: 1}}
"""
# harness: SFT learns its one expert task well enough that sampled exploration succeeds on some
# samples and fails on others, so RFT trains and DPO has pairs: every stage does real work.
RECIPES = {
    "harness": COMMON
    + """\
expert: {{limit: 1}}
sft: {{max_steps: 120, batch_size: 1, learning_rate: 0.01, warmup: 0, save_steps: 20, logging_steps: 20}}
explore: {{limit: 1, n_samples: 4, batch_size: 4, max_new_tokens: 64, max_steps: 8, temperature: 0.5}}
dpo: {{max_steps: 4, batch_size: 2, learning_rate: 0.001, save_steps: 1, logging_steps: 1}}
eval: {{splits: [test_seen], limit: 2, batch_size: 2, max_new_tokens: 48, max_steps: 6}}
""",
    # smoke (CI): every stage runs, for seconds each (RFT finds no success and is skipped).
    "smoke": COMMON
    + """\
expert: {{limit: 2}}
sft: {{max_steps: 2, batch_size: 2, learning_rate: 0.003, save_steps: 1, logging_steps: 1}}
explore: {{limit: 2, batch_size: 2, max_new_tokens: 8, max_steps: 2, temperature: 1.0}}
dpo: {{max_steps: 2, batch_size: 2, learning_rate: 0.001, save_steps: 1, logging_steps: 1}}
eval: {{splits: [test_seen], limit: 1, batch_size: 1, max_new_tokens: 8, max_steps: 2}}
""",
}
PHASES = ("expert", "model", "sft", "eval", "explore", "rft", "pairs", "dpo", "report")
FAULT_KINDS = ["crash", "hang", "exception", "garbage", "slow_reset"]
# More episodes than the kill recipe: every train task explored twice, more test tasks.
MORE_EPISODES = (
    "expert.limit=6",
    "explore.limit=6",
    "explore.n_samples=2",
    "explore.batch_size=4",
    "eval.limit=4",
)
# What a failed attempt's error says -> the fault behind it.
CAUSES = (("process died", "crash"), ("timed out", "hang"), ("InjectedFault", "exception"))


def write_recipe(folder: Path, name: str = "harness", env_extra: str = "") -> Path:
    path = folder / f"recipe-{name}.yaml"
    path.write_text(f"run_dir: {folder / 'runs' / name}\n" + RECIPES[name].format(env_extra=env_extra))
    return path


def trajkit_command(recipe: Path, run_dir: Path, sets: tuple[str, ...] = ()) -> list[str]:
    extra = [arg for item in sets for arg in ("--set", item)]
    return [
        sys.executable,
        "-m",
        "trajkit",
        "run",
        "--config",
        str(recipe),
        "--out",
        str(run_dir),
        "-q",
        *extra,
    ]


def phase_of(stage: str) -> str:
    """expert, model, sft, eval, explore, rft, pairs, dpo for a stage folder name."""
    if "eval" in stage:
        return "eval"
    return stage.split("/")[-1]


# --- the reference run and its timeline -------------------------------------------------------------
def stage_folders(run_dir: Path) -> dict[str, str]:
    """Stage name -> "partial" or "done" for what the run folder holds now (read while the run
    writes: folders that vanish mid-walk, as old checkpoints do, are skipped)."""
    out: dict[str, str] = {}
    for folder, dirs, files in os.walk(run_dir):
        rel = os.path.relpath(folder, run_dir)
        if "DONE" in files:
            out[rel] = "done"
        for name in dirs:
            if name.endswith(".partial"):
                out.setdefault(os.path.normpath(os.path.join(rel, name[: -len(".partial")])), "partial")
        inside = ("checkpoints", "pairs_dataset") + (("model",) if rel != "." else ())
        dirs[:] = [d for d in dirs if d not in inside]  # a stage's own files hold no stages
    return out


def start(command: list[str], log: Path) -> subprocess.Popen:
    with log.open("ab") as fh:  # its own process group: a kill takes its workers along
        return subprocess.Popen(
            command, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT
        )


def run_reference(recipe: Path, run_dir: Path, log: Path) -> dict[str, Any]:
    """Run uninterrupted; returns seconds and each stage's [start, end] seconds from launch."""
    t0 = time.perf_counter()
    proc = start(trajkit_command(recipe, run_dir), log)
    spans: dict[str, list[float]] = {}
    summary_at = None  # the report writes summary.json last
    while proc.poll() is None:
        now = time.perf_counter() - t0
        if summary_at is None and (run_dir / "summary.json").is_file():
            summary_at = now
        if run_dir.is_dir():
            for name, state in stage_folders(run_dir).items():
                span = spans.setdefault(name, [now, now])
                if state == "partial":
                    span[1] = now
        time.sleep(0.02)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"the reference run failed (exit {proc.returncode}); see {log}")
    for name in stage_folders(run_dir):
        spans.setdefault(name, [seconds, seconds])
    last_done = max(end for _, end in spans.values())
    spans["report"] = [last_done, summary_at or seconds]
    return {"seconds": seconds, "spans": spans}


# --- one kill ---------------------------------------------------------------------------------------
def reached(run_dir: Path, stage: str, all_stages: list[str]) -> bool:
    if stage == "report":  # every stage finished: what is left is the report
        return all((run_dir / s / "DONE").is_file() for s in all_stages)
    return (run_dir / f"{stage}.partial").exists() or (run_dir / stage / "DONE").is_file()


def kill_trial(
    recipe: Path, run_dir: Path, ref: dict[str, Any], stage: str, fraction: float, log: Path
) -> dict[str, Any]:
    """Start the run, kill its process group `fraction` into `stage`'s span, run it again to the
    end; returns what happened."""
    begin, end = ref["spans"][stage]
    delay = fraction * max(0.0, end - begin)
    stages = [s for s in ref["spans"] if s != "report"]
    t0 = time.perf_counter()
    proc = start(trajkit_command(recipe, run_dir), log)
    killed_at = None
    while proc.poll() is None:
        if reached(run_dir, stage, stages):
            # The reference span scaled by how fast this run went so far (the machine may be
            # busier or quieter than it was); the kill comes at the latest when the stage is done.
            so_far = time.perf_counter() - t0
            scale = min(5.0, max(0.2, so_far / begin)) if begin > 2 else 1.0
            deadline = time.perf_counter() + delay * scale
            done = run_dir / stage / "DONE"
            while proc.poll() is None and time.perf_counter() < deadline:
                if stage != "report" and done.is_file():
                    break
                time.sleep(0.005)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                killed_at = time.perf_counter() - t0
            break
        time.sleep(0.005)
    proc.wait()
    left = sorted(n for n, state in stage_folders(run_dir).items() if state == "partial") if killed_at else []
    if killed_at is None:
        landed = "not killed"
    elif left:
        landed = ", ".join(sorted({phase_of(n) for n in left}))
    elif all((run_dir / s / "DONE").is_file() for s in stages):
        landed = "report"
    else:
        landed = "between stages"
    resumed = subprocess.run(trajkit_command(recipe, run_dir), capture_output=True, text=True, cwd=ROOT)
    with log.open("a") as fh:
        fh.write(resumed.stdout + resumed.stderr)
    return {
        "stage": stage,
        "fraction": round(fraction, 3),
        "killed_at_s": None if killed_at is None else round(killed_at, 2),
        "partial_at_kill": left,
        "landed_in": landed,
        "resume_exit": resumed.returncode,
        "traceback": "Traceback" in resumed.stderr,
        "seconds": round(time.perf_counter() - t0, 1),
    }


# --- checks -----------------------------------------------------------------------------------------
def sampled_tokens(run_dir: Path) -> dict[str, list]:
    out: dict[str, list] = {}
    for path in sorted(run_dir.rglob("rollouts.jsonl")):
        stage = str(path.parent.relative_to(run_dir))
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            out[f"{stage}:{record['id']}"] = [t.get("token_ids") for t in record["turns"]]
    return out


def half_written(run_dir: Path) -> list[str]:
    """Artifacts a kill could leave torn: unparsable JSON, torn JSONL lines, `.partial` folders,
    temporary files of an interrupted atomic write."""
    problems = []
    for path in sorted(run_dir.rglob("*")):
        rel = str(path.relative_to(run_dir))
        if path.is_dir():
            if path.name.endswith(".partial") or path.name.endswith(".tmp") or path.name.startswith("tmp-"):
                problems.append(f"{rel}: folder left behind")
            continue
        if path.name.endswith(".tmp"):
            problems.append(f"{rel}: temporary file left behind")
        elif path.suffix == ".json" or path.name == "DONE":
            try:
                json.loads(path.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as err:
                problems.append(f"{rel}: JSON does not parse ({err})")
        elif path.suffix == ".jsonl":
            data = path.read_bytes()
            if data and not data.endswith(b"\n"):
                problems.append(f"{rel}: last line torn (no newline)")
                continue
            for n, line in enumerate(data.splitlines(), 1):
                try:
                    json.loads(line)
                except ValueError:
                    problems.append(f"{rel}:{n}: line does not parse")
                    break
    return problems


def compare(ref_dir: Path, run_dir: Path) -> dict[str, Any]:
    def load(path: Path) -> Any:
        return json.loads(path.read_text()) if path.is_file() else None

    metrics = load(run_dir / "metrics.json")
    return {
        "metrics_equal": metrics is not None and metrics == load(ref_dir / "metrics.json"),
        "tokens_equal": sampled_tokens(run_dir) == sampled_tokens(ref_dir),
        "summary_equal": load(run_dir / "summary.json") == load(ref_dir / "summary.json"),
        "half_written": half_written(run_dir),
    }


def plan_kills(ref: dict[str, Any], kills: int, rng: random.Random) -> list[tuple[str, float]]:
    """`kills` (stage, fraction) points, the phases taken in turn, a stage and a moment drawn
    within each."""
    by_phase: dict[str, list[str]] = {}
    for stage in ref["spans"]:
        by_phase.setdefault(phase_of(stage), []).append(stage)
    phases = [p for p in PHASES if p in by_phase]
    return [(rng.choice(by_phase[phases[i % len(phases)]]), rng.random()) for i in range(kills)]


def run_kills(work: Path, recipe_name: str, kills: int, seed: int, say=print) -> dict[str, Any]:
    recipe = write_recipe(work, recipe_name)
    t0 = time.perf_counter()
    ref_dir = work / "reference"
    ref = run_reference(recipe, ref_dir, work / "reference.log")
    say(f"reference: {ref['seconds']:.1f}s, stages: {', '.join(ref['spans'])}")
    reference_problems = half_written(ref_dir)
    trials = []
    for i, (stage, fraction) in enumerate(plan_kills(ref, kills, random.Random(seed))):
        run_dir = work / f"kill-{i:02d}"
        trial = kill_trial(recipe, run_dir, ref, stage, fraction, work / f"kill-{i:02d}.log")
        trial.update(compare(ref_dir, run_dir))
        trial["identical"] = trial["resume_exit"] == 0 and trial["metrics_equal"] and trial["tokens_equal"]
        trials.append(trial)
        when = (
            "ran to the end first"
            if trial["killed_at_s"] is None
            else f"killed at {trial['killed_at_s']}s in {trial['landed_in']}"
        )
        verdict = "identical" if trial["identical"] else "DIFFERENT"
        extra = f"; half-written: {trial['half_written']}" if trial["half_written"] else ""
        say(f"kill {i + 1}/{kills}: {stage} +{fraction:.2f} of its span, {when}; resumed {verdict}{extra}")
    landed: dict[str, int] = {}
    for t in trials:
        landed[t["landed_in"]] = landed.get(t["landed_in"], 0) + 1
    identical = sum(t["identical"] for t in trials)
    killed = sum(t["killed_at_s"] is not None for t in trials)
    clean = sum(not t["half_written"] for t in trials)
    return {
        "recipe": recipe_name,
        "reference_seconds": round(ref["seconds"], 1),
        "reference_half_written": reference_problems,
        "kills": kills,
        "killed": killed,
        "identical": identical,
        "clean": clean,
        "landed_in": landed,
        "seconds": round(time.perf_counter() - t0, 1),
        "trials": trials,
    }


# --- env faults -------------------------------------------------------------------------------------
def run_env_faults(
    work: Path, recipe_name: str, rate: float, seed: int, say=print, sets: tuple[str, ...] = ()
) -> dict[str, Any]:
    extra = (
        f", workers: true, step_timeout: 5, reset_timeout: 30, "
        f"faults: {{rate: {rate}, kinds: [{', '.join(FAULT_KINDS)}], seed: {seed}, slow_s: 1}}"
    )
    recipe = write_recipe(work, recipe_name, env_extra=extra)
    run_dir = work / "env-faults"
    t0 = time.perf_counter()
    command = trajkit_command(recipe, run_dir, (*(MORE_EPISODES if recipe_name == "smoke" else ()), *sets))
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - t0
    stages = {}
    for done in sorted(run_dir.rglob("DONE")):
        summary = json.loads(done.read_text())
        if "episodes" in summary:
            stages[str(done.parent.relative_to(run_dir))] = {
                k: summary.get(k) for k in ("episodes", "finished", "env_errors", "retried")
            }
    causes: dict[str, int] = {}  # each failed attempt, by what the env did
    for path in run_dir.rglob("rollouts.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            meta = json.loads(line)["metadata"]
            for why in (meta.get("retried_after"), meta.get("error")):
                if why:
                    cause = next((c for m, c in CAUSES if m in why), "other")
                    causes[cause] = causes.get(cause, 0) + 1
    totals = {
        k: sum(s[k] or 0 for s in stages.values()) for k in ("episodes", "finished", "env_errors", "retried")
    }
    accounted = all(s["finished"] + s["env_errors"] == s["episodes"] for s in stages.values())
    say(
        f"env faults at rate {rate}: exit {proc.returncode} in {seconds:.0f}s; {totals['episodes']} episodes: "
        f"{totals['finished']} finished, {totals['env_errors']} failed with an env error, "
        f"{totals['retried']} retried; every episode accounted for: {accounted}; "
        f"failed attempts by cause: {json.dumps(causes, sort_keys=True)}"
    )
    return {
        "rate": rate,
        "exit": proc.returncode,
        "traceback": "Traceback" in proc.stderr,
        "seconds": round(seconds, 1),
        "stages": stages,
        "totals": totals,
        "accounted": accounted,
        "failed_attempts_by_cause": causes,
        "stderr_tail": proc.stderr[-2000:] if proc.returncode else "",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="harness")
    parser.add_argument("--env-faults", action="store_true", help="measure env faults instead of kills")
    parser.add_argument("--rate", type=float, default=0.1, help="fraction of env calls that fail")
    parser.add_argument(
        "--work", type=Path, default=None, help="folder to work in (default: a temporary one)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--set", action="append", default=[], help="env faults: a recipe override key=value")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="trajkit-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"working in {work}", flush=True)
    say = lambda line: print(line, flush=True)  # noqa: E731
    if args.env_faults:
        result = run_env_faults(work, args.recipe, args.rate, args.seed, say, tuple(args.set))
        ok = result["exit"] == 0 and result["accounted"]
    else:
        result = run_kills(work, args.recipe, args.kills, args.seed, say)
        say(
            f"{result['identical']}/{result['kills']} kills resumed identically ({result['killed']} killed "
            f"mid-run; where: {json.dumps(result['landed_in'], sort_keys=True)}); "
            f"{result['clean']}/{result['kills']} left nothing half-written; "
            f"{result['seconds'] / 60:.1f} min in all"
        )
        ok = result["identical"] == result["kills"] and result["clean"] == result["kills"]
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
