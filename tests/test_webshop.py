"""WebShop over a small catalogue written here in the original data formats."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest
from conftest import shared_data_path  # tests/ is on sys.path (rootdir conftest)

from trajkit.data.io import DataError
from trajkit.envs.base import Task
from trajkit.envs.webshop import WebShopEnv, availability, oracle_trajectory
from trajkit.envs.webshop.data import GOAL_SHUFFLE_SEED
from trajkit.envs.webshop.reward import token_set_ratio

PACKAGING = "Ships in recyclable packaging."


def _product(asin, name, category, query, path, price, options, bullets, description=""):
    return {
        "asin": asin,
        "name": name,
        "category": category,
        "query": query,
        "product_category": path,
        "full_description": f"{description} {PACKAGING}".strip(),
        "small_description": bullets,
        "pricing": price,
        "customization_options": {k: [{"value": v, "image": None} for v in vs] for k, vs in options.items()},
        "images": ["https://example.invalid/img.jpg"],
    }


MEN_TEES = "Clothing, Shoes & Jewelry \u203a Men \u203a Clothing \u203a Shirts \u203a T-Shirts"
PRODUCTS = [
    _product(
        "B000000001",
        "Lavender Body Lotion for Dry Skin, 8 Fl Oz",
        "beauty",
        "body lotion",
        "Beauty & Personal Care \u203a Skin Care \u203a Body \u203a Lotions",
        "$12.99",
        {"Size": ["8 fl oz", "16 fl oz (pack of 2)"]},
        ["Soothes rough elbows and knees"],
    ),
    _product(
        "B000000002",
        "Unscented Body Lotion with Shea Butter, 12 Fl Oz",
        "beauty",
        "body lotion",
        "Beauty & Personal Care \u203a Skin Care \u203a Body \u203a Lotions",
        "$9.50 - $14.00",
        {"Size": ["12 fl oz", "24 fl oz"]},
        ["Rich daily moisture"],
    ),
    _product(
        "B000000003",
        "Argan Oil Shampoo for Damaged Hair",
        "beauty",
        "shampoo",
        "Beauty & Personal Care \u203a Hair Care \u203a Shampoo",
        "$18.00",
        {"Size": ["10 fl oz", "33.8 fl oz"]},
        ["Repairs split ends"],
    ),
    _product(
        "B000000004",
        "Men's Classic Fit Cotton T-Shirt",
        "fashion",
        "men's t-shirts",
        MEN_TEES,
        "$15.99",
        {"Color": ["navy", "black", "heather grey"], "Size": ["small", "medium", "large", "x-large"]},
        ["Soft ringspun cotton", "Tagless neck"],
        "An everyday crew neck tee.",
    ),
    _product(
        "B000000005",
        "Women's Slim Fit Running Shorts",
        "fashion",
        "women's shorts",
        "Clothing, Shoes & Jewelry \u203a Women \u203a Clothing \u203a Shorts",
        "$22.00",
        {"Color": ["black", "pink"], "Size": ["small", "medium"]},
        ["Stretch fabric"],
    ),
    _product(
        "B000000006",
        "Men's Waterproof Hiking Boots",
        "fashion",
        "men's boots",
        "Clothing, Shoes & Jewelry \u203a Men \u203a Shoes \u203a Boots",
        "$89.99",
        {"Color": ["Brown", "Black/Grey"], "Size": ["9", "10", "11"]},
        ["Rubber lug sole"],
    ),
    _product(
        "B000000007",
        "Organic Dark Chocolate Bar, 3.5 oz (Pack of 12)",
        "food",
        "chocolate",
        "Grocery & Gourmet Food \u203a Snacks \u203a Chocolate",
        "$29.99",
        {"Flavor Name": ["sea salt", "almond"], "Size": ["pack of 6", "pack of 12"]},
        ["70% cacao"],
    ),
    _product(
        "B000000008",
        "Gluten Free Crackers Variety Pack",
        "food",
        "crackers",
        "Grocery & Gourmet Food \u203a Snacks \u203a Crackers",
        "$7.49",
        {},
        ["Three flavours"],
    ),
    _product(
        "B000000009",
        "Cold Brew Coffee Concentrate, 32 Fl Oz",
        "food",
        "coffee",
        "Grocery & Gourmet Food \u203a Beverages \u203a Coffee",
        "$16.00",
        {"Size": ["32 fl oz", "64 fl oz"]},
        ["Smooth and bold"],
    ),
    _product(
        "B000000010",
        "Wireless Bluetooth Earbuds with Charging Case",
        "electronics",
        "earbuds",
        "Electronics \u203a Headphones \u203a Earbuds",
        "$39.99",
        {"Color": ["white", "black"]},
        ["Up to 30 hours of play"],
    ),
    _product(
        "B000000011",
        "USB C Charging Cable 6 ft, 3 Pack",
        "electronics",
        "usb cable",
        "Electronics \u203a Accessories \u203a Cables",
        "$11.99",
        {"Color": ["black", "white"], "Length": ["3 ft", "6 ft"]},
        ["Braided nylon"],
    ),
    _product(
        "B000000012",
        "Portable Bluetooth Speaker",
        "electronics",
        "speaker",
        "Electronics \u203a Audio \u203a Speakers",
        "",
        {"Color": ["blue", "red"]},
        ["Floats in water"],
    ),
]
SKIPPED = [
    _product("nan", "No asin", "food", "x", "Grocery", "$1.00", {}, []),
    _product("B000000001", "A duplicate of the lotion", "beauty", "x", "Beauty", "$1.00", {}, []),
]
ATTRIBUTES = {
    "B000000001": {"attributes": ["paraben free", "dry skin"]},
    "B000000002": {"attributes": ["shea butter", "fragrance free"]},
    "B000000003": {"attributes": ["argan oil", "sulfate free"]},
    "B000000004": {"attributes": ["classic fit", "machine wash"]},
    "B000000005": {"attributes": ["slim fit", "quick dry"]},
    "B000000006": {"attributes": ["rubber sole", "waterproof"]},
    "B000000007": {"attributes": ["gluten free", "organic"]},
    "B000000008": {"attributes": ["gluten free", "non gmo"]},
    "B000000009": {"attributes": ["sugar free"]},
    "B000000010": {"attributes": ["noise cancelling", "long battery life"]},
    "B000000011": {"attributes": ["fast charging"]},
    # B000000012 has no attributes: the original gives it ["DUMMY_ATTR"].
}


def _ins(text, attrs, options):
    return {"instruction": text, "instruction_attributes": attrs, "instruction_options": options}


HUMAN = {
    "B000000001": [
        _ins(
            "i want a lavender body lotion for dry skin in the 16 fl oz (pack of 2) size.",
            ["dry skin"],
            ["16 fl oz (pack of 2)"],
        )
    ],
    "B000000003": [_ins("i need shampoo", [], [])],  # no attributes: skipped, as in the original
    "B000000004": [
        _ins("i need a men's classic fit t-shirt in navy, size large", ["classic fit"], ["navy", "large"])
    ],
    "B000000006": [
        _ins(
            "i'm looking for waterproof hiking boots for men, brown, size 10", ["waterproof"], ["brown", "10"]
        ),
        _ins("a gift for my dad who likes long walks outdoors", ["waterproof"], ["black | grey", "11"]),
    ],
    "B000000007": [
        _ins("organic dark chocolate with almond, pack of 12", ["organic"], ["almond", "pack of 12"])
    ],
    "B000000008": [_ins("gluten free crackers variety pack", ["gluten free"], [])],
    "B000000010": [_ins("noise cancelling wireless earbuds in white", ["noise cancelling"], ["white"])],
    "B000000011": [_ins("a 6 ft usb c fast charging cable, black", ["fast charging"], ["black", "6 ft"])],
    "B000000012": [_ins("a red portable bluetooth speaker", ["portable"], ["red"])],
}
N_GOALS = 9  # the instructions above minus the one without attributes
REVIEWS = [{"asin": "B000000010", "average_rating": 4.5,
            "reviews": [{"title": "Great sound", "stars": 5, "review": "Clear and loud."}]}]  # fmt: skip


def write_catalogue(folder: Path, products=None, human=None, attributes=None, small_names=False) -> Path:
    """A catalogue in the original file formats (file names of the full or the 1000-product set)."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = "_1000" if small_names else ""
    (folder / f"items_shuffle{suffix}.json").write_text(
        json.dumps(PRODUCTS + SKIPPED if products is None else products)
    )
    (folder / f"items_ins_v2{suffix}.json").write_text(
        json.dumps(ATTRIBUTES if attributes is None else attributes)
    )
    (folder / "items_human_ins.json").write_text(json.dumps(HUMAN if human is None else human))
    (folder / "reviews.json").write_text(json.dumps(REVIEWS))
    return folder


def write_splits(folder: Path, train, test) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "webshop_train.json").write_text(json.dumps(train))
    (folder / "webshop_test.json").write_text(json.dumps(test))
    return folder


@pytest.fixture
def catalogue(tmp_path) -> Path:
    return write_catalogue(tmp_path / "data")


@pytest.fixture
def env(catalogue, tmp_path) -> WebShopEnv:
    splits = write_splits(tmp_path / "splits", list(range(N_GOALS)), [0, 1])
    return WebShopEnv(data_dir=catalogue, splits_dir=splits, cache=False, prompts_dir=tmp_path / "none")


def _task_for(env: WebShopEnv, asin: str, instruction_start: str = "") -> Task:
    for task in env.tasks("train"):
        if task.spec["asin"] == asin and task.spec["instruction_text"].startswith(instruction_start):
            return task
    raise AssertionError(f"no goal for {asin}")


def _search_results(text: str) -> list[str]:
    return [p for p in text.split(" [SEP] ") if p.startswith("B0000000")]


# ---- loading and goals ---------------------------------------------------------------------------


def test_loads_products_and_goals_in_the_originals_order(env, catalogue):
    goals = env.goals()
    assert len(goals) == N_GOALS
    assert len(env.catalogue.products) == len(PRODUCTS)  # 'nan' and the duplicate ASIN are skipped
    assert env.catalogue.by_asin["B000000001"].title == PRODUCTS[0]["name"]
    # Unshuffled order: products in file order, each product's instructions in order; then the
    # original's seeded shuffle. The same permutation must come out.
    import random

    unshuffled = [
        (a, i["instruction"]) for a in sorted(HUMAN) for i in HUMAN[a] if i["instruction_attributes"]
    ]
    random.seed(GOAL_SHUFFLE_SEED)
    random.shuffle(unshuffled)
    assert [(g["asin"], g["instruction_text"].split(", and price")[0]) for g in goals] == [
        (a, t.strip(".")) for a, t in unshuffled
    ]
    lotion = next(g for g in goals if g["asin"] == "B000000001")
    assert lotion["goal_options"] == ["16 fl oz (pack of 2)"]
    # Price bound: the larger of two of the next four multiples of ten above $12.99.
    assert lotion["price_upper"] in (30.0, 40.0, 50.0)
    assert lotion["instruction_text"].endswith(f", and price lower than {lotion['price_upper']:.2f} dollars")
    assert env.catalogue.by_asin["B000000012"].attributes == ["DUMMY_ATTR"]
    assert env.catalogue.by_asin["B000000012"].price_tag == "$100.0"
    assert env.catalogue.by_asin["B000000006"].options["color"] == ["brown", "black | grey"]
    # Deterministic across processes: a fresh env (no shared state needed) gives the same goals.
    again = WebShopEnv(data_dir=catalogue, cache=False, num_products=len(PRODUCTS) + 2)
    assert again.goals() == goals


def test_file_names_of_the_1000_product_set_and_synthetic_goals(tmp_path):
    attrs = {**ATTRIBUTES, "B000000009": {"attributes": ["sugar free"], "instruction": "i want cold brew coffee",
                                          "instruction_attributes": ["sugar free"]}}  # fmt: skip
    folder = write_catalogue(tmp_path / "small", attributes=attrs, small_names=True)
    env = WebShopEnv(data_dir=folder, human_goals=False, cache=False)
    assert env.files.products.name == "items_shuffle_1000.json"
    texts = sorted(g["instruction_text"].split(", and price")[0] for g in env.goals())
    # Synthetic goals: one per option combination, the options spelled out in the text.
    assert texts == [
        "i want cold brew coffee with size: 32 fl oz",
        "i want cold brew coffee with size: 64 fl oz",
    ]
    assert env.splits == ("train", "dev", "test")
    assert [t.id for t in env.tasks("test")] == ["0", "1"]  # the original's convention: 0-499 test
    assert env.tasks("train") == []


def test_availability_and_missing_files(tmp_path, monkeypatch):
    monkeypatch.delenv("WEBSHOP_DATA", raising=False)
    assert "WEBSHOP_DATA" in availability()
    folder = tmp_path / "partial"
    folder.mkdir()
    (folder / "items_shuffle.json").write_text("[]")
    monkeypatch.setenv("WEBSHOP_DATA", str(folder))
    reason = availability()
    assert reason is not None and "items_ins_v2.json" in reason
    with pytest.raises(FileNotFoundError, match="items_ins_v2"):
        WebShopEnv()
    write_catalogue(folder)
    assert availability() is None
    assert availability(data_dir=str(tmp_path / "nowhere")) is not None


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda p, h: p[3].pop("name"), r"items_shuffle.json:3:name: must be a string, got nothing"),
        (lambda p, h: p[5].update(pricing="$abc"), r"items_shuffle.json:5:pricing: cannot read a price"),
        (
            lambda p, h: p[1].update(customization_options={"Size": [{"label": "x"}]}),
            r"items_shuffle.json:1:customization_options.Size: every entry needs a string 'value'",
        ),
        (
            lambda p, h: h["B000000004"][0].update(instruction_attributes="classic fit"),
            r"items_human_ins.json:-:B000000004\[0\].instruction_attributes: must be a list of strings",
        ),
    ],
)
def test_bad_data_names_file_record_and_field(tmp_path, mutate, match):
    products, human = json.loads(json.dumps(PRODUCTS)), json.loads(json.dumps(HUMAN))
    mutate(products, human)
    folder = write_catalogue(tmp_path / "bad", products=products, human=human)
    with pytest.raises(DataError, match=match):
        WebShopEnv(data_dir=folder, cache=False).goals()


def test_bad_json_and_bad_split_files(tmp_path, catalogue):
    broken = write_catalogue(tmp_path / "broken")
    (broken / "items_shuffle.json").write_text('[{"asin": "B01",')
    with pytest.raises(DataError, match=r"items_shuffle.json:-:-: not valid JSON"):
        WebShopEnv(data_dir=broken, cache=False).goals()
    splits = write_splits(tmp_path / "splits", [0, "x"], [1])
    env = WebShopEnv(data_dir=catalogue, splits_dir=splits, cache=False)
    with pytest.raises(DataError, match=r"webshop_train.json:1:-: goal indices must be non-negative"):
        env.tasks("train")
    splits = write_splits(tmp_path / "far", [0], [11896])
    env = WebShopEnv(data_dir=catalogue, splits_dir=splits, cache=False)
    with pytest.raises(DataError, match=r"goal index 11896 is past the 9 goals"):
        env.tasks("test")


def test_cache_lists_tasks_and_searches_without_rebuilding(catalogue, tmp_path, monkeypatch):
    from trajkit.envs.webshop import data as ws_data
    from trajkit.envs.webshop.search import BM25Index

    cache = tmp_path / "cache"
    env = WebShopEnv(data_dir=catalogue, cache=cache)
    first = env.goals()
    expected = [p.asin for p in env.search("bluetooth")]
    assert len(list(cache.glob("goals-*.json"))) == 1 and len(list(cache.glob("index-*"))) == 1
    # A fresh process (no catalogue in memory) reads both from the cache.
    monkeypatch.setattr(ws_data, "_GOALS", {})
    monkeypatch.setattr(ws_data, "_CATALOGUES", {})

    def refuse(*args, **kwargs):
        raise AssertionError("rebuilt although cached")

    monkeypatch.setattr(BM25Index, "build", refuse)
    assert [p.asin for p in WebShopEnv(data_dir=catalogue, cache=cache).search("bluetooth")] == expected
    assert expected[:2] == ["B000000012", "B000000010"]  # the shorter text ranks first
    monkeypatch.setattr(ws_data, "read_products", refuse)
    monkeypatch.setattr(ws_data, "_GOALS", {})
    monkeypatch.setattr(ws_data, "_CATALOGUES", {})
    assert WebShopEnv(data_dir=catalogue, cache=cache).goals() == first


# ---- search and pages ----------------------------------------------------------------------------


def test_search_ranks_matching_products_first(env):
    env.reset(env.tasks("train")[0])
    assert {p.asin for p in env.search("body lotion")[:2]} == {"B000000001", "B000000002"}
    assert env.search("lavender body lotion")[0].asin == "B000000001"
    assert env.search("waterproof hiking boots")[0].asin == "B000000006"
    assert env.search("dark chocolates")[0].asin == "B000000007"  # plural matches singular
    assert env.search("the of and") == []  # stop words only
    assert [p.asin for p in env.search("zzz nothing")] == []


def test_pages_navigation_and_sub_pages(env):
    task = dataclasses.replace(_task_for(env, "B000000010"), max_steps=30)  # room to look around
    first = env.reset(task)
    goal = task.spec["instruction_text"]
    assert first.text == f"WebShop [SEP] Instruction: [SEP] {goal} [SEP] Search"
    assert first.instruction == goal

    r = env.step("search[recyclable packaging]")
    assert r.info["valid"] and r.reward == 0.0 and not r.done
    head = (
        f"Instruction: [SEP] {goal} [SEP] Back to Search [SEP] Page 1 (Total results: 12) [SEP] Next > [SEP] "
    )
    assert r.observation.text.startswith(head)
    assert len(_search_results(r.observation.text)) == 10
    r = env.step("click[Next >]")
    assert "Page 2 (Total results: 12) [SEP] < Prev [SEP] B0" in r.observation.text
    assert "Next >" not in r.observation.text
    page2 = _search_results(r.observation.text)
    assert len(page2) == 2
    assert env.step("click[< Prev]").observation.text.startswith(head)

    r = env.step("search[wireless earbuds]")
    assert _search_results(r.observation.text)[0] == "B000000010"
    item = env.step("click[b000000010]").observation.text  # clicks match case-insensitively
    assert item == (
        f"Instruction: [SEP] {goal} [SEP] Back to Search [SEP] < Prev [SEP] color [SEP] white [SEP] black "
        "[SEP] Wireless Bluetooth Earbuds with Charging Case [SEP] Price: $39.99 [SEP] Rating: 4.5 [SEP] "
        "Description [SEP] Features [SEP] Reviews [SEP] Buy Now"
    )
    sub = f"Instruction: [SEP] {goal} [SEP] Back to Search [SEP] < Prev [SEP] "
    assert env.step("click[Description]").observation.text == sub + PACKAGING
    assert env.step("click[< Prev]").observation.text == item
    assert env.step("click[Features]").observation.text == sub + "Up to 30 hours of play"
    assert env.step("click[< Prev]").observation.text == item
    assert env.step("click[Reviews]").observation.text == sub + '"Great sound" [SEP] 5 [SEP] Clear and loud.'
    r = env.step("click[Back to Search]")
    assert r.observation.text == first.text and r.info["page"] == "search"


def test_invalid_actions_leave_the_page_as_it_was(env):
    first = env.reset(env.tasks("train")[0])
    for action in ("click[Buy Now]", "search[]", "jump[up]", "click[search]", "click[B000000004]"):
        r = env.step(action)
        assert r.observation.text == first.text and not r.info["valid"] and r.reward == 0.0 and not r.done
    results = env.step("search[body lotion]").observation.text
    for action in ("click[< Prev]", "click[16 fl oz (pack of 2)]", "Thought: hmm"):
        r = env.step(action)
        assert r.observation.text == results and not r.info["valid"]
    # The step budget (ETO: 10) ends the episode without a purchase.
    r = env.step("click[B000000009]")  # not on this page
    assert r.observation.text == results and not r.info["valid"]
    assert r.done and r.info["truncated"] and r.reward == 0.0 and not r.info["won"]
    with pytest.raises(RuntimeError, match="is over"):
        env.step("search[x]")


def test_search_works_from_every_page_as_in_the_original(env):
    env.reset(env.tasks("train")[0])
    env.step("search[body lotion]")
    env.step("click[B000000001]")
    r = env.step("search[usb cable]")
    assert r.info["valid"] and _search_results(r.observation.text)[0] == "B000000011"


# ---- reward --------------------------------------------------------------------------------------


def _buy(env, task, keywords, asin, options):
    env.reset(task)
    env.step(f"search[{keywords}]")
    env.step(f"click[{asin}]")
    for value in options:
        assert env.step(f"click[{value}]").info["valid"]
    return env.step("click[Buy Now]")


def test_reward_of_the_exact_target_is_one(env):
    task = _task_for(env, "B000000004")
    r = _buy(env, task, "men's classic fit t-shirt", "B000000004", ["navy", "large"])
    assert r.done and r.reward == 1.0 and r.info["won"]
    assert r.info["purchased"] == "B000000004" and r.info["options"] == {"color": "navy", "size": "large"}
    assert (
        r.observation.text == "Thank you for shopping with us! [SEP] Your score (min 0.0, max 1.0) [SEP] 1.0"
    )


def test_partial_rewards_match_a_hand_computation(env):
    task = _task_for(env, "B000000004")  # attributes [classic fit], options [navy, large]
    # Right product, wrong size: attribute 1 + navy 1 + price 1 out of 1 + 2 + 1; type 1.0.
    r = _buy(env, task, "men's classic fit t-shirt", "B000000004", ["navy", "medium"])
    assert r.reward == pytest.approx(3 / 4) and not r.info["won"]
    assert r.info["reward_parts"]["r_type"] == 1.0 and r.info["reward_parts"]["r_option"] == 0.5
    # Women's shorts: same category path (two shared levels), so type stays 1.0; "classic fit"
    # does not fuzzy-match "slim fit" (score 63 <= 85); neither black nor small is wanted; the
    # $22.00 price is under the bound (at least $30): 1 of 4.
    assert token_set_ratio("slim fit", "classic fit") == 63
    assert token_set_ratio("Navy", "navy blue") == 100 and token_set_ratio("red", "blue") < 85
    r = _buy(env, task, "slim fit shorts", "B000000005", ["black", "small"])
    assert r.reward == pytest.approx(1 / 4)
    # Earbuds: no query, category or title word in common, so the type factor is 0.
    r = _buy(env, task, "earbuds", "B000000010", ["white"])
    assert r.reward == 0.0 and r.info["reward_parts"]["r_type"] == 0.0
    # No options chosen at all on the right product: attribute + price = 2 of 4.
    r = _buy(env, task, "men's classic fit t-shirt", "B000000004", [])
    assert r.reward == pytest.approx(2 / 4)


def test_options_reset_when_leaving_the_item_and_size_matches_exactly(env):
    task = _task_for(env, "B000000001")  # size option "16 fl oz (pack of 2)"
    env.reset(task)
    env.step("search[lavender body lotion]")
    env.step("click[B000000001]")
    env.step("click[16 fl oz (pack of 2)]")
    env.step("click[< Prev]")  # back to the results: the selection is gone, as in the original
    env.step("click[B000000001]")
    r = env.step("click[Buy Now]")
    assert r.info["options"] == {} and r.reward == pytest.approx(2 / 3)


# ---- oracle --------------------------------------------------------------------------------------


def test_oracle_wins_every_goal_and_replays(env):
    tasks = env.tasks("train")
    assert len(tasks) == N_GOALS
    t0 = time.perf_counter()
    steps = 0
    for task in tasks:
        traj = oracle_trajectory(env, task, seed=0)
        assert traj.success and traj.reward == 1.0, (task.spec["instruction_text"], traj.turns[-1].text)
        assert traj.metadata["source"] == "expert" and traj.metadata["oracle"] == "webshop-target-product"
        assert traj.metadata["thoughts"] == "templated"
        assert 3 <= traj.metadata["steps"] <= task.max_steps
        assert traj.turns[0].text == env.instruction and traj.turns[1].text == "OK"
        assert traj.turns[2].text.startswith("WebShop [SEP] Instruction: [SEP] ")
        actions = [t.text.split("Action: ", 1)[1] for t in traj.agent_turns[1:]]
        assert actions[0].startswith("search[") and actions[-1] == "click[Buy Now]"
        assert all(t.text.startswith("Thought: ") for t in traj.agent_turns[1:])
        # Replaying the actions through env.step reproduces the observations and the reward.
        env.reset(task)
        observations = [t.text for t in traj.turns[3:] if t.role == "observation"]
        for i, action in enumerate(actions):
            r = env.step(action)
            if i < len(observations):
                assert f"Observation:\n{r.observation.text}" == observations[i]
        assert r.done and r.reward == 1.0
        steps += len(actions)
    rate = steps / (time.perf_counter() - t0)
    assert rate > 50, f"{rate:.0f} steps/s"
    assert (
        oracle_trajectory(env, tasks[0], seed=0).to_dict()
        == oracle_trajectory(env, tasks[0], seed=0).to_dict()
    )


def test_oracle_falls_back_to_the_product_name(env):
    task = _task_for(env, "B000000006", "a gift for my dad")  # no word of it is in the product text
    traj = oracle_trajectory(env, task)
    actions = [t.text.split("Action: ", 1)[1] for t in traj.agent_turns[1:]]
    assert actions[:3] == [
        "search[a gift for my dad who likes long walks outdoors]",
        "click[Back to Search]",
        "search[men's waterproof hiking boots]",
    ]
    assert actions[3:] == ["click[B000000006]", "click[black | grey]", "click[11]", "click[Buy Now]"]
    assert traj.success


# ---- prompts, worker, splits ---------------------------------------------------------------------


def test_eto_instruction_and_icl_turns(catalogue):
    prompts = shared_data_path("eto", "prompts")
    env = WebShopEnv(data_dir=catalogue, prompts_dir=prompts, cache=False)
    assert env.instruction == (prompts / "webshop_inst.txt").read_text()
    turns = env.icl_turns()
    assert [t.role for t in turns[:3]] == ["task", "agent", "observation"]
    assert turns[1].text.startswith("Thought: ") and not any(t.trained for t in turns)
    bare = WebShopEnv(data_dir=catalogue, prompts_dir=catalogue, cache=False)
    assert bare.icl_turns() == [] and "search[keywords]" in bare.instruction


def test_etos_repository_layout(catalogue, tmp_path):
    """Splits and prompts straight from a clone of ETO's repository (eval_agent/...)."""
    prompts = shared_data_path("eto", "prompts")
    root = tmp_path / "ETO" / "eval_agent"
    (root / "prompt" / "instructions").mkdir(parents=True)
    (root / "prompt" / "icl_examples").mkdir(parents=True)
    (root / "prompt" / "instructions" / "webshop_inst.txt").write_text(
        (prompts / "webshop_inst.txt").read_text()
    )
    (root / "prompt" / "icl_examples" / "webshop_icl.json").write_text(
        (prompts / "webshop_icl.json").read_text()
    )
    (root / "data" / "webshop").mkdir(parents=True)
    (root / "data" / "webshop" / "train_indices.json").write_text("[3, 4, 5]")
    (root / "data" / "webshop" / "test_indices.json").write_text("[0, 1]")
    env = WebShopEnv(data_dir=catalogue, splits_dir=root / "data", prompts_dir=root / "prompt", cache=False)
    assert [t.id for t in env.tasks("train")] == ["3", "4", "5"] and env.splits == ("train", "test")
    assert env.instruction.startswith("You are web shopping.") and len(env.icl_turns()) == 8
    with pytest.raises(FileNotFoundError, match="no ETO WebShop split files"):
        WebShopEnv(data_dir=catalogue, splits_dir=root / "prompt", cache=False)


def test_env_worker_round_trip(env, catalogue, tmp_path, monkeypatch):
    from trajkit.envs.worker import EnvWorker

    monkeypatch.setenv("WEBSHOP_DATA", str(catalogue))  # the registry's availability check reads it
    kwargs = {
        "splits_dir": str(tmp_path / "splits"),
        "cache": False,
        "prompts_dir": str(tmp_path / "none"),
    }
    task = _task_for(env, "B000000011")
    with EnvWorker("webshop", kwargs, step_timeout=30, reset_timeout=60) as worker:
        assert worker.name == "webshop" and worker.version == env.version
        assert worker.tasks("train") == env.tasks("train")
        remote = oracle_trajectory(worker, task)
    local = oracle_trajectory(env, task)
    assert remote.to_dict() == local.to_dict() and remote.success


def test_check_splits_counts_identical_goals(tmp_path, catalogue):
    from trajkit.envs.base import split_overlap

    # Two instructions of a product too dear for a price bound (>= $980) are the same goal.
    dear = json.loads(json.dumps(PRODUCTS))
    dear[7]["pricing"] = "$985.00"
    human = {"B000000008": [_ins("gluten free crackers", ["gluten free"], [])] * 2}
    folder = write_catalogue(tmp_path / "dear", products=dear, human=human)
    env = WebShopEnv(data_dir=folder, splits_dir=write_splits(tmp_path / "s", [0], [1]), cache=False)
    assert env.tasks("train")[0].spec == env.tasks("test")[0].spec
    assert split_overlap(env, "train", "test") == ["1"]  # another index, the same goal
    distinct = WebShopEnv(
        data_dir=catalogue, splits_dir=write_splits(tmp_path / "d", [0, 2], [1, 2]), cache=False
    )
    assert split_overlap(distinct, "train", "test") == ["2"]


def test_check_splits_on_etos_goal_indices(tmp_path, monkeypatch):
    """ETO's 200 test goals against its 1824 train entries: 21 shared goals, 1823 distinct."""
    from typer.testing import CliRunner

    from trajkit.cli import app

    splits = shared_data_path("eto", "splits")
    n_products, per_product = 1220, 10  # 12200 goals: ETO's indices go up to 12080
    products = [
        _product(f"B{i:09d}", f"Product {i}", "beauty", "things", "Beauty \u203a Things", "$5.00", {}, [])
        for i in range(n_products)
    ]
    human = {
        p["asin"]: [_ins(f"item {i} request {k}", ["nice"], []) for k in range(per_product)]
        for i, p in enumerate(products)
    }
    folder = write_catalogue(tmp_path / "big", products=products, human=human, attributes={})
    monkeypatch.setenv("WEBSHOP_DATA", str(folder))
    monkeypatch.setenv("TRAJKIT_ETO_DATA", str(splits.parent))
    monkeypatch.setenv("TRAJKIT_CACHE_DIR", str(tmp_path / "cache"))
    result = CliRunner().invoke(app, ["env", "check-splits", "webshop", "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)
    assert (row["split"], row["tasks"], row["overlap"]) == ("test", 200, 21)
    train_ids = set(json.loads((splits / "webshop_train.json").read_text()))
    assert {int(i) for i in row["overlapping"]} == set(
        json.loads((splits / "webshop_test.json").read_text())
    ) & train_ids
    env = WebShopEnv()
    assert len(env.tasks("train")) == 1823


def test_observations_are_written_as_etos_webshop_env_writes_them(env):
    """ETO's WebShop env and expert data start every observation with "Observation:\\n"."""
    task = env.tasks("train")[0]
    traj = oracle_trajectory(env, task, seed=0)
    observations = [t.text for t in traj.turns if t.role == "observation"]
    assert observations and all(text.startswith("Observation:\n") for text in observations)
    assert not any(text.startswith("Observation: ") for text in observations)
