"""MiniWoB++ task pages in headless Chromium, played with real mouse and keyboard events.

Each env owns one browser (started on the first `reset`, through `trajkit.envs.browser`) with one
page showing a task file from the `miniwob` package over file://. An episode is one seed of one
task: `reset` ends the running episode, seeds the page's `Math.random`, lifts the 10 s episode
timer and starts the task. `step` parses the action text with `trajkit.gui.actions` (nothing the
model writes is executed) and sends it as mouse and keyboard events; the reward is the task's raw
reward (`WOB_RAW_REWARD_GLOBAL`, not time-discounted).

The task lists live in `tasks.py`, the action dispatch to the page in `actions.py` and the
element text of observations in `elements.py`.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
import uuid
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trajkit.envs.base import Observation, StepResult, Task
from trajkit.envs.browser import BrowserError, Chromium
from trajkit.envs.miniwob import page as js
from trajkit.envs.miniwob.actions import PageActions
from trajkit.envs.miniwob.elements import format_elements
from trajkit.envs.miniwob.tasks import (
    DEFAULT_N_TEST,
    DEFAULT_N_TRAIN,
    ORACLE_TASKS,
    SPLITS,
    TEST_SEED_OFFSET,
    _miniwob_dist,
    availability,
    task_names,
)

__all__ = [
    "DEFAULT_MAX_STEPS",
    "DEFAULT_N_TEST",
    "DEFAULT_N_TRAIN",
    "INSTRUCTION",
    "ORACLE_TASKS",
    "SPLITS",
    "TEST_SEED_OFFSET",
    "MiniWoBEnv",
    "availability",
    "format_elements",
    "task_names",
]

DEFAULT_MAX_STEPS = 15

INSTRUCTION = """\
You are a GUI agent working on a small web page. Each observation is a screenshot of the task \
area (160 x 210 CSS pixels) and the task's instruction; complete the task with mouse and keyboard \
actions written as pyautogui calls, one step at a time. Coordinates are fractions of the \
screenshot's width and height (0 to 1; pixels of the screenshot also work).

Actions you can use:
pyautogui.click(x=0.5, y=0.5)                         click (also doubleClick, rightClick, tripleClick)
pyautogui.moveTo(x=0.5, y=0.5)                        move the pointer
pyautogui.dragTo(from_coord=[x1, y1], to_coord=[x2, y2])   press, move, release
pyautogui.write(message='text')                       type text into the focused element
pyautogui.press(keys=['enter'])                       press keys one after another
pyautogui.hotkey(keys=['ctrl', 'a'])                  hold keys together
pyautogui.scroll(page=-1, x=0.5, y=0.5)               scroll at a point; one page is the task area's \
height, negative scrolls down
terminate(status='success')                           stop when the task cannot be finished otherwise

Most tasks end by themselves when their goal is met (for example when you press Submit). In \
every turn, first think about the screen and your plan, then give the action, in exactly this \
format:
Thought: <your reasoning>
Action: <pyautogui code>"""


class MiniWoBEnv(PageActions):
    """MiniWoB++ in Chromium. Task ids are "<task_name>/<seed>".

    tasks: task names (default: `ORACLE_TASKS`, the ones with expert data), or "all" for every
        page of the package. n_train / n_test: seeds per task; train uses seeds 0..n_train-1,
        test seeds TEST_SEED_OFFSET.. (disjoint).
    scale: device pixels per CSS pixel; screenshots are (160 * scale) x (210 * scale).
    screenshot_dir: where screenshots go (default: a temporary folder removed by `close()`).
    with_elements: add the visible elements (tag, text, box) to each observation's text.
    data_dir / html_dir: a MiniWoB++ `html` folder to use instead of the package's.
    episode_time_limit_s: the task's own timer (default: none; MiniWoB++'s 10 s would end slow
        agents' episodes). animations: keep jQuery animations (default: off, widgets jump to their
        end state, so screenshots never catch them half-way).
    """

    name = "miniwob"
    splits = SPLITS
    instruction = INSTRUCTION

    def __init__(
        self,
        tasks: Sequence[str] | str | None = None,
        n_train: int = DEFAULT_N_TRAIN,
        n_test: int = DEFAULT_N_TEST,
        scale: float = 2,
        screenshot_dir: str | os.PathLike[str] | None = None,
        with_elements: bool = False,
        headless: bool = True,
        max_steps: int = DEFAULT_MAX_STEPS,
        html_dir: str | os.PathLike[str] | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        chromium_path: str | None = None,
        episode_time_limit_s: float | None = None,
        animations: bool = False,
        call_timeout_s: float = 60.0,
    ) -> None:
        ver, package_html = _miniwob_dist()
        self.version = f"miniwob=={ver or 'unknown'}"
        folder = html_dir or data_dir or package_html
        if folder is None:
            raise ValueError("no MiniWoB++ html folder: install miniwob or pass html_dir")
        self.html_dir = Path(folder)
        known = task_names(self.html_dir)
        if not known:
            raise ValueError(f"{self.html_dir} has no miniwob/*.html task pages")
        if tasks is None:
            names = list(ORACLE_TASKS)
        elif isinstance(tasks, str):
            names = known if tasks == "all" else [t.strip() for t in tasks.split(",") if t.strip()]
        else:
            names = list(tasks)
        unknown = [t for t in names if t not in known]
        if unknown:
            raise ValueError(
                f"unknown MiniWoB++ task(s) {', '.join(unknown)} (pages in {self.html_dir / 'miniwob'})"
            )
        if len(set(names)) != len(names):
            raise ValueError("a MiniWoB++ task is listed twice")
        if n_train < 0 or n_test < 0:
            raise ValueError("n_train and n_test must be >= 0")
        if not (isinstance(scale, (int, float)) and 0.5 <= scale <= 4):
            raise ValueError(f"scale must be a number between 0.5 and 4, got {scale!r}")
        if episode_time_limit_s is not None and not 0 < episode_time_limit_s * 1000 < js.NO_TIME_LIMIT_MS:
            raise ValueError("episode_time_limit_s must be positive and below one day")
        self.task_list = names
        self.n_train, self.n_test = n_train, n_test
        self.scale = scale
        self.with_elements = with_elements
        self.headless = headless
        self.max_steps = max_steps
        self.chromium_path = chromium_path
        self.episode_time_limit_ms = (
            js.NO_TIME_LIMIT_MS if episode_time_limit_s is None else int(episode_time_limit_s * 1000)
        )
        self.animations = animations
        self.call_timeout_s = call_timeout_s
        self._own_dir = screenshot_dir is None
        self._screenshot_dir: Path | None = None if screenshot_dir is None else Path(screenshot_dir)
        self._dir_finalizer: weakref.finalize | None = None
        self.screen_width = round(js.AREA_W * scale)
        self.screen_height = round(js.AREA_H * scale)
        self._browser: Chromium | None = None
        self._loaded: str | None = None  # task page in the tab now
        self._task: Task | None = None
        self._episode = ""
        self._steps = 0
        self._done = True
        self._raw_reward = 0.0
        self._mouse = (js.AREA_W / 2, js.AREA_H / 2)
        self._mouse_down = False
        self.restarts = 0  # how often a dead browser was replaced

    # ---- tasks ---------------------------------------------------------------------------------

    def tasks(self, split: str) -> list[Task]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        count, offset = (self.n_train, 0) if split == "train" else (self.n_test, TEST_SEED_OFFSET)
        # Seed-major order: the first n tasks of a split cover every task name.
        return [
            Task(
                id=f"{name}/{offset + i}",
                split=split,
                spec={"task_name": name, "seed": offset + i},
                max_steps=self.max_steps,
            )
            for i in range(count)
            for name in self.task_list
        ]

    @staticmethod
    def task_for(task_name: str, seed: int, split: str = "train") -> Task:
        return Task(id=f"{task_name}/{seed}", split=split, spec={"task_name": task_name, "seed": seed})

    # ---- browser -------------------------------------------------------------------------------

    @property
    def screenshot_dir(self) -> Path:
        if self._screenshot_dir is None:
            self._screenshot_dir = Path(tempfile.mkdtemp(prefix="trajkit-miniwob-"))
            # Removed by close(), or at exit if nobody closes the env.
            self._dir_finalizer = weakref.finalize(self, shutil.rmtree, str(self._screenshot_dir), True)
        self._screenshot_dir.mkdir(parents=True, exist_ok=True)
        return self._screenshot_dir

    @property
    def owns_screenshot_dir(self) -> bool:
        """True when screenshots live in a temporary folder that `close()` removes."""
        return self._own_dir

    @property
    def browser(self) -> Chromium:
        if self._browser is None:
            self._browser = Chromium(
                viewport=js.VIEWPORT,
                scale=self.scale,
                headless=self.headless,
                executable=self.chromium_path,
                call_timeout_s=self.call_timeout_s,
            )
        return self._browser

    def _ensure_browser(self) -> Chromium:
        browser = self.browser
        if browser.started and not browser.alive():
            browser.restart()
            self.restarts += 1
            self._loaded = None
        elif not browser.started:
            browser.start()
            self._loaded = None
        return browser

    # ---- episodes ------------------------------------------------------------------------------

    def reset(self, task: Task) -> Observation:
        name, seed = self._check_task(task)
        browser = self._ensure_browser()
        try:
            utterance = browser.call(self._reset_page, name, seed)
        except Exception:
            # A page or browser that broke between episodes gets one fresh start.
            browser.restart()
            self.restarts += 1
            self._loaded = None
            utterance = browser.call(self._reset_page, name, seed)
        self._task = task
        self._episode = uuid.uuid4().hex[:8]
        self._steps = 0
        self._done = False
        self._raw_reward = 0.0
        self._mouse = (js.AREA_W / 2, js.AREA_H / 2)
        text, image = browser.call(self._observe, utterance)
        return Observation(text=text, image=image, instruction=utterance)

    def _check_task(self, task: Task) -> tuple[str, int]:
        spec = task.spec or {}
        name, seed = spec.get("task_name"), spec.get("seed")
        if not isinstance(name, str) or not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"task {task.id}: spec needs 'task_name' (str) and 'seed' (int), got {spec!r}")
        if not (self.html_dir / "miniwob" / f"{name}.html").is_file():
            raise ValueError(f"task {task.id}: no MiniWoB++ page {name}.html in {self.html_dir / 'miniwob'}")
        return name, seed

    def _reset_page(self, page: Any, name: str, seed: int) -> str:
        if self._loaded != name:
            self._loaded = None
            url = (self.html_dir / "miniwob" / f"{name}.html").resolve().as_uri()
            page.goto(url, wait_until="load")
            page.wait_for_function(js.PAGE_READY_JS, timeout=10_000)
            if not self.animations:
                page.evaluate(js.NO_ANIMATIONS_JS)
            self._loaded = name
        if self._mouse_down:
            page.mouse.up()
            self._mouse_down = False
        page.evaluate(js.RESET_JS, [seed, self.episode_time_limit_ms])
        page.wait_for_function(js.TASK_READY_JS, timeout=10_000)
        return str(page.evaluate(js.STATE_JS)["utterance"])

    def _observe(self, page: Any, utterance: str | None = None) -> tuple[str, str]:
        text = str(page.evaluate(js.UTTERANCE_JS)) if utterance is None else utterance
        if self.with_elements:
            text += "\n" + format_elements(page.evaluate(js.ELEMENTS_JS, [js.AREA_W, js.AREA_H]))
        return text, self._screenshot(page)

    def _screenshot(self, page: Any) -> str:
        task = self._task
        label = task.spec["task_name"] if task is not None else "page"
        seed = task.spec["seed"] if task is not None else 0
        path = self.screenshot_dir / f"{label}_{seed}_{self._episode}_{self._steps:02d}.png"
        shot = self.browser.cdp(
            "Page.captureScreenshot",
            # clip.scale counts device pixels per CSS pixel: the screenshot has the page's resolution.
            {
                "format": "png",
                "clip": {"x": 0, "y": 0, "width": js.AREA_W, "height": js.AREA_H, "scale": self.scale},
            },
        )
        path.write_bytes(base64.b64decode(shot["data"]))
        return str(path)

    def step(self, action_text: str) -> StepResult:
        if self._task is None:
            raise RuntimeError("step() before reset()")
        if self._done:
            # After the task ends its page shows the START cover, where a click would silently
            # begin a new episode: nothing more is sent to it.
            return StepResult(
                Observation("The episode is over; no more actions are taken. Reset to start another."),
                max(0.0, self._raw_reward),
                True,
                {
                    "won": self._raw_reward > 0,
                    "raw_reward": self._raw_reward,
                    "refused": True,
                    "valid": False,
                },
            )
        from trajkit.gui.actions import ActionParseError, parse_actions
        from trajkit.gui.prompts import extract_os_code

        self._steps += 1
        try:
            code = extract_os_code(action_text) if isinstance(action_text, str) else action_text
            actions = parse_actions(code, width=self.screen_width, height=self.screen_height)
            for action in actions:
                self._check_supported(action)
        except ActionParseError as err:
            return self._invalid(str(err))
        browser = self.browser
        if not browser.alive():
            self._done = True
            raise BrowserError("the browser is gone; the next reset starts a new one")
        try:
            state, ended_by_agent = browser.call(self._perform, actions)
        except ActionParseError as err:
            return self._invalid(str(err))
        except Exception as err:
            if not browser.alive():
                self._done = True
                raise BrowserError(f"the browser died during the step: {err}") from err
            raise
        raw = float(state["raw_reward"]) if state["done"] else 0.0
        self._raw_reward = raw
        info: dict[str, Any] = {
            "won": raw > 0,
            "raw_reward": raw,
            "valid": True,
            "actions": [a.to_dict() for a in actions],
        }
        if state.get("reason"):
            info["reason"] = state["reason"]
        if state["done"] or ended_by_agent:
            self._done = True
            if ended_by_agent and not state["done"]:
                info["ended_by_agent"] = True
            text = f"The episode is over (raw reward {raw:g})."
            return StepResult(Observation(text), max(0.0, raw), True, info)
        text, image = browser.call(self._observe, state.get("utterance"))
        return StepResult(Observation(text, image), 0.0, False, info)

    def _invalid(self, message: str) -> StepResult:
        text, image = self.browser.call(self._observe)
        return StepResult(
            Observation(f"Invalid action: {message}\n{text}", image),
            0.0,
            False,
            {"won": False, "raw_reward": 0.0, "valid": False, "error": message},
        )

    # ---- oracle support --------------------------------------------------------------------------

    def elements(self) -> list[dict[str, Any]]:
        """The visible elements of the task area now (see page.ELEMENTS_JS); for scripted experts."""
        return self.browser.call(lambda page: page.evaluate(js.ELEMENTS_JS, [js.AREA_W, js.AREA_H]))

    def utterance(self) -> str:
        return str(self.browser.call(lambda page: page.evaluate(js.UTTERANCE_JS)))

    @property
    def done(self) -> bool:
        return self._done

    # ---- end -------------------------------------------------------------------------------------

    def close(self) -> None:
        if self._browser is not None:
            self._browser.close()
            self._browser = None
        self._loaded = None
        if self._own_dir and self._screenshot_dir is not None:
            if self._dir_finalizer is not None:
                self._dir_finalizer.detach()
                self._dir_finalizer = None
            shutil.rmtree(self._screenshot_dir, ignore_errors=True)
            self._screenshot_dir = None

    def __enter__(self) -> MiniWoBEnv:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
