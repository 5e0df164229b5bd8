"""The vLLM side of `policy.vllm_backend`: one engine in a child process, JSON lines on stdin/stdout.

It runs with the rollout venv's Python (`.venv-vllm`, built from `constraints-vllm.txt`), whose
vLLM pins a transformers release older than the main venv's. So this file imports nothing of
trajkit and nothing but the standard library and vLLM: it is started as a script by path.

    python vllm_server.py '{"model": DIR, "dtype": "float32", ...}'

Protocol, one JSON object per line:
- first line out: {"ok": true, "ready": {...}} once the engine is up, or {"ok": false, "error": ...};
- in: {"op": "generate", "prompts": [[ids]], "temperature", "top_p", "max_new_tokens",
  "seeds": [...], "stop_ids": [...]} -> out: {"ok": true, "outputs": [[ids]]} (the sampled ids,
  the stop id included when one was sampled);
- in: {"op": "stop"}, or end of input (the parent went away): the engine shuts down and the
  process exits.

Everything vLLM prints goes to stderr (the parent points it at a log file): the protocol owns a
private copy of the original stdout, and fd 1 is redirected to stderr before vLLM is imported.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

# Run by path, Python puts this folder first on sys.path, where trajkit's own modules (models.py,
# decode.py, ...) would shadow same-named top-level packages that vLLM imports.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]


def _protocol_stream():
    out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)  # vLLM's prints (and its engine processes') land in the log, not in the protocol
    sys.stdout = sys.stderr
    return out


def _send(out, obj) -> None:
    out.write(json.dumps(obj) + "\n")
    out.flush()


def _error_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return f"{type(err).__name__}: {text}"[:2000]


def load_engine(args: dict):
    from vllm import LLM

    kwargs = {
        "model": args["model"],
        "dtype": args.get("dtype", "auto"),
        "tensor_parallel_size": int(args.get("tensor_parallel", 1)),
        "gpu_memory_utilization": float(args.get("gpu_memory_utilization", 0.9)),
        "enforce_eager": bool(args.get("enforce_eager", True)),
        # Token ids in, token ids out: the tokenizer is never needed (and its files were written by
        # a newer transformers than this venv's).
        "skip_tokenizer_init": True,
        # The model folder's generation_config.json must not change trajkit's sampling settings.
        "generation_config": "vllm",
        "seed": int(args.get("seed", 0)),
    }
    gib = args.get("kv_cache_gb")
    if gib is None:
        from vllm.platforms import current_platform

        gib = 2.0 if current_platform.is_cpu() else None  # CPU: never sized from free memory
    if gib is not None:
        kwargs["kv_cache_memory_bytes"] = int(float(gib) * (1 << 30))
    if args.get("max_model_len"):
        kwargs["max_model_len"] = int(args["max_model_len"])
    if args.get("max_num_seqs"):
        kwargs["max_num_seqs"] = int(args["max_num_seqs"])
    return LLM(**kwargs)


def generate(llm, req: dict) -> list[list[int]]:
    from vllm import SamplingParams

    prompts = req["prompts"]
    greedy = float(req["temperature"]) <= 0
    seeds = req.get("seeds") or [None] * len(prompts)
    params = [
        SamplingParams(
            temperature=0.0 if greedy else float(req["temperature"]),
            top_p=1.0 if greedy else float(req.get("top_p", 1.0)),
            top_k=0,
            seed=None if greedy else int(seed),
            max_tokens=int(req["max_new_tokens"]),
            # Only the template's end-of-turn ids end a completion, as in the HF backends.
            stop_token_ids=[int(t) for t in req["stop_ids"]],
            ignore_eos=True,
            detokenize=False,
        )
        for seed in seeds
    ]
    inputs = [{"prompt_token_ids": [int(t) for t in p]} for p in prompts]
    results = llm.generate(inputs, params, use_tqdm=False)
    return [list(r.outputs[0].token_ids) for r in results]


def main(argv: list[str]) -> int:
    out = _protocol_stream()
    try:
        args = json.loads(argv[1])
        llm = load_engine(args)
        import vllm

        _send(out, {"ok": True, "ready": {"vllm": vllm.__version__, "pid": os.getpid()}})
    except BaseException as err:  # noqa: BLE001  the parent gets one line, the log the traceback
        traceback.print_exc()
        _send(out, {"ok": False, "error": _error_line(err)})
        return 1
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            if req.get("op") == "stop":
                break
            if req.get("op") != "generate":
                raise ValueError(f"unknown op {req.get('op')!r}")
            _send(out, {"ok": True, "outputs": generate(llm, req)})
        except Exception as err:  # noqa: BLE001  a bad request costs that request, not the engine
            traceback.print_exc()
            _send(out, {"ok": False, "error": _error_line(err)})
    del llm  # shuts the engine core down before the interpreter exits
    return 0


if __name__ == "__main__":  # vLLM spawns its engine core: the guard keeps that child from re-running this
    sys.exit(main(sys.argv))
