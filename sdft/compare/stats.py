"""Statistics of a comparison: pure, seeded functions of per-prompt score matrices (numpy only).

Notation. On one suite every model answers the same P prompts; an item's score is on the
suite's 0-100 scale (100/0 for a rate suite). A method trained with S seeds gives an S x P
matrix X (rows: training seeds; columns: prompts, in the same order for every model); the
seed model, decoded greedily once, gives a 1 x P matrix.

* **Mean and interval** (:func:`interval`): the point estimate is the mean of X. The 95%
  interval is a two-way percentile bootstrap: each replicate draws S seeds with replacement
  from the rows and P prompts with replacement from the columns, and takes the mean of the
  drawn cells. The prompt draw is *shared* by all drawn seeds of a replicate (and by every
  matrix in a difference), because the prompts are the same items for every seed: drawing
  prompts independently per seed would treat them as different samples and shrink the prompt
  variance by the number of seeds. With one seed this is the ordinary prompt bootstrap.
* **Differences** (Δ vs the seed model, method vs baseline): the same bootstrap on
  ``mean(X_a) - mean(X_b)``, seeds of each method drawn independently, prompts drawn once per
  replicate for both (paired on prompts). With one seed each, this is the paired bootstrap of
  the per-prompt difference; with several, the per-prompt difference of seed averages.
* **p-value**: for a suite whose items are all 0 or 100, the exact McNemar test on the
  seed-averaged discordant pairs (:func:`discordance`, :func:`mcnemar_exact`); otherwise the
  two-sided null-shifted bootstrap p-value of the difference (:func:`bootstrap_p`).
* **Minimum detectable difference** at 80% power and two-sided alpha 0.05: for 0/1 suites
  from the observed discordance with Connor's (1987) McNemar sample-size formula
  (:func:`mde_mcnemar`); otherwise ``(z_0.975 + z_0.8) * SE`` with SE the standard deviation of
  the bootstrap replicates (:func:`mde_normal`; with one seed, ``sd(per-prompt diff) / sqrt(P)``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

ALPHA = 0.05
POWER = 0.8
_CHUNK = 256  # bootstrap replicates per batch: bounds memory at CHUNK x P weights


def stable_int(*parts: object) -> int:
    """A 63-bit integer from ``parts`` that is the same in every process (for seeding)."""
    return int(hashlib.sha256(repr(parts).encode("utf-8")).hexdigest()[:15], 16)


def _as_matrix(x: np.ndarray | Sequence[float]) -> np.ndarray:
    m = np.asarray(x, dtype=float)
    if m.ndim == 1:
        m = m[None, :]
    if m.ndim != 2 or m.shape[0] < 1 or m.shape[1] < 1:
        raise ValueError(f"expected a non-empty seeds x prompts matrix, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError("scores must be finite")
    return m


def replicates(terms: Sequence[tuple[np.ndarray, float]], n_boot: int, seed: int) -> np.ndarray:
    """Two-way bootstrap replicates of ``sum(weight * mean(matrix))`` over ``terms``.

    Args:
        terms: ``(matrix, weight)`` pairs; every matrix is seeds x prompts with the same prompt
            columns (a vector counts as one seed).
        n_boot: number of replicates.
        seed: seed of the generator.

    Returns:
        ``n_boot`` replicate values: per replicate, one shared draw of P prompts with
        replacement, and for each matrix an independent draw of its seeds with replacement.
    """
    mats = [(_as_matrix(m), float(w)) for m, w in terms]
    p = mats[0][0].shape[1]
    if any(m.shape[1] != p for m, _ in mats):
        raise ValueError("every matrix needs the same prompts (columns)")
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    for start in range(0, n_boot, _CHUNK):
        b = min(_CHUNK, n_boot - start)
        # prompt weights: how often each prompt was drawn (a multinomial draw of P prompts)
        w = rng.multinomial(p, np.full(p, 1.0 / p), size=b).astype(float)  # b x P
        total = np.zeros(b)
        for m, weight in mats:
            s = m.shape[0]
            row_means = (m @ w.T).T / p  # b x S: each seed's mean over the drawn prompts
            cs = rng.multinomial(s, np.full(s, 1.0 / s), size=b) if s > 1 else np.ones((b, 1))
            total += weight * (cs * row_means).sum(axis=1) / s
        out[start:start + b] = total
    return out


def interval(terms: Sequence[tuple[np.ndarray, float]], n_boot: int = 2000, seed: int = 0,
             level: float = 0.95) -> dict[str, float]:
    """Point estimate, percentile interval and bootstrap SE of ``sum(weight * mean(matrix))``.

    Returns:
        ``{"estimate", "low", "high", "se"}`` (the estimate is the observed value, not the
        replicates' mean).
    """
    return _interval(terms, n_boot, seed, level)[0]


def _interval(terms: Sequence[tuple[np.ndarray, float]], n_boot: int, seed: int,
              level: float = 0.95) -> tuple[dict[str, float], np.ndarray]:
    est = float(sum(w * _as_matrix(m).mean() for m, w in terms))
    reps = replicates(terms, n_boot, seed)
    lo, hi = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2])
    return {"estimate": est, "low": float(lo), "high": float(hi), "se": float(reps.std(ddof=1))}, reps


def bootstrap_p(reps: np.ndarray, estimate: float) -> float:
    """Two-sided bootstrap p-value of ``estimate != 0`` (null-shifted, Efron & Tibshirani 16.4).

    The replicates are centred on zero (the null) and compared with the observed estimate:
    ``p = (1 + #{|r - estimate| >= |estimate|}) / (B + 1)``, so p is never 0.
    """
    tol = 1e-9 * max(1.0, abs(estimate))
    extreme = int(np.sum(np.abs(reps - estimate) >= abs(estimate) - tol))
    return (1 + extreme) / (len(reps) + 1)


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value: binomial test of ``min(b, c)`` in ``b + c`` at 1/2.

    ``p = min(1, 2 * P[X <= min(b, c)])`` with ``X ~ Binomial(b + c, 1/2)``; 1 when there are no
    discordant pairs.
    """
    if b < 0 or c < 0:
        raise ValueError("discordant counts must be >= 0")
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    term, tail = 1, 1  # C(n, 0)
    for i in range(1, k + 1):
        term = term * (n - i + 1) // i
        tail += term
    return min(1.0, 2 * tail / (1 << n))  # exact integers; the division rounds once


def discordance(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Seed-averaged discordant pairs of two 0/1 (or 0/100) score matrices on the same prompts.

    With ``pa_i`` and ``pb_i`` the shares of seeds that pass prompt i, every seed of ``a`` is
    paired with every seed of ``b``: ``n10 = sum_i pa_i (1 - pb_i)`` (a passes, b fails) and
    ``n01 = sum_i (1 - pa_i) pb_i``. Counts stay in units of prompts (no pseudo-replication over
    seeds); with one seed each they are the classic McNemar counts.
    """
    pa = (_as_matrix(a) > 0).mean(axis=0)
    pb = (_as_matrix(b) > 0).mean(axis=0)
    return float(np.sum(pa * (1 - pb))), float(np.sum((1 - pa) * pb))


def is_binary(*mats: np.ndarray) -> bool:
    """Whether every item score is 0 or 100 (a rate suite: McNemar applies)."""
    return all(np.isin(_as_matrix(m), (0.0, 100.0)).all() for m in mats)


def _z(alpha: float, power: float) -> tuple[float, float]:
    nd = NormalDist()
    return nd.inv_cdf(1 - alpha / 2), nd.inv_cdf(power)


def mde_normal(se: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest true difference a two-sided level-alpha test detects with ``power``: ``(z_a + z_b) * se``."""
    za, zb = _z(alpha, power)
    return (za + zb) * se


def mde_mcnemar(psi: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """Minimum detectable difference in proportions for McNemar's test (Connor 1987).

    Solves ``sqrt(n) * d = z_a * sqrt(psi) + z_b * sqrt(psi - d^2)`` for ``d`` by bisection, where
    ``psi`` is the share of discordant prompts and ``n`` the number of prompts.

    Returns:
        ``d`` (a proportion; multiply by 100 for points), or None when no difference up to
        ``sqrt(psi)`` is detectable (no discordance observed, or too few prompts).
    """
    if n < 1 or psi <= 0:
        return None
    za, zb = _z(alpha, power)
    g = lambda d: math.sqrt(n) * d - za * math.sqrt(psi) - zb * math.sqrt(max(psi - d * d, 0.0))
    hi = math.sqrt(psi)
    if g(hi) < 0:
        return None
    lo = 0.0
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if g(mid) < 0 else (lo, mid)
    return hi


def compare(a: np.ndarray, b: np.ndarray, *, n_boot: int = 2000, seed: int = 0) -> dict[str, object]:
    """``mean(a) - mean(b)`` on the same prompts: interval, p-value and minimum detectable difference.

    Args:
        a: seeds x prompts scores of the model(s) being tested.
        b: seeds x prompts scores of the reference (the seed model or the baseline method).

    Returns:
        ``estimate, low, high, se`` (points), ``p``, ``test`` (``mcnemar`` for 0/1 suites, else
        ``bootstrap``), ``p_bootstrap``, ``mde`` (points, or None) and, for McNemar, ``n10``/``n01``
        (seed-averaged discordant pairs) and ``n`` (prompts).
    """
    a, b = _as_matrix(a), _as_matrix(b)
    iv, reps = _interval([(a, 1.0), (b, -1.0)], n_boot, seed)
    out: dict[str, object] = {**iv, "p_bootstrap": bootstrap_p(reps, iv["estimate"]), "n": a.shape[1]}
    if is_binary(a, b):
        n10, n01 = discordance(a, b)
        out.update(test="mcnemar", n10=n10, n01=n01, p=mcnemar_exact(round(n10), round(n01)))
        d = mde_mcnemar((n10 + n01) / a.shape[1], a.shape[1])
        out["mde"] = None if d is None else 100 * d
    else:
        out.update(test="bootstrap", p=out["p_bootstrap"], mde=mde_normal(iv["se"]))
    return out


def summarise(x: np.ndarray, *, n_boot: int = 2000, seed: int = 0) -> dict[str, object]:
    """Mean over seeds and prompts with its two-way bootstrap interval, and each seed's mean."""
    x = _as_matrix(x)
    iv = interval([(x, 1.0)], n_boot, seed)
    per_seed = x.mean(axis=1)
    return {**iv, "n": x.shape[1], "seeds": x.shape[0], "per_seed": [float(v) for v in per_seed],
            "seed_sd": float(per_seed.std(ddof=1)) if x.shape[0] > 1 else 0.0}
