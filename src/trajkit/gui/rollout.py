"""Batched lock-step rollouts of a vision-language policy in a GUI env (MiniWoB++).

An episode opens AGUVIS-style, as the oracle's trajectories do: the GUI system prompt, the task
turn (`Instruction: ...`) and an observation turn carrying the first screenshot. Each env step is
one or two generations, by inference mode (`gui.prompts`):

- `enforced_plan`: the model must write an `all` turn first (the prompt ends with
  `<|recipient|>all\\nThought:`), then an `os` turn (prompt ends with `<|recipient|>os\\n`);
- `self_plan`: the prompt ends with `<|recipient|>` and the model picks the recipient; when it
  picks `all`, a second generation writes the `os` turn.

Both agent turns are stored with their recipients and exact token ids (the forced prefix ids
followed by the sampled ids), so DPO trains on what was sampled. The env gets the `os` turn's
text (it extracts the code itself). Every observation turn keeps its screenshot in the stored
trajectory; `max_images` caps the screenshots shown in a rollout prompt (the most recent ones, as
AGUVIS does; older observation turns keep their text, the image replaced by a note).

The lock-step loop, resume (finished episodes are one JSON line each) and env-failure handling
are those of `trajkit.rollout`; the text path there is untouched.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from trajkit.data.schema import AGENT, OBSERVATION, SYSTEM, TASK, Trajectory, Turn
from trajkit.envs.base import Env, Task
from trajkit.gui.prompts import GUI_SYSTEM_PROMPT
from trajkit.gui.reasoning import RECIPIENT_ALL, RECIPIENT_OS
from trajkit.gui.tokens import DIFF_MARKER, RECIPIENT
from trajkit.render import IMAGE_PAD, IMAGE_PLACEHOLDER, VISION_END, VISION_START
from trajkit.rollout import (
    RolloutConfig,
    _Live,
    _to_trajectory,
    episode_id,
    read_done,
    record_step,
    safe_reset,
    safe_step,
    sample_seed,
)

PLAN_MODES = ("enforced_plan", "self_plan")
IM_END = "<|im_end|>"
HEADER = f"<|im_start|>assistant{RECIPIENT}"
OMITTED = "[earlier screenshot not shown]"


@dataclass
class GuiRolloutConfig(RolloutConfig):
    mode: str = "enforced_plan"
    max_images: int | None = None  # screenshots kept in a prompt, most recent first; None: all
    system: str | None = GUI_SYSTEM_PROMPT  # system turn of every episode ("" or None: none)


def gui_episode_prefix(obs, system: str | None = GUI_SYSTEM_PROMPT) -> list[Turn]:
    """The opening turns of a GUI episode, laid out as the MiniWoB++ oracle writes its data."""
    utterance = obs.instruction or obs.text.split("\n", 1)[0]
    turns = [Turn(SYSTEM, system)] if system else []
    turns.append(Turn(TASK, f"Instruction: {utterance}"))
    turns.append(screen_turn(obs, utterance))
    return turns


def screen_turn(obs, utterance: str | None) -> Turn:
    """An observation turn: `<image>` plus whatever text the env shows beyond the instruction."""
    text = obs.text or ""
    first, _, rest = text.partition("\n")
    extra = rest if utterance is not None and first == utterance else text
    if obs.image is None:
        return Turn(OBSERVATION, extra or "(no screenshot)")
    return Turn(OBSERVATION, IMAGE_PLACEHOLDER + (f"\n{extra}" if extra else ""), image=obs.image)


def cap_images(turns: list[Turn], max_images: int | None) -> list[Turn]:
    """`turns` with only the last `max_images` screenshots kept (None: all)."""
    if max_images is None:
        return turns
    seen = 0
    out: list[Turn] = []
    for turn in reversed(turns):
        if turn.image:
            seen += 1
            if seen > max_images:
                text = turn.text.replace(IMAGE_PLACEHOLDER, OMITTED)
                turn = dataclasses.replace(turn, text=text, image=None)
        out.append(turn)
    return out[::-1]


def read_agent_turn(ids: list[int], forced: list[int], decode, recipient: str | None = None) -> Turn:
    """An agent turn from the forced prefix ids + sampled ids; the recipient is the text before the
    first newline when not forced (self plan: anything but `all` is taken as `os`)."""
    full = list(forced) + list(ids)
    text = decode(full)
    end_turn: bool | None = None
    for marker, ends in ((DIFF_MARKER, True), (IM_END, False)):
        if text.endswith(marker):
            text, end_turn = text[: -len(marker)], ends
            break
    name, sep, body = text.partition("\n")
    chosen = RECIPIENT_ALL if name.strip() == RECIPIENT_ALL else RECIPIENT_OS
    if recipient is None:
        recipient = chosen
    if sep and name.strip() in (RECIPIENT_ALL, RECIPIENT_OS):
        text = body
    if end_turn is None:  # cut off by the token limit: closed as this recipient's turns close
        end_turn = recipient == RECIPIENT_OS
    return Turn(AGENT, text, recipient=recipient, end_turn=end_turn, token_ids=full)


def run_gui_rollouts(
    tasks: Iterable[Task],
    envs: list[Env],
    backend,
    renderer,
    out_path: str | Path,
    config: GuiRolloutConfig,
    progress: Callable[[str], None] | None = None,
) -> list[Trajectory]:
    """Roll out every (task, sample) not yet in `out_path`; return all trajectories in the file.

    `backend.generate(prompts, sampling, seeds, images=...)` is a `VLMBackend` (or anything with
    that call); `renderer` is the model's renderer with `image_tokens`.
    """
    if config.mode not in PLAN_MODES:
        raise ValueError(f"unknown GUI rollout mode {config.mode!r}; choose one of {', '.join(PLAN_MODES)}")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    done = read_done(out_path)
    pending: deque[tuple[Task, int, int]] = deque(
        (task, s, 0)
        for task in tasks
        for s in range(config.n_samples)
        if episode_id(config.policy_id, task.id, s) not in done
    )
    total = len(pending)
    free_envs = list(envs[: max(1, min(len(envs), config.batch_size))])
    live: list[_Live] = []
    finished = 0
    start = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=len(free_envs)) if len(free_envs) > 1 else None
    # A (small, random) policy can sample vision-span tokens; in a prompt they would stand for an
    # image that is not there, so a turn is cut before the first one (counted in metadata).
    vision_ids = {i for t in (VISION_START, IMAGE_PAD, VISION_END) for i in renderer.encode(t)}
    forced_all = renderer.encode(f"{RECIPIENT_ALL}\nThought:")
    forced_os = renderer.encode(f"{RECIPIENT_OS}\n")

    def decode(ids: list[int]) -> str:
        return renderer.tokenizer.decode(ids, skip_special_tokens=False)

    def map_envs(fn, items):
        return list(pool.map(fn, items)) if pool is not None else [fn(x) for x in items]

    with out_path.open("a", encoding="utf-8") as sink:

        def finish(ep: _Live, error: str | None = None) -> None:
            nonlocal finished
            free_envs.append(ep.env)
            if error is not None and ep.attempt == 0:
                pending.appendleft((ep.task, ep.sample, 1))
                return
            ep.info["mode"] = config.mode
            traj = _to_trajectory(ep, config, error)
            sink.write(json.dumps(traj.to_dict(), ensure_ascii=False) + "\n")
            sink.flush()
            os.fsync(sink.fileno())
            done[traj.id] = traj
            finished += 1
            if progress is not None:
                rate = finished / max(time.perf_counter() - start, 1e-9)
                progress(
                    f"{finished}/{total} episodes ({rate:.2f}/s) last={traj.task_id} reward={traj.reward}"
                )

        def generate(eps: list[_Live], forced: list[int] | None, phase: int) -> list[list[int]] | None:
            """One batch of generations; episodes whose prompt would overflow are ended (and
            removed from `live`); returns ids per remaining episode of `eps`, in order."""
            prompts, images, keep = [], [], []
            for ep in eps:
                rendered = renderer.prompt(cap_images(ep.turns, config.max_images), assistant_header=HEADER)
                ids = rendered.input_ids + list(forced or [])
                if len(ids) + config.sampling.max_new_tokens > config.max_context:
                    ep.info["context_exhausted"] = True
                    live.remove(ep)
                    finish(ep)
                    continue
                prompts.append(ids)
                images.append(list(rendered.images))
                keep.append(ep)
            eps[:] = keep
            if not keep:
                return None
            seeds = [sample_seed(config, ep.task.id, ep.sample, 2 * ep.steps + phase) for ep in keep]
            outs = backend.generate(prompts, config.sampling, seeds, images=images)
            for k, (ep, ids) in enumerate(zip(keep, outs, strict=True)):
                cut = next((i for i, t in enumerate(ids) if t in vision_ids), None)
                if cut is not None:
                    outs[k] = list(ids[:cut])
                    ep.info["vision_tokens_cut"] = ep.info.get("vision_tokens_cut", 0) + 1
            return outs

        while pending or live:
            starting = []
            while pending and free_envs:
                task, sample, attempt = pending.popleft()
                starting.append((task, sample, attempt, free_envs.pop()))
            for (task, sample, attempt, env), obs, err in map_envs(safe_reset, starting):
                ep = _Live(task, sample, env, [], attempt)
                if err is not None:
                    finish(ep, err)
                    continue
                ep.turns = gui_episode_prefix(obs, config.system)
                ep.info["utterance"] = obs.instruction or obs.text.split("\n", 1)[0]
                if "task_name" in task.spec:  # per-task success in `evaluate.summarize`
                    ep.info["family"] = task.spec["task_name"]
                live.append(ep)
            if not live:
                continue

            # First generation of the step: the plan (enforced) or the model's own recipient choice.
            first = list(live)
            forced = forced_all if config.mode == "enforced_plan" else None
            outs = generate(first, forced, 0)
            if outs is None:
                continue
            need_os: list[_Live] = []
            for ep, ids in zip(first, outs, strict=True):
                recipient = RECIPIENT_ALL if config.mode == "enforced_plan" else None
                turn = read_agent_turn(ids, forced or [], decode, recipient)
                ep.turns.append(turn)
                if turn.recipient == RECIPIENT_ALL:
                    need_os.append(ep)
            # Second generation for those that planned: the code turn, recipient forced to `os`.
            if need_os:
                outs = generate(need_os, forced_os, 1)
                for ep, ids in zip(need_os, outs or [], strict=True):
                    ep.turns.append(read_agent_turn(ids, forced_os, decode, RECIPIENT_OS))
            if not live:
                continue

            results = map_envs(lambda ep: safe_step(ep, ep.turns[-1].text), live)
            still_live = []
            for ep, (result, err) in zip(live, results, strict=True):
                if err is not None:
                    finish(ep, err)
                    continue
                if record_step(ep, result, screen_turn(result.observation, ep.info.get("utterance")), config):
                    finish(ep)
                else:
                    still_live.append(ep)
            live = still_live
    if pool is not None:
        pool.shutdown()
    return list(done.values())
