"""The viewer's overview page: metrics per policy and split, plots, pair counts, stages, config and
manifest, rendered with Jinja2 (autoescape on) from templates shipped in the package."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trajkit.report.viewdata import RunData

SPLIT_COLORS = ("#2f6fdf", "#e8710a", "#1e8e3e", "#9334e6", "#d93025", "#12b5cb")
PAIR_KEYS = ("win", "tie", "lose", "pairs")


def _is_metrics(value: Any) -> bool:
    return isinstance(value, dict) and "success_rate" in value


def run_metrics(run: RunData) -> dict[str, dict[str, Any]]:
    """{policy: {split: metrics}}: the summary when the run finished, else each eval stage's
    metrics.json so far (a running run shows what it has). GUI runs: the primary mode."""
    if run.summary:
        return {
            policy: {split: m for split, m in per_split.items() if _is_metrics(m)}
            for policy, per_split in run.summary.items()
            if policy != "gui" and isinstance(per_split, dict)
        }
    out: dict[str, dict[str, Any]] = {}
    if run.run_dir is None:
        return out
    found = [
        (run.run_dir / "eval-sft" / "metrics.json", "sft"),
        (run.run_dir / "eval-rft" / "metrics.json", "rft"),
    ]
    rounds = sorted(
        run.run_dir.glob("round-*/eval/metrics.json"), key=lambda p: int(p.parent.parent.name[6:])
    )
    found += [(p, p.parent.parent.name) for p in rounds]
    for path, policy in found:
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if data and not any(_is_metrics(v) for v in data.values()):
            data = next(iter(data.values()), {})  # {mode: {split: m}}: the first mode
        out[policy] = {k: v for k, v in data.items() if _is_metrics(v)}
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _success_chart(metrics: dict[str, dict[str, Any]], splits: list[str]) -> dict[str, Any] | None:
    policies = [p for p in metrics if any(_is_metrics(metrics[p].get(s)) for s in splits)]
    if not policies or not splits:
        return None
    width, height, left, top, bottom = 560, 240, 44, 16, 36
    step = (width - left - 20) / max(1, len(policies))
    x_of = {p: left + step * (i + 0.5) for i, p in enumerate(policies)}

    def y_of(rate: float) -> float:
        return top + (height - top - bottom) * (1 - rate)

    series = []
    for k, split in enumerate(splits):
        shift = (k - (len(splits) - 1) / 2) * 6
        points = []
        for p in policies:
            m = metrics[p].get(split)
            if not _is_metrics(m):
                continue
            lo, hi = (m.get("success_ci95") or [m["success_rate"], m["success_rate"]])[:2]
            points.append(
                {
                    "x": round(x_of[p] + shift, 1),
                    "y": round(y_of(m["success_rate"]), 1),
                    "lo": round(y_of(lo), 1),
                    "hi": round(y_of(hi), 1),
                    "label": f"{p} {split}: {_pct(m['success_rate'])} (n={m.get('n', 0)})",
                }
            )
        path = " ".join(f"{'M' if i == 0 else 'L'}{pt['x']},{pt['y']}" for i, pt in enumerate(points))
        series.append(
            {"split": split, "color": SPLIT_COLORS[k % len(SPLIT_COLORS)], "points": points, "path": path}
        )
    grid = [{"y": round(y_of(v / 100), 1), "label": f"{v}%"} for v in (0, 25, 50, 75, 100)]
    ticks = [{"x": round(x, 1), "label": p} for p, x in x_of.items()]
    return {"width": width, "height": height, "series": series, "grid": grid, "ticks": ticks, "left": left}


def _pairs_chart(pairs: list[tuple[str, dict[str, Any]]]) -> dict[str, Any] | None:
    if not pairs:
        return None
    width, height, left, top, bottom = 560, 200, 44, 16, 36
    top_value = max([1.0] + [float(c.get(k, 0)) for _, c in pairs for k in PAIR_KEYS])
    group = min(160.0, (width - left - 20) / len(pairs))
    bar = group * 0.8 / len(PAIR_KEYS)
    bars = []
    for i, (name, counts) in enumerate(pairs):
        for j, key in enumerate(PAIR_KEYS):
            value = float(counts.get(key, 0))
            h = (height - top - bottom) * value / top_value
            bars.append(
                {
                    "x": round(left + group * i + group * 0.1 + bar * j, 1),
                    "y": round(height - bottom - h, 1),
                    "w": round(bar - 2, 1),
                    "h": round(h, 1),
                    "color": SPLIT_COLORS[j],
                    "label": f"{name} {key}: {int(value)}",
                    "value": int(value),
                }
            )
    ticks = [{"x": round(left + group * (i + 0.5), 1), "label": name} for i, (name, _) in enumerate(pairs)]
    legend = [{"key": k, "color": SPLIT_COLORS[j]} for j, k in enumerate(PAIR_KEYS)]
    return {
        "width": width,
        "height": height,
        "bars": bars,
        "ticks": ticks,
        "legend": legend,
        "base": height - bottom,
    }


def _run_context(run: RunData) -> dict[str, Any]:
    metrics = run_metrics(run)
    splits: list[str] = []
    for per_split in metrics.values():
        for split, m in per_split.items():
            if _is_metrics(m) and split not in splits:
                splits.append(split)
    rows = []
    for policy, per_split in metrics.items():
        cells = []
        for split in splits:
            m = per_split.get(split)
            if not _is_metrics(m):
                cells.append(None)
                continue
            ci = m.get("success_ci95") or [m["success_rate"], m["success_rate"]]
            cells.append(
                {
                    "rate": _pct(m["success_rate"]),
                    "ci": f"[{_pct(ci[0])}, {_pct(ci[1])}]",
                    "n": m.get("n", 0),
                    "reward": f"{100 * float(m.get('mean_reward', 0.0)):.1f}",
                }
            )
        rows.append({"policy": policy, "cells": cells})
    pairs = [(name, counts) for name, counts in sorted(run.stages.items()) if name.endswith("/pairs")]
    pairs = [(name.removesuffix("/pairs"), counts) for name, counts in pairs]
    modes = run.summary.get("gui", {}).get("modes") if run.summary else None
    return {
        "label": run.label,
        "dir": str(run.run_dir) if run.run_dir is not None else "",
        "splits": splits,
        "rows": rows,
        "success_chart": _success_chart(metrics, splits),
        "pairs": [{"round": name, **{k: counts.get(k, "–") for k in PAIR_KEYS}} for name, counts in pairs],
        "pairs_chart": _pairs_chart(pairs),
        "stages": [
            {
                "name": name,
                "info": ", ".join(f"{k}: {v}" for k, v in done.items() if not isinstance(v, (dict, list))),
            }
            for name, done in run.stages.items()
        ],
        "modes": json.dumps(modes, indent=1) if modes else "",
        "config": run.config_text,
        "manifest": json.dumps(run.manifest, indent=2) if run.manifest else "",
        "finished": bool(run.summary),
    }


def overview_context(runs: list[RunData], note: str, n_trajs: int, n_pairs: int) -> dict[str, Any]:
    return {
        "runs": [_run_context(r) for r in runs if r.run_dir is not None],
        "title": " · ".join(r.label for r in runs) or "trajkit view",
        "note": note,
        "n_trajs": n_trajs,
        "n_pairs": n_pairs,
    }


def render_page(context: dict[str, Any]) -> str:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(
        loader=FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=True,  # every value is text: config, task names, labels
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("viewer.html.j2").render(**context)
