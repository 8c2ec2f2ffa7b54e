"""Verifiers against hostile model output: each reported hang or crash, and 1 MB inputs for all.

Timing assertions are generous bounds that prove "does not hang", never benchmarks. The
watchdog worker is started once (``warm_worker``) so that a bound measures a check, not the
one-time start of the worker process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from sdft._deps import is_available
from sdft.errors import ConfigError
from sdft.refusal import find_refusal_marker, is_refusal
from sdft.verify import (
    DEFAULT_BUDGET_S,
    VERIFIER_ERROR,
    find_meta_talk,
    get_verifier,
    guard,
    time_budget_s,
    verify,
)
from sdft.verify.base import PASS, Verdict
from sdft.verify.math import answers_equal, extract_answer, is_correct, parse_number
from sdft.verify.toolcall import MAX_CALLS, parse_calls
from sdft.verify.toolcall import is_correct as call_is_correct
from sdft.verify.watchdog import warm_up

MB = 1_000_000
LIMIT_S = 2.0  # every verifier answers a 1 MB adversarial answer within this
GSM_REF = "She sold 48 + 24 = 72 clips.\n#### 72"


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    start = time.monotonic()
    result = fn(*args, **kwargs)
    return result, time.monotonic() - start


@pytest.fixture(scope="module", autouse=True)
def warm_worker() -> None:
    """Start the watchdog worker (and import sympy in it) before any bound is measured."""
    verdict = verify("#### 72", "stop", GSM_REF, {}, get_verifier("math"))
    assert verdict.ok, verdict


# ------------------------------------------------------------------ the reported examples


def test_huge_exponent_is_compared_as_text_not_expanded() -> None:
    verdict, seconds = timed(is_correct, "The total is\n#### 1e99999999", "#### 5")
    assert verdict.reason == "wrong-answer" and seconds < LIMIT_S
    assert parse_number("1e99999999") is None
    assert is_correct("#### 1e99999999", "#### 1e99999999").ok  # the same text still matches
    assert parse_number("1e300") == 10**300  # within the cap: still exact


def test_unclosed_boxes_are_linear() -> None:
    text = "\\boxed{" * (MB // 7)
    answer, seconds = timed(extract_answer, text)
    assert answer is None and seconds < LIMIT_S
    # a closed box at the end of a long output is still found
    assert extract_answer("\\boxed{" * 50_000 + "so \\boxed{42}") == "42"


def test_repeated_answer_phrase_is_linear() -> None:
    answer, seconds = timed(extract_answer, "the answer is " * (MB // 14))
    assert answer is None and seconds < LIMIT_S
    assert extract_answer("the answer is " * 50_000 + "the answer is 7.") == "7"


def test_unclosed_tool_call_is_linear() -> None:
    calls, seconds = timed(parse_calls, "f(" * (MB // 2))
    assert calls is None and seconds < LIMIT_S
    assert parse_calls("f(" * 20_000 + "\ng(x=1)") is not None  # a call after the junk is found


def test_hex_big_integer_in_a_tool_call_does_not_overflow() -> None:
    huge = "f(x=0x" + "f" * 400 + ")"  # 1600 bits: over the cap, so not a call argument
    assert call_is_correct(huge, "f(x=1)").reason == "no-call"
    wide = "f(x=0x" + "f" * 200 + ")"  # 800 bits: a call, but beyond float range
    assert call_is_correct(wide, "f(x=1.5)").reason == "wrong-arguments"  # was OverflowError
    assert call_is_correct(wide, wide).ok  # integers compare exactly
    verdict, seconds = timed(call_is_correct, "f(x=0x" + "f" * MB + ")", "f(x=1)")
    assert verdict.reason == "no-call" and seconds < LIMIT_S


def test_deeply_nested_json_is_not_a_call() -> None:
    assert parse_calls("[" * (MB // 2) + "]" * (MB // 2)) is None  # was RecursionError
    deep = '{"name": "f", "arguments": {"x": ' + "[" * 5000 + "]" * 5000 + "}}"
    assert call_is_correct(deep, "f(x=1)").reason == "no-call"
    shallow = '{"name": "f", "arguments": {"x": ' + "[" * 5 + "1" + "]" * 5 + "}}"
    assert call_is_correct(shallow, "f(x=[[[[[1]]]]])").ok


def test_a_flood_of_calls_is_capped_and_still_an_extra_call() -> None:
    calls = parse_calls("f(a=1)\n" * 10_000)
    assert calls is not None and len(calls) == MAX_CALLS + 1
    assert call_is_correct("f(a=1)\n" * 10_000, "f(a=1)").reason == "extra-call"


def test_boxed_factorial_is_not_the_number() -> None:
    assert extract_answer("\\boxed{3!}") == "3!"
    assert not is_correct("So \\boxed{3!}", "#### 3").ok
    assert extract_answer("The answer is 5!") == "5"  # in prose "!" is punctuation
    if is_available("math_verify"):
        assert is_correct("So \\boxed{3!}", "#### 6").ok


@pytest.mark.parametrize("answer", ["9^{9^{9^{9}}}", "10^{10^{10}}", "(10^{10})!", "100000!", "x^{99999999}",
                                    "\\frac{1}{" * 300 + "}" * 300])
def test_runaway_symbolic_answers_are_screened(answer: str) -> None:
    same, seconds = timed(answers_equal, answer, "5")
    assert same is False and seconds < LIMIT_S


# ------------------------------------------------------------ verify(): never raises, bounded


class _Raises:
    name = "raises"

    def check(self, candidate: str, reference: str, row: dict[str, Any]) -> Verdict:
        raise ValueError("boom")


class _NotAVerdict:
    name = "odd"

    def check(self, candidate: str, reference: str, row: dict[str, Any]) -> Any:
        return True


class _Slow:
    name = "slow"

    def check(self, candidate: str, reference: str, row: dict[str, Any]) -> Verdict:
        time.sleep(0.3)
        return PASS


class _SelfLimited:
    """Like the code sandbox: enforces its own limit and says "timeout" itself."""

    name = "self-limited"
    timeout_s = 0.1

    def check(self, candidate: str, reference: str, row: dict[str, Any]) -> Verdict:
        time.sleep(0.3)
        return Verdict(False, "timeout", "the tests ran out of time")


def test_verify_turns_exceptions_into_verifier_error() -> None:
    verdict = verify("an answer", "stop", "ref", {}, _Raises())
    assert (verdict.ok, verdict.reason) == (False, VERIFIER_ERROR) and "ValueError: boom" in verdict.detail
    assert verify("an answer", "stop", "ref", {}, _NotAVerdict()).reason == VERIFIER_ERROR
    assert verify(12345, "stop", "ref", {}, get_verifier("math")).reason == VERIFIER_ERROR  # type: ignore[arg-type]


def test_verify_reports_an_in_process_overrun() -> None:
    verdict = verify("an answer", "stop", "ref", {}, _Slow(), budget_s=0.05)
    assert verdict.reason == VERIFIER_ERROR and "budget" in verdict.detail
    assert verify("an answer", "stop", "ref", {}, _Slow(), budget_s=5).ok
    # a verifier that limits itself keeps its own verdict, however slow the machine
    assert verify("an answer", "stop", "ref", {}, _SelfLimited(), budget_s=0.05).reason == "timeout"


def test_verify_stops_a_runaway_check_and_recovers() -> None:
    catastrophic = get_verifier("regex", pattern=r"(a|aa)+$")  # exponential backtracking
    verdict, seconds = timed(verify, "a" * 60 + "!", "stop", "aaa", {}, catastrophic, budget_s=1.0)
    assert verdict.reason == VERIFIER_ERROR and "did not finish" in verdict.detail
    assert seconds < 1.0 + LIMIT_S  # the budget, plus stopping the worker
    # the worker is replaced: the next candidate is checked normally
    assert warm_up()
    assert verify("#### 72", "stop", GSM_REF, {}, get_verifier("math")).ok


def test_time_budget_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDFT_VERIFY_BUDGET_S", "7.5")
    assert time_budget_s() == 7.5
    monkeypatch.setenv("SDFT_VERIFY_BUDGET_S", "soon")
    assert time_budget_s() == DEFAULT_BUDGET_S
    with pytest.raises(ConfigError, match="budget_s"):
        verify("x", "stop", "x", {}, get_verifier("none"), budget_s=0)


def test_catastrophic_user_pattern_called_directly() -> None:
    verifier = get_verifier("regex", pattern=r"(a|aa)+$")
    verdict, seconds = timed(verifier.check, "a" * 60 + "!", "aaa", {})
    assert verdict.reason == VERIFIER_ERROR and seconds < LIMIT_S
    assert verifier.check("aaaa", "aa", {}).ok  # harmless inputs still match


# --------------------------------------------------------- every verifier, 1 MB adversarial

ADVERSARIAL = {
    "digits": "9" * MB,
    "hash-line": "#### " + "1," * (MB // 2),
    "boxes": "\\boxed{" * (MB // 7),
    "phrases": "the final answer is " * (MB // 20),
    "spaces-after-answer": "answer" + " " * MB + "!",
    "open-calls": "get_weather(" * (MB // 12),
    "brackets": "[{" * (MB // 2),
    "quotes": "\"'" * (MB // 2),
    "fences": "```\n" * (MB // 4),
    "choices": "(A) answer: B " * (MB // 14),
}
VERIFIERS = {
    "math": {}, "tool-call": {}, "exact": {}, "regex": {"pattern": r"(\d+)\s*$"}, "choice": {}, "none": {},
}


@pytest.mark.parametrize("kind", sorted(ADVERSARIAL))
@pytest.mark.parametrize("name", sorted(VERIFIERS))
def test_every_verifier_answers_1mb_within_limit(name: str, kind: str) -> None:
    verifier = get_verifier(name, **VERIFIERS[name])
    text = ADVERSARIAL[kind]
    verdict, seconds = timed(verifier.check, text, "#### 72", {"tests": ""})
    assert isinstance(verdict, Verdict) and seconds < LIMIT_S, (seconds, verdict)
    assert len(verdict.detail) < 600  # details land in every output row
    warm_up(getattr(verifier, "prepare", None))  # a worker stopped by an earlier test restarts here
    verdict, seconds = timed(verify, text, "stop", "#### 72", {}, verifier)
    assert isinstance(verdict, Verdict) and seconds < LIMIT_S, (seconds, verdict)


@pytest.mark.parametrize("kind", sorted(ADVERSARIAL) + ["non-word", "refusal-words"])
def test_guard_scanners_answer_1mb_within_limit(kind: str) -> None:
    text = ADVERSARIAL.get(kind) or {"non-word": "!" * MB, "refusal-words": "i can't " * (MB // 8)}[kind]
    start = time.monotonic()
    find_meta_talk(text)
    is_refusal(text)
    find_refusal_marker(text)
    verdict = guard(text, "stop", "ref")
    assert isinstance(verdict, Verdict) and time.monotonic() - start < LIMIT_S


def test_meta_talk_is_found_at_either_end_of_a_long_answer() -> None:
    filler = "The sum grows by one each step. " * 20_000
    assert find_meta_talk("Here is the rewritten answer: " + filler) == "Here is the rewritten"
    assert find_meta_talk(filler + "I have rephrased the solution.") == "I have rephrased"
    # the tail window does not make "as instructed" look like the opening of the text
    assert find_meta_talk(filler + "as instructed by the teacher") is None
