"""``drift``: how far the model moved from itself (higher is better, 100 = no drift possible).

The base (seed) model answers a held set of general prompts greedily, once (``answers_from =
"base"``). Every model, the base included, then scores those answers (``needs_likelihood``):
the negative log-likelihood (NLL) of each answer's tokens after its prompt.

* Item value: ``100 * exp(-NLL / tokens)`` of that one answer, the geometric-mean probability
  the model gives to the seed's tokens of that answer (0-100).
* Suite score: token-weighted, ``100 * exp(-sum NLL / sum tokens)`` over all answers, with a 95%
  interval from the spread of the per-answer mean NLLs (normal approximation), mapped through
  the same transform. Note that the plain mean of the item values is not this score.
* Delta: the tuned score minus the base's; the interval is the tuned score's own, shifted (the
  base's score is the reference point, not a second sample).

The base sets the reference and a tuned model that forgot how it used to answer scores lower.
The raw token-weighted NLL is in the report too. An empty base answer has nothing to score: its
item has no value (``reason`` "empty") and is left out.

Default prompts: 135 general requests written by the sdft project (``sdft/assets/drift_prompts.jsonl``:
everyday questions, explanations, short writing tasks, advice); any prompt file works.
"""

from __future__ import annotations

import math
from typing import Any

from sdft.eval.base import Answer, ItemResult, Probe, PromptSuite
from sdft.eval.stats import mean_interval


class DriftSuite(PromptSuite):
    """Likelihood of the seed's own greedy answers under each model."""

    name = "drift"
    metric = "self-likelihood"
    default_data = "drift_prompts.jsonl"
    max_new_tokens = 192
    answers_from = "base"
    needs_likelihood = True

    def result(self, probe: Probe, answer: Answer) -> ItemResult:
        tokens = answer.scored_tokens or 0
        if answer.nll is None or tokens <= 0:
            return ItemResult(probe.id, None, None, "empty", "the base model's answer has no tokens to score")
        mean_nll = answer.nll / tokens
        return ItemResult(probe.id, 100 * math.exp(-mean_nll), None, "ok",
                          f"NLL {mean_nll:.4f} per token over {tokens} tokens",
                          {"nll": answer.nll, "tokens": tokens})

    def aggregate(self, items: list[ItemResult]) -> dict[str, Any]:
        used = [i for i in items if i.value is not None]
        tokens = sum(i.stats["tokens"] for i in used)
        if not tokens:
            return {"n": 0, "score": None, "low": None, "high": None, "nll": None, "tokens": 0}
        nll = sum(i.stats["nll"] for i in used) / tokens
        _, lo, hi = mean_interval([i.stats["nll"] / i.stats["tokens"] for i in used])
        return {"n": len(used), "tokens": int(tokens), "nll": round(nll, 4), "score": 100 * math.exp(-nll),
                "low": 100 * math.exp(-hi), "high": 100 * math.exp(-lo)}

    def delta(self, base: dict[str, Any], other: dict[str, Any]) -> tuple[float, float, float]:
        ref = base["score"]
        return other["score"] - ref, other["low"] - ref, other["high"] - ref
