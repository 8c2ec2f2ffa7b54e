"""Tool calls: parsing Python and JSON forms, and structural comparison."""

from __future__ import annotations

import json

import pytest

from sdft.verify.toolcall import ToolCall, ToolCallVerifier, extract_answer, is_correct, parse_calls

WEATHER = ToolCall("get_weather", (), {"city": "Paris", "unit": "c"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("get_weather(city='Paris', unit=\"c\")", [WEATHER]),
        ("```python\nget_weather(city='Paris', unit='c')\n```", [WEATHER]),
        ("Sure! I'll call get_weather(city='Paris', unit='c') for you.", [WEATHER]),
        (
            "[get_weather(city='Paris', unit='c'), get_time(tz='CET')]",
            [WEATHER, ToolCall("get_time", (), {"tz": "CET"})],
        ),
        (
            "f(a=1)\ng(b=[1, 2], c={'k': None})",
            [ToolCall("f", (), {"a": 1}), ToolCall("g", (), {"b": [1, 2], "c": {"k": None}})],
        ),
        ("math.factorial(5)", [ToolCall("math.factorial", (5,), {})]),
        ("f(flag=true, x=null)", [ToolCall("f", (), {"flag": True, "x": None})]),
        ("f(x=-2.5)", [ToolCall("f", (), {"x": -2.5})]),
        ('{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}', [WEATHER]),
        ('{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\", \\"unit\\": \\"c\\"}"}', [WEATHER]),
        ('{"name": "get_weather", "parameters": {"city": "Paris", "unit": "c"}}', [WEATHER]),
        (
            '{"type": "function", "function": '
            '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}}',
            [WEATHER],
        ),
        (
            '[{"name": "f", "arguments": {}}, {"name": "g", "arguments": {"b": 2}}]',
            [ToolCall("f"), ToolCall("g", (), {"b": 2})],
        ),
        ('{"get_weather": {"city": "Paris", "unit": "c"}}', [WEATHER]),  # BFCL answer style
        (
            '<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>\n'
            '<tool_call>\n{"name": "g", "arguments": {"b": 2}}\n</tool_call>',
            [ToolCall("f", (), {"a": 1}), ToolCall("g", (), {"b": 2})],
        ),
        ('```json\n{"name": "f", "arguments": {"a": 1}}\n```', [ToolCall("f", (), {"a": 1})]),
        ("print(get_weather(city='Paris', unit='c'))", [WEATHER]),  # non-literal outer call is skipped
    ],
)
def test_parse_calls(text: str, expected: list[ToolCall]) -> None:
    assert parse_calls(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "The weather in Paris is sunny.",
        "Paris (France) is nice.",  # a space before "(" is prose, not a call
        "Use search(query) to look it up.",  # non-literal argument
        "get_weather(**kwargs)",
        '{"city": "Paris", "unit": "c"}',  # a dict of arguments, no function name
        '{"name": "f", "arguments": "not json"}',
    ],
)
def test_unparsable_text(text: str) -> None:
    assert parse_calls(text) is None
    assert extract_answer(text) is None


def test_extract_answer_is_canonical_and_order_free() -> None:
    a = extract_answer("g(b=2); f(a=1, z='x')")
    b = extract_answer(
        '[{"name": "f", "arguments": {"z": "x", "a": 1}}, {"name": "g", "arguments": {"b": 2}}]'
    )
    assert a == b == 'f(a=1, z="x"); g(b=2)'


REF = "get_weather(city='Paris', unit='c')"
TWO = "[get_weather(city='Paris', unit='c'), get_time(tz='CET')]"


@pytest.mark.parametrize(
    ("candidate", "reference", "reason"),
    [
        (REF, REF, "ok"),
        ("get_weather(unit='c', city=' Paris ')", REF, "ok"),  # kwarg order, surrounding spaces
        ('{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}', REF, "ok"),  # JSON vs Python
        ("[get_time(tz='CET'), get_weather(city='Paris', unit='c')]", TWO, "ok"),  # order-free
        ("f(n=5.0)", "f(n=5)", "ok"),
        ("f(5)", "f(5)", "ok"),  # positional on both sides
        ("f(xs=(1, 2))", "f(xs=[1, 2])", "ok"),
        # an extra call fails, even when the right call is there
        (TWO, REF, "extra-call"),
        (REF + "\n" + REF, REF, "extra-call"),
        (REF, TWO, "missing-call"),
        ("get_forecast(city='Paris', unit='c')", REF, "wrong-function"),
        ("get_weather(city='London', unit='c')", REF, "wrong-arguments"),
        ("get_weather(city='paris', unit='c')", REF, "wrong-arguments"),  # strings are exact
        ("get_weather(city='Paris')", REF, "wrong-arguments"),
        ("get_weather(city='Paris', unit='c', days=3)", REF, "wrong-arguments"),
        ("get_weather('Paris', 'c')", REF, "wrong-arguments"),  # positional vs keyword
        ("f(n='5')", "f(n=5)", "wrong-arguments"),  # a string is not a number
        ("f(flag=1)", "f(flag=True)", "wrong-arguments"),  # a number is not a boolean
        ("f(a=1)\nf(a=1)", "f(a=1)\nf(a=2)", "wrong-arguments"),  # duplicates matched one to one
        ("f(a=2)\nf(a=1)", "f(a=1)\nf(a=2)", "ok"),
        ("I would check the weather in Paris.", REF, "no-call"),
        (REF, "no call here", "bad-reference"),
    ],
)
def test_is_correct(candidate: str, reference: str, reason: str) -> None:
    verdict = is_correct(candidate, reference)
    assert verdict.reason == reason, verdict.detail
    assert verdict.ok is (reason == "ok")


def test_wrong_arguments_detail_names_the_argument() -> None:
    verdict = is_correct("get_weather(city='London', unit='c')", REF)
    assert verdict.detail == 'get_weather: city="London", expected "Paris"'


def test_structured_reference_is_serialised() -> None:
    reference = [{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}]
    assert is_correct(REF, reference).ok  # type: ignore[arg-type]
    assert is_correct(REF, json.dumps(reference)).ok


def test_verifier_protocol() -> None:
    verifier = ToolCallVerifier()
    assert verifier.name == "tool-call"
    assert verifier.check(REF, REF, {}).ok
    assert verifier.extract_answer(REF) == 'get_weather(city="Paris", unit="c")'
