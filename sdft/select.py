"""Select among verified candidates, and fall back to the original when none passes.

Besides the task verifier, every generated candidate passes two shape checks here, because
per-token NLL (the selection score) can be gamed: an answer padded with likely filler, or
stuck in a loop, scores low without being a better answer.

* ``too-long``: more tokens than ``max_length_ratio`` times the model's own unaided answer to
  the same prompt (the model is naturally wordier than terse references, so the bound is
  relative to what it writes itself, not to the reference);
* ``repetition``: a repeated line or sentence, or text that compresses far better than prose.
"""

from __future__ import annotations

import math
import re
import zlib
from collections import Counter
from dataclasses import dataclass

from sdft.verify.base import PASS, Verdict

SELECT_MODES = ("first", "min-nll")
ON_FAIL_MODES = ("keep-original", "drop")

#: A sentence or line of at least this many characters seen this often is a loop.
REPEAT_MIN_CHARS = 16
REPEAT_TIMES = 3
#: Texts longer than this whose zlib ratio falls below ``COMPRESS_RATIO`` are loops.
COMPRESS_MIN_CHARS = 400
COMPRESS_RATIO = 0.18
_SPLIT_RE = re.compile(r"(?<=[.!?])\s+|\n+")


@dataclass
class Candidate:
    """One sampled answer, where it came from, and what the checks said about it."""

    text: str
    finish_reason: str
    num_tokens: int
    verdict: Verdict
    mean_nll: float | None = None  # seed-model NLL per token under the training prompt
    source: str = "reference"
    nll: float | None = None  # total NLL (reported beside the per-token value)
    scored_tokens: int | None = None

    def to_dict(self) -> dict:
        d = {"source": self.source, "text": self.text, "finish_reason": self.finish_reason,
             "num_tokens": self.num_tokens, "ok": self.verdict.ok, "reason": self.verdict.reason}
        if self.verdict.detail:
            d["detail"] = self.verdict.detail
        if self.mean_nll is not None:
            d["mean_nll"] = round(self.mean_nll, 5)
        if self.nll is not None:
            d["nll"] = round(self.nll, 3)
            d["scored_tokens"] = self.scored_tokens
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Candidate:
        return cls(d["text"], d["finish_reason"], d["num_tokens"], Verdict(d["ok"], d["reason"], d.get("detail", "")),
                   d.get("mean_nll"), d.get("source", "reference"), d.get("nll"), d.get("scored_tokens"))


@dataclass
class Decision:
    """The outcome for one row."""

    status: str  # "rewritten" | "fallback" | "dropped"
    response: str | None
    reason: str
    detail: str = ""
    chosen: int | None = None  # index into the candidates
    source: str = "original"


def repetition(text: str) -> str | None:
    """A description of the loop in ``text`` (a repeated sentence, or a highly compressible text), or None."""
    counts = Counter(s.strip().lower() for s in _SPLIT_RE.split(text) if len(s.strip()) >= REPEAT_MIN_CHARS)
    if counts:
        sentence, times = counts.most_common(1)[0]
        if times >= REPEAT_TIMES:
            return f"{sentence[:60]!r} repeated {times} times"
    if len(text) >= COMPRESS_MIN_CHARS:
        data = text.encode("utf-8", "replace")
        ratio = len(zlib.compress(data, 6)) / len(data)
        if ratio < COMPRESS_RATIO:
            return f"compresses to {ratio:.0%} of its size"
    return None


def shape_check(text: str, num_tokens: int, *, own_tokens: int | None, max_length_ratio: float) -> Verdict:
    """The length and repetition checks of a generated candidate.

    Args:
        text: the candidate.
        num_tokens: its generated tokens.
        own_tokens: tokens of the model's own unaided (greedy) answer to the same prompt, if known.
        max_length_ratio: reject above this multiple of ``own_tokens`` (0 turns the check off).
    """
    loop = repetition(text)
    if loop:
        return Verdict(False, "repetition", loop)
    if max_length_ratio > 0 and own_tokens:
        limit = max_length_ratio * max(own_tokens, 16)
        if num_tokens > limit:
            return Verdict(False, "too-long", f"{num_tokens} tokens > {max_length_ratio:g} x the model's own "
                                              f"answer ({own_tokens} tokens)")
    return PASS


def decide(candidates: list[Candidate], original: str, select: str, on_fail: str,
           preference: tuple[str, ...] = ()) -> Decision:
    """Pick the kept answer for a row.

    ``first`` keeps the first passing candidate; ``min-nll`` the passing candidate with the
    lowest per-token NLL under the seed model (scores must be filled in), ties broken by the
    order of ``preference`` (source names) and then by position. When none passes,
    ``keep-original`` keeps the reference answer and ``drop`` drops the row; the reason is the
    most common failure reason among the candidates (ties: first seen).
    """
    passing = [i for i, c in enumerate(candidates) if c.verdict.ok]
    if passing:
        rank = {s: k for k, s in enumerate(preference)}
        if select == "min-nll":
            def key(i: int) -> tuple[float, int, int]:
                v = candidates[i].mean_nll
                score = v if v is not None and not math.isnan(v) else math.inf
                return score, rank.get(candidates[i].source, len(rank)), i

            best = min(passing, key=key)
        else:
            best = min(passing, key=lambda i: (rank.get(candidates[i].source, len(rank)), i))
        c = candidates[best]
        return Decision("rewritten", c.text, "ok", chosen=best, source=c.source)
    reasons = Counter(c.verdict.reason for c in candidates)
    top = max(reasons.values()) if reasons else 0
    reason = next((c.verdict.reason for c in candidates if reasons[c.verdict.reason] == top), "no-candidate")
    detail = next((c.verdict.detail for c in candidates if c.verdict.reason == reason), "")
    if on_fail == "drop":
        return Decision("dropped", None, reason, detail, source="none")
    return Decision("fallback", original, reason, detail, source="original")
