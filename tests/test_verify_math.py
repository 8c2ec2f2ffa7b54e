"""Math answers: extraction priority, number normalisation, and the adversarial cases."""

from __future__ import annotations

from fractions import Fraction

import pytest

from sdft.verify.math import MathVerifier, answers_equal, extract_answer, is_correct, parse_number

GSM_REF = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nShe sold 48+24 = <<48+24=72>>72 clips.\n#### 72"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GSM_REF, "72"),
        ("blah 5\n#### 1,000", "1,000"),
        ("#### 7\nmore text 9", "7"),  # "####" wins over the last number
        ("So we get \\boxed{\\frac{3}{4}} in the end.", "\\frac{3}{4}"),
        ("\\boxed{1} first, then \\boxed{2}", "2"),  # the last box
        ("The final answer is $\\boxed{\\{1, 2\\}}$.", "\\{1, 2\\}"),
        ("\\boxed{3} and a truncated \\boxed{4", "3"),  # unbalanced box is skipped
        ("Step 1: 3 + 4 = 7. The answer is 7.", "7"),
        ("The answer is: **$18.00**.", "$18.00"),
        ("Final answer: -3", "-3"),
        ("Answer: x = 5", "x = 5"),
        ("The answer is not obvious. After simplifying we get 12.", "12"),  # prose is skipped
        ("\\frac{1}{2}", "\\frac{1}{2}"),  # a bare answer is taken whole
        ("42", "42"),
        ("He had 5 apples, ate 2, so 3 remain.", "3"),  # last number
        ("It fell by \u22124 degrees overall", "-4"),  # unicode minus
        ("The temperature is -4 now", "-4"),
        ("On 2024-01-05 she paid 5 dollars for it", "5"),
        ("", None),
        ("no numbers at all in this sentence", None),
        ("#### \n", None),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ("1,000", Fraction(1000)),
        ("$1,000.", Fraction(1000)),
        ("50%", Fraction(50)),
        ("5.0", Fraction(5)),
        ("3/4", Fraction(3, 4)),
        ("-\\frac{3}{4}", Fraction(-3, 4)),
        ("\\dfrac{1}{3}", Fraction(1, 3)),
        ("-2.5", Fraction(-5, 2)),
        ("x = 5", Fraction(5)),
        ("42 apples", Fraction(42)),
        ("18 \\text{ dollars}", Fraction(18)),
        ("1e3", Fraction(1000)),
        ("5 and x", None),  # two quantities
        ("2x", None),
        ("x^2+1", None),
        ("3/0", None),
        ("yes", None),
    ],
)
def test_parse_number(answer: str, value: Fraction | None) -> None:
    assert parse_number(answer) == value


@pytest.mark.parametrize(
    ("candidate", "reference", "reason"),
    [
        # correct, in many spellings
        ("She sold 72 clips in total.\n#### 72", GSM_REF, "ok"),
        ("So the total is \\boxed{72}.", GSM_REF, "ok"),
        ("The answer is 72.", GSM_REF, "ok"),
        ("The answer is 72.0", GSM_REF, "ok"),
        ("Total: 1000 dollars. #### $1,000", "#### 1000", "ok"),
        ("The answer is 0.75", "#### 3/4", "ok"),
        ("\\boxed{\\frac{3}{4}}", "#### 0.75", "ok"),
        ("The answer is 25%.", "#### 25", "ok"),
        ("The loss is -7.", "#### -7", "ok"),
        ("The answer is 0.3333333333", "#### 1/3", "ok"),  # within rel_tol 1e-6
        ("The answer is 0.333", "#### 1/3", "wrong-answer"),  # beyond it
        # the right number in the wrong place: 72 appears, but the final answer is 70
        ("She sold 48 + 24 = 72 clips, then lost 2, so she has 70.", GSM_REF, "wrong-answer"),
        ("First 72 clips.\n#### 70", GSM_REF, "wrong-answer"),
        ("The answer is 72... no wait, the answer is 71.", GSM_REF, "wrong-answer"),
        ("\\boxed{72} was my first guess; \\boxed{73} is final.", GSM_REF, "wrong-answer"),
        # nothing to extract
        ("I am not sure how to solve this.", GSM_REF, "no-answer"),
        ("She sold 72 clips.", "no answer given here, sorry", "bad-reference"),
    ],
)
def test_is_correct(candidate: str, reference: str, reason: str) -> None:
    verdict = is_correct(candidate, reference)
    assert verdict.reason == reason
    assert verdict.ok is (reason == "ok")


def test_wrong_answer_detail() -> None:
    verdict = is_correct("#### 70", GSM_REF)
    assert verdict.detail == "got 70, expected 72"


@pytest.mark.parametrize(
    ("candidate", "reference", "same"),
    [
        ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", True),
        ("x^2 + 2x + 1", "(x+1)^2", True),
        ("\\pi", "\\pi", True),
        ("2\\pi", "\\pi", False),
        ("Yes", "yes", True),
    ],
)
def test_symbolic_answers(candidate: str, reference: str, same: bool) -> None:
    # With math-verify installed this is symbolic; without it, only identical strings match,
    # so only check the cases that both paths agree on.
    from sdft._deps import is_available

    if not is_available("math_verify") and candidate.lower() != reference.lower() and same:
        pytest.skip("needs math-verify")
    assert answers_equal(candidate, reference) is same


def test_string_fallback_without_math_verify() -> None:
    assert answers_equal("\\dfrac{a}{b}", "\\frac{a}{b}", symbolic=False)
    assert not answers_equal("x+1", "1+x", symbolic=False)


def test_verifier_protocol() -> None:
    verifier = MathVerifier()
    assert verifier.name == "math"
    assert verifier.check("#### 72", GSM_REF, {}).ok
    assert verifier.extract_answer(GSM_REF) == "72"
