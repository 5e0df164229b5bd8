"""The round loop end to end on a tiny model: stages, manifest, re-runs, and kill -9 resumes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

RECIPE = """\
run_dir: {run_dir}
seed: 0
rounds: 1
env: {{name: household, kwargs: {{n_train: 40, n_test: 10, layout: compact}}}}
model: {{tiny_size: xs}}
expert: {{limit: 12}}
sft: {{max_steps: 3, batch_size: 4, learning_rate: 0.003, save_steps: 1000, logging_steps: 1}}
explore: {{limit: 4, batch_size: 1, max_new_tokens: 12, max_steps: 4, temperature: 1.0}}
pairs: {{strategy: trajectory, extra_turns: 2}}
dpo: {{max_steps: 4, batch_size: 2, learning_rate: 0.001, save_steps: 1, logging_steps: 1}}
eval: {{limit: 3, batch_size: 3, max_new_tokens: 12, max_steps: 3}}
"""


def write_recipe(folder: Path) -> Path:
    path = folder / "recipe.yaml"
    path.write_text(RECIPE.format(run_dir=folder / "run"))
    return path


def trajkit(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trajkit", *args], capture_output=True, text=True, **kw)


def agent_tokens(run_dir: Path, stage: str) -> dict[str, list]:
    out = {}
    for path in sorted((run_dir / stage).glob("*/rollouts.jsonl")) + sorted(
        (run_dir / stage).glob("rollouts.jsonl")
    ):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            out[rec["id"]] = [t.get("token_ids") for t in rec["turns"]]
    return out


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reference")
    proc = trajkit("run", "--config", str(write_recipe(folder)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder / "run", proc


def test_run_writes_every_stage(reference_run):
    run_dir, proc = reference_run
    for stage in [
        "model",
        "expert",
        "sft",
        "eval-sft/test_seen",
        "eval-sft/test_unseen",
        "round-1/explore",
        "round-1/pairs",
        "round-1/dpo",
        "round-1/eval/test_seen",
        "round-1/eval/test_unseen",
    ]:
        assert (run_dir / stage / "DONE").is_file(), stage
    assert not list(run_dir.rglob("*.partial"))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert {"versions", "git_commit", "seed", "split_hashes"} <= set(manifest)
    assert set(manifest["split_hashes"]) == {"train", "test_seen", "test_unseen"}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert {"sft", "round-1"} <= set(summary)
    assert summary["round-1"]["pairs"]["pairs"] >= 1
    assert "Success rate" in (run_dir / "report.md").read_text()
    assert "| round-1 |" in proc.stdout
    pairs = [json.loads(x) for x in (run_dir / "round-1/pairs/pairs.jsonl").read_text().splitlines()]
    assert all(p["chosen_reward"] > p["rejected_reward"] for p in pairs)


def test_rerunning_a_finished_run_changes_nothing(reference_run, tmp_path):
    run_dir, _ = reference_run
    # log.txt is the one file a re-run adds to: it keeps a line for every invocation.
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file() and p.name != "log.txt"}
    proc = trajkit("run", "--config", str(run_dir.parent / "recipe.yaml"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    after = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file() and p.name != "log.txt"}
    assert after == before
    assert "| round-1 |" in proc.stdout


def test_cli_eval_of_a_run_model_uses_the_world_it_was_trained_in(reference_run, tmp_path):
    """A model saved by a run remembers its env settings: `trajkit eval --model` alone evaluates
    it on the run's tasks with the run's prompts, token for token as the run's own evaluation."""
    run_dir, _ = reference_run
    card = json.loads((run_dir / "round-1/dpo/model/trajkit_model.json").read_text())
    assert card["env"]["name"] == "household" and card["env"]["kwargs"]["layout"] == "compact"
    common = ["--split", "test_seen", "--limit", "3", "--max-new-tokens", "12", "--max-steps", "3"]
    proc = trajkit("eval", "--model", str(run_dir / "sft/model"), "--out", str(tmp_path / "e"), *common)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ours = [json.loads(x) for x in (tmp_path / "e/test_seen.jsonl").read_text().splitlines()]
    theirs = [json.loads(x) for x in (run_dir / "eval-sft/test_seen/rollouts.jsonl").read_text().splitlines()]
    strip = lambda recs: {r["task_id"]: [(t["text"], t.get("token_ids")) for t in r["turns"]] for r in recs}  # noqa: E731
    assert strip(ours) == strip(theirs)
    # Settings given on the command line win over the card's.
    proc = trajkit(
        "eval", "--model", str(run_dir / "sft/model"), "--out", str(tmp_path / "s"), *common,
        "--env-arg", "layout=standard",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    other = [json.loads(x) for x in (tmp_path / "s/test_seen.jsonl").read_text().splitlines()]
    assert not set(strip(other)) & set(strip(ours)), "a standard-layout task is another task"
    proc = trajkit(
        "eval", "--model", str(run_dir / "sft/model"), "--out", str(tmp_path / "x"), "--env-arg", "oops"
    )
    assert proc.returncode == 2 and "key=value" in proc.stderr and "Traceback" not in proc.stderr


def test_changed_config_is_refused(reference_run, tmp_path):
    run_dir, _ = reference_run
    recipe = tmp_path / "changed.yaml"
    recipe.write_text((run_dir.parent / "recipe.yaml").read_text().replace("seed: 0", "seed: 1"))
    proc = trajkit("run", "--config", str(recipe))
    assert proc.returncode == 2 and "different config" in proc.stderr and "Traceback" not in proc.stderr


def kill_when(folder: Path, condition, timeout: float = 300) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "trajkit", "run", "--config", str(folder / "recipe.yaml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            if condition(folder / "run"):
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return
            if proc.poll() is not None:
                pytest.fail("the run finished before the kill point was reached")
            time.sleep(0.02)
        pytest.fail("kill point not reached in time")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def mid_rollout(run_dir: Path) -> bool:
    # Exploration runs one episode at a time in this recipe, so there is a window after each line.
    partial = run_dir / "round-1" / "explore.partial" / "rollouts.jsonl"
    return partial.is_file() and partial.read_text().count("\n") >= 1


def mid_dpo(run_dir: Path) -> bool:
    return any((run_dir / "round-1" / "dpo.partial" / "checkpoints").glob("checkpoint-2/trainer_state.json"))


@pytest.mark.parametrize("point", [mid_rollout, mid_dpo], ids=["mid-rollout", "mid-dpo"])
def test_kill_and_resume_matches_uninterrupted(reference_run, tmp_path, point):
    run_dir, _ = reference_run
    write_recipe(tmp_path)
    kill_when(tmp_path, point)
    assert not (tmp_path / "run" / "round-1" / "eval" / "test_unseen" / "DONE").exists()
    proc = trajkit("run", "--config", str(tmp_path / "recipe.yaml"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = json.loads((tmp_path / "run" / "summary.json").read_text())
    reference = json.loads((run_dir / "summary.json").read_text())
    assert resumed == reference
    # Token for token, the resumed run sampled and evaluated what the uninterrupted one did.
    for stage in ("round-1/explore", "round-1/eval"):
        assert agent_tokens(tmp_path / "run", stage) == agent_tokens(run_dir, stage)


def test_rollouts_take_the_expert_datas_instruction(tmp_path) -> None:
    from trajkit.data.schema import AGENT, TASK, Trajectory, Turn
    from trajkit.pipeline.config import EnvSection, RunConfig
    from trajkit.pipeline.stages import RunContext

    def expert(i: int, first: str) -> Trajectory:
        return Trajectory(f"e{i}", [Turn(TASK, first), Turn(AGENT, "OK"), Turn(TASK, "t"), Turn(AGENT, "a")])

    folder = tmp_path / "expert"
    folder.mkdir()
    (folder / "DONE").write_text("{}")
    write = lambda trajs: (folder / "expert.jsonl").write_text(  # noqa: E731
        "".join(json.dumps(t.to_dict()) + "\n" for t in trajs)
    )
    write([expert(0, "Interact with a household."), expert(1, "Interact with a household.")])
    assert RunContext(RunConfig(run_dir=str(tmp_path))).instruction() == "Interact with a household."
    no = RunConfig(run_dir=str(tmp_path), env=EnvSection(instruction_from="env"))
    assert RunContext(no).instruction() is None
    write([expert(0, "one wording"), expert(1, "another wording")])  # ambiguous: the env's own
    assert RunContext(RunConfig(run_dir=str(tmp_path))).instruction() is None


def test_expert_file_records_are_mapped_to_env_task_ids(tmp_path) -> None:
    from trajkit.data.schema import AGENT, TASK, Trajectory, Turn
    from trajkit.envs.registry import register_env, unregister_env
    from trajkit.pipeline.config import EnvSection, ExpertSection, RunConfig
    from trajkit.pipeline.stages import RunContext, expert_stage

    class GameEnv:
        name, version = "games", "1"

        def expert_task_id(self, traj):
            return "train/" + traj.metadata["game_file"] if "game_file" in traj.metadata else None

        def close(self):
            pass

    turns = [Turn(TASK, "i"), Turn(AGENT, "OK"), Turn(TASK, "t"), Turn(AGENT, "a")]
    records = [
        Trajectory("a", turns, task_id="a", metadata={"game_file": "g1"}),
        Trajectory("b", turns, task_id="b"),
    ]
    (tmp_path / "expert.jsonl").write_text("".join(json.dumps(t.to_dict()) + "\n" for t in records))
    register_env("games-toy", lambda **kw: GameEnv())
    try:
        cfg = RunConfig(
            run_dir=str(tmp_path / "run"),
            env=EnvSection(name="games-toy"),
            expert=ExpertSection(source="file", paths=[str(tmp_path / "expert.jsonl")], format="trajkit"),
        )
        path = expert_stage(RunContext(cfg))
    finally:
        unregister_env("games-toy")
    ids = [json.loads(line)["task_id"] for line in path.read_text().splitlines()]
    assert ids == ["train/g1", "b"]
