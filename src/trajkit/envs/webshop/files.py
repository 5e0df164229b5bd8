"""WebShop's original data files: finding them and reading them into `Product` records.

The user provides a folder with the files of princeton-nlp/WebShop (its `setup.sh` downloads them):

- products: `items_shuffle.json` (all 1.18M products) or `items_shuffle_1000.json` (the first 1000);
  a JSON list of records with `asin`, `name`, `full_description`, `small_description`, `pricing`,
  `customization_options`, `category`, `query`, `product_category`.
- attributes: `items_ins_v2.json` or `items_ins_v2_1000.json`; a JSON object asin ->
  `{"attributes": [...], "instruction": ..., "instruction_attributes": [...]}`.
- human goals: `items_human_ins.json`; a JSON object asin -> list of
  `{"instruction", "instruction_attributes", "instruction_options"}`.
- optional `reviews.json`: a list of `{"asin", "reviews": [{"title", "score"|"stars", "review"}],
  "average_rating"}`.
"""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from trajkit.data.io import DataError

PRODUCT_FILES = ("items_shuffle.json", "items_shuffle_1000.json")
ATTRIBUTE_FILES = ("items_ins_v2.json", "items_ins_v2_1000.json")
HUMAN_GOALS_FILE = "items_human_ins.json"
REVIEWS_FILE = "reviews.json"
DEFAULT_PRICE = 100.0  # a product without a price costs this, as in the original


@dataclass(frozen=True)
class DataFiles:
    products: Path
    attributes: Path
    human: Path | None
    reviews: Path | None


def _pick(folder: Path, names: tuple[str, ...], explicit: str | None) -> Path | None:
    if explicit:
        path = Path(explicit)
        return path if path.is_absolute() else folder / path
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


def find_files(
    data_dir: str | os.PathLike[str] | None,
    products_file: str | None = None,
    attributes_file: str | None = None,
) -> DataFiles | str:
    """The data files in `data_dir`, or a sentence saying what is missing."""
    if not data_dir:
        return (
            "no WebShop data folder: set WEBSHOP_DATA (or pass data_dir=) to a folder holding "
            f"{PRODUCT_FILES[0]}, {ATTRIBUTE_FILES[0]} and {HUMAN_GOALS_FILE} from princeton-nlp/WebShop"
        )
    folder = Path(data_dir).expanduser()
    if not folder.is_dir():
        return f"WebShop data folder {folder} does not exist"
    products = _pick(folder, PRODUCT_FILES, products_file)
    attributes = _pick(folder, ATTRIBUTE_FILES, attributes_file)
    missing = []
    if products is None or not products.is_file():
        missing.append(str(products) if products else " or ".join(PRODUCT_FILES))
    if attributes is None or not attributes.is_file():
        missing.append(str(attributes) if attributes else " or ".join(ATTRIBUTE_FILES))
    if missing:
        return f"WebShop data folder {folder} lacks {', '.join(missing)}"
    assert products is not None and attributes is not None
    human = folder / HUMAN_GOALS_FILE
    reviews = folder / REVIEWS_FILE
    return DataFiles(
        products, attributes, human if human.is_file() else None, reviews if reviews.is_file() else None
    )


# ---- records ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class Product:
    """One product with the fields the pages, the search index and the reward read."""

    asin: str
    title: str
    description: str
    bullets: list[str]
    pricing: list[float]
    price_tag: str
    price: float  # what a purchase costs (the reward's price check)
    options: dict[str, list[str]]
    attributes: list[str]
    category: str
    query: str
    product_category: str
    rating: str = "N.A."
    reviews: list[tuple[str, str, str]] = field(default_factory=list)  # (title, score, body)

    def search_text(self) -> str:
        # What the original indexes: title, description, first bullet point and the options.
        option_text = ", and ".join(f"{name}: {', '.join(values)}" for name, values in self.options.items())
        first_bullet = self.bullets[0] if self.bullets else ""
        return " ".join([self.title, self.description, first_bullet, option_text]).lower()


def load_json(path: Path, kind: type) -> Any:
    try:
        with path.open(encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as err:
        raise DataError(
            f"not valid JSON ({err.msg} at line {err.lineno} column {err.colno})", file=path
        ) from None
    except OSError as err:
        raise DataError(f"cannot read: {err.strerror}", file=path) from None
    if not isinstance(data, kind):
        want = "a list of records" if kind is list else "an object keyed by ASIN"
        raise DataError(f"expected {want}, got {type(data).__name__}", file=path)
    return data


def _text(value: Any, path: Path, record: int | None, name: str, *, optional: bool = False) -> str:
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        got = "nothing" if value is None else type(value).__name__
        raise DataError(f"must be a string, got {got}", file=path, record=record, field=name)
    return value


def _texts(value: Any, path: Path, record: int | None, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError("must be a list of strings", file=path, record=record, field=name)
    return value


def parse_pricing(raw: Any, path: Path, record: int) -> tuple[list[float], str]:
    """The original's price parsing: every `$`-prefixed number; a range keeps its first two."""
    if raw is None or raw == "" or raw == []:
        return [DEFAULT_PRICE], f"${DEFAULT_PRICE}"
    if not isinstance(raw, str):
        raise DataError(
            f"must be a string like '$12.99', got {type(raw).__name__}",
            file=path,
            record=record,
            field="pricing",
        )
    prices = []
    for piece in raw.split("$")[1:]:
        digits = re.sub(r"[^\d.]", "", piece)
        try:
            prices.append(float(Decimal(digits)))
        except InvalidOperation:
            raise DataError(
                f"cannot read a price in {raw!r}", file=path, record=record, field="pricing"
            ) from None
    if not prices:
        raise DataError(f"no '$' price in {raw!r}", file=path, record=record, field="pricing")
    if len(prices) == 1:
        return prices, f"${prices[0]}"
    return prices[:2], f"${prices[0]} to ${prices[1]}"


def _options(raw: Any, path: Path, record: int) -> dict[str, list[str]]:
    if not raw:
        return {}
    if not isinstance(raw, dict):
        raise DataError(
            "must be an object of option name -> list of {value}",
            file=path,
            record=record,
            field="customization_options",
        )
    options: dict[str, list[str]] = {}
    for name, contents in raw.items():
        if contents is None:
            continue
        where = f"customization_options.{name}"
        if not isinstance(contents, list):
            raise DataError("must be a list of {value} objects", file=path, record=record, field=where)
        values = []
        for content in contents:
            if not isinstance(content, dict) or not isinstance(content.get("value"), str):
                raise DataError("every entry needs a string 'value'", file=path, record=record, field=where)
            # The site shows values lowercased with '/' spelled ' | ' (the original's form).
            values.append(content["value"].strip().replace("/", " | ").lower())
        options[name.lower()] = values
    return options


def product_price(asin: str, pricing: list[float]) -> float:
    if len(pricing) == 1:
        return pricing[0]
    return random.Random(f"webshop/price/{asin}").uniform(pricing[0], pricing[1])


def read_products(
    files: DataFiles, num_products: int | None = None
) -> tuple[list[Product], dict[str, dict[str, Any]]]:
    """Products in file order, as the original keeps them, and the attribute file's records."""
    path = files.products
    raw = load_json(path, list)
    attributes = load_json(files.attributes, dict)
    reviews = _read_reviews(files.reviews) if files.reviews else {}
    if num_products is not None:
        raw = raw[:num_products]  # the original assumes the file is shuffled already
    products: list[Product] = []
    seen: set[str] = set()
    for i, record in enumerate(raw):
        if not isinstance(record, dict):
            raise DataError(f"must be an object, got {type(record).__name__}", file=path, record=i)
        asin = _text(record.get("asin"), path, i, "asin")
        if asin == "nan" or len(asin) > 10 or asin in seen:
            continue  # skipped by the original too
        seen.add(asin)
        bullets_raw = record.get("small_description")
        if isinstance(bullets_raw, list):
            bullets = _texts(bullets_raw, path, i, "small_description")
        else:
            bullets = [_text(bullets_raw, path, i, "small_description", optional=True)]
        pricing, price_tag = parse_pricing(record.get("pricing"), path, i)
        info = attributes.get(asin)
        if info is not None and not isinstance(info, dict):
            raise DataError("must be an object", file=files.attributes, field=asin)
        attrs = ["DUMMY_ATTR"]  # the original's stand-in for a product without attributes
        if info and "attributes" in info:
            attrs = _texts(info["attributes"], files.attributes, None, f"{asin}.attributes")
        rating, product_reviews = reviews.get(asin, ("N.A.", []))
        products.append(
            Product(
                asin=asin,
                title=_text(record.get("name"), path, i, "name"),
                description=_text(record.get("full_description"), path, i, "full_description", optional=True),
                bullets=bullets,
                pricing=pricing,
                price_tag=price_tag,
                price=product_price(asin, pricing),
                options=_options(record.get("customization_options"), path, i),
                attributes=attrs,
                category=_text(record.get("category"), path, i, "category"),
                query=_text(record.get("query"), path, i, "query").lower().strip(),
                product_category=_text(record.get("product_category"), path, i, "product_category"),
                rating=rating,
                reviews=product_reviews,
            )
        )
    return products, attributes


def _read_reviews(path: Path) -> dict[str, tuple[str, list[tuple[str, str, str]]]]:
    out: dict[str, tuple[str, list[tuple[str, str, str]]]] = {}
    for i, record in enumerate(load_json(path, list)):
        if not isinstance(record, dict) or not isinstance(record.get("asin"), str):
            raise DataError("must be an object with a string 'asin'", file=path, record=i)
        items = record.get("reviews") or []
        if not isinstance(items, list) or not all(isinstance(r, dict) for r in items):
            raise DataError("must be a list of review objects", file=path, record=i, field="reviews")
        parsed = [
            (str(r.get("title", "")), str(r.get("score", r.get("stars", ""))), str(r.get("review", "")))
            for r in items
        ]
        out[record["asin"]] = (str(record.get("average_rating", "N.A.")), parsed)
    return out
