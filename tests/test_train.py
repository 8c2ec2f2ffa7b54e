"""The trainer on the tiny model: masking, LoRA and full runs, packing, resume, merge -> vLLM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sdft.errors import ConfigError
from sdft.train import TrainConfig, pack, tokenize_pairs, train

ROOT = Path(__file__).resolve().parents[1]
PAIRS = [([{"role": "user", "content": f"What is {i} plus {i}?"}], f"{i} plus {i} is {2 * i}.") for i in range(12)]


def test_labels_mask_prompt_and_keep_answer_with_end_of_turn(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    (ex,), stats = tokenize_pairs(tok, PAIRS[:1], max_length=512)
    ids, labels = ex["input_ids"], ex["labels"]
    n_prompt = sum(1 for x in labels if x == -100)
    prompt_text = tok.decode(ids[:n_prompt])
    assert prompt_text.endswith("<|im_start|>assistant\n") and "What is 0 plus 0?" in prompt_text
    assert labels[:n_prompt] == [-100] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:]  # every answer token is trained, none masked
    assert tok.decode(labels[n_prompt:]).startswith("0 plus 0 is 0.<|im_end|>")
    assert stats == {"examples": 1, "truncated": 0, "dropped": 0, "answer_tokens": len(ids) - n_prompt}


def test_truncation_and_dropping_counted(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    long_answer = [([{"role": "user", "content": "hi"}], "word " * 200)]
    long_prompt = [([{"role": "user", "content": "word " * 200}], "ok")]
    exs, stats = tokenize_pairs(tok, long_answer + long_prompt, max_length=64)
    assert len(exs) == 1 and len(exs[0]["input_ids"]) == 64
    assert stats["truncated"] == 1 and stats["dropped"] == 1


def test_packing_never_crosses_example_boundaries(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sdft.train import Collator

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    exs, _ = tokenize_pairs(tok, PAIRS[:4], max_length=512)
    rows = pack(exs, max_length=512)
    assert len(rows) == 1 and rows[0]["position_ids"].count(0) == 4
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        packed = Collator(tok.pad_token_id)(rows)
        logits_packed = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"],
                              use_cache=False).logits[0]
        start = 0
        for ex in exs:  # each example alone gives the same logits as inside the pack
            n = len(ex["input_ids"])
            alone = model(input_ids=torch.tensor([ex["input_ids"]]), use_cache=False).logits[0]
            assert torch.allclose(alone, logits_packed[start:start + n], atol=1e-4)
            start += n


def quick(tmp_path: Path, tiny: Path, **kw) -> TrainConfig:
    base = dict(model=str(tiny), output_dir=str(tmp_path / "run"), max_steps=3, per_device_batch_size=2,
                gradient_accumulation_steps=1, learning_rate=1e-3, save_steps=1, max_length=128)
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_few_steps_save_final_merged_metrics(tiny_model_dir, tmp_path, finetune):
    seen = []
    res = train(quick(tmp_path, tiny_model_dir, finetune=finetune), PAIRS,
                on_progress=lambda s, n, **k: seen.append((s, n, k["loss"])))
    assert [s for s, _, _ in seen] == [1, 2, 3] and all(n == 3 for _, n, _ in seen)
    m = json.loads((res.output_dir / "train_metrics.json").read_text())
    assert m["global_step"] == 3 and m["tokens_per_second"] > 0 and len(m["log_history"]) == 3
    assert (res.output_dir / "loss_curve.png").stat().st_size > 1000
    if finetune == "lora":
        assert (res.final_dir / "adapter_config.json").exists()
    else:
        assert (res.final_dir / "config.json").exists()
    assert (res.merged_dir / "config.json").exists() and not (res.merged_dir / "adapter_config.json").exists()


def test_training_lowers_the_loss(tiny_model_dir, tmp_path):
    res = train(quick(tmp_path, tiny_model_dir, finetune="full", max_steps=12, learning_rate=3e-3), PAIRS[:2] * 12)
    losses = [h["loss"] for h in res.metrics["log_history"]]
    assert losses[-1] < losses[0] * 0.7


def test_bad_lora_targets_listed(tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError) as e:
        train(quick(tmp_path, tiny_model_dir, lora_target_modules=["q_proj", "query", "dense"]), PAIRS)
    assert len(e.value.problems) == 2 and "has: " in e.value.problems[0] and "v_proj" in e.value.problems[0]


def test_kill_and_resume_continues_from_checkpoint(tiny_model_dir, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"question": m[0]["content"], "answer": a}) + "\n" for m, a in PAIRS * 4))
    out = tmp_path / "run"
    args = [sys.executable, "-m", "sdft.cli", "train", f"data.path={data}", "method=sft", f"output_dir={out}",
            f"model={tiny_model_dir}", "train.max_steps=40", "train.save_steps=1", "train.per_device_batch_size=1",
            "train.gradient_accumulation_steps=1", "train.merge=false"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "model").glob("checkpoint-3")):
        time.sleep(0.05)
    time.sleep(0.3)  # let the checkpoint finish writing before the kill
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpts = sorted(int(p.name.split("-")[1]) for p in (out / "model").glob("checkpoint-*"))
    assert ckpts and ckpts[-1] < 40, "killed mid-way"
    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stderr
    m = json.loads((out / "model" / "train_metrics.json").read_text())
    assert m["global_step"] == 40 and m["resumed_from"].endswith(tuple(f"checkpoint-{c}" for c in ckpts))
    assert m["first_step_this_run"] == int(m["resumed_from"].rsplit("-", 1)[1]) + 1  # continued, not restarted


def test_merged_model_loads_in_vllm(tiny_model_dir, tmp_path):
    pytest.importorskip("vllm")
    from sdft.engines import EngineOptions, SamplingConfig, load_engine

    res = train(quick(tmp_path, tiny_model_dir, max_steps=2), PAIRS)
    eng = load_engine(str(res.merged_dir), "vllm", EngineOptions(kv_cache_gib=0.25, max_model_len=512))
    try:
        (g,) = eng.generate([[{"role": "user", "content": "What is 2 plus 2?"}]], SamplingConfig(max_new_tokens=5))
        assert g.completions[0].num_tokens > 0
    finally:
        eng.close()


def test_rerun_of_a_finished_run_is_reused_without_training(tiny_model_dir, tmp_path):
    first = train(quick(tmp_path, tiny_model_dir), PAIRS)
    mtime = (first.final_dir / "adapter_model.safetensors").stat().st_mtime_ns
    notes: list[str] = []
    again = train(quick(tmp_path, tiny_model_dir), PAIRS, notice=notes.append)
    assert again.metrics == first.metrics and any("reusing it" in n for n in notes)
    assert (again.final_dir / "adapter_model.safetensors").stat().st_mtime_ns == mtime
    # other data (or another config) in the same folder is not "finished": it resumes/trains instead
    other = train(quick(tmp_path, tiny_model_dir, max_steps=4), PAIRS)
    assert other.metrics["global_step"] == 4 and other.metrics["first_step_this_run"] == 4
