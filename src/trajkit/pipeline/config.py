"""The run recipe: typed sections, checked when the file is read.

Every section is a dataclass; `load_run_config` refuses an unknown or mistyped key with the file
and the key before any stage runs, for `trajkit run`, `trajkit demo` and `--set` alike. The SFT
and DPO sections are the trainers' own settings (`train.sft.SFTSettings`, `train.dpo.DPOSettings`);
`dpo_later_rounds`, `rft_sft` and the GUI stages' `stage1` / `stage2` are overrides of them,
checked the same way. The model's template and LoRA and the run's seed are set once, under
`model:` and `seed:`, for every training stage.

Recipes live as YAML in `configs/`; the demos are `configs/household_eto_tiny.yaml` and
`configs/miniwob_eto_tiny.yaml`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trajkit.config import ConfigError, apply_overrides, check_partial, from_dict, load_yaml
from trajkit.envs.faulty import NEED_WORKERS, FaultSpec
from trajkit.policy.models import LoraSpec
from trajkit.policy.vllm_backend import VLLMSettings
from trajkit.train.dpo import DPOSettings
from trajkit.train.launch import LaunchSettings, read_launch_config
from trajkit.train.sft import SFTSettings

PLAN_MODES = ("enforced_plan", "self_plan")
CONTEXT_OVERFLOW = ("truncate", "end")
WORKERS = (False, True, "process", "ray")  # env.workers; true is process
RUN_OWNED = ("template", "lora", "seed")  # set under model: / seed:, for every training stage


@dataclass
class EnvSection:
    name: str = "household"
    kwargs: dict[str, Any] = field(default_factory=dict)
    # Run each rollout env in its own process with per-call timeouts (real simulators: a crash or
    # hang then costs one episode): `process` (or true) on this machine, `ray` as Ray actors on
    # this machine or a cluster (docs/ray-env-pools.md). The household world is safe in-process.
    workers: bool | str = False
    # `workers: ray`: the cluster to join ("auto" or "host:port"); null: the RAY_ADDRESS
    # variable, else a local Ray on 127.0.0.1.
    ray_address: str | None = None
    step_timeout: float = 60.0
    reset_timeout: float = 300.0
    # Where rollouts take their first user turn from: "expert" (the expert data's, when all its
    # trajectories share one; training and evaluation prompts then cannot drift) or "env".
    instruction_from: str = "expert"
    # Failures injected into rollout envs on purpose (`envs.faulty`: crash, hang, exception,
    # garbage, slow_reset on a fraction of calls), to measure how a run survives them.
    faults: FaultSpec | None = None


@dataclass
class ModelSection:
    base: str = "tiny"  # "tiny": built from scratch on the expert data; else a folder or hub id
    tiny_size: str = "s"
    template: str | None = None
    lora: LoraSpec | None = None


@dataclass
class ExpertSection:
    source: str = "oracle"  # "oracle": the env's scripted expert on train tasks; else data paths
    paths: list[str] = field(default_factory=list)
    format: str = "auto"
    limit: int | None = None
    # Replay expert data files in the env (envs.verify: ReAct "Action:" turns) and drop records
    # whose actions do not win; the expert stage's DONE counts them. Oracle episodes are played already.
    verify: bool = False


@dataclass
class ExploreSection:
    n_samples: int = 1
    # ETO explores greedily (its FastChat agent sends top_p=0, which FastChat decodes greedily
    # whatever the temperature). A temperature > 0 samples instead: a deviation from ETO.
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 96
    batch_size: int = 32
    limit: int | None = None  # train tasks explored per round (None: every expert task)
    max_steps: int | None = None  # None: each task's own step budget
    # Prompt + new tokens, for exploration and evaluation. A longer episode drops its oldest turns
    # (instruction, example and task stay; recorded in the trajectory) as FastChat does
    # (`context_overflow: truncate`), or ends (`end`).
    max_context: int = 4096
    context_overflow: str = "truncate"
    # One worked example episode before the task, as plain conversation turns (ETO explores and
    # evaluates with it; pairs leave it out). `icl_intro` wraps it in "Here is an example." /
    # "Now, it's your turn..." (ETO's single-prompt form; not what its chat agent sends).
    icl: bool = False
    icl_intro: bool = False


@dataclass
class PairsSection:
    strategy: str = "trajectory"
    # The rejected side keeps the expert's agent turns + this many (ETO on WebShop and
    # ScienceWorld: 5); null keeps the whole failed episode (ETO on ALFWorld).
    extra_turns: int | None = 5
    # strategy step_mc (IPR-style step pairs, `rollout.steps`): expert tasks probed per round
    # (null: every explored one), steps probed per task (null: all), continuations per step and
    # their temperature (0: greedy, one is enough), and the return gap a pair needs.
    probe_tasks: int | None = None
    probe_steps: int | None = None
    probe_samples: int = 1
    probe_temperature: float = 0.0
    margin: float = 0.0


@dataclass
class EvalSection:
    splits: list[str] = field(default_factory=lambda: ["test_seen", "test_unseen"])
    limit: int | None = None
    max_new_tokens: int = 96
    batch_size: int = 32
    max_steps: int | None = None  # None: each task's own step budget
    allow_overlap: bool = False
    # One worked example episode before each test task, as ETO's evaluation does (envs that
    # provide `icl_turns(task)`); see ExploreSection.
    icl: bool = False
    icl_intro: bool = False


@dataclass
class GuiSection:
    """A GUI-agent run (MiniWoB++ with a vision-language policy): AGUVIS SFT, then ETO.

    `model.base: tiny` builds a tiny Qwen2-VL of `model.tiny_size` (xs, s) from the expert corpus;
    else a Qwen2-VL-family folder or hub id. The `sft` section holds what both SFT stages share;
    `stage1` / `stage2` override it for grounding and planning (`freeze_vision: null`, the default,
    freezes a pretrained encoder as AGUVIS and trains a random one; the merger trains unless
    `train_merger: false`). `grounding_stage: false` skips stage 1 (planning SFT straight from
    the base model: AGUVIS's "stage 2 only" ablation).
    """

    grounding_stage: bool = True
    stage1: dict[str, Any] = field(default_factory=dict)  # SFTSettings overrides, grounding
    stage2: dict[str, Any] = field(default_factory=dict)  # SFTSettings overrides, planning
    explore_mode: str = "enforced_plan"  # inference mode of exploration
    eval_modes: list[str] = field(default_factory=lambda: ["enforced_plan", "self_plan"])
    max_images: int | None = None  # screenshots kept in a rollout prompt (most recent); None: all
    envs: int = 4  # browsers side by side (each ~0.5 GiB); the generation batch is at most this
    report_examples: int = 4  # chosen-vs-rejected screenshots drawn in the report


@dataclass
class RolloutSection:
    """Which engine samples rollouts (exploration, evaluation, step probes).

    `hf`: transformers in the run's own process (`policy.backends`). `vllm`: vLLM engines in
    child processes running the `.venv-vllm` venv (`policy.vllm_backend`), each policy loaded when
    its rollouts start and stopped after them; `vllm` holds the engine settings.
    """

    backend: str = "hf"
    vllm: VLLMSettings = field(default_factory=VLLMSettings)


@dataclass
class RunConfig:
    run_dir: str
    seed: int = 0
    rounds: int = 2
    env: EnvSection = field(default_factory=EnvSection)
    model: ModelSection = field(default_factory=ModelSection)
    expert: ExpertSection = field(default_factory=ExpertSection)
    sft: SFTSettings = field(default_factory=SFTSettings)
    explore: ExploreSection = field(default_factory=ExploreSection)
    pairs: PairsSection = field(default_factory=PairsSection)
    dpo: DPOSettings = field(default_factory=DPOSettings)  # round 1
    dpo_later_rounds: dict[str, Any] = field(default_factory=dict)  # DPOSettings overrides from round 2
    dpo_reference: str = "round_start"  # round_start (ETO) or sft
    rft: bool = True  # baseline: SFT continued on the SFT policy's own successful explorations
    rft_sft: dict[str, Any] = field(default_factory=dict)  # SFTSettings overrides for that baseline
    eval: EvalSection = field(default_factory=EvalSection)
    gui: GuiSection | None = None  # set: a GUI-agent run (see GuiSection)
    # Experiment tracker of the loop and the trainers: none, tensorboard, wandb or trackio (offline /
    # local unless WANDB_MODE / TRACKIO_SPACE_ID say otherwise; see pipeline.tracking).
    report_to: str = "none"
    # Train SFT and DPO stages in several processes through `accelerate launch` (DDP, FSDP2,
    # DeepSpeed; see train.launch and configs/accelerate/); null: in the run's own process.
    launch: LaunchSettings | None = None
    rollout: RolloutSection = field(default_factory=RolloutSection)

    def sft_settings(self, overrides: dict[str, Any] | None = None) -> SFTSettings:
        return dataclasses.replace(self.sft, **(overrides or {}))

    def dpo_settings(self, round_no: int) -> DPOSettings:
        return dataclasses.replace(self.dpo, **(self.dpo_later_rounds if round_no > 1 else {}))


def check_run_config(cfg: RunConfig, where: str) -> RunConfig:
    """Checks beyond types, made before any stage runs; returns `cfg` with override sections
    coerced to their types."""
    from trajkit.pairs import STRATEGIES

    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise ConfigError(f"{where}: {key} {what}")

    need(cfg.dpo_reference in ("round_start", "sft"), "dpo_reference", "must be round_start or sft")
    need(cfg.env.instruction_from in ("expert", "env"), "env.instruction_from", "must be expert or env")
    from trajkit.envs.registry import registered_names

    known = registered_names()
    need(cfg.env.name in known, "env.name", f"{cfg.env.name!r} is not an env; registered: {', '.join(known)}")
    need(cfg.env.workers in WORKERS, "env.workers", "must be false, true (= process), process or ray")
    if cfg.env.workers == "ray":
        from trajkit.envs.ray_worker import INSTALL_HINT, ray_available

        need(ray_available(), "env.workers", f"ray needs the ray package: {INSTALL_HINT}")
    need(
        cfg.env.ray_address is None or cfg.env.workers == "ray",
        "env.ray_address",
        "is for env.workers: ray; set that, or remove env.ray_address",
    )
    need(cfg.env.step_timeout > 0, "env.step_timeout", "must be > 0")
    need(cfg.env.reset_timeout > 0, "env.reset_timeout", "must be > 0")
    stopping = sorted(set(cfg.env.faults.kinds) & set(NEED_WORKERS)) if cfg.env.faults else []
    need(
        not stopping or cfg.env.workers,
        "env.faults.kinds",
        f"{', '.join(stopping)} would stop the run itself; they need env.workers: process or ray",
    )
    need(cfg.seed >= 0, "seed", "must be >= 0")
    if cfg.model.base == "tiny":
        from trajkit.policy.tiny import SIZES
        from trajkit.policy.tiny_vlm import VLM_SIZES

        sizes = VLM_SIZES if cfg.gui is not None else SIZES
        need(cfg.model.tiny_size in sizes, "model.tiny_size", f"must be one of {', '.join(sizes)}")
    from trajkit.data.formats import FORMAT_NAMES

    formats = ("auto", *FORMAT_NAMES)
    need(cfg.expert.format in formats, "expert.format", f"must be one of {', '.join(formats)}")
    need(cfg.expert.limit is None or cfg.expert.limit >= 0, "expert.limit", "must be >= 0")
    need(
        cfg.expert.source == "oracle" or bool(cfg.expert.paths),
        "expert.paths",
        "is empty; give expert data files, or expert.source: oracle",
    )
    need(cfg.rounds >= 0, "rounds", "must be >= 0")
    need(cfg.pairs.strategy in STRATEGIES, "pairs.strategy", f"must be one of {', '.join(STRATEGIES)}")
    need(cfg.pairs.extra_turns is None or cfg.pairs.extra_turns >= 0, "pairs.extra_turns", "must be >= 0")
    need(cfg.pairs.probe_tasks is None or cfg.pairs.probe_tasks >= 1, "pairs.probe_tasks", "must be >= 1")
    need(cfg.pairs.probe_steps is None or cfg.pairs.probe_steps >= 1, "pairs.probe_steps", "must be >= 1")
    need(cfg.pairs.probe_samples >= 1, "pairs.probe_samples", "must be >= 1")
    need(cfg.pairs.probe_temperature >= 0, "pairs.probe_temperature", "must be >= 0")
    need(0 <= cfg.pairs.margin < 1, "pairs.margin", "must be in [0, 1)")
    need(
        cfg.pairs.strategy != "step_mc" or cfg.gui is None,
        "pairs.strategy",
        "step_mc is for text agents (GUI episodes cannot be replayed to a step yet)",
    )
    need(
        cfg.explore.context_overflow in CONTEXT_OVERFLOW,
        "explore.context_overflow",
        f"must be one of {', '.join(CONTEXT_OVERFLOW)}",
    )
    for name, sec in (("explore", cfg.explore), ("eval", cfg.eval)):
        need(sec.batch_size >= 1, f"{name}.batch_size", "must be >= 1")
        need(sec.max_new_tokens >= 1, f"{name}.max_new_tokens", "must be >= 1")
        need(sec.limit is None or sec.limit >= 0, f"{name}.limit", "must be >= 0")
        need(sec.max_steps is None or sec.max_steps >= 1, f"{name}.max_steps", "must be >= 1")
    need(cfg.explore.n_samples >= 1, "explore.n_samples", "must be >= 1")
    need(cfg.explore.temperature >= 0, "explore.temperature", "must be >= 0")
    need(
        cfg.explore.n_samples == 1 or cfg.explore.temperature > 0,
        "explore.n_samples",
        "> 1 needs explore.temperature > 0 (greedy samples of one task are all the same)",
    )
    need(0 < cfg.explore.top_p <= 1, "explore.top_p", "must be in (0, 1]")
    need(cfg.explore.max_context >= 1, "explore.max_context", "must be >= 1")
    need(bool(cfg.eval.splits), "eval.splits", "is empty")
    for section, sub in (("sft", cfg.sft), ("dpo", cfg.dpo)):
        for key in RUN_OWNED:
            default = getattr(type(sub)(), key)
            need(
                getattr(sub, key) == default,
                f"{section}.{key}",
                "is set by the run (model.template, model.lora, seed)",
            )
    overrides = [
        ("dpo_later_rounds", DPOSettings, cfg.dpo_later_rounds),
        ("rft_sft", SFTSettings, cfg.rft_sft),
    ]
    if cfg.gui is not None:
        overrides += [
            ("gui.stage1", SFTSettings, cfg.gui.stage1),
            ("gui.stage2", SFTSettings, cfg.gui.stage2),
        ]
    checked = {}
    for key, cls, data in overrides:
        values = check_partial(cls, data, f"{where}: {key}")
        bad = sorted(set(values) & set(RUN_OWNED))
        need(
            not bad, f"{key}.{bad[0] if bad else ''}", "is set by the run (model.template, model.lora, seed)"
        )
        try:  # the merged settings must pass the trainer's own checks too
            dataclasses.replace(cls(), **values)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{where}: {key}: {err}") from None
        checked[key] = values
    cfg = dataclasses.replace(cfg, dpo_later_rounds=checked["dpo_later_rounds"], rft_sft=checked["rft_sft"])
    if cfg.gui is not None:
        gui = cfg.gui
        for mode in [gui.explore_mode, *gui.eval_modes]:
            need(mode in PLAN_MODES, "gui mode", f"{mode!r} is not one of {', '.join(PLAN_MODES)}")
        need(bool(gui.eval_modes), "gui.eval_modes", "is empty")
        need(gui.envs >= 1, "gui.envs", "must be >= 1")
        cfg.gui = dataclasses.replace(gui, stage1=checked["gui.stage1"], stage2=checked["gui.stage2"])
    if cfg.launch is not None:  # the config file now; this machine's devices when the run starts
        try:
            read_launch_config(cfg.launch, lora=cfg.model.lora is not None)
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None
    check_rollout(cfg, where)
    return cfg


def check_rollout(cfg: RunConfig, where: str) -> None:
    """The rollout section's values, and for `backend: vllm` whether the rollout venv has vLLM
    and can serve the model: refused now, before any training."""

    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise ConfigError(f"{where}: rollout.{key} {what}")

    ro, v = cfg.rollout, cfg.rollout.vllm
    need(ro.backend in ("hf", "vllm"), "backend", "must be hf or vllm")
    need(v.tensor_parallel >= 1, "vllm.tensor_parallel", "must be >= 1")
    need(v.data_parallel >= 1, "vllm.data_parallel", "must be >= 1")
    need(v.kv_cache_gb is None or v.kv_cache_gb > 0, "vllm.kv_cache_gb", "must be > 0")
    need(0 < v.gpu_memory_utilization <= 1, "vllm.gpu_memory_utilization", "must be in (0, 1]")
    need(v.start_timeout > 0, "vllm.start_timeout", "must be > 0")
    need(
        v.max_model_len is None or v.max_model_len >= cfg.explore.max_context,
        "vllm.max_model_len",
        f"must be >= explore.max_context ({cfg.explore.max_context}), the longest prompt + completion sent",
    )
    if ro.backend != "vllm":
        return
    need(cfg.gui is None, "backend", "vllm samples text policies only; GUI runs need rollout.backend: hf")
    from trajkit.policy.vllm_backend import VLLMError, check_servable, model_facts, probe

    if cfg.model.base == "tiny":
        from trajkit.policy.tiny import SIZES

        size = SIZES[cfg.model.tiny_size]
        facts, setting = {"head_dim": size.hidden_size // size.num_attention_heads}, "model.tiny_size"
    else:
        facts, setting = model_facts(cfg.model.base) or {}, "model.base"
    try:
        check_servable(facts, probe(v, facts.get("architectures")), setting)
    except VLLMError as err:
        raise ConfigError(f"{where}: {err}") from None


def run_config_from_dict(data: dict[str, Any], where: str) -> RunConfig:
    return check_run_config(from_dict(RunConfig, data, where=where), where)


def load_run_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """A run recipe from YAML, `--set key=value` overrides applied, every section checked."""
    data = apply_overrides(load_yaml(path), overrides or [])
    return run_config_from_dict(data, str(path))


def configs_dir() -> Path:
    """The project's `configs/` folder (recipes ship with the source checkout)."""
    return Path(__file__).resolve().parents[3] / "configs"


DEMO_RECIPES = {"text": "household_eto_tiny.yaml", "gui": "miniwob_eto_tiny.yaml"}


def demo_recipe_path(kind: str = "text") -> Path:
    path = configs_dir() / DEMO_RECIPES[kind]
    if not path.is_file():
        raise ConfigError(
            f"{path}: the demo recipe is missing; the demos read configs/ of the source checkout "
            "(or run `trajkit run --config RECIPE`)"
        )
    return path


def demo_config(
    run_dir: str = "runs/demo", overrides: list[str] | None = None, gui: bool = False
) -> RunConfig:
    """The built-in demo recipe (`trajkit demo [--gui]`), read from configs/, in `run_dir`."""
    path = demo_recipe_path("gui" if gui else "text")
    data = apply_overrides(load_yaml(path), overrides or [])
    data["run_dir"] = run_dir
    return run_config_from_dict(data, str(path))


def config_to_yaml(cfg: RunConfig) -> str:
    import yaml

    data = asdict(cfg)
    if data.get("gui") is None:
        data.pop("gui", None)  # text runs: the saved config reads as it always did
    if data["env"].get("faults") is None:
        data["env"].pop("faults", None)  # likewise for runs without injected faults
    if data["env"].get("ray_address") is None:
        data["env"].pop("ray_address", None)  # likewise for runs without a Ray cluster
    if data.get("report_to") == "none":
        data.pop("report_to")  # likewise: runs without a tracker keep their saved config
    if data.get("launch") is None:
        data.pop("launch", None)  # likewise: runs in one process
    if data.get("rollout") == asdict(RolloutSection()):
        data.pop("rollout")  # likewise: runs that sample with the HF backend
    return yaml.safe_dump(data, sort_keys=False)
