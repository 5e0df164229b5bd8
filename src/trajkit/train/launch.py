"""Training stages in several processes through `accelerate launch` (DDP, FSDP2, DeepSpeed ZeRO).

A recipe's `launch:` section (`LaunchSettings`) names an accelerate config file and, optionally,
the number of processes and machines. `train_stage` then writes the stage's recipe to a job file,
runs `accelerate launch -m trajkit.train.launched JOB` as a child process, and returns the model
folder the child saved; without a launch section it trains in this process as before. Resume
needs nothing new: the child's trainers continue from the newest complete checkpoint, which this
process looks for (and clears broken ones) before the child starts, so no two ranks race on it.

`check_launch_here` refuses a launch that cannot work on this machine, before any training, in one
line naming the setting and the fix. What it knows about accelerate (1.16, measured on CPU):
`distributed_type: MULTI_CPU` starts ONE process without mpirun, and so does `--cpu
--num_processes 2` without a config file; `distributed_type: MULTI_GPU` with `use_cpu: true` runs
the processes through torchrun and the trainer joins them over gloo (configs/accelerate/
ddp_cpu_2proc.yaml). FSDP and DeepSpeed with `use_cpu: true` come up unsharded, so they are refused.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from trajkit.config import ConfigError
from trajkit.train import hooks as train_hooks
from trajkit.train.common import last_good_checkpoint

SHIPPED = "configs/accelerate/ (ddp, ddp_cpu_2proc, fsdp2, zero2_offload, zero3, zero3_offload)"
CPU_CONFIG = "configs/accelerate/ddp_cpu_2proc.yaml"
JOB_FILE = "launch_job.json"
LOG_FILE = "launch.log"


@dataclass(kw_only=True)
class LaunchSettings:
    """How SFT and DPO stages run in several processes (a recipe's `launch:` section)."""

    # accelerate config file (YAML, as `accelerate config` writes); see configs/accelerate/.
    config_file: str
    # Processes in all (one per GPU); None: the config file's num_processes.
    processes: int | None = None
    # Machines the processes span; None: the config file's num_machines (1 when it has none).
    machines: int | None = None

    def __post_init__(self) -> None:
        for name in ("processes", "machines"):
            value = getattr(self, name)
            whole = isinstance(value, int) and not isinstance(value, bool)
            if value is not None and not (whole and value >= 1):
                raise ValueError(f"{name}: must be an integer >= 1 or null, got {value!r}")
        if not isinstance(self.config_file, str) or not self.config_file.strip():
            raise ValueError(f"config_file: must name an accelerate config file, got {self.config_file!r}")


class LaunchError(RuntimeError):
    """A launched training stage failed; the message is one line with the child's own error."""


class LaunchSettingError(ConfigError):
    """A launch section that cannot work on this machine (refused before any training)."""


@dataclass(frozen=True)
class LaunchPlan:
    """What a launch section comes to with its config file: checked, ready to run."""

    config_file: str
    distributed_type: str  # accelerate's DistributedType value: MULTI_GPU, FSDP, DEEPSPEED, ...
    processes: int
    machines: int
    use_cpu: bool
    config: dict[str, Any]

    @property
    def per_machine(self) -> int:
        return self.processes // self.machines

    @property
    def shards_parameters(self) -> bool:
        """FSDP, or DeepSpeed ZeRO-3: no process holds the whole model."""
        zero = (self.config.get("deepspeed_config") or {}).get("zero_stage")
        return self.distributed_type == "FSDP" or (self.distributed_type == "DEEPSPEED" and zero == 3)


def _refuse(key: str, message: str) -> NoReturn:
    raise LaunchSettingError(f"launch.{key}: {message}")


def read_launch_config(settings: LaunchSettings, lora: bool = False) -> LaunchPlan:
    """The launch section with its config file, checked without looking at this machine's devices:
    the file exists and is an accelerate config, the process counts add up, and sharded runs can
    save a whole final model. Raises `LaunchSettingError` (one line: setting and fix)."""
    import yaml
    from accelerate.commands.config.config_args import ClusterConfig

    path = settings.config_file
    if not Path(path).is_file():
        _refuse("config_file", f"{path} does not exist; give an accelerate config file, e.g. from {SHIPPED}")
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        parsed = ClusterConfig.from_yaml_file(path)  # accelerate's own reading: unknown keys, bad enums
    except Exception as err:  # noqa: BLE001 - yaml, accelerate and value errors alike end as one line
        why = " ".join(str(err).split())[:300]
        _refuse("config_file", f"{path} is not a valid accelerate config ({why}); compare {SHIPPED}")
    dtype = getattr(parsed.distributed_type, "value", None)
    if dtype is None:  # YAML reads a bare NO as false
        _refuse(
            "config_file",
            f"{path}: distributed_type {parsed.distributed_type!r} is not one of accelerate's; quote it ('NO')",
        )
    config = dict(raw) if isinstance(raw, dict) else {}
    processes = settings.processes or (parsed.num_processes if parsed.num_processes >= 1 else None)
    if processes is None:
        _refuse("processes", f"not set, and {path} has no num_processes; set launch.processes")
    machines = settings.machines or parsed.num_machines or 1
    if processes % machines:
        _refuse("processes", f"{processes} do not split evenly over {machines} machines; make it a multiple")
    if machines > 1 and not parsed.main_process_ip:
        _refuse(
            "machines",
            f"{machines} machines need main_process_ip, main_process_port and machine_rank in {path}; "
            "set them there, or launch.machines: 1",
        )
    use_cpu = bool(parsed.use_cpu)
    if dtype == "NO" and processes > 1:
        _refuse(
            "config_file", f"{path} has distributed_type NO (one process); use MULTI_GPU, FSDP or DEEPSPEED"
        )
    mpirun = (parsed.mpirun_config or {}).get("mpirun_hostfile")
    if dtype == "MULTI_CPU" and processes // machines > 1 and not mpirun:
        _refuse(
            "config_file",
            f"{path}: distributed_type MULTI_CPU starts one process per machine without mpirun; for "
            f"processes on CPU use distributed_type: MULTI_GPU with use_cpu: true, as {CPU_CONFIG}",
        )
    if use_cpu and dtype in ("FSDP", "DEEPSPEED"):
        _refuse(
            "config_file", f"{path}: {dtype} shards only on GPUs (use_cpu: true); on CPU use {CPU_CONFIG}"
        )
    if use_cpu and str(parsed.mixed_precision or "no") != "no":
        _refuse(
            "config_file",
            f"{path}: mixed_precision {parsed.mixed_precision} on CPU; set mixed_precision: 'no'",
        )
    ds = parsed.deepspeed_config or {}
    if dtype == "DEEPSPEED" and ds.get("zero_stage") == 3 and not ds.get("zero3_save_16bit_model"):
        _refuse(
            "config_file",
            f"{path}: ZeRO-3 would save a sharded final model; set deepspeed_config.zero3_save_16bit_model: true",
        )
    fsdp = parsed.fsdp_config or {}
    if dtype == "FSDP" and fsdp.get("fsdp_state_dict_type", "FULL_STATE_DICT") != "FULL_STATE_DICT":
        _refuse(
            "config_file",
            f"{path}: the final model is saved whole from FSDP; set fsdp_config.fsdp_state_dict_type: "
            "FULL_STATE_DICT",
        )
    plan = LaunchPlan(path, dtype, processes, machines, use_cpu, config)
    if lora and plan.shards_parameters:
        _refuse(
            "config_file",
            f"{path} shards the parameters ({dtype}), and LoRA adapters are merged into the saved model "
            "in one process; with model.lora use configs/accelerate/ddp.yaml or zero2_offload.yaml",
        )
    return plan


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_launch_here(settings: LaunchSettings, lora: bool = False) -> LaunchPlan:
    """`read_launch_config`, then what this machine must have: a GPU per process (unless the
    config runs on CPU) and DeepSpeed when the config uses it."""
    plan = read_launch_config(settings, lora)
    if plan.distributed_type == "DEEPSPEED" and importlib.util.find_spec("deepspeed") is None:
        _refuse(
            "config_file",
            f"{plan.config_file} uses DeepSpeed, which is not installed; `pip install deepspeed` on the "
            "GPU machine, or use configs/accelerate/fsdp2.yaml",
        )
    if not plan.use_cpu:
        gpus = visible_gpus()
        ids = plan.config.get("gpu_ids")
        if ids not in (None, "all"):
            gpus = min(gpus, len(str(ids).split(",")))
        if plan.per_machine > gpus:
            have = f"this machine has {gpus}" if gpus else "this machine has none"
            _refuse(
                "processes",
                f"{plan.per_machine} processes per machine need as many GPUs, {have}; set launch.processes "
                f"to at most {gpus} (and raise grad_accum to keep the global batch)"
                if gpus
                else f"{plan.per_machine} processes per machine need as many GPUs, {have}; on CPU use "
                f"launch.config_file: {CPU_CONFIG}",
            )
    return plan


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_command(plan: LaunchPlan, job: Path) -> list[str]:
    """`accelerate launch` with the plan's counts, running `trajkit.train.launched JOB`. One
    machine gets a free rendezvous port, so runs side by side do not collide on 29500."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", plan.config_file]
    cmd += ["--num_processes", str(plan.processes), "--num_machines", str(plan.machines)]
    if plan.machines == 1 and not plan.config.get("main_process_port"):
        cmd += ["--main_process_port", str(free_port())]
    return [*cmd, "-m", "trajkit.train.launched", str(job)]


_ERROR_LINE = re.compile(r"^\s*(?:\[rank\d+\]:\s*)?([A-Za-z_][\w.]*(?:Error|Exception|Interrupt)\b.*)$")
_LAUNCHER_ERRORS = ("ChildFailedError", "CalledProcessError")


def child_error(output: str) -> str:
    """The child's own error in one line: the last exception line a rank printed (not the
    launcher's "child failed" report), else the last non-empty line."""
    lines = [line.rstrip() for line in output.splitlines() if line.strip()]
    for line in reversed(lines):
        match = _ERROR_LINE.match(line)
        if match and not any(name in line for name in _LAUNCHER_ERRORS):
            return " ".join(match.group(1).split())[:500]
    return " ".join(lines[-1].split())[:500] if lines else "no output"


def run_launched(
    kind: str, recipe: Any, settings: LaunchSettings, log: Callable[[str], None] | None = None
) -> Path:
    """Train `recipe` (an SFTRecipe or DPORecipe, by `kind`) in the processes `settings` asks for;
    returns the saved model folder. A failed child is a `LaunchError` naming its error."""
    plan = check_launch_here(settings, lora=recipe.lora is not None)
    _release_gpu_memory()
    out_dir = Path(recipe.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if recipe.resume:
        last_good_checkpoint(out_dir / "checkpoints")  # clears a half-written checkpoint first
    hooks = train_hooks._HOOKS.get()  # the run's tracker settings travel in the job file
    job = {
        "kind": kind,
        "recipe": dataclasses.asdict(recipe),
        "report_to": hooks.report_to if hooks else "none",
        "trainer_args": hooks.trainer_args if hooks else {},
        "tensorboard_dir": (
            hooks.tensorboard_dir(str(out_dir / "checkpoints")) if hooks and hooks.tensorboard_dir else None
        ),
    }
    job_path = out_dir / JOB_FILE
    job_path.write_text(json.dumps(job, indent=2) + "\n")
    log_path = out_dir / LOG_FILE
    cmd = launch_command(plan, job_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if log is not None:
        log(f"[{kind}] training in {plan.processes} processes ({plan.config_file}); their output: {log_path}")
    final = out_dir / "model"
    shutil.rmtree(final, ignore_errors=True)  # only what this launch saves counts
    with log_path.open("w", encoding="utf-8") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        # Its own process group: stopping the run stops every rank, not just the launcher.
        child = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            code = child.wait()
        except BaseException:
            _stop(child)
            raise
    where = f"{plan.processes} process(es) of {plan.config_file}"
    if code != 0:
        error = child_error(log_path.read_text(encoding="utf-8", errors="replace"))
        raise LaunchError(
            f"{kind} training in {where} failed (exit {code}): {error}; whole output: {log_path}"
        )
    if not (final / "config.json").is_file():
        raise LaunchError(f"{kind} training in {where} ended without saving {final}; see {log_path}")
    return final


def _stop(child: subprocess.Popen) -> None:
    """End the launcher and its ranks (the process group it leads): politely, then for good."""
    for sig, grace in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(child.pid, sig)
            child.wait(grace)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def _release_gpu_memory() -> None:
    """The run's own process may still cache GPU memory from a rollout stage; the children need it."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        import gc

        gc.collect()
        torch.cuda.empty_cache()


def train_stage(
    kind: str, recipe: Any, settings: LaunchSettings | None, log: Callable[[str], None] | None = None
) -> Path:
    """SFT or DPO for a run stage: in this process, or launched when `settings` is given."""
    if settings is not None:
        return run_launched(kind, recipe, settings, log)
    if kind == "sft":
        from trajkit.train.sft import run_sft

        return run_sft(recipe)
    from trajkit.train.dpo import run_dpo

    return run_dpo(recipe)
