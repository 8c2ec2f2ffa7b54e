"""The distribution-gap report: how much closer to the seed model are the kept answers?

SDFT exists to lower the seed model's negative log-likelihood (NLL) of its training targets:
the model is then fine-tuned on text it already finds likely, so it moves less. Everything here
is measured under the *training* prompt (the question alone), per row, in NLL per token:

* ``original``: the reference answer;
* ``kept``: the answer the row will be trained on (the original itself for a fallback row);
* ``own``: the model's own unaided greedy answer (the floor: what the model says by itself).

**Gap closed over all rows** = (mean original − mean kept) / (mean original − mean own), means
over rows (each row weighs the same, whatever its length), fallback rows counting as 0%
closed. 0% is plain SFT, 100% is training on answers as likely as the model's own. Beside it:
acceptance (rows whose kept answer is not the original), rows and NLL per source, generated
tokens per kept row, wall time per source, and the total NLL and length of the kept answers
(per-token NLL alone can be lowered by padding).

:func:`gap_report` reads these from the records of a finished rewrite (the rewrite stage stores
``nll`` per row); :func:`score_records` fills them in for records that lack them (older
outputs, ``sdft inspect --gap``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

from sdft.engines import Engine, SamplingConfig
from sdft.errors import InputError


def _mean(xs: list[float]) -> float | None:
    return round(sum(xs) / len(xs), 4) if xs else None


def gap_closed(original: float | None, kept: float | None, own: float | None) -> float | None:
    """(original − kept) / (original − own), or None when undefined (no gap to close)."""
    if original is None or kept is None or own is None or original - own <= 1e-9:
        return None
    return round((original - kept) / (original - own), 4)


def gap_report(records: Iterable[dict[str, Any]], *, sources: dict[str, dict[str, Any]] | None = None
               ) -> dict[str, Any] | None:
    """The gap report of rewrite records that carry ``nll`` figures (see the module docstring).

    Args:
        records: rewrite records; each may hold ``nll = {"original", "kept", "own", "kept_tokens",
            "kept_total"}`` (per-token NLLs, the kept answer's length and total NLL).
        sources: per-source tallies from the run (``generated_tokens``, ``seconds``,
            ``candidates``, ``passed``), merged into the per-source table.

    Returns:
        The report, or None when no record has NLL figures.
    """
    rows = [r for r in records if r.get("original") is not None and (r.get("nll") or {}).get("original") is not None]
    if not rows:
        return None
    with_own = [r for r in rows if r["nll"].get("own") is not None]
    orig = [r["nll"]["original"] for r in rows]
    kept = [r["nll"]["kept"] if r["nll"].get("kept") is not None else r["nll"]["original"] for r in rows]
    accepted = [r for r in rows if r.get("status") == "rewritten"]
    per_source: dict[str, dict[str, Any]] = {}
    for r in rows:
        src = r.get("source") or ("original" if r.get("status") != "rewritten" else "reference")
        s = per_source.setdefault(src, {"rows": 0, "nll": []})
        s["rows"] += 1
        s["nll"].append(r["nll"]["kept"] if r["nll"].get("kept") is not None else r["nll"]["original"])
    for name, tally in (sources or {}).items():
        per_source.setdefault(name, {"rows": 0, "nll": []}).update(tally)
    generated = sum(int(t.get("generated_tokens") or 0) for t in (sources or {}).values())
    report: dict[str, Any] = {
        "rows": len(rows),
        "rows_with_own_answer": len(with_own),
        "original_nll": _mean(orig),
        "kept_nll": _mean(kept),
        "own_answer_nll": _mean([r["nll"]["own"] for r in with_own]),
        "gap_closed": None,
        "acceptance": round(len(accepted) / len(rows), 4),
        "kept_tokens_mean": _mean([float(r["nll"].get("kept_tokens") or 0) for r in rows]),
        "kept_total_nll_mean": _mean([float(r["nll"].get("kept_total") or 0) for r in rows]),
        "original_nll_on_rewritten_rows": _mean([r["nll"]["original"] for r in accepted]),
        "rewrite_nll": _mean([r["nll"]["kept"] for r in accepted if r["nll"].get("kept") is not None]),
        "generated_tokens_per_kept_row": round(generated / len(accepted), 1) if accepted and generated else None,
        "per_source": {k: {**{kk: vv for kk, vv in v.items() if kk != "nll"}, "nll": _mean(v["nll"])}
                       for k, v in per_source.items()},
        "warning": None,
    }
    if with_own:
        # the closure is computed on the rows that have the model's own answer (all rows in ladder runs)
        o = _mean([r["nll"]["original"] for r in with_own])
        k = _mean([r["nll"]["kept"] if r["nll"].get("kept") is not None else r["nll"]["original"] for r in with_own])
        report["gap_closed"] = gap_closed(o, k, report["own_answer_nll"])
    report["warning"] = _warning(report)
    return report


def _warning(report: dict[str, Any]) -> str | None:
    if report["acceptance"] == 0:
        return "no row was rewritten: the training data is the original data (plain SFT)"
    closed = report.get("gap_closed")
    if closed is not None and closed <= 0:
        return (f"the kept answers are NOT closer to the seed model than the originals (gap closed "
                f"{closed:.0%}): enable more sources (--sources own,hint,reference,original) or samples")
    a, b = report.get("rewrite_nll"), report.get("original_nll_on_rewritten_rows")
    if closed is None and a is not None and b is not None and a >= b:
        return f"the kept rewrites are NOT closer to the seed model than the originals (NLL {a:.3f} vs {b:.3f})"
    return None


def score_records(engine: Engine, records: Iterable[dict[str, Any]], *, limit: int | None = 64, seed: int = 0,
                  own_max_new_tokens: int = 256) -> list[dict[str, Any]]:
    """Fill in ``nll`` (original, kept, own) for the first ``limit`` records with a reference answer.

    Generates the model's own greedy answers for rows that lack one; for ``sdft inspect --gap``
    and outputs written before the rewrite stage stored these figures.
    """
    sample = [dict(r) for r in itertools.islice((r for r in records if r.get("original") is not None), limit)]
    if not sample:
        raise InputError("no row has an original answer to compare with: the distribution gap needs a rewrite "
                         "output (a replay output's answers are the model's own already)")
    prompts = [r["messages"] for r in sample]
    original = engine.score(prompts, [r["original"] for r in sample])
    rewritten = [i for i, r in enumerate(sample) if r["status"] == "rewritten"]
    kept = dict(zip(rewritten, engine.score([prompts[i] for i in rewritten],
                                            [sample[i]["response"] for i in rewritten]))) if rewritten else {}
    own_gen = engine.generate(prompts, SamplingConfig(max_new_tokens=own_max_new_tokens, seed=seed))
    own = engine.score(prompts, [g.completions[0].text for g in own_gen])
    for i, r in enumerate(sample):
        k = kept.get(i, original[i])
        r["nll"] = {"original": original[i].mean_nll, "kept": k.mean_nll, "own": own[i].mean_nll,
                    "kept_tokens": k.num_tokens, "kept_total": k.nll}
    return sample
