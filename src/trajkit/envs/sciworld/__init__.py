"""ScienceWorld (the `scienceworld` package and its simulator jar, run on Java) as a trajkit env.

Light on import: the package, py4j and the JVM are touched only when an episode starts.
"""

from trajkit.envs.sciworld.env import (
    DATA_ENV_VAR,
    DEFAULT_MAX_STEPS,
    INSTRUCTION,
    PROMPTS_ENV_VAR,
    SPLITS,
    ScienceWorldEnv,
    availability,
    package_variation_sets,
    simulator_task_name,
)
from trajkit.envs.sciworld.expert import oracle_trajectory, templated_thought

__all__ = [
    "DATA_ENV_VAR",
    "DEFAULT_MAX_STEPS",
    "INSTRUCTION",
    "PROMPTS_ENV_VAR",
    "SPLITS",
    "ScienceWorldEnv",
    "availability",
    "oracle_trajectory",
    "package_variation_sets",
    "simulator_task_name",
    "templated_thought",
]
