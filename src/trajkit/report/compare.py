"""`trajkit runs compare`: run folders side by side: where their configs differ, and success per
policy and split with 95% Wilson intervals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trajkit.evaluate import wilson_interval
from trajkit.report.viewdata import read_run
from trajkit.report.viewpage import run_metrics

ABSENT = "(absent)"  # a key one run's config does not have (an older version wrote it)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out or {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): data}


def _interval(m: dict[str, Any]) -> tuple[float, float]:
    ci = m.get("success_ci95")
    if isinstance(ci, (list, tuple)) and len(ci) == 2:
        return float(ci[0]), float(ci[1])
    n = int(m.get("n", 0))
    return wilson_interval(round(float(m["success_rate"]) * n), n)


def compare_runs(run_dirs: list[str | Path]) -> dict[str, Any]:
    """{"runs": [...], "config": [{"key", "values"}], "metrics": [{"policy", "split", "values"}]}:
    config keys whose values differ (run_dir left out), metrics as {rate, ci95, n} or None."""
    import yaml

    runs = [read_run(Path(d)) for d in run_dirs]
    configs = []
    for run in runs:
        try:
            loaded = yaml.safe_load(run.config_text) if run.config_text else {}
        except yaml.YAMLError:
            loaded = {}
        flat = _flatten(loaded if isinstance(loaded, dict) else {})
        flat.pop("run_dir", None)
        configs.append(flat)
    keys = sorted({k for c in configs for k in c})
    config = [
        {"key": k, "values": [c.get(k, ABSENT) for c in configs]}
        for k in keys
        if len({repr(c.get(k, ABSENT)) for c in configs}) > 1
    ]
    per_run = [run_metrics(run) for run in runs]
    policies: list[str] = []
    splits: list[str] = []
    for metrics in per_run:
        for policy, per_split in metrics.items():
            policies += [policy] if policy not in policies else []
            splits += [s for s in per_split if s not in splits]
    rows = []
    for policy in policies:
        for split in splits:
            values = []
            for metrics in per_run:
                m = metrics.get(policy, {}).get(split)
                if m is None:
                    values.append(None)
                    continue
                lo, hi = _interval(m)
                values.append({"rate": float(m["success_rate"]), "ci95": [lo, hi], "n": int(m.get("n", 0))})
            if any(v is not None for v in values):
                rows.append({"policy": policy, "split": split, "values": values})
    return {"runs": [str(d) for d in run_dirs], "config": config, "metrics": rows}


def _cell(v: dict[str, Any] | None) -> str:
    if v is None:
        return "–"
    lo, hi = v["ci95"]
    return f"{100 * v['rate']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] n={v['n']}"


def render_compare(table: dict[str, Any]) -> str:
    """The comparison as Markdown tables (read in a terminal or pasted into notes)."""
    names = [Path(r).name or r for r in table["runs"]]
    if len(set(names)) < len(names):  # runs/a/run and runs/b/run: name them by their last two parts
        names = ["/".join(Path(r).resolve().parts[-2:]) for r in table["runs"]]
    lines = ["## Runs", ""] + [f"- **{n}**: {r}" for n, r in zip(names, table["runs"], strict=True)]
    lines += ["", "## Config differences", ""]
    if table["config"]:
        lines += ["| key | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for row in table["config"]:
            cells = ["null" if v is None else str(v).replace("|", "\\|") for v in row["values"]]
            lines.append(f"| {row['key']} | " + " | ".join(cells) + " |")
    else:
        lines.append("The configs are the same (run_dir aside).")
    lines += ["", "## Success rate (95% Wilson interval)", ""]
    if table["metrics"]:
        lines += ["| policy | split | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
        for row in table["metrics"]:
            lines.append(
                f"| {row['policy']} | {row['split']} | " + " | ".join(_cell(v) for v in row["values"]) + " |"
            )
    else:
        lines.append("No run has evaluation results yet.")
    return "\n".join(lines) + "\n"
