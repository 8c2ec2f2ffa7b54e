"""Magpie-style replay: pre-query derivation, filters, duplicates, and real runs on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdft.errors import ConfigError, InputError
from sdft.replay import (
    ReplayConfig,
    answer_stop_strings,
    build_pre_query,
    pre_query_template,
    query_stop_strings,
    round_seed,
    run_replay,
)
from sdft.replay_filters import (
    ANSWER_CHECKS,
    QUERY_CHECKS,
    REASONS,
    Deduplicator,
    FilterRules,
    check_answer,
    check_query,
    dedup,
    is_language,
    jaccard,
    keep_refusal,
    looks_like_request,
    shingles,
)
from sdft.store import iter_jsonl, iter_records, read_manifest

LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
# Alpaca-style: the system prompt is a bare preamble and turns are plain-text headers.
ALPACA = (
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\n\n' }}{% endif %}"
    "{% for m in messages if m['role'] != 'system' %}"
    "{% if m['role'] == 'user' %}{{ '### Instruction:\n' + m['content'] + '\n\n' }}"
    "{% else %}{{ '### Response:\n' + m['content'] + '\n\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Response:\n' }}{% endif %}"
)
# Mistral-style: the system prompt is folded into the user turn, which ends with [/INST].
MISTRAL = (
    "{{ bos_token }}{% set sys = messages[0]['content'] + '\n\n' if messages[0]['role'] == 'system' else '' %}"
    "{% for m in messages if m['role'] != 'system' %}{% if m['role'] == 'user' %}"
    "{{ '[INST] ' + (sys if loop.first else '') + m['content'] + ' [/INST]' }}"
    "{% else %}{{ m['content'] + eos_token }}{% endif %}{% endfor %}"
)
NO_SYSTEM = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{{ '<start_of_turn>' + m['role'] + '\n' + m['content'] + '<end_of_turn>\n' }}{% endfor %}"
)


@pytest.fixture()
def tok(tiny_model_dir: Path):
    """A fresh copy of the tiny ChatML tokenizer (tests swap its chat template)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


# ---------------------------------------------------------------------------------------------
# pre-query derivation


def test_pre_query_chatml(tok):
    assert pre_query_template(tok) == "<|im_start|>user\n"
    assert pre_query_template(tok, "Be brief.") == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n"
    # <|im_end|> is a special token: the engine stops on its id, no stop string needed
    assert query_stop_strings(tok) == () and answer_stop_strings(tok) == ()


def test_pre_query_chatml_with_default_system_turn(tok):
    # SmolLM2's template inserts a default system turn when there is none: it belongs in the pre-query
    tok.chat_template = (
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n' }}{% endif %}"
        "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    want = "<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n<|im_start|>user\n"
    assert pre_query_template(tok) == want
    pq = build_pre_query(ReplayConfig(output="x.jsonl"), tok)
    assert pq.context_lines == ("You are a helpful AI assistant.",)


def test_pre_query_llama3(tok):
    tok.chat_template = LLAMA3
    bos = tok.bos_token
    assert pre_query_template(tok) == f"{bos}<|start_header_id|>user<|end_header_id|>\n\n"
    assert pre_query_template(tok, "Be brief.") == (
        f"{bos}<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n"
    )
    # in this tokenizer <|eot_id|> is plain text, so it must be a stop string
    assert query_stop_strings(tok) == ("<|eot_id|>",)
    tok.add_special_tokens({"additional_special_tokens": ["<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]})
    assert query_stop_strings(tok) == ()  # now a special token: the engine's stop ids apply


def test_pre_query_custom_templates(tok):
    tok.chat_template = ALPACA
    assert pre_query_template(tok) == "### Instruction:\n"
    assert pre_query_template(tok, "Be brief.") == "Be brief.\n\n### Instruction:\n"
    assert query_stop_strings(tok) == ("### Response:",)
    assert answer_stop_strings(tok) == ("### Instruction:",)
    tok.chat_template = MISTRAL
    assert pre_query_template(tok, "Be brief.") == f"{tok.bos_token}[INST] Be brief.\n\n"
    assert query_stop_strings(tok) == ("[/INST]",)
    assert answer_stop_strings(tok) == ()  # the answer ends with eos, a special token


def test_pre_query_failures_and_override(tok):
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(ConfigError, match="nothing before the user message"):
        pre_query_template(tok)
    tok.chat_template = "{% for m in messages %}{{ m['content'] + m['content'] }}{% endfor %}"
    with pytest.raises(ConfigError, match="2 times"):
        pre_query_template(tok)
    tok.chat_template = NO_SYSTEM
    assert pre_query_template(tok) == "<start_of_turn>user\n"
    with pytest.raises(ConfigError, match="--pre-query"):
        pre_query_template(tok, "Be brief.")
    pq = build_pre_query(ReplayConfig(output="x.jsonl", pre_query="<start_of_turn>user\nBe brief. ",
                                      system_prompt="Be brief."), tok)
    assert pq.text == "<start_of_turn>user\nBe brief. " and not pq.derived
    assert "<start_of_turn>" in pq.markers


def test_config_problems_are_collected():
    with pytest.raises(ConfigError) as e:
        ReplayConfig(output="o.jsonl", num=0, query_temperature=0, language="xx", refusals="maybe",
                     near_dup_threshold=1.5)
    assert len(e.value.problems) == 5


def test_round_seeds_do_not_overlap():
    seeds = [round_seed(0, r, 64) for r in range(50)]
    # round r samples with seeds s_r .. s_r + 63 (vLLM's n samples): no seed may serve two samples
    assert len({(s + i) % 2**31 for s in seeds for i in range(64)}) == 50 * 64
    assert round_seed(0, 3, 64) == round_seed(0, 3, 64) != round_seed(1, 3, 64)


# ---------------------------------------------------------------------------------------------
# filters

RULES = FilterRules(min_query_words=3, max_query_words=12, context_lines=("You are a helpful AI assistant.",))


@pytest.mark.parametrize("text, finish, reason", [
    ("What is the capital of France?", "stop", None),
    ("Write a haiku about autumn leaves", "stop", None),
    ("I need a packing list for a week in Norway", "stop", None),
    ("", "stop", "empty"),
    ("   ", "stop", "empty"),
    ("What is the capital of", "length", "truncated"),
    ("Why?", "stop", "too-short"),
    ("Explain " + "very " * 20 + "slowly", "stop", "too-long"),
    ("What is 2+2?<|im_start|>assistant", "stop", "template-leakage"),
    ("What is 2+2?\nassistant\n4", "stop", "template-leakage"),
    ("You are a helpful AI assistant. What is 2+2?", "stop", "template-leakage"),
    ("[INST] What is the time [/INST]", "stop", "template-leakage"),
    ("Sure! Here is a poem about cats.", "stop", "not-a-question"),
    ("The weather was nice yesterday afternoon.", "stop", "not-a-question"),
])
def test_check_query(text, finish, reason):
    assert check_query(text.strip(), finish, RULES)[0] == reason


def test_check_query_language_and_options():
    en = FilterRules(language="en")
    assert check_query("What is the capital of France?", "stop", en)[0] is None
    assert check_query("Quelle est la capitale de la France?", "stop", en)[0] == "language"
    assert check_query("Pourquoi le ciel est-il bleu pendant la journée et rouge le soir?", "stop", en)[0] == "language"
    assert check_query("Что такое машинное обучение?", "stop", en)[0] == "language"
    loose = FilterRules(require_question=False, min_query_words=1)
    assert check_query("Sure! Here is a poem.", "stop", loose)[0] is None
    assert is_language("x = 3 + 4", "en") and not is_language("日本語のテキストです", "en")


@pytest.mark.parametrize("text, finish, refusal, mode, reason", [
    ("Paris is the capital of France.", "stop", False, "keep", None),
    ("", "stop", False, "keep", "answer-empty"),
    ("Paris is the capital", "length", False, "keep", "answer-truncated"),
    ("Paris.", "stop", False, "keep", "answer-too-short"),
    # refusals are exempt from the minimum length: they stay in the share the model gives them
    ("I can't.", "stop", True, "keep", None),
    ("I'm sorry, but I cannot help with that.", "stop", True, "keep", None),
    ("I'm sorry, but I cannot help with that.", "stop", True, "drop", "refusal"),
    ("Answer: 4<|im_end|>", "stop", False, "keep", "answer-leakage"),
    ("User: hi\nBot: hello, a dialogue as asked.", "stop", False, "keep", None),
    (" ".join(["word"] * 30), "stop", False, "keep", "answer-too-long"),
])
def test_check_answer(text, finish, refusal, mode, reason):
    rules = FilterRules(min_answer_words=2, max_answer_words=20, refusals=mode)
    assert check_answer(text, finish, rules, refusal=refusal)[0] == reason


@pytest.mark.parametrize("share", [0.0, 0.05, 0.2, 0.45, 1.0])
def test_refusals_kept_in_proportion(share):
    # passing rows where every other one is a refusal (short answers survive filters more often)
    kept = kept_ref = 0
    for i in range(400):
        if i % 2 == 0 and not keep_refusal(kept_ref, kept, share):
            continue
        kept_ref += i % 2 == 0
        kept += 1
        assert kept_ref <= share * kept + 0.5  # never over-represented by more than half a row
    assert kept_ref / kept == pytest.approx(min(share, 0.5), abs=0.01)


def test_every_reason_is_listed_once():
    assert REASONS == (*QUERY_CHECKS, *ANSWER_CHECKS, "excess-refusal", "surplus", "ok")
    assert len(set(REASONS)) == len(REASONS)


@pytest.mark.parametrize("text, ok", [
    ("How do I bake bread?", True), ("Describe the water cycle", True), ("Can you help me plan a trip", True),
    ("My cat keeps scratching the sofa, any tips", True), ("Certainly! The answer is 4.", False),
    ("Hello! How can I assist you today?", False), ("Bananas are yellow.", False), ("", False),
])
def test_looks_like_request(text, ok):
    assert looks_like_request(text) is ok


# ---------------------------------------------------------------------------------------------
# duplicates


def test_exact_and_near_duplicates_counted_exactly():
    texts = [
        "What is the capital of France?",                       # 0 new
        "what is the capital of FRANCE",                        # 1 exact dup of 0 (case, punctuation)
        "  What   is the capital of France ?!",                 # 2 exact dup of 0 (spacing)
        "Tell me about dogs and cats and their behaviour at home",   # 3 new
        "Tell me about dogs and cats and their behavior at home",    # 4 near dup of 3
        "Write a short story about a cat who learns to fly.",   # 5 new
        "Write a short story about a dog who learns to fly.",   # 6 near dup of 5
        "Write a poem about the sea.",                          # 7 new
        "How do I sort a list in Python?",                      # 8 new
        "How do I sort a dict in Python?",                      # 9 new at 0.7 (jaccard ~0.6)
    ]
    out = dedup(texts, threshold=0.7)
    assert [r for r, _ in out] == [None, "exact-duplicate", "exact-duplicate", None, "near-duplicate", None,
                                   "near-duplicate", None, None, None]
    assert out[1][1] == "same as #0" and out[4][1].endswith("with #3") and out[6][1].endswith("with #5")
    # the LSH candidates agree with the brute-force Jaccard on every pair
    sh = [shingles(t) for t in texts]
    brute = []
    kept: list[int] = []
    for i, s in enumerate(sh):
        dup = any(jaccard(s, sh[j]) >= 0.7 for j in kept)
        brute.append(dup)
        if not dup:
            kept.append(i)
    assert brute == [r is not None for r, _ in out]
    # near check off: only exact duplicates
    assert sum(r is not None for r, _ in dedup(texts, threshold=None)) == 2
    # word shingles: the one-word change in a short query is too much for word trigrams
    assert dedup(texts[3:5], threshold=0.7, ngram=3, unit="word")[1][0] is None


def test_near_duplicate_index_scales_and_is_reproducible(in_other_process):
    import random

    rng = random.Random(0)
    vocab = [f"{a}{b}{c}" for a in "bcdfgklmnprst" for b in "aeiou" for c in "lmnrst"][:300]
    base = [" ".join(rng.sample(vocab, 12)) + "?" for _ in range(300)]
    variants = [t.replace(t.split()[5], t.split()[5][:2] + "x", 1) for t in base]  # one letter changed
    d = Deduplicator(0.7)
    assert all(d.check_and_add(t)[0] is None for t in base)
    assert all(d.check(t)[0] == "near-duplicate" for t in variants)
    # the same verdicts in another process (the shingle hashes must not depend on Python's hash seed)
    verdicts = json.loads(json.dumps(dedup(base + variants)))
    assert in_other_process("from sdft.replay_filters import dedup", f"dedup({base + variants!r})") == verdicts


# ---------------------------------------------------------------------------------------------
# real runs on the tiny model (random weights write garbage: assert on the mechanics)

TINY = dict(batch_size=24, max_rounds=3, query_max_tokens=256, answer_max_tokens=256, require_question=False,
            min_query_words=1, seed=3)


def _run(engine, out: Path, **kw):
    cfg = ReplayConfig(output=str(out), model=engine.model_path, **{**TINY, **kw})
    return run_replay(cfg, engine=engine)


def test_generation_run_counts_manifest_and_format(vllm_tiny, tmp_path):
    out = tmp_path / "replay.jsonl"
    progress = []
    cfg = ReplayConfig(output=str(out), model=vllm_tiny.model_path, num=3, **TINY)
    res = run_replay(cfg, engine=vllm_tiny, on_progress=lambda d, t, **k: progress.append((d, t, k)))
    m = read_manifest(out)
    assert m == res.manifest and m["kind"] == "sdft-replay"
    rows = list(iter_records(out))
    assert m["pre_query"] == "<|im_start|>user\n" and m["pre_query_derived"] and m["stop"] == []
    # every attempt is a row, counted under exactly one reason
    assert len(rows) == m["rows"]["total"] == m["rounds"] * 24 == m["queries_this_run"]
    assert sum(m["filters"].values()) == m["rows"]["total"]
    assert m["filters"] == {k: sum(r["reason"] == k for r in rows) for k in REASONS}
    assert m["rows"]["kept"] == m["filters"]["ok"] == sum(r["status"] == "rewritten" for r in rows) == 3
    assert m["rows"]["dropped"] == m["rows"]["total"] - 3 and m["complete"]
    assert m["filters"]["truncated"] > 0  # random weights rarely close the turn
    assert progress[-1][:2] == (3, 3) and progress[-1][2]["keep_rate"] > 0
    # rewrite-format rows: what sdft inspect and the trainer read
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == len(ids) and [r["index"] for r in rows] == sorted(r["index"] for r in rows)
    for r in rows:
        assert r["source"] == "replay" and r["status"] in ("rewritten", "dropped") and r["original"] is None
        assert r["messages"][-1]["role"] == "user" and "response" in r and "reason" in r
        if r["reason"] == "ok":
            assert r["response"] == r["candidates"][0]["text"] and r["chosen"] == 0 and r["refusal"] is not None
        else:
            assert r["response"] is None
        if r["reason"] in QUERY_CHECKS:
            assert "candidates" not in r and r["attempts"] == 0
    assert not (tmp_path / "replay.jsonl.parts").exists()
    # the training file: the kept rows only, as chat messages
    kept = [r for r in rows if r["reason"] == "ok"]
    assert list(iter_jsonl(out)) == [{"messages": [*r["messages"], {"role": "assistant", "content": r["response"]}]}
                                     for r in kept]
    # a rerun of the same command regenerates nothing
    again = run_replay(cfg, engine=vllm_tiny)
    assert again.cached and list(iter_records(out)) == rows


def test_resume_after_crash_matches_an_uninterrupted_run(vllm_tiny, tmp_path):
    clean = _run(vllm_tiny, tmp_path / "clean.jsonl", num=1000, max_rounds=2)
    assert clean.manifest["rounds"] == 2 and not clean.manifest["complete"]

    calls = []

    def crash(done, total, **stats):  # two calls per round: after the queries, after the shard
        calls.append(stats)
        if len(calls) == 2:
            raise KeyboardInterrupt

    out = tmp_path / "crash.jsonl"
    cfg = ReplayConfig(output=str(out), model=vllm_tiny.model_path, **{**TINY, "max_rounds": 2}, num=1000)
    with pytest.raises(KeyboardInterrupt):
        run_replay(cfg, engine=vllm_tiny, on_progress=crash)
    assert not out.exists() and len(list((tmp_path / "crash.jsonl.parts").glob("shard-*.jsonl"))) == 1
    resumed = run_replay(cfg, engine=vllm_tiny)
    assert resumed.manifest["queries_this_run"] == 24  # only the missing round
    # the same config gives the same ids, so the rows compare whole
    assert list(iter_records(out)) == list(iter_records(tmp_path / "clean.jsonl"))
    assert resumed.manifest["filters"] == clean.manifest["filters"]


def test_larger_num_continues_and_smaller_num_cuts_back(vllm_tiny, tmp_path):
    out = tmp_path / "r.jsonl"
    first = _run(vllm_tiny, out, num=2, max_rounds=3)
    rows1 = list(iter_records(out))
    passing = [r for r in rows1 if r["reason"] in ("ok", "surplus")]
    assert first.manifest["rows"]["kept"] == 2 and len(passing) >= 2
    assert [r["reason"] for r in passing] == ["ok", "ok"] + ["surplus"] * (len(passing) - 2)
    # more rows wanted: the surplus becomes kept, finished rounds are not regenerated
    more = _run(vllm_tiny, out, num=len(passing) + 1000, max_rounds=first.manifest["rounds"] + 1)
    assert more.manifest["queries_this_run"] == 24
    rows2 = list(iter_records(out))
    assert [r["id"] for r in rows2[:len(rows1)]] == [r["id"] for r in rows1]
    assert all(r["reason"] == "ok" for r in rows2 if r["reason"] in ("ok", "surplus"))
    # fewer rows wanted: the same rows, relabelled, nothing generated
    fewer = _run(vllm_tiny, out, num=1, max_rounds=first.manifest["rounds"] + 1)
    assert fewer.manifest["queries_this_run"] == 0 and fewer.manifest["rows"]["kept"] == 1
    assert [r["id"] for r in iter_records(out)] == [r["id"] for r in rows2]
    # another config refuses to mix, unless overwrite
    with pytest.raises(InputError, match="other settings"):
        _run(vllm_tiny, out, num=1, seed=8)
    assert _run(vllm_tiny, out, num=1, seed=8, max_rounds=1, overwrite=True).manifest["config"]["seed"] == 8


def test_cli_run_on_hf_backend_and_inspect(tiny_model_dir, tmp_path, capsys):
    from sdft.cli import main

    out = tmp_path / "cli.jsonl"
    argv = ["replay", "-o", str(out), "--model", str(tiny_model_dir), "--backend", "hf", "--num", "1",
            "--batch-size", "8", "--max-rounds", "1", "--query-max-tokens", "8", "--answer-max-tokens", "8",
            "--allow-non-questions"]
    main(argv)  # returns on success, exits with the error's code otherwise
    m = read_manifest(out)
    assert m["backend"] == "hf" and m["rows"]["total"] == 8 and sum(m["filters"].values()) == 8
    # one prompt, n = 8 samples: the samples differ
    assert len({r["messages"][-1]["content"] for r in iter_records(out)}) > 1
    main(["inspect", str(out), "--show", "1"])
    text = capsys.readouterr().out
    assert "replay summary" in text and "truncated" in text
    main(["replay", "-o", str(out), "--model", str(tiny_model_dir), "--dry-run"])
    assert "'<|im_start|>user\\n'" in capsys.readouterr().out
    assert json.loads(json.dumps(m)) == m


def test_gap_report_refuses_replay_rows_with_a_clear_error():
    """Replay rows have no original answer: `sdft inspect --gap` must say why, before loading a model."""
    from sdft.errors import InputError
    from sdft.gap import score_records

    rows = [{"messages": [{"role": "user", "content": "q"}], "original": None, "response": "a",
             "status": "rewritten"}]
    with pytest.raises(InputError, match="replay output"):
        score_records(None, rows)
