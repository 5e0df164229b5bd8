"""`trajkit view`: a static site over run folders and trajectory files, opened from disk.

    OUT/index.html            overview (server-side, Jinja2 with autoescape) + the browser shell
    OUT/assets/viewer.{js,css} plain JavaScript and CSS shipped with the package
    OUT/data/index.js         one row per trajectory and pair (what the filters and lists need)
    OUT/data/t-NNNN.js        trajectory details, loaded on demand (turns, tokens, screenshots)
    OUT/data/p-NNNN.js        pair details, likewise

Data files are JavaScript (`TK_CHUNK(key, {...})`) rather than JSON so the page works from
file:// (browsers refuse fetch() there). Every string from a trajectory reaches the page as JSON
data and is put into the DOM as text by viewer.js (never as HTML); the overview is rendered by
Jinja2 with autoescape on. Screenshots are linked by relative path, not copied; `serve` serves
the site and exactly those screenshot files, on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from trajkit.data.schema import AGENT, Trajectory, Turn
from trajkit.report.tokens import TokenViewer, load_viewer
from trajkit.report.viewdata import (
    RunData,
    family_of,
    gui_points,
    load_pairs,
    load_source,
    read_files,
    read_run,
    target_box,
)
from trajkit.report.viewpage import overview_context, render_page

CHUNK = 40  # trajectories (or pairs) per detail file: small enough to load at a click


@dataclass
class Site:
    out: Path
    trajectories: int = 0
    pairs: int = 0
    token_note: str = ""
    files: set[Path] = field(default_factory=set)  # screenshots the page links to (for `serve`)


class _Chunk:
    """One detail file: items plus the strings and token texts they share (instructions repeat
    in every episode, so each distinct text is stored once per file)."""

    def __init__(self, viewer: TokenViewer | None):
        self.viewer = viewer
        self.strings: list[str] = []
        self._index: dict[str, int] = {}
        self.vocab: dict[int, str] = {}
        self.items: dict[int, Any] = {}

    def text(self, value: str) -> int:
        if value not in self._index:
            self._index[value] = len(self.strings)
            self.strings.append(value)
        return self._index[value]

    def tokens(self, tok: dict[str, Any] | None) -> dict[str, Any] | None:
        if tok is None or self.viewer is None:
            return None
        for i in tok["ids"]:
            if i not in self.vocab:
                self.vocab[i] = self.viewer.token_text(i)
        return tok

    def payload(self) -> dict[str, Any]:
        return {
            "strings": self.strings,
            "vocab": {str(k): v for k, v in self.vocab.items()},
            "items": self.items,
        }


def _image_size(path: Path) -> tuple[int, int] | None:
    try:
        from PIL import Image

        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError):
        return None


def _action_line(text: str) -> str:
    """The short form of an agent turn for the across-rounds view: its action line."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for line in reversed(lines):
        if line.lower().startswith("action:"):
            return line[:160]
    return (lines[-1] if lines else "")[:160]


class _Builder:
    def __init__(self, out: Path, viewer: TokenViewer | None):
        self.out = out
        self.viewer = viewer
        self.site = Site(out)

    def _image(self, path: str) -> str | None:
        p = Path(path)
        if not p.is_file():
            return None
        p = p.resolve()
        self.site.files.add(p)
        return quote(Path(os.path.relpath(p, self.out.resolve())).as_posix())

    def turns(
        self,
        chunk: _Chunk,
        turns: list[Turn],
        record: Trajectory | None,
        record_id: str,
        tokens_from: int = 0,
    ) -> list[dict[str, Any]]:
        """Turns as page data; agent turns from `tokens_from` on get token views."""
        toks = self.viewer.turns(turns, record_id) if self.viewer is not None else None
        out: list[dict[str, Any]] = []
        last_shot: dict[str, Any] | None = None
        step = 0
        for i, turn in enumerate(turns):
            item: dict[str, Any] = {"r": turn.role, "s": chunk.text(turn.text)}
            if turn.recipient:
                item["rec"] = turn.recipient
            if turn.role == AGENT:
                item["a"] = chunk.text(_action_line(turn.text))
                item["train"] = turn.trained and i >= tokens_from
                if toks is not None and toks[i] is not None and i >= tokens_from:
                    item["tok"] = chunk.tokens(toks[i])
                elif turn.token_ids:
                    item["n_ids"] = len(turn.token_ids)
                if last_shot is not None and turn.recipient in (None, "os"):
                    points = gui_points(turn.text, last_shot.get("_size"))
                    if points:
                        last_shot.setdefault("marks", []).extend([[x, y] for x, y in points])
                    box = target_box(record, step) if record is not None else None
                    if box is not None:
                        last_shot["box"] = box
                    step += 1  # target_boxes has one entry per action step, clicks or not
            images = [turn.image] if isinstance(turn.image, str) else list(turn.image or [])
            if images:
                shots = []
                for path in images:
                    rel = self._image(path)
                    shots.append({"src": rel, "missing": rel is None, "name": Path(path).name})
                item["img"] = shots
                last_shot = shots[-1]
                if rel is not None:
                    last_shot["_size"] = _image_size(Path(path))
            out.append(item)
        for item in out:
            for shot in item.get("img", []):
                shot.pop("_size", None)
        return out


def _entry(n: int, run: RunData, source, traj: Trajectory, chunk_no: int) -> dict[str, Any]:
    policy = source.policy or traj.metadata.get("policy_id") or ""
    if source.kind == "explore" and traj.metadata.get("policy_id"):
        policy = traj.metadata["policy_id"]
    return {
        "n": n,
        "id": traj.id,
        "run": run.label,
        "stage": source.stage + (" (running)" if source.running else ""),
        "kind": source.kind,
        "round": source.round,
        "policy": policy,
        "split": source.split or traj.split or "",
        "mode": source.mode,
        "family": family_of(traj),
        "task": traj.task_id or traj.id,
        "ok": traj.success,
        "reward": traj.reward,
        "steps": traj.metadata.get("steps", sum(t.role == AGENT for t in traj.turns)),
        "gui": bool(traj.images),
        "c": chunk_no,
    }


def _write_chunk(out: Path, kind: str, no: int, chunk: _Chunk) -> None:
    key = f"{kind}{no}"
    text = json.dumps(chunk.payload(), ensure_ascii=True, separators=(",", ":"))
    (out / "data" / f"{kind}-{no:04d}.js").write_text(f"TK_CHUNK({json.dumps(key)},{text});\n")


def build_site(
    inputs: list[str | Path],
    out: str | Path,
    tokenizer: str | None = None,
    template: str | None = None,
) -> Site:
    """Write the site for run folders and/or trajectory or pair files into `out`."""
    out = Path(out)
    runs: list[RunData] = []
    loose = [Path(p) for p in inputs if not Path(p).is_dir()]
    for p in inputs:
        if Path(p).is_dir():
            runs.append(read_run(Path(p)))
    if loose:
        runs.append(read_files(loose))
    first_run = next((r.run_dir for r in runs if r.run_dir is not None), None)
    viewer, note = load_viewer(first_run, tokenizer, template)
    if (out / "data").is_dir():
        shutil.rmtree(out / "data")  # detail files of an earlier build would be stale
    (out / "data").mkdir(parents=True, exist_ok=True)
    (out / "assets").mkdir(exist_ok=True)
    static = Path(__file__).parent / "static"
    for name in ("viewer.js", "viewer.css"):
        shutil.copyfile(static / name, out / "assets" / name)

    builder = _Builder(out, viewer)
    entries: list[dict[str, Any]] = []
    chunk, chunk_no = _Chunk(viewer), 0
    for run in runs:
        for source in run.sources:
            for traj in load_source(source):
                if len(chunk.items) >= CHUNK:
                    _write_chunk(out, "t", chunk_no, chunk)
                    chunk, chunk_no = _Chunk(viewer), chunk_no + 1
                n = len(entries)
                entries.append(_entry(n, run, source, traj, chunk_no))
                meta = {k: v for k, v in traj.metadata.items() if k not in ("icl_turns",)}
                chunk.items[n] = {"meta": meta, "turns": builder.turns(chunk, traj.turns, traj, traj.id)}
    if chunk.items:
        _write_chunk(out, "t", chunk_no, chunk)

    pairs: list[dict[str, Any]] = []
    chunk, chunk_no = _Chunk(viewer), 0
    for run in runs:
        for rnd, path in run.pair_files:
            for pair in load_pairs(path):
                if len(chunk.items) >= CHUNK:
                    _write_chunk(out, "p", chunk_no, chunk)
                    chunk, chunk_no = _Chunk(viewer), chunk_no + 1
                n = len(pairs)
                pairs.append(_pair_entry(n, run, rnd, path, pair, chunk_no))
                chunk.items[n] = _pair_detail(builder, chunk, pair, n)
    if chunk.items:
        _write_chunk(out, "p", chunk_no, chunk)

    index = {
        "runs": [r.label for r in runs],
        "note": note,
        "tokens": viewer is not None,
        "trajs": entries,
        "pairs": pairs,
    }
    (out / "data" / "index.js").write_text(
        "window.TK_INDEX=" + json.dumps(index, ensure_ascii=True, separators=(",", ":")) + ";\n"
    )
    (out / "index.html").write_text(render_page(overview_context(runs, note, len(entries), len(pairs))))
    builder.site.trajectories, builder.site.pairs, builder.site.token_note = len(entries), len(pairs), note
    return builder.site


def _pair_entry(
    n: int, run: RunData, rnd: int | None, path: Path, pair: dict[str, Any], chunk_no: int
) -> dict[str, Any]:
    return {
        "n": n,
        "run": run.label,
        "round": rnd,
        "file": path.name if run.run_dir is None else str(path.parent.relative_to(run.run_dir)),
        "task": pair.get("task_id") or "",
        "cr": pair.get("chosen_reward"),
        "rr": pair.get("rejected_reward"),
        "strategy": pair.get("strategy") or "",
        "step": _is_step_pair(pair),
        "c": chunk_no,
    }


def _is_step_pair(pair: dict[str, Any]) -> bool:
    """A pair about one step: named so by its strategy, or one agent turn a side after a prompt
    that already holds the episode's earlier agent turns (ETO's prompt holds one: "OK")."""
    if "step" in str(pair.get("strategy") or ""):
        return True

    def agents(key: str) -> int:
        return sum(t.get("role") in (AGENT, "assistant", "gpt") for t in pair.get(key) or [])

    return agents("chosen") == agents("rejected") == 1 and agents("prompt") > 1


def _pair_detail(builder: _Builder, chunk: _Chunk, pair: dict[str, Any], n: int) -> dict[str, Any]:
    def turns(key: str) -> list[Turn]:
        out = []
        for t in pair.get(key) or []:
            try:
                out.append(Turn.from_dict(t))
            except (KeyError, ValueError, TypeError):
                out.append(Turn("observation", f"(unreadable turn: {json.dumps(t)[:200]})"))
        return out

    prompt = turns("prompt")
    detail: dict[str, Any] = {
        "prompt": builder.turns(chunk, prompt, None, f"pair-{n}-prompt", tokens_from=len(prompt)),
        "ids": [pair.get("chosen_id"), pair.get("rejected_id")],
    }
    for side in ("chosen", "rejected"):
        full = builder.turns(chunk, prompt + turns(side), None, f"pair-{n}-{side}", tokens_from=len(prompt))
        detail[side] = full[len(prompt) :]
        # GUI pairs: the last shared screen, with the point each side clicked first on it.
        shots = [shot for item in full[: len(prompt)] for shot in item.get("img", []) if not shot["missing"]]
        if shots and shots[-1].get("marks"):
            screen = detail.setdefault("screen", {"src": shots[-1]["src"], "name": shots[-1]["name"]})
            screen[side] = shots[-1]["marks"]
    return detail
