"""Pure configs and the preflight: building a config touches nothing; the preflight finds every problem."""

from __future__ import annotations

import builtins
import io
import json
import os
import pathlib
from contextlib import contextmanager
from pathlib import Path

import pytest

from sdft.config import build, explicit, from_dict, given
from sdft.errors import ConfigError
from sdft.eval.config import EvalConfig
from sdft.pipeline import PipelineConfig
from sdft.preflight import check, problems, validate
from sdft.replay import ReplayConfig
from sdft.rewrite import RewriteConfig
from sdft.train import TrainConfig

NOWHERE = "/nonexistent/sdft-test"


@contextmanager
def no_disk():
    """Every way configs could look at files raises inside the block (undone before pytest reports)."""

    def refuse(*a, **k):
        raise AssertionError(f"touched the disk: {a[:2]}")

    with pytest.MonkeyPatch.context() as mp:
        for obj, name in [(pathlib.Path, "stat"), (pathlib.Path, "exists"), (pathlib.Path, "is_file"),
                          (pathlib.Path, "is_dir"), (pathlib.Path, "iterdir"), (pathlib.Path, "open"),
                          (os.path, "exists"), (os.path, "isfile"), (os.path, "isdir"), (os, "listdir"),
                          (os, "scandir"), (builtins, "open"), (io, "open")]:
            mp.setattr(obj, name, refuse)
        yield


def test_configs_touch_no_disk_and_no_model():
    from sdft.compare.config import load_compare

    model = f"{NOWHERE}/model"
    with no_disk():
        RewriteConfig(input=f"{NOWHERE}/d.jsonl", output=f"{NOWHERE}/o.jsonl", model=model,
                      template=f"{NOWHERE}/t.j2")
        ReplayConfig(output=f"{NOWHERE}/r.jsonl", model=model)
        TrainConfig(model=model, output_dir=NOWHERE, report_to="tensorboard")
        EvalConfig(base=model, tuned=[f"x={NOWHERE}/tuned", f"{NOWHERE}/y.gguf"],
                   data={"task": f"{NOWHERE}/t.jsonl"}, output_dir=NOWHERE, max_drop={"task": 2})
        cfg = from_dict(PipelineConfig, {
            "model": model, "data": {"path": f"{NOWHERE}/d.jsonl"}, "output_dir": NOWHERE,
            "replay": f"{NOWHERE}/r", "replay_ratio": 0.2, "rewrite": {"samples": 2, "template": f"{NOWHERE}/t.j2"},
            "train": {"lora_target_modules": ["nope"]}, "eval": {"data": {"safety": f"{NOWHERE}/s.csv"}}})
        assert cfg.rewrite_config().input.endswith("d.jsonl") and cfg.eval_config(["t"]).tuned == ["t"]
        load_compare({"model": model, "data": {"path": f"{NOWHERE}/d.jsonl"}, "compare": {"task_eval": NOWHERE}},
                     source="t", output_dir=NOWHERE)


def test_rewrite_preflight_lists_every_problem_at_once(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": "q"}) + "\n")  # no answer field
    cfg = RewriteConfig(input=str(data), output=str(data), model=f"{NOWHERE}/m", template=f"{NOWHERE}/t.j2",
                        verifier="regex", verifier_options={"nope": 1}, data_format="gsm8k")
    found = problems(cfg)
    text = "\n".join(found)
    for part in ("missing field 'answer'", f"'{NOWHERE}/m' not found", "template: no such file",
                 "does not take option(s) nope", "the input"):
        assert part in text, text
    assert len(found) == 5, found


def test_replay_and_train_preflight(tmp_path):
    (tmp_path / "f").write_text("a file")
    found = problems(ReplayConfig(output=str(tmp_path / "f" / "o.jsonl"), model=f"{NOWHERE}.gguf"))
    assert any("not found (a .gguf file)" in p for p in found) and any("is a file, not a folder" in p for p in found)
    found = problems(TrainConfig(model=f"{NOWHERE}/m", output_dir=str(tmp_path / "f")))
    assert len(found) == 2 and "'f' is a file" in found[1] or "is a file, not a folder" in found[1], found


def test_pipeline_preflight_checks_data_lora_replay_and_eval(tiny_model_dir, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"instruction": "q"}) + "\n")
    recipe = {"model": str(tiny_model_dir), "data": {"path": str(data)}, "output_dir": str(tmp_path / "run"),
              "replay": str(tmp_path / "replay.jsonl"), "replay_ratio": 0.1,
              "train": {"lora_target_modules": ["q_proj", "not_a_module"]},
              "eval": {"data": {"safety": str(tmp_path / "none.csv")}}}
    with pytest.raises(ConfigError) as e:
        validate(PipelineConfig, recipe, source="r.yaml", write=False)
    text = str(e.value)
    for part in ("data: ", "replay: file not found", "'not_a_module' is not a module of",
                 "eval.data.safety: ", "none.csv: no such file"):
        assert part in text, text
    assert not (tmp_path / "run").exists()  # write=False: validation creates nothing


def test_validate_runs_the_preflight_on_what_could_be_built(tiny_model_dir, tmp_path):
    # a typo in one section does not hide a missing file in another: one error lists both
    recipe = {"model": str(tiny_model_dir), "data": {"path": str(tmp_path / "none.jsonl")},
              "train": {"epochz": 1}}
    with pytest.raises(ConfigError) as e:
        validate(PipelineConfig, recipe, write=False)
    assert len(e.value.problems) == 2 and "did you mean 'epochs'" in str(e.value) and "none.jsonl" in str(e.value)


def test_eval_preflight_models_names_gate_and_server(tmp_path):
    found = problems(EvalConfig(tuned=["a=/nope/x", "a=/nope/y"], max_drop={"safety": 1}))
    assert sum("not found" in p for p in found) == 2 and any("used twice" in p for p in found)
    found = problems(EvalConfig(base="smollm2-135m-instruct", max_drop={"safety": 1}))
    assert found == ["max_drop needs at least one tuned model to compare with the base"]
    found = problems(EvalConfig(tuned=["smollm2-135m-instruct"], base_url="http://127.0.0.1:1/v1"))
    assert len(found) == 1 and "backend openai" in found[0]
    (tmp_path / "o").write_text("x")
    assert "is a file, not a folder" in problems(EvalConfig(output_dir=str(tmp_path / "o")))[-1]


def test_push_to_hub_is_checked_before_the_run(tmp_path, monkeypatch):
    from sdft.cli import main

    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    assert any("not a Hub repo id" in p for p in problems(RewriteConfig(input=str(data), output=str(tmp_path / "o")),
                                                          push_to_hub="no-slash"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit) as e:
        main(["rewrite", str(data), "-o", str(tmp_path / "o.jsonl"), "--push-to-hub", "alice/x", "--backend", "hf"])
    assert e.value.code == 2 and not (tmp_path / "o.jsonl").exists()


def test_given_and_explicit_track_what_the_data_set():
    cfg = from_dict(PipelineConfig, {"data": {"path": "x"}, "seed": 3, "rewrite": {"samples": 2, "seed": 0},
                                     "train": {"lora_r": 8}})
    assert given(cfg.rewrite) == {"samples", "seed"} and explicit(cfg.train) == {"lora_r": 8}
    assert cfg.rewrite_config().seed == 0  # the section's own seed wins, even when it equals the default
    assert from_dict(PipelineConfig, {"data": {"path": "x"}, "seed": 3}).rewrite_config().seed == 3
    assert given(RewriteConfig(samples=2)) == {"samples", "temperature"}  # built directly: what differs
    obj, found = build(PipelineConfig, {"data": {"path": "x"}, "train": {"epochs": "many", "lora_r": 4}})
    assert obj is not None and obj.train.lora_r == 4 and found == ["train.epochs: expected a number, got 'many'"]


def test_pipeline_sections_refuse_what_the_pipeline_owns():
    with pytest.raises(ConfigError) as e:
        from_dict(PipelineConfig, {"data": {"path": "x"}, "rewrite": {"input": "y"}, "train": {"seed": 1},
                                   "eval": {"tuned": ["z"]}})
    assert [p.split(":")[0] for p in e.value.problems] == ["rewrite.input", "train.seed", "eval.tuned"]


def test_check_raises_one_error(tmp_path):
    with pytest.raises(ConfigError, match="2 problems"):
        check(ReplayConfig(output="", model=f"{NOWHERE}/m"))
    assert problems(ReplayConfig(output=str(Path(tmp_path) / "o.jsonl"), model="smollm2-135m-instruct")) == []
