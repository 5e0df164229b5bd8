"""`trajkit view` in a real browser: a demo-sized run folder, written file by file as the stages
write it, loaded from disk into headless Chromium (Debian's, with every offline flag).

Also: the site's data (token masks from the renderer), the 127.0.0.1 server, and `runs compare`.
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from trajkit.data.schema import Trajectory, Turn

FAMILIES = ["pick_and_place", "pick_clean_then_place", "pick_heat_then_place", "look_at_obj_in_light"]
XSS = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
INSTRUCTION = (
    "Interact with a household to solve a task. Give one command per turn.\nThought: <t>\nAction: <a>"
)


def _episode(
    tid: str, split: str, k: int, ok: bool, rng: random.Random, sampled, policy: str | None
) -> Trajectory:
    family = FAMILIES[k % len(FAMILIES)]
    turns = [Turn("task", INSTRUCTION), Turn("agent", "OK"), Turn("task", f"Your task is to: {family} {k}.")]
    for _ in range(rng.randint(2, 6)):
        where = rng.choice(["countertop 1", "cabinet 2", "fridge 1", "shelf 3"])
        text = f"Thought: the apple may be on the {where}.\nAction: go to {where}"
        turns.append(Turn("agent", text, token_ids=sampled(text) if sampled else None))
        turns.append(Turn("observation", f"Observation: You arrive at {where}. Nothing happened."))
    meta = {"family": family, "steps": sum(t.role == "agent" for t in turns) - 1}
    if policy:
        meta["policy_id"] = policy
    return Trajectory(f"{policy or 'expert'}/{tid}/s0", turns, tid, "household", split, float(ok), ok, meta)


def _write(path: Path, trajs: list[Trajectory], done: dict | None = None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    name = "expert.jsonl" if path.name == "expert" else "rollouts.jsonl"
    (path / name).write_text("".join(json.dumps(t.to_dict()) + "\n" for t in trajs))
    (path / "DONE").write_text(json.dumps(done or {"episodes": len(trajs)}))


def _metrics(trajs: list[Trajectory]) -> dict:
    from trajkit.evaluate import summarize

    return summarize(trajs)


def write_demo_run(run: Path, tokenizer, n_expert: int = 1000, n_train: int = 64, n_eval: int = 64) -> dict:
    """A run folder with the demo's sizes: 1000 expert episodes, 2 rounds of 64 explored train
    tasks with pairs, 64 + 64 evaluated test tasks per policy (sft, rft, round-1, round-2)."""
    from trajkit.pairs import build_pairs

    rng = random.Random(0)
    sampled = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    model = run / "sft" / "model"
    model.mkdir(parents=True)
    tokenizer.save_pretrained(model)
    (model / "trajkit_model.json").write_text(json.dumps({"template": "tiny"}))
    (run / "sft" / "DONE").write_text("{}")
    (run / "config.yaml").write_text("run_dir: demo\nseed: 0\nrounds: 2\nexplore: {limit: 64}\n")
    (run / "manifest.json").write_text(json.dumps({"seed": 0, "versions": {"trajkit": "0.1.0"}}))
    expert = [_episode(f"train/{k:05d}", "train", k, True, rng, None, None) for k in range(n_expert)]
    expert[0].turns[-1].text += "\n" + XSS  # trajectory texts that must stay text
    expert[0].turns[-2].text += "\n" + XSS
    _write(run / "expert", expert)
    summary: dict = {}
    for r, policy in ((0, "sft"), (1, "rft"), (1, "round-1"), (2, "round-2")):
        stage = f"eval-{policy}" if policy in ("sft", "rft") else f"{policy}/eval"
        summary[policy] = {}
        for split in ("test_seen", "test_unseen"):
            eps = [
                _episode(f"{split}/{k:05d}", split, k, rng.random() < 0.4 + 0.1 * r, rng, sampled, policy)
                for k in range(n_eval)
            ]
            _write(run / stage / split, eps)
            summary[policy][split] = _metrics(eps)
    for r in (1, 2):
        policy = "sft" if r == 1 else "round-1"
        explored = [
            _episode(f"train/{k:05d}", "train", k, rng.random() < 0.3, rng, sampled, policy)
            for k in range(n_train)
        ]
        _write(
            run / f"round-{r}" / "explore",
            explored,
            {"episodes": n_train, "seconds": 10.0, "agent_tokens": 900},
        )
        result = build_pairs(explored, expert[:n_train])
        (run / f"round-{r}" / "pairs").mkdir(parents=True)
        (run / f"round-{r}" / "pairs" / "pairs.jsonl").write_text(
            "".join(json.dumps(p) + "\n" for p in result.pairs)
        )
        (run / f"round-{r}" / "pairs" / "DONE").write_text(json.dumps(result.counts()))
        summary[f"round-{r}"]["pairs"] = result.counts()
    (run / "summary.json").write_text(json.dumps(summary))
    return summary


def write_gui_run(run: Path) -> None:
    """Two MiniWoB-style episodes: a screenshot per step, a pyautogui click, a known target box."""
    from PIL import Image

    shots = run / "images" / "rollouts"
    shots.mkdir(parents=True)
    trajs = []
    for k, (x, y) in enumerate([(0.25, 0.5), (0.75, 0.2)]):
        path = shots / f"click-button_{k}_00.png"
        Image.new("RGB", (160, 210), (230, 230, 250)).save(path)
        turns = [
            Turn("task", "Instruction: Click the button."),
            Turn("observation", "<image>", image=str(path)),
            Turn("agent", "I click the button.", recipient="all"),
            Turn("agent", f"pyautogui.click(x={x}, y={y})", recipient="os"),
        ]
        meta = {"task_name": "click-button", "steps": 1, "target_boxes": [[0.1, 0.4, 0.4, 0.6]]}
        trajs.append(
            Trajectory(
                f"sft-enforced_plan/miniwob/click-button/{k}/s0",
                turns,
                f"miniwob/click-button/{k}",
                "miniwob",
                "test",
                float(k == 0),
                k == 0,
                meta,
            )
        )
    _write(run / "eval-sft" / "enforced_plan" / "test", trajs)
    (run / "config.yaml").write_text("run_dir: gui\ngui: {}\n")
    # A pair whose sides click different points on the same shared screen.
    pair = {
        "task_id": trajs[0].task_id,
        "prompt": [t.to_dict() for t in trajs[0].turns[:2]],
        "chosen": [t.to_dict() for t in trajs[0].turns[2:]],
        "rejected": [t.to_dict() for t in trajs[1].turns[2:]],
        "chosen_reward": 1.0,
        "rejected_reward": 0.0,
        "strategy": "trajectory",
    }
    (run / "round-1" / "pairs").mkdir(parents=True)
    (run / "round-1" / "pairs" / "pairs.jsonl").write_text(json.dumps(pair) + "\n")


@pytest.fixture(scope="module")
def demo_site(tmp_path_factory, tiny_tokenizer):
    from trajkit.report.view import build_site

    root = tmp_path_factory.mktemp("viewer")
    summary = write_demo_run(root / "demo", tiny_tokenizer)
    t0 = time.perf_counter()
    site = build_site([root / "demo"], root / "demo" / "view")
    build_s = time.perf_counter() - t0
    return root / "demo", site, summary, build_s


def test_site_data_marks_trained_tokens_from_the_renderer(demo_site):
    run, site, summary, build_s = demo_site
    assert site.trajectories == 1000 + 2 * 64 + 4 * 2 * 64 and site.pairs == sum(
        summary[f"round-{r}"]["pairs"]["pairs"] for r in (1, 2)
    )
    assert "renderer's loss mask" in site.token_note
    index = json.loads(re.sub(r"^window.TK_INDEX=|;\s*$", "", (run / "view/data/index.js").read_text()))
    assert index["tokens"] is True
    row = next(r for r in index["trajs"] if r["kind"] == "eval" and r["policy"] == "round-2")
    assert row["split"] in ("test_seen", "test_unseen") and row["round"] == 2
    chunk_text = (run / f"view/data/t-{row['c']:04d}.js").read_text()
    chunk = json.loads(chunk_text[chunk_text.index(",") + 1 : chunk_text.rindex(")")])
    agent = [t for t in chunk["items"][str(row["n"])]["turns"] if t["r"] == "agent" and "tok" in t]
    sampled = [t for t in agent if t["tok"]["sampled"]]
    assert sampled, "rollout turns show the ids that were sampled"
    tok = sampled[0]["tok"]
    text = "".join(chunk["vocab"][str(i)] for i in tok["ids"])
    assert text.startswith(chunk["strings"][sampled[0]["s"]]) and text.endswith("<|end|>")
    assert set(tok["mask"]) == {"1"}, "an agent turn and its end marker are trained in the tiny template"


def _wait_rows(page, table: str, timeout: float = 5.0) -> int:
    return int(page.get_attribute(f"#{table}", "data-rows", timeout=timeout * 1000))


@pytest.mark.slow
def test_viewer_in_chromium(demo_site, tmp_path):
    from trajkit.report.view import build_site

    browser_page = pytest.importorskip("playwright.sync_api")
    from trajkit.envs.browser import find_chromium, launch_args

    executable = find_chromium()
    if executable is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("Chromium is missing (make setup installs it)")
        pytest.skip("no Chromium on this machine")
    run, site, summary, _ = demo_site
    write_gui_run(tmp_path / "gui")
    build_site([tmp_path / "gui"], tmp_path / "gui" / "view")
    errors: list[str] = []
    with browser_page.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=executable,
            headless=True,
            args=launch_args(),
            viewport={"width": 1400, "height": 900},
        )
        try:
            page = context.new_page()
            page.on(
                "console",
                lambda m: errors.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None,
            )
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            page.on(
                "request",
                lambda r: (
                    errors.append(f"request left the disk: {r.url}")
                    if not r.url.startswith("file://")
                    else None
                ),
            )
            page.goto((run / "view" / "index.html").as_uri())
            page.wait_for_load_state("load")
            assert page.locator("table.metrics").inner_text().count("%") >= 8  # 4 policies x 2 splits

            page.click("button[data-tab=trajectories]")
            total = _wait_rows(page, "traj-list")
            assert total == site.trajectories
            page.select_option("select[data-filter=kind]", "eval")
            evals = _wait_rows(page, "traj-list")
            page.select_option("select[data-filter=split]", "test_unseen")
            page.select_option("select[data-filter=ok]", "true")
            wins = _wait_rows(page, "traj-list")
            want = sum(
                round(summary[p]["test_unseen"]["success_rate"] * 64)
                for p in ("sft", "rft", "round-1", "round-2")
            )
            assert evals == 4 * 2 * 64 and wins == want < evals
            page.fill("input[data-filter=q]", "test_unseen/00003")
            assert _wait_rows(page, "traj-list") <= 4

            # The trajectory whose text holds <script>: shown as text, never run.
            page.goto((run / "view" / "index.html").as_uri() + "#t/0")
            page.wait_for_selector("#traj-detail .turn.observation")
            detail = page.inner_text("#traj-detail")
            assert (
                "<script>window.__pwned = 1</script>" in detail and 'onerror="window.__pwned = 2"' in detail
            )
            assert page.evaluate("window.__pwned === undefined")
            assert page.locator("#traj-detail script, #traj-detail img[src=x]").count() == 0

            # A known pair: both sides, rewards, the divergence marked.
            page.goto((run / "view" / "index.html").as_uri() + "#p/0")
            page.wait_for_selector("#pair-detail .pairgrid")
            pair = json.loads((run / "round-1/pairs/pairs.jsonl").read_text().splitlines()[0])
            chosen, rejected = page.inner_text(".side.chosen"), page.inner_text(".side.rejected")
            assert f"reward {pair['chosen_reward']:g}" in chosen and pair["chosen_id"] in chosen
            assert f"reward {pair['rejected_reward']:g}" in rejected and pair["rejected_id"] in rejected
            grid = page.inner_text("#pair-detail .pairgrid")
            first_chosen = next(t["text"] for t in pair["chosen"] if t["role"] == "agent").splitlines()[0]
            assert first_chosen in grid and page.locator(".turn.diverge").count() == 2
            assert page.locator("#pair-detail .tk.tr").count() > 0, "trained tokens highlighted"

            # The same task across rounds.
            page.click("button[data-tab=tasks]")
            assert _wait_rows(page, "task-list") > 0
            page.locator("#task-list tbody tr").first.click()
            page.wait_for_selector("#task-detail .col")
            assert page.locator("#task-detail .col").count() >= 2

            # GUI episode: the screenshot loads, with the click and the target box on it.
            page.goto((tmp_path / "gui" / "view" / "index.html").as_uri() + "#t/1")
            page.wait_for_selector("#traj-detail .shot img")
            page.wait_for_function("document.querySelector('#traj-detail .shot img').naturalWidth > 0")
            mark = page.locator("#traj-detail .mark").first
            assert mark.get_attribute("style").replace(" ", "").startswith("left:75%;top:20%")
            assert page.locator("#traj-detail .box").count() == 1
            page.goto((tmp_path / "gui" / "view" / "index.html").as_uri() + "#p/0")
            page.wait_for_selector("#pair-detail .screen img")
            chosen = page.locator("#pair-detail .screen .mark.chosen")
            rejected = page.locator("#pair-detail .screen .mark.rejected")
            assert chosen.count() == rejected.count() == 1
            assert chosen.get_attribute("style").replace(" ", "").startswith("left:25%;top:50%")
        finally:
            context.close()
    assert errors == []


def test_server_binds_localhost_and_serves_only_the_site(tmp_path):
    from trajkit.report.serve import make_server
    from trajkit.report.view import build_site

    write_gui_run(tmp_path / "gui")
    (tmp_path / "gui" / "secret.txt").write_text("not for the page")
    site = build_site([tmp_path / "gui"], tmp_path / "gui" / "view")
    server, url = make_server(site.out, site.files)
    assert server.server_address[0] == "127.0.0.1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert "trajkit view" in urllib.request.urlopen(url, timeout=5).read().decode()
        base = url.rsplit("/", 1)[0]
        shot = next(iter(site.files))
        rel = os.path.relpath(shot, site.out).replace(os.sep, "/")
        assert urllib.request.urlopen(f"{base}/{rel}", timeout=5).read()[:4] == b"\x89PNG"
        for bad in (
            "../secret.txt",
            "../config.yaml",
            "../../",
            "../eval-sft/enforced_plan/test/rollouts.jsonl",
        ):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(f"{base}/{bad}", timeout=5)
            assert err.value.code == 404, bad
    finally:
        server.shutdown()
        server.server_close()


def test_runs_compare_shows_config_differences_and_intervals(tmp_path, tiny_tokenizer):
    from trajkit.report.compare import compare_runs, render_compare

    for name, seed in (("a", 0), ("b", 1)):
        run = tmp_path / name
        run.mkdir()
        (run / "config.yaml").write_text(f"run_dir: {name}\nseed: {seed}\ndpo: {{beta: 0.1}}\n")
        summary = {
            "sft": {"test_seen": {"n": 10, "success_rate": 0.3 + 0.2 * seed, "success_ci95": [0.1, 0.6]}}
        }
        (run / "summary.json").write_text(json.dumps(summary))
    table = compare_runs([tmp_path / "a", tmp_path / "b"])
    assert table["config"] == [{"key": "seed", "values": [0, 1]}]
    (row,) = table["metrics"]
    assert (row["policy"], row["split"]) == ("sft", "test_seen")
    assert [v["rate"] for v in row["values"]] == [0.3, 0.5] and row["values"][0]["ci95"] == [0.1, 0.6]
    text = render_compare(table)
    assert "| seed | 0 | 1 |" in text and "30.0% [10.0, 60.0] n=10" in text
