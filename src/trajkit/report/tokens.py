"""Token-level views of agent turns for the viewer: which tokens the loss mask trains, and ids.

The renderer (`trajkit.render.Renderer`) is the only judge of what is trained: a trajectory is
rendered as for training and its segments are tokenized again one by one, the renderer's way; the
per-segment ids must add up to the rendering's ids exactly, or the trajectory gets no token view
(turn-level highlighting instead), so a view never shows a mask the trainer would not use.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trajkit.data.schema import AGENT, Trajectory, Turn
from trajkit.render import Renderer, RenderError, Segment

# Where a run keeps a model folder with its tokenizer, most useful first.
MODEL_DIRS = ("sft/model", "sft-stage2/model", "sft-stage1/model", "model/model")


def find_tokenizer_dir(run_dir: Path) -> Path | None:
    """A model folder of the run that holds a tokenizer (local only: nothing is downloaded)."""
    candidates = (
        [run_dir / d for d in MODEL_DIRS]
        + sorted(run_dir.glob("*/model"))
        + sorted(run_dir.glob("*/*/model"))
    )
    for path in candidates:
        if (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file():
            return path
    return None


class TokenViewer:
    """Renders trajectories with a tokenizer and template; `turns()` gives per-agent-turn tokens."""

    def __init__(self, tokenizer: Any, template: str, source: str):
        self.renderer = Renderer(tokenizer, template)
        self.tokenizer = tokenizer
        self.source = source  # shown in the page: which tokenizer and template
        self._text: dict[int, str] = {}
        self._stops = frozenset(self.renderer.stop_ids)

    @classmethod
    def load(cls, model_dir: str | Path, template: str | None = None) -> TokenViewer:
        from trajkit.policy.models import infer_template, load_tokenizer

        tokenizer = load_tokenizer(str(model_dir))
        template = template or infer_template(model_dir, tokenizer)
        return cls(tokenizer, template, f"{model_dir} ({template})")

    def token_text(self, token_id: int) -> str:
        text = self._text.get(token_id)
        if text is None:
            text = self._text[token_id] = self.tokenizer.decode([token_id])
        return text

    def _segment_ids(self, seg: Segment) -> list[int]:
        # As Renderer._tokenize does it; the sum is checked against the rendering below.
        if seg.token_ids is None:
            return self.renderer.encode(seg.text, continuation=seg.continuation)
        ids = list(seg.token_ids)
        close = self.renderer.encode(seg.close or "", continuation=True)
        stopped = bool(ids) and ids[-1] in self._stops
        if close and not stopped and ids[-len(close) :] != close:
            ids += close
        return ids

    def turns(self, turns: list[Turn], record_id: str) -> list[dict[str, Any] | None] | None:
        """Per turn: None for non-agent turns, else {"ids", "mask" ("1" trained / "0"), "sampled"};
        None overall when the trajectory cannot be shown token by token."""
        if not turns:
            return None
        try:
            rendered = self.renderer.render(Trajectory(record_id, list(turns)), require_trained=False)
        except (RenderError, ValueError, KeyError, TypeError):
            return None
        pieces: list[tuple[Segment, list[int]]] = []
        flat: list[int] = []
        mask: list[int] = []
        for seg in rendered.segments:
            ids = self._segment_ids(seg)
            pieces.append((seg, ids))
            flat.extend(ids)
            mask.extend([int(seg.trained)] * len(ids))
        if flat != list(rendered.input_ids) or mask != list(rendered.loss_mask):
            return None
        out: list[dict[str, Any] | None] = []
        cursor = 0
        for turn in turns:
            if turn.role != AGENT:
                out.append(None)
                continue
            found = None
            for k in range(cursor, len(pieces)):
                seg, ids = pieces[k]
                sampled = turn.token_ids is not None and seg.token_ids == list(turn.token_ids)
                if sampled or (
                    turn.token_ids is None and seg.token_ids is None and turn.text and turn.text in seg.text
                ):
                    found = k
                    break
            if found is None:
                return None
            seg, ids = pieces[found]
            cursor = found + 1
            out.append(
                {
                    "ids": ids,
                    "mask": ("1" if seg.trained else "0") * len(ids),
                    "sampled": turn.token_ids is not None,
                }
            )
        return out


def load_viewer(
    run_dir: Path | None, tokenizer_dir: str | None, template: str | None
) -> tuple[TokenViewer | None, str]:
    """A TokenViewer and a note for the page; (None, why) when there is no tokenizer at hand."""
    where = Path(tokenizer_dir) if tokenizer_dir else (find_tokenizer_dir(run_dir) if run_dir else None)
    if where is None:
        return None, "no tokenizer at hand (give --tokenizer DIR): trained turns are highlighted whole"
    try:
        viewer = TokenViewer.load(where, template)
    except (OSError, ValueError, RenderError, json.JSONDecodeError) as err:
        return (
            None,
            f"tokenizer {where} could not be loaded ({type(err).__name__}): trained turns are highlighted whole",
        )
    return viewer, f"trained tokens from the renderer's loss mask, tokenizer {viewer.source}"
