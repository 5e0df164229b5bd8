"""write_report: report.md tables and image links, metrics.json shape, valid PNG plots."""

from __future__ import annotations

import json

import pytest

from trajkit.report import render_report, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _m(rate: float, n: int, reward: float, lo: float, hi: float, **extra) -> dict:
    return {
        "n": n,
        "success_rate": rate,
        "success_ci95": [lo, hi],
        "mean_reward": reward,
        "mean_steps": 7.5,
        "env_errors": 0,
        **extra,
    }


def _summary() -> dict:
    families = {
        "clean": _m(0.5, 4, 0.625, 0.15, 0.85),
        "heat": _m(1.0, 4, 1.0, 0.51, 1.0),
    }
    return {
        "sft": {"test_seen": _m(0.25, 8, 0.4, 0.0716, 0.5907), "test_unseen": _m(0.125, 8, 0.3, 0.02, 0.47)},
        "rft": {"test_seen": _m(0.5, 8, 0.55, 0.2152, 0.7848)},
        "round-1": {
            "test_seen": _m(0.625, 8, 0.7, 0.3, 0.86),
            "test_unseen": _m(0.375, 8, 0.5, 0.14, 0.69),
            "pairs": {"win": 3, "tie": 1, "lose": 12, "pairs": 12},
        },
        "round-2": {
            "test_seen": _m(0.75, 8, 0.8125, 0.41, 0.93, by_family=families),
            "test_unseen": _m(0.5, 8, 0.6, 0.2152, 0.7848),
            "pairs": {"win": 5, "tie": 0, "lose": 9, "pairs": 9},
        },
    }


def _check_png(path) -> None:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100 and img.shape[2] in (3, 4)


def test_write_report_full(tmp_path):
    summary = _summary()
    path = write_report(tmp_path, summary)
    assert path == tmp_path / "report.md"
    text = path.read_text()

    assert "![success](success.png)" in text
    assert "![pairs](pairs.png)" in text
    assert "| policy | test_seen | test_unseen |" in text
    # Success cells: rate, Wilson interval, n; a missing split is a dash.
    assert "| sft | 25.0% [7.2%, 59.1%] (n=8) | 12.5% [2.0%, 47.0%] (n=8) |" in text
    assert "| rft | 50.0% [21.5%, 78.5%] (n=8) | – |" in text
    # Mean reward ×100 table.
    assert "## Average reward ×100" in text
    assert "| sft | 40.0 | 30.0 |" in text
    assert "| rft | 55.0 | – |" in text
    assert "| round-2 | 81.2 | 60.0 |" in text
    # Per-family table of the last stage.
    assert "## Per task family (round-2)" in text
    assert "| family | test_seen success | test_seen reward ×100 |" in text
    assert "| clean | 50.0% (n=4) | 62.5 |" in text
    assert "| heat | 100.0% (n=4) | 100.0 |" in text
    # Pairs table.
    assert "| round | win | tie | lose | pairs |" in text
    assert "| round-1 | 3 | 1 | 12 | 12 |" in text
    assert "| round-2 | 5 | 0 | 9 | 9 |" in text

    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert list(metrics) == ["sft", "rft", "round-1", "round-2"]
    assert set(metrics["rft"]) == {"test_seen"}
    assert "pairs" not in metrics["round-1"]
    for splits in metrics.values():
        for m in splits.values():
            assert set(m) == {"success_rate", "success_ci95", "mean_reward", "n"}
    assert metrics["round-2"]["test_seen"] == {
        "success_rate": 0.75,
        "success_ci95": [0.41, 0.93],
        "mean_reward": 0.8125,
        "n": 8,
    }

    _check_png(tmp_path / "success.png")
    _check_png(tmp_path / "pairs.png")


def test_write_report_without_rounds(tmp_path):
    summary = {"sft": {"test_seen": _m(0.25, 8, 0.4, 0.07, 0.59)}}
    (tmp_path / "pairs.png").write_bytes(b"old")
    text = write_report(tmp_path, summary).read_text()
    assert "![success](success.png)" in text
    assert "pairs.png" not in text
    assert "Exploration" not in text
    assert "Per task family" not in text
    assert "| sft | 25.0% [7.0%, 59.0%] (n=8) |" in text
    assert not (tmp_path / "pairs.png").exists()
    _check_png(tmp_path / "success.png")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics == {
        "sft": {"test_seen": {"success_rate": 0.25, "success_ci95": [0.07, 0.59], "mean_reward": 0.4, "n": 8}}
    }


def test_write_report_round_without_eval(tmp_path):
    # A round whose evaluation has no split yet still gets its pairs plotted.
    summary = {
        "sft": {"test_unseen": _m(0.0, 5, 0.0, 0.0, 0.43)},
        "round-1": {"pairs": {"win": 0, "tie": 0, "lose": 0, "pairs": 0}},
    }
    text = write_report(tmp_path, summary).read_text()
    assert "| round-1 | – |" in text
    assert "| round-1 | 0 | 0 | 0 | 0 |" in text
    assert json.loads((tmp_path / "metrics.json").read_text())["round-1"] == {}
    _check_png(tmp_path / "success.png")
    _check_png(tmp_path / "pairs.png")


@pytest.mark.parametrize("summary", [{}, {"sft": {}}])
def test_write_report_empty(tmp_path, summary):
    text = write_report(tmp_path, summary).read_text()
    assert text.startswith("# Run report")
    assert "![" not in text
    assert not (tmp_path / "success.png").exists()
    assert not (tmp_path / "pairs.png").exists()


def test_render_report_without_images():
    text = render_report(_summary())
    assert "![" not in text
    assert "## Success rate (95% Wilson interval)" in text
