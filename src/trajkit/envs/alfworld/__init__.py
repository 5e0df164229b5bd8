"""ALFWorld's text games (the `alfworld` package: TextWorld + PDDL) as a trajkit env.

Light on import: alfworld and textworld are imported only when an episode starts. The games are
user-provided files (`$ALFWORLD_DATA` or `data_dir`); see docs/envs/alfworld.md.
"""

from trajkit.envs.alfworld.env import (
    DATA_ENV_VAR,
    DEFAULT_MAX_STEPS,
    INSTRUCTION,
    NOTHING,
    PROMPTS_ENV_VAR,
    SPLITS,
    ALFWorldEnv,
    availability,
    first_observation,
    installed_version,
    observation_text,
    package_reason,
)
from trajkit.envs.alfworld.expert import ORACLE_NAME, ExpertError, oracle_trajectory
from trajkit.envs.alfworld.games import (
    SPLIT_DIRS,
    TASK_TYPES,
    ALFWorldDataError,
    list_games,
    parse_task_dir,
    resolve_games_root,
    traj_data_stub,
    write_traj_data_overlay,
)

__all__ = [
    "DATA_ENV_VAR",
    "DEFAULT_MAX_STEPS",
    "INSTRUCTION",
    "NOTHING",
    "ORACLE_NAME",
    "PROMPTS_ENV_VAR",
    "SPLITS",
    "SPLIT_DIRS",
    "TASK_TYPES",
    "ALFWorldDataError",
    "ALFWorldEnv",
    "ExpertError",
    "availability",
    "first_observation",
    "installed_version",
    "list_games",
    "observation_text",
    "oracle_trajectory",
    "package_reason",
    "parse_task_dir",
    "resolve_games_root",
    "traj_data_stub",
    "write_traj_data_overlay",
]
