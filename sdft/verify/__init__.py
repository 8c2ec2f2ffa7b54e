"""Verifiers: decide whether a rewritten answer is still correct.

Entry points:

* :func:`get_verifier` builds a task verifier by name (see :data:`VERIFIERS`);
* :func:`guard` runs the task-independent checks every candidate must pass;
* :func:`verify` runs the guard, then the task verifier.

Every verdict carries a stable kebab-case ``reason`` token that manifests count:

=============  =====================================================================
guard          "empty", "truncated", "meta-talk", "refusal"
math           "wrong-answer", "no-answer", "bad-reference"
tool-call      "extra-call", "missing-call", "wrong-function", "wrong-arguments",
               "no-call", "bad-reference"
code           "tests-failed", "timeout", "no-code", "no-tests"
exact          "wrong-answer"
regex          "no-match", "wrong-answer", "bad-reference"
choice         "wrong-answer", "no-answer", "bad-reference"
none           (always "ok")
=============  =====================================================================
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

from sdft.errors import ConfigError
from sdft.refusal import find_refusal_marker, is_refusal
from sdft.verify.base import PASS, Verdict, Verifier
from sdft.verify.code import CodeVerifier
from sdft.verify.math import MathVerifier
from sdft.verify.simple import ChoiceVerifier, ExactVerifier, NoneVerifier, RegexVerifier
from sdft.verify.toolcall import ToolCallVerifier

__all__ = [
    "META_TALK_PATTERNS",
    "PASS",
    "VERIFIERS",
    "Verdict",
    "Verifier",
    "find_meta_talk",
    "get_verifier",
    "guard",
    "verify",
]

#: Verifier name -> factory; the factory's keyword arguments are the verifier's options.
VERIFIERS: dict[str, Callable[..., Verifier]] = {
    "math": MathVerifier,
    "tool-call": ToolCallVerifier,
    "code": CodeVerifier,
    "exact": ExactVerifier,
    "regex": RegexVerifier,
    "choice": ChoiceVerifier,
    "none": NoneVerifier,
}

# Phrases that show the model talking about the rewriting task instead of answering. Each is
# chosen so that it (almost) never occurs in a genuine answer; broader spellings such as
# "the reference" (reference frame, reference manual), "your response" (emails: "thank you for
# your response") or "as instructed" mid-text (medicine "taken as instructed") are left out or
# narrowed down.
META_TALK_PATTERNS: tuple[str, ...] = (
    r"\breference (?:answer|solution|response)s?\b",
    r"\bthe reference (?:says|states|shows|gives|provides|uses|mentions)\b",
    r"\b(?:the|this) (?:original|given|provided) (?:answer|response|solution)\b(?!\s+(?:choices?|options?))",
    r"\brewritten (?:answer|version|response|solution|text)\b",
    r"\bhere(?: is|'s) (?:the|my|a|your) (?:rewrite|rewritten|rephrased|paraphrased|reworded)\b",
    r"\bI(?:'ve| have) (?:re-?written|rephrased|paraphrased|reworded)\b",
    r"\bin my own words\b",
    r"\bhere(?: is|'s) your (?:response|answer)\b",
    r"^\W*as (?:instructed|requested)\b",
)
_META_TALK_RE = re.compile("|".join(f"(?:{p})" for p in META_TALK_PATTERNS), re.IGNORECASE)
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'"})


def find_meta_talk(text: str) -> str | None:
    """Return the first phrase in ``text`` that talks about the rewriting task, or None.

    Args:
        text: a candidate answer.

    Returns:
        The matched phrase as it appears in ``text`` (apostrophes normalised), or None.
    """
    match = _META_TALK_RE.search(text.translate(_APOSTROPHES))
    return match.group(0) if match else None


def get_verifier(name: str, **options: Any) -> Verifier:
    """Build the verifier called ``name``.

    Args:
        name: one of :data:`VERIFIERS` (``_`` is accepted for ``-``, case is ignored).
        **options: verifier options, e.g. ``pattern`` for regex; ``timeout_s``, ``memory_mb``
            and ``tests_field`` for code; ``rel_tol`` for math; ``normalize`` for exact.

    Returns:
        The verifier.

    Raises:
        ConfigError: unknown name, unknown option, or an invalid option value.
    """
    key = str(name).strip().lower().replace("_", "-")
    factory = VERIFIERS.get(key)
    if factory is None:
        raise ConfigError(f"unknown verifier {name!r}; valid verifiers: {', '.join(VERIFIERS)}")
    accepted = [p for p in inspect.signature(factory).parameters if p != "self"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        valid = ", ".join(accepted) if accepted else "none"
        raise ConfigError(
            f"verifier {key!r} does not take option(s) {', '.join(unknown)}; valid options: {valid}"
        )
    try:
        return factory(**options)
    except (TypeError, ValueError) as exc:  # e.g. timeout_s="abc" from a config file
        raise ConfigError(f"verifier {key!r}: invalid option value: {exc}") from exc


def guard(candidate: str, finish_reason: str | None, reference: str) -> Verdict:
    """Task-independent checks every candidate must pass, in this order.

    1. empty or whitespace-only output -> "empty";
    2. ``finish_reason == "length"`` (generation hit the token limit) -> "truncated";
    3. talk about the rewriting task itself (:data:`META_TALK_PATTERNS`) -> "meta-talk";
    4. a refusal (:func:`sdft.refusal.is_refusal`) when the reference is not one -> "refusal".

    Args:
        candidate: the model's rewrite.
        finish_reason: the engine's finish reason ("stop", "length", ...).
        reference: the reference answer the rewrite replaces.

    Returns:
        PASS, or the first failed check's verdict.
    """
    if not candidate or not candidate.strip():
        return Verdict(False, "empty", "the output is empty")
    if finish_reason == "length":
        return Verdict(False, "truncated", "generation stopped at the token limit")
    phrase = find_meta_talk(candidate)
    if phrase is not None:
        return Verdict(False, "meta-talk", f"talks about the task: {phrase!r}")
    if is_refusal(candidate) and not is_refusal(reference):
        return Verdict(False, "refusal", f"refusal marker {find_refusal_marker(candidate)!r}")
    return PASS


def verify(
    candidate: str, finish_reason: str | None, reference: str, row: dict[str, Any], verifier: Verifier
) -> Verdict:
    """Run :func:`guard`, then ``verifier.check``.

    Args:
        candidate: the model's rewrite.
        finish_reason: the engine's finish reason.
        reference: the reference answer.
        row: the dataset row (extra fields such as tests).
        verifier: the task verifier.

    Returns:
        The guard's failure, or the verifier's verdict.
    """
    verdict = guard(candidate, finish_reason, reference)
    if not verdict.ok:
        return verdict
    return verifier.check(candidate, reference, row)
