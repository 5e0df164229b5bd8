"""Experiment tracking and readable progress: a tiny run with `report_to: tensorboard` writes event
files that read back with the loop's and the trainers' tags; its stderr and log.txt are lines."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from trajkit.pipeline.progress import Console

RECIPE = """\
run_dir: {run_dir}
report_to: tensorboard
seed: 0
rounds: 1
rft: false
env: {{name: household, kwargs: {{n_train: 40, n_test: 10, layout: compact}}}}
model: {{tiny_size: xs}}
expert: {{limit: 8}}
sft: {{max_steps: 2, batch_size: 4, learning_rate: 0.003, save_steps: 1000, logging_steps: 1}}
explore: {{limit: 3, batch_size: 3, max_new_tokens: 8, max_steps: 2, temperature: 1.0}}
pairs: {{strategy: trajectory, extra_turns: 1}}
dpo: {{max_steps: 2, batch_size: 2, learning_rate: 0.001, save_steps: 1000, logging_steps: 1}}
eval: {{limit: 2, batch_size: 2, max_new_tokens: 8, max_steps: 2}}
"""


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tracked")
    (folder / "recipe.yaml").write_text(RECIPE.format(run_dir=folder / "run"))
    cmd = [sys.executable, "-m", "trajkit", "run", "--config", str(folder / "recipe.yaml")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder / "run", proc, cmd


@pytest.mark.slow
def test_tensorboard_events_read_back_with_the_expected_tags(tracked_run):
    run_dir, _, _ = tracked_run
    loop = _scalars(run_dir / "tracking/tensorboard/run")
    summary = json.loads((run_dir / "summary.json").read_text())
    for split in ("test_seen", "test_unseen"):
        assert loop[f"eval/{split}/success_rate"] == [
            (0, pytest.approx(summary["sft"][split]["success_rate"])),
            (1, pytest.approx(summary["round-1"][split]["success_rate"])),
        ]
    assert loop["pairs/pairs"] == [(1, float(summary["round-1"]["pairs"]["pairs"]))]
    for tag in (
        "explore/episodes_per_s",
        "explore/tokens_per_s",
        "eval/tokens_per_s",
        "explore/success_rate",
    ):
        assert tag in loop and loop[tag][-1][1] >= 0, tag
    assert loop["explore/tokens_per_s"][0][1] > 0, "exploration sampled tokens"
    # The trainers' own TensorBoard callbacks, one folder per stage.
    sft = _scalars(run_dir / "tracking/tensorboard/sft")
    dpo = _scalars(run_dir / "tracking/tensorboard/round-1/dpo")
    assert [s for s, _ in sft["train/loss"]] == [1, 2]
    assert "train/rewards/margins" in dpo and "train/logps/rejected" in dpo


@pytest.mark.slow
def test_progress_is_lines_and_the_log_keeps_them(tracked_run):
    run_dir, proc, _ = tracked_run
    assert "\r" not in proc.stderr, "no carriage-return bars when stderr is not a terminal"
    assert "{'loss'" not in proc.stdout, "the trainer's log dicts are folded into the progress line"
    assert "[sft] 2/2 steps (100%)" in proc.stderr and "[round-1/explore] 3/3 episodes (100%)" in proc.stderr
    log = (run_dir / "log.txt").read_text().splitlines()
    assert any("[round-1/pairs]" in line for line in log) and any(
        "[round-1/dpo] done" in line for line in log
    )
    assert all(line[:4].isdigit() and line[4] == "-" for line in log), "each log line starts with its time"


@pytest.mark.slow
def test_rerun_logs_nothing_twice_and_quiet_is_quiet(tracked_run):
    run_dir, _, cmd = tracked_run
    events = sorted(p.name for p in (run_dir / "tracking").rglob("events.out.tfevents.*"))
    proc = subprocess.run([*cmd, "--quiet"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.strip() == "" and "| round-1 |" in proc.stdout
    assert sorted(p.name for p in (run_dir / "tracking").rglob("events.out.tfevents.*")) == events


def test_console_draws_one_line_in_place_on_a_terminal_and_lines_elsewhere(tmp_path):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    pipe, tty = io.StringIO(), Tty()
    for stream in (pipe, tty):
        console = Console(tmp_path / f"{id(stream)}.txt", stream=stream, interval=0)
        bar = console.progress("round-1/explore", "episodes")
        for k in range(1, 4):
            bar.update(k, 3, steps=2 * k, tokens=10 * k, seconds=float(k))
        bar.update(3, 3)  # after the closing line: nothing more
        console.log("[round-1/pairs] done")
    lines = pipe.getvalue().splitlines()
    assert len(lines) == 4 and lines[-1] == "[round-1/pairs] done"
    assert lines[2].startswith(
        "[round-1/explore] 3/3 episodes (100%) · 1.00 episodes/s · 6 env steps · 10 tokens/s"
    )
    assert "ETA 0:02" in lines[0]
    assert tty.getvalue().count("\r") == 3 and tty.getvalue().endswith("[round-1/pairs] done\n")
    quiet = io.StringIO()
    console = Console(tmp_path / "quiet.txt", quiet=True, stream=quiet, interval=0)
    console.progress("sft", "steps").update(1, 1, loss=0.5)
    console.log("hidden")
    console.__exit__(None, None, None)
    assert quiet.getvalue() == "" and "loss 0.5" in (tmp_path / "quiet.txt").read_text()


def _fake(name: str, calls: list) -> types.ModuleType:
    mod = types.ModuleType(name)

    class Run:
        def define_metric(self, *a, **k):
            calls.append(("define_metric", a, k))

        def log(self, metrics):
            calls.append(("log", metrics))

        def finish(self):
            calls.append(("finish",))

    def init(**kwargs):
        calls.append(("init", kwargs))
        return Run()

    mod.init = init
    mod.log = lambda metrics, **k: calls.append(("log", metrics))
    mod.finish = lambda: calls.append(("finish",))
    return mod


@pytest.mark.parametrize("name", ["wandb", "trackio"])
def test_wandb_and_trackio_stay_on_this_machine_unless_told(tmp_path, monkeypatch, name):
    from trajkit.pipeline.config import RunConfig
    from trajkit.pipeline.tracking import run_scope
    from trajkit.train.hooks import tracking_args

    calls: list = []
    monkeypatch.setitem(sys.modules, name, _fake(name, calls))
    monkeypatch.setattr("importlib.util.find_spec", lambda n, *a: object())
    for var in ("WANDB_MODE", "TRACKIO_SPACE_ID"):
        monkeypatch.delenv(var, raising=False)
    cfg = RunConfig(run_dir=str(tmp_path / "run"), report_to=name)
    with run_scope(cfg, Console(stream=io.StringIO())) as tracker:
        tracker.log({"eval/test_seen/success_rate": 0.5}, step=0)
        tracker.log({"eval/test_seen/success_rate": 0.5}, step=0)  # already logged: dropped
        trainer = tracking_args()
    init = calls[0][1]
    logs = [c[1] for c in calls if c[0] == "log"]
    assert logs == [{"eval/test_seen/success_rate": 0.5, "round": 0}] and calls[-1] == ("finish",)
    assert trainer["report_to"] == name and trainer["run_name"] == "run"
    if name == "wandb":
        assert init["mode"] == "offline" and init["dir"] == str(tmp_path / "run" / "tracking")
        monkeypatch.setenv("WANDB_MODE", "online")
        with run_scope(cfg, Console(stream=io.StringIO())):
            pass
        assert [c for c in calls if c[0] == "init"][-1][1]["mode"] == "online"
    else:
        assert "space_id" not in init and trainer["trackio_static_space_id"] is False
    assert tracking_args() == {"report_to": "none"}, "outside the run the trainers report nowhere"
