"""``drift``: how far the model moved from itself (higher is better, 100 = no drift possible).

The base (seed) model answers a held set of general prompts greedily, once. Every model, the
base included, then scores those answers: the token-weighted mean negative log-likelihood
(NLL) per token. The suite's score is ``100 * exp(-NLL)``, the geometric-mean probability the
model gives to the seed's own tokens, so the base sets the reference and a tuned model that
forgot how it used to answer scores lower. The raw NLL is in the report too.

Default prompts: 30 general requests written by the sdft project (``sdft/assets/drift_prompts.jsonl``);
any prompt file works (``prompt``/``instruction``/``question`` column).
"""

from __future__ import annotations

import math
from typing import Any

from sdft.engines.base import Score
from sdft.eval.base import Probe, asset_path, mean_interval
from sdft.eval.safety import load_prompts


class DriftSuite:
    """Likelihood of the seed's own greedy answers under each model."""

    name = "drift"
    metric = "self-likelihood"
    default_data = "drift_prompts.jsonl"
    max_new_tokens = 192

    def probes(self, path: str | None, limit: int | None) -> list[Probe]:
        return load_prompts(path or asset_path(self.default_data), limit, self.max_new_tokens)


def summarise(scores: list[Score]) -> dict[str, Any]:
    """Score, interval and raw NLL from the per-answer scores of one model.

    The point estimate is token-weighted; the interval comes from the spread of the
    per-answer mean NLLs (normal approximation), mapped through ``100 * exp(-x)``.
    """
    used = [s for s in scores if s.num_tokens > 0]
    tokens = sum(s.num_tokens for s in used)
    if not tokens:
        return {"n": 0, "score": None, "low": None, "high": None, "nll": None, "tokens": 0}
    nll = sum(s.nll for s in used) / tokens
    _, lo, hi = mean_interval([s.mean_nll for s in used])
    return {"n": len(used), "tokens": tokens, "nll": round(nll, 4), "score": 100 * math.exp(-nll),
            "low": 100 * math.exp(-hi), "high": 100 * math.exp(-lo)}
