"""Training-ready outputs: every --format trains one step of TRL's SFTTrainer as written by sdft.

The files are sdft's own (written by the stage runner's final write, then rewritten for each
format from the records, the way a rerun with another --format does) and are loaded the way
docs/FORMATS.md tells a user to load them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from sdft.errors import InputError
from sdft.formats import FORMATS, to_training_row
from sdft.store import StageRunner, iter_jsonl, iter_kept, read_manifest

SYSTEM = {"role": "system", "content": "You are brief."}
RECORDS = [
    {"id": "a", "index": 0, "messages": [{"role": "user", "content": "What is 2 + 3?"}], "response": "2 + 3 = 5.",
     "original": "5", "status": "rewritten", "reason": "ok"},
    {"id": "b", "index": 1, "messages": [SYSTEM, {"role": "user", "content": "Name a colour."}],
     "response": "Blue.", "original": "Red.", "status": "fallback", "reason": "wrong-answer"},
    {"id": "c", "index": 2, "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                                         {"role": "user", "content": "And 1 + 1?"}],
     "response": "1 + 1 = 2.", "original": "2", "status": "rewritten", "reason": "ok"},
    {"id": "d", "index": 3, "messages": [{"role": "user", "content": "Dropped?"}], "response": None,
     "original": "x", "status": "dropped", "reason": "truncated"},
]
ROLES = {"human": "user", "gpt": "assistant", "observation": "tool"}


def write(out: Path, fmt: str) -> dict:
    with StageRunner(out, kind="sdft-test", settings={"t": 1}, output_format=fmt) as runner:
        finished = runner.resume([r["id"] for r in RECORDS])
        if finished is not None:  # the same rows in another format: rewritten from the records
            return finished
        runner.append([dict(r) for r in RECORDS])
        return runner.finalize({"kind": "sdft-test", "rows": {"total": 4}})


def load_like_a_user(out: Path, fmt: str):
    """docs/FORMATS.md, section TRL."""
    from datasets import load_dataset, load_from_disk

    if fmt == "hf":
        return load_from_disk(str(out))
    ds = load_dataset("json", data_files=str(out), split="train")
    if fmt == "sharegpt":
        ds = ds.map(lambda r: {"messages": [{"role": ROLES.get(m["from"], m["from"]), "content": m["value"]}
                                            for m in r["conversations"]]}, remove_columns=["conversations"])
    if fmt == "alpaca":
        ds = ds.map(lambda r: {"prompt": [{"role": "user", "content": r["instruction"]}],
                               "completion": [{"role": "assistant", "content": r["output"]}]},
                    remove_columns=ds.column_names)
    return ds


def test_rows_of_each_format():
    r = RECORDS[2]
    assert to_training_row(r, "messages")["messages"][-1] == {"role": "assistant", "content": "1 + 1 = 2."}
    assert to_training_row(r, "alpaca") == {"instruction": "And 1 + 1?", "input": "", "output": "1 + 1 = 2.",
                                           "history": [["Hi", "Hello!"]]}
    assert to_training_row(RECORDS[1], "alpaca")["system"] == "You are brief."
    assert [m["from"] for m in to_training_row(RECORDS[1], "sharegpt")["conversations"]] == ["system", "human", "gpt"]
    pc = to_training_row(r, "prompt-completion")
    assert pc["prompt"] == r["messages"] and pc["completion"] == [{"role": "assistant", "content": "1 + 1 = 2."}]
    tool = {**r, "messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "y"},
                              {"role": "user", "content": "z"}]}
    with pytest.raises(InputError, match="alpaca holds user/assistant pairs"):
        to_training_row(tool, "alpaca")


def test_sft_trainer_trains_one_step_on_every_format(tiny_model_dir, tmp_path):
    pytest.importorskip("trl")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    out = tmp_path / "out"  # one output path: each --format rewrites the training file at it
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    for fmt in FORMATS:
        m = write(out, fmt)
        assert read_manifest(out)["format"] == fmt == m["format"]
        assert out.is_dir() == (fmt == "hf")
        if fmt != "hf":
            assert len(list(iter_jsonl(out))) == 3  # kept rows only: the dropped one is in the rejected file
        assert [r["id"] for r in iter_kept(out)] == ["a", "b", "c"]
        ds = load_like_a_user(out, fmt)
        assert len(ds) == 3
        model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
        args = SFTConfig(output_dir=str(tmp_path / f"trl-{fmt}"), max_steps=1, per_device_train_batch_size=3,
                         learning_rate=1e-3, report_to="none", save_strategy="no", logging_steps=1, use_cpu=True,
                         max_length=128, dataloader_num_workers=0, bf16=False, fp16=False, seed=0)
        trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
        before = [p.detach().clone() for p in model.parameters()][-1]
        result = trainer.train()
        assert trainer.state.global_step == 1, fmt
        assert math.isfinite(result.training_loss) and result.training_loss > 0, fmt
        assert not bool((before == list(model.parameters())[-1].detach()).all()), f"{fmt}: no weight moved"
        # what the trainer saw holds the kept answers, tokenised under the chat template
        text = tok.decode(trainer.train_dataset[2]["input_ids"])
        assert "1 + 1 = 2." in text and "And 1 + 1?" in text, (fmt, text)
    assert json.loads((tmp_path / "out.manifest.json").read_text())["files"]["output"]["type"] == "folder"
