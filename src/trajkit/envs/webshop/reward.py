"""The purchase reward of WebShop: product type, attributes, options and price.

    reward = r_type * (attribute hits + option hits + [price <= bound]) / (#attributes + #options + 1)

as in the original's `get_reward`. Two of its tools are replaced here by small pure-Python ones:

- the fuzzy match (thefuzz's `token_set_ratio` > 85) is reimplemented below on the same rules
  (token sets, a subset scores 100, else an LCS-based similarity of sorted token strings);
- the type check compared the *nouns* of the two product names found by spaCy's tagger; without
  spaCy it compares their content words (lowercase words of two or more letters, minus function
  words), so adjectives count too and the title score of a different product can come out a
  little higher than the original's.

The reward is clipped to [0, 1]: the original counts one hit per *purchased* option, so buying
more options than the goal names could push it past 1.
"""

from __future__ import annotations

import re

from trajkit.envs.webshop.data import Product

FUZZY_THRESHOLD = 85
EXACT_MATCH_OPTIONS = ("size",)

_NON_ALNUM = re.compile(r"[^0-9a-z]+")
# Colour words an option value is reduced to (the first one contained in it, in this order), so
# "navy blue | white" and "navy" compare equal. Substring containment, as in the original.
COLOURS = (
    "aqua", "beige", "black", "blue", "blush", "bronze", "brown", "burgundy", "camel", "camo",
    "caramel", "champagne", "charcoal", "chocolate", "coffee", "copper", "coral", "cream", "denim",
    "gold", "gray", "green", "grey", "ivory", "khaki", "lavender", "lemon", "leopard", "lilac",
    "lime", "magenta", "maroon", "mauve", "mint", "mocha", "multicolor", "mustard", "natural",
    "navy", "nude", "olive", "orange", "peach", "pink", "plum", "purple", "rainbow", "red", "rose",
    "royal", "rust", "sand", "silver", "slate", "tan", "taupe", "teal", "turquoise", "violet",
    "white", "wine", "yellow",
)  # fmt: skip
_FUNCTION_WORDS = frozenset(
    "a about above after all an and any are as at be been but by can do for from has have her his "
    "how if in into is it its more most my new no not of off on one only or our out over per pcs "
    "so some such than that the their them then there these they this those to too two under up "
    "us very was we were what when which while who will with without you your".split()
)


def normalize_colour(value: str) -> str:
    for colour in COLOURS:
        if colour in value:
            return colour
    return value


def _lcs_length(a: str, b: str) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for ch in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if ch == other else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def _similarity(a: str, b: str) -> float:
    """100 * (1 - indel distance / total length): 100 for equal strings, 0 for disjoint ones."""
    total = len(a) + len(b)
    if total == 0:
        return 100.0
    return 100.0 * 2 * _lcs_length(a, b) / total


def token_set_ratio(a: str, b: str) -> int:
    """Token-set similarity in 0..100, on lowercased alphanumeric tokens."""
    tokens_a = set(_NON_ALNUM.sub(" ", a.lower()).split())
    tokens_b = set(_NON_ALNUM.sub(" ", b.lower()).split())
    if not tokens_a or not tokens_b:
        return 0
    common = tokens_a & tokens_b
    only_a, only_b = tokens_a - tokens_b, tokens_b - tokens_a
    if common and (not only_a or not only_b):
        return 100  # one token set holds the other
    shared = " ".join(sorted(common))
    rest_a, rest_b = " ".join(sorted(only_a)), " ".join(sorted(only_b))
    with_a = f"{shared} {rest_a}".strip()
    with_b = f"{shared} {rest_b}".strip()
    scores = [_similarity(with_a, with_b)]
    if shared:
        scores += [_similarity(shared, with_a), _similarity(shared, with_b)]
    return int(round(max(scores)))


def content_words(name: str) -> set[str]:
    """The stand-in for spaCy's noun extraction: lowercase words, function words dropped."""
    return {w for w in re.findall(r"[a-z]{2,}", name.lower()) if w not in _FUNCTION_WORDS}


def type_reward(product: Product, goal: dict) -> dict:
    query_match = product.query == goal["query"]
    bought_path = {x.strip() for x in product.product_category.split("\u203a")}
    goal_path = {x.strip() for x in goal["product_category"].split("\u203a")}
    category_match = len(bought_path & goal_path) >= 2
    wanted = content_words(goal["name"])
    title_score = 0.2 if not wanted else len(content_words(product.title) & wanted) / len(wanted)
    r_type = 1.0
    if not (query_match or category_match or title_score > 0.2):
        r_type = 0.5
    if title_score < 0.1:
        r_type = 0.1
    if title_score == 0.0:
        r_type = 0.0
    return {
        "r_type": r_type,
        "query_match": query_match,
        "category_match": category_match,
        "title_score": title_score,
    }


def _in_text(needle: str, product: Product) -> bool:
    return (
        needle in product.title.lower()
        or needle in " ".join(product.bullets).lower()
        or needle in product.description.lower()
    )


def attribute_hits(product: Product, goal_attributes: list[str]) -> int:
    hits = 0
    for wanted in goal_attributes:
        if any(token_set_ratio(have, wanted) > FUZZY_THRESHOLD for have in product.attributes):
            hits += 1
        elif _in_text(wanted, product):
            hits += 1
    return hits


def option_hits(product: Product, goal_options: list[str], chosen: dict[str, str]) -> int:
    wanted = [normalize_colour(v) for v in goal_options]
    hits = 0
    for name, value in chosen.items():
        value = normalize_colour(value)
        if name.lower() in EXACT_MATCH_OPTIONS:
            matched = value in wanted
        else:
            matched = any(token_set_ratio(w, value) > FUZZY_THRESHOLD for w in wanted)
        if matched or _in_text(value, product):
            hits += 1
    return hits


def purchase_reward(product: Product, goal: dict, price: float, chosen: dict[str, str]) -> tuple[float, dict]:
    """The reward of buying `product` with the `chosen` options ({option name: value}) for `goal`."""
    goal_options = goal["goal_options"]
    goal_values = list(goal_options.values()) if isinstance(goal_options, dict) else list(goal_options)
    kind = type_reward(product, goal)
    n_attr = attribute_hits(product, goal["attributes"])
    n_opt = option_hits(product, goal_values, chosen)
    price_ok = price <= goal["price_upper"]
    denominator = len(goal["attributes"]) + len(goal_values) + 1
    reward = (n_attr + n_opt + int(price_ok)) / denominator * kind["r_type"]
    parts = {
        **kind,
        "r_att": n_attr / len(goal["attributes"]) if goal["attributes"] else None,
        "r_option": n_opt / len(goal_values) if goal_values else None,
        "r_price": price_ok,
    }
    return min(1.0, max(0.0, reward)), parts
