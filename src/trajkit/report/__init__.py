"""A run's results as a Markdown report, a flat metrics file and two plots.

`write_report` writes into the run folder:

- ``summary.json``: the summary as given;
- ``metrics.json``: ``{stage: {split: {success_rate, success_ci95, mean_reward, n}}}``;
- ``success.png``: success rate per policy stage, one line per split, 95% CI error bars;
- ``pairs.png``: win / tie / lose / pairs counts per round (only when there are rounds);
- ``report.md``: the tables, with the plots embedded.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PAIR_KEYS = ("win", "tie", "lose", "pairs")
SUCCESS_PNG = "success.png"
PAIRS_PNG = "pairs.png"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _x100(x: float) -> str:
    return f"{100 * x:.1f}"


def _is_metrics(value: Any) -> bool:
    return isinstance(value, dict) and "success_rate" in value


def _stages(summary: dict[str, Any]) -> list[str]:
    return [s for s in summary if isinstance(summary[s], dict)]


def _splits(summary: dict[str, Any]) -> list[str]:
    splits: list[str] = []
    for stage in _stages(summary):
        for key, value in summary[stage].items():
            if _is_metrics(value) and key not in splits:
                splits.append(key)
    return splits


def _metrics(summary: dict[str, Any], stage: str, split: str) -> dict[str, Any] | None:
    value = summary.get(stage, {}).get(split)
    return value if _is_metrics(value) else None


def _ci(m: dict[str, Any]) -> tuple[float, float] | None:
    ci = m.get("success_ci95")
    if isinstance(ci, (list, tuple)) and len(ci) == 2:
        return float(ci[0]), float(ci[1])
    return None


def _rounds(summary: dict[str, Any]) -> list[str]:
    return [s for s in _stages(summary) if isinstance(summary[s].get("pairs"), dict)]


def metrics_table(summary: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """The per-stage, per-split metrics in a flat shape that does not change between runs."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for stage in _stages(summary):
        out[stage] = {}
        for key, m in summary[stage].items():
            if not _is_metrics(m):
                continue
            ci = _ci(m)
            out[stage][key] = {
                "success_rate": float(m["success_rate"]),
                "success_ci95": list(ci) if ci else None,
                "mean_reward": float(m.get("mean_reward", 0.0)),
                "n": int(m.get("n", 0)),
            }
    return out


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _success_cell(m: dict[str, Any] | None) -> str:
    if m is None:
        return "–"
    ci = _ci(m)
    ci_text = f" [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else ""
    return f"{_pct(m['success_rate'])}{ci_text} (n={m.get('n', 0)})"


def _family_section(summary: dict[str, Any], splits: list[str]) -> list[str]:
    stages = _stages(summary)
    if not stages:
        return []
    last = stages[-1]
    fam_splits = [s for s in splits if isinstance((_metrics(summary, last, s) or {}).get("by_family"), dict)]
    if not fam_splits:
        return []
    families: list[str] = []
    for split in fam_splits:
        for name in summary[last][split]["by_family"]:
            if name not in families:
                families.append(name)
    header = ["family"]
    for split in fam_splits:
        header += [f"{split} success", f"{split} reward ×100"]
    rows = []
    for name in families:
        row = [name]
        for split in fam_splits:
            m = summary[last][split]["by_family"].get(name)
            if m is None:
                row += ["–", "–"]
            else:
                row += [
                    f"{_pct(m['success_rate'])} (n={m.get('n', 0)})",
                    _x100(m.get("mean_reward", 0.0)),
                ]
        rows.append(row)
    return ["", f"## Per task family ({last})", "", *_table(header, rows)]


def render_report(summary: dict[str, Any], images: Sequence[tuple[str, str]] = ()) -> str:
    """Markdown for `summary`; `images` are (alt text, relative path) pairs to embed."""
    stages = _stages(summary)
    splits = _splits(summary)
    lines = ["# Run report"]
    for alt, path in images:
        lines += ["", f"![{alt}]({path})"]

    lines += ["", "## Success rate (95% Wilson interval)", ""]
    rows = [[stage] + [_success_cell(_metrics(summary, stage, s)) for s in splits] for stage in stages]
    lines += _table(["policy", *splits], rows)

    lines += ["", "## Average reward ×100", ""]
    rows = []
    for stage in stages:
        row = [stage]
        for split in splits:
            m = _metrics(summary, stage, split)
            row.append("–" if m is None else _x100(m.get("mean_reward", 0.0)))
        rows.append(row)
    lines += _table(["policy", *splits], rows)

    lines += _family_section(summary, splits)

    rounds = _rounds(summary)
    if rounds:
        lines += ["", "## Exploration (rollout vs expert on train tasks)", ""]
        rows = [[stage] + [str(summary[stage]["pairs"].get(k, 0)) for k in PAIR_KEYS] for stage in rounds]
        lines += _table(["round", *PAIR_KEYS], rows)
    return "\n".join(lines) + "\n"


def new_figure(width: float, height: float) -> Any:
    # Agg canvas on a bare Figure: no pyplot, no global backend switch.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_success(summary: dict[str, Any], path: str | Path) -> Path | None:
    """Success rate (%) per stage, one line per split with 95% CI bars; None if nothing to plot."""
    stages = _stages(summary)
    splits = _splits(summary)
    if not splits:
        return None
    fig = new_figure(max(5.0, 1.2 * len(stages) + 2), 4)
    ax = fig.add_subplot()
    width = 0.08 * (len(splits) - 1)
    for i, split in enumerate(splits):
        # Small horizontal offset per split so the error bars do not overlap.
        shift = -width / 2 + (width * i / (len(splits) - 1) if len(splits) > 1 else 0.0)
        xs, ys, lo, hi = [], [], [], []
        for x, stage in enumerate(stages):
            m = _metrics(summary, stage, split)
            xs.append(x + shift)
            if m is None:
                # NaN breaks the line, so a stage without this split is not bridged over.
                ys.append(math.nan)
                lo.append(0.0)
                hi.append(0.0)
                continue
            rate = 100 * float(m["success_rate"])
            ci = _ci(m) or (m["success_rate"], m["success_rate"])
            ys.append(rate)
            lo.append(max(0.0, rate - 100 * ci[0]))
            hi.append(max(0.0, 100 * ci[1] - rate))
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=4, label=split)
    ax.set_xticks(range(len(stages)))
    ax.set_xticklabels(stages)
    ax.set_xlim(-0.5, len(stages) - 0.5)
    ax.set_ylim(-2, 102)
    ax.set_xlabel("policy")
    ax.set_ylabel("success rate (%)")
    ax.set_title("Success rate with 95% CI")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png")
    return path


def plot_pairs(summary: dict[str, Any], path: str | Path) -> Path | None:
    """Grouped bars of win / tie / lose / pairs per round; None if there are no rounds."""
    rounds = _rounds(summary)
    if not rounds:
        return None
    fig = new_figure(max(5.0, 1.5 * len(rounds) + 2), 4)
    ax = fig.add_subplot()
    bar = 0.8 / len(PAIR_KEYS)
    top = 0.0
    for i, key in enumerate(PAIR_KEYS):
        counts = [float(summary[r]["pairs"].get(key, 0)) for r in rounds]
        top = max([top, *counts])
        xs = [x - 0.4 + bar * (i + 0.5) for x in range(len(rounds))]
        bars = ax.bar(xs, counts, width=bar, label=key)
        ax.bar_label(bars, labels=[str(int(c)) for c in counts], fontsize=8)
    ax.set_xticks(range(len(rounds)))
    ax.set_xticklabels(rounds)
    ax.set_ylim(0, max(1.0, top) * 1.15)
    ax.set_xlabel("round")
    ax.set_ylabel("count")
    ax.set_title("Exploration: rollout vs expert")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png")
    return path


def write_report(run_dir: str | Path, summary: dict[str, Any]) -> Path:
    """Write summary.json, metrics.json, the plots and report.md; return report.md's path."""
    from trajkit.data.files import write_text_atomic

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "metrics.json", json.dumps(metrics_table(summary), indent=2) + "\n")
    images: list[tuple[str, str]] = []
    for alt, name, plot in (("success", SUCCESS_PNG, plot_success), ("pairs", PAIRS_PNG, plot_pairs)):
        target = run_dir / name
        if plot(summary, target) is not None:
            images.append((alt, name))
        elif target.exists():
            target.unlink()  # left by an earlier write that had data for it
    path = run_dir / "report.md"
    write_text_atomic(path, render_report(summary, images))
    # Last: a run whose summary.json is there and current has every other report file whole.
    write_text_atomic(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return path
