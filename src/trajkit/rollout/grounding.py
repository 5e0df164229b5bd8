"""One-step grounding: a policy points at the element an instruction names on a screenshot.

Each grounding record (`gui.grounding_data`: an image, an instruction, a gold box) becomes the prompt
AGUVIS's stage 1 trains on (`gui.packing`): the GUI system prompt, one user turn of the screenshot
and the instruction, and an assistant turn addressed to `os`. The policy's greedy completion is the
prediction row `gui.metrics.evaluate_grounding` scores (`{"id", "completion", "point"}`), so a
stage-1 checkpoint is measured on exactly the task it was trained for, on any grounding data
(held-out MiniWoB++ oracle steps, ScreenSpot-v2, Mind2Web).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trajkit.data.schema import SYSTEM, TASK, Turn
from trajkit.gui.actions import ActionParseError, action_point
from trajkit.gui.packing import IMAGE_LINE
from trajkit.gui.prompts import GUI_SYSTEM_PROMPT, parse_completion
from trajkit.gui.reasoning import RECIPIENT_OS
from trajkit.policy.backends import GenerationBackend, Sampling
from trajkit.rollout.aguvis import HEADER


def record_image(record: Mapping[str, Any], images: str | Path | None = None) -> str:
    """The screenshot file of a grounding record: `img_filename` (or `image`), read under `images`
    when given and the name is relative."""
    name = record.get("img_filename") or record.get("image")
    if not isinstance(name, str) or not name:
        raise ValueError(f"record {record.get('id')!r}: field 'img_filename': no screenshot named")
    path = Path(name)
    return str(Path(images) / path if images is not None and not path.is_absolute() else path)


def grounding_prompt(instruction: str, image: str, system: str | None = GUI_SYSTEM_PROMPT) -> list[Turn]:
    """The turns of a stage-1 sample up to its answer (`gui.packing`'s layout)."""
    turns = [Turn(SYSTEM, system)] if system else []
    turns.append(Turn(TASK, IMAGE_LINE + instruction, image=image))
    return turns


def predict_grounding(
    backend: GenerationBackend,
    renderer: Any,
    records: Sequence[Mapping[str, Any]],
    *,
    images: str | Path | None = None,
    system: str | None = GUI_SYSTEM_PROMPT,
    max_new_tokens: int = 48,
    batch_size: int = 32,
) -> list[dict[str, Any]]:
    """Greedy `os` completions for each record; rows `{"id", "completion", "point"}` (`point` the
    first action's 0-1 point, None when the completion has none or does not parse)."""
    forced = renderer.encode(f"{RECIPIENT_OS}\n")
    sampling = Sampling(temperature=0.0, max_new_tokens=max_new_tokens)
    rows: list[dict[str, Any]] = []
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        prompts, shots = [], []
        for record in chunk:
            instruction = record.get("instruction")
            if not isinstance(instruction, str) or not instruction.strip():
                raise ValueError(f"record {record.get('id')!r}: field 'instruction': missing or empty")
            rendered = renderer.prompt(
                grounding_prompt(instruction, record_image(record, images), system), assistant_header=HEADER
            )
            prompts.append(rendered.input_ids + forced)
            shots.append(list(rendered.images))
        outs = backend.generate(prompts, sampling, images=shots)
        for record, ids in zip(chunk, outs, strict=True):
            text = renderer.tokenizer.decode(ids, skip_special_tokens=True).strip()
            rows.append({"id": record["id"], "completion": text, "point": first_point(text)})
    return rows


def first_point(code: str) -> list[float] | None:
    """The 0-1 point of the first action in `code` that has one, else None."""
    try:
        actions = parse_completion(code)
    except ActionParseError:
        return None
    for action in actions:
        point = action_point(action)
        if point is not None:
            return [float(point[0]), float(point[1])]
    return None
