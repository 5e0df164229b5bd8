"""ETO for GUI agents: plan-mode rollouts (pinned with a scripted backend), GUI pairs, masked DPO
of a tiny vision-language policy, and a small end-to-end MiniWoB++ run with its report."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from trajkit.data.schema import AGENT, OBSERVATION, SYSTEM, TASK, Trajectory, Turn
from trajkit.envs.base import Observation, StepResult, Task
from trajkit.gui.tokens import DIFF_MARKER, RECIPIENT
from trajkit.pairs import build_pairs
from trajkit.policy.backends import Sampling
from trajkit.render import IMAGE_PAD, Renderer
from trajkit.rollout import RolloutConfig, run_rollouts
from trajkit.rollout.aguvis import AguvisAgent, cap_images

REPO = Path(__file__).resolve().parents[1]


def screenshot(path: Path, x: float, y: float, color=(40, 70, 220)) -> str:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (160, 210), (245, 245, 245))
    ImageDraw.Draw(img).rectangle([x * 160 - 12, y * 210 - 8, x * 160 + 12, y * 210 + 8], fill=color)
    img.save(path)
    return str(path)


class PageEnv:
    """A two-step GUI task in-process: click the box, then anything; reward 1 when the first click
    hit the box. Screenshots are real PNGs."""

    name = "fakegui"
    version = "fakegui==0"
    instruction = "unused"

    def __init__(self, folder: Path):
        self.folder = folder
        self.actions: list[str] = []
        self.n = 0

    def reset(self, task: Task) -> Observation:
        self.steps, self.hit = 0, False
        self.target = task.spec["box"]
        return Observation("Click the box.", self._shot(), instruction="Click the box.")

    def _shot(self) -> str:
        self.n += 1
        return screenshot(self.folder / f"{id(self)}_{self.n}.png", *self.target)

    def step(self, text: str) -> StepResult:
        self.actions.append(text)
        self.steps += 1
        if self.steps == 1:
            self.hit = "x=0.5" in text
        done = self.steps >= 2
        reward = 1.0 if done and self.hit else 0.0
        return StepResult(Observation("Click the box.", self._shot()), reward, done, {"won": reward > 0})

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def tokenizer():
    from trajkit.policy.vlm import DEFAULT_CORPUS, build_vlm_tokenizer

    return build_vlm_tokenizer(list(DEFAULT_CORPUS) * 4, 1024)


class ScriptedBackend:
    """Answers by what the prompt ends with: a forced `all` plan, a forced `os` turn, or (self
    plan) the recipient choice `os` at step 1 and `all` at step 2 of each episode."""

    def __init__(self, renderer: Renderer):
        self.r = renderer
        self.calls: list[dict] = []
        enc = renderer.encode
        self.forced_all = enc("all\nThought:")
        self.forced_os = enc("os\n")
        self.header = enc(f"<|im_start|>assistant{RECIPIENT}")
        self.im_end = enc("<|im_end|>")
        self.diff = enc(DIFF_MARKER)

    def generate(self, prompts, sampling, seeds, keys=None, images=None):
        out = []
        for prompt, imgs in zip(prompts, images, strict=True):
            self.calls.append({"prompt": list(prompt), "images": list(imgs)})
            pads = prompt.count(self.r.encode(IMAGE_PAD)[0])
            assert pads == 4 * len(imgs), "every image in the prompt comes with its pads"
            enc = self.r.encode
            if prompt[-len(self.forced_all) :] == self.forced_all:
                out.append(enc(" the box is there.\nAction: Click the box.") + self.im_end)
            elif prompt[-len(self.forced_os) :] == self.forced_os:
                out.append(enc("pyautogui.click(x=0.5, y=0.5)") + self.diff)
            else:
                assert prompt[-len(self.header) :] == self.header
                if len(imgs) == 1:  # first step: act at once
                    out.append(enc("os\npyautogui.click(x=0.5, y=0.5)") + self.diff)
                else:
                    out.append(enc("all\nAction: Press enter.") + self.im_end)
        return out


def _rollout(tmp_path, tokenizer, mode, max_images=None, n_tasks=2):
    renderer = Renderer(tokenizer, "qwen2", image_tokens=lambda _: 4)
    backend = ScriptedBackend(renderer)
    tasks = [Task(f"box/{i}", "train", {"box": [0.5, 0.5]}, max_steps=5) for i in range(n_tasks)]
    envs = [PageEnv(tmp_path), PageEnv(tmp_path)]
    cfg = RolloutConfig(
        sampling=Sampling(temperature=1.0, max_new_tokens=16, seed=0), batch_size=2, policy_id=mode
    )
    agent = AguvisAgent(renderer, mode=mode, max_images=max_images)
    trajs = run_rollouts(tasks, envs, backend, agent, tmp_path / f"{mode}.jsonl", cfg)
    return trajs, backend, renderer, envs


def test_enforced_plan_writes_a_plan_then_code_each_step(tmp_path, tokenizer):
    trajs, backend, renderer, envs = _rollout(tmp_path, tokenizer, "enforced_plan")
    assert len(trajs) == 2 and all(t.success for t in trajs)
    traj = trajs[0]
    roles = [(t.role, t.recipient) for t in traj.turns]
    assert roles[:3] == [(SYSTEM, None), (TASK, None), (OBSERVATION, None)]
    assert traj.turns[1].text == "Instruction: Click the box."
    assert traj.turns[2].image and traj.turns[2].text == "<image>"
    agent = [t for t in traj.turns if t.role == AGENT]
    assert [t.recipient for t in agent] == ["all", "os", "all", "os"]
    plan, code = agent[0], agent[1]
    assert plan.text.startswith("Thought: the box is there.") and plan.end_turn is False
    assert plan.token_ids[: len(backend.forced_all)] == backend.forced_all
    assert code.text == "pyautogui.click(x=0.5, y=0.5)" and code.end_turn is True
    assert code.token_ids[: len(backend.forced_os)] == backend.forced_os
    # two generations per env step, the env got the code of the os turn only
    assert len(backend.calls) == 2 * 2 * 2
    assert all(a == "pyautogui.click(x=0.5, y=0.5)" for e in envs for a in e.actions)
    # the first prompt shows the first screenshot; later prompts every screenshot so far
    first = [c for c in backend.calls if len(c["images"]) == 1]
    assert first and first[0]["images"][0] in {t.turns[2].image for t in trajs}
    # what was sampled is what DPO trains on: each prompt is an exact prefix of the rendering
    full = renderer.render(traj).input_ids
    prompts = [c["prompt"] for c in backend.calls if c["images"][0] == traj.turns[2].image]
    assert prompts and all(full[: len(p)] == p for p in prompts)
    # the stored record keeps recipients, token ids and images through JSON
    again = Trajectory.from_dict(json.loads((tmp_path / "enforced_plan.jsonl").read_text().splitlines()[0]))
    assert [t.recipient for t in again.agent_turns] == ["all", "os", "all", "os"]
    assert again.agent_turns[0].token_ids is not None and len(again.images) == 3
    assert again.metadata["mode"] == "enforced_plan"


def test_self_plan_lets_the_model_choose_the_recipient(tmp_path, tokenizer):
    trajs, backend, _, envs = _rollout(tmp_path, tokenizer, "self_plan")
    traj = sorted(trajs, key=lambda t: t.id)[0]
    agent = [t for t in traj.turns if t.role == AGENT]
    # step 1: the model picked `os` (one generation); step 2: `all`, then a forced os turn
    assert [t.recipient for t in agent] == ["os", "all", "os"]
    assert agent[0].text == "pyautogui.click(x=0.5, y=0.5)"
    assert agent[0].token_ids[-1] == backend.diff[0]
    assert agent[1].text == "Action: Press enter." and agent[1].end_turn is False
    assert len(backend.calls) == 2 * 3
    assert all(e.actions == ["pyautogui.click(x=0.5, y=0.5)"] * 2 for e in envs if e.actions)


def test_screenshots_in_a_prompt_can_be_capped(tmp_path, tokenizer):
    trajs, backend, _, _ = _rollout(tmp_path, tokenizer, "enforced_plan", max_images=1, n_tasks=1)
    assert max(len(c["images"]) for c in backend.calls) == 1
    assert len(trajs[0].images) == 3  # the stored episode keeps every screen
    turns = [Turn(OBSERVATION, "<image>", image="a.png"), Turn(OBSERVATION, "<image>\nx", image="b.png")]
    capped = cap_images(turns, 1)
    assert capped[0].image is None and "<image>" not in capped[0].text and capped[1].image == "b.png"


def _gui_traj(root: Path, tid: str, xs: list[float], reward: float, image_of=None) -> Trajectory:
    turns = [Turn(SYSTEM, "You are a GUI agent."), Turn(TASK, "Instruction: Click the box.")]
    for k, x in enumerate(xs):
        image = image_of(k) if image_of else screenshot(root / f"{tid.replace('/', '_')}_{k}.png", 0.5, 0.5)
        turns.append(Turn(OBSERVATION, "<image>", image=image))
        turns.append(
            Turn(AGENT, f"Thought: the box.\nAction: Click at {x}.", recipient="all", end_turn=False)
        )
        turns.append(Turn(AGENT, f"pyautogui.click(x={x}, y=0.5)", recipient="os", end_turn=True))
    return Trajectory(tid, turns, task_id="box/0", reward=reward, success=reward > 0)


def test_gui_pairs_keep_images_and_recipients(tmp_path):
    expert = _gui_traj(tmp_path, "expert/box/0", [0.5], 1.0)
    # The rollout's first screen is a different file with the same bytes: still one shared prompt.
    rollout = _gui_traj(tmp_path, "sft/box/0/s0", [0.1, 0.2], 0.0)
    result = build_pairs([rollout], [expert])
    assert result.counts() == {"win": 0, "tie": 0, "lose": 1, "pairs": 1}
    pair = json.loads(json.dumps(result.pairs[0]))
    assert [t["role"] for t in pair["prompt"]] == [SYSTEM, TASK, OBSERVATION]
    assert pair["prompt"][2]["image"] == expert.turns[2].image
    assert [t.get("recipient") for t in pair["chosen"]] == ["all", "os"]
    assert [t.get("recipient") for t in pair["rejected"]] == ["all", "os", None, "all", "os"]
    assert pair["rejected"][2]["image"]


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    from trajkit.policy.vlm import make_tiny_vlm

    return make_tiny_vlm(tmp_path_factory.mktemp("vlm") / "model", size="xs", seed=0)


@pytest.mark.slow
def test_vlm_dpo_masks_images_and_observations_and_trains(tmp_path, tiny_vlm):
    import torch

    from trajkit.policy.vlm import load_vlm
    from trajkit.train.dpo import DPORecipe, run_dpo, tokenize_vlm_pair

    torch.set_num_threads(1)
    pairs = []
    for i in range(4):
        x = round(0.2 + 0.15 * i, 2)
        expert = _gui_traj(tmp_path, f"expert/{i}", [0.5], 1.0)
        expert = dataclasses.replace(expert, task_id=f"box/{i}")
        bad = _gui_traj(tmp_path, f"roll/{i}", [x, x], 0.0, image_of=lambda k, e=expert: e.turns[2].image)
        bad = dataclasses.replace(bad, task_id=f"box/{i}")
        pairs += build_pairs([bad], [expert]).pairs
    assert len(pairs) == 4

    vlm = load_vlm(str(tiny_vlm))
    renderer = vlm.renderer()
    chosen, rejected = tokenize_vlm_pair(pairs[0], renderer, 4096)
    pad = vlm.tokenizer.convert_tokens_to_ids(IMAGE_PAD)
    for row in (chosen, rejected):
        ids, mask = row["input_ids"], row["assistant_masks"]
        pads = [i for i, t in enumerate(ids) if t == pad]
        assert pads and all(mask[i] == 0 for i in pads), "vision spans are never scored"
        assert row["image_paths"] and len(pads) == sum(renderer.image_tokens(p) for p in row["image_paths"])
        # Only agent text is scored: the scored tokens decode to the agent turns and nothing else.
        scored = vlm.tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
        assert "Instruction" not in scored and "GUI agent" not in scored and "<image>" not in scored
        assert "pyautogui.click" in scored and "Thought: the box." in scored
    assert len(rejected["image_paths"]) == 2 and len(chosen["image_paths"]) == 1

    # the collator gives pixel values and grids for both sides
    from trajkit.policy.vlm import VisionInputs
    from trajkit.train.vlm import VLMCollator

    batch = VLMCollator(VisionInputs(vlm.image_processor), vlm.tokenizer.pad_token_id, pad)(
        [chosen, rejected]
    )
    assert batch["image_grid_thw"].shape[0] == 3 and batch["pixel_values"].shape[0] > 0
    assert int((batch["labels"] == pad).sum()) == 0

    recipe = DPORecipe(
        model=str(tiny_vlm),
        pairs=[],
        output_dir=str(tmp_path / "dpo"),
        beta=0.5,
        learning_rate=3e-3,
        epochs=6,
        batch_size=2,
        warmup=0,
        lr_scheduler="constant",
        logging_steps=1,
    )
    final = run_dpo(recipe, pairs)
    log = json.loads((tmp_path / "dpo" / "train_log.json").read_text())["log_history"]
    log = [e for e in log if "loss" in e]
    losses = [e["loss"] for e in log]
    assert len(losses) == 12
    assert abs(losses[0] - 0.6931) < 1e-3, "the policy starts as its own reference"
    assert sum(losses[-3:]) / 3 < losses[0] - 0.1, losses
    assert log[-1]["rewards/accuracies"] == 1.0
    again = load_vlm(str(final))
    assert again.template == "qwen2" and (Path(final) / "preprocessor_config.json").is_file()


def test_gui_demo_is_the_config_file():
    from trajkit.pipeline.config import demo_config, load_run_config

    from_file = load_run_config(REPO / "configs" / "miniwob_eto_tiny.yaml")
    assert dataclasses.replace(from_file, run_dir="x") == demo_config("x", gui=True)
    assert from_file.gui is not None and from_file.gui.stage2["reasoning_mixture"] == {"l2": 0.6, "none": 0.4}
    full = load_run_config(REPO / "configs" / "miniwob_eto.yaml")
    assert full.gui is not None and full.model.base != "tiny"


def test_bad_gui_mode_is_refused(tmp_path):
    from trajkit.config import ConfigError
    from trajkit.pipeline.config import load_run_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text("run_dir: x\nenv: {name: miniwob}\ngui: {eval_modes: [grounding]}\n")
    with pytest.raises(ConfigError, match="grounding"):
        load_run_config(cfg)


def _need_miniwob() -> None:
    from trajkit.envs.miniwob import availability

    reason = availability()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"MiniWoB++ must run in CI: {reason}")
    pytest.skip(reason)


@pytest.mark.slow
def test_tiny_gui_eto_run_end_to_end_and_resumes(tmp_path):
    """Oracle data, stage-1 + stage-2 SFT, exploration, pairs, DPO, evaluation under both plan
    modes, and the report with a chosen-vs-rejected screenshot; a re-run redoes nothing."""
    _need_miniwob()
    import torch

    from trajkit.pipeline import config_to_yaml, demo_config, execute

    torch.set_num_threads(2)
    cfg = demo_config(
        str(tmp_path / "run"),
        [
            "env.kwargs.tasks=[click-test,focus-text]",
            "env.kwargs.n_train=3",
            "env.kwargs.n_test=2",
            "gui.envs=2",
            "gui.stage1.epochs=1",
            "gui.stage2.epochs=1",
            "dpo.epochs=1",
            "explore.max_new_tokens=24",
            "eval.max_new_tokens=24",
            "explore.max_steps=2",
            "eval.max_steps=2",
        ],
        gui=True,
    )
    logs: list[str] = []
    summary = execute(cfg, config_to_yaml(cfg), log=logs.append)
    run = Path(cfg.run_dir)
    assert set(summary["gui"]["modes"]) == {"sft", "round-1"}
    for stage in ("sft", "round-1"):
        assert set(summary["gui"]["modes"][stage]) == {"enforced_plan", "self_plan"}
        assert summary["gui"]["modes"][stage]["self_plan"]["test"]["n"] == 4
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["plan_modes"]["round-1"]) == {"enforced_plan", "self_plan"}
    expert = [json.loads(x) for x in (run / "expert" / "expert.jsonl").read_text().splitlines()]
    assert len(expert) == 6 and all(Path(t["turns"][1]["image"]).is_file() for t in expert)
    explored = [json.loads(x) for x in (run / "round-1/explore/rollouts.jsonl").read_text().splitlines()]
    assert len(explored) == 6
    first = explored[0]["turns"]
    assert first[0]["role"] == SYSTEM and first[2]["image"] and Path(first[2]["image"]).is_file()
    assert [t.get("recipient") for t in first if t["role"] == AGENT][:2] == ["all", "os"]
    pairs = (run / "round-1/pairs/pairs.jsonl").read_text().splitlines()
    assert pairs, "a tiny model fails some episodes the oracle solves"
    assert (run / "round-1/dpo/model/config.json").is_file()
    report = (run / "report.md").read_text()
    assert "Inference modes" in report and "pair-1.png" in report and (run / "pair-1.png").is_file()
    for name in ("per_task.png", "plan_modes.png", "success.png"):
        assert (run / name).stat().st_size > 1000
    # resumable: a re-run finds every stage done
    before = (run / "report.md").stat().st_mtime_ns
    again = execute(cfg, config_to_yaml(cfg), log=logs.append)
    assert again == json.loads((run / "summary.json").read_text())
    assert (run / "report.md").stat().st_mtime_ns == before


def test_grounding_stage_false_plans_stage2_only():
    """AGUVIS's "stage 2 only" ablation: planning SFT straight from the base model."""
    from trajkit.pipeline.agents import agent_kind
    from trajkit.pipeline.config import demo_config

    both = agent_kind(demo_config("x", gui=True)).sft_plan()
    assert [(p.name, p.gui_stage) for p in both] == [("sft-stage1", "grounding"), ("sft", "planning")]
    only = agent_kind(demo_config("x", ["gui.grounding_stage=false"], gui=True)).sft_plan()
    assert [(p.name, p.gui_stage) for p in only] == [("sft", "planning")]
    assert only[0].settings == both[1].settings
