"""Compare recipes, method presets and the task split with its disjointness check (no model; fast)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from sdft.compare.config import load_compare, load_compare_recipe
from sdft.compare.methods import PRESETS, resolve_methods
from sdft.compare.split import check_disjoint, normalise_prompt, prepare_task_split, split_holdout
from sdft.data import DataSpec, load_examples
from sdft.errors import ConfigError, InputError

MODEL = "org/not-downloaded"  # a Hub id: validation reads no model files


def gsm_rows(n: int, start: int = 0) -> list[dict]:
    return [{"question": f"Tom has {a} apples and buys {a + 1} more. How many apples does he have?",
             "answer": f"{a} + {a + 1} = {2 * a + 1}.\n#### {2 * a + 1}"} for a in range(start, start + n)]


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def recipe(tmp_path: Path, **compare) -> dict:
    data = write(tmp_path / "task.jsonl", gsm_rows(10))
    return {"model": MODEL, "data": {"path": str(data)}, "rewrite": {"verifier": "math"},
            "train": {"max_steps": 2}, "eval": {"suites": ["safety"], "limit": 2},
            "compare": {"methods": ["sft", "sdft"], "seeds": 2, **compare}}


def test_presets_and_overrides():
    ms = resolve_methods(["sft", "sdft+replay", "mine"], {
        "sdft+replay": {"rewrite": {"samples": 4}, "replay_ratio": 0.3},
        "mine": {"base": "sdft", "doc": "SDFT at another lr", "train": {"learning_rate": 3e-4}},
        "unused": {"base": "sft"},  # defined by the recipe, not selected by this run: fine
    })
    sft, sdr, mine = ms
    assert sft.answers == "original" and not sft.replay
    assert sdr.answers == "rewrite" and sdr.replay and sdr.replay_ratio == 0.3
    assert sdr.rewrite == {**PRESETS["sdft+replay"].rewrite, "samples": 4}  # field by field over the preset
    assert mine.name == "mine" and mine.answers == "rewrite" and mine.train == {"learning_rate": 3e-4}
    assert "samples" not in PRESETS["sdft+replay"].rewrite  # overrides never leak into the presets
    for name in ("sft", "sft+replay", "sdft", "sdft+replay", "ladder", "ladder+replay", "dft", "trl-sdft"):
        assert PRESETS[name].doc


def test_sdft_rewrites_the_reference_only_and_ladder_uses_every_source(tmp_path):
    """`sdft` is the paper's reference rewrite whatever the rewrite defaults are; `ladder` is the defaults."""
    from sdft.rewrite import RewriteConfig
    from sdft.sources import SOURCES

    r = recipe(tmp_path)
    r["rewrite"].update(samples=3, temperature=0.5)
    r["compare"]["methods"] = ["sft", "sdft", "sdft+replay", "ladder", "ladder+replay"]
    cfg = load_compare(r, source="t", output_dir=str(tmp_path / "out"))
    sdft, sdft_replay, ladder, ladder_replay = cfg.methods[1:]
    plain = cfg.rewrite_config(sdft, tmp_path / "t.jsonl")
    assert plain.sources == ["reference", "original"]
    assert not plain.own_prefix and not plain.calculator and plain.max_length_ratio == 0  # no own answer needed
    full = cfg.rewrite_config(ladder, tmp_path / "t.jsonl")
    defaults = RewriteConfig(input="x", output="y")
    assert full.sources == list(SOURCES) == defaults.sources
    assert (full.own_prefix, full.calculator, full.max_length_ratio) == (
        defaults.own_prefix, defaults.calculator, defaults.max_length_ratio)
    for c in (plain, full):  # sampling is the recipe's for both
        assert (c.samples, c.temperature, c.verifier) == (3, 0.5, "math")
    # one rewrite per distinct setting: +replay shares its method's rewrite, sdft and ladder do not share
    assert cfg.rewrite_key(sdft) == cfg.rewrite_key(sdft_replay) != cfg.rewrite_key(ladder)
    assert cfg.rewrite_key(ladder) == cfg.rewrite_key(ladder_replay)
    # a recipe still overrides the preset field by field
    r["methods"] = {"sdft": {"rewrite": {"calculator": True}}}
    r["compare"]["methods"] = ["sdft"]
    over = load_compare(r, source="t").methods[0]
    c = load_compare(r, source="t").rewrite_config(over, tmp_path / "t.jsonl")
    assert c.calculator and c.sources == ["reference", "original"]


def test_method_problems_are_listed_together():
    with pytest.raises(ConfigError) as e:
        resolve_methods(["sft", "sft", "nope", "bad/name", "x"], {
            "x": {"base": "sdft", "answers": "mine", "replay": "yes", "colour": 1},
            "sdtf": {"rewrite": {"samples": 2}},  # a typo: not a preset, no base
        })
    text = "\n".join(e.value.problems)
    for needle in ("listed twice", "unknown method 'nope'", "'bad/name' is not a valid", "methods.x.answers",
                   "methods.x.replay", "methods.x.colour: unknown key", "methods.sdtf: not a preset"):
        assert needle in text, needle


def test_load_compare_validates_everything_before_any_model(tmp_path):
    cfg = load_compare(recipe(tmp_path), source="t", output_dir=str(tmp_path / "out"))
    assert [u.label for u in cfg.units] == ["sft@s0", "sft@s1", "sdft@s0", "sdft@s1"]
    assert cfg.units[3].dir == tmp_path / "out" / "units" / "sdft" / "seed-1"
    rc = cfg.rewrite_config(cfg.methods[1], tmp_path / "t.jsonl")
    assert rc.seed == 0 and rc.data_format == "messages"  # one sampling seed whatever the training seed
    tc = cfg.train_config(cfg.methods[0], 7, tmp_path / "m")
    assert tc.seed == 7 and tc.max_steps == 2 and tc.model == MODEL
    bad = recipe(tmp_path, seeds=0, task_holdout=2.0, bootstrap=5)
    bad["train"]["learing_rate"] = 1
    bad["methods"] = {"sdft": {"train": {"seed": 3}}}
    with pytest.raises(ConfigError) as e:
        load_compare(bad, source="t")
    text = "\n".join(e.value.problems)
    for needle in ("train.learing_rate: unknown key (did you mean 'learning_rate'?)", "compare.seeds",
                   "compare.task_holdout", "compare.bootstrap"):
        assert needle in text, needle


def test_methods_needing_newer_sdft_say_so(tmp_path):
    from sdft.rewrite import RewriteConfig
    from sdft.train import TrainConfig

    r = recipe(tmp_path)
    r["compare"]["methods"] = ["sft", "ladder", "dft"]
    has_sources = "sources" in {f.name for f in dataclasses.fields(RewriteConfig)}
    has_loss = "loss_type" in {f.name for f in dataclasses.fields(TrainConfig)}
    if has_sources and has_loss:  # both landed: the presets are plain methods now
        assert [m.name for m in load_compare(r, source="t").methods] == ["sft", "ladder", "dft"]
        return
    with pytest.raises(ConfigError) as e:
        load_compare(r, source="t")
    text = "\n".join(e.value.problems)
    if not has_sources:
        assert "methods.ladder: rewrite.sources: unknown key" in text and "answer-source ladder" in text
    if not has_loss:
        assert "methods.dft: train.loss_type: unknown key" in text and "DFT loss" in text


def test_seeds_as_a_list_and_recipe_lookup(tmp_path):
    cfg = load_compare(recipe(tmp_path, seeds=[3, 11]), source="t")
    assert cfg.seeds == [3, 11] and cfg.units[1].label == "sft@s11"
    data, source, name = load_compare_recipe("demo", ["compare.seeds=2"])
    assert source.endswith("recipes/compare/demo.yaml") and name == "demo" and data["compare"]["seeds"] == 2
    data, source, name = load_compare_recipe("gsm8k")  # any train recipe works with compare defaults
    assert name == "gsm8k" and "compare" not in data


def test_holdout_split_is_stable_disjoint_and_keeps_prompt_groups(tmp_path):
    rows = gsm_rows(20)
    rows.append({**rows[0], "answer": "another answer to the same question.\n#### 1"})  # same prompt
    path = write(tmp_path / "d.jsonl", rows)
    exs = load_examples(DataSpec(path=str(path)))
    train, held = split_holdout(exs, 0.25)
    assert len(held) in (5, 6) and len(train) + len(held) == 21  # 5 of the 20 distinct prompts
    check_disjoint(train, held, train_name="a", eval_name="b")  # no overlap by construction
    same_q = [ex for ex in exs if ex.question == rows[0]["question"]]
    assert all(ex in held for ex in same_q) or all(ex in train for ex in same_q)
    again, held2 = split_holdout(list(reversed(exs)), 0.25)  # row order does not matter
    assert {e.id for e in held2} == {e.id for e in held}
    with pytest.raises(InputError, match="at least 2 distinct prompts"):
        split_holdout(exs[:1], 0.5)


def test_overlap_between_training_and_eval_rows_fails_loudly(tmp_path):
    r = recipe(tmp_path)
    leaked = gsm_rows(1, start=4)[0]
    leaked["question"] = "  " + leaked["question"].upper().replace(" ", "   ") + " "  # same prompt, other spacing/case
    write(tmp_path / "eval.jsonl", [leaked, *gsm_rows(3, start=50), gsm_rows(1, start=7)[0]])
    r["compare"]["task_eval"] = str(tmp_path / "eval.jsonl")
    cfg = load_compare(r, source="t", output_dir=str(tmp_path / "out"))
    with pytest.raises(InputError) as e:
        prepare_task_split(cfg)
    msg = str(e.value)
    assert "2 of the 5 task-eval rows" in msg and "eval.jsonl row 1 and" in msg and "task.jsonl row 5:" in msg
    assert '"TOM HAS 4 APPLES AND BUYS 5 MORE.' in msg
    assert not (tmp_path / "out" / "data" / "task_eval.jsonl").exists()  # nothing written on failure
    assert normalise_prompt(" A\u00a0 b\tC ") == "a b c"


def test_split_files_read_back_and_are_not_rewritten(tmp_path):
    cfg = load_compare(recipe(tmp_path, task_holdout=0.3), source="t", output_dir=str(tmp_path / "out"))
    split = prepare_task_split(cfg)
    assert (split.train_rows, split.eval_rows, split.verifier) == (7, 3, "math")
    back = load_examples(DataSpec(path=str(split.train_file)))
    orig = load_examples(DataSpec(path=str(tmp_path / "task.jsonl")))
    assert {ex.id for ex in back} <= {ex.id for ex in orig}  # same prompts and answers, same content ids
    mtimes = [f.stat().st_mtime_ns for f in (split.train_file, split.eval_file)]
    prepare_task_split(cfg)
    assert [f.stat().st_mtime_ns for f in (split.train_file, split.eval_file)] == mtimes


def test_cli_overlap_is_exit_2_with_one_line(tmp_path, capsys):
    from sdft.cli import main

    write(tmp_path / "task.jsonl", gsm_rows(6))
    path = tmp_path / "r.yaml"
    path.write_text(f"model: {MODEL}\ndata: {{path: {tmp_path / 'task.jsonl'}}}\n"
                    f"compare: {{task_eval: {tmp_path / 'task.jsonl'}}}\n")
    with pytest.raises(SystemExit) as e:
        main(["compare", str(path), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "task data overlap: 6 of the 6" in err and "Traceback" not in err


def test_bundled_compare_recipe_is_valid():
    data, source, _ = load_compare_recipe("demo", [f"model={MODEL}"])  # the schema, without the model files
    cfg = load_compare(data, source=source)
    assert [m.name for m in cfg.methods] == ["sft", "sdft"] and cfg.seeds == [0, 1, 2]
    assert cfg.section.holdout == 0.25 and cfg.output_dir == Path("runs/compare")


def test_one_compare_process_per_folder(tmp_path):
    import os
    import subprocess
    import sys

    from sdft.compare.run import run_lock

    with run_lock(tmp_path):
        assert (tmp_path / ".compare.lock").read_text() == str(os.getpid())
    assert not (tmp_path / ".compare.lock").exists()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / ".compare.lock").write_text(str(live.pid))
        with pytest.raises(InputError, match=f"another sdft compare \\(pid {live.pid}\\)"):
            with run_lock(tmp_path):
                pass
    finally:
        live.kill()
        live.wait()
    with run_lock(tmp_path):  # the owner was killed: its lock is taken over
        assert (tmp_path / ".compare.lock").read_text() == str(os.getpid())


def test_eval_settings_add_the_task_suite_for_every_model(tmp_path):
    cfg = load_compare(recipe(tmp_path), source="t", output_dir=str(tmp_path / "out"))
    s = cfg.eval_settings(["sft@s0=a", "sdft@s0=b"], tmp_path / "task_eval.jsonl", "math")
    assert s["suites"] == ["task", "safety"] and s["data"]["task"] == str(tmp_path / "task_eval.jsonl")
    assert s["task_verifier"] == "math" and s["base"] == MODEL and s["tuned"] == ["sft@s0=a", "sdft@s0=b"]
    assert s["limit"] == 2 and s["output_dir"] == str(tmp_path / "out" / "eval")
    without = cfg.eval_settings([], None, None)
    assert without["suites"] == ["safety"] and "task_verifier" not in without and "task" not in without["data"]
