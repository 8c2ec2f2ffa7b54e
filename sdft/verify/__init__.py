"""Verifiers: decide whether a rewritten answer is still correct.

Entry points:

* :func:`get_verifier` builds a task verifier by name (see :data:`VERIFIERS`);
* :func:`guard` runs the task-independent checks every candidate must pass;
* :func:`verify` runs the guard, then the task verifier.

Every verdict carries a stable kebab-case ``reason`` token that manifests count:

=============  =====================================================================
guard          "context" (the prompt fills the model's context), "empty", "truncated",
               "meta-talk", "refusal"
math           "wrong-answer", "no-answer", "bad-reference"; with ``steps`` (the default):
               "arithmetic" (a wrong step), "final-unsupported" (the final answer does
               not follow from the last step), see :mod:`sdft.verify.arithmetic`
tool-call      "extra-call", "missing-call", "wrong-function", "wrong-arguments",
               "no-call", "bad-reference"
code           "tests-failed", "timeout", "no-code", "no-tests", "sandbox-error"
exact          "wrong-answer"
regex          "no-match", "wrong-answer", "bad-reference"
choice         "wrong-answer", "no-answer", "bad-reference"
none           (always "ok")
ladder         "hint-leak", "repetition", "too-long" (sdft.sources, sdft.select)
any            "verifier-error": the check raised or overran its time budget (see
               :func:`verify`); also a user's regex that backtracks past its limit
=============  =====================================================================

Every check is bounded: the parsers are linear-time with hard caps on what they look at, and
:func:`verify` runs each candidate's checks under a per-candidate time budget
(:data:`DEFAULT_BUDGET_S`, or ``SDFT_VERIFY_BUDGET_S``), in a worker process that is killed
on overrun (:mod:`sdft.verify.watchdog`). One hostile row cannot stop a run of thousands.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import time
from collections.abc import Callable
from typing import Any

from sdft.errors import ConfigError
from sdft.refusal import find_refusal_marker, is_refusal
from sdft.verify.base import PASS, VERIFIER_ERROR, Verdict, Verifier, clip, error_verdict
from sdft.verify.code import CodeVerifier
from sdft.verify.math import MathVerifier
from sdft.verify.simple import ChoiceVerifier, ExactVerifier, NoneVerifier, RegexVerifier
from sdft.verify.toolcall import ToolCallVerifier
from sdft.verify.watchdog import CheckTimeout, run_bounded

__all__ = [
    "DEFAULT_BUDGET_S",
    "META_TALK_PATTERNS",
    "PASS",
    "VERIFIERS",
    "VERIFIER_ERROR",
    "Verdict",
    "Verifier",
    "find_meta_talk",
    "get_verifier",
    "guard",
    "time_budget_s",
    "verify",
]

log = logging.getLogger(__name__)

#: Seconds one candidate's checks (guard + verifier) may take; ``SDFT_VERIFY_BUDGET_S`` overrides.
DEFAULT_BUDGET_S = 2.0

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
#: Meta-talk is searched in the first and the last this many characters ("Here is the
#: rewritten answer: ..." opens an answer, "... in my own words." closes it); the cap bounds the
#: scan on a megabyte of output, where the nine-way pattern costs about a microsecond a character.
META_TALK_SCAN_CHARS = 16_000


def find_meta_talk(text: str) -> str | None:
    """Return the first phrase in ``text`` that talks about the rewriting task, or None.

    Args:
        text: a candidate answer (its first and last :data:`META_TALK_SCAN_CHARS` characters
            are searched).

    Returns:
        The matched phrase as it appears in ``text`` (apostrophes normalised), or None.
    """
    norm = text.translate(_APOSTROPHES)
    match = _META_TALK_RE.search(norm, 0, META_TALK_SCAN_CHARS)
    if match is None and len(norm) > META_TALK_SCAN_CHARS:
        # Searching from a position keeps the text before it visible to \b and (?<!...).
        match = _META_TALK_RE.search(norm, max(META_TALK_SCAN_CHARS, len(norm) - META_TALK_SCAN_CHARS))
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
    if finish_reason == "context":
        return Verdict(False, "context", "the prompt alone fills the model's context: nothing was generated "
                                         "(shorten the prompt, or raise max_model_len)")
    if not candidate or not candidate.strip():
        return Verdict(False, "empty", "the output is empty")
    if finish_reason == "length":
        return Verdict(False, "truncated", "generation stopped at the token limit")
    phrase = find_meta_talk(candidate)
    if phrase is not None:
        return Verdict(False, "meta-talk", f"talks about the task: {clip(repr(phrase))}")
    if is_refusal(candidate) and not is_refusal(reference):
        return Verdict(False, "refusal", f"refusal marker {find_refusal_marker(candidate)!r}")
    return PASS


def time_budget_s() -> float:
    """The per-candidate time budget: ``SDFT_VERIFY_BUDGET_S`` when set and valid, else the default."""
    raw = os.environ.get("SDFT_VERIFY_BUDGET_S", "").strip()
    if raw:
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if value > 0 and value < float("inf"):
            return value
        log.warning("sdft: ignoring SDFT_VERIFY_BUDGET_S=%r (expected seconds > 0)", raw)
    return DEFAULT_BUDGET_S


def _check(candidate: str, finish_reason: str | None, reference: str, row: dict[str, Any],
           verifier: Verifier) -> Verdict:
    """The guard, then the verifier; what :func:`verify` runs under its budget."""
    verdict = guard(candidate, finish_reason, reference)
    if not verdict.ok:
        return verdict
    verdict = verifier.check(candidate, reference, row)
    if not isinstance(verdict, Verdict):
        raise TypeError(f"verifier {getattr(verifier, 'name', verifier)!r} returned {type(verdict).__name__}, "
                        f"not a Verdict")
    return verdict


def _limits_itself(verifier: Verifier) -> bool:
    """True for a verifier that enforces its own wall-clock limit (the code sandbox's ``timeout_s``)."""
    for attr in ("time_budget_s", "timeout_s"):
        value = getattr(verifier, attr, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < float("inf"):
            return True
    return False


def verify(
    candidate: str, finish_reason: str | None, reference: str, row: dict[str, Any], verifier: Verifier,
    *, budget_s: float | None = None,
) -> Verdict:
    """Run :func:`guard`, then ``verifier.check``, under a time budget; never raises.

    A pure verifier (``verifier.pure``, every built-in one except code) runs in the watchdog
    worker process, which is killed when the budget is spent. Any other runs in-process: a
    verifier that enforces its own wall-clock limit (``timeout_s``, as the code sandbox does)
    is trusted with it (its "timeout" verdict is kept, even on a loaded machine); for the rest
    an overrun is reported when the check returns.

    Args:
        candidate: the model's rewrite.
        finish_reason: the engine's finish reason.
        reference: the reference answer.
        row: the dataset row (extra fields such as tests).
        verifier: the task verifier.
        budget_s: seconds for this candidate (default :func:`time_budget_s`).

    Returns:
        The guard's failure, the verifier's verdict, or ``Verdict(False, "verifier-error",
        detail)`` when a check raised or overran the budget.

    Raises:
        ConfigError: ``budget_s`` is not a positive number.
    """
    budget = time_budget_s() if budget_s is None else budget_s
    if not isinstance(budget, (int, float)) or isinstance(budget, bool) or not 0 < budget < float("inf"):
        raise ConfigError(f"verify: budget_s must be seconds > 0, got {budget_s!r}")
    args = (candidate, finish_reason, reference, row, verifier)
    try:
        if getattr(verifier, "pure", False):
            return run_bounded(_check, args, timeout_s=budget, prepare=getattr(verifier, "prepare", None))
        start = time.monotonic()
        verdict = _check(*args)
        elapsed = time.monotonic() - start
        if elapsed > budget and not _limits_itself(verifier):
            return Verdict(False, VERIFIER_ERROR, f"the check took {elapsed:.1f} s, over its {budget:g} s budget")
        return verdict
    except CheckTimeout as exc:
        return Verdict(False, VERIFIER_ERROR, f"{exc} (budget {budget:g} s)")
    except Exception as exc:  # noqa: BLE001 - one bad row must not stop a run; the manifest counts it
        return error_verdict(exc)
