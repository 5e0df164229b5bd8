"""Real grounding benchmarks read into trajkit's grounding records (gold rows of `gui.metrics`).

A grounding record is `{"id", "bbox": [x1, y1, x2, y2], "normalized": true, "platform",
"element_type", "instruction", "img_filename", "img_size": [W, H], "width", "height", "source"}`,
its box a fraction of the screenshot (clipped to 0-1: a box running off the screen keeps its
visible part). Formats:

  trajkit     jsonl of gold rows as `gui.metrics` reads them (its own `id`s)
  screenspot  ScreenSpot-v2 annotations: a JSON list of `{"img_filename", "bbox": [x1, y1, x2,
              y2] px, "img_size": [W, H], "instruction", "platform", "ui_type", "group"}`;
              platform = `group` (mobile, desktop, web), element type = `ui_type` (text, icon),
              as ScreenSpot's table reports them; the app (`platform`) is kept as `app`
  mind2web    Mind2Web in SeeClick's format: a JSON list of episodes `{"annotation_id",
              "confirmed_task", "action_reprs", "actions": [{"action_uid", "operation": {"op"},
              "bbox": {"x", "y", "width", "height"} px}]}`; one record per action, its screenshot
              `{annotation_id}-{action_uid}.jpg` (SeeClick's naming); platform
              `mind2web-{split}` from the file name, element type the operation (click, type,
              select). Actions without a `bbox` are skipped, as SeeClick's evaluation skips them.
              The annotations carry no image size: it comes from the screenshot (`images`) or
              from `image_size`, as SeeClick normalizes by the opened image's size.
  trajectories  GUI trajectories whose steps record the clicked element's box, as MiniWoB++'s
              oracle writes them (`metadata.target_boxes`, one per step, 0-1 of the screenshot,
              None for a step that is not a click): one record per click step, id
              `{trajectory id}#{step}`, its screenshot the one the step was taken on, its
              instruction the step's low-level `Action:` line (what stage-1 grounding trains on),
              platform the trajectory's env and element type its task (seed dropped). The
              expert's alternatives (a checkbox's label) are not gold: the instruction names the
              element itself.

A record without an id is named `{img_filename}#{index}`, index being its position in the file
(for Mind2Web, the action's position counting every action of every episode in order), so
predictions can name it. With `images`, each record's image must exist there. Bad input raises
GroundingDataError with one line naming the file, the record and the field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

GOLD_FORMATS = ("auto", "trajkit", "screenspot", "mind2web", "trajectories")


class GroundingDataError(ValueError):
    """Grounding data that cannot be read; the message names file, record and field."""


def _num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fail(path: Path, index: int | str, rid: str | None, field: str, problem: str) -> GroundingDataError:
    who = (f"record {index}" if isinstance(index, int) else index) + (f" ({rid})" if rid else "")
    return GroundingDataError(f"{path}: {who}: field {field!r}: {problem}")


def _load_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise GroundingDataError(f"{path}: cannot read: {err.strerror or err}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise GroundingDataError(f"{path}: invalid JSON at line {err.lineno}: {err.msg}") from None


def _normalize(
    box: Sequence[float], size: Sequence[float], path: Path, index: int | str, rid: str, field: str
) -> list[float]:
    width, height = size
    x1, y1, x2, y2 = box
    if x2 < x1 or y2 < y1:
        raise _fail(path, index, rid, field, f"x2, y2 must not be below x1, y1, got {list(box)}")

    def clip(v: float) -> float:
        return min(1.0, max(0.0, v))

    return [clip(x1 / width), clip(y1 / height), clip(x2 / width), clip(y2 / height)]


def _image_size(
    images: Path | None, name: str, path: Path, index: int | str, rid: str, field: str
) -> tuple[int, int] | None:
    """The image's (width, height) when an image folder is given (it must hold the file)."""
    if images is None:
        return None
    file = images / name
    if not file.is_file():
        raise _fail(path, index, rid, field, f"image {name} not found in {images}")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as img:  # reads the header only
            return img.size
    except (OSError, UnidentifiedImageError) as err:
        raise _fail(path, index, rid, field, f"cannot read image {file}: {err}") from None


def _check_size(size: Any) -> bool:
    return isinstance(size, (list, tuple)) and len(size) == 2 and all(_num(v) and v > 0 for v in size)


# ---------------------------------------------------------------------------------------------
# ScreenSpot-v2


def read_screenspot(path: str | Path, *, images: str | Path | None = None) -> list[dict[str, Any]]:
    """ScreenSpot(-v2) annotations as grounding records (see the module doc)."""
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, list):
        raise GroundingDataError(f"{path}: expected a JSON list of ScreenSpot records")
    folder = Path(images) if images is not None else None
    out = []
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise _fail(path, i, None, "(record)", "expected a JSON object")
        name = row.get("img_filename")
        if not isinstance(name, str) or not name:
            raise _fail(path, i, None, "img_filename", f"must be a file name, got {name!r}")
        rid = str(row["id"]) if row.get("id") is not None else f"{name}#{i}"
        size = row.get("img_size")
        if not _check_size(size):
            raise _fail(path, i, rid, "img_size", f"must be [width, height] > 0, got {size!r}")
        box = row.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and all(_num(v) for v in box)):
            raise _fail(path, i, rid, "bbox", f"must be [x1, y1, x2, y2] in pixels, got {box!r}")
        _image_size(folder, name, path, i, rid, "img_filename")
        out.append(
            {
                "id": rid,
                "bbox": _normalize(box, size, path, i, rid, "bbox"),
                "normalized": True,
                "platform": str(row.get("group") or row.get("platform") or "unknown"),
                "element_type": str(row.get("ui_type") or row.get("data_type") or "unknown"),
                "app": row.get("platform"),
                "instruction": row.get("instruction"),
                "img_filename": name,
                "img_size": list(size),
                "width": size[0],
                "height": size[1],
                "source": "screenspot",
            }
        )
    return out


# ---------------------------------------------------------------------------------------------
# Mind2Web (SeeClick's format)


def _mind2web_split(path: Path) -> str:
    stem = path.stem
    for prefix in ("mind2web_data_test_", "mind2web_data_"):
        if stem.startswith(prefix) and len(stem) > len(prefix):
            return f"mind2web-{stem[len(prefix) :]}"
    return "mind2web"


def read_mind2web(
    path: str | Path,
    *,
    images: str | Path | None = None,
    image_size: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Mind2Web test episodes in SeeClick's format as one grounding record per action."""
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, list):
        raise GroundingDataError(f"{path}: expected a JSON list of Mind2Web episodes")
    if image_size is not None and not _check_size(image_size):
        raise GroundingDataError(f"image size must be [width, height] > 0, got {image_size!r}")
    folder = Path(images) if images is not None else None
    platform = _mind2web_split(path)
    out: list[dict[str, Any]] = []
    index = -1  # position of the action in the file, every action counted
    for e, episode in enumerate(data):
        if not isinstance(episode, dict):
            raise _fail(path, f"episode {e}", None, "(episode)", "expected a JSON object")
        annot = episode.get("annotation_id")
        actions = episode.get("actions")
        if not isinstance(annot, str) or not annot:
            raise _fail(path, f"episode {e}", None, "annotation_id", f"must be a string, got {annot!r}")
        if not isinstance(actions, list):
            raise _fail(path, f"episode {e}", annot, "actions", "must be a list of actions")
        reprs = episode.get("action_reprs") if isinstance(episode.get("action_reprs"), list) else []
        for j, action in enumerate(actions):
            index += 1
            where = f"record {index} (episode {e}, action {j})"
            if not isinstance(action, dict):
                raise _fail(path, where, None, "actions", "expected a JSON object")
            uid = action.get("action_uid")
            if not isinstance(uid, str) or not uid:
                raise _fail(path, where, None, "action_uid", f"must be a string, got {uid!r}")
            name = f"{annot}-{uid}.jpg"
            rid = f"{name}#{index}"
            if "bbox" not in action:
                continue  # no element found for it in Mind2Web: SeeClick skips these too
            bbox = action["bbox"]
            keys = ("x", "y", "width", "height")
            if not (isinstance(bbox, dict) and all(_num(bbox.get(k)) for k in keys)):
                raise _fail(
                    path, where, rid, "bbox", f"must be {{x, y, width, height}} in pixels, got {bbox!r}"
                )
            op = action.get("operation")
            kind = op.get("op") if isinstance(op, dict) else None
            if not isinstance(kind, str) or not kind:
                raise _fail(path, where, rid, "operation.op", f"must be a string, got {kind!r}")
            size = _image_size(folder, name, path, where, rid, "img_filename") or image_size
            if size is None:
                raise _fail(
                    path,
                    where,
                    rid,
                    "img_size",
                    "Mind2Web annotations carry no image size: pass the screenshots' folder "
                    "(--images DIR) or their size (--image-size W,H)",
                )
            box = [
                bbox["x"],
                bbox["y"],
                bbox["x"] + max(0, bbox["width"]),
                bbox["y"] + max(0, bbox["height"]),
            ]
            out.append(
                {
                    "id": rid,
                    "bbox": _normalize(box, size, path, where, rid, "bbox"),
                    "normalized": True,
                    "platform": platform,
                    "element_type": kind.lower(),
                    "instruction": episode.get("confirmed_task"),
                    "action_repr": reprs[j] if j < len(reprs) and isinstance(reprs[j], str) else None,
                    "value": op.get("value") if isinstance(op, dict) else None,
                    "website": episode.get("website"),
                    "img_filename": name,
                    "img_size": list(size),
                    "width": size[0],
                    "height": size[1],
                    "source": "mind2web",
                }
            )
    return out


# ---------------------------------------------------------------------------------------------
# trajkit's own jsonl, and dispatch


def gold_box(row: dict[str, Any] | Any) -> tuple[float, float, float, float]:
    """The 0-1 box of a gold row: `bbox` (or `box`) as fractions, or as pixels when the row gives
    `width` and `height` (a box with a value above 1 is read as pixels unless `normalized`)."""
    box = row.get("bbox", row.get("box"))
    if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(_num(v) for v in box):
        raise ValueError(f"'bbox' must be [x1, y1, x2, y2], got {box!r}")
    if any(v > 1 for v in box) and row.get("normalized") is not True:
        width, height = row.get("width"), row.get("height")
        if not (_num(width) and _num(height) and width > 0 and height > 0):
            raise ValueError("'bbox' is not normalized and the row has no 'width'/'height'")
        return (box[0] / width, box[1] / height, box[2] / width, box[3] / height)
    return (box[0], box[1], box[2], box[3])


def read_trajkit_gold(path: str | Path, *, images: str | Path | None = None) -> list[dict[str, Any]]:
    """Gold jsonl rows as `gui.metrics` reads them; with `images`, a row naming an image
    (`img_filename` or `image`) must have it there."""
    path = Path(path)
    rows: list[dict[str, Any]] = []
    try:
        fh = open(path, encoding="utf-8")
    except OSError as err:
        raise GroundingDataError(f"{path}: cannot read: {err.strerror or err}") from None
    with fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise GroundingDataError(f"{path}: line {n}: invalid JSON: {err.msg}") from None
            if not isinstance(row, dict):
                raise GroundingDataError(f"{path}: line {n}: expected a JSON object")
            if "id" not in row:
                raise _fail(path, f"record on line {n}", None, "id", "missing")
            try:
                gold_box(row)
            except ValueError as err:
                raise GroundingDataError(f"{path}: record on line {n} ({row['id']}): {err}") from None
            if images is not None:
                field = "img_filename" if "img_filename" in row else "image"
                name = row.get(field)
                if not isinstance(name, str) or not name:
                    raise _fail(
                        path,
                        f"record on line {n}",
                        str(row["id"]),
                        field,
                        "no image named (needed with --images)",
                    )
                _image_size(Path(images), name, path, n, str(row["id"]), field)
            rows.append(row)
    return rows


def task_family(traj: Any) -> str:
    """A trajectory's task without its seed: `metadata.task_name`, else the task id up to its last '/'."""
    name = traj.metadata.get("task_name")
    if isinstance(name, str) and name:
        return name
    task = traj.task_id or traj.id
    return task.rsplit("/", 1)[0] if "/" in task else task


def read_trajectory_gold(path: str | Path) -> list[dict[str, Any]]:
    """Grounding records from the click steps of GUI trajectories (the `trajectories` format)."""
    from trajkit.data.io import DataError
    from trajkit.gui.samples import grounding_pairs, load_gui_trajectories

    path = Path(path)
    try:
        trajectories = load_gui_trajectories([str(path)])
    except (DataError, OSError, ValueError) as err:
        raise GroundingDataError(f"{path}: {err}") from None
    rows: list[dict[str, Any]] = []
    for traj in trajectories:
        boxes = traj.metadata.get("target_boxes")
        where = f"trajectory {traj.id!r}"
        if not isinstance(boxes, list):
            raise GroundingDataError(
                f"{path}: {where}: field 'metadata.target_boxes': missing (not an oracle record?)"
            )
        try:
            pairs = grounding_pairs(traj)
        except ValueError as err:
            raise GroundingDataError(f"{path}: {err}") from None
        if len(boxes) != len(pairs):
            raise GroundingDataError(
                f"{path}: {where}: field 'metadata.target_boxes': {len(boxes)} boxes for {len(pairs)} steps"
            )
        for step, ((image, pair), box) in enumerate(zip(pairs, boxes, strict=True)):
            if box is None:
                continue
            if not (isinstance(box, list) and len(box) == 4 and all(_num(v) for v in box)):
                raise GroundingDataError(
                    f"{path}: {where}: field 'metadata.target_boxes[{step}]': must be [x1, y1, x2, y2] or null"
                )
            rows.append(
                {
                    "id": f"{traj.id}#{step}",
                    "bbox": [float(v) for v in box],
                    "normalized": True,
                    "platform": traj.env or "gui",
                    "element_type": task_family(traj),
                    "instruction": pair.instruction,
                    "img_filename": image,
                    "source": "trajectories",
                }
            )
    return rows


def detect_format(path: str | Path) -> str:
    """trajkit (jsonl), trajectories (jsonl of records with turns), screenspot or mind2web, from the
    file's name and first record."""
    path = Path(path)
    if path.suffix == ".jsonl":
        try:
            with open(path, encoding="utf-8") as fh:
                first = next((line for line in fh if line.strip()), "")
            record = json.loads(first) if first else None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            record = None  # the reader names the problem
        return "trajectories" if isinstance(record, dict) and "turns" in record else "trajkit"
    data = _load_json(path)
    first = data[0] if isinstance(data, list) and data else None
    if isinstance(first, dict) and "img_filename" in first and "bbox" in first:
        return "screenspot"
    if isinstance(first, dict) and "actions" in first and "annotation_id" in first:
        return "mind2web"
    raise GroundingDataError(
        f"{path}: cannot tell its format (not jsonl, ScreenSpot or Mind2Web); pass --gold-format"
    )


def read_gold(
    paths: Iterable[str | Path],
    fmt: str = "auto",
    *,
    images: str | Path | None = None,
    image_size: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Gold records of every file, in order; an id found in two files is an error naming both."""
    if fmt not in GOLD_FORMATS:
        raise GroundingDataError(f"unknown gold format {fmt!r}; choose one of {', '.join(GOLD_FORMATS)}")
    out: list[dict[str, Any]] = []
    seen: dict[str, Path] = {}
    for p in paths:
        path = Path(p)
        kind = detect_format(path) if fmt == "auto" else fmt
        if kind == "screenspot":
            rows = read_screenspot(path, images=images)
        elif kind == "mind2web":
            rows = read_mind2web(path, images=images, image_size=image_size)
        elif kind == "trajectories":
            rows = read_trajectory_gold(path)
        else:
            rows = read_trajkit_gold(path, images=images)
        for i, row in enumerate(rows):
            key = str(row["id"])
            if key in seen:
                where = "earlier in the same file" if seen[key] == path else f"also in {seen[key]}"
                raise _fail(path, i, key, "id", f"duplicate id ({where})")
            seen[key] = path
        out.extend(rows)
    return out
