"""Environments by name: register a factory, ask what is usable, make one.

A factory is a callable returning an env, or a "module:attribute" path imported only when the env
is made, so registering an adapter never imports its (often heavy) dependencies. An optional
`check` callable says whether the env can be made here: it returns None when it can, or a short
reason when it cannot (a package missing, an adapter not built yet, a server not reachable).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Factory = Callable[..., Any]
Check = Callable[[], "str | None"]
# Factories, checks and oracles may be given as "package.module:attribute" strings, so that
# registering an adapter imports nothing of it until it is used.


class UnknownEnvError(KeyError):
    """No env is registered under that name."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0]) if self.args else ""


class EnvUnavailableError(RuntimeError):
    """The env is registered but cannot be made here; the message says why."""


@dataclass(frozen=True)
class EnvInfo:
    name: str
    available: bool
    reason: str


@dataclass(frozen=True)
class _Entry:
    factory: Factory | str | None
    check: Check | str | None
    description: str
    oracle: Factory | str | None = None  # expert(env, task, seed) -> Trajectory


_REGISTRY: dict[str, _Entry] = {}


def register_env(
    name: str,
    factory: Factory | str | None,
    check: Check | str | None = None,
    *,
    description: str = "",
    oracle: Factory | str | None = None,
    replace: bool = False,
) -> None:
    """Register `factory` under `name`.

    `factory` may be None for an env that is known but not usable yet; give a `check` that says
    why. Registering a taken name is an error unless `replace=True` (so an adapter can take over
    a placeholder on purpose, never by accident).
    """
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"env name must be letters, digits, '-' or '_', got {name!r}")
    if isinstance(factory, str) and ":" not in factory:
        raise ValueError(f"factory path must look like 'package.module:attribute', got {factory!r}")
    if name in _REGISTRY and not replace:
        raise ValueError(f"env {name!r} is already registered; pass replace=True to override it")
    _REGISTRY[name] = _Entry(factory, check, description, oracle)


def unregister_env(name: str) -> None:
    _REGISTRY.pop(name, None)


def resolve_factory(path: str) -> Factory:
    """Import "package.module:attribute" and return the attribute (a class or function)."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"factory path must look like 'package.module:attribute', got {path!r}")
    module = importlib.import_module(module_name)
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"{module_name!r} has no attribute {attribute!r}") from None
    if not callable(target):
        raise ValueError(f"{path!r} is not callable")
    return target


def _check_arguments(check: Check, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The env kwargs a check takes (e.g. `data_dir`): whether an env is usable can depend on them."""
    import inspect

    try:
        params = inspect.signature(check).parameters
    except (TypeError, ValueError):
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(kwargs)
    return {k: v for k, v in kwargs.items() if k in params}


def _availability(entry: _Entry, kwargs: dict[str, Any] | None = None) -> tuple[bool, str]:
    if entry.check is not None:
        try:
            check = resolve_factory(entry.check) if isinstance(entry.check, str) else entry.check
            reason = check(**_check_arguments(check, kwargs or {}))
        except Exception as err:  # a broken check must not break `env list`
            return False, f"availability check failed: {type(err).__name__}: {err}"
        if reason:
            return False, reason
    if entry.factory is None:
        return False, "no factory registered"
    return True, entry.description or "available"


def list_envs() -> list[EnvInfo]:
    """Every registered env with whether it can be made here and why (not), sorted by name."""
    return [EnvInfo(name, *_availability(_REGISTRY[name])) for name in sorted(_REGISTRY)]


def registered_names() -> list[str]:
    """Every registered env name, sorted; imports no adapter."""
    return sorted(_REGISTRY)


def env_info(name: str) -> EnvInfo:
    return EnvInfo(name, *_availability(_lookup(name)))


def _lookup(name: str) -> _Entry:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise UnknownEnvError(f"unknown env {name!r}; registered envs: {known}") from None


def make_env(name: str, **kwargs: Any) -> Any:
    """A new env instance of the registered `name`, built with `kwargs`."""
    entry = _lookup(name)
    available, reason = _availability(entry, kwargs)
    if not available:
        raise EnvUnavailableError(f"env {name!r} is not available: {reason}")
    factory = resolve_factory(entry.factory) if isinstance(entry.factory, str) else entry.factory
    assert factory is not None  # _availability ruled out None
    return factory(**kwargs)


def get_oracle(name: str) -> Factory:
    """The env's scripted expert, `oracle(env, task, seed) -> Trajectory`."""
    entry = _lookup(name)
    if entry.oracle is None:
        raise EnvUnavailableError(f"env {name!r} has no oracle expert; give expert data paths instead")
    return resolve_factory(entry.oracle) if isinstance(entry.oracle, str) else entry.oracle


def play_oracle(
    name: str, split: str, limit: int | None = None, expert_seed: int = 0, **env_kwargs: Any
) -> list:
    """The scripted expert's episodes of the first `limit` tasks of `split` (all when None), in a
    fresh env made with `env_kwargs` and closed after."""
    env = make_env(name, **env_kwargs)
    oracle = get_oracle(name)
    try:
        return [oracle(env, task, expert_seed) for task in env.tasks(split)[:limit]]
    finally:
        env.close()


register_env(
    "household",
    "trajkit.envs.household:HouseholdEnv",
    description="built-in pure-Python household world (ALFWorld-style)",
    oracle="trajkit.envs.household:expert_trajectory",
)
# Real benchmarks: each adapter's `availability()` names what is missing (package, Java, data).
for _name, _module, _cls, _about in (
    ("sciworld", "sciworld", "ScienceWorldEnv", "ScienceWorld (scienceworld package, Java)"),
    ("alfworld", "alfworld", "ALFWorldEnv", "ALFWorld text games (alfworld package, game files)"),
    ("webshop", "webshop", "WebShopEnv", "WebShop over a product/goal data directory"),
    ("miniwob", "miniwob", "MiniWoBEnv", "MiniWoB++ task pages in headless Chromium"),
):
    register_env(
        _name,
        f"trajkit.envs.{_module}:{_cls}",
        f"trajkit.envs.{_module}:availability",
        description=_about,
        oracle=f"trajkit.envs.{_module}:oracle_trajectory",
    )
