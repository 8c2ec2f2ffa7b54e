"""The trainer on the tiny model: masking, LoRA and full runs, packing, resume, merge -> vLLM."""

from __future__ import annotations

import json
import math
import os
import re
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


# --- loss_type: dft ----------------------------------------------------------------------------------


def _hand_from_logits(logits, labels) -> tuple[float, float, int]:
    """(nll, dft, supervised tokens), written out token by token in float64: token t's logits predict
    label t+1, masked labels are skipped, and the sums are divided by the number of supervised tokens."""
    import torch

    nll = dft = 0.0
    n = 0
    for row, row_labels in zip(logits.double(), labels, strict=True):
        for t in range(len(row_labels) - 1):
            target = int(row_labels[t + 1])
            if target == -100:
                continue
            p = float(torch.softmax(row[t], dim=-1)[target])
            nll += -math.log(p)
            dft += -p * math.log(p)
            n += 1
    return nll / n, dft / n, n


def _tiny_batch(model_dir: Path, pairs, max_length: int):
    """(model in eval mode, collated batch, logits) for ``pairs`` as one batch."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sdft.train import Collator

    tok = AutoTokenizer.from_pretrained(model_dir)
    batch = Collator(tok.pad_token_id)(tokenize_pairs(tok, pairs, max_length=max_length)[0])
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return model, batch, logits


def test_dft_loss_matches_a_hand_computation(tiny_model_dir):
    from types import SimpleNamespace

    import torch

    from sdft.train import dft_loss

    model, batch, logits = _tiny_batch(tiny_model_dir, PAIRS[:3], 512)
    nll, want, n = _hand_from_logits(logits, batch["labels"])
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    loss = dft_loss(out, batch["labels"])
    assert loss.item() == pytest.approx(want, rel=1e-5)
    assert model(**batch).loss.item() == pytest.approx(nll, rel=1e-5)  # the nll path: the model's own loss
    # the Trainer passes the token count of the whole accumulated batch: the sum is divided by it
    half = dft_loss(out, batch["labels"], num_items_in_batch=torch.tensor(2 * n)).item()
    assert half == pytest.approx(want / 2, rel=1e-5)
    # a random model gives every token p ~ 1/vocab, where a wrong formula (e.g. mean(p) * mean(nll)) is
    # within 0.5% of the right one: raise each target's logit by a random 0..12 so that p spans (0, 1)
    targets = torch.nn.functional.pad(batch["labels"], (0, 1), value=-100)[..., 1:].clamp(min=0).unsqueeze(-1)
    bonus = torch.rand(targets.shape, generator=torch.Generator().manual_seed(0)) * 12
    spread = logits.clone().scatter_add_(-1, targets, bonus)
    _, want_spread, _ = _hand_from_logits(spread, batch["labels"])
    assert dft_loss(SimpleNamespace(logits=spread), batch["labels"]).item() == pytest.approx(want_spread, rel=1e-5)
    # a batch without supervised tokens is 0, not 0/0
    assert dft_loss(SimpleNamespace(logits=logits), torch.full_like(batch["labels"], -100)).item() == 0
    # the probability is a weight, not a gradient path, and the loss still trains the model
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("loss_type", ["nll", "dft"])
def test_first_logged_loss_is_the_configured_loss(tiny_model_dir, tmp_path, loss_type):
    """One LoRA step on one batch holding every example: LoRA starts as the identity (B = 0), so the
    logged loss is the loss of the untouched model on that batch, which we compute by hand."""
    pairs = PAIRS[:3] + [([{"role": "user", "content": "Say many words."}], "word " * 80)]
    max_length = 64  # cuts the last answer: the hand computation sees the same cut
    _, batch, logits = _tiny_batch(tiny_model_dir, pairs, max_length)
    nll, dft, _ = _hand_from_logits(logits, batch["labels"])
    notes: list[str] = []
    cfg = quick(tmp_path, tiny_model_dir, max_steps=1, per_device_batch_size=len(pairs), loss_type=loss_type,
                max_length=max_length, merge=False, report_to="tensorboard" if loss_type == "dft" else "none")
    res = train(cfg, pairs, notice=notes.append)
    logged = res.metrics["log_history"][0]["loss"]
    assert logged == pytest.approx(dft if loss_type == "dft" else nll, rel=1e-4)
    assert res.metrics["loss_type"] == loss_type
    # the cut answer is reported: a notice naming max_length, and the counts in the metrics
    ctx = res.metrics["context"]
    assert ctx["truncated"] == res.metrics["data"]["truncated"] == 1 and ctx["dropped"] == 0
    assert ctx["answer_tokens_lost"] > 0 and ctx["longest"] > max_length
    assert any("train.max_length=64: 1 of 4 answers cut" in n for n in notes), notes
    if loss_type == "dft":  # report_to reached the Trainer: its TensorBoard callback wrote the loss
        assert list((res.output_dir / "runs").rglob("events.out.tfevents.*"))


# --- context length ------------------------------------------------------------------------------


def test_refuses_when_most_answers_would_be_lost(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    long_prompt = [([{"role": "user", "content": f"Item {i}: " + "word " * 60}], "ok") for i in range(3)]
    pairs = long_prompt + PAIRS[:2]  # 3 of 5 prompts are longer than max_length
    with pytest.raises(ConfigError) as e:
        train(quick(tmp_path, tiny_model_dir, max_length=48), pairs)
    msg = str(e.value)
    assert "train.max_length=48: 3 of 5 examples (60%)" in msg and "would lose their whole answer" in msg
    assert not (tmp_path / "run").exists()  # refused before anything was written
    # the fix it names works: at the suggested max_length every example fits whole
    suggested = int(re.search(r"or (\d+) \(all fit\)", msg).group(1))
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    _, stats = tokenize_pairs(tok, pairs, max_length=suggested)
    assert stats["dropped"] == stats["truncated"] == 0
    _, stats = tokenize_pairs(tok, pairs, max_length=suggested - 1)
    assert stats["truncated"] + stats["dropped"] >= 1  # and it is the smallest such value


# --- merge_adapter -------------------------------------------------------------------------------


def _adapter(tiny_model_dir: Path, folder: Path) -> Path:
    """A LoRA adapter with non-zero weights (so merging changes the model), saved without a tokenizer."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(str(folder))
    return folder


def test_merge_adapter_matches_the_adapter_and_is_atomic(tiny_model_dir, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sdft.models import merge_adapter

    adapter = _adapter(tiny_model_dir, tmp_path / "adapter")
    out = tmp_path / "merged"
    out.mkdir()
    (out / "config.json").write_text("{}")  # an earlier merge (a model folder) is replaced
    assert merge_adapter(adapter, out) == out  # base from the adapter's own config
    assert (out / "config.json").is_file() and not (out / "adapter_config.json").exists()
    assert AutoTokenizer.from_pretrained(out).vocab_size > 0  # the base's tokenizer came along
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "merged"]  # no temp folder left
    ids = torch.tensor([[1, 5, 9, 42, 7]])
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(out)(ids).logits
        via_peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                             str(adapter))(ids).logits
        plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir)(ids).logits
    assert torch.allclose(merged, via_peft, atol=1e-4) and not torch.allclose(merged, plain, atol=1e-3)


def test_merge_adapter_refuses_what_it_did_not_write(tiny_model_dir, tmp_path):
    import json as _json

    from sdft.errors import InputError
    from sdft.models import merge_adapter

    adapter = _adapter(tiny_model_dir, tmp_path / "adapter")
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "todo.txt").write_text("keep me")
    with pytest.raises(InputError, match="is not a model folder"):
        merge_adapter(adapter, mine)
    assert (mine / "todo.txt").read_text() == "keep me"
    with pytest.raises(InputError, match="its own adapter folder"):
        merge_adapter(adapter, adapter)
    with pytest.raises(InputError, match="not a LoRA adapter folder"):
        merge_adapter(tiny_model_dir, tmp_path / "x")
    cfg = _json.loads((adapter / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = None
    (adapter / "adapter_config.json").write_text(_json.dumps(cfg))
    with pytest.raises(InputError, match="pass the base model explicitly"):
        merge_adapter(adapter, tmp_path / "x")
    assert (merge_adapter(adapter, tmp_path / "x", base=str(tiny_model_dir)) / "config.json").is_file()
