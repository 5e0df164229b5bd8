"""`validate_file` reports every problem as `FILE:RECORD_INDEX:FIELD: message`."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from trajkit.data.validate import Problem, validate_file, validate_paths

FIXTURES = Path(__file__).parent / "fixtures" / "data"
INVALID = FIXTURES / "invalid"
LINE = re.compile(r"^(?P<file>[^:]+):(?P<record>\d+|-):(?P<field>[^:\s]+): (?P<message>.+)$")


def located(problems: list[Problem]) -> list[tuple[str, str, str]]:
    """(record, field, message) of each problem, checking the printed form on the way."""
    out = []
    for problem in problems:
        match = LINE.match(str(problem))
        assert match, str(problem)
        out.append((match["record"], match["field"], match["message"]))
    return out


def write_json(path: Path, value) -> Path:
    path.write_text(json.dumps(value))
    return path


def test_valid_fixtures_have_no_problems():
    assert validate_file(FIXTURES / "valid") == []


def test_every_eto_problem_is_reported():
    problems = located(validate_file(INVALID / "eto_problems.json"))
    assert problems == [
        ("0", "record", "record is a string; expected an object"),
        ("1", "conversations", "missing 'conversations'"),
        (
            "2",
            "conversations[1].from",
            "unknown role 'bot'; expected one of assistant, gpt, human, system, user",
        ),
        ("3", "conversations[1].value", "empty value"),
        ("4", "conversations[2].from", "conversation ends with a 'human' turn; expected an agent turn"),
        ("5", "conversations[2].from", "two agent turns in a row (conversations[1] and conversations[2])"),
        ("6", "conversations[1].value", "value is a number; expected a string"),
        ("7", "reward", "reward is a string; expected a number"),
        ("8", "id", "duplicate id 'unknown-role' (also record 2)"),
    ]


def test_problem_prints_file_record_field_message():
    [problem] = validate_file(INVALID / "top_level_number.json")
    assert str(problem) == (
        f"{INVALID / 'top_level_number.json'}:-:file: "
        "top-level JSON value is a number; expected a list of records or one record object"
    )


@pytest.mark.parametrize(
    "name, kind", [("top_level_number.json", "a number"), ("top_level_string.json", "a string")]
)
def test_wrong_top_level_type(name, kind):
    assert located(validate_file(INVALID / name)) == [
        ("-", "file", f"top-level JSON value is {kind}; expected a list of records or one record object")
    ]


def test_bad_json_lines_each_reported_with_line_and_column():
    assert located(validate_file(INVALID / "broken.jsonl")) == [
        ("1", "json", "invalid JSON at line 2, column 64: Expecting value"),
        ("3", "json", "invalid JSON at line 5, column 31: Expecting value"),
    ]


def test_bad_json_in_a_list_names_the_record():
    assert located(validate_file(INVALID / "broken_list.json")) == [
        ("1", "json", "invalid JSON at line 3, column 66: Expecting ',' delimiter")
    ]


def test_not_json_at_all(tmp_path):
    path = tmp_path / "notes.json"
    path.write_text("hello, world\n")
    assert located(validate_file(path)) == [
        ("0", "json", "invalid JSON at line 1, column 1: Expecting value")
    ]


def test_records_that_are_not_objects_in_jsonl(tmp_path):
    path = tmp_path / "mixed.jsonl"
    good = {
        "id": "a",
        "conversations": [{"from": "human", "value": "Task."}, {"from": "gpt", "value": "Act."}],
    }
    path.write_text(json.dumps(good) + "\n7\n" + json.dumps("text") + "\n")
    assert located(validate_file(path)) == [
        ("1", "record", "record is a number; expected an object"),
        ("2", "record", "record is a string; expected an object"),
    ]


def test_undetectable_record_names_missing_conversations(tmp_path):
    path = write_json(tmp_path / "x.json", [{"id": "a", "dialogue": []}])
    [(record, field, message)] = located(validate_file(path))
    assert (record, field) == ("0", "conversations")
    assert "cannot tell the format" in message and "'conversations', 'messages' or 'turns'" in message


def test_missing_messages_in_openai(tmp_path):
    path = write_json(tmp_path / "x.json", [{"id": "a", "msgs": []}])
    assert located(validate_file(path, format="openai")) == [("0", "messages", "missing 'messages'")]


def test_openai_two_assistants_and_tool_calls(tmp_path):
    record = {
        "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]},
            {"role": "tool", "tool_call_id": "c", "content": "sunny"},
            {"role": "assistant", "content": "Sunny."},
            {"role": "assistant", "content": "Anything else?"},
            {"role": "robot", "content": "beep"},
        ]
    }
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps(record) + "\n")
    assert located(validate_file(path)) == [
        ("0", "messages[4].role", "two agent turns in a row (messages[3] and messages[4])"),
        ("0", "messages[5].role", "unknown role 'robot'; expected one of assistant, system, tool, user"),
    ]


def test_llamafactory_requires_alternation(tmp_path):
    record = {
        "system": "s",
        "conversations": [
            {"from": "human", "value": "a"},
            {"from": "observation", "value": "b"},
            {"from": "gpt", "value": "c"},
        ],
    }
    path = write_json(tmp_path / "x.json", [record])
    assert located(validate_file(path)) == [
        ("0", "conversations[1].from", "two human turns in a row (conversations[0] and conversations[1])")
    ]


def test_aguvis_allows_consecutive_agent_turns_and_checks_images():
    problems = located(validate_file(INVALID / "aguvis_bad_images.json"))
    assert problems == [
        ("0", "image", f"image 'missing.png' not found under {INVALID}"),
        ("1", "image", "image is a number; expected a path or a non-empty list of paths"),
    ]


def test_aguvis_image_checks_can_be_switched_off():
    problems = located(validate_file(INVALID / "aguvis_bad_images.json", check_images=False))
    assert [p[0] for p in problems] == ["1"]


def test_aguvis_image_list_entry_not_a_string(tmp_path):
    record = {
        "image": ["a.png", None],
        "conversations": [
            {"from": "human", "value": "<image><image>"},
            {"from": "gpt", "value": "x", "recipient": "os"},
        ],
    }
    (tmp_path / "a.png").write_bytes(b"")
    path = write_json(tmp_path / "x.json", [record])
    assert located(validate_file(path)) == [("0", "image[1]", "image path is null; expected a string")]


def test_missing_file_and_empty_folder(tmp_path):
    assert located(validate_file(tmp_path / "absent.jsonl")) == [("-", "file", "no such file or folder")]
    assert located(validate_file(tmp_path)) == [("-", "file", "no .json or .jsonl files in this folder")]


def test_empty_file_is_a_problem(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    assert located(validate_file(tmp_path / "empty.jsonl")) == [("-", "file", "no records")]


def test_report_counts_files_and_records():
    report = validate_paths([FIXTURES / "valid", INVALID / "broken.jsonl"])
    assert report.files == 7 and not report.ok
    assert len(report.problems) == 2


def test_trajkit_records_are_checked(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text(
        json.dumps({"id": "a", "turns": [{"role": "agent", "text": 3}, {"role": "narrator", "text": "x"}]})
    )
    assert located(validate_file(path)) == [
        ("0", "turns[0].text", "value is a number; expected a string"),
        ("0", "turns[1].role", "unknown role 'narrator'; expected one of system, task, observation, agent"),
    ]


# ---- reference data ------------------------------------------------------------------------------

REFERENCE_AGUVIS = ["example_stage1_grounding.json", "example_stage2_planning.json"]


@pytest.mark.parametrize("name", REFERENCE_AGUVIS)
def test_reference_aguvis_examples_validate_without_images(shared_data, name):
    assert validate_file(shared_data("aguvis", name), check_images=False) == []


@pytest.mark.parametrize("name", REFERENCE_AGUVIS)
def test_reference_aguvis_examples_validate_with_dummy_images(shared_data, name, tmp_path):
    path = shared_data("aguvis", name)
    image = json.loads(path.read_text())["image"]
    shutil.copy(FIXTURES / "valid" / "images" / "screen.png", tmp_path / image)
    assert validate_file(path, image_root=tmp_path) == []
    # Without the image present, the missing file is reported.
    assert [p.field for p in validate_file(path)] == ["image"]


@pytest.mark.parametrize("env", ["alfworld", "sciworld", "webshop"])
def test_reference_eto_icl_examples_validate(shared_data, env):
    assert validate_file(shared_data("eto", "prompts", f"{env}_icl.json")) == []


def test_from_and_role_keys_may_both_appear_if_they_agree(tmp_path):
    record = {
        "conversations": [
            {"from": "human", "role": "user", "value": "Task."},
            {"from": "gpt", "role": "user", "value": "Act."},
        ]
    }
    path = write_json(tmp_path / "x.json", [record])
    assert located(validate_file(path)) == [("0", "conversations[1].from", "'from' and 'role' disagree")]
