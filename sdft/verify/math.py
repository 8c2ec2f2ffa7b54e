"""Math word problems: extract the final answer and compare it with the reference's.

The final answer is taken, in priority order, from

1. the last ``#### N`` line (GSM8K style, also what GSM8K references use),
2. the last ``\\boxed{...}`` (balanced braces, so ``\\boxed{\\frac{1}{2}}`` works),
3. the last "the answer is X" / "final answer: X" / "Answer: X",
4. the whole text when it is a bare answer ("72", "\\frac{3}{4}", "x = 5"),
5. otherwise the last number in the text.

Numbers are normalised before comparing ("1,000" == "1000", "$5" == "5", "50%" == "50",
"5.0" == "5", "3/4" == "0.75" == "\\frac{3}{4}", "-3" == "−3", a trailing "." is dropped) and
compared exactly as fractions, or within a tolerance. A percentage is compared by its number:
"50%" equals "50", not "0.5". When either side is not a plain number the comparison is
symbolic with ``math_verify`` (package ``math-verify``, imported lazily) and falls back to a
normalised string comparison when that package is not installed.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import threading
from fractions import Fraction
from types import ModuleType
from typing import Any

from sdft._deps import is_available
from sdft.verify.base import PASS, Verdict

# Digits with optional thousands separators and decimals, or a leading-dot decimal.
_DIGITS = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|\.\d+"
# A number in running text: not glued to a preceding word or dot ("x2", "v1.2" are skipped),
# optionally negative, optionally a fraction "3/4".
NUMBER_RE = re.compile(rf"(?<![\w.])[-\u2212]?(?:{_DIGITS})(?:/(?:{_DIGITS}))?")
_FULL_NUMBER_RE = re.compile(rf"-?(?:{_DIGITS})(?:/(?:{_DIGITS}))?")
_LATEX_FRAC_RE = re.compile(r"(-?)\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}")
_TEXT_RE = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")
# GSM8K calculator annotations "<<48/2=24>>" repeat intermediate numbers; drop them.
_CALC_RE = re.compile(r"<<[^<>]*>>")
_HASH_RE = re.compile(r"####[ \t]*([^\n]*)")
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
# Only the phrase: the answer is the rest of its line. (Capturing the rest of the line in the
# pattern would swallow a second "the answer is" on the same line.)
_ANSWER_IS_RE = re.compile(r"(?i)\b(?:final\s+answer|answer)\s*(?:is|:|=)\s*:?[ \t]*")
# "x = 5", "5 apples", "18 dollars per hour": a single number with a variable or unit words.
_NUMBER_WITH_WORDS_RE = re.compile(
    rf"(?:[A-Za-z]\w*\s*=\s*)?(?P<num>-?(?:{_DIGITS})(?:/(?:{_DIGITS}))?)"
    rf"(?:\s+(?P<unit>[A-Za-z][A-Za-z .'/-]*))?"
)
# Unit words that actually join several quantities ("5 and x") make the answer non-numeric.
_CONJUNCTION_RE = re.compile(r"\b(?:and|or|plus|minus|times|over|divided)\b", re.IGNORECASE)
_SENTENCE_END_RE = re.compile(r"\.(?=\s|$)")
_PROSE_RE = re.compile(r"[A-Za-z]{2,}\s+[A-Za-z]{2,}")
_LATEX_CMD_RE = re.compile(r"\\[A-Za-z]+")

#: Texts up to this length on one line, without prose, are taken whole as the answer.
BARE_ANSWER_MAX_CHARS = 40


def _clean(answer: str) -> str:
    """Strip markdown, surrounding ``$...$``/``\\(...\\)`` and trailing punctuation."""
    text = answer.strip().strip("*`_ \t")
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if text.startswith(left) and text.endswith(right) and len(text) > len(left) + len(right):
            text = text[len(left) : -len(right)].strip()
    return text.rstrip(".,;:!").strip()


def _boxed_contents(text: str) -> str | None:
    """Return the contents of the last ``\\boxed{...}`` with balanced braces, or None."""
    for match in reversed(list(_BOXED_RE.finditer(text))):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    inner = _clean(text[start:i])
                    if inner:
                        return inner
                    break
        # An unbalanced (truncated) box is skipped in favour of an earlier one.
    return None


def _answer_phrase(text: str) -> str | None:
    """Return X from the last usable "the answer is X" / "final answer: X", or None."""
    for match in reversed(list(_ANSWER_IS_RE.finditer(text))):
        line_end = text.find("\n", match.end())
        rest = text[match.end() : line_end if line_end >= 0 else len(text)]
        chunk = _SENTENCE_END_RE.split(rest, maxsplit=1)[0]
        chunk = _clean(chunk)
        # "the answer is not obvious, so ..." is prose, not an answer; keep only chunks that
        # look mathematical (a digit, LaTeX, a power) or are a single token ("x", "yes").
        if chunk and (re.search(r"[\d\\^]", chunk) or len(chunk.split()) == 1):
            return chunk
    return None


def _is_bare_answer(text: str) -> bool:
    """True for a short one-line text that is an answer rather than prose ("\\frac{1}{2}")."""
    if "\n" in text or len(text) > BARE_ANSWER_MAX_CHARS or not re.search(r"[\w\\]", text):
        return False
    return not _PROSE_RE.search(_LATEX_CMD_RE.sub(" ", text))


def extract_answer(text: str) -> str | None:
    """Extract the final answer of a math solution.

    Args:
        text: a worked solution (model output or GSM8K-style reference).

    Returns:
        The answer text, cleaned of markdown, ``$`` delimiters and trailing punctuation but
        otherwise unnormalised (e.g. ``"1,000"``), or None when nothing can be extracted.
    """
    if not text or not text.strip():
        return None
    text = _CALC_RE.sub("", text)
    for match in reversed(list(_HASH_RE.finditer(text))):
        answer = _clean(match.group(1))
        if answer:
            return answer
    boxed = _boxed_contents(text)
    if boxed is not None:
        return boxed
    phrase = _answer_phrase(text)
    if phrase is not None:
        return phrase
    whole = _clean(text)
    if whole and _is_bare_answer(whole):
        return whole
    numbers = NUMBER_RE.findall(text)
    return numbers[-1].replace("\u2212", "-") if numbers else None


def _fraction(token: str) -> Fraction | None:
    """Parse "1,000", "-2.5", "3/4", "1e3" into an exact fraction, or None."""
    token = token.replace(",", "")
    try:
        if "/" in token:
            num, den = token.split("/", 1)
            return Fraction(num) / Fraction(den)
        return Fraction(token)
    except (ValueError, ZeroDivisionError):
        return None


def parse_number(answer: str) -> Fraction | None:
    """Return the numeric value of an extracted answer, or None when it is not a number.

    Accepts thousands separators, currency and percent signs, a trailing dot, LaTeX
    ``\\frac{a}{b}`` and ``\\text{...}`` units, "x = 5" and "5 apples" forms.

    Args:
        answer: an answer as returned by :func:`extract_answer`.

    Returns:
        The exact value as a :class:`fractions.Fraction`, or None.
    """
    text = _TEXT_RE.sub(r" \1", answer).replace("\u2212", "-")
    for junk in ("\\$", "$", "\\%", "%", "\\!", "\\,", "{,}", "\\left", "\\right", "^\\circ", "^{\\circ}"):
        text = text.replace(junk, "")
    text = _LATEX_FRAC_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}/{m.group(3)}", text)
    text = text.strip().rstrip(".").strip()
    text = re.sub(r"^-\s+", "-", text)
    if _FULL_NUMBER_RE.fullmatch(text):
        return _fraction(text)
    match = _NUMBER_WITH_WORDS_RE.fullmatch(text)
    if match and not (match.group("unit") and _CONJUNCTION_RE.search(match.group("unit"))):
        return _fraction(match.group("num"))
    return None


def _numbers_close(a: Fraction, b: Fraction, rel_tol: float, abs_tol: float) -> bool:
    if a == b:
        return True
    try:
        return math.isclose(float(a), float(b), rel_tol=rel_tol, abs_tol=abs_tol)
    except OverflowError:  # beyond float range: only exact equality counts
        return False


def _normalise_string(answer: str) -> str:
    text = _TEXT_RE.sub(r"\1", answer)
    for junk in ("\\left", "\\right", "\\!", "\\,", "\\;", "\\ ", "$", "^\\circ", "^{\\circ}"):
        text = text.replace(junk, "")
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return re.sub(r"\s+", "", text).rstrip(".").lower()


@functools.lru_cache(maxsize=1)
def _math_verify() -> ModuleType | None:
    if not is_available("math_verify"):
        return None
    import math_verify  # noqa: PLC0415 - heavy (sympy); only imported when first needed

    # It warns once per process when its timeouts are off, which we do on purpose off the main
    # thread (see _symbolic_equal); the warning would only confuse users.
    for name in ("math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return math_verify


def _symbolic_equal(candidate: str, reference: str) -> bool | None:
    """Compare with math_verify; None when it is unavailable or cannot parse either side."""
    mv = _math_verify()
    if mv is None:
        return None
    # math_verify's timeouts use signal.alarm, which only works in the main thread; elsewhere
    # they must be disabled or it raises. Answers here are short, so that is an acceptable risk.
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    try:
        gold = mv.parse(f"${reference}$", parsing_timeout=timeout)
        pred = mv.parse(f"${candidate}$", parsing_timeout=timeout)
        if not gold or not pred:
            return None
        return bool(mv.verify(gold, pred, timeout_seconds=timeout))
    except Exception:  # noqa: BLE001 - a parser crash on odd input must not kill a run; fall back
        return None


def answers_equal(
    candidate: str, reference: str, *, rel_tol: float = 1e-6, abs_tol: float = 1e-9, symbolic: bool = True
) -> bool:
    """Return True when two extracted answers are mathematically equal.

    Args:
        candidate: the candidate's extracted answer.
        reference: the reference's extracted answer.
        rel_tol: relative tolerance for numeric answers.
        abs_tol: absolute tolerance for numeric answers.
        symbolic: use ``math_verify`` for non-numeric answers when it is installed.

    Returns:
        Whether the answers match.
    """
    got, expected = parse_number(candidate), parse_number(reference)
    if got is not None and expected is not None:
        return _numbers_close(got, expected, rel_tol, abs_tol)
    if symbolic:
        same = _symbolic_equal(candidate, reference)
        if same is not None:
            return same
    return _normalise_string(candidate) == _normalise_string(reference)


def is_correct(
    candidate: str, reference: str, *, rel_tol: float = 1e-6, abs_tol: float = 1e-9, symbolic: bool = True
) -> Verdict:
    """Check that ``candidate`` reaches the same final answer as ``reference``.

    Args:
        candidate: the rewritten solution.
        reference: the reference solution (usually GSM8K style, ending in ``#### N``).
        rel_tol: relative tolerance for numeric answers.
        abs_tol: absolute tolerance for numeric answers.
        symbolic: use ``math_verify`` for non-numeric answers when it is installed.

    Returns:
        A verdict with reason "ok", "wrong-answer" (detail "got X, expected Y"), "no-answer"
        (nothing extractable from the candidate) or "bad-reference" (nothing extractable from
        the reference).
    """
    expected = extract_answer(reference)
    if expected is None:
        return Verdict(False, "bad-reference", "no final answer found in the reference")
    got = extract_answer(candidate)
    if got is None:
        return Verdict(False, "no-answer", "no final answer found in the candidate")
    if answers_equal(got, expected, rel_tol=rel_tol, abs_tol=abs_tol, symbolic=symbolic):
        return PASS
    return Verdict(False, "wrong-answer", f"got {got}, expected {expected}")


class MathVerifier:
    """Verifier for math word problems (GSM8K, MATH-style boxed answers)."""

    name = "math"

    def __init__(self, rel_tol: float = 1e-6, abs_tol: float = 1e-9, symbolic: bool = True):
        """Create the verifier.

        Args:
            rel_tol: relative tolerance for numeric answers.
            abs_tol: absolute tolerance for numeric answers.
            symbolic: use ``math_verify`` for non-numeric answers when it is installed.
        """
        self.rel_tol = float(rel_tol)
        self.abs_tol = float(abs_tol)
        self.symbolic = bool(symbolic)

    def extract_answer(self, text: str) -> str | None:
        """Return the final answer of ``text`` (see :func:`extract_answer`)."""
        return extract_answer(text)

    def check(self, candidate: str, reference: str, row: dict[str, Any]) -> Verdict:
        """Compare the final answers of ``candidate`` and ``reference``; ``row`` is unused."""
        return is_correct(
            candidate, reference, rel_tol=self.rel_tol, abs_tol=self.abs_tol, symbolic=self.symbolic
        )
