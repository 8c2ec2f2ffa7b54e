"""sdft eval, no model loaded: the config (every model form, budgets, task), the CLI's argument
handling, the answer cache, the gate, and the report's rendering and per-item contract."""

from __future__ import annotations

import json

import pytest

from sdft.errors import ConfigError
from sdft.eval.base import Answer, ItemResult, Probe
from sdft.eval.cache import KeyedLog, clear
from sdft.eval.config import EvalConfig, split_tuned
from sdft.eval.report import answer_rows, pick_examples, render_markdown
from sdft.eval.run import gate_failures
from sdft.models import DEFAULT_MODEL
from sdft.preflight import check


# ---------------------------------------------------------------- config
def test_config_lists_every_problem(tmp_path):
    with pytest.raises(ConfigError) as e:
        EvalConfig(tuned=["a=/nope/x", "a=/nope/y", "b/c=x/y"], suites=["safety", "vibes", "task"],
                   max_drop={"math": -1, "safety": float("nan")}, data={"vibes": "/nope.csv"}, limit=0,
                   max_new_tokens={"safety": 0, "vibes": 3}, task_verifier="magic", task_format="yaml")
    text = str(e.value)
    for part in ("unknown vibes", "max_drop.math: not one of the suites", ">= 0, got -1", ">= 0, got nan",
                 "data.vibes: not a suite", "limit must be >= 1",
                 "task needs its data", "max_new_tokens.safety must be a whole number", "max_new_tokens.vibes: not a "
                 "suite", "task_verifier: unknown verifier 'magic'", "task_format must be"):
        assert part in text, text
    # models and their names are checked by the preflight (the disk), not when the config is built
    with pytest.raises(ConfigError) as e:
        check(EvalConfig(tuned=["a=/nope/x", "a=/nope/y", "b/c=x/y"]))
    for part in ("used twice", "'/nope/x' not found", "the name 'b/c' must be"):
        assert part in str(e.value), str(e.value)


def test_every_model_form_is_accepted_and_named(tmp_path):
    tiny_model_dir = tmp_path / "hf-model"  # what the checks look at: a folder with config.json
    tiny_model_dir.mkdir()
    (tiny_model_dir / "config.json").write_text("{}")
    adapter = tmp_path / "runs" / "demo" / "final"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    gguf = tmp_path / "SmolLM2.Q4.gguf"
    gguf.write_bytes(b"GGUF")
    cfg = EvalConfig(base=str(tiny_model_dir), tuned=[DEFAULT_MODEL, str(adapter), str(gguf), "org/model-1b",
                                                      f"x={tiny_model_dir}"])
    assert cfg.models() == [("base", str(tiny_model_dir)), (DEFAULT_MODEL, DEFAULT_MODEL), ("demo", str(adapter)),
                            ("SmolLM2.Q4", str(gguf)), ("model-1b", "org/model-1b"), ("x", str(tiny_model_dir))]
    assert EvalConfig(base=DEFAULT_MODEL, tuned=[f"seed={tiny_model_dir}"]).models()[0] == ("base", DEFAULT_MODEL)
    with pytest.raises(ConfigError, match=r"is not a model folder"):
        check(EvalConfig(tuned=[str(tmp_path / "runs")]))
    with pytest.raises(ConfigError, match=r"base: 'missing.gguf' not found"):
        check(EvalConfig(base="missing.gguf"))
    with pytest.raises(ConfigError, match=r"the name 'base' is used twice"):
        check(EvalConfig(tuned=[f"base={tiny_model_dir}"]))
    assert EvalConfig(base=str(adapter), tuned=[str(gguf)]).models()[0] == ("base", str(adapter))


def test_split_tuned_names():
    assert split_tuned("sft=runs/a/merged") == ("sft", "runs/a/merged")
    assert split_tuned("runs/demo/merged") == ("demo", "runs/demo/merged")
    assert split_tuned("runs/x/final/") == ("x", "runs/x/final/")
    assert split_tuned("smollm2-135m-instruct") == ("smollm2-135m-instruct", "smollm2-135m-instruct")
    assert split_tuned("../odd name!/merged") == ("odd-name", "../odd name!/merged")


def test_budgets_and_default_suites(tmp_path):
    assert EvalConfig().budget("safety") == 64 and EvalConfig().budget("math") == 320
    assert EvalConfig(max_new_tokens=12).budget("drift") == 12
    cfg = EvalConfig(max_new_tokens={"safety": 16, "default": 100})
    assert (cfg.budget("safety"), cfg.budget("math")) == (16, 100)
    assert EvalConfig(max_new_tokens={"math": 512}).budget("over-refusal") == 64
    with pytest.raises(ConfigError, match="from 1 to"):
        EvalConfig(max_new_tokens=10 ** 12)
    assert "task" not in EvalConfig().suites
    assert EvalConfig(data={"task": "held.jsonl"}).suites[0] == "task"
    assert EvalConfig(data={"task": "held.jsonl"}, suites=["math"]).suites == ["math"]


def test_recipe_style_config_through_from_dict():
    from sdft.config import from_dict

    cfg = from_dict(EvalConfig, {"suites": "safety,drift", "max_new_tokens": {"safety": 32}, "limit": "3"})
    assert cfg.suites == ["safety", "drift"] and cfg.budget("safety") == 32 and cfg.limit == 3
    with pytest.raises(ConfigError, match="max_new_tokens"):
        from_dict(EvalConfig, {"max_new_tokens": "many"})


# ---------------------------------------------------------------- CLI argument handling (nothing loads)
def test_cli_without_arguments_prints_usage_and_exits_2(capfd):
    from sdft.cli import main

    with pytest.raises(SystemExit) as e:
        main(["eval"])
    err = capfd.readouterr().err
    assert e.value.code == 2 and "Usage: sdft eval" in err and "nothing to evaluate" in err


@pytest.mark.parametrize("values,expected", [
    (("12",), 12),
    (("safety=8,math=100",), {"safety": 8, "math": 100}),
    (("safety=8", "30"), {"safety": 8, "default": 30}),
    ((), None),
])
def test_cli_budget_parsing(values, expected):
    from sdft.commands.eval import OPTIONS
    from sdft.config import from_dict

    kw = {"max_new_tokens": values}
    assert from_dict(EvalConfig, OPTIONS.given(kw)).max_new_tokens == expected


def test_cli_bad_input_exits_2_before_loading(capfd, tmp_path):
    from sdft.cli import main

    for argv in (["eval", "--tuned", "nope/x/y"], ["eval", "--base", "x/y", "--max-new-tokens", "safety=lots"],
                 ["eval", "--tuned", "a/b", "--data", f"safety={tmp_path / 'none.csv'}", "-o", str(tmp_path / "o")]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2, capfd.readouterr()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "none.csv: no such file" in err


# ---------------------------------------------------------------- cache, gate
def test_cache_survives_a_torn_last_line_and_clear_removes_only_its_files(tmp_path):
    log = KeyedLog(tmp_path / "g" / "base.jsonl")
    log.append([{"key": "a", "text": "1"}])
    with (tmp_path / "g" / "base.jsonl").open("a") as f:
        f.write('{"key": "b", "te')  # a crash mid-write
    log = KeyedLog(tmp_path / "g" / "base.jsonl")
    assert "a" in log and "b" not in log
    log.append([{"key": "b", "text": "2"}])
    assert KeyedLog(tmp_path / "g" / "base.jsonl")["b"]["text"] == "2"
    (tmp_path / "g" / "base.scores.jsonl").write_text("")
    (tmp_path / "g" / "probes.jsonl").write_text("a user's file")
    clear(tmp_path / "g", ["base", "sft"])
    assert [p.name for p in (tmp_path / "g").iterdir()] == ["probes.jsonl"]


def test_gate_failures_only_for_drops_beyond_the_allowance():
    report = {"suites": [
        {"suite": "safety", "models": {"base": {"score": 80.0}, "sft": {"score": 70.0}, "sdft": {"score": 79.0}}},
        {"suite": "math", "models": {"base": {"score": 20.0}, "sft": {"score": 30.0}, "sdft": {"score": 14.0}}},
    ]}
    fails = gate_failures(report, {"safety": 2, "math": 5})
    assert len(fails) == 2 and fails[0].startswith("sft: safety dropped 10.0") and fails[1].startswith("sdft: math")
    assert gate_failures(report, {"safety": 10, "math": 6}) == []


# ---------------------------------------------------------------- report: examples, rendering, per-item rows
def _items():
    probes = [Probe(f"p{i}", [{"role": "user", "content": f"prompt {i}"}], 8) for i in range(4)]
    texts = ["Sure, here is <script>alert(1)</script> | `x`", "I cannot.", "I'm sorry.\n\nNo. " + "x" * 400, "ok"]
    answers = {p.id: Answer(t, "length" if i == 2 else "stop") for i, (p, t) in enumerate(zip(probes, texts))}
    items = [ItemResult("p0", 0.0, False, "complied"), ItemResult("p1", 100.0, True, "ok"),
             ItemResult("p2", 100.0, True, "ok"), ItemResult("p3", 0.0, False, "complied")]
    return probes, answers, items


def test_examples_pick_a_pass_and_a_fail_and_are_cut():
    probes, answers, items = _items()
    ex = pick_examples(probes, answers, items)
    assert [(e["id"], e["pass"]) for e in ex] == [("p1", True), ("p0", False)]
    only_pass = [ItemResult(i.id, 100.0, True, "ok") for i in items]
    assert [e["id"] for e in pick_examples(probes, answers, only_pass)] == ["p0", "p1"]
    long = pick_examples(probes, answers, items, k=4)[2]
    assert long["id"] == "p2" and len(long["answer"]) == 200 and long["answer"].endswith("…")
    assert "\n" not in long["answer"]


def test_markdown_shows_examples_inert():
    probes, answers, items = _items()
    report = {"models": [{"label": "base", "path": "/m"}], "suites": [
        {"suite": "safety", "metric": "refusal rate", "max_new_tokens": 64, "models": {"base": {
            "n": 4, "k": 2, "score": 50.0, "low": 15.0, "high": 85.0,
            "examples": pick_examples(probes, answers, items)}}}]}
    md = render_markdown(report)
    assert "## Example answers" in md and "### safety: refusal rate, ≤64 tokens" in md
    assert "<script>" not in md and r"\<script\>" in md and r"\| \`x\`" in md
    assert "**base** pass · ok · id p1" in md and "**base** FAIL · complied · id p0" in md


def test_answer_rows_carry_the_per_item_contract():
    probes, answers, items = _items()
    rows = answer_rows({"safety": probes}, {"base": {"safety": answers}}, {"base": {"safety": items}})
    assert [set(r) for r in rows] == [{"model", "suite", "id", "prompt", "answer", "finish_reason", "pass", "value",
                                        "reason", "detail"}] * 4
    assert [(r["id"], r["pass"], r["value"]) for r in rows] == [(i.id, i.passed, i.value) for i in items]
    assert rows[2]["finish_reason"] == "length" and rows[0]["prompt"] == "prompt 0"
    json.dumps(rows)  # JSON-able as written


def test_old_import_paths_still_work():
    from sdft.eval.report import EvalConfig as Moved
    from sdft.eval.report import run_eval, table_rows

    assert Moved is EvalConfig and callable(run_eval) and callable(table_rows)
