"""Reliability under faults: kills at a few points (benchmarks/faults.py at smoke size), a disk
that fills mid-stage, two runs on one folder, injected env faults, output targets that are not
regular files, inputs that are not regular files."""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trajkit.config import ConfigError
from trajkit.data.files import DataError, read_text, write_text_atomic

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def faults():
    spec = importlib.util.spec_from_file_location("faults_bench", ROOT / "benchmarks" / "faults.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reference(faults, tmp_path_factory):
    """The smoke recipe run once, uninterrupted, with each stage's span."""
    work = tmp_path_factory.mktemp("faults")
    recipe = faults.write_recipe(work, "smoke")
    ref = faults.run_reference(recipe, work / "reference", work / "reference.log")
    return work, recipe, ref


def trajkit_run(recipe: Path, run_dir: Path, **kw) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "trajkit", "run", "--config", str(recipe), "--out", str(run_dir), "-q"]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, **kw)


@pytest.mark.parametrize("stage", ["sft", "report"])
def test_kill_point_resumes_identically(faults, reference, stage):
    work, recipe, ref = reference
    # The report stage lasts tens of milliseconds: on a busy machine the watcher can miss it and
    # the run ends unkilled. Such a trial proves nothing either way, so it is tried afresh.
    for attempt in range(3):
        run_dir = work / f"kill-{stage}-{attempt}"
        trial = faults.kill_trial(recipe, run_dir, ref, stage, 0.2, work / f"kill-{stage}-{attempt}.log")
        if trial["killed_at_s"] is not None:
            break
    assert trial["killed_at_s"] is not None, "the run ended before the kill point, 3 times"
    assert trial["resume_exit"] == 0 and not trial["traceback"]
    result = faults.compare(work / "reference", run_dir)
    assert result["metrics_equal"] and result["tokens_equal"] and result["summary_equal"]
    assert result["half_written"] == []
    assert faults.half_written(work / "reference") == []


def test_half_written_finds_torn_artifacts(faults, tmp_path):
    (tmp_path / "ok.json").write_text("{}")
    (tmp_path / "torn.json").write_text('{"a": ')
    (tmp_path / "lines.jsonl").write_text('{"a": 1}\n{"b"')
    (tmp_path / "stage.partial").mkdir()
    (tmp_path / ".x.json.123.tmp").write_text("")
    found = faults.half_written(tmp_path)
    assert [line.split(":")[0] for line in found] == [
        ".x.json.123.tmp",
        "lines.jsonl",
        "stage.partial",
        "torn.json",
    ]


def test_disk_full_mid_stage_stops_with_one_line_and_resumes(faults, reference):
    """A file-size limit under the optimizer checkpoint's size: SFT fails while saving its first
    checkpoint; the run ends with one line, SFT stays unfinished, and the next run (no limit)
    resumes it and ends as the uninterrupted run did."""
    work, recipe, _ = reference
    run_dir = work / "disk-full"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (800_000, 800_000))

    proc = trajkit_run(recipe, run_dir, preexec_fn=limit)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: run stopped: ") and "resume" in lines[0]
    assert (run_dir / "model" / "DONE").is_file() and (run_dir / "sft.partial").is_dir()
    assert not (run_dir / "sft").exists()
    proc = trajkit_run(recipe, run_dir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = faults.compare(work / "reference", run_dir)
    assert result["metrics_equal"] and result["tokens_equal"] and result["half_written"] == []


def test_second_run_on_a_busy_folder_is_refused_at_once(faults, tmp_path):
    recipe = faults.write_recipe(tmp_path, "smoke")
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "trajkit", "run", "--config", str(recipe), "--out", str(run_dir), "-q"]
    first = subprocess.Popen(command, cwd=ROOT, start_new_session=True, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (run_dir / "config.yaml").is_file():  # written once the lock is held
            assert first.poll() is None and time.time() < deadline
            time.sleep(0.05)
        # The first run keeps writing (temp files renamed into place, .partial folders): judge the second
        # run by what the first had settled before it started.
        config_before = (run_dir / "config.yaml").read_bytes(), (run_dir / "config.yaml").stat().st_mtime_ns
        t0 = time.perf_counter()
        second = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert second.returncode == 2 and time.perf_counter() - t0 < 30
        assert second.stderr == (
            f"error: {run_dir}: another trajkit process (pid {first.pid}) is running in this run folder; "
            "wait for it to end, or give another run_dir\n"
        )
        config_after = (run_dir / "config.yaml").read_bytes(), (run_dir / "config.yaml").stat().st_mtime_ns
        assert config_after == config_before  # it touched nothing it found
        assert (run_dir / ".lock").is_file()
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    from trajkit.pipeline.stage import run_lock

    with run_lock(run_dir):  # kill -9 released it
        pass


# --- injected env faults ----------------------------------------------------------------------------
def test_fault_kinds_that_stop_a_process_need_workers():
    from trajkit.pipeline.config import run_config_from_dict

    base = {"run_dir": "x", "env": {"name": "household", "faults": {"rate": 0.1, "kinds": ["crash"]}}}
    with pytest.raises(ConfigError, match=r"r.yaml: env.faults.kinds crash would stop the run itself"):
        run_config_from_dict(base, "r.yaml")
    base["env"]["workers"] = True
    assert run_config_from_dict(base, "r.yaml").env.faults.kinds == ["crash"]
    for bad, message in (({"rate": 2}, "faults.rate"), ({"kinds": ["meteor"]}, "faults.kinds")):
        with pytest.raises(ConfigError, match=message):
            run_config_from_dict({"run_dir": "x", "env": {"faults": bad}}, "r.yaml")


def test_faulty_env_injects_each_kind():
    from trajkit.envs.faulty import FaultSpec, FaultyEnv, InjectedFault
    from trajkit.envs.household import HouseholdEnv

    def env(kind: str, **kw) -> FaultyEnv:
        return FaultyEnv(HouseholdEnv(n_train=2, n_test=0), FaultSpec(rate=1.0, kinds=[kind], **kw))

    task = env("exception").tasks("train")[0]
    with pytest.raises(InjectedFault):
        env("exception").reset(task)
    slow = env("slow_reset", slow_s=0.3)
    t0 = time.perf_counter()
    assert slow.reset(task).text and time.perf_counter() - t0 >= 0.3
    noisy = env("garbage")
    noisy.reset(task)
    assert noisy.step("look").observation.text.endswith("\udcff")
    assert noisy.injected == {"garbage": 1}


@pytest.fixture(scope="module")
def sampler(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from trajkit.policy.backends import HFBackend
    from trajkit.policy.models import load_tokenizer
    from trajkit.render import Renderer

    tok = load_tokenizer(str(tiny_model_dir))
    renderer = Renderer(tok, "tiny")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    return HFBackend(model, tok, renderer.stop_ids, batch_size=4), renderer


def faulty_rollouts(sampler, out: Path, section, n_tasks: int):
    from trajkit.envs.household import HouseholdEnv
    from trajkit.pipeline.envs import make_rollout_env
    from trajkit.policy.backends import Sampling
    from trajkit.rollout import RolloutConfig, run_rollouts
    from trajkit.rollout.react import ReactAgent

    backend, renderer = sampler
    envs = [make_rollout_env(section, {"n_train": 6, "n_test": 0}) for _ in range(2)]
    tasks = HouseholdEnv(n_train=6, n_test=0).tasks("train")[:n_tasks]
    config = RolloutConfig(sampling=Sampling(temperature=0, max_new_tokens=6), max_steps=3)
    try:
        trajs = run_rollouts(tasks, envs, backend, ReactAgent(renderer), out, config)
    finally:
        for env in envs:
            env.close()
    assert sorted(t.task_id for t in trajs) == sorted(t.id for t in tasks)  # one record per episode
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == n_tasks and all(json.loads(line) for line in lines)
    return trajs


def test_rollouts_survive_env_faults_and_account_for_every_episode(tmp_path, sampler):
    """Exceptions, garbage observations and slow resets on half of the env calls: the rollout
    ends, and each episode is finished or failed with its error, retried ones saying why."""
    from trajkit.envs.faulty import FaultSpec
    from trajkit.pipeline.config import EnvSection
    from trajkit.rollout.engine import accounting

    spec = FaultSpec(rate=0.5, kinds=["exception", "garbage", "slow_reset"], seed=1, slow_s=0.05)
    trajs = faulty_rollouts(sampler, tmp_path / "r.jsonl", EnvSection(faults=spec), 6)
    counts = accounting(trajs)
    assert counts["finished"] + counts["env_errors"] == 6 and counts["retried"] >= max(
        1, counts["env_errors"]
    )
    for traj in trajs:
        if "retried_after" in traj.metadata:
            assert traj.metadata["attempts"] == 2 and "InjectedFault" in traj.metadata["retried_after"]
    texts = [t.text for traj in trajs for t in traj.turns]
    assert any("\ufffd" in text for text in texts), "garbage observations are kept, made valid UTF-8"


def test_a_crashing_env_worker_costs_an_episode_not_the_run(tmp_path, sampler):
    from trajkit.envs.faulty import FaultSpec
    from trajkit.pipeline.config import EnvSection

    spec = FaultSpec(rate=1.0, kinds=["crash"])
    section = EnvSection(workers=True, step_timeout=30, reset_timeout=60, faults=spec)
    (traj,) = faulty_rollouts(sampler, tmp_path / "r.jsonl", section, 1)
    meta = traj.metadata
    assert meta["attempts"] == 2 and traj.success is False
    for why in (meta["retried_after"], meta["error"]):
        assert "the env process died during reset (exit code 70)" in why


def test_pairs_leave_out_episodes_the_env_failed():
    """Found by the env-fault run: an episode whose reset failed has no turns, and pairing it
    with its expert stopped the run ("share no opening turns")."""
    from trajkit.data.schema import AGENT, TASK, Trajectory, Turn
    from trajkit.pairs import build_pairs

    expert = Trajectory("e", [Turn(TASK, "t"), Turn(AGENT, "right")], task_id="x", reward=1.0)
    failed = Trajectory("f", [], task_id="x", reward=0.0, metadata={"error": "reset failed: EnvError"})
    lost = Trajectory("l", [Turn(TASK, "t"), Turn(AGENT, "wrong")], task_id="x", reward=0.0)
    result = build_pairs([failed, lost], [expert], "trajectory", 2)
    assert result.counts() == {"win": 0, "tie": 0, "lose": 1, "pairs": 1, "env_errors": 1}
    assert build_pairs([lost], [expert]).counts() == {"win": 0, "tie": 0, "lose": 1, "pairs": 1}


# --- files that are not regular files ---------------------------------------------------------------
def test_output_targets_that_are_not_regular_files_are_refused(tmp_path):
    for target, kind in (("/dev/full", "a character device"), (str(tmp_path), "a folder")):
        with pytest.raises(DataError, match=f"{target}:-:file: is {kind}, not a regular file"):
            write_text_atomic(target, "x")
    assert Path("/dev/full").is_char_device()
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="is a named pipe"):
        write_text_atomic(fifo, "x")
    # a symlink is written through (the link stays); a missing folder is made
    real = tmp_path / "real.txt"
    real.write_text("old")
    (tmp_path / "link.txt").symlink_to(real)
    write_text_atomic(tmp_path / "link.txt", "new")
    assert (tmp_path / "link.txt").is_symlink() and real.read_text() == "new"
    write_text_atomic(tmp_path / "a" / "b" / "c.txt", "deep")
    assert (tmp_path / "a" / "b" / "c.txt").read_text() == "deep"
    with pytest.raises(DataError, match="cannot write: not a directory"):
        write_text_atomic(real / "x.txt", "x")
    assert real.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == [
        "a", "link.txt", "pipe", "real.txt"
    ]  # fmt: skip


def test_a_write_that_fails_leaves_the_old_file(tmp_path):
    target = tmp_path / "keep.json"
    target.write_text("old")
    code = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000));"
        "from trajkit.data.files import write_text_atomic; write_text_atomic(sys.argv[1], 'x' * 5000)"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True)
    assert proc.returncode == 1 and "cannot write: file too large" in proc.stderr
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["keep.json"]


def test_reads_take_regular_files_only_and_have_a_size_limit(tmp_path, monkeypatch):
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)  # no writer: reading it would block forever
    (tmp_path / "zero.jsonl").symlink_to("/dev/zero")
    cases = [
        (fifo, "is a named pipe, not a regular file"),
        (tmp_path / "zero.jsonl", "is a character device, not a regular file"),
        (tmp_path, "is a folder, not a regular file"),
        (Path("/proc/self/mem"), "cannot read: input/output error"),
        (tmp_path / "missing", "no such file"),
    ]
    for path, message in cases:
        with pytest.raises(DataError) as err:
            read_text(path)
        assert str(err.value) == f"{path}:-:file: {message}"
    big = tmp_path / "big.jsonl"
    big.write_text("x" * 2000)
    monkeypatch.setenv("TRAJKIT_MAX_INPUT_BYTES", "1000")
    with pytest.raises(
        DataError, match=r"larger than the 1000 bytes read limit \(set TRAJKIT_MAX_INPUT_BYTES"
    ):
        read_text(big)
