"""What differs between text agents and GUI agents in a run, in one object each.

The stage functions (`pipeline.stages`) are written once; where a text run (ETO's ReAct agent on a
text env) and a GUI run (AGUVIS's plan/code agent with a vision-language policy on MiniWoB++)
differ, they ask the run's `AgentKind`: which base model a tiny run builds, which SFT stages run
(one, or AGUVIS's grounding then planning), which sampler and rollout protocol a policy gets, under
which inference modes it is evaluated, how expert data is written for pairs, and which report is
drawn. A new kind of agent is a new class here plus a protocol in `rollout/`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from trajkit.config import ConfigError
from trajkit.data.schema import Trajectory
from trajkit.pipeline.config import RunConfig
from trajkit.train.sft import SFTSettings


@dataclasses.dataclass(frozen=True)
class SFTPlan:
    name: str  # stage folder
    settings: SFTSettings
    gui_stage: str | None = None  # AGUVIS stage: grounding | planning


class TextAgents:
    """ETO's ReAct text agents: one SFT stage, one generation per step, plain-text report."""

    vision = False

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg

    def sft_plan(self) -> list[SFTPlan]:
        return [SFTPlan("sft", self.cfg.sft)]

    def make_tiny(self, texts: list[str], out: Path, size: str, seed: int) -> None:
        from trajkit.policy.tiny import make_tiny_model

        make_tiny_model(texts, out, size=size, seed=seed)

    def oracle_kwargs(self, run_dir: Path) -> dict[str, Any]:
        return {}

    def env_kwargs(self, run_dir: Path) -> dict[str, Any]:
        return {}

    def rollout_width(self, batch_size: int) -> int:
        return batch_size

    def load_sampler(self, model: str, template: str | None, batch_size: int):
        if self.cfg.rollout.backend == "vllm":
            from trajkit.policy.vllm_backend import load_vllm_sampler

            # Rollouts send at most explore.max_context tokens (prompt + completion).
            context = self.cfg.explore.max_context
            return load_vllm_sampler(
                model, template, batch_size, self.cfg.rollout.vllm, context, self.cfg.seed
            )
        from trajkit.policy.backends import load_sampler

        return load_sampler(model, template, batch_size)

    def agent(self, renderer, mode: str | None, instruction: str | None, icl, icl_intro: bool = False):
        from trajkit.rollout.react import ReactAgent

        return ReactAgent(renderer, instruction=instruction, icl=icl, icl_intro=icl_intro)

    def explore_mode(self) -> str | None:
        return None

    def eval_modes(self) -> list[str | None]:
        return [None]

    def pair_expert(self, expert: list[Trajectory]) -> list[Trajectory]:
        return expert

    def summarize(self, evals: dict[str, dict]) -> dict[str, Any]:
        return {stage: dict(by_mode[None]) for stage, by_mode in evals.items()}

    def write_report(self, run_dir: Path, summary: dict[str, Any], pair_files: list[Path]) -> None:
        from trajkit.report import write_report

        write_report(run_dir, summary)


class GuiAgents(TextAgents):
    """AGUVIS GUI agents: grounding then planning SFT on a vision-language policy, plan/code turns
    under enforced or self plan, shared browsers, a report with screenshots of pairs."""

    vision = True

    def __init__(self, cfg: RunConfig):
        if cfg.gui is None:
            raise ConfigError("a GUI run needs a gui: section")
        super().__init__(cfg)
        self.gui = cfg.gui

    def sft_plan(self) -> list[SFTPlan]:
        # freeze_vision stays as the recipe says (default null: a pretrained encoder is frozen, as
        # AGUVIS; the tiny VLM's random one trains, else its screenshots would all look alike).
        def stage(overrides: dict[str, Any]) -> SFTSettings:
            return dataclasses.replace(self.cfg.sft, **overrides)

        grounding = (
            [SFTPlan("sft-stage1", stage(self.gui.stage1), "grounding")] if self.gui.grounding_stage else []
        )
        return [*grounding, SFTPlan("sft", stage(self.gui.stage2), "planning")]

    def make_tiny(self, texts: list[str], out: Path, size: str, seed: int) -> None:
        from trajkit.policy.vlm import make_tiny_vlm

        make_tiny_vlm(out, texts, size=size, seed=seed)

    def oracle_kwargs(self, run_dir: Path) -> dict[str, Any]:
        return {"image_dir": run_dir / "images" / "expert"}

    def env_kwargs(self, run_dir: Path) -> dict[str, Any]:
        # Screenshots go outside the stage folders (renamed when done); names are unique per episode.
        return {"screenshot_dir": str(run_dir / "images" / "rollouts")}

    def rollout_width(self, batch_size: int) -> int:
        return self.gui.envs  # one browser per live episode

    def load_sampler(self, model: str, template: str | None, batch_size: int):
        from trajkit.policy.vlm import load_vlm_sampler

        return load_vlm_sampler(model, template, batch_size)

    def agent(self, renderer, mode: str | None, instruction: str | None, icl, icl_intro: bool = False):
        from trajkit.rollout.aguvis import AguvisAgent

        return AguvisAgent(renderer, mode=mode or self.gui.explore_mode, max_images=self.gui.max_images)

    def explore_mode(self) -> str | None:
        return self.gui.explore_mode

    def eval_modes(self) -> list[str | None]:
        return list(self.gui.eval_modes)

    def pair_expert(self, expert: list[Trajectory]) -> list[Trajectory]:
        # GUI rollouts open with the system prompt the SFT stages trained with, and their plans
        # are Thought + Action (what enforced-plan exploration writes): the expert side matches.
        from trajkit.gui.prompts import with_default_system
        from trajkit.gui.samples import with_reasoning_level

        return [with_default_system(with_reasoning_level(t, "l2")) for t in expert]

    def summarize(self, evals: dict[str, dict]) -> dict[str, Any]:
        primary = self.gui.eval_modes[0]
        summary: dict[str, Any] = {stage: dict(by_mode[primary]) for stage, by_mode in evals.items()}
        summary["gui"] = {"primary_mode": primary, "modes": evals}
        return summary

    def write_report(self, run_dir: Path, summary: dict[str, Any], pair_files: list[Path]) -> None:
        from trajkit.report.gui import write_gui_report

        write_gui_report(run_dir, summary, pair_files, self.gui.report_examples)


def agent_kind(cfg: RunConfig) -> TextAgents:
    return GuiAgents(cfg) if cfg.gui is not None else TextAgents(cfg)
