"""The report of a GUI-agent ETO run: the text report plus per-task success, the plan-mode
comparison and chosen-vs-rejected screenshots with the click points drawn.

`write_gui_report(run_dir, summary, pair_files)` writes, besides what `report.write_report`
writes (summary.json, success.png, pairs.png, report.md):

- ``metrics.json``: the flat per-stage table plus ``plan_modes``:
  ``{stage: {mode: {split: {success_rate, n, by_task: {task: success_rate}}}}}``;
- ``per_task.png``: success per task, SFT vs the last ETO round (primary mode, first split);
- ``plan_modes.png``: success per task under each inference mode, for SFT and the last round;
- ``pair-<k>.png``: the screen of the first step where a chosen and a rejected side differ,
  each with its click point(s), and the code each side sent.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from trajkit.data.files import write_text_atomic
from trajkit.data.schema import AGENT
from trajkit.report import metrics_table, new_figure, plot_pairs, plot_success, render_report

PER_TASK_PNG = "per_task.png"
PLAN_MODES_PNG = "plan_modes.png"
_POINT = re.compile(r"x\s*=\s*(-?[0-9.]+)\s*,\s*y\s*=\s*(-?[0-9.]+)")
_COORD = re.compile(r"_coord\s*=\s*\[\s*(-?[0-9.]+)\s*,\s*(-?[0-9.]+)\s*\]")


def _by_task(metrics: dict[str, Any]) -> dict[str, float]:
    fam = metrics.get("by_family")
    if isinstance(fam, dict):
        return {name: float(m["success_rate"]) for name, m in fam.items()}
    return {}


def plan_mode_table(summary: dict[str, Any]) -> dict[str, Any]:
    modes = summary.get("gui", {}).get("modes", {})
    out: dict[str, Any] = {}
    for stage, per_mode in modes.items():
        out[stage] = {}
        for mode, per_split in per_mode.items():
            out[stage][mode] = {
                split: {
                    "success_rate": float(m["success_rate"]),
                    "n": int(m.get("n", 0)),
                    "by_task": _by_task(m),
                }
                for split, m in per_split.items()
            }
    return out


def _tasks(table: dict[str, Any], split: str) -> list[str]:
    names: list[str] = []
    for per_mode in table.values():
        for per_split in per_mode.values():
            for name in per_split.get(split, {}).get("by_task", {}):
                if name not in names:
                    names.append(name)
    return sorted(names)


def _rate(table, stage, mode, split, task=None) -> float | None:
    m = table.get(stage, {}).get(mode, {}).get(split)
    if m is None:
        return None
    if task is None:
        return m["success_rate"]
    by_task = m["by_task"]
    if not by_task:  # one task only: the split's rate is that task's
        return m["success_rate"]
    return by_task.get(task)


def _bars(path: Path, title: str, tasks: list[str], series: list[tuple[str, list[float | None]]]) -> Path:
    fig = new_figure(max(6.0, 1.1 * len(tasks) + 2), 4)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series):
        xs = [x - 0.4 + width * (i + 0.5) for x in range(len(tasks))]
        ys = [100 * v if v is not None else 0.0 for v in values]
        bars = ax.bar(xs, ys, width=width, label=label)
        ax.bar_label(bars, labels=[f"{y:.0f}" for y in ys], fontsize=7)
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels(tasks, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 110)
    ax.set_ylabel("success rate (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def _first_split(table: dict[str, Any]) -> str | None:
    for per_mode in table.values():
        for per_split in per_mode.values():
            for split in per_split:
                return split
    return None


def _points(code: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in _POINT.findall(code) + _COORD.findall(code)]


def first_difference(pair: dict[str, Any]) -> dict[str, Any] | None:
    """The screen before the first `os` step and each side's code there."""
    out: dict[str, Any] = {}
    for side in ("chosen", "rejected"):
        image = None
        for turn in pair["prompt"] + pair[side]:
            shots = turn.get("image")
            if shots:
                image = shots if isinstance(shots, str) else shots[-1]
            if turn["role"] == AGENT and turn.get("recipient", "os") == "os" and turn in pair[side]:
                out[side] = {"image": image, "code": turn["text"]}
                break
    if "chosen" not in out or "rejected" not in out:
        return None
    return out


def draw_pair(pair: dict[str, Any], path: Path) -> Path | None:
    """Chosen and rejected screens side by side, clicks drawn (green chosen, red rejected)."""
    from PIL import Image, ImageDraw

    diff = first_difference(pair)
    if diff is None:
        return None
    panels = []
    for side, color in (("chosen", (20, 170, 60)), ("rejected", (220, 30, 30))):
        info = diff[side]
        try:
            with Image.open(info["image"]) as im:
                shot = im.convert("RGB")
        except (OSError, TypeError, AttributeError):
            shot = Image.new("RGB", (320, 420), (200, 200, 200))
        shot = shot.resize((320, int(320 * shot.height / max(1, shot.width))))
        w, h = shot.size
        draw = ImageDraw.Draw(shot)
        for x, y in _points(info["code"]):
            px, py = (x * w, y * h) if x <= 1 and y <= 1 else (x * w / 320, y * w / 320)
            draw.ellipse([px - 7, py - 7, px + 7, py + 7], outline=color, width=3)
            draw.line([px - 10, py, px + 10, py], fill=color, width=1)
            draw.line([px, py - 10, px, py + 10], fill=color, width=1)
        reward = pair.get(f"{side}_reward")
        caption = f"{side} (reward {reward})\n" + "\n".join(info["code"].strip().splitlines()[:3])[:160]
        panel = Image.new("RGB", (w, h + 64), (255, 255, 255))
        panel.paste(shot, (0, 0))
        ImageDraw.Draw(panel).multiline_text((4, h + 4), _wrap(caption, 48), fill=color)
        panels.append(panel)
    out = Image.new(
        "RGB", (sum(p.width for p in panels) + 10, max(p.height for p in panels)), (255, 255, 255)
    )
    out.paste(panels[0], (0, 0))
    out.paste(panels[1], (panels[0].width + 10, 0))
    out.save(path)
    return path


def _wrap(text: str, width: int) -> str:
    lines = []
    for line in text.splitlines():
        while len(line) > width:
            lines.append(line[:width])
            line = line[width:]
        lines.append(line)
    return "\n".join(lines[:5])


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def write_gui_report(
    run_dir: str | Path, summary: dict[str, Any], pair_files: list[Path] | None = None, examples: int = 4
) -> Path:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    text_summary = {k: v for k, v in summary.items() if k != "gui"}
    table = plan_mode_table(summary)
    metrics = {**metrics_table(text_summary), "plan_modes": table}
    write_text_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")

    images: list[tuple[str, str]] = []
    for alt, name, plot in (("success", "success.png", plot_success), ("pairs", "pairs.png", plot_pairs)):
        if plot(text_summary, run_dir / name) is not None:
            images.append((alt, name))

    primary = summary.get("gui", {}).get("primary_mode")
    split = _first_split(table)
    stages = list(table)
    last = stages[-1] if stages else None
    lines: list[str] = []
    if split is not None and primary is not None and stages:
        tasks = _tasks(table, split) or [split]
        task_keys = [t if t != split else None for t in tasks]
        first = stages[0]
        series = [
            (s, [_rate(table, s, primary, split, t) for t in task_keys]) for s in dict.fromkeys([first, last])
        ]
        _bars(run_dir / PER_TASK_PNG, f"Success per task ({primary}, {split})", tasks, series)
        images.append(("per-task success", PER_TASK_PNG))
        mode_series = []
        for s in dict.fromkeys([first, last]):
            for mode in table[s]:
                mode_series.append((f"{s} {mode}", [_rate(table, s, mode, split, t) for t in task_keys]))
        _bars(run_dir / PLAN_MODES_PNG, f"Inference modes ({split})", tasks, mode_series)
        images.append(("plan modes", PLAN_MODES_PNG))

        lines += ["", f"## Success per task, SFT vs ETO ({primary}, split {split})", ""]
        lines += ["| task | " + " | ".join(dict.fromkeys([first, last])) + " |"]
        lines += ["|---" * (1 + len(dict.fromkeys([first, last]))) + "|"]
        for t, key in zip(tasks, task_keys, strict=True):
            cells = [_pct(_rate(table, s, primary, split, key)) for s in dict.fromkeys([first, last])]
            lines.append(f"| {t} | " + " | ".join(cells) + " |")

        lines += ["", "## Inference modes: the same checkpoint under each", ""]
        cols = [(s, m) for s in stages for m in table[s]]
        lines += ["| task | " + " | ".join(f"{s} {m}" for s, m in cols) + " |"]
        lines += ["|---" * (1 + len(cols)) + "|"]
        for t, key in zip([*tasks, "all"], [*task_keys, None], strict=True):
            lines.append(
                f"| {t} | " + " | ".join(_pct(_rate(table, s, m, split, key)) for s, m in cols) + " |"
            )

    drawn = []
    for old in run_dir.glob("pair-*.png"):
        old.unlink()
    pairs: list[dict[str, Any]] = []
    for path in pair_files or []:
        if Path(path).is_file():
            pairs += [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    for pair in pairs:
        if len(drawn) >= examples:
            break
        target = run_dir / f"pair-{len(drawn) + 1}.png"
        if draw_pair(pair, target) is not None:
            drawn.append((pair, target.name))
    if drawn:
        lines += ["", "## Chosen vs rejected (first step; green: chosen click, red: rejected click)", ""]
        for pair, name in drawn:
            lines += [f"- task `{pair.get('task_id')}`", "", f"  ![{pair.get('task_id')}]({name})", ""]

    path = run_dir / "report.md"
    write_text_atomic(path, render_report(text_summary, images).rstrip("\n") + "\n" + "\n".join(lines) + "\n")
    # Last: a run whose summary.json is there and current has every other report file whole.
    write_text_atomic(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return path
