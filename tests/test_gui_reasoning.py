import pytest

from trajkit.data.schema import AGENT, SYSTEM, TASK
from trajkit.gui.reasoning import (
    LEVELS,
    GuiStep,
    MixtureError,
    ReasoningMixture,
    load_dataset_mixtures_yaml,
    load_mixture_yaml,
    mix_samples,
    monologue,
    sample_from_aguvis,
    sample_from_trajectory,
    sample_to_aguvis,
    sample_to_trajectory,
    split_monologue,
    step_turns,
    with_level,
)

SYSTEM_PROMPT = "You are a GUI agent. You are given a task and a screenshot of the screen."
PLANNING_RECORD = {
    "image": "uid_record_07674_step_00.png",
    "conversations": [
        {"from": "system", "value": SYSTEM_PROMPT, "recipient": None, "end_turn": None},
        {
            "from": "human",
            "value": "<image>\nPlease generate the next move.\n\nInstruction: Find Judith Lauand.\n\nPrevious actions:\nNone",
            "recipient": None,
            "end_turn": None,
        },
        {
            "from": "gpt",
            "value": "Observation: A dropdown with search results.\nThought: The goal is to learn more.\n"
            "Action: Click on the link labeled 'Judith Lauand'.",
            "recipient": "all",
            "end_turn": False,
        },
        {"from": "gpt", "value": "pyautogui.click(x=0.41, y=0.178)", "recipient": "os", "end_turn": True},
    ],
}
GROUNDING_RECORD = {
    "image": "web_0001.png",
    "conversations": [
        {"from": "human", "value": "<image>\nClick on 'Sign in'"},
        {"from": "gpt", "value": "pyautogui.click(x=0.8875, y=0.2281)", "recipient": "os", "end_turn": True},
        {"from": "human", "value": "click on more button"},
        {"from": "gpt", "value": "pyautogui.click(x=0.9512, y=0.0437)", "recipient": "os", "end_turn": True},
    ],
}
STEP = GuiStep(
    code="pyautogui.click(x=0.41, y=0.178)", instruction="Click it.", thought="Think.", observation="See."
)


def test_levels_write_the_monologue_in_order():
    assert monologue(STEP, "none") is None
    assert monologue(STEP, "l1") == "Action: Click it."
    assert monologue(STEP, "l2") == "Thought: Think.\nAction: Click it."
    assert monologue(STEP, "l3") == "Observation: See.\nThought: Think.\nAction: Click it."


def test_step_turns():
    (code,) = step_turns(STEP, "none")
    assert (code.role, code.text, code.recipient, code.end_turn) == (AGENT, STEP.code, "os", True)
    mono, code = step_turns(STEP, "l2")
    assert (mono.role, mono.recipient, mono.end_turn) == (AGENT, "all", False)
    assert mono.text == "Thought: Think.\nAction: Click it."
    assert (code.recipient, code.end_turn) == ("os", True)


def test_level_needs_its_fields():
    bare = GuiStep(code="mobile.back()", instruction="Go back.")
    assert bare.available_levels() == ("none", "l1")
    with pytest.raises(ValueError, match="needs thought"):
        monologue(bare, "l2")
    with pytest.raises(ValueError, match="unknown reasoning level"):
        monologue(bare, "l4")


def test_split_monologue_is_the_inverse():
    for level in ("l1", "l2", "l3"):
        parts = split_monologue(monologue(STEP, level))
        assert GuiStep(code=STEP.code, **parts) == GuiStep(
            code=STEP.code, **{k: getattr(STEP, k) for k in parts}
        )
    assert split_monologue("Thought: line one\nline two\nAction: do") == {
        "thought": "line one\nline two",
        "instruction": "do",
    }
    with pytest.raises(ValueError, match="no Observation"):
        split_monologue("just words")
    with pytest.raises(ValueError, match="repeats"):
        split_monologue("Action: a\nAction: b")


def test_aguvis_record_round_trip_at_l3():
    sample = sample_from_aguvis(PLANNING_RECORD, sample_id="s1")
    (ex,) = sample.exchanges
    assert ex.step.observation == "A dropdown with search results."
    assert ex.step.thought == "The goal is to learn more."
    assert ex.step.instruction == "Click on the link labeled 'Judith Lauand'."
    assert sample.system == SYSTEM_PROMPT
    record = sample_to_aguvis(sample, "l3")
    assert record["conversations"] == PLANNING_RECORD["conversations"]
    assert record["image"] == PLANNING_RECORD["image"]


def test_trajectory_shape_and_reverse():
    sample = sample_from_aguvis(PLANNING_RECORD)
    traj = sample_to_trajectory(sample, "l1")
    roles = [t.role for t in traj.turns]
    assert roles == [SYSTEM, TASK, AGENT, AGENT]
    assert traj.turns[1].image == "uid_record_07674_step_00.png"
    assert traj.turns[1].text.startswith("<image>\n")
    assert traj.turns[2].text == "Action: Click on the link labeled 'Judith Lauand'."
    assert traj.metadata["reasoning_level"] == "l1"
    back = sample_from_trajectory(traj)
    assert back.exchanges[0].step.instruction == sample.exchanges[0].step.instruction
    assert back.exchanges[0].step.thought is None  # l1 kept only the instruction
    l3 = with_level(sample_to_trajectory(sample, "l3"), "none")
    assert [t.recipient for t in l3.turns if t.role == AGENT] == ["os"]


def test_grounding_record_has_several_exchanges():
    sample = sample_from_aguvis(GROUNDING_RECORD)
    assert len(sample.exchanges) == 2
    assert sample.available_levels() == ("none",)
    traj = sample_to_trajectory(sample, "none")
    assert [t.image for t in traj.turns] == ["web_0001.png", None, None, None]
    assert sample_from_aguvis(GROUNDING_RECORD).id == sample.id  # stable hash id


def test_malformed_records():
    with pytest.raises(ValueError, match="no user message"):
        sample_from_aguvis({"conversations": [{"from": "gpt", "value": "x", "recipient": "os"}]})
    with pytest.raises(ValueError, match="without an 'os' code turn"):
        sample_from_aguvis({"conversations": [{"from": "human", "value": "x"}]})
    with pytest.raises(ValueError, match="conversations"):
        sample_from_aguvis({"image": "a.png"})


# --- mixture -------------------------------------------------------------------------------------


def test_mixture_validation():
    ReasoningMixture({"l1": 0.5, "l2": 0.3, "l3": 0.2})
    with pytest.raises(MixtureError, match="unknown reasoning level"):
        ReasoningMixture({"l4": 1})
    with pytest.raises(MixtureError, match=">= 0"):
        ReasoningMixture({"l1": -1, "l2": 2})
    with pytest.raises(MixtureError, match="sum to more than 0"):
        ReasoningMixture({"l1": 0, "l2": 0})
    with pytest.raises(MixtureError, match="finite number"):
        ReasoningMixture({"l1": "half"})


def test_yaml_with_a_repeated_level_is_refused():
    # The shape of a mixture that lists l2 twice and l3 never: a plain loader keeps the last l2.
    text = "l1: 0.4\nl2: 0.3\nl2: 0.3\n"
    with pytest.raises(MixtureError, match="duplicate key 'l2' at line 3"):
        load_mixture_yaml(text)
    nested = "mind2web:\n  l1: 1\n  l2: 1\n  l2: 2\n"
    with pytest.raises(MixtureError, match="duplicate key 'l2'"):
        load_dataset_mixtures_yaml(nested)


def test_yaml_mixtures_load():
    mix = load_mixture_yaml("{l1: 0.5, l2: 0.3, l3: 0.2}")
    assert mix.probabilities() == pytest.approx({"none": 0, "l1": 0.5, "l2": 0.3, "l3": 0.2})
    per_dataset = load_dataset_mixtures_yaml("aitw: {none: 1}\nmind2web: {l3: 1}\n")
    assert set(per_dataset) == {"aitw", "mind2web"}
    with pytest.raises(MixtureError, match="dataset aitw"):
        load_dataset_mixtures_yaml("aitw: {l9: 1}\n")
    with pytest.raises(MixtureError, match="invalid YAML"):
        load_mixture_yaml("l1: [")
    with pytest.raises(MixtureError, match="mapping"):
        load_mixture_yaml("- l1\n- l2\n")


def test_level_choice_is_deterministic_and_follows_weights():
    mix = ReasoningMixture({"l1": 0.5, "l2": 0.3, "l3": 0.2})
    picks = [mix.choose(7, f"sample-{i}") for i in range(4000)]
    assert picks == [mix.choose(7, f"sample-{i}") for i in range(4000)]
    assert picks != [mix.choose(8, f"sample-{i}") for i in range(4000)]
    for level, weight in (("l1", 0.5), ("l2", 0.3), ("l3", 0.2)):
        assert abs(picks.count(level) / len(picks) - weight) < 0.03
    assert "none" not in picks
    # Listing order does not matter.
    same = ReasoningMixture({"l3": 0.2, "l2": 0.3, "l1": 0.5})
    assert [same.choose(7, f"sample-{i}") for i in range(200)] == picks[:200]


def test_choice_respects_available_levels():
    mix = ReasoningMixture({"l1": 1, "l3": 1})
    assert {mix.choose(0, str(i), available=("none", "l1")) for i in range(50)} == {"l1"}
    with pytest.raises(MixtureError, match="no level"):
        mix.choose(0, "x", available=("none",))


def test_mix_samples():
    samples = [sample_from_aguvis(PLANNING_RECORD, sample_id=f"s{i}") for i in range(30)]
    trajs = mix_samples(samples, ReasoningMixture({"none": 1, "l3": 1}), seed=1)
    levels = {t.metadata["reasoning_level"] for t in trajs}
    assert levels == {"none", "l3"}
    assert all(level in LEVELS for level in levels)
