"""The arithmetic-step checker: true and false steps, chains, annotations, decimals, percentages,
thousands separators, and the calculator used for calculator-assisted decoding."""

from __future__ import annotations

import time
from fractions import Fraction

import pytest

from sdft.verify.arithmetic import check_steps, evaluate, find_steps, first_wrong_result, supported_prefix


@pytest.mark.parametrize("text", [
    "Natalia sold 48/2 = 24 clips in May.",
    "600*3 = $1,800",
    "2 * 3 + 4 = 6 + 4 = 10",
    "<<48/2=24>>24 clips",
    "20% of 50 = 10",
    "1/4 of 60 = 15",
    "10 / 3 = 3.33",
    "10 / 3 = 3.3",
    "$1,200 x 2 = $2,400",
    "1,000 + 2,500 = 3,500",
    "0.5 * 4 = 2",
    "50 + 20% = 60",
    "(3 + 4) * 2 = 14",
    "3 × 4 = 12 and 12 ÷ 4 = 3",
    "8 x 1 1/2 = 12 rolls",
    "1/2 * 1/2 = 1/4",
    "He pays 5 * 4 = 20 dollars. 50 - 20 = 30 left",
])
def test_true_steps_pass(text: str) -> None:
    assert check_steps(text).ok, find_steps(text)


@pytest.mark.parametrize("text, shown", [
    ("25 - 50 = 50", "25 - 50 = 50 (is -25)"),
    ("15 / 5 = 15", "15 / 5 = 15 (is 3)"),
    ("600*3 = $6000", "600*3 = $6000 (is 1800)"),
    ("2 * 3 + 4 = 6 + 4 = 11", "6 + 4 = 11 (is 10)"),
    ("2 * 3 + 4 = 7 + 4 = 11", "2 * 3 + 4 = 7 + 4 (is 10)"),
    ("<<48/2=25>>25", "48/2 = 25 (is 24)"),
    ("20% of 50 = 12", "20% of 50 = 12 (is 10)"),
    ("10 / 3 = 3.4", "10 / 3 = 3.4 (is 3.33)"),
    ("10 / 3 = 3", "10 / 3 = 3 (is 3.33)"),
    ("1,000 + 2,500 = 3,600", "1,000 + 2,500 = 3,600 (is 3500)"),
    ("(3 + 4) * 2 = 10", "(3 + 4) * 2 = 10 (is 14)"),
])
def test_false_steps_are_rejected_with_the_step_named(text: str, shown: str) -> None:
    v = check_steps(text)
    assert not v.ok and v.reason == "arithmetic"
    assert v.detail == shown


@pytest.mark.parametrize("text", [
    "x = 5", "Total = 15", "3 apples + 4 apples = 8 apples", "M + 4 + 2 = 8 hours", "2(50+100) = 400",
    "100 = 5A, so 100/5 = 5A/5", "a == b", "if x <= 3 then", "$600/weekday * 5 weekdays = $3000",
])
def test_what_cannot_be_recomputed_is_skipped_not_rejected(text: str) -> None:
    assert check_steps(text).ok


def test_final_answer_must_follow_from_the_last_step() -> None:
    good = "She has 3 + 4 = 7 apples, then 7 * 2 = 14.\n#### 14"
    assert check_steps(good, Fraction(14)).ok
    bad = check_steps("She has 3 + 4 = 7 apples, then 7 * 2 = 14.\n#### 15", Fraction(15))
    assert not bad.ok and bad.reason == "final-unsupported"
    # a last statement with units the checker cannot recompute still states the result
    assert check_steps("23 meters - 13 meters = 10 meters.\n#### 10", Fraction(10)).ok
    assert check_steps("No arithmetic here.\n#### 4", Fraction(4)).ok


def test_evaluate_and_calculator() -> None:
    assert evaluate("48 / 2") == 24
    assert evaluate("(3 + 4) * 2") == 14
    assert evaluate("$1,200 x 2") == 2400
    assert evaluate("hello") is None
    text = "So 48 / 2 = 25 clips. Then 25 + 48 = 73."
    cut, value = first_wrong_result(text)
    assert text[:cut] + " " + value == "So 48 / 2 = 24"
    assert first_wrong_result("2 * 3 + 4 = 6 + 4 = 11") == (19, "10")
    assert first_wrong_result("10 / 3 = 3.4", 0) == (8, "3.33")
    assert first_wrong_result("So 48 / 2 = 24 clips.") is None
    assert first_wrong_result("So 48 / 2 = 25 clips.", start=20) is None  # already checked


def test_supported_prefix_stops_at_the_first_step_the_reference_does_not_reach():
    q = "Natalia sold clips to 48 friends in April and half as many in May. How many in all?"
    ref = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72"
    own = "To find the total, we add April and May. In May she sold 48 / 2 = 24 clips. So 48 + 24 = 80 in all."
    assert supported_prefix(own, q, ref) == own[: own.index(" So 48")]
    assert supported_prefix("She sold 17 clips in May.", q, ref) == ""  # 17 appears nowhere
    assert supported_prefix("Step 1: add them.", q, ref) == "Step 1: add them."  # small list numbers are fine


def test_hostile_text_is_bounded() -> None:
    for text in ["9" * 1_000_000 + " + 1 = 2", "1 + " * 200_000 + "1 = 3", "(" * 100_000 + "1 = 1",
                 "= " * 500_000, "1 = " * 300_000]:
        t = time.perf_counter()
        check_steps(text, Fraction(1))
        first_wrong_result(text)
        supported_prefix(text, text[:1000], text[-1000:])
        assert time.perf_counter() - t < 2.0
