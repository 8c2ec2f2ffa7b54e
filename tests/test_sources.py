"""The answer-source ladder without a model: requests per source, hint leaks, shape checks,
pooled selection, and the gap-closed arithmetic on a hand-made example."""

from __future__ import annotations

import pytest

from sdft.data import Example
from sdft.gap import gap_closed, gap_report
from sdft.prompts import RewritePrompt
from sdft.select import Candidate, decide, repetition, shape_check
from sdft.sources import build_requests, check_hint_leak, check_sources, hint_of, usable_sources
from sdft.verify import get_verifier
from sdft.verify.base import PASS, Verdict

Q = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many in all?"
REF = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72"
EX = Example(id="r1", index=0, messages=[{"role": "user", "content": Q}], answer=REF)
OWN = "Natalia sold 48 clips in April. In May she sold 48 / 2 = 24 clips. So she sold 48 + 24 = 80 clips."


def render(messages):
    return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"


def requests(source, verifier="math", own=OWN, k=4, own_prefix=True):
    return build_requests(source, EX, verifier=get_verifier(verifier), rewrite_prompt=RewritePrompt(), k=k,
                          own_answer=own, render=render, own_prefix=own_prefix)


def test_hint_is_the_verifiers_final_answer_only():
    assert hint_of(get_verifier("math"), EX) == "72"
    (req,) = requests("hint", own=None)
    user = req.prompt[-1]["content"]
    assert Q in user and "72" in user and "48/2" not in user and "Natalia sold 48+24" not in user
    assert hint_of(get_verifier("none"), EX) is None


def test_own_and_reference_requests():
    (own,) = requests("own")
    assert own.prompt == EX.messages and own.n == 4 and own.prefix == ""
    reqs = requests("reference", own=None)
    assert len(reqs) == 1 and REF in reqs[0].prompt[-1]["content"]


def test_half_the_candidates_continue_the_seeds_supported_prefix():
    prefixed, fresh = requests("hint")
    # the own answer is kept up to its first unsupported step (48 + 24 = 80 is wrong)
    assert prefixed.prefix == "Natalia sold 48 clips in April. In May she sold 48 / 2 = 24 clips."
    assert isinstance(prefixed.prompt, str) and prefixed.prompt.endswith(prefixed.prefix)
    assert (prefixed.n, fresh.n) == (2, 2) and fresh.prefix == ""
    # no prefix: off, a single sample, or a verifier that cannot check numbers
    assert len(requests("hint", own_prefix=False)) == 1
    assert len(requests("hint", k=1)) == 1
    (plain,) = requests("reference", verifier="exact")  # one request, all k samples from scratch
    assert plain.prefix == "" and plain.n == 4


@pytest.mark.parametrize("text", [
    "Using the given answer of 72, we work backwards.", "The hint says 72.", "We are told the answer is 72.",
    "As stated, the final answer is 72.", "The expected result is 72.", "According to the reference, 72.",
])
def test_hint_leaks_are_rejected(text):
    v = check_hint_leak(text)
    assert not v.ok and v.reason == "hint-leak"


@pytest.mark.parametrize("text", [OWN, "She sold 24 clips in May, so 48 + 24 = 72 clips in all.\n#### 72",
                                  "Answer: 72 clips. She gives 2 to her friends."])
def test_ordinary_solutions_do_not_leak(text):
    assert check_hint_leak(text) is PASS


def test_shape_checks_reject_loops_and_padding_not_normal_answers():
    loop = "She makes 2 drawings per hour. " * 5
    assert repetition(loop) and shape_check(loop, 40, own_tokens=100, max_length_ratio=2).reason == "repetition"
    assert repetition("ab" * 400)
    assert shape_check(OWN, 300, own_tokens=100, max_length_ratio=2).reason == "too-long"
    assert shape_check(OWN, 190, own_tokens=100, max_length_ratio=2).ok
    assert shape_check(OWN, 900, own_tokens=100, max_length_ratio=0).ok  # off
    assert repetition(REF) is None and repetition(OWN) is None


def cand(source, nll, ok=True):
    return Candidate(f"{source}-{nll}", "stop", 10, PASS if ok else Verdict(False, "wrong-answer"), nll, source)


def test_pooled_selection_keeps_the_likeliest_passing_candidate_ties_by_preference():
    pool = [cand("reference", 1.2), cand("hint", 0.7), cand("own", 0.4, ok=False), cand("own", 0.9)]
    d = decide(pool, REF, "min-nll", "keep-original", preference=("own", "hint", "reference"))
    assert (d.status, d.source, d.response, d.chosen) == ("rewritten", "hint", "hint-0.7", 1)
    tie = [cand("reference", 0.5), cand("own", 0.5)]
    assert decide(tie, REF, "min-nll", "keep-original", preference=("own", "reference")).source == "own"
    assert decide(tie, REF, "first", "keep-original", preference=("own", "reference")).source == "own"
    d = decide([cand("own", 0.1, ok=False)], REF, "min-nll", "keep-original")
    assert (d.status, d.source, d.response) == ("fallback", "original", REF)


def test_gap_closed_over_all_rows_on_a_hand_made_example():
    # three rows: original 1.5 each, own 0.5 each; row 1 kept at 0.5 (100%), row 2 at 1.0 (50%),
    # row 3 falls back (0%): mean kept = (0.5 + 1.0 + 1.5) / 3 = 1.0 -> (1.5 - 1.0) / (1.5 - 0.5) = 50%
    rows = [
        {"original": "a", "status": "rewritten", "source": "own", "nll": {"original": 1.5, "own": 0.5, "kept": 0.5}},
        {"original": "b", "status": "rewritten", "source": "hint", "nll": {"original": 1.5, "own": 0.5, "kept": 1.0}},
        {"original": "c", "status": "fallback", "source": "original",
         "nll": {"original": 1.5, "own": 0.5, "kept": 1.5}},
    ]
    rep = gap_report(rows, sources={"own": {"generated_tokens": 300}, "hint": {"generated_tokens": 300}})
    assert rep["gap_closed"] == 0.5 and rep["acceptance"] == round(2 / 3, 4)
    assert rep["kept_nll"] == 1.0 and rep["own_answer_nll"] == 0.5 and rep["original_nll"] == 1.5
    assert rep["per_source"]["own"]["rows"] == 1 and rep["per_source"]["original"]["nll"] == 1.5
    assert rep["generated_tokens_per_kept_row"] == 300.0 and rep["warning"] is None
    assert gap_closed(1.5, 1.5, 0.5) == 0 and gap_closed(1.0, 0.9, 1.0) is None
    worse = [{**rows[0], "nll": {"original": 1.0, "own": 0.5, "kept": 1.2}}]
    assert "NOT closer" in gap_report(worse)["warning"]


def test_source_lists_are_checked():
    assert check_sources(["own", "hint", "reference", "original"], "math") == []
    assert any("unknown" in p for p in check_sources(["own", "guess"], "math"))
    assert any("twice" in p for p in check_sources(["own", "own"], "math"))
    assert usable_sources(["own", "hint", "reference", "original"], "none") == (["reference", "original"],
                                                                                ["own", "hint"])
