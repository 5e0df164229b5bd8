"""Training stages in several processes through `accelerate launch` (train.launch).

On CPU: SFT and DPO in 2 gloo processes (configs/accelerate/ddp_cpu_2proc.yaml) give the losses and
weights of 1 process with the same global batch, and resume from a checkpoint of a stopped launch;
a failing child stops the stage with its own error in one line; launch sections that cannot work
are refused before any training. FSDP2 / DeepSpeed configs are read and turned into accelerate's
own plugins here; sharded training itself runs only where there are 2 GPUs.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from trajkit.config import ConfigError
from trajkit.train.launch import (
    LaunchError,
    LaunchSettingError,
    LaunchSettings,
    check_launch_here,
    child_error,
    free_port,
    read_launch_config,
    run_launched,
)

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = ROOT / "configs" / "accelerate"
CPU_2PROC = str(ACCELERATE / "ddp_cpu_2proc.yaml")
# 2 processes sum gradients in another order than 1 (and pad their half-batches differently):
# losses agree to ~1e-6 here; the tolerance leaves room for other CPUs' kernels.
TOLERANCE = 1e-4
OBJECTS = ["apple", "mug", "knife", "bowl", "pan", "egg", "cup", "plate"]


def _traj(i: int) -> dict:
    obj = OBJECTS[i % len(OBJECTS)]
    turns = [
        {"role": "task", "text": f"Your task is to: put a {obj} in fridge."},
        {"role": "agent", "text": f"Thought: find the {obj}.\nAction: go to cabinet {i % 3 + 1}"},
        {"role": "observation", "text": f"Observation: On the cabinet, you see a {obj} 1."},
        {"role": "agent", "text": f"Action: put {obj} 1 in/on fridge 1"},
    ]
    return {"id": f"t{i}", "task_id": f"t{i}", "turns": turns, "reward": 1.0, "success": True}


@pytest.fixture(scope="module")
def sft_data(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("sft") / "expert.jsonl"
    path.write_text("".join(json.dumps(_traj(i)) + "\n" for i in range(8)))
    return str(path)


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> str:
    rows = []
    for i, obj in enumerate(OBJECTS[:4]):
        traj = _traj(i)["turns"]
        rows.append(
            {
                "task_id": f"t{i}",
                "prompt": traj[:1],
                "chosen": traj[1:],
                "rejected": [
                    {"role": "agent", "text": f"Action: go to drawer {i}"},
                    {"role": "observation", "text": "Observation: Nothing happened."},
                    {"role": "agent", "text": f"Action: take {obj} 2 from drawer {i}"},
                ],
            }
        )
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _sft(model, data, out, processes: int, max_steps: int):  # an SFTRecipe
    from trajkit.train.sft import SFTRecipe

    # Global batch 4 either way: 1 process x 4, or 2 processes x 2.
    return SFTRecipe(
        model=str(model), data=[data], output_dir=str(out), batch_size=4 // processes, max_steps=max_steps,
        learning_rate=3e-3, lr_scheduler="constant", warmup=0, logging_steps=1, save_steps=2, max_length=256,
    )  # fmt: skip


def _dpo(model, pairs, out, processes: int, max_steps: int):
    from trajkit.train.dpo import DPORecipe

    return DPORecipe(
        model=str(model), pairs=[pairs], output_dir=str(out), batch_size=4 // processes, max_steps=max_steps,
        learning_rate=3e-3, lr_scheduler="constant", warmup=0, logging_steps=1, save_steps=1, max_length=256,
    )  # fmt: skip


def _settings_fields():
    from trajkit.train.sft import SFTSettings

    run_owned = {"template", "lora", "seed"}
    return [f for f in dataclasses.fields(SFTSettings) if f.name not in run_owned]


def _losses(out: Path) -> dict[int, float]:
    log = json.loads((Path(out) / "train_log.json").read_text())["log_history"]
    return {e["step"]: e["loss"] for e in log if "loss" in e}


def _weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "model.safetensors"))


def _assert_same(one: dict[int, float], two: dict[int, float]) -> None:
    assert one.keys() == two.keys() and one, (one, two)
    print("losses, 1 process vs 2:", {step: (one[step], two[step]) for step in one})
    for step in one:
        assert abs(one[step] - two[step]) <= TOLERANCE, (step, one[step], two[step])


def _update_gap(start: Path, one: Path, two: Path) -> float:
    """|w_one - w_two| / |w_one - w_start| over all weights: how far apart the two trainings' updates
    are. (Adam turns last-bit gradient differences of near-zero gradients into visible steps, so
    single weights can differ by ~lr x 1e-1 while the updates agree as a whole.)"""
    w0, w1, w2 = _weights(start), _weights(one), _weights(two)
    gap = sum(float((w1[k] - w2[k]).double().pow(2).sum()) for k in w1) ** 0.5
    moved = sum(float((w1[k] - w0[k]).double().pow(2).sum()) for k in w1) ** 0.5
    print(f"update gap {gap:.3g} / update {moved:.3g} = {gap / moved:.3g}")
    return gap / moved


def _launch_2proc(kind, recipe) -> Path:
    return run_launched(kind, recipe, LaunchSettings(config_file=CPU_2PROC))


def _mark(checkpoint: Path) -> None:
    """Tag a checkpoint's trainer state: a launch that resumes from it carries the tag on."""
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    state["log_history"][0]["resumed_marker"] = 1
    (checkpoint / "trainer_state.json").write_text(json.dumps(state))


def _resumed(out: Path) -> bool:
    return json.loads((out / "train_log.json").read_text())["log_history"][0].get("resumed_marker") == 1


# ---------------------------------------------------------------------------------------------
# 2 processes = 1 process, and resume


def test_sft_stage_in_2_processes_matches_1_process_and_resumes(tiny_model_dir, sft_data, tmp_path):
    from trajkit.pipeline.agents import SFTPlan
    from trajkit.pipeline.stages import RunContext, sft_stage
    from trajkit.train.sft import run_sft

    run_sft(_sft(tiny_model_dir, sft_data, tmp_path / "one", 1, max_steps=4))
    # A run's SFT stage in 2 processes, killed after a checkpoint at step 2 (its launch asked for 2
    # steps), then the run again: the stage resumes in its .partial folder and is marked done.
    settings = {
        f.name: getattr(_sft(tiny_model_dir, sft_data, "-", 2, 4), f.name) for f in _settings_fields()
    }
    cfg = _run_config(tmp_path, {"config_file": CPU_2PROC}, sft=settings)
    work = Path(cfg.run_dir) / "sft.partial"
    _launch_2proc("sft", _sft(tiny_model_dir, sft_data, work, 2, max_steps=2))
    ckpt = work / "checkpoints" / "checkpoint-2"
    assert {p.name for p in ckpt.glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}
    _mark(ckpt)
    final = Path(sft_stage(RunContext(cfg), str(tiny_model_dir), Path(sft_data), SFTPlan("sft", cfg.sft)))
    stage = Path(cfg.run_dir) / "sft"
    assert final == stage / "model" and (stage / "DONE").is_file() and _resumed(stage)
    one_losses, two_losses = _losses(tmp_path / "one"), _losses(stage)
    _assert_same(one_losses, two_losses)  # steps 1-2 from the killed launch, 3-4 resumed
    assert one_losses[4] < one_losses[1]  # it trained
    assert _update_gap(tiny_model_dir, tmp_path / "one" / "model", final) < 1e-3
    assert json.loads((final / "trajkit_model.json").read_text())["template"] == "tiny"
    assert not (stage / ".model.tmp").exists()


def test_dpo_in_2_processes_matches_1_process_and_resumes(tiny_model_dir, pairs_file, tmp_path):
    from trajkit.train.dpo import run_dpo

    run_dpo(_dpo(tiny_model_dir, pairs_file, tmp_path / "one", 1, max_steps=3))
    two = tmp_path / "two"
    _launch_2proc("dpo", _dpo(tiny_model_dir, pairs_file, two, 2, max_steps=1))
    assert (two / "checkpoints" / "checkpoint-1" / "rng_state_1.pth").is_file()
    _mark(two / "checkpoints" / "checkpoint-1")
    _launch_2proc("dpo", _dpo(tiny_model_dir, pairs_file, two, 2, max_steps=3))
    assert _resumed(two)
    one_losses, two_losses = _losses(tmp_path / "one"), _losses(two)
    _assert_same(one_losses, two_losses)
    assert one_losses[3] < one_losses[1]
    assert _update_gap(tiny_model_dir, tmp_path / "one" / "model", two / "model") < 1e-3


def test_a_failing_child_stops_the_stage_with_its_own_error(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "turns": "not a list"}\n')
    recipe = _sft(tiny_model_dir, str(bad), tmp_path / "out", 2, max_steps=1)
    with pytest.raises(LaunchError) as err:
        _launch_2proc("sft", recipe)
    message = str(err.value)
    assert "\n" not in message and "exit" in message and "launch.log" in message
    assert "turns" in message, message  # the child's DataError, not the launcher's report
    assert "ChildFailedError" not in message
    assert not (tmp_path / "out" / "model").exists()


# ---------------------------------------------------------------------------------------------
# the run: recipe section, checks before any stage, the CLI's one line


def _run_config(tmp_path, launch: dict | None, **extra):
    from trajkit.pipeline.config import run_config_from_dict

    data = {"run_dir": str(tmp_path / "run"), **extra}
    if launch is not None:
        data["launch"] = launch
    return run_config_from_dict(data, "recipe.yaml")


def test_run_recipe_launch_section_is_typed_and_checked_at_load(tmp_path):
    from trajkit.pipeline.config import config_to_yaml

    cfg = _run_config(tmp_path, {"config_file": CPU_2PROC, "processes": 2})
    assert cfg.launch == LaunchSettings(config_file=CPU_2PROC, processes=2)
    assert "\nlaunch:" in config_to_yaml(cfg)
    assert "\nlaunch:" not in config_to_yaml(_run_config(tmp_path, None))  # saved configs of old runs stay
    cases = [
        ({"config_file": CPU_2PROC, "processes": 0}, r"recipe\.yaml\.launch: processes"),
        ({"config_file": CPU_2PROC, "procs": 2}, r"launch.*unknown key.*procs"),
        (
            {"config_file": str(tmp_path / "nope.yaml")},
            r"recipe\.yaml: launch\.config_file: .*does not exist",
        ),
        (
            {"config_file": CPU_2PROC, "processes": 3, "machines": 2},
            r"launch\.processes: 3 do not split evenly over 2 machines",
        ),
    ]
    for launch, pattern in cases:
        with pytest.raises(ConfigError, match=pattern):
            _run_config(tmp_path, launch)
    lora = {"model": {"lora": {"r": 4}}}
    with pytest.raises(ConfigError, match=r"launch\.config_file: .*LoRA.*ddp\.yaml"):
        _run_config(tmp_path, {"config_file": str(ACCELERATE / "zero3.yaml")}, **lora)


def test_run_refuses_a_launch_this_machine_cannot_do_before_any_stage(tmp_path):
    from trajkit.pipeline.config import config_to_yaml
    from trajkit.pipeline.stages import RunContext, prepare_dir

    cfg = _run_config(tmp_path, {"config_file": str(ACCELERATE / "ddp.yaml"), "processes": 64})
    with pytest.raises(LaunchSettingError, match=r"^launch\.processes: 64 processes per machine need"):
        prepare_dir(RunContext(cfg), config_to_yaml(cfg))
    assert not Path(cfg.run_dir).exists()


def test_cli_refuses_an_unworkable_launch_in_one_line_before_any_stage(tmp_path):
    import subprocess
    import sys

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"run_dir: {tmp_path / 'run'}\nlaunch: {{config_file: {tmp_path / 'none.yaml'}}}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "trajkit", "run", "--config", str(recipe)], capture_output=True, text=True
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "launch.config_file" in lines[0] and "configs/accelerate/" in lines[0]
    assert not (tmp_path / "run").exists()


def test_cli_prints_a_failed_launch_as_one_line(monkeypatch, tmp_path):
    import trajkit.pipeline
    from trajkit.cli.app import UsageError
    from trajkit.cli.loop import _execute

    def fail(*args, **kwargs):
        raise LaunchError("sft training in 2 process(es) of x.yaml failed (exit 1): ValueError: boom")

    monkeypatch.setattr(trajkit.pipeline, "execute", fail)
    with pytest.raises(UsageError) as err:
        _execute(_run_config(tmp_path, None), "")
    assert str(err.value).startswith("run stopped: sft training") and "ValueError: boom" in str(err.value)
    assert "run again" in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------
# accelerate config files


def _config(tmp_path, text: str) -> str:
    path = tmp_path / "acc.yaml"
    path.write_text(text)
    return str(path)


BASE = "compute_environment: LOCAL_MACHINE\nnum_machines: 1\nmixed_precision: 'no'\n"


@pytest.mark.parametrize(
    ("text", "processes", "pattern"),
    [
        ("distributed_type: MULTI_CPU\nuse_cpu: true\n", 2, r"MULTI_CPU starts one process.*MULTI_GPU"),
        ("distributed_type: 'NO'\nuse_cpu: true\n", 2, r"distributed_type NO \(one process\)"),
        ("distributed_type: NO\nuse_cpu: true\n", 2, r"distributed_type False .*quote it"),
        (
            "distributed_type: FSDP\nuse_cpu: true\nfsdp_config: {fsdp_version: 2}\n",
            2,
            r"FSDP shards only on GPUs",
        ),
        (
            "distributed_type: DEEPSPEED\ndeepspeed_config: {zero_stage: 3}\n",
            2,
            r"zero3_save_16bit_model: true",
        ),
        ("distributed_type: MULTI_GPU\nuse_cpu: true\n", None, r"launch\.processes: not set"),
        ("distributed_type: MULTI_GPU\nnum_processes: 2\nnum_machines: 2\n", None, r"main_process_ip"),
        ("distributed_type: MULTI_GPU\nnum_processes: 2\nnum_procs: 3\n", None, r"not a valid .*num_procs"),
        ("distributed_type: MULTI_GPU\nuse_cpu: true\nnum_processes: 2\n: [\n", None, r"not a valid"),
        (
            "distributed_type: FSDP\nnum_processes: 2\nfsdp_config: {fsdp_state_dict_type: SHARDED_STATE_DICT}\n",
            None,
            r"FULL_STATE_DICT",
        ),
    ],
)
def test_unworkable_configs_are_refused_in_one_line_naming_the_fix(tmp_path, text, processes, pattern):
    settings = LaunchSettings(config_file=_config(tmp_path, BASE + text), processes=processes)
    with pytest.raises(LaunchSettingError, match=r"^launch\.(config_file|processes|machines): ") as err:
        read_launch_config(settings)
    assert "\n" not in str(err.value)
    assert __import__("re").search(pattern, str(err.value)), str(err.value)


PROBE = """
import os
from accelerate import Accelerator

state = Accelerator(cpu=True).state  # as the trainer makes it on CPU (use_cpu)
print(f"rank {state.process_index} of {state.num_processes}: {state.distributed_type.value}", flush=True)
"""


def test_a_multi_cpu_config_starts_one_process_with_this_accelerate(tmp_path):
    """Why MULTI_CPU configs are refused and ddp_cpu_2proc.yaml says MULTI_GPU + use_cpu (whose
    2 ranks the training tests above see: one rng_state file per rank in every checkpoint)."""
    import subprocess
    import sys

    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    multi_cpu = _config(tmp_path, BASE + "distributed_type: MULTI_CPU\nuse_cpu: true\nnum_processes: 2\n")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", multi_cpu]
    cmd += ["--main_process_port", str(free_port()), str(script)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [line for line in proc.stdout.splitlines() if line.startswith("rank ")] == ["rank 0 of 1: NO"]


def _plugin(path: str):
    """The plugin accelerate's own launcher would hand the processes for this config file."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin, patch_environment
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args, defaults, _ = _validate_launch_command(
        launch_command_parser().parse_args(["--config_file", path, "x.py"])
    )
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        env = prepare_deepspeed_cmd_env(args)[1]
    else:
        env = prepare_multi_gpu_env(args)
    with patch_environment(**env):
        if args.use_deepspeed:
            return DeepSpeedPlugin()
        return FullyShardedDataParallelPlugin() if args.use_fsdp else None


def test_shipped_configs_load_and_make_accelerates_plugins():
    shipped = {p.name for p in ACCELERATE.glob("*.yaml")}
    assert shipped == {
        "ddp.yaml", "ddp_cpu_2proc.yaml", "fsdp2.yaml", "zero2_offload.yaml", "zero3.yaml", "zero3_offload.yaml",
    }  # fmt: skip
    plans = {name: read_launch_config(LaunchSettings(config_file=str(ACCELERATE / name))) for name in shipped}
    assert {n: (p.distributed_type, p.processes, p.use_cpu) for n, p in plans.items()} == {
        "ddp.yaml": ("MULTI_GPU", 8, False),
        "ddp_cpu_2proc.yaml": ("MULTI_GPU", 2, True),
        "fsdp2.yaml": ("FSDP", 8, False),
        "zero2_offload.yaml": ("DEEPSPEED", 8, False),
        "zero3.yaml": ("DEEPSPEED", 8, False),
        "zero3_offload.yaml": ("DEEPSPEED", 4, False),
    }
    fsdp = _plugin(str(ACCELERATE / "fsdp2.yaml"))
    assert fsdp.fsdp_version == 2 and fsdp.state_dict_type.name == "FULL_STATE_DICT"
    zero = {
        n: _plugin(str(ACCELERATE / n)).deepspeed_config["zero_optimization"] for n in shipped if "zero" in n
    }
    assert {n: (z["stage"], z["offload_optimizer"]["device"], z["offload_param"]["device"]) for n, z in zero.items()} == {
        "zero2_offload.yaml": (2, "cpu", "none"),
        "zero3.yaml": (3, "none", "none"),
        "zero3_offload.yaml": (3, "cpu", "cpu"),
    }  # fmt: skip
    assert zero["zero3.yaml"]["stage3_gather_16bit_weights_on_model_save"] is True


def test_gpu_configs_are_refused_on_a_machine_without_them(monkeypatch):
    import trajkit.train.launch as launch

    monkeypatch.setattr(launch, "visible_gpus", lambda: 0)
    with pytest.raises(LaunchSettingError, match=r"launch\.processes: .*none; on CPU use .*ddp_cpu_2proc"):
        check_launch_here(LaunchSettings(config_file=str(ACCELERATE / "fsdp2.yaml")))
    monkeypatch.setattr(launch, "visible_gpus", lambda: 4)
    with pytest.raises(LaunchSettingError, match=r"8 processes per machine need as many GPUs.*at most 4"):
        check_launch_here(LaunchSettings(config_file=str(ACCELERATE / "ddp.yaml")))
    assert (
        check_launch_here(LaunchSettings(config_file=str(ACCELERATE / "ddp.yaml"), processes=4)).processes
        == 4
    )
    monkeypatch.setattr(launch.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        LaunchSettingError, match=r"DeepSpeed, which is not installed; `pip install deepspeed`"
    ):
        check_launch_here(LaunchSettings(config_file=str(ACCELERATE / "zero3.yaml"), processes=2))


def test_the_childs_error_line_is_found_in_the_launcher_output():
    output = "\n".join(
        [
            "[rank1]: Traceback (most recent call last):",
            '[rank1]:   File "x.py", line 3, in <module>',
            "[rank1]: ValueError: no trajectories found in ['a']",
            "E1206 torch/distributed/elastic: failed (exitcode: 1)",
            "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ",
            "============================================================",
        ]
    )
    assert child_error(output) == "ValueError: no trajectories found in ['a']"
    assert child_error("Killed\n") == "Killed"


# ---------------------------------------------------------------------------------------------
# sharding: needs GPUs


def _gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@pytest.mark.skipif(_gpus() < 2, reason="FSDP2 / ZeRO-3 sharding needs 2 GPUs")
@pytest.mark.parametrize("config", ["fsdp2.yaml", "zero3.yaml"])
def test_sharded_sft_on_2_gpus_matches_1_gpu(tiny_model_dir, sft_data, tmp_path, config):
    import importlib.util

    from trajkit.train.sft import run_sft

    if config.startswith("zero") and importlib.util.find_spec("deepspeed") is None:
        pytest.skip("deepspeed is not installed")
    one = _sft(tiny_model_dir, sft_data, tmp_path / "one", 1, max_steps=4)
    run_sft(dataclasses.replace(one, dtype="float32"))
    two = dataclasses.replace(
        _sft(tiny_model_dir, sft_data, tmp_path / "two", 2, max_steps=4), dtype="float32"
    )
    final = run_launched("sft", two, LaunchSettings(config_file=str(ACCELERATE / config), processes=2))
    one_losses, two_losses = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert one_losses.keys() == two_losses.keys()
    for step in one_losses:  # bf16 autocast on both sides: a looser bound than on CPU
        assert abs(one_losses[step] - two_losses[step]) <= 2e-2 * max(1.0, abs(one_losses[step]))
    assert set(_weights(final)) == set(_weights(tmp_path / "one" / "model"))  # saved whole, not shards
