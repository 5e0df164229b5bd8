"""A run's results as a Markdown report: success per split per stage, pairs per round."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def render_report(summary: dict[str, Any]) -> str:
    stages = list(summary)
    splits: list[str] = []
    for stage in stages:
        for key, value in summary[stage].items():
            if isinstance(value, dict) and "success_rate" in value and key not in splits:
                splits.append(key)
    lines = ["# Run report", "", "## Success rate (95% Wilson interval)", ""]
    lines.append("| policy | " + " | ".join(splits) + " |")
    lines.append("|---" * (len(splits) + 1) + "|")
    for stage in stages:
        cells = []
        for split in splits:
            m = summary[stage].get(split)
            if m is None:
                cells.append("–")
                continue
            lo, hi = m["success_ci95"]
            cells.append(f"{_pct(m['success_rate'])} [{_pct(lo)}, {_pct(hi)}] (n={m['n']})")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    rounds = [s for s in stages if "pairs" in summary[s]]
    if rounds:
        lines += ["", "## Exploration (rollout vs expert on train tasks)", ""]
        lines += ["| round | win | tie | lose | pairs |", "|---|---|---|---|---|"]
        for stage in rounds:
            p = summary[stage]["pairs"]
            lines.append(f"| {stage} | {p['win']} | {p['tie']} | {p['lose']} | {p['pairs']} |")
    return "\n".join(lines) + "\n"


def write_report(run_dir: str | Path, summary: dict[str, Any]) -> Path:
    run_dir = Path(run_dir)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    path = run_dir / "report.md"
    path.write_text(render_report(summary))
    return path
