"""sdft.compare.stats on hand-made examples whose answers are known (no model; fast)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sdft.compare import stats


@pytest.mark.parametrize("b, c, p", [
    (0, 6, 2 / 2**6),                 # all 6 discordant pairs one way: 2 * 0.5^6 = 0.03125
    (2, 8, 2 * (1 + 10 + 45) / 1024),  # 2 * P[X <= 2], X ~ Bin(10, 1/2) = 0.109375
    (8, 2, 2 * (1 + 10 + 45) / 1024),  # symmetric
    (5, 5, 1.0),                      # balanced: capped at 1
    (0, 0, 1.0),                      # no discordance: no evidence
    (0, 40, 2 / 2**40),               # certainly significant
])
def test_mcnemar_exact_by_hand(b, c, p):
    assert stats.mcnemar_exact(b, c) == pytest.approx(p, rel=1e-12)


def test_mcnemar_rejects_negative_counts():
    with pytest.raises(ValueError):
        stats.mcnemar_exact(-1, 3)


def test_discordance_one_seed_is_the_classic_count_and_seeds_average():
    a = np.array([[100, 100, 0, 0, 100]])
    b = np.array([[0, 100, 100, 0, 0]])
    assert stats.discordance(a, b) == (2.0, 1.0)  # prompts 0 and 4 only a passes; prompt 2 only b
    # two seeds of a: pass shares (1, .5, .5); one seed of b: (0, 0, 1)
    a2 = np.array([[100, 0, 100], [100, 100, 0]])
    b2 = np.array([[0, 0, 100]])
    n10, n01 = stats.discordance(a2, b2)
    assert (n10, n01) == (pytest.approx(1 * 1 + 0.5 * 1 + 0.5 * 0), pytest.approx(0.5 * 1))


@pytest.mark.parametrize("shape", [(1, 30), (3, 30), (5, 7)])
def test_bootstrap_on_constant_data_is_a_point(shape):
    x = np.full(shape, 62.5)
    s = stats.summarise(x, n_boot=300, seed=1)
    assert (s["estimate"], s["low"], s["high"], s["se"]) == (62.5, 62.5, 62.5, 0.0)
    assert s["per_seed"] == [62.5] * shape[0] and s["seed_sd"] == 0.0


def test_certainly_significant_differences():
    rng = np.random.default_rng(0)
    base = rng.normal(50, 10, size=(1, 200))
    shifted = stats.compare(base + 5, base, n_boot=500, seed=0)  # every prompt +5 points
    assert shifted["test"] == "bootstrap" and shifted["estimate"] == pytest.approx(5)
    assert shifted["low"] == pytest.approx(5) and shifted["high"] == pytest.approx(5)
    assert shifted["p"] == pytest.approx(1 / 501)  # the smallest p 500 replicates can give
    good = np.full((2, 40), 100.0)
    bad = np.zeros((3, 40))
    r = stats.compare(good, bad, n_boot=500, seed=0)
    assert r["test"] == "mcnemar" and (r["n10"], r["n01"]) == (40, 0)
    assert r["p"] == pytest.approx(2 / 2**40) and r["low"] == r["high"] == 100.0


def test_certainly_not_significant_differences():
    rng = np.random.default_rng(1)
    x = (rng.random((1, 50)) < 0.5) * 100.0
    same = stats.compare(x, x, n_boot=500, seed=0)  # a model against itself
    assert same["estimate"] == 0 and same["p"] == 1.0 and same["low"] == same["high"] == 0.0
    # two seeds that disagree, against the same two seeds: each side's seeds are drawn on their own,
    # so the interval shows the seed variance around a difference of 0
    x2 = (rng.random((2, 50)) < 0.5) * 100.0
    same2 = stats.compare(x2, x2, n_boot=500, seed=0)
    assert same2["estimate"] == 0 and same2["p"] == 1.0 and same2["low"] < 0 < same2["high"]
    cont = rng.normal(50, 10, size=(1, 50))
    r = stats.compare(cont, cont, n_boot=500, seed=0)
    assert r["test"] == "bootstrap" and r["p"] == 1.0 and r["mde"] == 0.0
    # balanced discordance: 10 prompts a wins, 10 b wins
    a = np.array([[100.0] * 10 + [0.0] * 10 + [100.0] * 30])
    b = np.array([[0.0] * 10 + [100.0] * 10 + [100.0] * 30])
    r = stats.compare(a, b, n_boot=500, seed=0)
    assert r["test"] == "mcnemar" and r["p"] == 1.0 and r["low"] < 0 < r["high"]


def test_interval_covers_seed_variance():
    # no prompt variance at all, seeds differ: a prompt-only bootstrap would give [70, 70]
    x = np.array([[50.0] * 40, [70.0] * 40, [90.0] * 40])
    s = stats.summarise(x, n_boot=2000, seed=0)
    assert s["estimate"] == 70 and s["low"] < 60 and s["high"] > 80
    assert s["seed_sd"] == pytest.approx(20)


def test_prompt_draw_is_shared_by_seeds():
    # two seeds that answered identically are one seed's worth of prompt information: the interval
    # must not shrink by sqrt(2), as it would if each seed drew its prompts independently
    v = np.random.default_rng(3).normal(50, 15, size=400)
    one = stats.summarise(v[None, :], n_boot=3000, seed=0)
    two = stats.summarise(np.stack([v, v]), n_boot=3000, seed=0)
    assert (two["high"] - two["low"]) == pytest.approx(one["high"] - one["low"], rel=0.1)
    assert one["se"] == pytest.approx(v.std(ddof=1) / math.sqrt(400), rel=0.1)


def test_paired_difference_is_tighter_than_unpaired_spread():
    # the same prompts are hard for both models: pairing removes the prompt difficulty from the Δ
    rng = np.random.default_rng(4)
    difficulty = rng.normal(50, 20, size=300)
    a = difficulty[None, :] + rng.normal(2, 1, size=(1, 300))
    r = stats.compare(a, difficulty, n_boot=1000, seed=0)
    assert 1.7 < r["low"] < 2 < r["high"] < 2.3 and r["p"] < 0.01


def test_mde_normal_and_mcnemar():
    za, zb = 1.959963984540054, 0.8416212335729143
    assert stats.mde_normal(1.0) == pytest.approx(za + zb)
    d = stats.mde_mcnemar(0.2, 100)
    assert d is not None and 0 < d < math.sqrt(0.2)
    # it solves Connor's equation
    assert math.sqrt(100) * d == pytest.approx(za * math.sqrt(0.2) + zb * math.sqrt(0.2 - d * d), rel=1e-9)
    assert stats.mde_mcnemar(0.2, 400) < d  # more prompts detect smaller differences
    assert stats.mde_mcnemar(0.0, 100) is None  # no discordance observed
    assert stats.mde_mcnemar(0.5, 3) is None  # 3 prompts cannot reach significance at all


def test_mde_from_observed_variance_one_seed():
    rng = np.random.default_rng(5)
    a, b = rng.normal(50, 10, size=(1, 300)), rng.normal(50, 10, size=(1, 300))
    r = stats.compare(a, b, n_boot=3000, seed=0)
    sd = float(np.std(a - b, ddof=1))
    assert r["mde"] == pytest.approx(2.8016 * sd / math.sqrt(300), rel=0.1)


def test_seeded_and_reproducible(in_other_process):
    x = np.random.default_rng(6).normal(50, 10, size=(3, 60))
    assert stats.summarise(x, n_boot=400, seed=7) == stats.summarise(x, n_boot=400, seed=7)
    assert stats.summarise(x, n_boot=400, seed=7) != stats.summarise(x, n_boot=400, seed=8)  # the seed is used
    # stable_int seeds the bootstrap of every compare run: the same in every process, not just this one
    here = stats.stable_int("task", "sdft")
    assert here != stats.stable_int("sdft", "task")
    assert in_other_process("from sdft.compare import stats", 'stats.stable_int("task", "sdft")') == here


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError):
        stats.compare(np.zeros((1, 3)), np.zeros((1, 4)))
    with pytest.raises(ValueError):
        stats.summarise(np.array([[np.nan, 1.0]]))
    assert stats.is_binary(np.array([0.0, 100.0])) and not stats.is_binary(np.array([0.0, 50.0]))
