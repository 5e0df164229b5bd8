import pytest

from trajkit.data.schema import AGENT, SYSTEM, TASK
from trajkit.gui.packing import (
    GroundingPair,
    estimate_tokens,
    group_by_image,
    pack_grounding,
    pack_grounding_records,
)

PAIRS = [GroundingPair(f"click item {i}", f"pyautogui.click(x=0.{i}, y=0.5)") for i in range(1, 8)]


def test_first_turn_carries_the_image():
    (sample,) = pack_grounding("shot.png", PAIRS[:3], max_turns=10, max_tokens=None)
    first, answer = sample.turns[0], sample.turns[1]
    assert first.role == TASK and first.image == "shot.png" and first.text == "<image>\nclick item 1"
    assert answer.role == AGENT and answer.recipient == "os" and answer.end_turn is True
    assert all(t.image is None for t in sample.turns[1:])
    assert [t.text for t in sample.turns[2::2]] == ["click item 2", "click item 3"]
    assert sample.id == "shot.png-0"


def test_max_turns_caps_pairs_per_sample():
    samples = pack_grounding("s.png", PAIRS, max_turns=3, max_tokens=None, system="sys")
    assert [s.metadata["pairs"] for s in samples] == [3, 3, 1]
    assert all(s.turns[0].role == SYSTEM and s.turns[1].image == "s.png" for s in samples)
    packed = [t.text for s in samples for t in s.turns if t.role == TASK]
    assert [p.removeprefix("<image>\n") for p in packed] == [p.instruction for p in PAIRS]


def test_token_budget_with_a_custom_counter():
    def count(text):
        return 10

    samples = pack_grounding("s.png", PAIRS, max_turns=100, max_tokens=45, count_tokens=count)
    # Each pair costs 20: two fit in 45.
    assert [s.metadata["pairs"] for s in samples] == [2, 2, 2, 1]
    assert all(s.metadata["approx_tokens"] <= 45 for s in samples)


def test_oversized_pair_is_kept_alone_and_flagged():
    long_pair = GroundingPair("word " * 500, "pyautogui.click(x=0.1, y=0.1)")
    samples = pack_grounding("s.png", [PAIRS[0], long_pair, PAIRS[1]], max_tokens=100)
    assert [s.metadata["pairs"] for s in samples] == [1, 1, 1]
    assert [bool(s.metadata.get("over_budget")) for s in samples] == [False, True, False]


def test_order_is_deterministic():
    a = pack_grounding("s.png", PAIRS, max_turns=3, shuffle_seed=3)
    b = pack_grounding("s.png", PAIRS, max_turns=3, shuffle_seed=3)
    assert [t.to_dict() for s in a for t in s.turns] == [t.to_dict() for s in b for t in s.turns]


def test_records_group_by_image():
    records = [{"image": f"{i % 2}.png", "instruction": f"i{i}", "code": "mobile.back()"} for i in range(5)]
    assert list(group_by_image(records)) == ["0.png", "1.png"]
    samples = pack_grounding_records(records, max_turns=10)
    assert [s.id for s in samples] == ["0.png-0", "1.png-0"]
    with pytest.raises(ValueError, match="missing code"):
        group_by_image([{"image": "a", "instruction": "b"}])
    with pytest.raises(ValueError, match="max_turns"):
        pack_grounding("s.png", PAIRS, max_turns=0)


def test_estimate_tokens():
    assert estimate_tokens("") == 0
    assert estimate_tokens("a b c") == 3
    assert estimate_tokens("x" * 40) == 10
