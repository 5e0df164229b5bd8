"""Reading and writing every record format, and the loader's sources (file, folder, hub)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trajkit.data.formats import FORMAT_NAMES, ReadOptions, WriteOptions, detect_format, get_format
from trajkit.data.io import DataError, iter_records, load_trajectories, read_file, write_trajectories
from trajkit.data.schema import AGENT, OBSERVATION, SYSTEM, TASK, Trajectory, Turn

FIXTURES = Path(__file__).parent / "fixtures" / "data"
VALID = FIXTURES / "valid"
# Fixture file -> the format it is written in.
FIXTURE_FORMATS = {
    "eto_sft.json": "eto",
    "eto_role.jsonl": "eto",
    "aguvis_planning.json": "aguvis",
    "openai.jsonl": "openai",
    "llamafactory.json": "llamafactory",
    "trajkit.jsonl": "trajkit",
}


def roles(trajectory: Trajectory) -> list[str]:
    return [t.role for t in trajectory.turns]


def raw_records(path: Path) -> list:
    return [record for _, record in iter_records(path)]


# ---- detection ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name, expected", FIXTURE_FORMATS.items())
def test_detect_format_of_each_fixture(name, expected):
    first = raw_records(VALID / name)[0]
    assert detect_format(first) == expected


def test_detect_format_from_keys():
    assert detect_format([{"role": "user", "content": "x"}]) == "eto"
    assert detect_format({"conversations": [{"from": "human", "value": "x"}]}) == "eto"
    assert detect_format({"conversations": [{"from": "gpt", "value": "x", "recipient": "os"}]}) == "aguvis"
    assert detect_format({"conversations": [{"from": "observation", "value": "x"}]}) == "llamafactory"
    assert detect_format({"conversations": [], "system": "s"}) == "llamafactory"
    assert detect_format({"messages": []}) == "openai"
    assert detect_format({"id": "x", "turns": []}) == "trajkit"
    assert detect_format({"id": "x"}) is None
    assert detect_format(42) is None


# ---- each format ---------------------------------------------------------------------------------


def test_eto_roles_reward_and_extra_keys():
    webshop, alfworld = read_file(VALID / "eto_sft.json")
    assert roles(webshop) == [TASK, AGENT, TASK, AGENT, OBSERVATION, AGENT]
    assert (webshop.id, webshop.task_id, webshop.reward, webshop.success) == (
        "webshop_17",
        "webshop_17",
        1.0,
        True,
    )
    assert alfworld.success is False and alfworld.reward == 0.5
    assert alfworld.metadata == {"game_file": raw_records(VALID / "eto_sft.json")[1]["game_file"]}


def test_eto_writes_back_the_same_records(tmp_path):
    out = write_trajectories(read_file(VALID / "eto_sft.json"), tmp_path / "out.json", "eto")
    written = json.loads(out.read_text())
    original = json.loads((VALID / "eto_sft.json").read_text())
    assert [dict(sorted(r.items())) for r in written] == [dict(sorted(r.items())) for r in original]


def test_eto_role_spelling_and_mixed_keys(tmp_path):
    first, mixed = read_file(VALID / "eto_role.jsonl")
    assert roles(first) == [SYSTEM, TASK, AGENT, OBSERVATION, AGENT]
    assert roles(mixed) == [TASK, AGENT]
    out = write_trajectories([first], tmp_path / "out.jsonl", "eto-role")
    message = json.loads(out.read_text())["conversations"][1]
    assert message == {"role": "user", "content": "Your task is to boil water."}
    assert load_trajectories(out) == [first]


def test_aguvis_images_recipients_and_relative_paths(tmp_path):
    planning, two_images = read_file(VALID / "aguvis_planning.json")
    screen = str((VALID / "images" / "screen.png").absolute())
    assert roles(planning) == [SYSTEM, TASK, AGENT, AGENT]
    assert planning.turns[1].image == screen
    assert planning.turns[1].text.startswith("<image>\n")
    assert [(t.recipient, t.end_turn) for t in planning.turns[2:]] == [("all", False), ("os", True)]
    assert two_images.turns[0].image == [screen, screen]

    # Written with the original's image root, image paths come out relative again.
    out = write_trajectories([planning, two_images], tmp_path / "rel.json", "aguvis", image_root=VALID)
    written = json.loads(out.read_text())
    assert written[0]["image"] == "images/screen.png"
    assert written[1]["image"] == ["images/screen.png", "images/screen.png"]
    assert "image" not in written[0]["conversations"][1]

    # Elsewhere, the paths stay absolute so the images are still found.
    out = write_trajectories([planning], tmp_path / "x.jsonl", "aguvis")
    assert json.loads(out.read_text())["image"] == screen
    assert load_trajectories(out, format="aguvis")[0].turns == planning.turns


def test_aguvis_image_root_option(tmp_path):
    (tmp_path / "images").mkdir()
    [planning, _] = load_trajectories(VALID / "aguvis_planning.json", image_root=tmp_path)
    assert planning.turns[1].image == str(tmp_path / "images" / "screen.png")


def test_openai_ids_roles_and_tool_turns(tmp_path):
    chat, tools = read_file(VALID / "openai.jsonl")
    assert chat.id == "chat-a" and tools.id == "openai-1"
    assert roles(chat) == [SYSTEM, TASK, AGENT, OBSERVATION, AGENT]
    assert roles(tools) == [TASK, AGENT, OBSERVATION, AGENT]
    assert tools.turns[1].text == ""
    out = write_trajectories([chat, tools], tmp_path / "out.jsonl", "openai")
    written = [json.loads(line) for line in out.read_text().splitlines()]
    original = raw_records(VALID / "openai.jsonl")
    assert written[1]["messages"][2] == original[1]["messages"][2]  # role "tool" and tool_call_id
    assert written[1]["messages"][1]["tool_calls"] == original[1]["messages"][1]["tool_calls"]
    assert load_trajectories(out) == [chat, tools]


def test_llamafactory_system_key_and_function_calls(tmp_path):
    [trajectory] = read_file(VALID / "llamafactory.json")
    assert roles(trajectory) == [SYSTEM, TASK, AGENT, OBSERVATION, AGENT, TASK, AGENT]
    assert trajectory.turns[0].text == "You can call tools."
    out = write_trajectories([trajectory], tmp_path / "out.json", "llamafactory")
    [written] = json.loads(out.read_text())
    [original] = json.loads((VALID / "llamafactory.json").read_text())
    assert written["system"] == original["system"] and written["tools"] == original["tools"]
    assert written["conversations"] == original["conversations"]


def test_trajkit_native_keeps_everything(tmp_path):
    [trajectory] = read_file(VALID / "trajkit.jsonl")
    assert trajectory.turns[1].token_ids == [12, 7, 99] and trajectory.turns[3].train is False
    assert trajectory.metadata["policy"] == "sft-0"
    out = write_trajectories([trajectory], tmp_path / "out.jsonl")
    assert json.loads(out.read_text()) == raw_records(VALID / "trajkit.jsonl")[0]


@pytest.mark.parametrize("name, format", FIXTURE_FORMATS.items())
def test_round_trip_in_own_format_and_native(name, format, tmp_path):
    trajectories = read_file(VALID / name)
    for target in (format, "trajkit"):
        out = write_trajectories(trajectories, tmp_path / f"{target}.jsonl", target, image_root=VALID)
        assert read_file(out, target, image_root=VALID) == trajectories


@pytest.mark.parametrize(
    "source, target", [("eto_sft.json", "openai"), ("openai.jsonl", "eto"), ("eto_sft.json", "eto-role")]
)
def test_conversion_between_compatible_formats(source, target, tmp_path):
    trajectories = read_file(VALID / source)
    out = write_trajectories(trajectories, tmp_path / "out.json", target)
    converted = load_trajectories(out)
    # Roles, texts and ids survive; bookkeeping a format cannot hold (OpenAI's "tool" spelling) may not.
    assert [(t.id, roles(t), [x.text for x in t.turns]) for t in converted] == [
        (t.id, roles(t), [x.text for x in t.turns]) for t in trajectories
    ]


# ---- reference data ------------------------------------------------------------------------------


def test_reference_aguvis_examples_load(shared_data):
    grounding = load_trajectories(shared_data("aguvis", "example_stage1_grounding.json"))[0]
    assert roles(grounding) == [TASK, AGENT, TASK, AGENT]
    assert grounding.turns[0].image.endswith("web_0001.png")
    planning = load_trajectories(shared_data("aguvis", "example_stage2_planning.json"))[0]
    assert roles(planning) == [SYSTEM, TASK, AGENT, AGENT]
    assert [t.recipient for t in planning.turns[2:]] == ["all", "os"]


@pytest.mark.parametrize("env", ["alfworld", "sciworld", "webshop"])
def test_reference_eto_icl_examples_load(shared_data, env):
    [episode] = load_trajectories(shared_data("eto", "prompts", f"{env}_icl.json"))
    assert episode.id == f"{env}_icl-0"
    assert episode.turns[0].role == TASK and episode.turns[-1].role == AGENT
    assert {t.role for t in episode.turns[2::2]} == {OBSERVATION}


# ---- sources and errors --------------------------------------------------------------------------


def test_folder_source_reads_every_file():
    trajectories = load_trajectories(VALID)
    assert len(trajectories) == 10
    assert {t.id for t in trajectories} >= {"webshop_17", "chat-a", "household-7-r1"}


def test_hub_source_uses_datasets(monkeypatch):
    import datasets

    # from_list takes its columns from the first record: put the one with `game_file` first.
    webshop, alfworld = raw_records(VALID / "eto_sft.json")
    records = [alfworld, webshop, *raw_records(VALID / "eto_role.jsonl")]
    asked = {}

    def fake_load_dataset(name, split):
        asked.update(name=name, split=split)
        return datasets.Dataset.from_list(records)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    trajectories = load_trajectories("agent-eto/eto-sft-trajectory", split="train")
    assert asked == {"name": "agent-eto/eto-sft-trajectory", "split": "train"}
    expected = read_file(VALID / "eto_sft.json")[::-1] + read_file(VALID / "eto_role.jsonl")
    # Arrow gives every record every column; the empty ones are dropped again.
    assert trajectories == expected


def test_hub_load_failure_is_a_data_error(monkeypatch):
    import datasets

    def offline(name, split):
        raise ConnectionError("no internet")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(
        DataError, match=r"^owner/missing:-:dataset: cannot load dataset split 'train': no internet"
    ):
        load_trajectories("owner/missing")


def test_missing_source_and_unknown_format():
    with pytest.raises(DataError, match=r"nope\.json:-:file: no such file or folder"):
        load_trajectories("nope.json")
    with pytest.raises(DataError, match="unknown format 'sharegpt3'"):
        load_trajectories(VALID / "eto_sft.json", format="sharegpt3")


def test_broken_json_names_file_record_line_and_column():
    with pytest.raises(DataError) as caught:
        list(iter_records(FIXTURES / "invalid" / "broken.jsonl"))
    assert str(caught.value) == (
        f"{FIXTURES / 'invalid' / 'broken.jsonl'}:1:json: invalid JSON at line 2, column 64: Expecting value"
    )
    with pytest.raises(DataError, match=r"broken_list\.json:1:json: invalid JSON at line 3, column 66"):
        load_trajectories(FIXTURES / "invalid" / "broken_list.json")


def test_unreadable_record_names_its_field():
    with pytest.raises(DataError, match=r"eto_problems\.json:0:record: record is a string"):
        load_trajectories(FIXTURES / "invalid" / "eto_problems.json", format="eto")
    with pytest.raises(DataError, match=r"eto_problems\.json:0:record: record is a string"):
        load_trajectories(FIXTURES / "invalid" / "eto_problems.json")
    with pytest.raises(DataError, match=r"top_level_number\.json:-:file: top-level JSON value is a number"):
        load_trajectories(FIXTURES / "invalid" / "top_level_number.json")


def test_single_object_json_and_jsonl_inside_json(tmp_path):
    record = raw_records(VALID / "eto_sft.json")[0]
    (tmp_path / "one.json").write_text(json.dumps(record))
    (tmp_path / "lines.json").write_text(json.dumps(record) + "\n" + json.dumps(record) + "\n")
    assert len(load_trajectories(tmp_path / "one.json")) == 1
    assert len(load_trajectories(tmp_path / "lines.json")) == 2


def test_write_is_atomic(tmp_path, monkeypatch):
    out = tmp_path / "out.jsonl"
    out.write_text("previous contents\n")
    trajectories = read_file(VALID / "eto_sft.json")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(DataError, match="out.jsonl:-:file: cannot write: disk full"):
        write_trajectories(trajectories, out, "eto")
    assert out.read_text() == "previous contents\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_write_rejects_unknown_format(tmp_path):
    with pytest.raises(DataError, match="unknown format 'auto'"):
        write_trajectories([], tmp_path / "x.jsonl", "auto")
    assert not (tmp_path / "x.jsonl").exists()


# ---- property: read(write(x)) == x --------------------------------------------------------------

text = st.text(min_size=1, max_size=20)
optional_bool = st.none() | st.booleans()
json_scalar = st.none() | st.booleans() | st.integers(-1000, 1000) | text
# Keys a format owns are left out: metadata under those names cannot be written back.
RESERVED = {
    "id",
    "task_id",
    "env",
    "split",
    "reward",
    "success",
    "conversations",
    "messages",
    "image",
    "system",
}
metadata_key = st.text(min_size=1, max_size=8).filter(
    lambda k: k not in RESERVED and not k.startswith("turn_")
)
metadata = st.dictionaries(metadata_key, json_scalar, max_size=3)

image_path = st.from_regex(r"[a-z0-9_/]{1,12}\.png", fullmatch=True)
native_turn = st.builds(
    Turn,
    role=st.sampled_from([SYSTEM, TASK, OBSERVATION, AGENT]),
    text=st.text(max_size=30),
    image=st.none() | image_path | st.lists(image_path, min_size=1, max_size=2),
    recipient=st.none() | st.sampled_from(["all", "os"]),
    end_turn=optional_bool,
    token_ids=st.none() | st.lists(st.integers(0, 50_000), max_size=5),
    train=optional_bool,
)
native_trajectory = st.builds(
    Trajectory,
    id=text,
    turns=st.lists(native_turn, min_size=1, max_size=6),
    task_id=st.none() | text,
    env=st.none() | text,
    split=st.none() | text,
    reward=st.none() | st.floats(-10, 10, allow_nan=False),
    success=optional_bool,
    metadata=metadata,
)


@st.composite
def chat_record(draw, format: str):
    """A random raw record in `format`: alternating human/agent turns, ending with the agent."""
    pairs = draw(st.integers(1, 4))
    human = {"eto": "human", "aguvis": "human", "openai": "user", "llamafactory": "human"}[format]
    agent = {"eto": "gpt", "aguvis": "gpt", "openai": "assistant", "llamafactory": "gpt"}[format]
    role_key, text_key = ("role", "content") if format == "openai" else ("from", "value")
    messages = []
    if draw(st.booleans()):
        messages.append({role_key: "system", text_key: draw(text)})
    for _ in range(pairs):
        user_role = human
        if format == "openai" and messages and draw(st.booleans()):
            user_role = "tool"
        if format == "llamafactory" and messages and draw(st.booleans()):
            user_role = "observation"
        messages.append({role_key: user_role, text_key: draw(text | st.just("OK"))})
        messages.append({role_key: agent, text_key: draw(text | st.just("OK"))})
        if format == "aguvis":
            messages[-1].update(recipient=draw(st.sampled_from(["all", "os"])), end_turn=draw(st.booleans()))
    key = "messages" if format == "openai" else "conversations"
    record = {key: messages, **draw(metadata)}
    if draw(st.booleans()):
        record["id"] = draw(text)
    if draw(st.booleans()):
        record["reward"] = draw(st.floats(0, 1, allow_nan=False))
    if format == "aguvis" and draw(st.booleans()):
        messages[1 if messages[0][role_key] == "system" else 0][text_key] = "<image>\n" + draw(text)
        record["image"] = draw(st.sampled_from(["a.png", "/abs/b.png", "sub/c.png"]))
    return record


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(), format=st.sampled_from(["eto", "eto-role", "aguvis", "openai", "llamafactory", "trajkit"])
)
def test_round_trip_property(data, format):
    """Canonical trajectories survive writing and reading in every format, through real files."""
    handler = get_format(format)
    if format == "trajkit":
        original = data.draw(native_trajectory)
    else:
        raw_format = "eto" if format == "eto-role" else format
        original = handler.read(
            data.draw(chat_record(raw_format)), 0, ReadOptions(stem="t", image_root=Path("/data"))
        )
    with tempfile.TemporaryDirectory() as folder:
        for suffix in (".json", ".jsonl"):
            out = write_trajectories([original], Path(folder) / f"x{suffix}", format, image_root="/data")
            assert read_file(out, format, image_root="/data") == [original]
    # And in memory, without files.
    assert handler.read(handler.write(original, WriteOptions()), 0, ReadOptions()) == original


def test_every_format_has_a_name_listed():
    assert set(FORMAT_NAMES) == {"trajkit", "eto", "eto-role", "aguvis", "openai", "llamafactory"}
