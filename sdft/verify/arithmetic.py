"""Arithmetic steps in a worked solution: find every ``expression = value`` and recompute it.

A math rewrite can reach the reference's final number through broken steps ("25 - 50 = 50",
"600*3 = $6000"); training on it teaches broken reasoning. :func:`check_steps` recomputes every
arithmetic statement and rejects the solution when one is wrong (reason ``arithmetic``) or when
the final answer does not follow from the last step (reason ``final-unsupported``).

What counts as a statement: an ``=`` whose left side ends in an arithmetic expression of
numbers and operators (``+ - * / x × ÷ ·``, parentheses, ``%``, ``of`` after a percentage),
including chains (``2 * 3 + 4 = 6 + 4 = 10``), GSM8K calculator annotations (``<<48/2=24>>``),
currency signs and thousands separators (``$1,200 * 2 = $2,400``) and decimals. A stated value
with d decimals is accepted when it is the exact result rounded to d places (``10 / 3 = 3.33``).
Statements whose left side is not arithmetic ("x = 5", "Total = 15", "3 apples + 4 apples =
7") are skipped: the checker never rejects what it cannot read.

:func:`first_wrong_result` is the calculator used for calculator-assisted decoding
(:mod:`sdft.calc`): where the first wrong result is and what to write instead.

Everything here is linear in the text length with hard caps (text length, number length,
statements per text, tokens per expression), so hostile model output cannot make it hang.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from sdft.verify.base import PASS, Verdict

#: Texts longer than this are checked on their first MAX_CHARS characters only.
MAX_CHARS = 20_000
#: At most this many ``=`` signs are examined per text.
MAX_STATEMENTS = 400
#: Digits allowed in one number (larger numbers are not arithmetic a solution should contain).
MAX_DIGITS = 24
#: Tokens allowed in one expression.
MAX_TOKENS = 64

# one number: thousands-separated or plain digits, optional decimals; or a leading-dot decimal
_NUM = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+"
_TOKEN_RE = re.compile(
    rf"\s*(?:(?P<mixed>\d+ \d+/\d+)(?![\d/])|(?P<num>[$€£]?\s?(?:{_NUM})\s?%?)"
    rf"|(?P<op>[-+*/x×÷·−–]|\bof\b)|(?P<lp>\()|(?P<rp>\)))",
    re.IGNORECASE,
)
# characters an arithmetic expression may consist of, scanned backwards from an "="
_EXPR_CHARS = set("0123456789.,$€£% \t+-*/x×÷·−–()")
_VALUE_RE = re.compile(rf"\s*[$€£]?\s?(?P<num>-?(?:{_NUM}))\s?(?P<pct>%)?")
_OPS = {"+": "+", "-": "-", "−": "-", "–": "-", "*": "*", "x": "*", "×": "*", "·": "*", "/": "/", "÷": "/",
        "of": "*"}


@dataclass(frozen=True)
class Step:
    """One arithmetic statement.

    Attributes:
        text: the statement as written (``expression = value``).
        computed: the exact value of the expression.
        stated: the value the text gives.
        decimals: decimals shown in the stated value (for rounding).
        ok: the stated value is the computed one (rounded to ``decimals`` places).
    """

    text: str
    computed: Fraction
    stated: Fraction
    decimals: int
    ok: bool
    eq: int = -1  # index of the "=" in the text


def _number(tok: str) -> tuple[Fraction, bool] | None:
    """Value of a number token and whether it carried a percent sign; None if too large."""
    pct = tok.rstrip().endswith("%")
    digits = re.sub(r"[^\d.]", "", tok)
    if not digits or digits == "." or len(digits) > MAX_DIGITS:
        return None
    return Fraction(digits), pct


def _tokens(expr: str) -> list[tuple[str, object]] | None:
    """Tokenise ``expr`` fully, or None when some part is not arithmetic."""
    out: list[tuple[str, object]] = []
    pos = 0
    expr = expr.rstrip()
    while pos < len(expr):
        m = _TOKEN_RE.match(expr, pos)
        if not m or m.end() == pos:
            return None
        if m.group("mixed"):  # "1 1/2": a whole number and a proper fraction
            whole, frac = m.group("mixed").split(" ")
            num, den = (int(x) for x in frac.split("/"))
            if den == 0 or num >= den or len(whole) > MAX_DIGITS:
                return None
            out.append(("num", (Fraction(int(whole)) + Fraction(num, den), False)))
        elif m.group("num"):
            val = _number(m.group("num"))
            if val is None:
                return None
            out.append(("num", val))
        elif m.group("op"):
            out.append(("op", _OPS[m.group("op").lower()]))
        elif m.group("lp"):
            out.append(("(", None))
        else:
            out.append((")", None))
        pos = m.end()
        if len(out) > MAX_TOKENS:
            return None
    return out


class _Parser:
    """Recursive-descent evaluation with exact fractions; ``%`` handled by the caller's mode."""

    def __init__(self, toks: list[tuple[str, object]], pct_mode: str):
        self.toks, self.i, self.pct = toks, 0, pct_mode

    def peek(self) -> tuple[str, object] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def expr(self) -> Fraction:
        val = self.term()
        while (t := self.peek()) and t[0] == "op" and t[1] in "+-":
            self.i += 1
            nxt = self.peek()
            relative = self.pct == "relative" and nxt is not None and nxt[0] == "num" and nxt[1][1]  # type: ignore[index]
            rhs = self.term()
            if relative:  # "50 + 20%" read as a 20% increase of 50
                rhs = val * rhs / 100
            val = val + rhs if t[1] == "+" else val - rhs
        return val

    def term(self) -> Fraction:
        val = self.factor()
        while (t := self.peek()) and t[0] == "op" and t[1] in "*/":
            self.i += 1
            rhs = self.factor()
            if t[1] == "*":
                val = val * rhs
            else:
                if rhs == 0:
                    raise ZeroDivisionError
                val = val / rhs
        return val

    def factor(self) -> Fraction:
        t = self.peek()
        if t is None:
            raise ValueError("unexpected end")
        if t[0] == "op" and t[1] == "-":
            self.i += 1
            return -self.factor()
        if t[0] == "(":
            self.i += 1
            val = self.expr()
            if not (self.peek() and self.peek()[0] == ")"):
                raise ValueError("unbalanced")
            self.i += 1
            return val
        if t[0] == "num":
            self.i += 1
            value, pct = t[1]  # type: ignore[misc]
            return value / 100 if pct and self.pct == "fraction" else value
        raise ValueError("unexpected token")


#: How a percentage may be read: 20% as 0.2, as 20, or ("50 + 20%") as 20% of the left operand.
PCT_MODES = ("fraction", "number", "relative")


def _evaluate(toks: list[tuple[str, object]], pct_mode: str = "fraction") -> Fraction | None:
    try:
        p = _Parser(toks, pct_mode)
        val = p.expr()
        return val if p.i == len(toks) else None
    except (ValueError, ZeroDivisionError, RecursionError):
        return None


def _has_operator(toks: list[tuple[str, object]]) -> bool:
    # a leading "-" alone ("-5") is a sign, not a computation
    return any(t[0] == "op" for t in toks[1:]) or (bool(toks) and toks[0][0] == "op" and len(toks) > 2)


def evaluate(expr: str) -> Fraction | None:
    """The exact value of an arithmetic expression, or None when ``expr`` is not one.

    Args:
        expr: e.g. ``"48 / 2"``, ``"$1,200 x 2"``, ``"20% of 50"``, ``"(3 + 4) * 2"``.

    Returns:
        The value (a percentage counts as a fraction of 100), or None.
    """
    toks = _tokens(expr)
    return _evaluate(toks) if toks else None


def _left_expression(text: str, end: int) -> tuple[str, list[tuple[str, object]]] | None:
    """The longest arithmetic expression ending at ``end`` (exclusive) that contains an operator."""
    start = end
    floor = max(0, end - 200)
    while start > floor and text[start - 1] in _EXPR_CHARS:
        start -= 1
    # "20% of 50": let the word "of" through when a percentage precedes it
    seg = text[start:end]
    before_of = text[max(0, start - 14) : max(0, start - 2)]
    if text[max(0, start - 2) : start].lower() == "of" and re.search(r"(?:%|\d/\d+)\s*$", before_of):
        s2 = start - 2
        while s2 > floor and text[s2 - 1] in _EXPR_CHARS:
            s2 -= 1
        seg, start = text[s2:end], s2
    # trim from the left until what is left parses as an expression with an operator
    candidates = [m.start() for m in re.finditer(r"[\d($€£.-]", seg)]
    for cut in candidates:
        if seg[:cut].strip():
            # something arithmetic-looking is left over on the left ("M + 4 + 2", "2(3 + 4)",
            # "X*2 - 40"): the expression continues into a variable or an implicit product that
            # cannot be recomputed, so this statement is skipped rather than misread
            return None
        piece = seg[cut:]
        if piece.count(")") > piece.count("("):
            continue
        toks = _tokens(piece)
        if toks and _has_operator(toks) and toks[-1][0] in ("num", ")"):
            if _evaluate(toks) is not None:
                return piece.strip(), toks
    return None


def _right_expression(text: str, start: int) -> tuple[str, list[tuple[str, object]], int] | None:
    """The longest arithmetic expression starting right after an ``=`` at ``start``.

    Returns ``(expression, tokens, end)`` or None. Trailing punctuation ("24.", "24,") is not
    part of it.
    """
    end = start
    limit = min(len(text), start + 200)
    while end < limit and text[end] in _EXPR_CHARS:
        end += 1
    seg = text[start:end]
    # an expression on the right counts only inside a chain ("= 6 + 4 = 10"); otherwise the
    # stated value is the first number ("= 12 - that is the total" states 12)
    chained = end < len(text) and text[end] == "="
    for m in reversed(list(re.finditer(r"[\d)%]", seg))):
        piece = seg[: m.end()]
        if piece.count("(") > piece.count(")"):
            continue
        toks = _tokens(piece.strip())
        if not toks or toks[-1][0] not in ("num", ")") or _evaluate(toks) is None:
            continue
        if not chained and _has_operator(toks) and not _is_fraction(toks):
            continue
        after = start + m.end()
        if after < len(text) and (text[after].isalpha() or text[after] == "/"):
            return None  # "5A", "1.2Y", "$600/week": a term or a rate, not a value
        return piece.strip(), toks, after
    return None


def _is_fraction(toks: list[tuple[str, object]]) -> bool:
    """``a/b`` written as a value ("= 1/4")."""
    return len(toks) == 3 and toks[0][0] == "num" and toks[1] == ("op", "/") and toks[2][0] == "num"


def _decimals(expr: str) -> int:
    """Decimals shown by a plain number ("3.33" -> 2); 0 for expressions."""
    m = re.fullmatch(rf"[$€£]?\s?-?(?:{_NUM})\s?%?", expr.strip())
    if not m:
        return 0
    digits = re.sub(r"[^\d.]", "", expr)
    return len(digits.split(".", 1)[1]) if "." in digits else 0


def _matches(computed: Fraction, stated: Fraction, decimals: int) -> bool:
    if computed == stated:
        return True
    if decimals == 0:
        return False
    # a shown value with d decimals is right when it is the exact value rounded to d places
    return abs(computed - stated) <= Fraction(1, 2 * 10**decimals) + Fraction(1, 10 ** (decimals + 6))


def _is_relation(text: str, i: int) -> bool:
    """``=`` that is part of ``==``, ``<=``, ``>=``, ``!=``, ``=>``."""
    before = text[i - 1] if i > 0 else ""
    after = text[i + 1] if i + 1 < len(text) else ""
    return (before != "" and before in "=<>!") or (after != "" and after in "=>")


def _compare(left: list[tuple[str, object]], right: list[tuple[str, object]], decimals: int) -> tuple[bool, Fraction]:
    """Whether two token lists have the same value; ``%`` may be read as a fraction or a number."""
    first: Fraction | None = None
    has_pct = any(t[0] == "num" and t[1][1] for t in (*left, *right))  # type: ignore[index]
    modes = PCT_MODES if has_pct else PCT_MODES[:1]
    for lmode in modes:
        lv = _evaluate(left, lmode)
        if lv is None:
            continue
        first = lv if first is None else first
        for rmode in modes:
            rv = _evaluate(right, rmode)
            if rv is not None and _matches(lv, rv, decimals):
                return True, lv
    return False, first if first is not None else Fraction(0)


def find_steps(text: str) -> list[Step]:
    """Every arithmetic statement in ``text`` with its recomputed value, in order.

    Args:
        text: a worked solution (model output or GSM8K reference).

    Returns:
        The statements found (see the module docstring for what counts). In a chain
        ``a = b = c`` each ``=`` is one statement.
    """
    text = text[:MAX_CHARS]
    steps: list[Step] = []
    for n, m in enumerate(re.finditer("=", text)):
        if n >= MAX_STATEMENTS:
            break
        i = m.start()
        if _is_relation(text, i):
            continue
        left = _left_expression(text, i)
        if left is None:
            continue
        right = _right_expression(text, i + 1)
        if right is None:
            continue
        expr, toks = left
        rexpr, rtoks, _end = right
        decimals = _decimals(rexpr)
        ok, computed = _compare(toks, rtoks, decimals)
        stated = _evaluate(rtoks)
        steps.append(Step(f"{expr} = {rexpr}", computed, stated if stated is not None else computed, decimals, ok,
                          eq=i))
    return steps


def _last_stated(text: str) -> Fraction | None:
    """The number right after the last ``=`` of ``text`` (whatever its left side), or None."""
    for m in reversed(list(re.finditer("=", text[-MAX_CHARS:]))):
        i = m.start()
        sub = text[-MAX_CHARS:]
        if _is_relation(sub, i):
            continue
        right = _right_expression(sub, i + 1)
        return _evaluate(right[1]) if right else None
    return None


def final_follows(text: str, steps: list[Step], final: Fraction) -> bool:
    """The final answer is what the last statement of the solution states or computes.

    True when there is no statement at all, when ``final`` is the value stated after the last
    ``=`` (also in statements the checker cannot recompute, such as "23 meters - 13 meters =
    10 meters"), or when it is the result of the last arithmetic step.
    """
    body = text.split("####", 1)[0]
    last = _last_stated(body)
    if last is None and not steps:
        return True
    if last is not None and _matches(last, final, 2):
        return True
    return bool(steps) and (final in (steps[-1].stated, steps[-1].computed) or _matches(steps[-1].computed, final, 2))


def check_steps(text: str, final: Fraction | None = None) -> Verdict:
    """Reject ``text`` when an arithmetic step is wrong or the final answer does not follow.

    Args:
        text: the worked solution.
        final: the solution's final answer (e.g. the number after ``####``), when known.

    Returns:
        PASS, or a verdict with reason ``arithmetic`` (detail names the first wrong step, e.g.
        ``"25 - 50 = 50 (is -25)"``) or ``final-unsupported``.
    """
    steps = find_steps(text)
    for s in steps:
        if not s.ok:
            return Verdict(False, "arithmetic", f"{s.text} (is {_format(s.computed)})")
    if final is not None and not final_follows(text, steps, final):
        where = f" {steps[-1].text}" if steps else ""
        return Verdict(False, "final-unsupported",
                       f"final answer {_format(final)} does not follow from the last step{where}")
    return PASS


def _format(value: Fraction) -> str:
    """A value as a solution would write it: an integer, else at most 2 decimals."""
    if value.denominator == 1:
        return str(value.numerator)
    rounded = round(value, 2)
    text = f"{float(rounded):.2f}".rstrip("0").rstrip(".")
    return text


def first_wrong_result(text: str, start: int = 0) -> tuple[int, str] | None:
    """The first wrong arithmetic step whose ``=`` lies at or after ``start``, as a correction.

    Returns:
        ``(cut, result)``: keep ``text[:cut]`` (it ends with the step's ``=``) and write the exact
        ``result`` after it; or None when every step from ``start`` on is right. Lazy
        calculator-assisted decoding uses it: the model writes freely, and only a wrong result is
        replaced (then the model continues from the corrected text).
    """
    for step in find_steps(text):
        if step.eq >= start and not step.ok:
            return step.eq + 1, _format(step.computed)
    return None


_NUMBER_RE = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_SENTENCE_RE = re.compile(r"[^\n.!?]*(?:[.!?](?=\s|$)|\n|$)")
#: Small whole numbers allowed anywhere in a prefix (list markers, "step 2", "2 of them").
_SMALL = 10


def _numbers(text: str) -> set[Fraction]:
    out = set()
    for tok in _NUMBER_RE.findall(text[:MAX_CHARS]):
        digits = tok.replace(",", "")
        if len(digits) <= MAX_DIGITS:
            out.add(Fraction(digits))
    return out


def _known(value: Fraction, known: set[Fraction]) -> bool:
    return value in known or (value.denominator == 1 and 0 <= value <= _SMALL) or any(
        abs(value - k) <= Fraction(1, 200) for k in known)


def supported_prefix(answer: str, question: str, reference: str, *, max_sentences: int = 64) -> str:
    """The longest run of leading sentences of ``answer`` that the reference supports.

    A sentence is supported when each of its arithmetic steps is right and computes a value the
    reference's solution also reaches, and every other number in it occurs in the question or
    the reference (small whole numbers such as list markers excepted). Used to keep the seed's
    own answer up to its first unsupported step and let it continue from there.

    Args:
        answer: the seed's own answer.
        question: the problem.
        reference: the reference solution.
        max_sentences: sentences examined at most.

    Returns:
        The prefix, exactly as in ``answer`` (possibly empty).
    """
    known = _numbers(question) | _numbers(reference)
    for s in find_steps(reference):
        known.update((s.computed, s.stated))
    end = 0
    for n, m in enumerate(_SENTENCE_RE.finditer(answer[:MAX_CHARS])):
        if n >= max_sentences or m.end() == m.start():
            break
        sentence = m.group(0)
        if sentence.strip():
            steps = find_steps(sentence)
            if any(not s.ok or not _known(s.computed, known) for s in steps):
                break
            if any(not _known(v, known) for v in _numbers(sentence)):
                break
        end = m.end()
    return answer[:end]
