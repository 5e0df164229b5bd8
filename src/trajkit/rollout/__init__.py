"""Rollouts: one lock-step engine (`engine`) and the agent protocols it drives (`react` for ETO's
text agents, `aguvis` for GUI agents)."""

from trajkit.rollout.engine import (
    AgentProtocol,
    Episode,
    RolloutConfig,
    episode_id,
    read_done,
    run_rollouts,
    sample_seed,
)

__all__ = [
    "AgentProtocol",
    "Episode",
    "RolloutConfig",
    "episode_id",
    "read_done",
    "run_rollouts",
    "sample_seed",
]
