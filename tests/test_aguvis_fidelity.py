"""trajkit against what AGUVIS's own code does (xlang-ai/aguvis: train.py, scripts/train.sh,
src/aguvis/dataset.py, constants.py, serve/cli.py, data/stage2.yaml): the merger trained with the
encoder frozen, the whole-assistant-message loss mask, the 720p pixel budget, every step at l1 and
l2, AGUVIS's inference prompt, and the `computer.*` plugin."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trajkit.data.schema import AGENT, OBSERVATION, SYSTEM, TASK, Trajectory, Turn
from trajkit.envs.base import Observation, StepResult, Task
from trajkit.gui.actions import ActionParseError, Terminate, TripleClick, Wait, parse_action, render_actions
from trajkit.gui.prompts import (
    AGUVIS_AGENT_FUNCTIONS,
    GUI_SYSTEM_PROMPT,
    aguvis_system_message,
    extract_os_code,
)
from trajkit.gui.reasoning import GuiStep, ReasoningMixture, step_turns
from trajkit.gui.samples import planning_samples, step_copies
from trajkit.gui.tokens import DIFF_MARKER, IM_END, IM_START, IMAGE_PAD, QWEN_VISION, RECIPIENT
from trajkit.policy.backends import Sampling
from trajkit.render import Renderer, RenderError
from trajkit.rollout import RolloutConfig, run_rollouts
from trajkit.rollout.aguvis import AguvisAgent
from trajkit.train.settings import SFTSettings


def screenshot(path: Path, x: float = 0.5, y: float = 0.5, size=(160, 210)) -> str:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", size, (245, 245, 245))
    w, h = size
    ImageDraw.Draw(img).rectangle([x * w - 12, y * h - 8, x * w + 12, y * h + 8], fill=(40, 70, 220))
    img.save(path)
    return str(path)


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    from trajkit.policy.vlm import make_tiny_vlm

    return make_tiny_vlm(tmp_path_factory.mktemp("vlm") / "model", size="xs", seed=0)


@pytest.fixture(scope="module")
def tokenizer():
    from trajkit.policy.vlm import DEFAULT_CORPUS, build_vlm_tokenizer

    return build_vlm_tokenizer(list(DEFAULT_CORPUS) * 4, 1024)


@pytest.fixture
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def three_steps(root: Path, tid: str = "expert/click/0") -> Trajectory:
    """A MiniWoB-oracle-shaped trajectory: task, then per step a screenshot and an l3 step."""
    turns = [Turn(TASK, "Instruction: Click the box.")]
    for k in range(3):
        turns.append(Turn(OBSERVATION, "<image>", image=screenshot(root / f"s{k}.png", 0.2 + 0.3 * k)))
        step = GuiStep(
            code=f"pyautogui.click(x={0.2 + 0.3 * k:.1f}, y=0.5)",
            instruction=f"Click box {k}.",
            thought=f"Box {k} is next.",
            observation=f"A page with box {k}.",
        )
        turns += step_turns(step, "l3")
    return Trajectory(tid, turns, task_id="click/0", reward=1.0, success=True)


# ---------------------------------------------------------------------------------------------
# 1. train.py --freeze_visual_encoder: the encoder frozen, `visual.merger` trained


def test_freezing_keeps_the_merger_trainable_and_one_step_moves_only_it(tiny_vlm, tmp_path, one_thread):
    import torch

    from trajkit.train.vlm import build_vlm_dataset, load_trainable_vlm, vlm_collator

    vlm, model, frozen = load_trainable_vlm(
        str(tiny_vlm), dtype="float32", template=None, lora=None, freeze=True
    )
    tower = model.model.visual
    merger = {f"merger.{n}" for n, _ in tower.merger.named_parameters()}
    params = dict(tower.named_parameters())
    assert merger and all(params[n].requires_grad for n in merger)
    encoder = [n for n in params if n not in merger]
    assert encoder and not any(params[n].requires_grad for n in encoder)
    assert frozen == sum(params[n].numel() for n in encoder)

    before = {n: p.detach().clone() for n, p in params.items()}
    data = build_vlm_dataset(planning_samples([three_steps(tmp_path)], None), vlm.renderer(), 4096)
    batch = vlm_collator(vlm)([data[0]])
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    model(**batch).loss.backward()
    optimizer.step()
    assert all(torch.equal(before[n], params[n]) for n in encoder), "the encoder stays fixed"
    assert any(not torch.equal(before[n], params[n]) for n in merger), "the merger trains"


def test_train_merger_false_freezes_the_whole_tower(tiny_vlm):
    from trajkit.train.vlm import load_trainable_vlm

    _, model, frozen = load_trainable_vlm(
        str(tiny_vlm), dtype="float32", template=None, lora=None, freeze=True, train_merger=False
    )
    tower = model.model.visual
    assert not any(p.requires_grad for p in tower.parameters())
    assert frozen == sum(p.numel() for p in tower.parameters())


def test_lora_never_adapts_the_vision_tower_and_trains_the_merger_whole(tiny_vlm):
    from trajkit.policy.models import LoraSpec
    from trajkit.train.vlm import load_trainable_vlm

    lora = LoraSpec(r=4, alpha=8, dropout=0.0)
    _, model, _ = load_trainable_vlm(str(tiny_vlm), dtype="float32", template=None, lora=lora, freeze=True)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    visual = [n for n in trainable if ".visual." in n]
    assert visual and all(".merger.modules_to_save." in n for n in visual)
    assert not any("lora_" in n for n in visual)
    assert any("lora_" in n and "language_model" in n for n in trainable)
    merged = model.merge_and_unload()
    assert any(n.endswith("visual.merger.mlp.0.weight") for n, _ in merged.named_parameters())


# ---------------------------------------------------------------------------------------------
# 2. dataset.py preprocess_qwen2vl: the whole assistant message is a target


def aguvis_record(image: str | None) -> Trajectory:
    """AGUVIS's stage-2 record shape: system, one user turn with the screenshot, `all` then `os`."""
    return Trajectory(
        "aguvis-0",
        [
            Turn(SYSTEM, GUI_SYSTEM_PROMPT),
            Turn(TASK, "<image>\nInstruction: Click the box.\n\nPrevious actions:\nNone", image=image),
            Turn(AGENT, "Thought: The box.\nAction: Click the box.", recipient="all", end_turn=False),
            Turn(AGENT, "pyautogui.click(x=0.5, y=0.5)", recipient="os", end_turn=True),
        ],
    )


def test_aguvis_mask_trains_the_whole_assistant_message(tokenizer):
    traj = aguvis_record(None)
    agent = Renderer(tokenizer, "qwen2").render(traj)
    aguvis = Renderer(tokenizer, "qwen2", mask="aguvis").render(traj)
    assert agent.input_ids == aguvis.input_ids
    header = tokenizer.convert_tokens_to_ids([IM_START, RECIPIENT])  # <|im_start|> "assistant" ...
    extra = [i for i, (a, b) in enumerate(zip(agent.loss_mask, aguvis.loss_mask, strict=True)) if a != b]
    assert all(agent.loss_mask[i] == 0 and aguvis.loss_mask[i] == 1 for i in extra)
    ids = aguvis.input_ids
    assert sum(ids[i] == header[0] for i in extra) == 2 and sum(ids[i] == header[1] for i in extra) == 2
    assert IM_START not in tokenizer.decode([t for t, m in zip(ids, agent.loss_mask, strict=True) if m])
    # What AGUVIS labels: each assistant message, "<|im_start|>assistant<|recipient|>{r}\n{text}{end}\n".
    trained = tokenizer.decode([t for t, m in zip(ids, aguvis.loss_mask, strict=True) if m])
    messages = [
        f"{IM_START}assistant{RECIPIENT}{t.recipient}\n{t.text}{DIFF_MARKER if t.end_turn else IM_END}\n"
        for t in traj.turns
        if t.role == AGENT
    ]
    assert trained == "".join(messages)
    # The prompt is the same under both masks: only training differs.
    turns = traj.turns[:2]
    assert Renderer(tokenizer, "qwen2", mask="aguvis").prompt_ids(turns) == Renderer(
        tokenizer, "qwen2"
    ).prompt_ids(turns)


def test_aguvis_mask_is_chatml_only_and_validated(tokenizer, tiny_tokenizer):
    with pytest.raises(RenderError, match="needs template chatml or qwen2"):
        Renderer(tiny_tokenizer, "tiny", mask="aguvis")
    with pytest.raises(RenderError, match="unknown loss mask"):
        Renderer(tokenizer, "qwen2", mask="everything")
    assert SFTSettings(loss_mask="aguvis").loss_mask == "aguvis"
    with pytest.raises(ValueError, match="^loss_mask: "):
        SFTSettings(loss_mask="header")


# ---------------------------------------------------------------------------------------------
# 3. train.py: min_pixels 256*28*28, max_pixels 46*26*28*28 ("720p")


def test_pixel_budget_reaches_the_image_processor_and_the_token_count(tiny_vlm, tmp_path):
    from trajkit.policy.vlm import AGUVIS_MAX_PIXELS, AGUVIS_MIN_PIXELS, VisionInputs, load_vlm
    from trajkit.train.vlm import load_trainable_vlm

    assert (AGUVIS_MIN_PIXELS, AGUVIS_MAX_PIXELS) == (200704, 937664)
    shot = screenshot(tmp_path / "page.png", size=(320, 420))
    default = load_vlm(str(tiny_vlm)).renderer().image_tokens(shot)
    vlm, _, _ = load_trainable_vlm(
        str(tiny_vlm),
        dtype="float32",
        template=None,
        lora=None,
        freeze=True,
        min_pixels=AGUVIS_MIN_PIXELS,
        max_pixels=AGUVIS_MAX_PIXELS,
    )
    size = vlm.image_processor.size
    assert (size["shortest_edge"], size["longest_edge"]) == (AGUVIS_MIN_PIXELS, AGUVIS_MAX_PIXELS)
    n = vlm.renderer().image_tokens(shot)
    assert default < 256 <= n, (default, n)
    _, grid = VisionInputs(vlm.image_processor).one(shot)
    assert VisionInputs(vlm.image_processor).tokens(grid) == [n], "the pads match the pixels"
    rendered = vlm.renderer().render(aguvis_record(shot))
    assert rendered.input_ids.count(vlm.tokenizer.convert_tokens_to_ids(IMAGE_PAD)) == n
    vlm.save_pretrained(tmp_path / "saved")  # a trained model keeps its budget for sampling
    saved = json.loads((tmp_path / "saved" / "preprocessor_config.json").read_text())
    assert saved["size"] == {"longest_edge": AGUVIS_MAX_PIXELS, "shortest_edge": AGUVIS_MIN_PIXELS}


def test_pixel_budget_settings_are_checked():
    assert SFTSettings(min_pixels=200704, max_pixels=937664).max_pixels == 937664
    with pytest.raises(ValueError, match="^min_pixels: "):
        SFTSettings(min_pixels=937664, max_pixels=200704)
    with pytest.raises(ValueError, match="^max_pixels: "):
        SFTSettings(max_pixels=0)


# ---------------------------------------------------------------------------------------------
# 4. data/stage2.yaml: each dataset's -l1 and -l2 step files side by side


def test_step_unit_writes_every_step_at_l1_and_at_l2(tmp_path):
    traj = three_steps(tmp_path)
    samples = planning_samples([traj], ReasoningMixture({"l1": 1, "l2": 1}), unit="step")
    assert len(samples) == 6
    by_step: dict[int, set[str]] = {}
    for s in samples:
        by_step.setdefault(s.metadata["step"], set()).add(s.metadata["reasoning_level"])
        assert s.turns[0].role == SYSTEM and len(s.images) == 1, "one screenshot per step sample"
        agent = [t for t in s.turns if t.role == AGENT]
        assert agent[-1].recipient == "os" and agent[-1].end_turn
        thought = agent[0].text.startswith("Thought:")
        assert thought == (s.metadata["reasoning_level"] == "l2") and "Observation" not in agent[0].text
    assert by_step == {0: {"l1", "l2"}, 1: {"l1", "l2"}, 2: {"l1", "l2"}}
    last = next(s for s in samples if s.metadata["step"] == 2)
    assert last.images == [traj.turns[7].image]
    prompt = last.turns[1].text
    assert prompt.startswith("<image>Please generate the next move")
    assert "Instruction: Click the box.\n" in prompt
    assert prompt.endswith("Previous actions:\nStep 1: Click box 0.\nStep 2: Click box 1.\n")
    # Today's unit is unchanged: one sample per trajectory, at one level.
    (whole,) = planning_samples([traj], ReasoningMixture({"l1": 1, "l2": 1}))
    assert len(whole.images) == 3 and whole.metadata["reasoning_level"] in ("l1", "l2")


def test_step_unit_weights_are_copies(tmp_path):
    samples = planning_samples([three_steps(tmp_path)], ReasoningMixture({"l1": 1, "l2": 2}), unit="step")
    assert [s.metadata["reasoning_level"] for s in samples if s.metadata["step"] == 0] == ["l1", "l2", "l2"]
    assert step_copies(ReasoningMixture({"l1": 1, "l3": 0})) == {"l1": 1}
    with pytest.raises(ValueError, match="whole number of copies"):
        step_copies(ReasoningMixture({"l1": 0.5}))
    with pytest.raises(ValueError, match="^reasoning_mixture: "):
        SFTSettings(reasoning_unit="step", reasoning_mixture={"l1": 0.3, "l2": 0.7})
    with pytest.raises(ValueError, match="^reasoning_unit: "):
        SFTSettings(reasoning_unit="episode")


def test_aguvis_records_keep_their_own_step_layout(tmp_path):
    record = aguvis_record(screenshot(tmp_path / "a.png"))
    samples = planning_samples([record], ReasoningMixture({"l1": 1, "l2": 1}), unit="step")
    assert [s.metadata["reasoning_level"] for s in samples] == ["l1", "l2"]
    assert all(s.turns[1].text == record.turns[1].text for s in samples)


# ---------------------------------------------------------------------------------------------
# 5. serve/cli.py + constants.py: AGUVIS's inference prompt


class BoxEnv:
    """Three clicks, then done; each screen a fresh screenshot."""

    name = "fakegui"
    version = "fakegui==0"
    instruction = "unused"

    def __init__(self, folder: Path):
        self.folder, self.n = folder, 0

    def reset(self, task: Task) -> Observation:
        self.steps = 0
        return Observation("Click the box.", self._shot(), instruction="Click the box.")

    def _shot(self) -> str:
        self.n += 1
        return screenshot(self.folder / f"{id(self)}_{self.n}.png", 0.1 * self.n)

    def step(self, text: str) -> StepResult:
        self.steps += 1
        done = self.steps >= 3
        return StepResult(Observation("Click the box.", self._shot()), float(done), done, {"won": done})

    def close(self) -> None:
        pass


class PlanThenCode:
    """Enforced plan: a plan naming the step, then a click; records every prompt."""

    def __init__(self, renderer: Renderer):
        self.r, self.calls = renderer, []

    def generate(self, prompts, sampling, seeds, keys=None, images=None):
        out = []
        for prompt, imgs in zip(prompts, images, strict=True):
            self.calls.append((list(prompt), list(imgs)))
            if prompt[-len(self.r.encode("Thought:")) :] == self.r.encode("Thought:"):
                step = sum(1 for p, _ in self.calls if p[-3:] == prompt[-3:])
                out.append(self.r.encode(f" Box.\nAction: Click box {step}.") + self.r.encode(IM_END))
            else:
                out.append(self.r.encode("pyautogui.click(x=0.5, y=0.5)") + self.r.encode(DIFF_MARKER))
        return out


def test_aguvis_prompt_style_shows_one_screenshot_the_task_and_previous_actions(tmp_path, tokenizer):
    renderer = Renderer(tokenizer, "qwen2", image_tokens=lambda _: 4)
    backend = PlanThenCode(renderer)
    agent = AguvisAgent(renderer, mode="enforced_plan", prompt_style="aguvis")
    cfg = RolloutConfig(sampling=Sampling(temperature=1.0, max_new_tokens=16, seed=0), batch_size=1)
    task = Task("box/0", "train", {}, max_steps=5)
    (traj,) = run_rollouts([task], [BoxEnv(tmp_path)], backend, agent, tmp_path / "r.jsonl", cfg)
    assert traj.success and traj.metadata["prompt_style"] == "aguvis"
    assert len(traj.images) == 4, "the stored episode keeps every screen"
    assert len(backend.calls) == 6 and all(len(imgs) == 1 for _, imgs in backend.calls)
    ids, images = backend.calls[4]  # step 3, the plan
    assert images == [traj.turns[-4].image], "the current screenshot, not an earlier one"
    text = tokenizer.decode(ids, skip_special_tokens=False).replace(IMAGE_PAD * 4, IMAGE_PAD)
    expected = (
        f"{IM_START}system\n{aguvis_system_message()}{IM_END}\n"
        f"{IM_START}user\n{QWEN_VISION}Please generate the next move according to the ui screenshot, "
        "instruction and previous actions.\n\nInstruction: Click the box.\n\n"
        f"Previous actions:\nStep 1: Click box 1.\nStep 2: Click box 2.\n{IM_END}\n"
        f"{IM_START}assistant{RECIPIENT}all\nThought:"
    )
    assert text == expected
    assert text.count(QWEN_VISION) == 1
    system = aguvis_system_message()
    assert system.startswith(GUI_SYSTEM_PROMPT + "\n\nYou have access to the following functions:\n- {")
    listed = [json.loads(line[2:])["name"] for line in system.splitlines() if line.startswith("- {")]
    assert listed == list(AGUVIS_AGENT_FUNCTIONS) and "mobile.swipe" in listed
    # The code turn's prompt carries the step's own plan after the same step prompt.
    code_prompt = tokenizer.decode(backend.calls[5][0], skip_special_tokens=False)
    assert code_prompt.endswith(f"Action: Click box 3.{IM_END}\n{IM_START}assistant{RECIPIENT}os\n")
    first = tokenizer.decode(backend.calls[0][0], skip_special_tokens=False)
    assert "Previous actions:\nNone\n" in first


def test_default_prompt_style_is_unchanged(tmp_path, tokenizer):
    renderer = Renderer(tokenizer, "qwen2", image_tokens=lambda _: 4)
    agent = AguvisAgent(renderer)
    assert agent.system == GUI_SYSTEM_PROMPT and agent.prompt_style == "trajkit"
    with pytest.raises(ValueError, match="unknown prompt style"):
        AguvisAgent(renderer, prompt_style="uitars")


# ---------------------------------------------------------------------------------------------
# 6. the `computer.*` plugin of desktop data


def test_computer_plugin_parses_and_round_trips():
    action = parse_action("computer.terminate(status='success')")
    assert action == Terminate("success")
    text = render_actions([action])
    assert text == "terminate(status='success')" and parse_action(text) == action
    assert parse_action("computer.terminate(status='failure')") == Terminate("failure")
    assert parse_action("computer.wait(seconds=2)") == Wait(2)
    assert parse_action("computer.triple_click(x=0.25, y=0.5)") == TripleClick(0.25, 0.5)
    assert parse_action(render_actions([TripleClick(0.25, 0.5)])) == TripleClick(0.25, 0.5)
    assert (
        extract_os_code("Done.\ncomputer.terminate(status='success')")
        == "computer.terminate(status='success')"
    )


def test_unknown_computer_function_is_refused_by_name():
    with pytest.raises(ActionParseError, match=r"unknown function 'computer\.foo'; the computer plugin has"):
        parse_action("computer.foo()")
    with pytest.raises(ActionParseError, match="not allowed"):
        parse_action("computer.terminate(status=__import__('os').system('true'))")


# ---------------------------------------------------------------------------------------------
# all of it through `trajkit sft`: one SFT step of an AGUVIS-configured stage 2


def test_one_aguvis_sft_step_end_to_end(tiny_vlm, tmp_path, one_thread):
    import torch
    from safetensors.torch import load_file

    from trajkit.train.sft import SFTRecipe, run_sft

    recipe = SFTRecipe(
        model=str(tiny_vlm),
        data=[],
        output_dir=str(tmp_path / "sft"),
        gui_stage="planning",
        reasoning_unit="step",
        reasoning_mixture={"l1": 1, "l2": 1},
        loss_mask="aguvis",
        freeze_vision=True,
        min_pixels=200704,
        max_pixels=937664,
        max_steps=1,
        batch_size=2,
        learning_rate=1e-2,
        warmup=0,
        logging_steps=1,
        save_steps=1000,
    )
    final = run_sft(recipe, [three_steps(tmp_path)])
    log = json.loads((tmp_path / "sft" / "train_log.json").read_text())
    assert log["samples"] == 6 and log["loss_mask"] == "aguvis" and log["vision_params_frozen"] > 0
    saved = json.loads((Path(final) / "preprocessor_config.json").read_text())
    assert saved["size"] == {"longest_edge": 937664, "shortest_edge": 200704}
    before, after = load_file(tiny_vlm / "model.safetensors"), load_file(Path(final) / "model.safetensors")
    visual = [k for k in before if ".visual." in k or k.startswith("visual.")]
    merger = [k for k in visual if ".merger." in k]
    assert all(torch.equal(before[k], after[k]) for k in visual if k not in merger), "encoder fixed"
    assert any(not torch.equal(before[k], after[k]) for k in merger), "merger trained"
