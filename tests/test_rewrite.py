"""The rewrite pipeline end to end on the tiny model through the real engines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sdft.errors import InputError
from sdft.rewrite import RewriteConfig, run_rewrite
from sdft.store import iter_jsonl, iter_records, read_manifest

ROOT = Path(__file__).resolve().parents[1]


def rows_of(p: Path) -> list[dict]:
    """Every row's sdft record (kept rows from OUT.records.jsonl, the rest from OUT.rejected.jsonl)."""
    return list(iter_records(p))


def test_every_row_written_with_status_and_original(vllm_tiny, gsm8k_file, tmp_path):
    out = tmp_path / "o.jsonl"
    progress = []
    cfg = RewriteConfig(input=str(gsm8k_file), output=str(out), model=vllm_tiny.model_path,
                        max_new_tokens=24, batch_size=4, gap_rows=3)
    res = run_rewrite(cfg, engine=vllm_tiny, on_progress=lambda d, t, **k: progress.append((d, t)))
    rows = rows_of(out)
    src = [json.loads(line) for line in gsm8k_file.read_text().splitlines()]
    assert [r["original"] for r in rows] == [s["answer"] for s in src]
    assert len({r["id"] for r in rows}) == 6
    # a random-weight model never reaches the reference number: every row falls back to the original
    assert all(r["status"] == "fallback" and r["response"] == r["original"] for r in rows)
    assert all(r["reason"] in ("truncated", "no-answer", "wrong-answer", "empty", "repetition", "too-long")
               for r in rows)
    assert all(r["messages"][-1]["content"] == s["question"] for r, s in zip(rows, src))
    # the default ladder: the own greedy answer + 4 samples, 4 hinted and 4 reference candidates per row
    for r in rows:
        assert [c["source"] for c in r["candidates"]] == ["own"] * 5 + ["hint"] * 4 + ["reference"] * 4
        assert r["source"] == "original" and r["nll"]["kept"] == r["nll"]["original"] > 0
        assert r["nll"]["own"] > 0
    m = read_manifest(out)
    assert m == res.manifest
    assert m["rows"] == {"total": 6, "rewritten": 0, "fallback": 6, "dropped": 0}
    assert m["verifier"] == "math" and sum(m["reasons"].values()) == 6
    assert m["gap"]["rows"] == 6 and m["gap"]["original_nll"] > 0 and m["gap"]["warning"]
    assert m["gap"]["gap_closed"] == 0.0 and m["gap"]["acceptance"] == 0
    assert set(m["sources"]) == {"own", "hint", "reference"}
    assert m["sources"]["hint"]["candidates"] == 24 and m["sources"]["own"]["generated_tokens"] > 0
    assert progress[-1] == (6, 6)
    assert not (tmp_path / "o.jsonl.parts").exists()
    # the training file holds the kept rows only, as chat messages ending with the kept answer
    assert list(iter_jsonl(out)) == [{"messages": [*r["messages"], {"role": "assistant", "content": r["response"]}]}
                                     for r in rows]
    assert not (tmp_path / "o.jsonl.rejected.jsonl").read_text()


def test_best_of_k_drop_and_candidates(vllm_tiny, gsm8k_file, tmp_path):
    out = tmp_path / "o.jsonl"
    cfg = RewriteConfig(input=str(gsm8k_file), output=str(out), model=vllm_tiny.model_path, samples=3,
                        temperature=1.0, select="min-nll", on_fail="drop", max_new_tokens=8, gap_rows=0,
                        sources=["reference", "original"], max_length_ratio=0)
    run_rewrite(cfg, engine=vllm_tiny)
    rows = rows_of(out)
    assert all(r["attempts"] == 3 and len(r["candidates"]) == 3 for r in rows)
    assert all(r["status"] == "dropped" and r["response"] is None for r in rows)
    assert out.read_text() == "" and len(list(iter_jsonl(tmp_path / "o.jsonl.rejected.jsonl"))) == 6


def test_cache_conflict_overwrite_and_larger_limit(vllm_tiny, gsm8k_file, tmp_path):
    out = tmp_path / "o.jsonl"
    base = dict(input=str(gsm8k_file), output=str(out), model=vllm_tiny.model_path, max_new_tokens=8,
                gap_rows=0, sources=["reference", "original"], samples=1, max_length_ratio=0)
    run_rewrite(RewriteConfig(**base, limit=3), engine=vllm_tiny)
    first = rows_of(out)
    assert len(first) == 3
    # a larger limit continues: the first three rows are reused, not regenerated
    res = run_rewrite(RewriteConfig(**base, limit=5), engine=vllm_tiny)
    assert res.manifest["generated_tokens_this_run"] <= 2 * 8
    assert rows_of(out)[:3] == first and len(rows_of(out)) == 5
    # same config again: cached
    assert run_rewrite(RewriteConfig(**base, limit=5), engine=vllm_tiny).cached
    # another config refuses to mix, unless overwrite
    with pytest.raises(InputError, match=r"other settings \(changed: .*max_new_tokens \(8 -> 9\)"):
        run_rewrite(RewriteConfig(**{**base, "max_new_tokens": 9}, limit=5), engine=vllm_tiny)
    # a smaller limit never cuts a finished output back
    with pytest.raises(InputError, match="never cut back"):
        run_rewrite(RewriteConfig(**base, limit=2), engine=vllm_tiny)
    assert len(rows_of(out)) == 5
    run_rewrite(RewriteConfig(**{**base, "max_new_tokens": 9}, limit=5, overwrite=True), engine=vllm_tiny)
    assert read_manifest(out)["sampling"]["max_new_tokens"] == 9


def test_bad_row_fails_before_any_output(gsm8k_file, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(gsm8k_file.read_text() + '{"question": "q"}\n')
    out = tmp_path / "o.jsonl"
    with pytest.raises(InputError, match=r"row 7: missing field 'answer'"):
        run_rewrite(RewriteConfig(input=str(bad), output=str(out), model="/nonexistent/never-loaded"))
    assert not out.exists() and not (tmp_path / "o.jsonl.parts").exists()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "sdft.cli", *args]


def test_kill_9_mid_run_then_resume_keeps_every_row_once(tiny_model_dir, tmp_path):
    rows = [{"question": f"What is {i} plus {i}?", "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"} for i in range(40)]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "o.jsonl"
    args = _cli("rewrite", str(data), "-o", str(out), "--model", str(tiny_model_dir), "--backend", "hf",
                "--batch-size", "2", "--max-new-tokens", "48", "--gap-rows", "0")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    parts = tmp_path / "o.jsonl.parts"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(parts.glob("shard-*.jsonl"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_shards = len(list(parts.glob("shard-*.jsonl")))
    assert 3 <= n_shards < 20, "the run must be killed mid-way"
    assert not out.exists()
    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stderr
    got = rows_of(out)
    ids = [r["id"] for r in got]
    assert len(ids) == len(set(ids)) == 40
    assert [r["original"] for r in got] == [r["answer"] for r in rows]  # input order kept


def test_code_verification_runs_in_parallel_and_keeps_order():
    from sdft.data import Example
    from sdft.engines import Completion
    from sdft.rewrite import _verify_all
    from sdft.verify import get_verifier, verify

    ex = Example(id="x", index=0, messages=[{"role": "user", "content": "add"}], answer="ref",
                 extra={"test": "assert add(2, 3) == 5"})
    texts = ["```python\ndef add(a, b):\n    return a + b\n```", "```python\ndef add(a, b):\n    return a - b\n```",
             "```python\ndef add(a, b):\n    while True:\n        pass\n```"] * 2
    jobs = [(ex, Completion(t, "stop", 5)) for t in texts]
    t0 = time.time()
    got = [v.reason for v in _verify_all(jobs, get_verifier("code", timeout_s=3), verify)]
    assert got == ["ok", "tests-failed", "timeout"] * 2
    assert time.time() - t0 < 2 * 3 * 1.5  # the two 3 s timeouts overlap instead of adding up
