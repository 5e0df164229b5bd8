"""Env stepping speed: the household world in process against the same world behind an EnvWorker.

Both sides replay the scripted expert's actions of the same train tasks (so every step is a real,
valid move) and count env steps per second. The worker side pays one pipe round trip per call to
a child process: the ratio is what crash isolation costs per step.

    .venv/bin/python benchmarks/env_steps.py [--tasks 60 --repeats 5 --layout standard]

Output: a line per side with steps/s, the ratio in-process/worker, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

from trajkit.envs.base import parse_react_action
from trajkit.envs.household import HouseholdEnv, expert_trajectory
from trajkit.envs.worker import EnvWorker


def replay(env, plans, repeats: int) -> tuple[int, float]:
    steps, start = 0, time.perf_counter()
    for _ in range(repeats):
        for task, actions in plans:
            env.reset(task)
            for action in actions:
                env.step(action)
            steps += len(actions)
    return steps, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=60)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--layout", default="standard", choices=["standard", "compact"])
    args = p.parse_args(argv)

    env = HouseholdEnv(n_train=args.tasks, n_test=0, layout=args.layout)
    plans = []
    for task in env.tasks("train"):
        traj = expert_trajectory(env, task)
        plans.append((task, [parse_react_action(t.text) for t in traj.agent_turns[1:]]))

    local_steps, local_s = replay(env, plans, args.repeats)
    with EnvWorker("household", {"n_train": 0, "n_test": 0, "layout": args.layout}) as worker:
        worker.reset(plans[0][0])  # start the child outside the timed part
        worker_steps, worker_s = replay(worker, plans, args.repeats)
    local_rate, worker_rate = local_steps / local_s, worker_steps / worker_s
    print(f"in process: {local_rate:,.0f} env steps/s ({local_steps} steps in {local_s:.2f}s)")
    print(f"EnvWorker:  {worker_rate:,.0f} env steps/s ({worker_steps} steps in {worker_s:.2f}s)")
    print(f"ratio in-process/worker: {local_rate / worker_rate:.1f}x")
    print(
        json.dumps(
            {
                "layout": args.layout,
                "tasks": args.tasks,
                "in_process_steps_per_s": round(local_rate, 1),
                "worker_steps_per_s": round(worker_rate, 1),
                "ratio": round(local_rate / worker_rate, 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
