"""WebShop as a text environment: the original's pages and actions over its own data files.

Pages, in the text form ETO's agents read (parts joined by " [SEP] "):

    search   WebShop [SEP] Instruction: [SEP] <goal> [SEP] Search
    results  Instruction: [SEP] <goal> [SEP] Back to Search [SEP] Page 2 (Total results: 50) [SEP]
             < Prev [SEP] Next > [SEP] <ASIN> [SEP] <title> [SEP] <price> ...
    item     Instruction: [SEP] <goal> [SEP] Back to Search [SEP] < Prev [SEP] <option name> [SEP]
             <value> ... [SEP] <title> [SEP] Price: <price> [SEP] Rating: <rating> [SEP]
             Description [SEP] Features [SEP] Reviews [SEP] Buy Now
    sub-page Instruction: [SEP] <goal> [SEP] Back to Search [SEP] < Prev [SEP] <description,
             feature bullets or reviews>

Actions are `search[keywords]` and `click[value]`, matched case-insensitively against what the
page shows. As in the original text env, `search[...]` works from every page, and an action that
does not apply leaves the page as it is and returns it again. "Buy Now" ends the episode with the
purchase reward (reward.py); an episode also ends, with reward 0, after the task's step budget.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from trajkit.envs.base import Observation, StepResult, Task
from trajkit.envs.webshop import data as ws_data
from trajkit.envs.webshop.prompts import load_icl_turns, load_instruction

VERSION = "webshop-text-1"
SEARCH_RESULTS = 50  # the original returns the top 50 products
PAGE_SIZE = 10
DEFAULT_MAX_STEPS = 10  # ETO's step budget for WebShop
SEP = " [SEP] "
BACK_TO_SEARCH, NEXT_PAGE, PREV_PAGE, BUY_NOW = "Back to Search", "Next >", "< Prev", "Buy Now"
SUB_PAGES = ("Description", "Features", "Reviews")
# ETO's goal-index files: as copied under ../shared/data/eto/splits, and as in ETO's repository
# (eval_agent/data/webshop/).
SPLIT_FILES = (
    {"train": "webshop_train.json", "test": "webshop_test.json"},
    {"train": "train_indices.json", "test": "test_indices.json"},
)
# The original's own convention (its baseline models): goals 0-499 test, 500-1499 dev, rest train.
ORIGINAL_SPLITS = {"train": (1500, None), "dev": (500, 1500), "test": (0, 500)}
_ACTION = re.compile(r"(.+)\[(.+)\]", re.DOTALL)


def _split_files(splits_dir: str | os.PathLike[str] | None) -> dict[str, Path] | None:
    """ETO's train/test goal-index files in `splits_dir` (or its `splits/` or `webshop/`)."""
    if not splits_dir:
        return None
    folder = Path(splits_dir).expanduser()
    for candidate in (folder, folder / "splits", folder / "webshop"):
        for names in SPLIT_FILES:
            paths = {split: candidate / name for split, name in names.items()}
            if all(p.is_file() for p in paths.values()):
                return paths
    return None


class WebShopEnv:
    """WebShop over a folder of its original data files (see files.py for the files and fields).

    Task ids are goal indices as strings ("0", "3", ...), the ids of ETO's expert records; a
    task's spec is its goal (target ASIN, instruction, attributes, options, price bound, ...), so
    a test goal equal to a training goal counts as overlap whatever its index. Splits: ETO's
    goal-index files when `splits_dir` (or TRAJKIT_ETO_DATA) holds them, else the original's
    convention (test 0-499, dev 500-1499, train the rest).

    `data_dir` (default $WEBSHOP_DATA) holds the data files; `num_products` keeps the first N
    products as the original's option does; `human_goals` None means human goals when
    items_human_ins.json is there; `prompts_dir` (default $TRAJKIT_ETO_PROMPTS) holds ETO's
    instruction; `cache` is the folder for the goal-list and search-index caches (True: the
    default one, False: none). Construction only looks for files; data is read when first needed.
    """

    name = "webshop"
    version = VERSION
    observation_prefix = "Observation:\n"  # as ETO's WebShop env and expert data write it

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        num_products: int | None = None,
        human_goals: bool | None = None,
        splits_dir: str | os.PathLike[str] | None = None,
        prompts_dir: str | os.PathLike[str] | None = None,
        max_steps: int = DEFAULT_MAX_STEPS,
        products_file: str | None = None,
        attributes_file: str | None = None,
        cache: str | bool = True,
    ) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        if num_products is not None and num_products < 1:
            raise ValueError(f"num_products must be >= 1, got {num_products}")
        data_dir = data_dir or os.environ.get("WEBSHOP_DATA")
        found = ws_data.find_files(data_dir, products_file, attributes_file)
        if isinstance(found, str):
            raise FileNotFoundError(found)
        self.files = found
        if human_goals is None:
            human_goals = found.human is not None
        elif human_goals and found.human is None:
            raise FileNotFoundError(f"human_goals=True needs {ws_data.HUMAN_GOALS_FILE} in {Path(data_dir)}")
        self.human_goals = human_goals
        self.num_products = num_products
        self.max_steps = max_steps
        if cache is True:
            self._cache_dir: Path | None = ws_data.default_cache_dir()
        else:
            self._cache_dir = Path(cache).expanduser() if cache else None
        self.split_files = _split_files(splits_dir or os.environ.get("TRAJKIT_ETO_DATA"))
        if splits_dir and self.split_files is None:
            names = " or ".join(f"{n['train']} + {n['test']}" for n in SPLIT_FILES)
            raise FileNotFoundError(f"{splits_dir} holds no ETO WebShop split files ({names})")
        self.splits = ("train", "test") if self.split_files else ("train", "dev", "test")
        self.prompts_dir = prompts_dir or os.environ.get("TRAJKIT_ETO_PROMPTS")
        self.instruction, self.instruction_source = load_instruction(self.prompts_dir)
        self._tasks: dict[str, list[Task]] = {}
        self._goals: list[dict] | None = None
        self._catalogue: ws_data.Catalogue | None = None
        self._task: Task | None = None
        self._done = True

    # ---- tasks ---------------------------------------------------------------------------------

    def goals(self) -> list[dict]:
        """Every goal of the catalogue, in the original's order (goal index = position)."""
        if self._goals is None:
            self._goals = ws_data.load_goals(self.files, self.num_products, self.human_goals, self._cache_dir)
        return self._goals

    def _split_indices(self, split: str) -> list[int]:
        n = len(self.goals())
        if self.split_files is None:
            lo, hi = ORIGINAL_SPLITS[split]
            return list(range(lo, min(n, hi) if hi is not None else n))
        path = self.split_files[split]
        from trajkit.data.io import DataError

        indices = ws_data.load_json(path, list)
        for i, idx in enumerate(indices):
            if not isinstance(idx, int) or isinstance(idx, bool) or idx < 0:
                raise DataError(
                    f"goal indices must be non-negative integers, got {idx!r}", file=path, record=i
                )
            if idx >= n:
                raise DataError(
                    f"goal index {idx} is past the {n} goals of this catalogue; ETO's splits index the "
                    f"goals of the full product file ({ws_data.PRODUCT_FILES[0]}) with human goals",
                    file=path,
                    record=i,
                )
        return list(dict.fromkeys(indices))  # ETO's train list names one goal twice; keep it once

    def tasks(self, split: str) -> list[Task]:
        if split not in self.splits:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(self.splits)}")
        if split not in self._tasks:
            goals = self.goals()
            self._tasks[split] = [
                Task(id=str(i), split=split, spec=goals[i], max_steps=self.max_steps)
                for i in self._split_indices(split)
            ]
        return list(self._tasks[split])

    def icl_turns(self, task: Task | None = None) -> list:
        """ETO's one in-context WebShop episode as turns, or [] without its prompt files."""
        return load_icl_turns(self.prompts_dir)

    # ---- catalogue -----------------------------------------------------------------------------

    @property
    def catalogue(self) -> ws_data.Catalogue:
        if self._catalogue is None:
            self._catalogue = ws_data.load_catalogue(
                self.files, self.num_products, self.human_goals, self._cache_dir
            )
            self._goals = self._catalogue.goals
        return self._catalogue

    def search(self, keywords: str) -> list[ws_data.Product]:
        """The top products for `keywords`, best first (at most 50, like the original)."""
        cat = self.catalogue
        return [cat.products[i] for i in cat.index.search(keywords, SEARCH_RESULTS)]

    # ---- episode -------------------------------------------------------------------------------

    def reset(self, task: Task) -> Observation:
        if not task.id.isdigit():
            raise ValueError(f"webshop task ids are goal indices, got {task.id!r}")
        goals = self.catalogue.goals
        index = int(task.id)
        if index >= len(goals):
            raise ValueError(f"task {task.id}: this catalogue has only {len(goals)} goals")
        goal = goals[index]
        if task.spec and task.spec != goal:
            raise ValueError(
                f"task {task.id} names a different goal than this catalogue's goal {index} "
                "(made from other data files or options?)"
            )
        self._task = task
        self._goal = goal
        self._steps = 0
        self._done = False
        self._won = False
        self._reward = 0.0
        self._go_to_search()
        return Observation(text=self._text, instruction=goal["instruction_text"])

    def step(self, action_text: str) -> StepResult:
        if self._task is None:
            raise RuntimeError("step() before reset(): start an episode with reset(task)")
        if self._done:
            raise RuntimeError(f"episode on task {self._task.id} is over; call reset(task) to start another")
        self._steps += 1
        info: dict[str, Any] = {}
        match = _ACTION.match(action_text.strip())
        verb, arg = (match.group(1), match.group(2).lower()) if match else (action_text.strip(), None)
        valid = True
        if verb == "search" and arg and arg.strip():
            self._search(arg)
        elif verb == "click" and arg in self._clickables and arg != "search":
            info.update(self._click(arg))
        else:
            valid = False  # the page stays as it is, as in the original
        truncated = not self._done and self._steps >= self._task.max_steps
        self._done = self._done or truncated
        info.update(
            {
                "won": self._won,
                "valid": valid,
                "truncated": truncated,
                "steps": self._steps,
                "page": self._page,
            }
        )
        return StepResult(Observation(self._text), self._reward, self._done, info)

    def close(self) -> None:
        self._task = None
        self._done = True

    # ---- pages ---------------------------------------------------------------------------------

    def _head(self) -> list[str]:
        return ["Instruction:", self._goal["instruction_text"], BACK_TO_SEARCH]

    def _show(self, page: str, parts: list[str], clickables: dict[str, Any]) -> None:
        self._page = page
        self._text = SEP.join(parts)
        self._clickables = clickables

    def _go_to_search(self) -> None:
        self._keywords: str | None = None
        self._results: list[ws_data.Product] = []
        self._result_page = 1
        self._asin: str | None = None
        self._options: dict[str, str] = {}
        self._show("search", ["WebShop", "Instruction:", self._goal["instruction_text"], "Search"], {})

    def _search(self, keywords: str, page: int = 1) -> None:
        if keywords != self._keywords:
            self._results = self.search(keywords)
            self._keywords = keywords
        self._result_page = page
        self._asin = None
        self._options = {}
        total = len(self._results)
        parts = [*self._head(), f"Page {page} (Total results: {total})"]
        clickables: dict[str, Any] = {BACK_TO_SEARCH.lower(): "back"}
        if page > 1:
            parts.append(PREV_PAGE)
            clickables[PREV_PAGE.lower()] = "prev"
        if page * PAGE_SIZE < total:
            parts.append(NEXT_PAGE)
            clickables[NEXT_PAGE.lower()] = "next"
        for product in self._results[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]:
            parts += [product.asin, product.title, product.price_tag]
            clickables[product.asin.lower()] = ("product", product.asin)
        self._show("results", parts, clickables)

    def _item_page(self) -> None:
        assert self._asin is not None
        product = self.catalogue.by_asin[self._asin]
        parts = [*self._head(), PREV_PAGE]
        clickables: dict[str, Any] = {BACK_TO_SEARCH.lower(): "back", PREV_PAGE.lower(): "prev"}
        for name, values in product.options.items():
            parts.append(name)
            for value in values:
                parts.append(value)
                clickables[value] = ("option", name)  # a value shown twice selects its last group
        parts += [product.title, f"Price: {product.price_tag}", f"Rating: {product.rating}"]
        for sub in SUB_PAGES:
            parts.append(sub)
            clickables[sub.lower()] = ("sub", sub)
        parts.append(BUY_NOW)
        clickables[BUY_NOW.lower()] = "buy"
        self._show("item", parts, clickables)

    def _sub_page(self, sub: str) -> None:
        product = self.catalogue.by_asin[self._asin or ""]
        if sub == "Description":
            content = [product.description] if product.description else []
        elif sub == "Features":
            content = [b for b in product.bullets if b]
        else:
            content = [x for title, score, body in product.reviews for x in (f'"{title}"', score, body)]
            content = content or ["No reviews found"]
        clickables = {BACK_TO_SEARCH.lower(): "back", PREV_PAGE.lower(): "prev"}
        self._show(f"item_sub_page:{sub}", [*self._head(), PREV_PAGE, *content], clickables)

    def _click(self, arg: str) -> dict[str, Any]:
        target = self._clickables[arg]
        if target == "back":
            self._go_to_search()
        elif target == "next":
            self._search(self._keywords or "", self._result_page + 1)
        elif target == "prev" and self._page == "results":
            self._search(self._keywords or "", self._result_page - 1)
        elif target == "prev" and self._page == "item":
            self._search(self._keywords or "", self._result_page)
        elif target == "prev":
            self._item_page()  # from a sub-page back to its item
        elif target == "buy":
            return self._buy()
        elif target[0] == "product":
            self._asin = target[1]
            self._item_page()
        elif target[0] == "option":
            self._options[target[1]] = arg
            self._item_page()
        elif target[0] == "sub":
            self._sub_page(target[1])
        return {}

    def _buy(self) -> dict[str, Any]:
        from trajkit.envs.webshop.reward import purchase_reward

        product = self.catalogue.by_asin[self._asin or ""]
        reward, parts = purchase_reward(product, self._goal, product.price, self._options)
        self._reward = reward
        self._won = abs(reward - 1.0) < 1e-9
        self._done = True
        self._show(
            "done",
            ["Thank you for shopping with us!", "Your score (min 0.0, max 1.0)", f"{reward}"],
            {},
        )
        return {"purchased": product.asin, "options": dict(self._options), "reward_parts": parts}
