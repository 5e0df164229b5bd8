"""The ETO round loop as resumable stages.

    model/ expert/ sft/ eval-sft/ round-1/{explore,pairs,dpo,eval}/ round-2/... report.md

Each stage works in `<name>.partial/` and is renamed to `<name>/` with a `DONE` marker when it
finishes, so a re-run skips finished stages; a half-done exploration resumes at the next
unfinished episode and half-done training resumes from its last checkpoint. The run folder holds
the config it was started with and a manifest (versions, seeds, git commit, split hashes).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trajkit.config import ConfigError, from_dict
from trajkit.data.schema import Trajectory
from trajkit.policy.models import LoraSpec


@dataclass
class EnvSection:
    name: str = "household"
    kwargs: dict[str, Any] = field(default_factory=dict)
    # Run each rollout env in its own process with per-call timeouts (real simulators: a crash or
    # hang then costs one episode). The built-in household world is safe and fast in-process.
    workers: bool = False
    step_timeout: float = 60.0
    reset_timeout: float = 300.0
    # Where rollouts take their first user turn from: "expert" (the expert data's, when all its
    # trajectories share one; training and evaluation prompts then cannot drift) or "env".
    instruction_from: str = "expert"


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


@dataclass
class ExploreSection:
    n_samples: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 96
    batch_size: int = 32
    limit: int | None = None  # train tasks explored per round (None: every expert task)
    max_steps: int | None = None  # None: each task's own step budget
    max_context: int = 4096


@dataclass
class PairsSection:
    strategy: str = "trajectory"
    extra_turns: int = 5


@dataclass
class EvalSection:
    splits: list[str] = field(default_factory=lambda: ["test_seen", "test_unseen"])
    limit: int | None = None
    max_new_tokens: int = 96
    batch_size: int = 32
    max_steps: int | None = None  # None: each task's own step budget
    allow_overlap: bool = False
    # Show one worked example episode before each test task, as ETO's evaluation does (envs that
    # provide `icl_turns(task)`); exploration never uses it, so pairs share the expert's prompt.
    icl: bool = False


@dataclass
class GuiSection:
    """A GUI-agent run (MiniWoB++ with a vision-language policy), AGUVIS SFT then ETO.

    `model.base: tiny` builds a tiny Qwen2-VL of `model.tiny_size` (xs, s) from the expert corpus;
    else a Qwen2-VL-family folder or hub id. `sft` holds what both SFT stages share; `stage1` /
    `stage2` override it for grounding and planning.
    """

    stage1: dict[str, Any] = field(default_factory=dict)  # SFTRecipe fields, gui_stage grounding
    stage2: dict[str, Any] = field(default_factory=dict)  # SFTRecipe fields, gui_stage planning
    explore_mode: str = "enforced_plan"  # inference mode of exploration
    eval_modes: list[str] = field(default_factory=lambda: ["enforced_plan", "self_plan"])
    max_images: int | None = None  # screenshots kept in a rollout prompt (most recent); None: all
    envs: int = 4  # browsers side by side (each ~0.5 GiB); the generation batch is at most this
    report_examples: int = 4  # chosen-vs-rejected screenshots drawn in the report


@dataclass
class RunConfig:
    run_dir: str
    seed: int = 0
    rounds: int = 2
    env: EnvSection = field(default_factory=EnvSection)
    model: ModelSection = field(default_factory=ModelSection)
    expert: ExpertSection = field(default_factory=ExpertSection)
    sft: dict[str, Any] = field(default_factory=dict)  # SFTRecipe fields
    explore: ExploreSection = field(default_factory=ExploreSection)
    pairs: PairsSection = field(default_factory=PairsSection)
    dpo: dict[str, Any] = field(default_factory=dict)  # DPORecipe fields for round 1
    dpo_later_rounds: dict[str, Any] = field(default_factory=dict)  # overrides from round 2 on
    dpo_reference: str = "round_start"  # round_start (ETO) or sft
    rft: bool = True  # baseline: SFT continued on the SFT policy's own successful explorations
    rft_sft: dict[str, Any] = field(default_factory=dict)  # overrides of `sft` for that baseline
    eval: EvalSection = field(default_factory=EvalSection)
    gui: GuiSection | None = None  # set: a GUI-agent run (see GuiSection)


def demo_config(run_dir: str = "runs/demo") -> RunConfig:
    """The built-in demo: the whole ETO loop on the household world with a tiny model, sized for a
    2-core CPU. `configs/household_eto_tiny.yaml` spells out the same recipe (a test keeps them equal).
    """
    return RunConfig(
        run_dir=run_dir,
        rounds=2,
        # Sized so a from-scratch model learns the task in five CPU minutes: one wording per
        # situation, rooms with at most two receptacles of a type, and a first turn without the
        # command list (a third of every episode's tokens otherwise).
        env=EnvSection(kwargs={"expert_phrasing": "plain", "layout": "compact", "instruction": "brief"}),
        model=ModelSection(tiny_size="xs"),
        expert=ExpertSection(limit=1000),
        # Small batches at a high rate, held at no less than a tenth of it: 4500 optimizer steps.
        sft={
            "epochs": 9,
            "learning_rate": 5e-3,
            "lr_scheduler": "cosine_with_min_lr",
            "warmup": 30,
            "batch_size": 2,
            "logging_steps": 500,
            "save_steps": 1000,
            "extra_args": {"adam_beta2": 0.95, "lr_scheduler_kwargs": {"min_lr_rate": 0.1}},
        },
        explore=ExploreSection(limit=64, batch_size=32, temperature=1.0, max_new_tokens=96, max_steps=20),
        pairs=PairsSection(strategy="trajectory", extra_turns=5),
        dpo={"beta": 0.1, "learning_rate": 5e-5, "epochs": 2, "batch_size": 4, "logging_steps": 5},
        dpo_later_rounds={"beta": 0.5, "learning_rate": 2.5e-5},
        # RFT continues from the SFT policy on its own successes, gently (the SFT rate undoes it).
        rft_sft={"epochs": 2, "learning_rate": 5e-4, "warmup": 0},
        eval=EvalSection(limit=64, batch_size=32, max_new_tokens=96, max_steps=20),
    )


GUI_DEMO_TASKS = ["click-test", "click-button", "focus-text", "enter-text", "click-tab"]


def gui_demo_config(run_dir: str = "runs/demo-gui") -> RunConfig:
    """The built-in GUI demo (`trajkit demo --gui`): AGUVIS two-stage SFT then one ETO round on five
    MiniWoB++ tasks with a tiny Qwen2-VL, sized for a 2-core CPU. `configs/miniwob_eto_tiny.yaml`
    spells out the same recipe (a test keeps them equal)."""
    return RunConfig(
        run_dir=run_dir,
        rounds=1,
        env=EnvSection(
            name="miniwob",
            kwargs={"tasks": list(GUI_DEMO_TASKS), "n_train": 16, "n_test": 4},
            instruction_from="env",
        ),
        model=ModelSection(base="tiny", tiny_size="xs"),
        expert=ExpertSection(source="oracle"),
        sft={"batch_size": 8, "logging_steps": 10, "save_steps": 500, "max_length": 2048},
        explore=ExploreSection(
            n_samples=1, temperature=1.0, max_new_tokens=64, max_steps=3, max_context=2048
        ),
        pairs=PairsSection(strategy="trajectory", extra_turns=2),
        dpo={"beta": 0.1, "learning_rate": 5e-5, "epochs": 2, "batch_size": 4, "max_length": 2048},
        dpo_later_rounds={"beta": 0.5, "learning_rate": 2.5e-5},
        rft=False,
        eval=EvalSection(splits=["test"], max_new_tokens=64, max_steps=3),
        gui=GuiSection(
            stage1={"epochs": 4, "learning_rate": 3e-3, "pack_max_turns": 16},
            stage2={
                "epochs": 10,
                "learning_rate": 3e-3,
                "batch_size": 4,
                "reasoning_mixture": {"l2": 0.6, "none": 0.4},
            },
            explore_mode="enforced_plan",
            eval_modes=["enforced_plan", "self_plan"],
            max_images=2,
            envs=8,
            report_examples=4,
        ),
    )


def load_run_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    from trajkit.config import apply_overrides, load_yaml

    data = apply_overrides(load_yaml(path), overrides or [])
    cfg = from_dict(RunConfig, data, where=str(path))
    if cfg.dpo_reference not in ("round_start", "sft"):
        raise ConfigError(f"{path}: dpo_reference must be round_start or sft")
    if cfg.env.instruction_from not in ("expert", "env"):
        raise ConfigError(f"{path}: env.instruction_from must be expert or env")
    check_gui(cfg, str(path))
    return cfg


def check_gui(cfg: RunConfig, where: str) -> None:
    from trajkit.gui.rollout import PLAN_MODES

    if cfg.gui is None:
        return
    for mode in [cfg.gui.explore_mode, *cfg.gui.eval_modes]:
        if mode not in PLAN_MODES:
            raise ConfigError(f"{where}: gui mode {mode!r} is not one of {', '.join(PLAN_MODES)}")
    if not cfg.gui.eval_modes:
        raise ConfigError(f"{where}: gui.eval_modes is empty")
    if cfg.gui.envs < 1:
        raise ConfigError(f"{where}: gui.envs must be >= 1")


# --- stages ---------------------------------------------------------------------------------------
class Stage:
    def __init__(self, run_dir: Path, name: str):
        self.name = name
        self.final = run_dir / name
        self.partial = run_dir / f"{name}.partial"

    @property
    def done(self) -> bool:
        return (self.final / "DONE").is_file()

    def begin(self) -> Path:
        if self.final.exists() and not self.done:
            shutil.rmtree(self.final)  # an unfinished final folder cannot happen by rename; clear it
        self.partial.mkdir(parents=True, exist_ok=True)
        return self.partial

    def commit(self, summary: dict[str, Any] | None = None) -> None:
        (self.partial / "DONE").write_text(json.dumps(summary or {}, indent=2) + "\n")
        os.replace(self.partial, self.final)


def _sha(items: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(items)).encode()).hexdigest()[:16]


def task_identity(task) -> str:
    """What makes two tasks the same episode: the spec (split names aside)."""
    return json.dumps(task.spec, sort_keys=True) if task.spec else task.id


def split_overlap(env, train_split: str, test_split: str) -> list[str]:
    train = {task_identity(t) for t in env.tasks(train_split)}
    return [t.id for t in env.tasks(test_split) if task_identity(t) in train]


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    # Env packages too: their versions decide the text and scores the agent sees.
    for pkg in (
        "trajkit",
        "torch",
        "transformers",
        "trl",
        "peft",
        "accelerate",
        "datasets",
        "tokenizers",
        "scienceworld",
        "alfworld",
        "textworld",
        "miniwob",
        "playwright",
    ):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


# --- the run --------------------------------------------------------------------------------------
class Run:
    def __init__(self, cfg: RunConfig, log: Callable[[str], None] | None = None):
        self.cfg = cfg
        self.dir = Path(cfg.run_dir)
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self._env = None
        self._gui_envs: list | None = None

    # environments
    def env(self):
        if self._env is None:
            from trajkit.envs.registry import make_env

            self._env = make_env(self.cfg.env.name, **self.cfg.env.kwargs)
        return self._env

    def fresh_envs(self, n: int, extra_kwargs: dict[str, Any] | None = None):
        from trajkit.envs.registry import make_env

        section = self.cfg.env
        kwargs = {**section.kwargs, **(extra_kwargs or {})}
        if not section.workers:
            return [make_env(section.name, **kwargs) for _ in range(n)]
        from trajkit.envs.worker import EnvWorker

        return [
            EnvWorker(section.name, kwargs, section.step_timeout, section.reset_timeout) for _ in range(n)
        ]

    def instruction(self) -> str | None:
        """The expert data's first user turn when every expert trajectory opens with the same one
        (and the run asks for it); else None, so rollouts use the env's own instruction."""
        if self.cfg.env.instruction_from != "expert":
            return None
        path = Stage(self.dir, "expert").final / "expert.jsonl"
        if not path.is_file():
            return None
        firsts = {traj.turns[0].text for traj in _read_jsonl(path) if traj.turns}
        return firsts.pop() if len(firsts) == 1 else None

    def _icl_source(self):
        env = self.env()
        if not hasattr(env, "icl_turns"):
            raise ConfigError(f"eval.icl: env {self.cfg.env.name!r} has no in-context example")
        return env.icl_turns

    def _prepare_dir(self, config_text: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        saved = self.dir / "config.yaml"
        if saved.exists() and saved.read_text() != config_text:
            raise ConfigError(
                f"{saved}: this run folder was started with a different config; "
                "use a new run_dir (or restore the original config) so finished stages stay valid"
            )
        _write_if_changed(saved, config_text)

    def write_manifest(self) -> None:
        if (self.dir / "manifest.json").is_file():
            return  # written when the run started; a resume keeps it as it was
        env = self.env()
        splits = ["train", *self.cfg.eval.splits]
        manifest = {
            "versions": _versions(),
            "git_commit": _git_commit(),
            "seed": self.cfg.seed,
            "env": {"name": env.name, "version": env.version},
            "split_hashes": {s: _sha([task_identity(t) for t in env.tasks(s)]) for s in splits},
            "split_sizes": {s: len(env.tasks(s)) for s in splits},
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (self.dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")

    def check_splits(self) -> None:
        env = self.env()
        for split in self.cfg.eval.splits:
            overlap = split_overlap(env, "train", split)
            if overlap and not self.cfg.eval.allow_overlap:
                raise ConfigError(
                    f"{len(overlap)} {split} task(s) are also training tasks (e.g. {overlap[0]}); "
                    "evaluation would be dishonest. Set eval.allow_overlap: true to proceed anyway"
                )

    # stages
    def expert_stage(self) -> Path:
        stage = Stage(self.dir, "expert")
        path = stage.final / "expert.jsonl"
        if stage.done:
            return path
        work = stage.begin()
        if self.cfg.expert.source == "oracle":
            from trajkit.envs.registry import get_oracle

            env = self.env()
            oracle = get_oracle(self.cfg.env.name)
            tasks = env.tasks("train")[: self.cfg.expert.limit]
            trajs = [oracle(env, task, self.cfg.seed) for task in tasks]
            failed = [t.task_id for t in trajs if not t.success]
            if failed:  # an expert that did not solve its task teaches nothing good
                self.log(f"[expert] dropped {len(failed)} unsolved oracle episodes (e.g. {failed[0]})")
            trajs = [t for t in trajs if t.success]
        else:
            from trajkit.data.io import load_trajectories

            trajs = [
                t for p in self.cfg.expert.paths for t in load_trajectories(p, format=self.cfg.expert.format)
            ]
            trajs = trajs[: self.cfg.expert.limit]
            # Published expert data names tasks its own way (ALFWorld: by game file); an env that
            # can map a record to its task id does so, so exploration and pairs find the tasks.
            resolve = getattr(self.env(), "expert_task_id", None)
            if resolve is not None:
                for t in trajs:
                    t.task_id = resolve(t) or t.task_id
        _write_jsonl(work / "expert.jsonl", trajs)
        stage.commit({"trajectories": len(trajs), "success": sum(bool(t.success) for t in trajs)})
        self.log(f"[expert] {len(trajs)} expert trajectories")
        return path

    def explore_tasks(self, expert_path: Path) -> list:
        """The train tasks explored each round: those with expert data, up to `explore.limit`."""
        expert_ids = {t.task_id for t in _read_jsonl(expert_path)}
        return [t for t in self.env().tasks("train") if t.id in expert_ids][: self.cfg.explore.limit]

    def explore_sampling(self, round_number: int):
        from trajkit.policy.backends import Sampling

        ex = self.cfg.explore
        return Sampling(
            temperature=ex.temperature,
            top_p=ex.top_p,
            max_new_tokens=ex.max_new_tokens,
            seed=self.cfg.seed + round_number,
        )

    def model_stage(self, expert_path: Path, vision: bool = False) -> str:
        """The base model: the configured one, or a tiny one (a VLM for GUI runs) built on the spot."""
        if self.cfg.model.base != "tiny":
            return self.cfg.model.base
        stage = Stage(self.dir, "model")
        if not stage.done:
            work = stage.begin()
            texts = [t.text for traj in _read_jsonl(expert_path) for t in traj.turns]
            size, seed = self.cfg.model.tiny_size, self.cfg.seed
            if vision:
                from trajkit.policy.vlm import make_tiny_vlm

                make_tiny_vlm(work / "model", texts, size=size, seed=seed)
                stage.commit({"size": size, "vision": True})
            else:
                from trajkit.policy.tiny import make_tiny_model

                make_tiny_model(texts, work / "model", size=size, seed=seed)
                stage.commit({"size": size})
            self.log(f"[model] tiny{' VLM' if vision else ''}-{size} built from the expert corpus")
        return str(stage.final / "model")

    def sft_stage(
        self,
        base: str,
        expert_path: Path,
        name: str = "sft",
        gui_stage: str | None = None,
        extra: dict | None = None,
    ) -> str:
        """SFT on the expert data; with `gui_stage` (grounding | planning) an AGUVIS stage on a
        vision-language model, vision tower frozen, `extra` on top of the `sft` section."""
        stage = Stage(self.dir, name)
        if not stage.done:
            from trajkit.train.sft import SFTRecipe, run_sft

            work = stage.begin()
            fields = {"template": self.cfg.model.template, "lora": self.cfg.model.lora, "seed": self.cfg.seed}
            gui = {} if gui_stage is None else {"gui_stage": gui_stage}
            recipe = from_dict(
                SFTRecipe,
                {
                    **fields,
                    **({"freeze_vision": True} if gui else {}),
                    **self.cfg.sft,
                    **(extra or {}),
                    **gui,
                    "model": base,
                    "data": [str(expert_path)],
                    "output_dir": str(work),
                },
                where=f"gui.{name}" if gui else name,
            )
            t0 = time.perf_counter()
            run_sft(recipe)
            stage.commit({"seconds": round(time.perf_counter() - t0, 1), **gui})
            self.log(f"[{name}] {gui_stage + ' ' if gui else ''}done in {time.perf_counter() - t0:.0f}s")
        return str(stage.final / "model")

    def rollout_stage(
        self,
        name: str,
        model_path: str,
        tasks,
        sampling,
        batch_size: int,
        n_samples: int,
        policy_id: str,
        max_steps: int | None,
        icl: bool = False,
    ) -> list[Trajectory]:
        from trajkit.rollout import RolloutConfig, run_rollouts

        stage = Stage(self.dir, name)
        out_name = "rollouts.jsonl"
        if stage.done:
            return _read_jsonl(stage.final / out_name)
        work = stage.begin()
        from trajkit.policy.backends import load_sampler

        backend, renderer = load_sampler(model_path, self.cfg.model.template, batch_size)
        cfg = RolloutConfig(
            n_samples=n_samples,
            sampling=sampling,
            batch_size=batch_size,
            max_steps=max_steps,
            max_context=self.cfg.explore.max_context,
            policy_id=policy_id,
            instruction=self.instruction(),
            icl=self._icl_source() if icl else None,
        )
        t0 = time.perf_counter()
        last = [0.0]

        def progress(msg: str) -> None:
            if time.perf_counter() - last[0] > 10:
                last[0] = time.perf_counter()
                self.log(f"[{name}] {msg}")

        envs = self.fresh_envs(min(batch_size, max(1, len(tasks) * n_samples)))
        try:
            trajs = run_rollouts(tasks, envs, backend, renderer, work / out_name, cfg, progress)
        finally:
            for env in envs:
                env.close()
        seconds = time.perf_counter() - t0
        steps = sum(t.metadata.get("steps", 0) for t in trajs)
        stage.commit({"episodes": len(trajs), "seconds": round(seconds, 1), "env_steps": steps})
        return trajs

    def eval_stage(self, name: str, model_path: str, policy_id: str) -> dict[str, Any]:
        from trajkit.evaluate import summarize
        from trajkit.policy.backends import Sampling

        results: dict[str, Any] = {}
        ev = self.cfg.eval
        for split in ev.splits:
            tasks = self.env().tasks(split)[: ev.limit]
            trajs = self.rollout_stage(
                f"{name}/{split}",
                model_path,
                tasks,
                Sampling(temperature=0, max_new_tokens=ev.max_new_tokens),
                ev.batch_size,
                1,
                policy_id,
                ev.max_steps,
                icl=ev.icl,
            )
            results[split] = summarize(trajs)
            self.log(
                f"[{name}] {split}: success {results[split]['success_rate']:.3f} "
                f"(n={results[split]['n']}, CI95 {results[split]['success_ci95']})"
            )
        _write_if_changed(self.dir / name / "metrics.json", json.dumps(results, indent=2) + "\n")
        return results

    def rft_stage(self, sft_model: str, rollouts: list[Trajectory]) -> str | None:
        """Rejection-sampling fine-tuning baseline: the SFT policy trained on its own successes."""
        from trajkit.train.sft import SFTRecipe, run_sft

        stage = Stage(self.dir, "rft")
        if stage.done:
            model = stage.final / "model"
            return str(model) if model.is_dir() else None
        work = stage.begin()
        successes = [t for t in rollouts if t.success]
        if not successes:
            stage.commit({"skipped": "no successful explorations"})
            self.log("[rft] no successful explorations: baseline skipped")
            return None
        _write_jsonl(work / "successes.jsonl", successes)
        fields = {"template": self.cfg.model.template, "lora": self.cfg.model.lora, "seed": self.cfg.seed}
        recipe = from_dict(
            SFTRecipe,
            {
                **fields,
                **self.cfg.sft,
                **self.cfg.rft_sft,
                "model": sft_model,
                "data": [str(work / "successes.jsonl")],
                "output_dir": str(work),
            },
            where="rft_sft",
        )
        run_sft(recipe)
        stage.commit({"successes": len(successes), "of": len(rollouts)})
        self.log(f"[rft] trained on {len(successes)}/{len(rollouts)} successful explorations")
        return str(stage.final / "model")

    def pairs_stage(self, round_no: int, expert_path: Path, rollouts: list[Trajectory]) -> Path:
        from trajkit.pairs import build_pairs

        stage = Stage(self.dir, f"round-{round_no}/pairs")
        path = stage.final / "pairs.jsonl"
        if stage.done:
            return path
        work = stage.begin()
        expert = _read_jsonl(expert_path)
        if self.cfg.gui is not None:
            # GUI rollouts open with the system prompt the SFT stages trained with.
            # Their plans are Thought + Action (what enforced-plan exploration writes), so the
            # expert side is written at that level too.
            from trajkit.gui.prompts import with_default_system
            from trajkit.train.vlm import with_reasoning_level

            expert = [with_default_system(with_reasoning_level(t, "l2")) for t in expert]
        result = build_pairs(rollouts, expert, self.cfg.pairs.strategy, self.cfg.pairs.extra_turns)
        with (work / "pairs.jsonl").open("w", encoding="utf-8") as fh:
            for pair in result.pairs:
                fh.write(json.dumps(pair, ensure_ascii=False) + "\n")
        stage.commit(result.counts())
        self.log(f"[round-{round_no}/pairs] {json.dumps(result.counts())}")
        return path

    def dpo_stage(self, round_no: int, policy: str, sft_model: str, pairs_path: Path) -> str:
        from trajkit.train.dpo import DPORecipe, load_pairs, run_dpo

        stage = Stage(self.dir, f"round-{round_no}/dpo")
        if stage.done:
            return str(stage.final / "model")
        if not load_pairs([str(pairs_path)]):
            self.log(f"[round-{round_no}/dpo] no pairs: the policy is kept as it is")
            stage.begin()
            stage.commit({"skipped": "no pairs"})
            return policy
        work = stage.begin()
        settings = {**self.cfg.dpo, **(self.cfg.dpo_later_rounds if round_no > 1 else {})}
        ref = sft_model if self.cfg.dpo_reference == "sft" else None
        fields = {"template": self.cfg.model.template, "lora": self.cfg.model.lora, "seed": self.cfg.seed}
        recipe = from_dict(
            DPORecipe,
            {
                **fields,
                **settings,
                "model": policy,
                "ref_model": ref,
                "pairs": [str(pairs_path)],
                "output_dir": str(work),
            },
            where=f"dpo (round {round_no})",
        )
        t0 = time.perf_counter()
        run_dpo(recipe)
        stage.commit(
            {
                "seconds": round(time.perf_counter() - t0, 1),
                "beta": recipe.beta,
                "learning_rate": recipe.learning_rate,
            }
        )
        self.log(f"[round-{round_no}/dpo] done in {time.perf_counter() - t0:.0f}s")
        if (stage.final / "model").is_dir():
            return str(stage.final / "model")
        return policy

    def execute(self, config_text: str) -> dict[str, Any]:
        if self.cfg.gui is not None:
            return self.execute_gui(config_text)
        try:
            return self._execute_text(config_text)
        finally:
            if self._env is not None:  # a simulator (a JVM, a browser) must not outlive the run
                self._env.close()
                self._env = None

    def _execute_text(self, config_text: str) -> dict[str, Any]:

        self._prepare_dir(config_text)
        self.check_splits()
        self.write_manifest()
        expert_path = self.expert_stage()
        base = self.model_stage(expert_path)
        sft_model = self.sft_stage(base, expert_path)
        summary: dict[str, Any] = {"sft": self.eval_stage("eval-sft", sft_model, "sft")}
        policy = sft_model
        train_tasks = self.explore_tasks(expert_path)
        ex = self.cfg.explore
        for r in range(1, self.cfg.rounds + 1):
            rollouts = self.rollout_stage(
                f"round-{r}/explore",
                policy,
                train_tasks,
                self.explore_sampling(r),
                ex.batch_size,
                ex.n_samples,
                f"round-{r - 1}" if r > 1 else "sft",
                ex.max_steps,
            )
            if r == 1 and self.cfg.rft:
                rft_model = self.rft_stage(sft_model, rollouts)
                if rft_model is not None:
                    summary["rft"] = self.eval_stage("eval-rft", rft_model, "rft")
            pairs_path = self.pairs_stage(r, expert_path, rollouts)
            policy = self.dpo_stage(r, policy, sft_model, pairs_path)
            summary[f"round-{r}"] = self.eval_stage(f"round-{r}/eval", policy, f"round-{r}")
            summary[f"round-{r}"]["pairs"] = json.loads((self.dir / f"round-{r}/pairs/DONE").read_text())
        from trajkit.report import write_report

        saved = self.dir / "summary.json"
        if not (saved.is_file() and json.loads(saved.read_text()) == summary):
            write_report(self.dir, summary)  # a re-run of a finished run rewrites nothing
        return summary

    # --- GUI agents ------------------------------------------------------------------------------
    def gui_expert_stage(self) -> Path:
        """Oracle trajectories on train tasks, screenshots kept under `images/expert/`."""
        stage = Stage(self.dir, "expert")
        path = stage.final / "expert.jsonl"
        if stage.done:
            return path
        if self.cfg.expert.source != "oracle":
            return self.expert_stage()
        from trajkit.envs.registry import get_oracle

        work = stage.begin()
        env = self.env()
        oracle = get_oracle(self.cfg.env.name)
        tasks = env.tasks("train")[: self.cfg.expert.limit]
        t0 = time.perf_counter()
        try:
            trajs = [oracle(env, t, self.cfg.seed, image_dir=self.dir / "images" / "expert") for t in tasks]
        finally:
            env.close()
        good = [t for t in trajs if t.success]
        _write_jsonl(work / "expert.jsonl", good)
        stage.commit(
            {
                "trajectories": len(good),
                "failed": len(trajs) - len(good),
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
        self.log(f"[expert] {len(good)}/{len(trajs)} oracle episodes solved")
        return path

    def gui_rollout_stage(
        self,
        name: str,
        model_path: str,
        tasks,
        sampling,
        n_samples: int,
        policy_id: str,
        max_steps,
        mode: str,
    ) -> list[Trajectory]:
        from trajkit.gui.rollout import GuiRolloutConfig, run_gui_rollouts

        stage = Stage(self.dir, name)
        out_name = "rollouts.jsonl"
        if stage.done:
            return _read_jsonl(stage.final / out_name)
        work = stage.begin()
        from trajkit.policy.vlm import load_vlm_sampler

        gui = self.cfg.gui
        assert gui is not None
        n_envs = min(gui.envs, max(1, len(tasks) * n_samples))
        backend, renderer = load_vlm_sampler(model_path, self.cfg.model.template, n_envs)
        cfg = GuiRolloutConfig(
            n_samples=n_samples,
            sampling=sampling,
            batch_size=n_envs,
            max_steps=max_steps,
            max_context=self.cfg.explore.max_context,
            policy_id=policy_id,
            mode=mode,
            max_images=gui.max_images,
        )
        t0 = time.perf_counter()
        last = [0.0]

        def progress(msg: str) -> None:
            if time.perf_counter() - last[0] > 10:
                last[0] = time.perf_counter()
                self.log(f"[{name}] {msg}")

        envs = self.gui_envs()[:n_envs]
        trajs = run_gui_rollouts(tasks, envs, backend, renderer, work / out_name, cfg, progress)
        seconds = time.perf_counter() - t0
        steps = sum(t.metadata.get("steps", 0) for t in trajs)
        stage.commit({"episodes": len(trajs), "seconds": round(seconds, 1), "env_steps": steps, "mode": mode})
        return trajs

    def gui_envs(self) -> list:
        """The run's browsers, started once and shared by every rollout stage (a browser start
        costs seconds). Screenshots go outside the stage folders (renamed when done) and outlive
        the envs; file names are unique per episode."""
        if self._gui_envs is None:
            assert self.cfg.gui is not None
            shots = {"screenshot_dir": str(self.dir / "images" / "rollouts")}
            self._gui_envs = self.fresh_envs(self.cfg.gui.envs, shots)
        return self._gui_envs

    def close_gui_envs(self) -> None:
        envs, self._gui_envs = self._gui_envs or [], None
        for env in envs:
            env.close()

    def gui_eval_stage(self, name: str, model_path: str, policy_id: str) -> dict[str, Any]:
        """{mode: {split: metrics}} for every eval mode, the same checkpoint under each."""
        from trajkit.evaluate import summarize
        from trajkit.policy.backends import Sampling

        gui = self.cfg.gui
        assert gui is not None
        ev = self.cfg.eval
        results: dict[str, Any] = {}
        for mode in gui.eval_modes:
            results[mode] = {}
            for split in ev.splits:
                tasks = self.env().tasks(split)[: ev.limit]
                trajs = self.gui_rollout_stage(
                    f"{name}/{mode}/{split}",
                    model_path,
                    tasks,
                    Sampling(temperature=0, max_new_tokens=ev.max_new_tokens),
                    1,
                    f"{policy_id}-{mode}",
                    ev.max_steps,
                    mode,
                )
                results[mode][split] = summarize(trajs)
                self.log(
                    f"[{name}] {mode} {split}: success {results[mode][split]['success_rate']:.3f} "
                    f"(n={results[mode][split]['n']})"
                )
        _write_if_changed(self.dir / name / "metrics.json", json.dumps(results, indent=2) + "\n")
        return results

    def execute_gui(self, config_text: str) -> dict[str, Any]:
        try:
            return self._execute_gui(config_text)
        finally:
            self.close_gui_envs()

    def _execute_gui(self, config_text: str) -> dict[str, Any]:

        gui = self.cfg.gui
        assert gui is not None
        check_gui(self.cfg, "config")
        self._prepare_dir(config_text)
        self.check_splits()
        self.write_manifest()
        expert_path = self.gui_expert_stage()
        base = self.model_stage(expert_path, vision=True)
        stage1 = self.sft_stage(base, expert_path, "sft-stage1", "grounding", gui.stage1)
        sft_model = self.sft_stage(stage1, expert_path, "sft", "planning", gui.stage2)
        modes: dict[str, Any] = {"sft": self.gui_eval_stage("eval-sft", sft_model, "sft")}
        primary = gui.eval_modes[0]
        summary: dict[str, Any] = {"sft": dict(modes["sft"][primary])}
        policy = sft_model
        train_tasks = self.explore_tasks(expert_path)
        ex = self.cfg.explore
        pair_files = []
        for r in range(1, self.cfg.rounds + 1):
            rollouts = self.gui_rollout_stage(
                f"round-{r}/explore",
                policy,
                train_tasks,
                self.explore_sampling(r),
                ex.n_samples,
                f"round-{r - 1}" if r > 1 else "sft",
                ex.max_steps,
                gui.explore_mode,
            )
            pairs_path = self.pairs_stage(r, expert_path, rollouts)
            pair_files.append(pairs_path)
            policy = self.dpo_stage(r, policy, sft_model, pairs_path)
            modes[f"round-{r}"] = self.gui_eval_stage(f"round-{r}/eval", policy, f"round-{r}")
            summary[f"round-{r}"] = dict(modes[f"round-{r}"][primary])
            summary[f"round-{r}"]["pairs"] = json.loads((self.dir / f"round-{r}/pairs/DONE").read_text())
        summary["gui"] = {"primary_mode": primary, "modes": modes}
        from trajkit.gui.report import write_gui_report

        saved = self.dir / "summary.json"
        if not (saved.is_file() and json.loads(saved.read_text()) == summary):
            write_gui_report(self.dir, summary, pair_files, gui.report_examples)
        return summary


def _write_if_changed(path: Path, text: str) -> None:
    if not (path.is_file() and path.read_text() == text):
        path.write_text(text)


def _write_jsonl(path: Path, trajs: list[Trajectory]) -> None:
    from trajkit.data.io import write_trajectories

    write_trajectories(trajs, path, format="trajkit")


def _read_jsonl(path: Path) -> list[Trajectory]:
    from trajkit.data.io import load_trajectories

    return load_trajectories(str(path), format="trajkit")


def config_to_yaml(cfg: RunConfig) -> str:
    import yaml

    data = asdict(cfg)
    if data.get("gui") is None:
        data.pop("gui", None)  # text runs: the saved config reads as it always did
    return yaml.safe_dump(data, sort_keys=False)
