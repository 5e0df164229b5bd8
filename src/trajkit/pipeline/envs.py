"""The envs of a run: the recipe's env, checked, and the rollout envs (in-process, in worker
processes or Ray actors, with injected faults when `env.faults` is set)."""

from __future__ import annotations

from typing import Any

from trajkit.config import ConfigError
from trajkit.pipeline.config import EnvSection


class EnvSettingError(ConfigError):
    """The recipe's env refused its settings (found when the env is made, not when read)."""


def make_run_env(name: str, kwargs: dict[str, Any]):
    """The recipe's env; an unknown name, an unusable env or a setting the env refuses is a
    `ConfigError` naming the recipe key."""
    from trajkit.envs.registry import EnvUnavailableError, UnknownEnvError, make_env

    try:
        return make_env(name, **kwargs)
    except (UnknownEnvError, EnvUnavailableError) as err:
        raise EnvSettingError(f"env.name: {err}") from None
    except (TypeError, ValueError) as err:  # an unknown keyword, a value the env refuses
        raise EnvSettingError(f"env.kwargs: env {name!r} refused its settings: {err}") from None


def make_rollout_env(section: EnvSection, kwargs: dict[str, Any]):
    """One rollout env: in a worker process or a Ray actor with per-call timeouts (`env.workers`:
    process or ray) or in this one; wrapped in `envs.faulty` when the recipe asks for faults
    (failures on purpose, to measure)."""
    factory, args = section.name, kwargs
    if section.faults is not None:
        from trajkit.envs.faulty import spec_dict

        factory = "trajkit.envs.faulty:make_faulty_env"
        args = {"name": section.name, "kwargs": kwargs, "faults": spec_dict(section.faults)}
    if section.workers == "ray":
        from trajkit.envs.ray_worker import RayEnvWorker

        return RayEnvWorker(factory, args, section.step_timeout, section.reset_timeout, section.ray_address)
    if section.workers:  # true or "process"
        from trajkit.envs.worker import EnvWorker

        return EnvWorker(factory, args, section.step_timeout, section.reset_timeout)
    if section.faults is not None:
        from trajkit.envs.faulty import make_faulty_env

        make_run_env(section.name, kwargs).close()  # its settings refused as a recipe error first
        return make_faulty_env(**args)
    return make_run_env(section.name, kwargs)
