"""Answer sources: where a row's candidate training answers come from (the ladder).

Fine-tuning moves a model less when its training answers are ones it would write itself. For
each row the rewrite stage pools candidates from several sources, verifies every one, scores
the survivors by the seed model's NLL under the plain *training* prompt, and keeps the most
likely (:mod:`sdft.select`). The sources, cheapest and closest to the model first:

``own``
    The seed answers the training prompt unaided (the greedy answer plus ``k`` samples). When
    it is already right, nothing is closer to the model (self-rehearsal).
``hint``
    The seed sees the question plus only the final answer (the verifier's
    ``extract_answer``: the number for math, the call for tool use) and writes its own
    solution ending in it (STaR-style rationalisation). Candidates that mention the hint
    ("the given answer", "hint", ...) are rejected (reason ``hint-leak``).
``reference``
    The SDFT rewrite: the seed sees the full reference answer and rewrites it in its own words.

For math (``own_prefix``), half of the ``hint`` and ``reference`` candidates do not start from
scratch: they continue the seed's own greedy answer from its first unsupported step on
(:func:`sdft.verify.arithmetic.supported_prefix`): the model keeps what it got right in its own
words, and sees the hint or the reference only for the rest. Measured on GSM8K rows this is
what brings the kept answers closest to the model (README, "Answer sources").
``original``
    The reference answer itself: the fallback when nothing else passes.

Rows without a verifier that can check them (``--verifier none``) can only use ``reference``
and ``original``: an unchecked answer of the model's own could be anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sdft.data import Example
from sdft.prompts import RewritePrompt
from sdft.verify.base import PASS, Verdict

SOURCES = ("own", "hint", "reference", "original")
#: Sources that generate (``original`` does not).
GENERATING = ("own", "hint", "reference")
#: Sources usable without a verifier that checks correctness.
UNCHECKED_OK = ("reference", "original")

HINT_USER = ("{question}\n\nThe correct final answer is {hint}. Solve the problem step by step in your own "
             "words and show how to reach this answer.")
HINT_USER_TOOL = "{question}\n\nThe correct function call is {hint}. Reply with the call."

# Phrases by which a hinted answer reveals that it was given the answer: the trained model
# would learn to talk about a hint it will never see.
_HINT_LEAK_RE = re.compile(
    r"\b(?:the\s+)?(?:given|provided|stated|expected|correct|known|supplied)\s+(?:final\s+)?"
    r"(?:answer|result|solution|function\s+call|call)\b"
    r"|\bhint\b|\breference\b|\bwe\s+(?:are|were)\s+told\b|\bas\s+(?:given|stated|required)\b"
    r"|\bthe\s+answer\s+(?:should|must)\s+be\b|\b(?:to\s+)?(?:reach|get\s+to|arrive\s+at)\s+(?:this|the\s+given)\b",
    re.IGNORECASE,
)
#: Hint-leak search looks at this many characters from each end (bounded work on hostile output).
_LEAK_SCAN_CHARS = 16_000


@dataclass(frozen=True)
class Request:
    """One generation request of one source for one row.

    Attributes:
        prompt: chat messages, or (when continuing a prefix) the rendered prompt with the
            prefix appended, sent as a raw string.
        prefix: the start of the answer already written (the seed's own), "" if none; a
            candidate's text is ``prefix + completion``.
        n: candidates to draw.
    """

    prompt: list[dict[str, str]] | str
    prefix: str
    n: int


def find_hint_leak(text: str) -> str | None:
    """The first phrase of ``text`` that talks about a given answer, or None."""
    if len(text) > 2 * _LEAK_SCAN_CHARS:
        text = text[:_LEAK_SCAN_CHARS] + "\n" + text[-_LEAK_SCAN_CHARS:]
    m = _HINT_LEAK_RE.search(text)
    return m.group(0) if m else None


def check_hint_leak(text: str) -> Verdict:
    """Reject a hinted candidate that mentions its hint (reason ``hint-leak``)."""
    phrase = find_hint_leak(text)
    return Verdict(False, "hint-leak", f"mentions the hint: {phrase!r}") if phrase else PASS


def hint_of(verifier: Any, ex: Example) -> str | None:
    """The final answer to reveal for ``ex`` (the verifier's extractor on the reference), or None."""
    extract = getattr(verifier, "extract_answer", None)
    # none checks nothing, and a program's "final answer" is the whole program (the reference itself)
    if extract is None or getattr(verifier, "name", "") in ("none", "code"):
        return None
    try:
        hint = extract(ex.answer)
    except Exception:  # noqa: BLE001 - a reference the extractor cannot read has no hint
        return None
    if hint is None or not str(hint).strip() or len(str(hint)) > 2000:
        return None
    return str(hint).strip()


def _messages(source: str, ex: Example, verifier: Any, rewrite_prompt: RewritePrompt) -> list[dict] | None:
    if source == "own":
        return ex.messages
    if source == "reference":
        return rewrite_prompt.build(ex)
    if source == "hint":
        hint = hint_of(verifier, ex)
        if hint is None:
            return None
        tpl = HINT_USER_TOOL if getattr(verifier, "name", "") == "tool-call" else HINT_USER
        return [*ex.messages[:-1], {"role": "user", "content": tpl.format(question=ex.question, hint=hint)}]
    raise ValueError(f"source {source!r} does not generate")


def build_requests(source: str, ex: Example, *, verifier: Any, rewrite_prompt: RewritePrompt, k: int,
                   own_answer: str | None, render: Any, own_prefix: bool) -> list[Request]:
    """The generation requests of ``source`` for ``ex`` (empty when the source cannot serve the row).

    Args:
        source: one of :data:`GENERATING`.
        ex: the row.
        verifier: the task verifier (``hint`` asks it for the final answer).
        rewrite_prompt: the SDFT rewrite prompt (``reference``).
        k: candidates wanted.
        own_answer: the seed's own greedy answer to the row, if known.
        render: ``engine.render`` (chat messages -> the exact prompt text).
        own_prefix: continue the supported prefix of ``own_answer`` for half the candidates
            (math only: the prefix is checked against the reference's numbers).
    """
    messages = _messages(source, ex, verifier, rewrite_prompt)
    if messages is None:
        return []
    prefix = ""
    if own_prefix and source != "own" and own_answer and getattr(verifier, "name", "") == "math":
        from sdft.verify.arithmetic import supported_prefix

        prefix = supported_prefix(own_answer, ex.question, ex.answer)
    if not prefix.strip() or k < 2:
        return [Request(messages, "", k)]
    half = (k + 1) // 2
    return [Request(render(messages) + prefix, prefix, half), Request(messages, "", k - half)]


def check_sources(sources: list[str] | tuple[str, ...], verifier_name: str) -> list[str]:
    """Problems with a ``sources`` list (unknown names, repeats, nothing usable)."""
    problems = []
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        problems.append(f"sources: unknown {', '.join(unknown)} (choose from {', '.join(SOURCES)})")
    if len(set(sources)) != len(sources):
        problems.append("sources: a source is listed twice")
    if not sources:
        problems.append("sources: empty (e.g. own,hint,reference,original)")
    return problems


def usable_sources(sources: list[str] | tuple[str, ...], verifier_name: str) -> tuple[list[str], list[str]]:
    """The sources that can run with ``verifier_name``, and those dropped (``none`` checks nothing)."""
    if verifier_name != "none":
        return list(sources), []
    keep = [s for s in sources if s in UNCHECKED_OK]
    return keep, [s for s in sources if s not in UNCHECKED_OK]
