"""Feed broken inputs to every command that reads a user's file: no traceback, no hang, and every
rejection naming the file, the record and the field.

    .venv/bin/python benchmarks/fuzz_inputs.py [--seed 0] [--sample N] [--jobs 2] [--json OUT]

Valid files of every format (`trajkit`, `eto`, `eto-role`, `aguvis`, `openai`, `llamafactory`,
as `.json` and `.jsonl`) are mutated: truncated, wrong types, wrong roles, invalid UTF-8, a BOM,
NaN / Infinity rewards, nesting 5000 levels deep, a 30 MB line, lone surrogates, empty
conversations, empty files, random bytes; and non-files are given where a file is expected: a
folder, a named pipe, symlinks to /dev/zero and /dev/urandom, an unreadable /proc file, a
symlink loop. Each goes to `data validate`, `data convert`, `data stats`, `render` and `pairs`;
pairs files broken the same ways go to `dpo`; broken recipes (bad YAML, binary YAML, unknown
keys, wrong types, negative numbers, zero batch sizes, unknown env or env setting) go to
`run --config`; unwritable outputs (a device, a folder, a missing or read-only place) go to
`data convert`, `pairs` and `env oracle`.

A case passes when the command ends within its timeout without a Python traceback and, if it
refuses the input, says so in lines of the form `FILE:RECORD:FIELD: message` (recipes: `FILE: key
...`). `--sample N` runs a random N of the cases (the CI smoke test does).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "data" / "valid"
FORMATS = ("trajkit", "eto", "eto-role", "aguvis", "openai", "llamafactory")
LOCATED = re.compile(r"^(?:error: )?(?P<file>[^:]+):(?P<record>-|\d+):(?P<field>[^:\s]+): \S")


@dataclass
class Case:
    name: str
    argv: list[str]
    subject: str  # the path the error must name; "a|b": either
    kind: str = "data"  # data: FILE:RECORD:FIELD lines; recipe: FILE: key ...
    timeout: float = 30.0
    env: dict[str, str] = field(default_factory=dict)
    slow: bool = False  # left out of `--sample` runs (the CI smoke test)


# --- valid seeds ------------------------------------------------------------------------------------
def base_trajectories():
    from trajkit.data.schema import AGENT, OBSERVATION, TASK, Trajectory, Turn

    def traj(i: int, reward: float, actions: list[str]) -> Trajectory:
        turns = [Turn(TASK, "You are in a room. Your task is to: put a mug in the sink."), Turn(AGENT, "OK")]
        turns.append(Turn(TASK, f"Task {i}: put a mug in the sink."))
        for action in actions:
            turns += [
                Turn(AGENT, f"Thought: next.\nAction: {action}"),
                Turn(OBSERVATION, "Observation: done."),
            ]
        turns.append(Turn(AGENT, "Thought: finished.\nAction: look"))
        return Trajectory(
            f"t{i}", turns, task_id=f"task-{i}", env="household", reward=reward, success=reward >= 1
        )

    expert = [traj(i, 1.0, ["go to sink 1", "put mug 1 in sink 1"]) for i in range(3)]
    rollouts = [traj(i, 0.0, ["go to table 1", "look"]) for i in range(3)]
    for t in rollouts:
        t.id = f"r{t.id}"
    return expert, rollouts


def make_seeds(work: Path) -> dict[str, Path]:
    """Valid files: the test fixtures, and the same trajectories in every format as .json and .jsonl."""
    from trajkit.data.io import write_trajectories

    seeds: dict[str, Path] = {}
    folder = work / "seeds"
    shutil.copytree(FIXTURES, folder)
    for path in sorted(folder.iterdir()):
        if path.suffix in (".json", ".jsonl"):
            seeds[f"fixture-{path.name}"] = path
    expert, rollouts = base_trajectories()
    for fmt in FORMATS:
        for suffix in (".json", ".jsonl"):
            path = folder / f"expert-{fmt}{suffix}"
            write_trajectories(expert, path, fmt)
            seeds[path.name] = path
    for name, trajs in (("rollouts.jsonl", rollouts), ("expert.jsonl", expert)):
        seeds[name] = write_trajectories(trajs, folder / name, "trajkit")
    return seeds


# --- mutations --------------------------------------------------------------------------------------
def _records(data: bytes, suffix: str) -> tuple[list[Any], bool]:
    text = data.decode("utf-8-sig")
    if suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()], True
    value = json.loads(text)
    return (value if isinstance(value, list) else [value]), False


def _dump(records: list[Any], lines: bool) -> bytes:
    if lines:
        return "".join(json.dumps(r) + "\n" for r in records).encode()
    return json.dumps(records, indent=1).encode()


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _set(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    value[path[0]] = _set(value[path[0]], path[1:], new)
    return value


def _roles(value: Any) -> list[tuple]:
    return [p for p in _paths(value) if p and p[-1] in ("role", "from")]


def structural(records: list[Any], rng: random.Random, how: str) -> list[Any]:
    records = json.loads(json.dumps(records))
    i = rng.randrange(len(records))
    rec = records[i]
    if how == "wrong_type":
        path = rng.choice([p for p in _paths(rec) if p] or [()])
        records[i] = _set(rec, path, rng.choice([None, 7, -1.5, True, [], {}, [1, 2], "", {"x": 1}]))
    elif how == "wrong_role":
        paths = _roles(rec)
        if paths:
            records[i] = _set(rec, rng.choice(paths), rng.choice(["bot", "", 5, None, "ASSISTANT", "tool2"]))
    elif how == "nan_reward":
        if isinstance(rec, dict):
            rec["reward"] = rng.choice([float("nan"), float("inf"), float("-inf")])
    elif how == "surrogate":
        texts = [p for p in _paths(rec) if p and isinstance(_get(rec, p), str)]
        if texts:
            path = rng.choice(texts)
            records[i] = _set(rec, path, _get(rec, path) + "\udc80")
    elif how == "empty_list":
        lists = [p for p in _paths(rec) if p and isinstance(_get(rec, p), list)]
        if lists:
            records[i] = _set(rec, rng.choice(lists), [])
    elif how == "drop_key":
        keys = [p for p in _paths(rec) if p and isinstance(p[-1], str)]
        if keys:
            path = rng.choice(keys)
            del _get(rec, path[:-1])[path[-1]]
    elif how == "nested_field":
        keys = [p for p in _paths(rec) if p]
        if keys:
            records[i] = _set(rec, rng.choice(keys), _deep(300))
    return records


def _get(value: Any, path: tuple) -> Any:
    for part in path:
        value = value[part]
    return value


def _deep(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


STRUCTURAL = ("wrong_type", "wrong_role", "nan_reward", "surrogate", "empty_list", "drop_key", "nested_field")


def _with_reward(data: bytes, literal: bytes) -> bytes:
    """`data` with its first record's reward (added when it has none) written as `literal`."""
    changed, n = re.subn(rb'"reward":\s*[-0-9.eE]+', b'"reward": ' + literal, data, count=1)
    return changed if n else data.replace(b'{"', b'{"reward": ' + literal + b', "', 1)


def byte_mutations(data: bytes, rng: random.Random) -> dict[str, bytes]:
    cut = rng.randrange(1, max(2, len(data) - 1))
    spot = rng.randrange(len(data))
    return {
        "truncated": data[:cut],
        "invalid_utf8": data[:spot]
        + rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf0\x28\x8c"])
        + data[spot:],
        "bom": b"\xef\xbb\xbf" + data,
        "crlf": data.replace(b"\n", b"\r\n"),
        "nul_bytes": data[:spot] + b"\x00\x00" + data[spot:],
        "random_bytes": bytes(rng.getrandbits(8) for _ in range(rng.choice([1, 100, 5000]))),
        "empty": b"",
        "whitespace": b"  \n\n\t\n",
        "deep_nesting": b"[" * 5000 + b"]" * 5000,
        "deep_object": b'{"a":' * 5000 + b"1" + b"}" * 5000,
        "nan_literal": _with_reward(data, b"NaN"),
        "infinity_literal": _with_reward(data, b"-Infinity"),
        "huge_number": _with_reward(data, b"1e999"),
        "top_scalar": rng.choice([b"42", b'"text"', b"null", b"true"]),
        "huge_line": b'{"id": "x", "turns": [{"role": "agent", "text": "' + b"a" * 30_000_000 + b'"}]}\n',
    }


def special_paths(work: Path) -> dict[str, Path]:
    """Things that are not regular files, given where a file is expected."""
    folder = work / "special"
    folder.mkdir()
    out = {}
    (folder / "folder.jsonl").mkdir()
    out["folder"] = folder / "folder.jsonl"
    empty_dir = folder / "empty-folder"
    empty_dir.mkdir()
    out["empty_folder"] = empty_dir
    os.mkfifo(folder / "pipe.jsonl")
    out["named_pipe"] = folder / "pipe.jsonl"
    for name, target in (("zero", "/dev/zero"), ("urandom", "/dev/urandom"), ("null", "/dev/null")):
        link = folder / f"{name}.jsonl"
        link.symlink_to(target)
        out[f"symlink_dev_{name}"] = link
    out["unreadable"] = Path("/proc/self/mem")  # a regular file whose read fails (root reads any chmod 000)
    (folder / "loop-a.jsonl").symlink_to(folder / "loop-b.jsonl")
    (folder / "loop-b.jsonl").symlink_to(folder / "loop-a.jsonl")
    out["symlink_loop"] = folder / "loop-a.jsonl"
    (folder / "dangling.jsonl").symlink_to(folder / "nowhere.jsonl")
    out["dangling_symlink"] = folder / "dangling.jsonl"
    out["missing"] = folder / "missing.jsonl"
    return out


# --- cases ------------------------------------------------------------------------------------------
def trajkit(*args: str) -> list[str]:
    return [sys.executable, "-m", "trajkit", *args]


def data_cases(work: Path, seeds: dict[str, Path], rng: random.Random) -> list[Case]:
    bad = work / "bad"
    bad.mkdir()
    inputs: dict[str, Path] = {}
    for seed_name, seed in seeds.items():
        if not seed_name.startswith(("expert-", "fixture-")):
            continue
        data = seed.read_bytes()
        for how, mutated in byte_mutations(data, rng).items():
            if how == "huge_line" and seed_name != "expert-trajkit.jsonl":
                continue  # one 30 MB file is enough
            path = bad / f"{seed.stem}.{how}{seed.suffix}"
            path.write_bytes(mutated)
            inputs[path.name] = path
        try:
            records, lines = _records(data, seed.suffix)
        except ValueError:
            continue
        for how in STRUCTURAL:
            path = bad / f"{seed.stem}.{how}{seed.suffix}"
            path.write_bytes(_dump(structural(records, rng, how), lines))
            inputs[path.name] = path
    for how, path in special_paths(work).items():
        inputs[how] = path
    expert_ok, rollouts_ok = seeds["expert.jsonl"], seeds["rollouts.jsonl"]
    out_dir = work / "out"
    out_dir.mkdir()
    cases: list[Case] = []
    for n, (name, path) in enumerate(sorted(inputs.items())):
        p = str(path)
        slow = "huge_line" in name  # 30 MB: tokenizing it alone takes a minute
        to = rng.choice(FORMATS)
        target = str(out_dir / f"convert-{n}.jsonl")
        cases += [
            Case(f"validate {name}", trajkit("data", "validate", p), p, slow=slow),
            Case(f"convert {name}", trajkit("data", "convert", p, target, "--to", to), p, slow=slow),
            Case(f"stats {name}", trajkit("data", "stats", p, "--json"), p, slow=slow),
        ]
        if n % 3 == 0:  # render trains a tokenizer per call: a third of the inputs
            render = trajkit("render", p, "--template", "tiny", "--limit", "2")
            cases.append(Case(f"render {name}", render, p, timeout=240 if slow else 60, slow=slow))
        side = ("--expert", p, "--rollouts", str(rollouts_ok))
        if n % 2 == 0:
            side = ("--expert", str(expert_ok), "--rollouts", p)
        pairs_out = str(out_dir / f"pairs-{n}.jsonl")
        cases.append(Case(f"pairs {name}", trajkit("pairs", *side, "--out", pairs_out), p, slow=slow))
    # a size limit: a valid file over it is refused by name
    big = seeds["expert-trajkit.jsonl"]
    cases.append(
        Case(
            "validate over the size limit",
            trajkit("data", "validate", str(big)),
            str(big),
            env={"TRAJKIT_MAX_INPUT_BYTES": "100"},
        )
    )
    return cases


def dpo_cases(work: Path, seeds: dict[str, Path], rng: random.Random) -> list[Case]:
    from trajkit.data.io import load_trajectories
    from trajkit.pairs import build_pairs

    folder = work / "dpo"
    folder.mkdir()
    expert = load_trajectories(str(seeds["expert.jsonl"]))
    rollouts = load_trajectories(str(seeds["rollouts.jsonl"]))
    pairs = build_pairs(rollouts, expert, "trajectory", 2).pairs
    good = folder / "pairs.jsonl"
    good.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    model = folder / "not-a-model"
    model.mkdir()
    files: dict[str, Path] = {"missing": folder / "missing.jsonl"}
    data = good.read_bytes()
    for how, mutated in byte_mutations(data, rng).items():
        if how != "huge_line":
            files[how] = folder / f"pairs.{how}.jsonl"
            files[how].write_bytes(mutated)
    for how in ("wrong_type", "wrong_role", "surrogate", "empty_list", "drop_key", "nested_field"):
        for k in range(2):
            path = folder / f"pairs.{how}.{k}.jsonl"
            path.write_bytes(_dump(structural(pairs, rng, how), True))
            files[f"{how}.{k}"] = path
    for how, path in special_paths(folder).items():
        files[f"special-{how}"] = path
    files["valid-but-no-model"] = good
    out = folder / "out"
    return [
        Case(
            f"dpo {how}",
            trajkit("dpo", "--model", str(model), "--pairs", str(path), "--out", str(out)),
            f"{path}|{model}",  # a pairs file the checks pass leaves the model to refuse
        )
        for how, path in sorted(files.items())
    ]


RECIPE_EDITS: list[tuple[str, str]] = [
    ("rounds", "-1"),
    ("seed", "-5"),
    ("seed", "'zero'"),
    ("rounds", "1.5"),
    ("env.name", "nosuchworld"),
    ("env.kwargs", "{no_such_setting: 1}"),
    ("env.kwargs", "{layout: nosuchlayout}"),
    ("env.kwargs", "{n_train: -3}"),
    ("env.kwargs", "[1, 2]"),
    ("env.step_timeout", "-1"),
    ("env.reset_timeout", "0"),
    ("env.workers", "'yes please'"),
    ("env.faults", "{rate: 2}"),
    ("env.faults", "{kinds: [meteor]}"),
    ("env.faults", "{kinds: [crash]}"),
    ("model.tiny_size", "xxl"),
    ("model.lora", "{r: -4}"),
    ("expert.limit", "-10"),
    ("expert.source", "files"),
    ("expert.format", "csv"),
    ("sft.batch_size", "0"),
    ("sft.learning_rate", "-0.1"),
    ("sft.learning_rate", ".nan"),
    ("sft.epochs", "-2"),
    ("sft.max_length", "0"),
    ("sft.warmup", "-5"),
    ("sft.no_such_key", "1"),
    ("sft.lr_scheduler", "bogus"),
    ("explore.n_samples", "-1"),
    ("explore.temperature", "-0.5"),
    ("explore.top_p", "0"),
    ("explore.max_new_tokens", "-96"),
    ("explore.batch_size", "0"),
    ("explore.limit", "-64"),
    ("explore.max_steps", "0"),
    ("explore.max_context", "-1"),
    ("explore.context_overflow", "explode"),
    ("pairs.strategy", "bogus"),
    ("pairs.extra_turns", "-5"),
    ("dpo.beta", "-0.1"),
    ("dpo.beta", ".inf"),
    ("dpo.batch_size", "0"),
    ("dpo.bogus_key", "3"),
    ("dpo.loss_type", "magic"),
    ("dpo_later_rounds", "{beta: -1}"),
    ("dpo_later_rounds", "{nope: 1}"),
    ("dpo_reference", "parent"),
    ("rft_sft", "{epochs: -1}"),
    ("eval.splits", "[]"),
    ("eval.splits", "[no_such_split]"),
    ("eval.limit", "-1"),
    ("eval.batch_size", "0"),
    ("eval.max_new_tokens", "0"),
    ("gui", "{envs: 0}"),
    ("unknown_top_key", "1"),
    ("explore", "[1, 2, 3]"),
    ("sft", "'a string'"),
]


def recipe_cases(work: Path) -> list[Case]:
    import yaml

    folder = work / "recipes"
    folder.mkdir()
    base = yaml.safe_load((ROOT / "configs" / "household_eto_tiny.yaml").read_text())
    cases: list[Case] = []

    def add(name: str, text: bytes) -> None:
        path = folder / f"recipe-{len(cases):03d}.yaml"
        path.write_bytes(text)
        cases.append(
            Case(
                f"run {name}",
                trajkit("run", "--config", str(path), "--out", str(folder / f"run-{len(cases)}")),
                str(path),
                "recipe",
                60,
            )
        )

    for key, raw in RECIPE_EDITS:
        data = json.loads(json.dumps(base))
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
        add(f"{key}={raw}", yaml.safe_dump(data).encode())
    good = (ROOT / "configs" / "household_eto_tiny.yaml").read_bytes()
    rng = random.Random(7)
    add("bad YAML: unclosed bracket", b"run_dir: x\nenv: {name: household\n")
    add("bad YAML: tab indentation", b"env:\n\tname: household\n")
    add("bad YAML: duplicate anchors", b"a: &x 1\nb: *y\n")
    add("binary YAML", bytes(rng.getrandbits(8) for _ in range(2000)))
    add("binary YAML with NUL", b"\x00\x01\x02run_dir: x\n")
    add("invalid UTF-8 YAML", good.replace(b"household", b"house\xffhold", 1))
    add("empty YAML", b"")
    add("YAML list at top", b"- 1\n- 2\n")
    add("YAML scalar at top", b"42\n")
    add("deep YAML", b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n")
    add("truncated YAML", good[: len(good) // 2])
    add(
        "YAML alias bomb",
        b"a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        b"c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
        b"env: {name: household, kwargs: {bomb: [*d, *d, *d, *d, *d, *d, *d, *d, *d]}}\n",
    )
    for how, path in special_paths(folder).items():
        if how != "missing":
            cases.append(
                Case(
                    f"run --config {how}",
                    trajkit("run", "--config", str(path), "--out", str(folder / f"run-{how}")),
                    str(path),
                    "recipe",
                )
            )
    cases.append(
        Case(
            "run --config missing",
            trajkit("run", "--config", str(folder / "nope.yaml")),
            str(folder / "nope.yaml"),
            "recipe",
        )
    )
    return cases


def output_cases(work: Path, seeds: dict[str, Path]) -> list[Case]:
    """Outputs that cannot be written: a device, a folder, a missing parent that is a file, /proc."""
    good, rollouts = str(seeds["expert.jsonl"]), str(seeds["rollouts.jsonl"])
    readonly = "/proc/trajkit-out.jsonl"  # not creatable, even as root
    cases = []
    for target in ("/dev/full", "/dev/null", str(work), f"{good}/x.jsonl", readonly):
        cases.append(
            Case(
                f"convert --force to {target}",
                trajkit("data", "convert", good, target, "--to", "eto", "--force"),
                target,
            )
        )
        cases.append(
            Case(
                f"pairs --out {target}",
                trajkit("pairs", "--expert", good, "--rollouts", rollouts, "--out", target),
                target,
            )
        )
        cases.append(
            Case(
                f"oracle --out {target}",
                trajkit("env", "oracle", "household", "--limit", "1", "--out", target),
                target,
            )
        )
    return cases


# --- running ----------------------------------------------------------------------------------------
def judge(case: Case, returncode: int | None, stdout: str, stderr: str) -> str:
    """ok, rejected (a clean refusal), traceback, hang, or unlocated (a refusal not naming where)."""
    if returncode is None:
        return "hang"
    if "Traceback (most recent call last)" in stderr or returncode not in (0, 1, 2):
        return "traceback"
    if returncode == 0:
        return "ok"
    if "validate" in case.argv and returncode == 1:  # problems on stdout, a count on stderr
        lines = [line for line in stdout.splitlines() if line.strip()]
    else:
        lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    if not lines:
        return "unlocated"
    if case.kind == "recipe":
        located = all(any(s in line for s in case.subject.split("|")) for line in lines)
    else:
        located = all(
            LOCATED.match(line) and any(s in line for s in case.subject.split("|")) for line in lines
        )
    return "rejected" if located else "unlocated"


def run_case(case: Case) -> dict[str, Any]:
    t0 = time.perf_counter()
    env = {**os.environ, **case.env}
    try:
        proc = subprocess.run(
            case.argv,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=case.timeout,
            cwd=ROOT,
            env=env,
        )
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired:
        code, out, err = None, "", ""
    verdict = judge(case, code, out, err)
    shown = verdict in ("traceback", "hang", "unlocated")
    return {
        "case": case.name,
        "verdict": verdict,
        "exit": code,
        "seconds": round(time.perf_counter() - t0, 2),
        "stderr": err[-600:] if shown else err[-200:],
        "stdout": out[-300:] if shown else "",
    }


def build_cases(work: Path, seed: int) -> list[Case]:
    rng = random.Random(seed)
    seeds = make_seeds(work)
    return (
        data_cases(work, seeds, rng)
        + dpo_cases(work, seeds, rng)
        + recipe_cases(work)
        + output_cases(work, seeds)
    )


def fuzz(work: Path, seed: int = 0, sample: int | None = None, jobs: int = 2, say=print) -> dict[str, Any]:
    cases = build_cases(work, seed)
    if sample is not None:
        quick = [c for c in cases if not c.slow]
        cases = random.Random(seed).sample(quick, min(sample, len(quick)))
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(run_case, cases))
    counts: dict[str, int] = {}
    by_command: dict[str, dict[str, int]] = {}
    for r in results:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
        command = r["case"].split(" ")[0]
        by_command.setdefault(command, {}).setdefault(r["verdict"], 0)
        by_command[command][r["verdict"]] += 1
    failures = [r for r in results if r["verdict"] in ("traceback", "hang", "unlocated")]
    for r in failures:
        say(
            f"{r['verdict'].upper()}: {r['case']} (exit {r['exit']}): {r['stderr'].strip().splitlines()[-1:] or r['stdout'][-200:]}"
        )
    say(f"{len(results)} cases in {time.perf_counter() - t0:.0f}s: {json.dumps(counts)}")
    say(f"by command: {json.dumps(by_command)}")
    return {
        "cases": len(results),
        "counts": counts,
        "by_command": by_command,
        "failures": failures,
        "results": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample", type=int, default=None, help="run a random N of the cases")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="trajkit-fuzz-"))
    work.mkdir(parents=True, exist_ok=True)
    result = fuzz(work, args.seed, args.sample, args.jobs)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
