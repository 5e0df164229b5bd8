"""Vision-language policy: a tiny Qwen2-VL made on the spot, image turns rendered with the right
number of visual tokens, AGUVIS stage-1 / stage-2 SFT on CPU, frozen vision tower, and sampling."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trajkit.config import apply_overrides, from_dict, load_yaml
from trajkit.data.io import load_trajectories, write_trajectories
from trajkit.data.schema import Trajectory, Turn
from trajkit.gui.prompts import with_default_system
from trajkit.render import IMAGE_PAD, QWEN_VISION, Renderer, RenderError
from trajkit.train.sft import SFTRecipe, run_sft

REPO = Path(__file__).resolve().parents[1]
COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "black": (0, 0, 0)}
PLAN_PROMPT = (
    "<image>\nPlease generate the next move according to the UI screenshot, instruction and previous "
    "actions.\n\nInstruction: {task}\n\nPrevious actions:\n{history}"
)


def screenshot(path: Path, boxes: dict[str, tuple[float, float]], size=(160, 210)) -> Path:
    """A MiniWoB-sized page with coloured boxes centred at normalized points."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", size, (245, 245, 245))
    draw = ImageDraw.Draw(img)
    w, h = size
    for color, (x, y) in boxes.items():
        draw.rectangle([x * w - 12, y * h - 8, x * w + 12, y * h + 8], fill=COLORS[color])
    img.save(path)
    return path


def click(x: float, y: float) -> str:
    return f"pyautogui.click(x={x:.4f}, y={y:.4f})"


@pytest.fixture(scope="module")
def gui_data(tmp_path_factory):
    return make_gui_data(tmp_path_factory.mktemp("gui"))


def make_gui_data(root: Path) -> Path:
    """Stage-1 AGUVIS grounding records (JSON) and stage-2 trajectories with a screenshot per
    observation (trajkit JSONL, as an env oracle writes them), both with relative image paths."""
    layouts = [
        {"red": (0.2, 0.3), "green": (0.7, 0.6), "blue": (0.4, 0.85)},
        {"red": (0.75, 0.2), "green": (0.3, 0.5), "blue": (0.6, 0.8)},
        {"red": (0.5, 0.7), "green": (0.2, 0.15), "blue": (0.8, 0.4)},
        {"red": (0.3, 0.9), "green": (0.85, 0.85), "blue": (0.15, 0.3)},
    ]
    grounding = []
    for n, boxes in enumerate(layouts):
        screenshot(root / f"shot{n}.png", boxes)
        conv = []
        for i, (color, (x, y)) in enumerate(boxes.items()):
            conv.append(
                {"from": "human", "value": ("<image>\n" if i == 0 else "") + f"Click on the {color} box"}
            )
            conv.append({"from": "gpt", "value": click(x, y), "recipient": "os", "end_turn": True})
        grounding.append({"id": f"g{n}", "image": f"shot{n}.png", "conversations": conv})
    (root / "grounding.json").write_text(json.dumps(grounding))

    trajectories = []
    for n, boxes in enumerate(layouts):
        order = list(boxes)[: 2 + n % 2]
        task = "Click the " + ", then the ".join(order) + " box."
        turns = [Turn("task", task)]
        history: list[str] = []
        for k, color in enumerate(order):
            name = f"traj{n}_step{k}.png"
            screenshot(root / name, {c: boxes[c] for c in order[k:]})
            prompt = PLAN_PROMPT.format(task=task, history="\n".join(history) or "None")
            turns.append(Turn("observation", prompt, image=name))
            mono = (
                f"Observation: The page shows {len(order) - k} boxes.\n"
                f"Thought: The {color} box is next.\nAction: Click on the {color} box."
            )
            turns.append(Turn("agent", mono, recipient="all", end_turn=False))
            turns.append(Turn("agent", click(*boxes[color]), recipient="os", end_turn=True))
            history.append(f"Click on the {color} box.")
        trajectories.append(Trajectory(f"plan-{n}", turns, env="synthetic", split="train"))
    write_trajectories(trajectories, root / "planning.jsonl")
    return root


@pytest.fixture(scope="module")
def tiny_vlm_dir(tmp_path_factory, gui_data):
    out = tmp_path_factory.mktemp("vlm") / "tiny-vlm"
    proc = subprocess.run(
        [sys.executable, "-m", "trajkit", "model", "tiny-vlm", "--out", str(out)]
        + ["--corpus", str(gui_data / "grounding.json"), "--corpus", str(gui_data / "planning.jsonl")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["vision"] is True
    return out


@pytest.fixture(scope="module")
def vlm(tiny_vlm_dir):
    from trajkit.policy.vlm import load_vlm

    return load_vlm(str(tiny_vlm_dir))


def test_tiny_vlm_loads_with_its_template_and_tokens(vlm, tiny_vlm_dir):
    from trajkit.policy.models import infer_template
    from trajkit.policy.vlm import is_vision_model

    assert type(vlm.model).__name__ == "Qwen2VLForConditionalGeneration"
    assert vlm.template == "qwen2" and infer_template(tiny_vlm_dir) == "qwen2"
    assert is_vision_model(str(tiny_vlm_dir))
    tok = vlm.tokenizer
    for token in ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", IMAGE_PAD):
        assert len(tok(token, add_special_tokens=False)["input_ids"]) == 1, token
    for token in ("<|recipient|>", "<|diff_marker|>"):
        assert len(tok(token, add_special_tokens=False)["input_ids"]) == 1, token
    assert vlm.model.config.image_token_id == tok.convert_tokens_to_ids(IMAGE_PAD)
    assert tok.convert_tokens_to_ids("<|diff_marker|>") in vlm.stop_ids()
    n_params = sum(p.numel() for p in vlm.model.parameters())
    assert n_params < 1_000_000


def test_image_turns_render_with_exact_visual_token_counts(vlm, tmp_path):
    from trajkit.policy.vlm import VisionInputs
    from trajkit.train.vlm import VLMCollator

    big = screenshot(tmp_path / "big.png", {"red": (0.5, 0.5)}, size=(320, 420))
    wide = screenshot(tmp_path / "wide.png", {"blue": (0.5, 0.5)}, size=(640, 200))
    traj = Trajectory(
        "two-images",
        [
            Turn("task", "<image>\nClick on the red box", image=str(big)),
            Turn("agent", click(0.5, 0.5), recipient="os", end_turn=True),
            Turn("observation", "Now the blue one", image=str(wide)),  # no placeholder: span goes first
            Turn("agent", "Action: click blue.", recipient="all", end_turn=False),
            Turn("agent", click(0.5, 0.5), recipient="os", end_turn=True),
        ],
    )
    out = vlm.renderer().render(traj)
    assert out.images == [str(big), str(wide)]
    vision = VisionInputs(vlm.image_processor).batch(out.images)
    merge = vlm.image_processor.merge_size
    expected = [t * h * w // merge**2 for t, h, w in vision["image_grid_thw"].tolist()]
    # A 320x420 MiniWoB screenshot: 6 x 8 visual tokens, the screen's aspect kept (tiny_vlm's budget).
    assert vision["image_grid_thw"][0].tolist() == [1, 16, 12] and expected[0] == 48
    pad = vlm.tokenizer.convert_tokens_to_ids(IMAGE_PAD)
    start = vlm.tokenizer.convert_tokens_to_ids("<|vision_start|>")
    end = vlm.tokenizer.convert_tokens_to_ids("<|vision_end|>")
    runs, i = [], 0
    while i < len(out.input_ids):
        if out.input_ids[i] == start:
            j = out.input_ids.index(end, i)
            assert set(out.input_ids[i + 1 : j]) == {pad}
            assert not any(out.loss_mask[i : j + 1])  # vision spans are never trained
            runs.append(j - i - 1)
            i = j
        i += 1
    assert runs == expected
    assert out.n_trained > 0
    # The same text as the text-only rendering, pads collapsed, span first for the second image.
    plain = Renderer(vlm.tokenizer, "qwen2").render(traj)
    text = "".join(s.text for s in plain.segments)
    assert f"<|im_start|>user\n{QWEN_VISION}\nNow the blue one" in text
    assert vlm.tokenizer.decode(out.input_ids).replace(IMAGE_PAD * expected[0], IMAGE_PAD).replace(
        IMAGE_PAD * expected[1], IMAGE_PAD
    ) == vlm.tokenizer.decode(plain.input_ids)

    collator = VLMCollator(VisionInputs(vlm.image_processor), vlm.tokenizer.pad_token_id, pad)
    row = {
        "id": traj.id,
        "input_ids": out.input_ids,
        "assistant_masks": out.loss_mask,
        "image_paths": out.images,
    }
    short = {"id": "s", "input_ids": out.input_ids[:5], "assistant_masks": [0] * 5, "image_paths": []}
    batch = collator([row, short])
    assert batch["pixel_values"].shape[0] == int(vision["image_grid_thw"].prod(-1).sum())
    assert int(batch["mm_token_type_ids"].sum()) == sum(expected)
    assert (batch["labels"][0] != -100).sum() == out.n_trained
    assert (batch["labels"][1] == -100).all() and batch["attention_mask"][1].sum() == 5
    loss = vlm.model(**batch).loss
    assert loss.item() > 0
    # Rendered without the model's image sizes: the collator refuses instead of misaligning.
    with pytest.raises(ValueError, match="image pad tokens"):
        collator([{**row, "input_ids": plain.input_ids, "assistant_masks": plain.loss_mask}])


def test_backend_batches_text_only_and_image_prompts(vlm, tmp_path):
    from trajkit.policy.backends import Sampling
    from trajkit.policy.vlm import VLMBackend

    shot = screenshot(tmp_path / "s.png", {"red": (0.5, 0.5)}, size=(320, 420))
    renderer = vlm.renderer()
    with_image = renderer.prompt([Turn("task", "<image>\nClick on the red box", image=str(shot))])
    text_only = renderer.prompt([Turn("system", "You are a GUI agent."), Turn("task", "Say hi")])
    assert with_image.images == [str(shot)] and text_only.images == []
    backend = VLMBackend(vlm.model, vlm.tokenizer, vlm.image_processor, vlm.stop_ids(), batch_size=4)
    sampling = Sampling(temperature=1.0, max_new_tokens=6)
    prompts, images = [with_image.input_ids, text_only.input_ids], [with_image.images, text_only.images]
    both = backend.generate(prompts, sampling, seeds=[1, 2], images=images)
    alone = [
        backend.generate([p], sampling, seeds=[s], images=[im])[0]
        for p, s, im in zip(prompts, [1, 2], images, strict=True)
    ]
    assert both == alone and all(len(x) == 6 or x[-1] in backend.stop_ids for x in both)
    with pytest.raises(ValueError, match="image pad tokens"):
        backend.generate([text_only.input_ids], sampling, images=[[str(shot)]])


def test_templates_that_cannot_show_images_are_refused(vlm, tmp_path):
    shot = screenshot(tmp_path / "s.png", {"red": (0.5, 0.5)})
    traj = Trajectory("x", [Turn("task", "<image>\nhi", image=str(shot)), Turn("agent", "ok")])
    with pytest.raises(RenderError, match="1 image"):
        Renderer(vlm.tokenizer, "llama3", image_tokens=vlm.renderer().image_tokens).render(traj)
    # Without a vision model the text rendering is unchanged (images are a text-only span there).
    assert Renderer(vlm.tokenizer, "llama3").render(traj).images == []


@pytest.mark.parametrize("stage", ["stage1_grounding", "stage2_planning"])
def test_shared_aguvis_examples_render_with_images(vlm, shared_data, stage):
    folder = shared_data("aguvis")
    shot = str(folder / "example_screenshot_android.png")
    traj = load_trajectories(str(folder / f"example_{stage}.json"), format="aguvis")[0]
    # The records name screenshots that are not shipped; the example screenshot stands in.
    for turn in traj.turns:
        if turn.image:
            turn.image = shot
    out = vlm.renderer().render(with_default_system(traj))
    n = vlm.renderer().image_tokens(shot)
    assert out.images == [shot] and out.input_ids.count(vlm.tokenizer.convert_tokens_to_ids(IMAGE_PAD)) == n
    expected = (folder / f"example_{stage.split('_')[0]}_rendered.txt").read_text().removesuffix("\n")
    assert vlm.tokenizer.decode(out.input_ids).replace(IMAGE_PAD * n, IMAGE_PAD) == expected
    trained = vlm.tokenizer.decode([i for i, m in zip(out.input_ids, out.loss_mask, strict=True) if m])
    assert trained == "".join(
        f"{t.recipient}\n{t.text}{'<|diff_marker|>' if t.end_turn else '<|im_end|>'}"
        for t in traj.agent_turns
    )


def test_stage_samples_from_gui_data(gui_data):
    from trajkit.gui.reasoning import ReasoningMixture
    from trajkit.gui.samples import grounding_samples, load_gui_trajectories, planning_samples

    plans = load_gui_trajectories([str(gui_data / "planning.jsonl")])
    assert all(Path(p).is_file() for t in plans for p in t.images)  # resolved against the file's folder
    samples = grounding_samples(plans, max_turns=2)
    # Steps of one screenshot pack together; instructions come from the monologue's Action line.
    assert sum(s.metadata["pairs"] for s in samples) == sum(len(t.turns) // 3 for t in plans)
    first = samples[0]
    assert first.turns[0].role == "system" and first.turns[1].text.startswith("<image>\nClick on the")
    assert first.turns[1].image and all(t.image is None for t in first.turns[2:])
    grounded = load_gui_trajectories([str(gui_data / "grounding.json")], "aguvis")
    packed = grounding_samples(grounded, max_turns=2)
    assert [s.metadata["pairs"] for s in packed] == [2, 1] * 4

    mixed = planning_samples(plans, ReasoningMixture({"none": 1, "l1": 1, "l3": 1}), seed=3)
    assert len({s.metadata["reasoning_level"] for s in mixed}) > 1
    for sample in mixed:
        level = sample.metadata["reasoning_level"]
        monologues = [t.text for t in sample.turns if t.recipient == "all"]
        if level == "none":
            assert not monologues
        elif level == "l1":
            assert all(m.startswith("Action: Click on the") for m in monologues)
        # Every screenshot stays on its observation turn.
        assert len([t for t in sample.turns if t.image]) == len(
            [t for t in sample.turns if t.recipient == "os"]
        )


def _losses(run_dir: Path) -> list[float]:
    log = json.loads((run_dir / "train_log.json").read_text())
    return [e["loss"] for e in log["log_history"] if "loss" in e]


def _recipe(config: str, **overrides) -> SFTRecipe:
    raw = apply_overrides(load_yaml(REPO / "configs" / config), [f"{k}={v}" for k, v in overrides.items()])
    return from_dict(SFTRecipe, raw, where=config)


@pytest.fixture
def one_thread():
    """Tiny matrices gain nothing from a second thread, and on a busy 2-core machine two threads
    that wait for each other made this test ~9x slower (measured: 140 s vs 15 s)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_stage1_then_stage2_sft_from_the_configs(tmp_path, tiny_vlm_dir, gui_data, vlm, one_thread):
    import torch
    from safetensors.torch import load_file

    common = dict(
        learning_rate=0.003,
        lr_scheduler="constant",
        warmup=0,
        batch_size=4,
        logging_steps=1,
        save_steps=1000,
    )
    stage1 = _recipe(
        "miniwob_sft_stage1.yaml",
        model=tiny_vlm_dir,
        data=f"[{gui_data / 'grounding.json'}, {gui_data / 'planning.jsonl'}]",
        output_dir=tmp_path / "stage1",
        max_steps=14,
        **common,
    )
    # The configs leave the choice to the model: the tiny VLM's encoder starts random, so it trains.
    assert stage1.gui_stage == "grounding" and stage1.freeze_vision is None
    final1 = run_sft(stage1)
    losses = _losses(tmp_path / "stage1")
    assert len(losses) == 14
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5, losses
    log = json.loads((tmp_path / "stage1" / "train_log.json").read_text())
    assert log["vision_params_frozen"] == 0 and log["vision_init"] == "random"
    assert any("tokens_per_s" in e for e in log["throughput"])

    before = load_file(tiny_vlm_dir / "model.safetensors")
    after = load_file(final1 / "model.safetensors")
    visual = [k for k in before if k.startswith("visual.") or ".visual." in k]
    text = [k for k in before if k not in visual]
    merger = [k for k in visual if ".merger." in k]
    assert visual and text and merger
    encoder = [k for k in visual if k not in merger]
    assert any(not torch.equal(before[k], after[k]) for k in encoder)
    assert sum(not torch.equal(before[k], after[k]) for k in text) > len(text) // 2

    stage2 = _recipe(
        "miniwob_sft_stage2.yaml",
        model=final1,
        data=f"[{gui_data / 'planning.jsonl'}]",
        output_dir=tmp_path / "stage2",
        max_steps=14,
        freeze_vision="true",
        **common,
    )
    assert stage2.gui_stage == "planning" and stage2.reasoning_mixture
    final2 = run_sft(stage2)
    losses = _losses(tmp_path / "stage2")
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5, losses
    # Frozen as AGUVIS: the encoder stays fixed, its merger (projector) trains.
    trained = load_file(final2 / "model.safetensors")
    assert all(torch.equal(after[k], trained[k]) for k in encoder)
    assert any(not torch.equal(after[k], trained[k]) for k in merger)
    check_backend(final2, gui_data)


def check_backend(model_dir: Path, gui_data: Path) -> None:
    """Greedy sampling from a trained VLM: deterministic, batch = single, matches HF generate, and
    the prompt is a prefix of the full rendering."""
    import torch

    from trajkit.gui.prompts import assistant_prefix
    from trajkit.gui.samples import load_gui_trajectories, planning_samples
    from trajkit.policy.backends import Sampling
    from trajkit.policy.vlm import VisionInputs, load_vlm_sampler

    backend, renderer = load_vlm_sampler(str(model_dir))
    samples = planning_samples(load_gui_trajectories([str(gui_data / "planning.jsonl")]), None)
    header = "<|im_start|>assistant" + assistant_prefix("self_plan")
    prompts = []
    for sample in samples[:3]:
        k = next(i for i, t in enumerate(sample.turns) if t.role == "agent")
        prompt = renderer.prompt(sample.turns[:k], header)
        full = renderer.render(sample)
        assert full.input_ids[: len(prompt.input_ids)] == prompt.input_ids
        assert prompt.images == [sample.turns[k - 1].image]
        prompts.append(prompt)
    greedy = Sampling(temperature=0, max_new_tokens=24)
    ids, images = [p.input_ids for p in prompts], [p.images for p in prompts]
    batched = backend.generate(ids, greedy, images=images)
    assert batched == backend.generate(ids, greedy, images=images)
    assert [
        backend.generate([i], greedy, images=[im])[0] for i, im in zip(ids, images, strict=True)
    ] == batched
    assert all(batched)

    # Every step's logits (cached decoding, our 3-D positions, left padding) equal one full forward
    # pass over prompt + sampled tokens, where the model places the image tokens itself.
    seen: list[torch.Tensor] = []
    choose = backend._choose
    backend._choose = lambda logits, *a: (seen.append(logits.clone()), choose(logits, *a))[1]
    try:
        assert backend.generate(ids[1:], greedy, images=images[1:]) == batched[1:]
    finally:
        backend._choose = choose
    row = 1  # the second prompt of that batch: left-padded when the prompts differ in length
    full = torch.tensor([ids[2] + batched[2][:-1]])
    vision = VisionInputs(backend.vision.image_processor).batch(images[2])
    with torch.no_grad():
        logits = backend.model(
            input_ids=full, mm_token_type_ids=(full == backend.image_token_id).long(), **vision
        ).logits[0, len(ids[2]) - 1 :]
    stepwise = torch.stack([step[row] for step in seen[: len(batched[2])]])
    assert len(ids[1]) != len(ids[2])
    assert torch.allclose(stepwise, logits, atol=1e-4), (stepwise - logits).abs().max()

    sampled = Sampling(temperature=1.0, max_new_tokens=12)
    a = backend.generate(ids, sampled, seeds=[5, 6, 7], images=images)
    assert a == backend.generate(ids, sampled, seeds=[5, 6, 7], images=images)
    assert backend.generate(ids[1:2], sampled, seeds=[6], images=images[1:2])[0] == a[1]
