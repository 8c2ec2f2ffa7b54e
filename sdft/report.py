"""The distribution-gap report: are the kept answers closer to the seed model than the originals?

SDFT exists to lower the seed model's negative log-likelihood of its training targets: the
model is then fine-tuned on text it already finds likely, so it moves less. This module
measures that quantity under the *training* prompt (the question alone), for:

* the original reference answers,
* the kept rewrites (rows with status ``rewritten``),
* the model's own unaided greedy answers (the floor: what the model says by itself).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

from sdft.engines import Engine, SamplingConfig
from sdft.errors import InputError


def _token_mean(scores: list[Any]) -> float | None:
    toks = sum(s.num_tokens for s in scores)
    return round(sum(s.nll for s in scores) / toks, 4) if toks else None


def distribution_gap(engine: Engine, rows: Iterable[dict[str, Any]], *, limit: int = 64, seed: int = 0,
                     own_max_new_tokens: int = 256) -> dict[str, Any]:
    """Score originals, kept rewrites and the model's own answers on the first ``limit`` rows.

    Args:
        engine: the seed model's engine.
        rows: rewrite-output rows (``messages``, ``original``, ``response``, ``status``).
        limit: rows to score (the first ones, so the report is reproducible).
        seed: sampling seed for the unaided answers (greedy, so it only matters for ties).
        own_max_new_tokens: cap on the unaided answers.

    Returns:
        A JSON-able dict of token-weighted mean NLLs, the length ratio and a warning when the
        kept rewrites are not closer to the model than the originals.
    """
    # replay rows have no reference answer (original is None): there is no gap to measure for them
    sample = list(itertools.islice((r for r in rows if r.get("original") is not None), limit))
    if not sample:
        raise InputError("no row has an original answer to compare with: the distribution gap needs a rewrite "
                         "output (a replay output's answers are the model's own already)")
    prompts = [r["messages"] for r in sample]
    original = engine.score(prompts, [r["original"] for r in sample])
    rewritten = [i for i, r in enumerate(sample) if r["status"] == "rewritten"]
    kept = engine.score([prompts[i] for i in rewritten], [sample[i]["response"] for i in rewritten]) \
        if rewritten else []
    own_gen = engine.generate(prompts, SamplingConfig(max_new_tokens=own_max_new_tokens, seed=seed))
    own_texts = [g.completions[0].text for g in own_gen]
    own = engine.score(prompts, own_texts)
    orig_on_kept = [original[i] for i in rewritten]
    report: dict[str, Any] = {
        "rows": len(sample),
        "rewritten_rows": len(rewritten),
        "original_nll": _token_mean(original),
        "original_nll_on_rewritten_rows": _token_mean(orig_on_kept),
        "rewrite_nll": _token_mean(kept),
        "own_answer_nll": _token_mean(own),
        "length_ratio": round(sum(len(sample[i]["response"]) / max(1, len(sample[i]["original"]))
                                  for i in rewritten) / len(rewritten), 3) if rewritten else None,
        "warning": None,
    }
    a, b = report["rewrite_nll"], report["original_nll_on_rewritten_rows"]
    if a is None:
        report["warning"] = "no row was rewritten: the training data is the original data (plain SFT)"
    elif a >= b:
        report["warning"] = (f"the kept rewrites are NOT closer to the seed model than the originals "
                             f"(NLL {a:.3f} vs {b:.3f}): try --select min-nll with --samples 4, or another "
                             f"rewrite template")
    return report
