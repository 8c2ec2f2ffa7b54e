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

Model output is hostile, so every step is linear-time and capped: only the last
:data:`SCAN_CHARS` characters are searched for the final answer, an answer longer than
:data:`MAX_ANSWER_CHARS` is ignored, a number longer than :data:`MAX_NUMBER_CHARS` or with an
exponent beyond :data:`MAX_EXPONENT` is compared as text (never expanded), and the symbolic
comparison only sees short, screened answers and runs in the killable watchdog process
(:mod:`sdft.verify.watchdog`). ``\\boxed{3!}`` is a factorial, not 3.
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
from sdft.verify.base import PASS, Verdict, clip
from sdft.verify.watchdog import CheckFailed, CheckTimeout, in_worker, run_bounded

#: Only the last this many characters of a solution are searched for its final answer.
SCAN_CHARS = 20_000
#: An extracted final answer longer than this is not an answer (it is a paragraph).
MAX_ANSWER_CHARS = 1_000
#: A numeric token longer than this (digits, separators, sign) is compared as text.
MAX_NUMBER_CHARS = 100
#: Scientific notation beyond 10**±MAX_EXPONENT is compared as text: 1e99999999 is never expanded.
MAX_EXPONENT = 1_000
#: Answers longer than this are never given to the symbolic comparison.
MAX_SYMBOLIC_CHARS = 120
#: Seconds a direct symbolic comparison may take (under :func:`sdft.verify.verify`, the budget rules).
SYMBOLIC_TIMEOUT_S = 1.0

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
_BRACE_RE = re.compile(r"[{}]")
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
# How far after "the answer is" the answer may reach (one sentence, not a paragraph).
_PHRASE_CHARS = 300


def _clean(answer: str, *, prose: bool = False) -> str:
    """Strip markdown, surrounding ``$...$``/``\\(...\\)`` and trailing punctuation.

    A trailing "!" is a factorial in math ("3!", "\\boxed{3!}"); only in prose ("the answer
    is 5!") is it punctuation.
    """
    text = answer.strip().strip("*`_ \t")
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if text.startswith(left) and text.endswith(right) and len(text) > len(left) + len(right):
            text = text[len(left) : -len(right)].strip()
    return text.rstrip(".,;:!" if prose else ".,;:").strip()


def _last_matches(pattern: re.Pattern[str], text: str) -> list[re.Match[str]]:
    """Every match of ``pattern`` in ``text``, last first."""
    matches = list(pattern.finditer(text))
    matches.reverse()
    return matches


def _closing_braces(text: str) -> dict[int, int]:
    """Map the index of each "{" to the index of its matching "}" (one linear pass)."""
    closes: dict[int, int] = {}
    stack: list[int] = []
    for match in _BRACE_RE.finditer(text):
        if match.group() == "{":
            stack.append(match.start())
        elif stack:
            closes[stack.pop()] = match.start()
    return closes


def _boxed_contents(text: str) -> str | None:
    """Return the contents of the last ``\\boxed{...}`` with balanced braces, or None."""
    boxes = _last_matches(_BOXED_RE, text)
    if not boxes:
        return None
    closes = _closing_braces(text)
    for match in boxes:
        end = closes.get(match.end() - 1)
        if end is None:
            continue  # an unbalanced (truncated) box is skipped in favour of an earlier one
        inner = text[match.end() : end]
        if len(inner) > 4 * MAX_ANSWER_CHARS:
            continue
        inner = _clean(inner)
        if inner and len(inner) <= MAX_ANSWER_CHARS:
            return inner
    return None


def _answer_phrase(text: str) -> str | None:
    """Return X from the last usable "the answer is X" / "final answer: X", or None."""
    for match in _last_matches(_ANSWER_IS_RE, text):
        rest = text[match.end() : match.end() + _PHRASE_CHARS].split("\n", 1)[0]
        chunk = _SENTENCE_END_RE.split(rest, maxsplit=1)[0]
        chunk = _clean(chunk, prose=True)
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
    text = _CALC_RE.sub("", text[-SCAN_CHARS:])
    for match in _last_matches(_HASH_RE, text):
        answer = _clean(match.group(1)[: 4 * MAX_ANSWER_CHARS])
        if answer and len(answer) <= MAX_ANSWER_CHARS:
            return answer
    boxed = _boxed_contents(text)
    if boxed is not None:
        return boxed
    phrase = _answer_phrase(text)
    if phrase is not None:
        return phrase
    if len(text) <= 4 * BARE_ANSWER_MAX_CHARS:
        whole = _clean(text)
        if whole and _is_bare_answer(whole):
            return whole
    last = None
    for last in NUMBER_RE.finditer(text):  # noqa: B007 - we want the last one
        pass
    return last.group().replace("\u2212", "-") if last is not None else None


_EXPONENT_RE = re.compile(r"[eE]([-+]?\d+)")


def _is_oversized(token: str) -> bool:
    """True for a number too long, or with too large an exponent, to be expanded exactly."""
    if len(token) > MAX_NUMBER_CHARS:
        return True
    return any(len(m.group(1)) > 6 or abs(int(m.group(1))) > MAX_EXPONENT for m in _EXPONENT_RE.finditer(token))


def _fraction(token: str) -> Fraction | None:
    """Parse "1,000", "-2.5", "3/4", "1e3" into an exact fraction, or None (also when oversized)."""
    if _is_oversized(token):
        return None
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
        The exact value as a :class:`fractions.Fraction`, or None (also for an answer longer
        than :data:`MAX_ANSWER_CHARS` and for numbers beyond :data:`MAX_NUMBER_CHARS` /
        :data:`MAX_EXPONENT`, which are compared as text).
    """
    if len(answer) > MAX_ANSWER_CHARS:
        return None
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
    # thread (see _symbolic_compare); the warning would only confuse users.
    for name in ("math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return math_verify


def warm_symbolic() -> None:
    """Import ``math_verify`` and run one comparison (the first one pays for sympy's caches).

    This is the watchdog worker's one-time ``prepare`` step (seconds), outside any time budget.
    """
    if _math_verify() is not None:
        _symbolic_compare("x^2 + 2x + 1", "(x+1)^2")


_DIGIT_RUN_RE = re.compile(r"\d{7,}")
_BIG_FACTORIAL_RE = re.compile(r"(?:\d{4,}|[)}\]])\s*!")
_POWER_RE = re.compile(r"\^\s*")
_EXPONENT_TOKEN_RE = re.compile(r"-?\\?[\w.]+")


def _exponent_at(text: str, pos: int) -> str:
    """The exponent that starts at ``pos`` (after "^"): a braced group, or one token."""
    if pos < len(text) and text[pos] in "{(":
        opening, closing = text[pos], "}" if text[pos] == "{" else ")"
        depth = 0
        for i in range(pos, len(text)):
            depth += (text[i] == opening) - (text[i] == closing)
            if depth == 0:
                return text[pos + 1 : i]
        return text[pos + 1 :]
    match = _EXPONENT_TOKEN_RE.match(text, pos)
    return match.group() if match else ""


def _symbolic_safe(answer: str) -> bool:
    """Screen out answers whose symbolic evaluation could run away (sympy would expand them).

    Rejected: long answers, deep nesting, 7+ digit numbers, oversized exponents (1e99999),
    factorials of 4+ digit numbers or of expressions, power towers (``9^{9^{9}}``) and
    exponents of 4+ digits. Such answers are compared as normalised text instead.
    """
    if len(answer) > MAX_SYMBOLIC_CHARS or _DIGIT_RUN_RE.search(answer) or _BIG_FACTORIAL_RE.search(answer):
        return False
    if any(_is_oversized(m.group()) for m in NUMBER_RE.finditer(answer)):
        return False
    depth = 0
    for ch in answer:
        depth += (ch in "{([") - (ch in "})]")
        if depth > 8:
            return False
    for match in _POWER_RE.finditer(answer):
        exponent = _exponent_at(answer, match.end())
        if "^" in exponent or re.search(r"\d{4,}", exponent) or "!" in exponent:
            return False
    return True


def _symbolic_compare(candidate: str, reference: str) -> bool | None:
    """math_verify's verdict; None when it is unavailable or cannot parse either side."""
    mv = _math_verify()
    if mv is None:
        return None
    # math_verify's timeouts use signal.alarm, which only works in the main thread; elsewhere
    # they must be disabled or it raises. The inputs are screened (_symbolic_safe) and, in the
    # watchdog worker, the whole call is bounded anyway.
    timeout = 1 if threading.current_thread() is threading.main_thread() else None
    try:
        gold = mv.parse(f"${reference}$", parsing_timeout=timeout)
        pred = mv.parse(f"${candidate}$", parsing_timeout=timeout)
        if not gold or not pred:
            return None
        return bool(mv.verify(gold, pred, timeout_seconds=timeout))
    except Exception:  # noqa: BLE001 - a parser crash on odd input must not kill a run; fall back
        return None


def _symbolic_equal(candidate: str, reference: str) -> bool | None:
    """Compare with math_verify; None when it is unavailable, unsafe, too slow or cannot parse."""
    if not (_symbolic_safe(candidate) and _symbolic_safe(reference)):
        return None
    if in_worker():  # already bounded by verify()'s budget
        return _symbolic_compare(candidate, reference)
    if not is_available("math_verify"):
        return None
    try:
        return run_bounded(_symbolic_compare, (candidate, reference), timeout_s=SYMBOLIC_TIMEOUT_S,
                           prepare=warm_symbolic)
    except (CheckTimeout, CheckFailed):
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
    return Verdict(False, "wrong-answer", f"got {clip(got)}, expected {clip(expected)}")


class MathVerifier:
    """Verifier for math word problems (GSM8K, MATH-style boxed answers)."""

    name = "math"
    pure = True  # verify() may run it in the killable watchdog process

    def __init__(self, rel_tol: float = 1e-6, abs_tol: float = 1e-9, symbolic: bool = True, steps: bool = True):
        """Create the verifier.

        Args:
            rel_tol: relative tolerance for numeric answers.
            abs_tol: absolute tolerance for numeric answers.
            symbolic: use ``math_verify`` for non-numeric answers when it is installed.
            steps: also recompute every arithmetic step of the candidate and require the final
                answer to follow from the last one (:mod:`sdft.verify.arithmetic`; reasons
                ``arithmetic`` and ``final-unsupported``). Training data needs this; scoring a
                benchmark by its final answer (the eval suites) does not.
        """
        self.rel_tol = float(rel_tol)
        self.abs_tol = float(abs_tol)
        self.symbolic = bool(symbolic)
        self.steps = bool(steps)
        # Importing sympy takes about a second: done once per process, outside the time budget.
        self.prepare = warm_symbolic if self.symbolic else None

    def extract_answer(self, text: str) -> str | None:
        """Return the final answer of ``text`` (see :func:`extract_answer`)."""
        return extract_answer(text)

    def check(self, candidate: str, reference: str, row: dict[str, Any]) -> Verdict:
        """Compare the final answers of ``candidate`` and ``reference``, then (``steps``) its arithmetic."""
        verdict = is_correct(
            candidate, reference, rel_tol=self.rel_tol, abs_tol=self.abs_tol, symbolic=self.symbolic
        )
        if not verdict.ok or not self.steps:
            return verdict
        from sdft.verify.arithmetic import check_steps

        final = extract_answer(candidate)
        return check_steps(candidate, parse_number(final) if final is not None else None)
