"""Click grounding of GUI rollouts: does the policy's first click of an episode land on the target?

The gold is the scripted expert's record of the same task and seed. MiniWoB++'s oracle writes, per
step, 0-1 of the screenshot and None for steps that are not clicks, `metadata["target_boxes"]`
(the clicked element's DOM box) and `metadata["target_alternatives"]` (boxes that would do as well,
e.g. a checkbox's label). Only an episode's first step is scored: its screen is the
seed's start page whatever the policy does, so the expert's boxes hold for it; later screens depend
on the policy's earlier actions and the expert's boxes no longer describe them.

An episode counts when its task's expert step 0 is a click; it is right when the rollout's first
step begins with a click (click, double or triple click) whose point lies inside one of those
boxes. A first step that is another action (`not_click`) or cannot be parsed (`unparseable`) is
wrong. Results per task (the task id without its seed) and overall, with 95% Wilson intervals.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trajkit.data.schema import AGENT, Trajectory
from trajkit.gui.actions import ActionParseError, action_point
from trajkit.gui.grounding_data import task_family
from trajkit.gui.metrics import Bucket, point_in_box
from trajkit.gui.prompts import parse_completion
from trajkit.gui.reasoning import RECIPIENT_ALL

CLICK_TYPES = ("click", "double_click", "triple_click")


def step_codes(traj: Trajectory) -> list[str]:
    """The code of each step: the last non-`all` agent turn of each run of agent turns."""
    codes: list[str] = []
    previous_agent = False
    for turn in traj.turns:
        if turn.role == AGENT:
            if not previous_agent:
                codes.append("")
            if turn.recipient != RECIPIENT_ALL:
                codes[-1] = turn.text
        previous_agent = turn.role == AGENT
    return codes


def _is_box(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 4
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )


def first_targets(expert: Trajectory) -> list[list[float]] | None:
    """The boxes the expert's step-0 click may land in (`target_boxes[0]` plus
    `target_alternatives[0]`), or None when step 0 is not a click; ValueError when the record has
    no usable `target_boxes`."""
    meta = expert.metadata
    boxes = meta.get("target_boxes")
    if not isinstance(boxes, list):
        raise ValueError(
            f"expert {expert.id!r}: field 'metadata.target_boxes': missing (not an oracle record?)"
        )
    if not boxes or boxes[0] is None:
        return None
    if not _is_box(boxes[0]):
        raise ValueError(f"expert {expert.id!r}: field 'metadata.target_boxes[0]': must be [x1, y1, x2, y2]")
    extra = meta.get("target_alternatives")
    more = extra[0] if isinstance(extra, list) and extra and extra[0] is not None else []
    if not (isinstance(more, list) and all(_is_box(b) for b in more)):
        raise ValueError(
            f"expert {expert.id!r}: field 'metadata.target_alternatives[0]': must be a list of [x1, y1, x2, y2]"
        )
    return [boxes[0], *more]


@dataclass
class ClickGroundingReport:
    overall: Bucket = field(default_factory=Bucket)
    by_task: dict[str, Bucket] = field(default_factory=dict)
    not_click: int = 0  # first step was another action
    unparseable: int = 0
    no_expert: int = 0  # rollouts of tasks the gold lacks (not scored)
    not_click_task: int = 0  # rollouts whose expert step 0 is no click (not scored)

    @property
    def accuracy(self) -> float:
        return self.overall.accuracy

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.overall.to_dict(),
            "not_click": self.not_click,
            "unparseable": self.unparseable,
            "no_expert": self.no_expert,
            "not_click_task": self.not_click_task,
            "by_task": {k: self.by_task[k].to_dict() for k in sorted(self.by_task)},
        }


def first_click(
    traj: Trajectory, width: int | None = None, height: int | None = None
) -> tuple[float, float] | str:
    """The point of the rollout's first step if it is a click, else "not_click" / "unparseable"."""
    codes = step_codes(traj)
    if not codes or not codes[0].strip():
        return "unparseable"
    try:
        actions = parse_completion(codes[0], width=width, height=height)
    except ActionParseError:
        return "unparseable"
    if not actions or actions[0].type not in CLICK_TYPES:
        return "not_click"
    point = action_point(actions[0])
    return point if point is not None else "not_click"


def score_first_clicks(
    rollouts: Iterable[Trajectory],
    experts: Iterable[Trajectory],
    *,
    width: int | None = None,
    height: int | None = None,
) -> ClickGroundingReport:
    """Score each rollout's first click against the expert of the same task id (module doc)."""
    gold: dict[str, Trajectory] = {}
    for expert in experts:
        if expert.task_id is None:
            raise ValueError(f"expert {expert.id!r}: field 'task_id': missing")
        gold.setdefault(expert.task_id, expert)
    report = ClickGroundingReport()
    for traj in rollouts:
        expert = gold.get(traj.task_id or "")
        if expert is None:
            report.no_expert += 1
            continue
        boxes = first_targets(expert)
        if boxes is None:
            report.not_click_task += 1
            continue
        found = first_click(traj, width, height)
        if isinstance(found, str):
            setattr(report, found, getattr(report, found) + 1)
            ok = False
        else:
            ok = any(point_in_box(found, box) for box in boxes)
        report.overall.add(ok)
        report.by_task.setdefault(task_family(traj), Bucket()).add(ok)
    return report


def read_trajectory_files(paths: Sequence[str]) -> list[Trajectory]:
    """Trajectories of trajkit jsonl files (a bad record raises `DataError`: file, record, field)."""
    from trajkit.data.io import load_trajectories

    return [t for path in paths for t in load_trajectories(path, "trajkit")]


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    """The report as text: overall, then one line per task."""

    def line(name: str, b: Mapping[str, Any], width: int) -> str:
        lo, hi = b["ci95"]
        return (
            f"  {name:<{width}}  {100 * b['accuracy']:6.2f}%  ({b['correct']}/{b['total']})"
            f"  [{100 * lo:.1f}, {100 * hi:.1f}]"
        )

    lo, hi = report["ci95"]
    out = [
        f"first-click grounding: {100 * report['accuracy']:.2f}% ({report['correct']}/{report['total']})"
        f"  95% CI [{100 * lo:.1f}, {100 * hi:.1f}]  not_click={report['not_click']}"
        f" unparseable={report['unparseable']} no_expert={report['no_expert']}"
        f" not_click_task={report['not_click_task']}"
    ]
    tasks = report["by_task"]
    if tasks:
        out.append("by task:")
        width = max(len(k) for k in tasks)
        out.extend(line(k, v, width) for k, v in tasks.items())
    return out
