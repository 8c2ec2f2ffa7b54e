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

Hostile input: every built-in pattern here is linear-time (whitespace runs inside a phrase
are bounded, so a million spaces cannot make it backtrack), the choice extractor looks only at
the first and last :data:`CHOICE_SCAN_CHARS` characters, and a *user's* regex, whose cost
nobody can cap (``(a|aa)+$`` backtracks exponentially), runs in the killable watchdog process
with a limit of :data:`REGEX_TIMEOUT_S` seconds (reason "verifier-error" when it overruns).
"""

from __future__ import annotations

import re
from typing import Any

from sdft.errors import ConfigError
from sdft.verify.base import PASS, VERIFIER_ERROR, Verdict, clip
from sdft.verify.watchdog import CheckFailed, CheckTimeout, run_bounded

_WS_RE = re.compile(r"\s+")

#: Seconds a user's pattern may take on one candidate and its reference together.
REGEX_TIMEOUT_S = 1.0
#: The choice extractor reads only this many leading and trailing characters.
CHOICE_SCAN_CHARS = 20_000


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
    return Verdict(False, "wrong-answer", f"got {clip(repr(got[:80]))}, expected {clip(repr(expected[:80]))}")


class ExactVerifier:
    """Whole-answer equality."""

    name = "exact"
    pure = True  # verify() may run it in the killable watchdog process

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


def _match_value(pattern: re.Pattern[str], text: str) -> tuple[bool, str | None]:
    """(whether ``pattern`` matches, the last match's stripped group 1 or whole match)."""
    match = _last_match(pattern, text)
    if match is None:
        return False, None
    value = match.group(1) if pattern.groups else match.group(0)
    return True, value.strip() if value is not None else None


def _regex_verdict(candidate: str, reference: str, pattern: re.Pattern[str]) -> Verdict:
    """The regex check proper (runs in the watchdog process)."""
    matched, got = _match_value(pattern, candidate)
    if not matched:
        return Verdict(False, "no-match", f"the candidate does not match /{clip(pattern.pattern, 80)}/")
    if not pattern.groups:
        return PASS
    ref_matched, expected = _match_value(pattern, reference)
    if not ref_matched or expected is None:
        return Verdict(False, "bad-reference", f"the reference does not match /{clip(pattern.pattern, 80)}/")
    if got == expected:
        return PASS
    return Verdict(False, "wrong-answer", f"got {clip(repr(got))}, expected {clip(repr(expected))}")


def extract_regex(text: str, pattern: re.Pattern[str]) -> str | None:
    """Return group 1 (or the whole match when the pattern has no group) of the last match.

    Args:
        text: the text to search.
        pattern: a compiled pattern.

    Returns:
        The stripped matched text (None when there is no match, the group did not take
        part, or the pattern took longer than :data:`REGEX_TIMEOUT_S` seconds).
    """
    try:
        return run_bounded(_match_value, (pattern, text), timeout_s=REGEX_TIMEOUT_S)[1]
    except (CheckTimeout, CheckFailed):
        return None


def is_regex_match(candidate: str, reference: str, pattern: re.Pattern[str]) -> Verdict:
    """Check ``candidate`` against ``pattern`` (and the reference's group 1 when there is a group).

    Args:
        candidate: the rewritten answer.
        reference: the reference answer.
        pattern: a compiled pattern.

    Returns:
        PASS, or a verdict with reason "no-match" (the candidate does not match),
        "bad-reference" (the pattern has a group but the reference does not match),
        "wrong-answer" (group 1 differs) or "verifier-error" (the pattern took longer than
        :data:`REGEX_TIMEOUT_S` seconds: catastrophic backtracking).
    """
    try:
        return run_bounded(_regex_verdict, (candidate, reference, pattern), timeout_s=REGEX_TIMEOUT_S)
    except CheckTimeout:
        return Verdict(False, VERIFIER_ERROR, f"the pattern /{clip(pattern.pattern, 80)}/ took longer than "
                                              f"{REGEX_TIMEOUT_S:g} s on this text (catastrophic backtracking?)")
    except CheckFailed as exc:
        return Verdict(False, VERIFIER_ERROR, clip(str(exc), 240))


class RegexVerifier:
    """Pattern match, optionally comparing group 1 with the reference's."""

    name = "regex"
    pure = True  # verify() may run it in the killable watchdog process

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
# Whitespace runs are bounded ({0,8}): with unbounded runs next to each other, a million
# spaces after "answer" made this backtrack for minutes.
_CHOICE_PHRASE_RE = re.compile(
    rf"(?i:\b(?:answer|option|choice)\b)(?:\s{{1,8}}(?i:is|would\s{{1,8}}be|should\s{{1,8}}be))?"
    rf"\s{{0,8}}(?::\s{{0,8}})?(?i:(?:option|choice)\s{{1,8}})?"
    rf"[(\[]?([{_LETTERS}])(?![\w'])[)\]]?(?P<after>\s{{1,8}}[a-z]{{1,20}})?"
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
    if len(text) > 2 * CHOICE_SCAN_CHARS:  # the choice is stated at the start or the end
        text = f"{text[:CHOICE_SCAN_CHARS]}\n{text[-CHOICE_SCAN_CHARS:]}"
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
    pure = True  # verify() may run it in the killable watchdog process

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
    pure = True  # verify() may run it in the killable watchdog process

    def extract_answer(self, text: str) -> str | None:
        """Return the stripped text, or None when it is empty."""
        return text.strip() or None

    def check(self, candidate: str, reference: str, row: dict[str, Any]) -> Verdict:
        """Always PASS."""
        return PASS
