"""The vLLM rollout backend (`policy.vllm_backend`): the generate contract, token-for-token equality
with the HF backend, a `trajkit run` round with `rollout.backend: vllm`, and bad input.

The engine runs in `.venv-vllm` (built by `make`). Without it these tests skip, except under
CI=true, where they fail. One engine (two data-parallel replicas) serves the module's backend
tests: an engine takes ~20 s to start on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trajkit.config import ConfigError

REPO = Path(__file__).resolve().parents[1]
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need_vllm() -> None:
    if not VLLM_PYTHON.is_file():
        if CI:
            pytest.fail(f"{VLLM_PYTHON} is missing (CI=true: `make setup` builds .venv-vllm)")
        pytest.skip(f"{VLLM_PYTHON} is not built (make .venv-vllm/.installed)")


def household_texts(n: int = 30) -> list[str]:
    from trajkit.envs.registry import get_oracle, make_env

    env = make_env("household", seed=0, layout="compact")
    oracle = get_oracle("household")
    return [turn.text for task in env.tasks("train")[:n] for turn in oracle(env, task, 0).turns]


@pytest.fixture(scope="module")
def varied_model(tmp_path_factory) -> Path:
    """A tiny-s model (head_dim 32, which vLLM's CPU attention accepts) with random weights scaled
    up so greedy decoding writes varied tokens (at the default scale it repeats one token), and
    its end-of-turn embedding scaled so that some completions stop early and some run to the
    limit: equality then covers many different argmaxes and both ways a completion ends."""
    import torch
    from transformers import AutoModelForCausalLM

    from trajkit.policy.tiny import make_tiny_model

    path = make_tiny_model(household_texts(), tmp_path_factory.mktemp("vllm") / "model", size="s")
    model = AutoModelForCausalLM.from_pretrained(path)
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.normal_(0, 0.1)
        model.model.embed_tokens.weight[model.config.eos_token_id] *= 2
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def engine(varied_model):
    need_vllm()
    from trajkit.policy.vllm_backend import VLLMSettings, load_vllm_sampler

    settings = VLLMSettings(python=str(VLLM_PYTHON), data_parallel=2, kv_cache_gb=0.5)
    backend, renderer = load_vllm_sampler(str(varied_model), None, 8, settings, max_model_len=1024)
    yield backend, renderer
    backend.close()


def rollout(backend, renderer, out: Path, sampling, n_tasks: int = 8):
    from trajkit.envs.registry import make_env
    from trajkit.rollout import RolloutConfig, run_rollouts
    from trajkit.rollout.react import ReactAgent

    envs = [make_env("household", seed=0, layout="compact") for _ in range(8)]
    tasks = envs[0].tasks("test_seen")[:n_tasks]
    config = RolloutConfig(sampling=sampling, max_steps=4, batch_size=8, policy_id="p")
    trajs = run_rollouts(tasks, envs, backend, ReactAgent(renderer), out, config)
    return {t.task_id: [u.token_ids for u in t.agent_turns if u.token_ids is not None] for t in trajs}


def test_greedy_rollouts_equal_the_hf_backend_token_for_token(engine, varied_model, tmp_path):
    from trajkit.policy.backends import Sampling, load_sampler

    backend, renderer = engine
    sampling = Sampling(temperature=0, max_new_tokens=24)
    hf_backend, hf_renderer = load_sampler(str(varied_model), None, 8)
    ours = rollout(backend, renderer, tmp_path / "vllm.jsonl", sampling)
    theirs = rollout(hf_backend, hf_renderer, tmp_path / "hf.jsonl", sampling)
    assert len(ours) == 8 and ours == theirs
    completions = [ids for turns in ours.values() for ids in turns]
    stop = renderer.stop_ids
    # The comparison bites: completions are varied, some stop early, some run to the limit.
    assert len({tuple(ids) for ids in completions}) > len(completions) // 2
    assert any(ids[-1] in stop and len(ids) < 24 for ids in completions)
    assert any(len(ids) == 24 and ids[-1] not in stop for ids in completions)


def test_completions_keep_the_generate_contract(engine):
    from trajkit.policy.backends import Sampling

    backend, renderer = engine
    stop = set(renderer.stop_ids)
    prompts = [renderer.tokenizer.encode(text)[:40] for text in household_texts(4)[:6]]
    sampling = Sampling(temperature=1.0, max_new_tokens=16)
    seeds = [11, 12, 13, 14, 15, 2**62]
    batch = backend.generate(prompts, sampling, seeds=seeds, keys=[f"k{i}" for i in range(6)])
    for ids in batch:  # a stop id is last, else the completion is max_new_tokens long
        assert ids and (ids[-1] in stop or len(ids) == 16)
        assert not stop & set(ids[:-1])
    # A sequence's sample depends on its prompt and seed only: alone, or in another batch position
    # (so on the other replica), it is the same.
    assert backend.generate([prompts[5]], sampling, seeds=[2**62]) == [batch[5]]
    assert backend.generate(prompts[::-1], sampling, seeds=seeds[::-1]) == batch[::-1]
    other = backend.generate(prompts, sampling, seeds=[s + 100 for s in seeds])
    assert other != batch
    backend.forget("k0")  # vLLM's prefix cache is keyed by tokens: nothing to drop
    assert backend.generate([], sampling) == []
    with pytest.raises(ValueError, match="text only"):
        backend.generate(prompts[:1], sampling, images=[["shot.png"]])


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _pgid(pid: int) -> int | None:
    """A live process's group; None for one gone or a zombie (it holds nothing; its reaper may be
    slow in a container)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return None if state == "Z" else os.getpgid(pid)
    except (OSError, IndexError):
        return None


RECIPE = """\
run_dir: {run_dir}
seed: 0
rounds: 1
rft: false
env: {{name: household, kwargs: {{n_train: 40, n_test: 10, layout: compact}}}}
model: {{tiny_size: s}}
expert: {{limit: 12}}
sft: {{max_steps: 3, batch_size: 4, learning_rate: 0.003, save_steps: 1000, logging_steps: 1}}
explore: {{limit: 4, batch_size: 4, max_new_tokens: 12, max_steps: 4}}
pairs: {{strategy: trajectory, extra_turns: 2}}
dpo: {{max_steps: 4, batch_size: 2, learning_rate: 0.001, save_steps: 1, logging_steps: 1}}
eval: {{splits: [test_seen], limit: 3, batch_size: 3, max_new_tokens: 12, max_steps: 3}}
rollout: {{backend: {backend}, vllm: {{python: {python}, kv_cache_gb: 0.5}}}}
"""


def trajkit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trajkit", *args], capture_output=True, text=True)


def rollout_tokens(run_dir: Path) -> dict[str, list]:
    out = {}
    for path in sorted(run_dir.rglob("rollouts.jsonl")):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            out[f"{path.parent.relative_to(run_dir)}:{rec['id']}"] = [
                t.get("token_ids") for t in rec["turns"]
            ]
    return out


def test_a_run_round_with_vllm_samples_what_hf_samples(tmp_path):
    """SFT, greedy evaluation, exploration, pairs, DPO and evaluation of the DPO policy: with
    `rollout.backend: vllm` every rollout stage samples the same token ids as with `hf`, so the
    pairs, the DPO policy and the metrics are the same too."""
    need_vllm()
    runs = {}
    for backend in ("hf", "vllm"):
        recipe = tmp_path / f"{backend}.yaml"
        recipe.write_text(RECIPE.format(run_dir=tmp_path / backend, backend=backend, python=VLLM_PYTHON))
        proc = trajkit("run", "--config", str(recipe))
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[backend] = tmp_path / backend
    hf, vllm = (rollout_tokens(runs[b]) for b in ("hf", "vllm"))
    stages = {key.split(":")[0] for key in vllm}
    assert stages == {"eval-sft/test_seen", "round-1/explore", "round-1/eval/test_seen"}
    assert vllm == hf
    for name in ("eval-sft/metrics.json", "round-1/eval/metrics.json", "round-1/pairs/pairs.jsonl"):
        assert (runs["vllm"] / name).read_text() == (runs["hf"] / name).read_text(), name
    assert "backend: vllm" in (runs["vllm"] / "config.yaml").read_text()
    from trajkit.pipeline.config import RunConfig, config_to_yaml

    # A default rollout section is left out of a saved config: older run folders still match theirs.
    assert "rollout:" not in config_to_yaml(RunConfig(run_dir=str(tmp_path)))


# --- bad input: one line naming the setting and the fix, before any training ------------------------
def load(tmp_path: Path, vllm: dict, model: dict | None = None) -> None:
    from trajkit.pipeline.config import run_config_from_dict

    data = {"run_dir": str(tmp_path / "run"), "rollout": {"backend": "vllm", "vllm": vllm}}
    run_config_from_dict({**data, **({"model": model} if model else {})}, "recipe.yaml")


def test_a_missing_rollout_venv_is_named_with_its_fix(tmp_path):
    recipe = tmp_path / "r.yaml"
    missing = tmp_path / "no-venv" / "bin" / "python"
    recipe.write_text(
        f"run_dir: {tmp_path / 'run'}\nrollout: {{backend: vllm, vllm: {{python: {missing}}}}}\n"
    )
    proc = trajkit("run", "--config", str(recipe))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line
    assert "rollout.vllm.python" in line and str(missing) in line and "make .venv-vllm/.installed" in line
    assert not (tmp_path / "run").exists()  # refused before the run folder was made


def test_a_python_without_vllm_is_refused(tmp_path):
    with pytest.raises(
        ConfigError, match=r"rollout.vllm.python: vLLM is not installed in .*rollout.backend: hf"
    ):
        load(tmp_path, vllm={"python": sys.executable})


def test_models_vllm_cannot_serve_are_refused_before_training(tmp_path):
    need_vllm()
    python = {"python": str(VLLM_PYTHON)}
    with pytest.raises(ConfigError, match=r"model.tiny_size: head_dim 16 .*tiny sizes s or m"):
        load(tmp_path, vllm=python, model={"tiny_size": "xs"})
    folder = tmp_path / "odd"
    folder.mkdir()
    config = {"architectures": ["NoSuchModelForCausalLM"], "hidden_size": 64, "num_attention_heads": 2}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"model.base: vLLM .* cannot serve NoSuchModelForCausalLM"):
        load(tmp_path, vllm=python, model={"base": str(folder)})


@pytest.mark.parametrize(
    ("rollout", "message"),
    [
        ({"backend": "sglang"}, "rollout.backend must be hf or vllm"),
        ({"vllm": {"data_parallel": 0}}, "rollout.vllm.data_parallel must be >= 1"),
        (
            {"vllm": {"gpu_memory_utilization": 1.5}},
            r"rollout.vllm.gpu_memory_utilization must be in \(0, 1\]",
        ),
        ({"vllm": {"max_model_len": 100}}, r"rollout.vllm.max_model_len must be >= explore.max_context"),
        ({"vllm": {"tensor_paralel": 2}}, "unknown key.*tensor_paralel"),
    ],
)
def test_rollout_settings_are_checked(tmp_path, rollout, message):
    from trajkit.pipeline.config import run_config_from_dict

    with pytest.raises(ConfigError, match=message):
        run_config_from_dict({"run_dir": str(tmp_path), "rollout": rollout}, "recipe.yaml")


def test_gui_runs_are_refused(tmp_path):
    from trajkit.pipeline.config import run_config_from_dict

    data = {"run_dir": str(tmp_path), "env": {"name": "miniwob"}, "gui": {}, "rollout": {"backend": "vllm"}}
    with pytest.raises(ConfigError, match="rollout.backend vllm samples text policies only"):
        run_config_from_dict(data, "recipe.yaml")


def test_an_engine_that_fails_to_start_names_its_log(tmp_path):
    need_vllm()
    from trajkit.policy.vllm_backend import VLLMBackend, VLLMError, VLLMSettings

    folder = tmp_path / "broken"
    folder.mkdir()
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64}
    (folder / "config.json").write_text(json.dumps({**config, "num_attention_heads": 2, "vocab_size": 32}))
    settings = VLLMSettings(python=str(VLLM_PYTHON), kv_cache_gb=0.25)
    with pytest.raises(VLLMError) as err:
        VLLMBackend(str(folder), [1], settings, batch_size=1, max_model_len=64)
    line = str(err.value)
    assert "\n" not in line and line.startswith("rollout.backend: vllm: the vLLM engine for")
    log = Path(line.rsplit("log: ", 1)[1])
    assert log.is_file() and "Traceback" in log.read_text()


def test_a_converted_gguf_folder_is_served_without_its_quantization_key(tmp_path):
    from trajkit.policy.vllm_backend import serving_folder

    model = tmp_path / "smollm2"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights")
    config = {"architectures": ["LlamaForCausalLM"], "quantization_config": {"quant_method": "gguf"}}
    (model / "config.json").write_text(json.dumps(config))
    served = Path(serving_folder(str(model), tmp_path / "scratch"))
    assert served != model
    assert json.loads((served / "config.json").read_text()) == {"architectures": ["LlamaForCausalLM"]}
    assert (served / "model.safetensors").read_bytes() == b"weights"
    assert "quantization_config" in json.loads((model / "config.json").read_text())  # untouched
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    assert serving_folder(str(plain), tmp_path / "scratch2") == str(plain)


def test_stopping_kills_every_engine_process(engine):
    """Last in the file: it closes the module's engine."""
    from trajkit.policy.backends import Sampling

    backend, _ = engine
    groups = {r.proc.pid for r in backend.replicas}
    assert backend.generate([[1, 2, 3]], Sampling(temperature=0, max_new_tokens=3))[0]
    members = [pid for pid in _pids() if _pgid(pid) in groups]
    assert len(members) >= 4  # two replicas, each a server and its engine processes
    backend.close()
    assert not [pid for pid in _pids() if _pgid(pid) in groups]
    assert not backend.scratch.exists()
    with pytest.raises(RuntimeError, match="closed"):
        backend.generate([[1, 2, 3]], Sampling(temperature=0, max_new_tokens=3))
