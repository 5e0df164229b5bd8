"""The loaded WebShop catalogue, shared by every env of a process, and its on-disk caches.

Reading the files is in `files.py` (which also lists them) and building the goal list in
`goals.py`; their names are re-exported here, where the env and the tests look them up.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path

from trajkit.envs.webshop.files import (
    ATTRIBUTE_FILES,
    DEFAULT_PRICE,
    HUMAN_GOALS_FILE,
    PRODUCT_FILES,
    REVIEWS_FILE,
    DataFiles,
    Product,
    find_files,
    load_json,
    parse_pricing,
    product_price,
    read_products,
)
from trajkit.envs.webshop.goals import (
    GOAL_SHUFFLE_SEED,
    GOALS_FORMAT,
    NO_PRICE_BOUND,
    PRICE_BOUNDS,
    build_goals,
    human_goals,
    synthetic_goals,
)

__all__ = [
    "ATTRIBUTE_FILES",
    "DEFAULT_PRICE",
    "GOALS_FORMAT",
    "GOAL_SHUFFLE_SEED",
    "HUMAN_GOALS_FILE",
    "NO_PRICE_BOUND",
    "PRICE_BOUNDS",
    "PRODUCT_FILES",
    "REVIEWS_FILE",
    "Catalogue",
    "DataFiles",
    "Product",
    "build_goals",
    "catalogue_key",
    "default_cache_dir",
    "find_files",
    "human_goals",
    "load_catalogue",
    "load_goals",
    "load_json",
    "parse_pricing",
    "product_price",
    "read_products",
    "synthetic_goals",
]

# ---- the loaded catalogue, shared by every env of a process ----------------------------------------


class Catalogue:
    """Products, goals and (built on the first search) the search index of one data folder."""

    def __init__(
        self, products: list[Product], goals: list[dict], key: tuple = (), cache_dir: Path | None = None
    ):
        self.products = products
        self.by_asin = {p.asin: p for p in products}
        self.goals = goals
        self.key = key
        self.cache_dir = cache_dir
        self._index = None
        self._lock = threading.Lock()

    @property
    def index(self):
        """The BM25 index: from the on-disk cache when there, else built (and then cached)."""
        from trajkit.envs.webshop.search import INDEX_FORMAT, BM25Index

        with self._lock:
            if self._index is None:
                folder = _cache_path(self.cache_dir, (INDEX_FORMAT, *self.key), "index")
                if folder is not None and (folder / "vocab.json").is_file():
                    try:
                        self._index = BM25Index.load(folder)
                    except (OSError, ValueError, KeyError):
                        folder = None  # a damaged cache entry: rebuild, and leave it be
                if self._index is None:
                    self._index = BM25Index.build(p.search_text() for p in self.products)
                    if folder is not None:
                        try:
                            self._index.save(folder)
                        except OSError:
                            pass  # the cache only saves time
            return self._index


_CATALOGUES: dict[tuple, Catalogue] = {}
_GOALS: dict[tuple, list[dict]] = {}
_LOCK = threading.Lock()


def _file_key(path: Path | None) -> tuple:
    if path is None:
        return ("-",)
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def catalogue_key(files: DataFiles, num_products: int | None, human: bool) -> tuple:
    return (
        GOALS_FORMAT,
        _file_key(files.products),
        _file_key(files.attributes),
        _file_key(files.human if human else None),
        _file_key(files.reviews),
        num_products,
        human,
    )


def load_catalogue(
    files: DataFiles, num_products: int | None, human: bool, cache_dir: Path | None = None
) -> Catalogue:
    """The catalogue of these files, read once per process (the full product file is gigabytes)."""
    key = catalogue_key(files, num_products, human)
    with _LOCK:
        if key not in _CATALOGUES:
            products, attributes = read_products(files, num_products)
            goals = _GOALS.get(key) or build_goals(products, attributes, files, human)
            _CATALOGUES[key] = Catalogue(products, goals, key, cache_dir)
            _GOALS[key] = goals
        return _CATALOGUES[key]


def load_goals(files: DataFiles, num_products: int | None, human: bool, cache_dir: Path | None) -> list[dict]:
    """The goal list alone: from memory, from the on-disk cache, or by reading the catalogue.

    Listing tasks should not need the whole product file each time, so the goal list is cached
    on disk under a key made of the files' paths, sizes and modification times.
    """
    key = catalogue_key(files, num_products, human)
    with _LOCK:
        if key in _GOALS:
            return _GOALS[key]
    cached = _cache_path(cache_dir, key, "goals", ".json")
    if cached is not None and cached.is_file():
        try:
            goals = json.loads(cached.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            goals = None  # a broken cache file is rebuilt
        if isinstance(goals, list):
            with _LOCK:
                _GOALS.setdefault(key, goals)
                return _GOALS[key]
    goals = load_catalogue(files, num_products, human, cache_dir).goals
    if cached is not None:
        _write_cache(cached, goals)
    return goals


def _cache_path(cache_dir: Path | None, key: tuple, kind: str, suffix: str = "") -> Path | None:
    if cache_dir is None:
        return None
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:20]
    return cache_dir / f"{kind}-{digest}{suffix}"


def _write_cache(path: Path, goals: list[dict]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".goals-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(goals, fh)
        os.replace(tmp, path)
    except OSError:
        pass  # the cache only saves time; an unwritable cache folder is not an error


def default_cache_dir() -> Path:
    root = os.environ.get("TRAJKIT_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "trajkit")
    return Path(root) / "webshop"
