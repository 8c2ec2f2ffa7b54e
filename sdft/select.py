"""Select among verified candidates, and fall back to the original when none passes."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from sdft.verify.base import Verdict

SELECT_MODES = ("first", "min-nll")
ON_FAIL_MODES = ("keep-original", "drop")


@dataclass
class Candidate:
    """One sampled rewrite and what the verifier said about it."""

    text: str
    finish_reason: str
    num_tokens: int
    verdict: Verdict
    mean_nll: float | None = None  # seed-model NLL per token under the training prompt (min-nll)

    def to_dict(self) -> dict:
        d = {"text": self.text, "finish_reason": self.finish_reason, "num_tokens": self.num_tokens,
             "ok": self.verdict.ok, "reason": self.verdict.reason}
        if self.verdict.detail:
            d["detail"] = self.verdict.detail
        if self.mean_nll is not None:
            d["mean_nll"] = round(self.mean_nll, 5)
        return d


@dataclass
class Decision:
    """The outcome for one row."""

    status: str  # "rewritten" | "fallback" | "dropped"
    response: str | None
    reason: str
    detail: str = ""
    chosen: int | None = None  # index into the candidates


def decide(candidates: list[Candidate], original: str, select: str, on_fail: str) -> Decision:
    """Pick the kept answer for a row.

    ``first`` keeps the first passing candidate; ``min-nll`` the passing candidate with the
    lowest per-token NLL under the seed model (scores must be filled in). When none passes,
    ``keep-original`` keeps the reference answer and ``drop`` drops the row; the reason is
    the most common failure reason among the candidates (ties: first seen).
    """
    passing = [i for i, c in enumerate(candidates) if c.verdict.ok]
    if passing:
        if select == "min-nll":
            def key(i: int) -> float:
                v = candidates[i].mean_nll
                return v if v is not None and not math.isnan(v) else math.inf

            best = min(passing, key=key)
        else:
            best = passing[0]
        return Decision("rewritten", candidates[best].text, "ok", chosen=best)
    reasons = Counter(c.verdict.reason for c in candidates)
    top = max(reasons.values()) if reasons else 0
    reason = next((c.verdict.reason for c in candidates if reasons[c.verdict.reason] == top), "no-candidate")
    detail = next((c.verdict.detail for c in candidates if c.verdict.reason == reason), "")
    if on_fail == "drop":
        return Decision("dropped", None, reason, detail)
    return Decision("fallback", original, reason, detail)
