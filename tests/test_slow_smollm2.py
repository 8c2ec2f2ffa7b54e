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


def test_calculator_fills_in_exact_results(smollm2_vllm):
    """Calculator-assisted decoding: every arithmetic statement the model writes comes out right."""
    from sdft.calc import generate_with_calculator
    from sdft.engines import SamplingConfig
    from sdft.verify.arithmetic import check_steps, find_steps, first_wrong_result

    prompts = [[{"role": "user", "content": q}] for q in (
        "A shop sells 347 pens a day for 29 days. How many pens is that? Show the multiplication.",
        "Tom has 1,250 dollars and spends 487 dollars. How much is left? Write the subtraction.",
        "What is 84 divided by 7, plus 19? Write each step as an equation.",
    )]
    sampling = SamplingConfig(max_new_tokens=160, seed=0)
    free = smollm2_vllm.generate(prompts, sampling)
    calc = generate_with_calculator(smollm2_vllm, prompts, sampling, first_wrong_result)
    steps = [s for g in calc for c in g.completions for s in find_steps(c.text)]
    assert steps, [g.completions[0].text for g in calc]  # the model writes equations for these
    for g in calc:
        c = g.completions[0]
        assert check_steps(c.text).ok, c.text
        assert c.num_tokens <= 160
    # without the calculator the same model gets at least one of these products wrong
    assert not all(check_steps(g.completions[0].text).ok for g in free), [g.completions[0].text for g in free]
