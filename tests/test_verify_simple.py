"""exact, regex, choice and none verifiers."""

from __future__ import annotations

import pytest

from sdft.errors import ConfigError
from sdft.verify.simple import (
    ChoiceVerifier,
    ExactVerifier,
    NoneVerifier,
    RegexVerifier,
    extract_choice,
    is_choice_correct,
    is_exact_match,
)


@pytest.mark.parametrize(
    ("candidate", "reference", "normalize", "reason"),
    [
        ("Paris", "Paris", True, "ok"),
        ("  paris\n", "Paris", True, "ok"),
        ("New   York\tCity", "new york city", True, "ok"),
        ("Paris.", "Paris", True, "wrong-answer"),  # punctuation is significant
        ("London", "Paris", True, "wrong-answer"),
        ("paris", "Paris", False, "wrong-answer"),
        (" Paris ", "Paris", False, "ok"),  # surrounding whitespace is always ignored
    ],
)
def test_exact(candidate: str, reference: str, normalize: bool, reason: str) -> None:
    verdict = is_exact_match(candidate, reference, normalize=normalize)
    assert verdict.reason == reason
    assert ExactVerifier(normalize=normalize).check(candidate, reference, {}) == verdict


@pytest.mark.parametrize(
    ("pattern", "candidate", "reference", "reason"),
    [
        (r"\d+", "It is 42.", "whatever", "ok"),  # no group: matching is enough
        (r"\d+", "It is forty-two.", "42", "no-match"),
        (r"Answer: (\w+)", "Thinking...\nAnswer: Paris", "Answer: Paris", "ok"),
        (r"Answer: (\w+)", "Answer: Rome\nAnswer: Paris", "Answer: Paris", "ok"),  # the last match counts
        (r"Answer: (\w+)", "Answer: Paris\nAnswer: Rome", "Answer: Paris", "wrong-answer"),
        (r"Answer: (\w+)", "Answer: Paris", "Paris", "bad-reference"),
        (r"Answer: (\w+)", "I think Paris", "Answer: Paris", "no-match"),
        (r"^FINAL: (.+)$", "work\nFINAL: 7 \nmore", "FINAL: 7", "ok"),  # MULTILINE, group stripped
    ],
)
def test_regex(pattern: str, candidate: str, reference: str, reason: str) -> None:
    verdict = RegexVerifier(pattern=pattern).check(candidate, reference, {})
    assert verdict.reason == reason, verdict.detail
    assert verdict.ok is (reason == "ok")


def test_regex_ignore_case() -> None:
    verifier = RegexVerifier(pattern=r"answer: (\w+)", ignore_case=True)
    assert verifier.check("ANSWER: Paris", "answer: Paris", {}).ok
    assert verifier.extract_answer("Answer: Rome") == "Rome"


@pytest.mark.parametrize("pattern", [None, "", "(unclosed"])
def test_regex_bad_pattern(pattern: str | None) -> None:
    with pytest.raises(ConfigError):
        RegexVerifier(pattern=pattern)


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("Answer: C", "C"),
        ("The answer is (B).", "B"),
        ("The correct answer is **D**", "D"),
        ("Option H is right.", "H"),
        ("The answer is A because the others are wrong.", "A"),
        ("Let me think. (A) is wrong, so the answer is C.", "C"),  # the phrase beats earlier letters
        ("C", "C"),
        ("  (D) Lyon", "D"),
        ("E. Berlin", "E"),
        ("B)\nBecause ...", "B"),
        ("J", "J"),
        ("It must be option (G), the others fail.", "G"),
        # not answers
        ("A good question. Let me think.", None),  # the article "A"
        ("answer: A mixture of both", None),
        ("The answer is I think unclear", None),  # the pronoun "I"
        ("answer: c", None),  # lower-case letters do not count
        ("K", None),  # beyond J
        ("Both (A) and (B) look plausible.", None),  # ambiguous
        ("", None),
    ],
)
def test_extract_choice(text: str, letter: str | None) -> None:
    assert extract_choice(text) == letter


@pytest.mark.parametrize(
    ("candidate", "reference", "reason"),
    [
        ("The answer is (C).", "C", "ok"),
        ("Answer: C", "(C)", "ok"),
        ("Answer: B", "C", "wrong-answer"),
        ("I am not sure.", "C", "no-answer"),
        ("Answer: C", "unknown", "bad-reference"),
    ],
)
def test_choice(candidate: str, reference: str, reason: str) -> None:
    verdict = is_choice_correct(candidate, reference)
    assert verdict.reason == reason
    assert ChoiceVerifier().check(candidate, reference, {}) == verdict


@pytest.mark.parametrize("candidate", ["anything", "totally different from the reference", "42"])
def test_none_always_passes(candidate: str) -> None:
    verdict = NoneVerifier().check(candidate, "reference", {})
    assert verdict.ok and verdict.reason == "ok"
