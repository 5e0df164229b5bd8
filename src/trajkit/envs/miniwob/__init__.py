"""MiniWoB++ (the `miniwob` package's task pages) in headless Chromium, with a scripted expert.

Light on import: playwright and the browser are touched only when an episode starts.
"""

from trajkit.envs.miniwob.env import (
    DEFAULT_MAX_STEPS,
    DEFAULT_N_TEST,
    DEFAULT_N_TRAIN,
    INSTRUCTION,
    ORACLE_TASKS,
    SPLITS,
    TEST_SEED_OFFSET,
    MiniWoBEnv,
    availability,
    format_elements,
    task_names,
)
from trajkit.envs.miniwob.oracle import (
    IMAGE_DIR_ENV_VAR,
    OracleError,
    oracle_image_dir,
    oracle_trajectory,
    supported_tasks,
)

__all__ = [
    "DEFAULT_MAX_STEPS",
    "DEFAULT_N_TEST",
    "DEFAULT_N_TRAIN",
    "IMAGE_DIR_ENV_VAR",
    "INSTRUCTION",
    "ORACLE_TASKS",
    "SPLITS",
    "TEST_SEED_OFFSET",
    "MiniWoBEnv",
    "OracleError",
    "availability",
    "format_elements",
    "oracle_image_dir",
    "oracle_trajectory",
    "supported_tasks",
    "task_names",
]
