"""Shared parsing machinery: whitelisted calls read from the syntax tree, argument binding, scales.

`read_calls` walks the `ast` of the text and accepts only statements that are calls of a plain
or dotted name with literal arguments; nothing is evaluated. The dialect modules bind those calls
to signatures and build actions through a point function, which `resolve_scale`/`normalize` make
once the coordinate scale of the whole step is known.
"""

from __future__ import annotations

import ast
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from trajkit.gui.actions.records import (
    COORD_DECIMALS,
    K_RANGE,
    SCALES,
    Action,
    ActionParseError,
    ActionRenderError,
    is_number,
)

_MAX_LITERAL_DEPTH = 4


# ---------------------------------------------------------------------------------------------
# reading literals out of the syntax tree


def _describe(node: ast.AST) -> str:
    if isinstance(node, ast.Call):
        return "a nested call"
    if isinstance(node, ast.Name):
        return f"the name {node.id!r} (only literal values are allowed)"
    if isinstance(node, ast.Attribute):
        return "attribute access"
    if isinstance(node, ast.Lambda):
        return "a lambda"
    if isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
        return "a comprehension"
    if isinstance(node, ast.Starred):
        return "a starred argument"
    if isinstance(node, ast.JoinedStr):
        return "an f-string"
    if isinstance(node, (ast.Dict, ast.Set)):
        return "a dict or set"
    if isinstance(node, (ast.BinOp, ast.BoolOp, ast.Compare, ast.IfExp)):
        return "an expression (only literal values are allowed)"
    if isinstance(node, ast.Constant):
        return f"the constant {node.value!r}"
    return f"a {type(node).__name__} node"


def _literal(node: ast.AST, where: str, depth: int = 0) -> Any:
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, str):
            return value
        if is_number(value):
            if not math.isfinite(value):
                raise ActionParseError(f"{where}: number {value!r} is not finite")
            return value
        raise ActionParseError(f"{where}: {_describe(node)} is not allowed")
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, (ast.USub, ast.UAdd))
        and isinstance(node.operand, ast.Constant)
        and is_number(node.operand.value)
    ):
        value = node.operand.value
        if not math.isfinite(value):
            raise ActionParseError(f"{where}: number is not finite")
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, (ast.List, ast.Tuple)):
        if depth >= _MAX_LITERAL_DEPTH:
            raise ActionParseError(f"{where}: lists nested too deeply")
        return [_literal(e, where, depth + 1) for e in node.elts]
    raise ActionParseError(f"{where}: {_describe(node)} is not allowed")


def _call_name(func: ast.AST, line: int) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        if isinstance(func.value, ast.Name):
            return f"{func.value.id}.{func.attr}"
        raise ActionParseError(f"line {line}: attribute access outside the whitelist ({ast.unparse(func)})")
    raise ActionParseError(f"line {line}: {_describe(func)} cannot be called")


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    line: int


def read_calls(text: str) -> list[Call]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escapes in model text are not our concern
            tree = ast.parse(text, mode="exec")
    except SyntaxError as err:
        raise ActionParseError(f"syntax error at line {err.lineno}: {err.msg}") from None
    except (ValueError, RecursionError, MemoryError) as err:
        raise ActionParseError(f"unreadable action text: {err}") from None
    calls: list[Call] = []
    for stmt in tree.body:
        line = getattr(stmt, "lineno", 0)
        if not isinstance(stmt, ast.Expr) or not isinstance(stmt.value, ast.Call):
            kind = type(stmt.value).__name__ if isinstance(stmt, ast.Expr) else type(stmt).__name__
            raise ActionParseError(f"line {line}: only action calls are allowed, got {kind}")
        call = stmt.value
        name = _call_name(call.func, line)
        where = f"line {line}: {name}()"
        args = []
        for arg in call.args:
            if isinstance(arg, ast.Starred):
                raise ActionParseError(f"{where}: a starred argument is not allowed")
            args.append(_literal(arg, where))
        kwargs: dict[str, Any] = {}
        for kw in call.keywords:
            if kw.arg is None:
                raise ActionParseError(f"{where}: **keyword unpacking is not allowed")
            kwargs[kw.arg] = _literal(kw.value, f"{where} argument {kw.arg!r}")
        calls.append(Call(name, tuple(args), kwargs, line))
    return calls


# ---------------------------------------------------------------------------------------------
# call signatures and argument checks


@dataclass(frozen=True)
class Signature:
    params: tuple[str, ...]  # in positional order
    required: tuple[str, ...] = ()
    aliases: tuple[tuple[str, str], ...] = ()  # (spelling, parameter)
    varargs: str | None = None  # parameter collecting extra positionals
    ignored: tuple[str, ...] = ()  # timing knobs that change nothing about what is done


def bind(call: Call, sig: Signature) -> dict[str, Any]:
    where = f"line {call.line}: {call.name}()"
    bound: dict[str, Any] = {}
    positional = list(call.args)
    if sig.varargs is not None and len(positional) > 1:
        # hotkey('ctrl', 'c'): every positional is one key.
        bound[sig.varargs] = positional
        positional = []
    if len(positional) > len(sig.params):
        raise ActionParseError(
            f"{where} takes at most {len(sig.params)} positional arguments, got {len(call.args)}"
        )
    for name, value in zip(sig.params, positional, strict=False):
        bound[name] = value
    aliases = dict(sig.aliases)
    for key, value in call.kwargs.items():
        if key in sig.ignored:
            continue
        name = aliases.get(key, key)
        if name not in sig.params:
            raise ActionParseError(f"{where}: unexpected argument {key!r}")
        if name in bound:
            raise ActionParseError(f"{where}: argument {name!r} given twice")
        bound[name] = value
    missing = [p for p in sig.required if p not in bound]
    if missing:
        raise ActionParseError(f"{where}: missing argument {', '.join(repr(m) for m in missing)}")
    return bound


# A point function turns raw (x, y) values into normalized coordinates under the chosen scale.
PointFn = Callable[[Any, Any, str], tuple[float, float]]


def as_str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ActionParseError(f"{what} must be a string, got {value!r}")
    return value


def as_number(value: Any, what: str) -> float:
    if not is_number(value):
        raise ActionParseError(f"{what} must be a number, got {value!r}")
    return value


def as_keys(value: Any, what: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(k, str) and k for k in items):
        raise ActionParseError(f"{what} must be a key name or a non-empty list of key names, got {value!r}")
    return tuple(items)


def as_pair(value: Any, what: str) -> tuple[Any, Any]:
    if not isinstance(value, list) or len(value) != 2:
        raise ActionParseError(f"{what} must be a [x, y] pair, got {value!r}")
    return value[0], value[1]


def optional_point(a: dict[str, Any], pt: PointFn, what: str) -> tuple[float | None, float | None]:
    if "x" not in a and "y" not in a:
        return None, None
    if "x" not in a or "y" not in a:
        raise ActionParseError(f"{what}: x and y must be given together")
    return pt(a["x"], a["y"], what)


# Builds an action from bound arguments, a point function and where the call is (for messages).
Builder = Callable[[dict[str, Any], PointFn, str], Action]


# ---------------------------------------------------------------------------------------------
# coordinate scale


def check_raw(value: Any, what: str) -> float:
    if not is_number(value):
        raise ActionParseError(f"{what}: coordinate must be a number, got {value!r}")
    if value < 0:
        raise ActionParseError(f"{what}: coordinate {value!r} is negative")
    return value


def resolve_scale(
    scale: str, family: str, raw: Sequence[float], width: int | None, height: int | None
) -> tuple[str, float, float]:
    """The scale in force and the divisors for x and y."""
    if scale not in SCALES:
        raise ActionParseError(f"unknown scale {scale!r}; expected one of {', '.join(SCALES)}")
    has_size = width is not None and height is not None
    if scale == "px" or (
        scale == "auto" and has_size and raw and max(raw) > (1 if family == "pyautogui" else K_RANGE)
    ):
        if not has_size:
            raise ActionParseError("scale px needs the screen width and height")
        if width <= 0 or height <= 0:  # type: ignore[operator]
            raise ActionParseError(f"screen size must be positive, got {width}x{height}")
        return "px", float(width), float(height)  # type: ignore[arg-type]
    if scale == "norm" or (scale == "auto" and family == "pyautogui" and (not raw or max(raw) <= 1)):
        return "norm", 1.0, 1.0
    if scale == "auto" and family == "pyautogui" and any(0 < v < 1 for v in raw):
        # 0.2 next to 1.5 reads as a normalized point gone out of range, not as 0-1000.
        raise ActionParseError(
            f"coordinate {max(raw)!r} is out of range for normalized coordinates "
            "(other values are below 1); pass the scale explicitly if this is 0-1000 or pixels"
        )
    if scale == "k" or (scale == "auto" and (not raw or max(raw) <= K_RANGE)):
        return "k", float(K_RANGE), float(K_RANGE)
    raise ActionParseError(
        f"coordinate {max(raw)!r} is beyond the 0-1000 range; give the screen size to read pixels"
    )


def normalize(value: float, divisor: float, scale: str, what: str) -> float:
    out = round(value / divisor, COORD_DECIMALS)
    if out > 1.0:
        limit = {"norm": "1", "k": "1000"}.get(scale, f"{divisor:g} pixels")
        raise ActionParseError(
            f"{what}: coordinate {value!r} is out of range for scale {scale} (max {limit})"
        )
    return float(out)


# A step's action, waiting for the coordinate scale to be known.
Pending = Callable[[PointFn], Action]

# ---------------------------------------------------------------------------------------------
# rendering numbers


def num_text(value: float) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


def coord_text(value: float) -> str:
    return repr(float(round(value, COORD_DECIMALS)))


def k_text(value: float) -> str:
    # One decimal on 0-1000 keeps all four decimals of the normalized value, so parsing is exact.
    scaled = round(value * K_RANGE, 1)
    return str(int(scaled)) if scaled == int(scaled) else repr(scaled)


def needs_point(action: Any, style: str) -> None:
    if action.x is None:
        raise ActionRenderError(f"{style} cannot express {action.type} without a point")
