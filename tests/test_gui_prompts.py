import pytest

from trajkit.gui.actions import ActionParseError, Back, Click
from trajkit.gui.prompts import assistant_prefix, extract_os_code, generation_prompt, parse_completion

CODE = "pyautogui.click(x=0.1, y=0.2)"


def test_mode_prefixes():
    assert assistant_prefix("self_plan") == "<|recipient|>"
    assert assistant_prefix("enforced_plan") == "<|recipient|>all\nThought:"
    assert assistant_prefix("grounding") == "<|recipient|>os\n"
    assert assistant_prefix("given_instruction", "Click OK.") == (
        "<|recipient|>all\nAction: Click OK.<|im_end|>\n<|im_start|>assistant<|recipient|>os\n"
    )
    with pytest.raises(ValueError, match="needs a low-level instruction"):
        assistant_prefix("given_instruction")
    with pytest.raises(ValueError, match="unknown mode"):
        assistant_prefix("freestyle")


def test_generation_prompt():
    chat = "<|im_start|>user\nhi<|im_end|>"
    assert generation_prompt(chat, "grounding") == chat + "\n<|im_start|>assistant<|recipient|>os\n"


@pytest.mark.parametrize(
    "completion",
    [
        CODE,
        CODE + "<|diff_marker|>",
        CODE + "<|diff_marker|>\n<|im_start|>user\nmore",
        "os\n" + CODE + "<|diff_marker|>",
        "all\nThought: t\nAction: a<|im_end|>\n<|im_start|>assistant<|recipient|>os\n"
        + CODE
        + "<|diff_marker|>",
        " t\nAction: a<|im_end|>\n<|im_start|>assistant<|recipient|>os\n" + CODE + "<|im_end|>",
        "<|recipient|>os\n```python\n" + CODE + "\n```<|diff_marker|>",
        "Sure! Here is the action:\n" + CODE + "\nHope it helps.",
        "all\nAction: a<|im_end|>\n" + CODE,
    ],
)
def test_extract_os_code(completion):
    assert extract_os_code(completion) == CODE
    assert parse_completion(completion) == [Click(0.1, 0.2)]


def test_extract_keeps_multi_line_steps():
    text = "<|recipient|>os\nmobile.back()\n" + CODE + "<|diff_marker|>"
    assert parse_completion(text) == [Back(), Click(0.1, 0.2)]


def test_monologue_without_code():
    assert extract_os_code("all\nThought: still thinking<|im_end|>") == ""
    with pytest.raises(ActionParseError, match="no os code"):
        parse_completion("all\nThought: still thinking<|im_end|>")
    with pytest.raises(ActionParseError):
        parse_completion("<|recipient|>os\nimport os<|diff_marker|>")
