import builtins
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trajkit.gui.actions import (
    DIRECTION_SCROLL_AMOUNT,
    ActionParseError,
    ActionRenderError,
    Answer,
    Back,
    Click,
    DoubleClick,
    Drag,
    Home,
    Hotkey,
    HScroll,
    LongPress,
    Move,
    OpenApp,
    Press,
    RightClick,
    Scroll,
    SelectOption,
    Swipe,
    Terminate,
    TripleClick,
    Wait,
    Write,
    action_from_dict,
    actions_to_json,
    parse_action,
    parse_actions,
    render_actions,
)

# --- every form the AGUVIS data uses -------------------------------------------------------

FORMS = [
    ("pyautogui.click(x=0.8102, y=0.9463)", [Click(0.8102, 0.9463)]),
    ("pyautogui.click(0.5, 0.25)", [Click(0.5, 0.25)]),
    ("pyautogui.click()", [Click()]),
    ("pyautogui.doubleClick()", [DoubleClick()]),
    ("pyautogui.doubleClick(x=0.1, y=0.2)", [DoubleClick(0.1, 0.2)]),
    ("pyautogui.rightClick(x=0.1, y=0.2)", [RightClick(0.1, 0.2)]),
    ("pyautogui.tripleClick(0.1, 0.2)", [TripleClick(0.1, 0.2)]),
    ("pyautogui.click(x=0.1, y=0.2, clicks=2)", [DoubleClick(0.1, 0.2)]),
    ("pyautogui.click(x=0.1, y=0.2, button='right')", [RightClick(0.1, 0.2)]),
    ("pyautogui.click(x=0.1, y=0.2, duration=1)", [Click(0.1, 0.2)]),
    ("pyautogui.moveTo(x=0.04, y=0.405)", [Move(0.04, 0.405)]),
    ("pyautogui.moveTo(x=0.04, y=0.405)\npyautogui.dragTo(x=0.5, y=0.6)", [Drag(0.04, 0.405, 0.5, 0.6)]),
    ("pyautogui.dragTo(from_coord=[0.1, 0.2], to_coord=[0.3, 0.4])", [Drag(0.1, 0.2, 0.3, 0.4)]),
    ("pyautogui.dragTo(x=0.3, y=0.4)", [Drag(None, None, 0.3, 0.4)]),
    ("pyautogui.write(message='bread buns')", [Write("bread buns")]),
    ("pyautogui.write('bread buns')", [Write("bread buns")]),
    ("pyautogui.typewrite('x')", [Write("x")]),
    ("pyautogui.press(keys='enter')", [Press(("enter",))]),
    ("pyautogui.press(keys=['enter'])", [Press(("enter",))]),
    ("pyautogui.press('enter')", [Press(("enter",))]),
    ("pyautogui.press(['tab', 'tab'])", [Press(("tab", "tab"))]),
    ("pyautogui.hotkey('ctrl', 'c')", [Hotkey(("ctrl", "c"))]),
    ("pyautogui.hotkey(keys=['ctrl', 'c'])", [Hotkey(("ctrl", "c"))]),
    ("pyautogui.hotkey(['ctrl', 'c'])", [Hotkey(("ctrl", "c"))]),
    ("pyautogui.scroll(page=-0.1)", [Scroll(-0.1)]),
    ("pyautogui.scroll(0.13)", [Scroll(0.13)]),
    ("pyautogui.scroll(page=-0.1, x=0.5, y=0.5)", [Scroll(-0.1, 0.5, 0.5)]),
    ("pyautogui.hscroll(page=-0.1)", [HScroll(-0.1)]),
    ("mobile.home()", [Home()]),
    ("mobile.back()", [Back()]),
    ("mobile.open_app(app_name='drupe')", [OpenApp("drupe")]),
    ("mobile.swipe(from_coord=[0.581, 0.898], to_coord=[0.601, 0.518])", [Swipe(0.581, 0.898, 0.601, 0.518)]),
    ("mobile.long_press(x=0.799, y=0.911)", [LongPress(0.799, 0.911)]),
    ("mobile.wait(seconds=3)", [Wait(3)]),
    ("mobile.wait()", [Wait()]),
    ("mobile.terminate(status='success')", [Terminate("success")]),
    ("terminate(status='failure')", [Terminate("failure")]),
    ("browser.select_option(x=0.1, y=0.2, value='Blue')", [SelectOption(0.1, 0.2, "Blue")]),
    ("answer('text')", [Answer("text")]),
    ("answer(answer='text')", [Answer("text")]),
    (
        "mobile.wait(seconds=3)\nmobile.swipe(from_coord=[0.5, 0.8], to_coord=[0.5, 0.2])",
        [Wait(3), Swipe(0.5, 0.8, 0.5, 0.2)],
    ),
    ("# comment\npyautogui.click(x=0.1, y=0.2)  # trailing", [Click(0.1, 0.2)]),
]


@pytest.mark.parametrize("text,expected", FORMS, ids=[f[0][:40] for f in FORMS])
def test_parses_every_aguvis_form(text, expected):
    assert parse_actions(text) == expected


def test_mobile_terminate_is_terminate():
    assert parse_action("mobile.terminate(status='success')") == parse_action("terminate(status='success')")


def test_canonical_json():
    actions = parse_actions("pyautogui.hotkey('ctrl', 'c')\npyautogui.click(x=0.41, y=0.178)")
    assert actions_to_json(actions) == [
        {"type": "hotkey", "keys": ["ctrl", "c"]},
        {"type": "click", "x": 0.41, "y": 0.178},
    ]
    assert [action_from_dict(d) for d in actions_to_json(actions)] == actions
    json.dumps(actions_to_json(actions))


def test_action_from_dict_rejects_bad_objects():
    with pytest.raises(ActionParseError, match="unknown action type"):
        action_from_dict({"type": "explode"})
    with pytest.raises(ActionParseError, match="unexpected field"):
        action_from_dict({"type": "click", "x": 0.1, "y": 0.1, "z": 1})
    with pytest.raises(ActionParseError, match="normalized coordinate"):
        action_from_dict({"type": "click", "x": 2, "y": 0.1})


# --- coordinate scales ---------------------------------------------------------------------


def test_scales():
    assert parse_action("pyautogui.click(x=500, y=250)") == Click(0.5, 0.25)  # auto: 0-1000
    assert parse_action("pyautogui.click(x=500, y=250)", scale="k") == Click(0.5, 0.25)
    assert parse_action("pyautogui.click(960, 540)", width=1920, height=1080) == Click(0.5, 0.5)
    assert parse_action("pyautogui.click(960, 540)", scale="px", width=1920, height=1080) == Click(0.5, 0.5)
    assert parse_action("pyautogui.click(x=0.5, y=1)", scale="norm") == Click(0.5, 1.0)
    assert parse_action("pyautogui.click(x=0.123456, y=0.5)") == Click(0.1235, 0.5)


@pytest.mark.parametrize(
    "text,options,message",
    [
        ("pyautogui.click(x=1.5, y=0.2)", {}, "out of range"),
        ("pyautogui.click(x=1.5, y=0.2)", {"scale": "norm"}, "out of range"),
        ("pyautogui.click(x=1500, y=20)", {}, "beyond the 0-1000"),
        ("pyautogui.click(x=1001, y=20)", {"scale": "k"}, "out of range"),
        ("pyautogui.click(x=2000, y=20)", {"scale": "px", "width": 1920, "height": 1080}, "out of range"),
        ("pyautogui.click(x=200, y=20)", {"scale": "px"}, "width and height"),
        ("pyautogui.click(x=-0.1, y=0.2)", {}, "negative"),
        ("pyautogui.click(x=0.1, y=0.2)", {"scale": "cm"}, "unknown scale"),
    ],
)
def test_bad_coordinates(text, options, message):
    with pytest.raises(ActionParseError, match=message):
        parse_actions(text, **options)


def test_scroll_convention_flips_only_at_the_text_boundary():
    assert parse_action("pyautogui.scroll(page=-0.1)", scroll_convention="inverted") == Scroll(0.1)
    text = render_actions([Scroll(0.1)], "aguvis", scroll_convention="inverted")
    assert text == "pyautogui.scroll(page=-0.1)"
    assert parse_action(text, scroll_convention="inverted") == Scroll(0.1)


# --- what is refused -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,message",
    [
        ("os.system('rm -rf /')", "unknown function 'os.system'"),
        ("__import__('os').system('ls')", "attribute access outside the whitelist"),
        ("__import__('os')", "unknown function '__import__'"),
        ("pyautogui.click(x=foo, y=0.1)", "the name 'foo'"),
        ("pyautogui.click(x=len('a'), y=0.1)", "nested call"),
        ("pyautogui.write(message=[c for c in 'ab'])", "comprehension"),
        ("pyautogui.write(message=lambda: 1)", "lambda"),
        ("pyautogui.click(*[0.1, 0.2])", "starred"),
        ("pyautogui.click(**{'x': 0.1})", "keyword unpacking"),
        ("pyautogui.click(x=0.1 + 0.1, y=0.2)", "expression"),
        ("pyautogui.write(message=f'{x}')", "f-string"),
        ("pyautogui.a.b()", "attribute access outside the whitelist"),
        ("pyautogui.click(x=0.1, y=0.2, foo=1)", "unexpected argument 'foo'"),
        ("pyautogui.click(x=0.1)", "x and y must be given together"),
        ("pyautogui.click(x=True, y=0.2)", "not allowed"),
        ("pyautogui.write(message=None)", "not allowed"),
        ("pyautogui.write()", "missing argument 'message'"),
        ("pyautogui.write(message=3)", "must be a string"),
        ("pyautogui.click(x=0.1, y=0.2", "syntax error"),
        ("x = pyautogui.click(x=0.1, y=0.2)", "only action calls"),
        ("import os", "only action calls"),
        ("pyautogui.click", "only action calls"),
        ("", "no action found"),
        ("pyautogui.click(x=1e999, y=0.1)", "not finite"),
        ("pyautogui.click(x=0.1, y=0.2, button='middle')", "unsupported button"),
        ("click(start_box='(1,2)')\npyautogui.click(x=0.1, y=0.1)", "mixes"),
    ],
)
def test_refuses_with_a_clear_error(text, message):
    with pytest.raises(ActionParseError, match=message) as info:
        parse_actions(text)
    assert isinstance(info.value, ValueError)


def test_dangerous_snippets_never_run(tmp_path, monkeypatch):
    target = tmp_path / "created"
    snippets = [
        f"open({str(target)!r}, 'w').write('x')",
        f"__import__('pathlib').Path({str(target)!r}).touch()",
        f"pyautogui.write(message=open({str(target)!r}, 'w'))",
        f"pyautogui.click(x=__import__('pathlib').Path({str(target)!r}).touch(), y=0)",
        f"[open({str(target)!r}, 'w') for _ in '1']",
        f"exec(\"open({str(target)!r}, 'w')\")",
        f"eval(\"open({str(target)!r}, 'w')\")",
    ]

    def refuse(*args, **kwargs):
        raise AssertionError("parsing must never evaluate code")

    monkeypatch.setattr(builtins, "eval", refuse)
    monkeypatch.setattr(builtins, "exec", refuse)
    for text in snippets:
        with pytest.raises(ActionParseError):
            parse_actions(text)
    assert not target.exists()


# --- other syntaxes and styles ----------------------------------------------------------------


def test_uitars_and_osatlas_parse():
    assert parse_action("click(start_box='(500,300)')") == Click(0.5, 0.3)
    assert parse_action("click(start_box='<|box_start|>(500,300)<|box_end|>')") == Click(0.5, 0.3)
    assert parse_action("click(start_box='(400,200,600,400)')") == Click(0.5, 0.3)
    assert parse_action("left_double(start_box='(1,2)')") == DoubleClick(0.001, 0.002)
    assert parse_action("drag(start_box='(100,100)', end_box='(200,200)')") == Drag(0.1, 0.1, 0.2, 0.2)
    assert parse_action("hotkey(key='ctrl c')") == Hotkey(("ctrl", "c"))
    assert parse_action("hotkey(key='enter')") == Press(("enter",))
    assert parse_action("type(content='hi')") == Write("hi")
    assert parse_action("scroll(direction='down')") == Scroll(-DIRECTION_SCROLL_AMOUNT)
    assert parse_action("finished()") == Terminate("success")
    assert parse_action("finished(content='42')") == Answer("42")
    assert parse_action("CLICK <point>[[500,300]]</point>") == Click(0.5, 0.3)
    assert parse_actions("TYPE [hello world]\nENTER") == [Write("hello world"), Press(("enter",))]
    assert parse_action("SCROLL [LEFT]") == HScroll(-DIRECTION_SCROLL_AMOUNT)
    assert parse_action("IMPOSSIBLE") == Terminate("failure")
    with pytest.raises(ActionParseError, match="not an OS-Atlas action"):
        parse_actions("CLICK <point>[[1,2]]</point>\nrm -rf /")


def test_render_styles():
    step = [Click(0.8875, 0.2281)]
    assert render_actions(step, "aguvis") == "pyautogui.click(x=0.8875, y=0.2281)"
    assert render_actions(step, "pyautogui") == "pyautogui.click(0.8875, 0.2281)"
    assert render_actions(step, "pyautogui", width=1000, height=1000) == "pyautogui.click(888, 228)"
    assert render_actions(step, "uitars") == "click(start_box='(887.5,228.1)')"
    assert render_actions(step, "osatlas") == "CLICK <point>[[887.5,228.1]]</point>"
    assert render_actions([Drag(0.1, 0.2, 0.3, 0.4)], "pyautogui") == (
        "pyautogui.moveTo(0.1, 0.2)\npyautogui.dragTo(0.3, 0.4)"
    )
    assert render_actions([Hotkey(("ctrl", "c"))], "aguvis") == "pyautogui.hotkey(keys=['ctrl', 'c'])"
    assert render_actions([Write("it's")], "aguvis") == 'pyautogui.write(message="it\'s")'
    with pytest.raises(ActionRenderError, match="osatlas has no form"):
        render_actions([TripleClick(0.1, 0.1)], "osatlas")
    with pytest.raises(ActionRenderError, match="unknown style"):
        render_actions(step, "xml")


# --- property tests --------------------------------------------------------------------------

coords = st.integers(0, 10_000).map(lambda i: round(i / 10_000, 4))
amounts = st.one_of(st.integers(-(10**6), 10**6), st.floats(allow_nan=False, allow_infinity=False, width=64))
keys = st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=4).map(tuple)
texts = st.text(max_size=40)


def _point_or_none(cls):
    return st.one_of(st.builds(cls), st.builds(cls, coords, coords))


def _scroll(cls):
    return st.one_of(st.builds(cls, amounts), st.builds(cls, amounts, coords, coords))


any_action = st.one_of(
    _point_or_none(Click),
    _point_or_none(DoubleClick),
    _point_or_none(RightClick),
    _point_or_none(TripleClick),
    st.builds(Move, coords, coords),
    st.builds(Drag, coords, coords, coords, coords),
    st.builds(Drag, st.none(), st.none(), coords, coords),
    st.builds(Write, texts),
    st.builds(Press, keys),
    st.builds(Hotkey, keys),
    _scroll(Scroll),
    _scroll(HScroll),
    st.builds(Swipe, coords, coords, coords, coords),
    st.builds(LongPress, coords, coords),
    st.just(Home()),
    st.just(Back()),
    st.builds(Wait, st.none() | st.integers(0, 600) | st.floats(0, 600)),
    st.builds(OpenApp, texts),
    st.builds(SelectOption, coords, coords, texts),
    st.builds(Answer, texts),
    st.builds(Terminate, st.sampled_from(["success", "failure"])),
)


def _no_move_then_startless_drag(actions):
    # A moveTo followed by a dragTo with no start point *is* one drag: parsing merges them.
    return not any(
        isinstance(a, Move) and isinstance(b, Drag) and b.x is None
        for a, b in zip(actions, actions[1:], strict=False)
    )


FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.lists(any_action, min_size=1, max_size=4).filter(_no_move_then_startless_drag))
@pytest.mark.parametrize("style", ["aguvis", "pyautogui"])
def test_round_trip_exact(style, actions):
    assert parse_actions(render_actions(actions, style)) == actions


key_names = st.sampled_from(["enter", "ctrl", "c", "shift", "tab", "alt", "f4", "a"])
uitars_action = st.one_of(
    st.builds(Click, coords, coords),
    st.builds(DoubleClick, coords, coords),
    st.builds(RightClick, coords, coords),
    st.builds(LongPress, coords, coords),
    st.builds(Drag, coords, coords, coords, coords),
    st.builds(Write, texts),
    st.builds(Press, key_names.map(lambda k: (k,))),
    st.builds(Hotkey, st.lists(key_names, min_size=2, max_size=3).map(tuple)),
    st.builds(Scroll, st.sampled_from([DIRECTION_SCROLL_AMOUNT, -DIRECTION_SCROLL_AMOUNT])),
    st.builds(HScroll, st.sampled_from([DIRECTION_SCROLL_AMOUNT, -DIRECTION_SCROLL_AMOUNT]), coords, coords),
    st.just(Home()),
    st.just(Back()),
    st.just(Wait()),
    st.builds(OpenApp, texts),
    st.builds(Answer, texts),
    st.just(Terminate("success")),
)
plain_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30)
osatlas_action = st.one_of(
    st.builds(Click, coords, coords),
    st.builds(LongPress, coords, coords),
    st.builds(Write, plain_text),
    st.builds(OpenApp, plain_text),
    st.builds(Scroll, st.sampled_from([DIRECTION_SCROLL_AMOUNT, -DIRECTION_SCROLL_AMOUNT])),
    st.builds(HScroll, st.sampled_from([DIRECTION_SCROLL_AMOUNT, -DIRECTION_SCROLL_AMOUNT])),
    st.just(Home()),
    st.just(Back()),
    st.just(Wait()),
    st.just(Press(("enter",))),
    st.builds(Terminate, st.sampled_from(["success", "failure"])),
)


@FAST
@given(st.lists(uitars_action, min_size=1, max_size=3))
def test_round_trip_uitars_subset(actions):
    assert parse_actions(render_actions(actions, "uitars")) == actions


@FAST
@given(st.lists(osatlas_action, min_size=1, max_size=3))
def test_round_trip_osatlas_subset(actions):
    assert parse_actions(render_actions(actions, "osatlas")) == actions


# 10k cases each: the parser must never crash (only ActionParseError) and never run anything.
FUZZ = settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.text(max_size=80))
def test_random_text_only_raises_parse_errors(text):
    try:
        parse_actions(text)
    except ActionParseError:
        pass


FRAGMENTS = [
    "pyautogui.click",
    "pyautogui.write",
    "mobile.swipe",
    "answer",
    "os.system",
    "__import__",
    "open",
    "eval",
    "(",
    ")",
    "[",
    "]",
    ",",
    "=",
    "x",
    "y",
    "message",
    "'a'",
    '"b"',
    "0.5",
    "-1",
    "1e999",
    "*",
    "**",
    "lambda:",
    " for c in ",
    ".",
    "\n",
    ";",
    "from_coord",
    "None",
    "True",
    "{",
    "}",
    ":",
    "#",
    "\\",
]


@FUZZ
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=14).map("".join))
def test_python_looking_snippets_only_raise_parse_errors(text):
    try:
        actions = parse_actions(text)
    except ActionParseError:
        return
    # Whatever parses is a valid canonical action list that renders and parses back.
    assert parse_actions(render_actions(actions, "aguvis")) == actions
