"""Simple verifiers: exact match, regular expression, multiple choice, and none.

* ``exact``: the whole answer must equal the reference (whitespace and case normalised by
  default).
* ``regex``: the candidate must match a pattern; when the pattern has a group, the candidate's
  group 1 must equal the reference's group 1. The *last* match in each text is used, since
  final answers come last.
* ``choice``: multiple-choice letters A-J, extracted from "Answer: C", "the answer is (C)",
  "(C)" / "C." / "C)" at the start, or a lone "C". Only upper-case letters count, so the
  article "a" is never read as option A.
* ``none``: checks nothing beyond the always-on guards (empty, truncated, meta-talk,
  refusal); for open-ended data that has no checkable answer.
"""

from __future__ import annotations

import re
from typing import Any

from sdft.errors import ConfigError
from sdft.verify.base import PASS, Verdict

_WS_RE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Collapse whitespace runs to one space, strip, and case-fold."""
    return _WS_RE.sub(" ", text).strip().casefold()


# ------------------------------------------------------------------------------- exact


def is_exact_match(candidate: str, reference: str, *, normalize: bool = True) -> Verdict:
    """Check that ``candidate`` equals ``reference``.

    Args:
        candidate: the rewritten answer.
        reference: the reference answer.
        normalize: compare after :func:`normalize_text` (otherwise only surrounding
            whitespace is ignored).

    Returns:
        PASS or a verdict with reason "wrong-answer".
    """
    got = normalize_text(candidate) if normalize else candidate.strip()
    expected = normalize_text(reference) if normalize else reference.strip()
    if got == expected:
        return PASS
    return Verdict(False, "wrong-answer", f"got {got[:80]!r}, expected {expected[:80]!r}")


class ExactVerifier:
    """Whole-answer equality."""

    name = "exact"

    def __init__(self, normalize: bool = True):
        """Create the verifier.

        Args:
            normalize: compare whitespace- and case-normalised text.
        """
        self.normalize = bool(normalize)

    def extract_answer(self, text: str) -> str | None:
        """Return the (normalised) text, or None when it is empty."""
        answer = normalize_text(text) if self.normalize else text.strip()
        return answer or None

    def check(self, candidate: str, reference: str, row: dict[str, Any]) -> Verdict:
        """Compare the whole texts; ``row`` is unused."""
        return is_exact_match(candidate, reference, normalize=self.normalize)


# ------------------------------------------------------------------------------- regex


def _last_match(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    match = None
    for match in pattern.finditer(text):  # noqa: B007 - we want the last one
        pass
    return match


def extract_regex(text: str, pattern: re.Pattern[str]) -> str | None:
    """Return group 1 (or the whole match when the pattern has no group) of the last match.

    Args:
        text: the text to search.
        pattern: a compiled pattern.

    Returns:
        The stripped matched text (None when there is no match or the group did not take part).
    """
    match = _last_match(pattern, text)
    if match is None:
        return None
    value = match.group(1) if pattern.groups else match.group(0)
    return value.strip() if value is not None else None


def is_regex_match(candidate: str, reference: str, pattern: re.Pattern[str]) -> Verdict:
    """Check ``candidate`` against ``pattern`` (and the reference's group 1 when there is a group).

    Args:
        candidate: the rewritten answer.
        reference: the reference answer.
        pattern: a compiled pattern.

    Returns:
        PASS, or a verdict with reason "no-match" (the candidate does not match),
        "bad-reference" (the pattern has a group but the reference does not match) or
        "wrong-answer" (group 1 differs).
    """
    if _last_match(pattern, candidate) is None:
        return Verdict(False, "no-match", f"the candidate does not match /{pattern.pattern}/")
    if not pattern.groups:
        return PASS
    expected = extract_regex(reference, pattern)
    if expected is None:
        return Verdict(False, "bad-reference", f"the reference does not match /{pattern.pattern}/")
    got = extract_regex(candidate, pattern)
    if got == expected:
        return PASS
    return Verdict(False, "wrong-answer", f"got {got!r}, expected {expected!r}")


class RegexVerifier:
    """Pattern match, optionally comparing group 1 with the reference's."""

    name = "regex"

    def __init__(self, pattern: str | None = None, ignore_case: bool = False):
        """Create the verifier.

        Args:
            pattern: the regular expression (required). It is searched with ``re.MULTILINE``
                (``^``/``$`` match at line ends); add ``(?s)`` for ``.`` to cross lines.
            ignore_case: match case-insensitively (group comparison stays exact).

        Raises:
            ConfigError: the pattern is missing or invalid.
        """
        if not pattern:
            raise ConfigError("the 'regex' verifier needs the option 'pattern'")
        flags = re.MULTILINE | (re.IGNORECASE if ignore_case else 0)
        try:
            self.pattern = re.compile(pattern, flags)
        except re.error as exc:
            raise ConfigError(f"regex verifier: invalid pattern {pattern!r}: {exc}") from exc

    def extract_answer(self, text: str) -> str | None:
        """Return the last match's group 1 (or whole match), or None."""
        return extract_regex(text, self.pattern)

    def check(self, candidate: str, reference: str, row: dict[str, Any]) -> Verdict:
        """Match the pattern; ``row`` is unused."""
        return is_regex_match(candidate, reference, self.pattern)


# ------------------------------------------------------------------------------ choice

_LETTERS = "A-J"
# "Answer: C", "the correct answer is (C)", "final answer: **C**", "the answer is option C".
_CHOICE_PHRASE_RE = re.compile(
    rf"(?i:\b(?:answer|option|choice)\b)(?:\s+(?i:is|would\s+be|should\s+be))?\s*:?\s*"
    rf"(?i:option\s+|choice\s+)?[(\[]?([{_LETTERS}])(?![\w'])[)\]]?(?P<after>\s+[a-z]+)?"
)
# "the answer is A ..." / "answer: I think ...": "A" and "I" followed by a lower-case word are
# usually the article or the pronoun, unless the word explains the choice.
_EXPLAINING_WORDS = {"because", "since", "as", "is", "was", "and", "or"}
# "(C)", "[C]", "C.", "C)", "C:" at the very start, or a first line that is just "C".
_CHOICE_START_RE = re.compile(rf"^\s*(?:[(\[]([{_LETTERS}])[)\]]|([{_LETTERS}])(?:[.):]|[ \t]*(?:\n|$)))")
_CHOICE_PAREN_RE = re.compile(rf"\(([{_LETTERS}])\)")


def extract_choice(text: str) -> str | None:
    """Return the chosen option letter (A-J) of a multiple-choice answer, or None.

    Args:
        text: a model answer or reference.

    Returns:
        The upper-case letter. Order of preference: the last "answer is X" phrase, a letter
        at the very start, then a parenthesised "(X)" when only one distinct letter appears
        in parentheses (a list of all options is ambiguous and yields None).
    """
    if not text or not text.strip():
        return None
    text = text.replace("*", "")  # markdown bold: "**C**"
    for match in reversed(list(_CHOICE_PHRASE_RE.finditer(text))):
        after = (match.group("after") or "").strip()
        if match.group(1) in "AI" and after and after not in _EXPLAINING_WORDS:
            continue
        return match.group(1)
    match = _CHOICE_START_RE.match(text)
    if match:
        return match.group(1) or match.group(2)
    letters = set(_CHOICE_PAREN_RE.findall(text))
    if len(letters) == 1:
        return letters.pop()
    return None


def is_choice_correct(candidate: str, reference: str) -> Verdict:
    """Check that ``candidate`` picks the same option letter as ``reference``.

    Args:
        candidate: the rewritten answer.
        reference: the reference answer ("C", "(C)", "The answer is C", ...).

    Returns:
        A verdict with reason "ok", "wrong-answer", "no-answer" or "bad-reference".
    """
    expected = extract_choice(reference)
    if expected is None:
        return Verdict(False, "bad-reference", "no option letter found in the reference")
    got = extract_choice(candidate)
    if got is None:
        return Verdict(False, "no-answer", "no option letter found in the candidate")
    if got == expected:
        return PASS
    return Verdict(False, "wrong-answer", f"got {got}, expected {expected}")


class ChoiceVerifier:
    """Multiple choice (letters A-J)."""

    name = "choice"

    def extract_answer(self, text: str) -> str | None:
        """Return the option letter (see :func:`extract_choice`)."""
        return extract_choice(text)

    def check(self, candidate: str, reference: str, row: dict[str, Any]) -> Verdict:
        """Compare option letters; ``row`` is unused."""
        return is_choice_correct(candidate, reference)


# -------------------------------------------------------------------------------- none


class NoneVerifier:
    """Accepts every candidate: for open-ended data. Checks nothing beyond the guards."""

    name = "none"

    def extract_answer(self, text: str) -> str | None:
        """Return the stripped text, or None when it is empty."""
        return text.strip() or None

    def check(self, candidate: str, reference: str, row: dict[str, Any]) -> Verdict:
        """Always PASS."""
        return PASS
