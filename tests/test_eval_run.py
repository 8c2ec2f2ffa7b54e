"""sdft eval on the tiny random-weight model through real vLLM and transformers: every suite
(task included), per-suite budgets, the per-item contract of answers.jsonl, the answer cache,
the gate's exit codes, a LoRA adapter as the tuned model, and (slow) the bundled alias."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sdft.eval import EvalConfig, run_eval

ROOT = Path(__file__).resolve().parent.parent
ITEM_FIELDS = {"model", "suite", "id", "prompt", "answer", "finish_reason", "pass", "value", "reason", "detail"}


def _sdft(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "sdft.cli", "eval", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.fixture(scope="module")
def other_tiny_model(tmp_path_factory):
    """A second tiny model with different random weights: a "tuned" model that drifted."""
    from tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-other"), seed=1)


def _check_items(out: Path, labels: list[str], sizes: dict[str, int]) -> list[dict]:
    """answers.jsonl: one row per model, suite and probe, the same ids for every model, values on 0-100."""
    rows = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert all(set(r) == ITEM_FIELDS for r in rows)
    assert len(rows) == len(labels) * sum(sizes.values())
    for suite, n in sizes.items():
        ids = {lab: [r["id"] for r in rows if r["model"] == lab and r["suite"] == suite] for lab in labels}
        assert len(ids["base"]) == n and all(v == ids["base"] for v in ids.values()), suite
    for r in rows:
        if r["suite"] == "drift":
            assert r["pass"] is None and 0 < r["value"] <= 100
            mean_nll = float(r["detail"].split()[1])
            assert r["value"] == pytest.approx(100 * math.exp(-mean_nll), rel=1e-3)
        else:
            assert r["value"] == (100.0 if r["pass"] else 0.0) and r["reason"] == ("ok" if r["pass"] else r["reason"])
    return rows


def test_every_suite_on_real_vllm_then_gate_exit_codes_and_cache(tiny_model_dir, other_tiny_model, gsm8k_file,
                                                                  tmp_path):
    pytest.importorskip("vllm")
    out = tmp_path / "eval"
    suites = ["task", "safety", "safety-jailbreak", "over-refusal", "math", "code", "tool-use", "drift"]
    args = ["--base", str(tiny_model_dir), "--tuned", f"same={tiny_model_dir}", "--tuned", f"other={other_tiny_model}",
            "--suites", ",".join(suites), "--limit", "3", "--data", f"task={gsm8k_file}",
            "--max-new-tokens", "12", "--max-new-tokens", "safety=5", "--backend", "vllm", "-o", str(out)]
    r = _sdft(*args, "--max-drop", "drift=0", cwd=tmp_path)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "other: drift dropped" in r.stderr and "same:" not in r.stderr.split("eval gate failed")[1]
    report = json.loads((out / "report.json").read_text())
    assert [row["suite"] for row in report["suites"]] == suites and report["answers"] == "answers.jsonl"
    for row in report["suites"]:
        base, same = row["models"]["base"], row["models"]["same"]
        assert base["n"] == 3 and base["low"] <= base["score"] <= base["high"] and len(base["examples"]) == 2
        # the same weights under the same greedy decoding: identical scores, zero delta
        assert same["score"] == pytest.approx(base["score"]) and same["delta"] == pytest.approx(0.0)
        assert same["delta_low"] <= 0 <= same["delta_high"]
        assert row["max_new_tokens"] == (5 if row["suite"] == "safety" else 12)
    assert report["suites"][0]["metric"] == "accuracy (math)"
    drift = report["suites"][-1]["models"]
    assert drift["other"]["nll"] > drift["base"]["nll"]   # a different model finds the seed's answers less likely
    assert report["gate"]["passed"] is False
    cache = [json.loads(line) for line in (out / "generations" / "base.jsonl").read_text().splitlines()]
    assert all(c["num_tokens"] <= 5 for c in cache if c["suite"] == "safety") and len(cache) == 3 * len(suites)
    # drift: only the base generates; every model scores the base's answers
    other_cache = (out / "generations" / "other.jsonl").read_text()
    assert '"suite": "drift"' not in other_cache and (out / "generations" / "other.scores.jsonl").is_file()
    md = (out / "report.md").read_text()
    assert "| safety | refusal rate | 3 |" in md and "Gate" in md and "## Example answers" in md
    assert (out / "radar.png").stat().st_size > 10_000
    rows = _check_items(out, ["base", "same", "other"], {s: 3 for s in suites})
    drift_rows = [r for r in rows if r["suite"] == "drift"]
    assert {r["answer"] for r in drift_rows if r["model"] == "other"} == \
        {r["answer"] for r in drift_rows if r["model"] == "base"}
    cached_lines = sum(len(f.read_text().splitlines()) for f in (out / "generations").glob("*.jsonl"))

    # rerun with a looser gate: every answer and score is cached, nothing is generated again, exit 0
    r = _sdft(*args, "--max-drop", "drift=100", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "generating" not in r.stderr
    assert sum(len(f.read_text().splitlines()) for f in (out / "generations").glob("*.jsonl")) == cached_lines
    assert "safety-jailbreak" in r.stdout
    assert json.loads((out / "report.json").read_text())["suites"][-1]["models"]["other"]["score"] == \
        pytest.approx(drift["other"]["score"])


def test_hf_backend_and_lora_adapter_tuned_model(tiny_model_dir, tmp_path):
    """A LoRA adapter is merged once into its base; with B=0 (peft's init) it equals the base."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(str(adapter))
    cfg = EvalConfig(base=str(tiny_model_dir), tuned=[f"lora={adapter}"], suites=["safety", "drift"], limit=2,
                     backend="hf", max_new_tokens=8, output_dir=str(tmp_path / "eval"))
    report = run_eval(cfg).data
    assert (tmp_path / "eval" / "merged").is_dir() and report["models"][1]["path"].startswith(str(tmp_path))
    for row in report["suites"]:
        assert row["models"]["lora"]["score"] == pytest.approx(row["models"]["base"]["score"], rel=1e-4)
    _check_items(tmp_path / "eval", ["base", "lora"], {"safety": 2, "drift": 2})


def test_an_unreadable_adapter_config_is_an_input_error(tmp_path):
    """The eval's adapter merge is models.merge_adapter: a corrupt adapter_config.json is a one-line
    InputError naming the file (its own copy of the merge read it with a bare json.loads), nothing is cached."""
    from sdft.errors import InputError
    from sdft.eval.run import prepare_model

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"base_model_name_or_path": ')
    cache = tmp_path / "merged"
    with pytest.raises(InputError, match="adapter_config.json: unreadable adapter config"):
        prepare_model("lora", str(adapter), str(tmp_path / "base"), cache, lambda _m: None)
    assert not cache.exists() or not any(cache.iterdir())


@pytest.mark.slow
def test_the_bundled_alias_as_the_tuned_model(tiny_model_dir, tmp_path):
    """``sdft eval --tuned smollm2-135m-instruct``: the alias is resolved like --model everywhere."""
    pytest.importorskip("vllm")
    out = tmp_path / "eval"
    r = _sdft("--base", str(tiny_model_dir), "--tuned", "smollm2-135m-instruct", "--suites", "safety,over-refusal",
              "--limit", "2", "--max-new-tokens", "24", "-o", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((out / "report.json").read_text())
    label, path = report["models"][1]["label"], report["models"][1]["path"]
    assert label == "smollm2-135m-instruct" and (Path(path) / "config.json").is_file()
    rows = _check_items(out, ["base", label], {"safety": 2, "over-refusal": 2})
    assert any(r["answer"].strip() for r in rows if r["model"] == label)
