"""The real bundled SmolLM2-135M-Instruct: materialisation and a real rewrite (slow)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sdft.rewrite import RewriteConfig, run_rewrite
from sdft.store import iter_records

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def test_concurrent_first_use_materialises_once(tmp_path):
    code = "from sdft.models import resolve_model; print(resolve_model('smollm2-135m-instruct'))"
    env = {**os.environ, "SDFT_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0].strip().splitlines()[-1] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0] == outs[1] == str(tmp_path / "models" / "smollm2-135m-instruct")
    folder = Path(outs[0])
    assert (folder / "config.json").exists() and (folder / "model.safetensors").exists()
    assert [p.name for p in (tmp_path / "models").iterdir() if not p.name.endswith(".lock")] == [folder.name]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    assert "<|im_start|>" in tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)


@pytest.fixture(scope="module")
def smollm2_vllm():
    pytest.importorskip("vllm")
    from sdft.engines import EngineOptions, load_engine
    from sdft.models import resolve_model

    engine = load_engine(resolve_model("smollm2-135m-instruct"), "vllm", EngineOptions(kv_cache_gib=1.0))
    yield engine
    engine.close()


def test_real_rewrite_keeps_verified_rewrites(smollm2_vllm, tmp_path):
    out = tmp_path / "o.jsonl"
    res = run_rewrite(RewriteConfig(input="example:arith", output=str(out), limit=8, max_new_tokens=160,
                                    gap_rows=8), engine=smollm2_vllm)
    rows = list(iter_records(out))
    assert len(rows) == 8
    rewritten = [r for r in rows if r["status"] == "rewritten"]
    assert rewritten, res.manifest["reasons"]  # the 135M model gets most of these simple ones right
    for r in rewritten:
        assert r["response"] != r["original"]
        final = r["original"].rsplit("####", 1)[1].strip()
        assert final in r["response"]
    gap = res.manifest["gap"]
    assert gap["own_answer_nll"] < gap["original_nll"]  # the model's own words are likelier than ours
