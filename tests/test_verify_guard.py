"""The always-on guard, verify() and the verifier registry."""

from __future__ import annotations

from typing import Any

import pytest

from sdft.errors import ConfigError
from sdft.verify import META_TALK_PATTERNS, VERIFIERS, find_meta_talk, get_verifier, guard, verify
from sdft.verify.base import PASS, Verdict

REF = "Tom has 3 + 4 = 7 apples.\n#### 7"


@pytest.mark.parametrize(
    ("candidate", "finish_reason", "reference", "reason"),
    [
        ("Tom has 7 apples.\n#### 7", "stop", REF, "ok"),
        ("", "stop", REF, "empty"),
        ("  \n\t", "stop", REF, "empty"),
        ("", "length", REF, "empty"),  # empty wins over truncated
        ("Tom has 3 + 4 =", "length", REF, "truncated"),
        ("As the reference answer says, 7.", "length", REF, "truncated"),  # truncated wins over meta-talk
        ("As the reference answer says, Tom has 7 apples.\n#### 7", "stop", REF, "meta-talk"),
        ("Here is the rewritten answer: Tom has 7 apples.", "stop", REF, "meta-talk"),
        ("Here\u2019s my rewrite:\nTom has 7 apples.", "stop", REF, "meta-talk"),
        ("In my own words: Tom ends up with 7 apples.", "stop", REF, "meta-talk"),
        ("As instructed, here is the solution. #### 7", "stop", REF, "meta-talk"),
        ("I have rephrased the solution. #### 7", "stop", REF, "meta-talk"),
        ("I'm sorry, but I can't help with that. Reference answer: 7", "stop", REF, "meta-talk"),  # order
        ("I'm sorry, but I can't help with that.", "stop", REF, "refusal"),
        ("I cannot assist with that request.", None, REF, "refusal"),
        # a refusal is fine when the reference refuses too (safety data)
        ("I can't help with making weapons.", "stop", "I'm sorry, I cannot help with that.", "ok"),
    ],
)
def test_guard(candidate: str, finish_reason: str | None, reference: str, reason: str) -> None:
    verdict = guard(candidate, finish_reason, reference)
    assert verdict.reason == reason, verdict.detail
    assert verdict.ok is (reason == "ok")


@pytest.mark.parametrize(
    "text",
    [
        # phrases close to meta-talk that genuine answers use
        "In physics, the reference frame matters: velocities are measured relative to it.",
        "Thank you for your response. I will send the report on Monday.",
        "Take the medicine as instructed by your doctor.",
        "Pass the list by reference so the function can modify it.",
        "Check each of the given answer choices against the equation.",
        "Here is the answer: 7.",
    ],
)
def test_meta_talk_false_positives_are_avoided(text: str) -> None:
    assert find_meta_talk(text) is None
    assert guard(text, "stop", "ref").ok


# One phrase each pattern exists to catch (same order as META_TALK_PATTERNS).
META_TALK_EXAMPLES = (
    "Compared with the reference answer, this is shorter.",
    "As the reference says, add the two numbers.",
    "The original answer forgot the units.",
    "The rewritten version follows.",
    "Here's a paraphrased solution.",
    "I've reworded it below.",
    "Put in my own words: 7.",
    "Here is your answer: 7.",
    "As requested, the total is 7.",
)


def test_every_meta_talk_pattern_catches_its_phrase() -> None:
    import re

    assert len(META_TALK_EXAMPLES) == len(META_TALK_PATTERNS)
    for pattern, example in zip(META_TALK_PATTERNS, META_TALK_EXAMPLES):
        assert re.search(pattern, example, re.IGNORECASE), (pattern, example)
        assert find_meta_talk(example) is not None
        assert guard(example, "stop", REF).reason == "meta-talk"


class _Recorder:
    """A verifier that records whether it was called."""

    name = "recorder"

    def __init__(self, verdict: Verdict):
        self.verdict = verdict
        self.calls = 0

    def check(self, candidate: str, reference: str, row: dict[str, Any]) -> Verdict:
        self.calls += 1
        return self.verdict


def test_verify_runs_guard_first() -> None:
    recorder = _Recorder(PASS)
    assert verify("", "stop", REF, {}, recorder).reason == "empty"
    assert recorder.calls == 0
    wrong = Verdict(False, "wrong-answer", "got 8, expected 7")
    recorder = _Recorder(wrong)
    assert verify("#### 8", "stop", REF, {}, recorder) == wrong
    assert recorder.calls == 1


def test_verify_with_real_verifiers() -> None:
    math = get_verifier("math")
    assert verify("Tom has 7 apples.\n#### 7", "stop", REF, {}, math).ok
    assert verify("Tom has 8 apples.\n#### 8", "stop", REF, {}, math).reason == "wrong-answer"


def test_registry_names() -> None:
    assert set(VERIFIERS) == {"math", "tool-call", "code", "exact", "regex", "choice", "none"}
    for name in VERIFIERS:
        options = {"pattern": r"\d+"} if name == "regex" else {}
        assert get_verifier(name, **options).name == name


@pytest.mark.parametrize(
    ("name", "options", "built"),
    [
        ("regex", {"pattern": r"(\d+)"}, "regex"),
        ("code", {"timeout_s": 2, "memory_mb": 256, "tests_field": "tests"}, "code"),
        ("math", {"rel_tol": 1e-4}, "math"),
        ("exact", {"normalize": False}, "exact"),
        ("tool_call", {}, "tool-call"),  # "_" is accepted for "-"
        ("MATH", {}, "math"),
    ],
)
def test_get_verifier_options(name: str, options: dict[str, Any], built: str) -> None:
    verifier = get_verifier(name, **options)
    assert verifier.name == built  # an alias builds the verifier it names, not just any verifier
    for key, value in options.items():
        got = getattr(verifier, key)
        assert (got.pattern if key == "pattern" else got) == value


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("maths", {}, "valid verifiers: math, tool-call, code, exact, regex, choice, none"),
        ("math", {"pattern": "x"}, "does not take option(s) pattern"),
        ("none", {"x": 1}, "valid options: none"),
        ("regex", {}, "needs the option 'pattern'"),
        ("code", {"timeout_s": "abc"}, "invalid option value"),
        ("code", {"timeout_s": 0}, "timeout_s must be > 0"),
    ],
)
def test_get_verifier_errors(name: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        get_verifier(name, **options)
