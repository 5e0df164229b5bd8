"""`trajkit data validate|stats|convert`: output formats, exit codes, no tracebacks, fast start."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trajkit.cli import app

FIXTURES = Path(__file__).parent / "fixtures" / "data"
VALID = FIXTURES / "valid"
INVALID = FIXTURES / "invalid"
PROBLEM_LINE = re.compile(r"^[^:]+:(\d+|-):[^:\s]+: .+$")


def run(*args: str):
    return CliRunner().invoke(app, ["data", *map(str, args)])


# ---- validate ------------------------------------------------------------------------------------


def test_validate_ok_prints_summary_to_stderr():
    result = run("validate", VALID / "eto_sft.json", VALID / "openai.jsonl")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr == "OK: 2 file(s), 4 record(s), no problems\n"


def test_validate_problems_one_line_each_on_stdout():
    result = run("validate", INVALID)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 16
    assert all(PROBLEM_LINE.match(line) for line in lines), lines
    assert f"{INVALID / 'eto_problems.json'}:2:conversations[1].from: unknown role 'bot'" in result.stdout
    assert "Traceback" not in result.output
    assert result.stderr.startswith("16 problem(s) in 6 file(s)")


def test_validate_missing_file_is_a_problem_line(tmp_path):
    missing = tmp_path / "missing.json"
    result = run("validate", missing, VALID / "eto_sft.json")
    assert result.exit_code == 1
    assert result.stdout == f"{missing}:-:file: no such file or folder\n"
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_validate_folder_and_format_override():
    assert run("validate", VALID).exit_code == 0
    # Read as OpenAI records, ETO files lack `messages`.
    result = run("validate", "--format", "openai", VALID / "eto_sft.json")
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0].endswith(":0:messages: missing 'messages'")


def test_validate_without_image_check():
    assert run("validate", INVALID / "aguvis_bad_images.json").stdout.count("\n") == 2
    result = run("validate", "--no-check-images", INVALID / "aguvis_bad_images.json")
    assert result.stdout.count("\n") == 1


def test_unknown_format_is_a_usage_error():
    result = run("validate", "--format", "csv", VALID)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: unknown format 'csv'")


# ---- stats ---------------------------------------------------------------------------------------


def test_stats_json():
    result = run("stats", VALID / "eto_sft.json", "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["records"] == 2 and stats["turns"] == 12 and stats["agent_turns"] == 6
    assert stats["mean_turns"] == 6.0 and stats["max_turns"] == 6
    assert stats["successes"] == 1 and stats["with_reward"] == 2
    assert stats["turns_by_role"] == {"task": 4, "observation": 2, "agent": 6}
    texts = [m["value"] for r in json.loads((VALID / "eto_sft.json").read_text()) for m in r["conversations"]]
    assert stats["chars"] == sum(map(len, texts))
    assert stats["agent_chars"] == sum(len(t) for t in texts[1::2])
    assert stats["tokens"] is None


def test_stats_text_and_errors(tmp_path):
    result = run("stats", VALID)
    assert result.exit_code == 0
    assert re.search(r"^records\s+10$", result.stdout, re.M)
    missing = run("stats", tmp_path / "nope.jsonl")
    assert missing.exit_code == 1
    assert missing.stderr == f"error: {tmp_path / 'nope.jsonl'}:-:file: no such file or folder\n"
    broken = run("stats", INVALID / "broken.jsonl")
    assert broken.exit_code == 1 and ":1:json: invalid JSON at line 2" in broken.stderr


def test_stats_with_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    # One token per whitespace-separated word, known or not: counts are easy to predict.
    backend = Tokenizer(models.WordLevel({"[UNK]": 0, "OK": 1}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]").save_pretrained(tmp_path / "tok")

    result = run("stats", VALID / "eto_sft.json", "--json", "--tokenizer", tmp_path / "tok")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    texts = [m["value"] for r in json.loads((VALID / "eto_sft.json").read_text()) for m in r["conversations"]]
    assert stats["tokens"] == sum(len(t.split()) for t in texts)
    assert stats["agent_tokens"] == sum(len(t.split()) for t in texts[1::2])


# ---- convert -------------------------------------------------------------------------------------


def test_convert_between_formats(tmp_path):
    out = tmp_path / "out.jsonl"
    result = run("convert", VALID / "eto_sft.json", out, "--to", "openai")
    assert result.exit_code == 0, result.output
    assert result.stderr == f"wrote 2 trajectories to {out} (openai)\n"
    first = json.loads(out.read_text().splitlines()[0])
    assert first["id"] == "webshop_17" and first["messages"][1] == {"role": "assistant", "content": "OK"}
    assert run("validate", out).exit_code == 0


def test_convert_refuses_to_overwrite(tmp_path):
    source = tmp_path / "in.json"
    source.write_text((VALID / "eto_sft.json").read_text())
    before = source.read_text()
    for extra in ([], ["--force"]):
        result = run("convert", source, source, "--to", "eto", *extra)
        assert result.exit_code == 2
        assert result.stderr == f"error: {source}:-:file: refusing to overwrite the input\n"
    assert source.read_text() == before

    out = tmp_path / "out.json"
    out.write_text("keep me")
    result = run("convert", source, out, "--to", "trajkit")
    assert result.exit_code == 2 and "pass --force" in result.stderr
    assert out.read_text() == "keep me"
    assert run("convert", source, out, "--to", "trajkit", "--force").exit_code == 0
    assert json.loads(out.read_text())[0]["id"] == "webshop_17"


def test_convert_bad_input_and_format(tmp_path):
    result = run(
        "convert", INVALID / "eto_problems.json", tmp_path / "o.jsonl", "--to", "eto", "--from", "eto"
    )
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {INVALID / 'eto_problems.json'}:0:record: record is a string")
    assert not (tmp_path / "o.jsonl").exists()
    assert run("convert", VALID / "eto_sft.json", tmp_path / "o.jsonl", "--to", "auto").exit_code == 2


# ---- start-up ------------------------------------------------------------------------------------


def test_cli_import_stays_light():
    code = (
        "import sys, trajkit.cli; "
        "heavy = [m for m in ('torch', 'transformers', 'datasets') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_import_without_torch():
    subprocess.run(
        [sys.executable, "-c", "import trajkit.cli; import sys; assert 'torch' not in sys.modules"],
        check=True,
    )


@pytest.mark.parametrize("args", [["validate", "missing.json"], ["stats", "missing.json"]])
def test_real_command_has_no_traceback(args, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "trajkit", "data", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    assert "missing.json:-:file: no such file or folder" in result.stdout + result.stderr
