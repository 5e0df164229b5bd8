"""The goal list built from the products and the attribute or human-goal file.

Goals follow the original engine: products in file order (duplicates and malformed ASINs
skipped), human goals when the human file is there (else synthetic goals from the attribute file),
then shuffled with seed 233, so goal index i is the original's goal i. One deliberate difference:
the original draws product prices inside a listed price range and each goal's price bound from the
unseeded global RNG, so those change from run to run; here they come from RNGs seeded by the ASIN
(and the goal's position), so they are the same in every process.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

from trajkit.data.io import DataError
from trajkit.envs.webshop.files import HUMAN_GOALS_FILE, DataFiles, Product, _text, _texts, load_json

GOAL_SHUFFLE_SEED = 233  # the original shuffles its goal list with this seed
PRICE_BOUNDS = [10.0 * i for i in range(1, 100)]
NO_PRICE_BOUND = 1000000.0
# Bump when goal generation changes, so cached goal lists are rebuilt.
GOALS_FORMAT = 1


def _price_bound(price: float, rng: random.Random) -> tuple[float, str]:
    """A bound above the price drawn from the next few multiples of ten, as the original does."""
    above = [p for p in PRICE_BOUNDS if p > price][:4]
    if len(above) < 2:
        return NO_PRICE_BOUND, ""
    _, upper = sorted(rng.sample(above, 2))
    return upper, f", and price lower than {upper:.2f} dollars"


def _goal(
    product: Product, instruction: str, attributes: list[str], options: Any, price_upper: float
) -> dict:
    # The original's goal record (its sampling weight aside); it is also the task's spec.
    return {
        "asin": product.asin,
        "category": product.category,
        "query": product.query,
        "name": product.title,
        "product_category": product.product_category,
        "instruction_text": instruction,
        "attributes": attributes,
        "price_upper": price_upper,
        "goal_options": options,
    }


def human_goals(products: list[Product], human: dict[str, Any], path: Path) -> list[dict]:
    goals = []
    for product in products:
        entries = human.get(product.asin)
        if entries is None:
            continue
        if not isinstance(entries, list):
            raise DataError("must be a list of instruction objects", file=path, field=product.asin)
        for k, entry in enumerate(entries):
            where = f"{product.asin}[{k}]"
            if not isinstance(entry, dict):
                raise DataError("must be an object", file=path, field=where)
            attrs = _texts(entry.get("instruction_attributes"), path, None, f"{where}.instruction_attributes")
            if not attrs:
                continue  # the original skips goals without attributes
            text = _text(entry.get("instruction"), path, None, f"{where}.instruction")
            options = entry.get("instruction_options", [])
            if isinstance(options, dict):
                if not all(isinstance(v, str) for v in options.values()):
                    raise DataError("values must be strings", file=path, field=f"{where}.instruction_options")
            else:
                options = _texts(options, path, None, f"{where}.instruction_options")
            upper, price_text = _price_bound(
                product.price, random.Random(f"webshop/bound/{product.asin}/{k}")
            )
            goals.append(_goal(product, text.strip(".") + price_text, attrs, options, upper))
    return goals


def synthetic_goals(products: list[Product], attributes: dict[str, Any], path: Path) -> list[dict]:
    """One goal per option combination of every product with a generated instruction."""
    goals = []
    for product in products:
        info = attributes.get(product.asin) or {}
        text = info.get("instruction")
        if text is None:
            continue
        text = _text(text, path, None, f"{product.asin}.instruction")
        attrs = _texts(
            info.get("instruction_attributes"), path, None, f"{product.asin}.instruction_attributes"
        )
        if not attrs:
            raise DataError(
                "must not be empty when 'instruction' is given",
                file=path,
                field=f"{product.asin}.instruction_attributes",
            )
        upper, price_text = _price_bound(product.price, random.Random(f"webshop/bound/{product.asin}"))
        names = sorted(product.options)
        for combination in itertools.product(*(product.options[n] for n in names)):
            chosen = dict(zip(names, combination, strict=True))
            option_text = ", and ".join(f"{k}: {v}" for k, v in chosen.items())
            option_text = f" with {option_text}" if option_text else ""
            goals.append(_goal(product, f"{text}{option_text}{price_text}", attrs, chosen, upper))
    return goals


def build_goals(
    products: list[Product], attributes: dict[str, Any], files: DataFiles, human: bool
) -> list[dict]:
    if human:
        if files.human is None:
            raise DataError(
                f"human goals asked for but {HUMAN_GOALS_FILE} is missing", file=files.products.parent
            )
        goals = human_goals(products, load_json(files.human, dict), files.human)
    else:
        goals = synthetic_goals(products, attributes, files.attributes)
    random.Random(GOAL_SHUFFLE_SEED).shuffle(goals)  # same permutation as the original's seeded shuffle
    return goals
