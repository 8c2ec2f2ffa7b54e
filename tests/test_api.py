"""The Python API (sdft.api, exported lazily by sdft): cheap import, datasets in and out, domain errors.

Tests without a model fixture are fast-tier: they fail before any model would load (bad data and
bad settings are checked first). The rest run the tiny model through the real transformers engine.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import sdft
from sdft.errors import ConfigError, InputError
from sdft.models import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ARCHITECTURE.md"
ROWS = [{"question": f"Tom has {a} apples and buys {b} more. How many apples does he have?",
         "answer": f"{a} + {b} = {a + b}\n#### {a + b}", "n": i, "tags": ["x"] * i}
        for i, (a, b) in enumerate([(3, 4), (10, 5), (7, 8)])]
NO_MODEL = "/nonexistent/model"
TINY = {"samples": 1, "max_new_tokens": 12, "gap_rows": 2, "batch_size": 2}  # quick on the random tiny model


@pytest.fixture()
def isolated(tmp_path, monkeypatch):
    """A fresh empty cwd and temp folder: afterwards, whatever the API left behind is in one of them."""
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return cwd, tmp


def leftovers(*folders: Path) -> list[str]:
    return sorted(str(p) for folder in folders for p in folder.rglob("*"))


# ------------------------------------------------------------------------- the package (fast)


def test_import_is_cheap_and_the_names_are_the_functions():
    code = ("import sys, sdft\n"
            "heavy = [m for m in ('torch', 'vllm', 'transformers', 'datasets') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "assert sorted(m for m in sys.modules if m.startswith('sdft')) == ['sdft'], sys.modules\n"
            "import sdft.rewrite, sdft.replay, sdft.train, sdft.compare.run, sdft.api\n"
            "for name in ('rewrite', 'replay', 'train', 'evaluate', 'compare'):\n"
            "    assert getattr(sdft, name) is getattr(sdft.api, name), name\n"
            "from sdft import rewrite, RewriteConfig, EvalConfig, InputError\n"
            "from sdft.rewrite import RewriteConfig as R\n"
            "assert rewrite is sdft.api.rewrite and RewriteConfig is R\n"
            "import importlib; assert importlib.import_module('sdft.train').TrainConfig is sdft.TrainConfig\n"
            "heavy = [m for m in ('torch', 'vllm', 'transformers', 'datasets') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'rewrit'"):
        sdft.rewrit  # noqa: B018


# ------------------------------------------------------------------- errors before any model (fast)


@pytest.mark.parametrize(("data", "message"), [
    ([{"question": "q", "answer": "a"}, {"question": "q2"}], r"row 2: missing field 'answer'"),
    ([{"question": "q", "answer": "a"}, "not a row"], r"data: row 2: expected a row \(a mapping"),
    ([], r"data: no rows"),
    ({"question": "q", "answer": "a"}, r"got one row"),
    (42, r"expected a datasets.Dataset, a list of dicts or a path"),
    ([{"question": "q", "answer": "a", "when": object()}], r"row 1: field 'when' holds an object"),
])
def test_bad_data_is_an_input_error_and_leaves_nothing(isolated, data, message):
    with pytest.raises(InputError, match=message):
        sdft.rewrite(data, model=NO_MODEL)
    assert leftovers(*isolated) == []


def test_bad_settings_are_one_config_error(isolated):
    with pytest.raises(ConfigError) as e:
        sdft.rewrite(ROWS, model=NO_MODEL, samples=0, selekt="first")
    text = str(e.value)
    assert "samples must be >= 1" in text and "selekt: unknown key (did you mean 'select'?)" in text
    assert leftovers(*isolated) == []


def test_every_function_validates_like_its_command(tmp_path, isolated):
    from sdft.replay import ReplayConfig

    with pytest.raises(ConfigError, match="num must be >= 1"):
        sdft.replay(num=0, model=NO_MODEL)
    with pytest.raises(ConfigError, match="replay takes a ReplayConfig or keyword settings"):
        sdft.replay("rows.jsonl")
    with pytest.raises(ConfigError, match="method must be sdft or sft"):
        sdft.train(ROWS, method="nope", model=NO_MODEL, output_dir=str(tmp_path / "run"))
    with pytest.raises(ConfigError, match="suites: unknown nope"):
        sdft.evaluate(suites=["nope"], output_dir=str(tmp_path / "eval"))
    with pytest.raises(ConfigError, match="unknown key"):
        sdft.evaluate(sutes=["safety"], output_dir=str(tmp_path / "eval"))
    with pytest.raises(ConfigError, match="nope"):
        sdft.compare(data={"path": "example:arith"}, model=NO_MODEL, methods=["sft", "nope"],
                     output_dir=str(tmp_path / "cmp"))
    # a config object with settings beside it: the settings replace its fields, then it is validated again
    cfg = ReplayConfig(output=str(tmp_path / "r.jsonl"), model=NO_MODEL)
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        sdft.replay(cfg, batch_size=0)
    assert not (tmp_path / "run").exists() and not (tmp_path / "eval").exists()
    assert leftovers(*isolated) == []


def test_a_config_object_is_run_as_given(tmp_path):
    from sdft.rewrite import RewriteConfig

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "a"}\n{"question": "q2", "answer": 7.5e400}\n')
    cfg = RewriteConfig(input=str(bad), output=str(tmp_path / "out.jsonl"), model=NO_MODEL)
    with pytest.raises(InputError, match=r"bad.jsonl: row 2: field 'answer' is the number inf"):
        sdft.rewrite(cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]


# ------------------------------------------------------------------------ on the tiny model


def test_rewrite_a_list_of_dicts_writes_nothing(hf_tiny, isolated):
    ds = sdft.rewrite(ROWS, model=hf_tiny.model_path, engine=hf_tiny, **TINY)
    assert leftovers(*isolated) == []
    assert ds.num_rows == len(ROWS) and set(ds.column_names) == {"messages", "sdft"}  # keep-original: all kept
    for row, src in zip(ds, ROWS):
        prompt, answer = row["messages"][:-1], row["messages"][-1]
        assert prompt == [{"role": "user", "content": src["question"]}] and answer["role"] == "assistant"
        rec = row["sdft"]
        assert rec["original"] == src["answer"] and rec["index"] == src["n"]
        assert json.loads(rec["extra"]) == {"n": src["n"], "tags": src["tags"]}
        assert rec["status"] in ("rewritten", "fallback")
        assert (answer["content"] == src["answer"]) == (rec["status"] == "fallback")
    assert ds.manifest["rows"]["total"] == len(ROWS) and ds.manifest["kind"] == "sdft-rewrite"
    assert ds.manifest["rows"]["rewritten"] == sum(r["status"] == "rewritten" for r in ds["sdft"])


def test_rewrite_a_dataset_keeps_the_run_only_when_asked(hf_tiny, isolated):
    import datasets

    from sdft.store import iter_kept, iter_records, read_manifest

    data = datasets.Dataset.from_list(ROWS)
    out = isolated[0] / "runs" / "out.jsonl"
    dropped = sdft.rewrite(data, model=hf_tiny.model_path, engine=hf_tiny, on_fail="drop", output_format="alpaca",
                           output=out, **TINY)
    # the run is the CLI's: training file, records, rejected rows, manifest; the dataset is its kept rows
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "out.jsonl", "out.jsonl.manifest.json", "out.jsonl.records.jsonl", "out.jsonl.rejected.jsonl"]
    kept = list(iter_kept(out))
    assert dropped.manifest == read_manifest(out)
    assert [r["id"] for r in dropped["sdft"]] == [r["id"] for r in kept]
    assert dropped.num_rows == dropped.manifest["rows"]["rewritten"]  # drop: only verified rewrites stay
    assert set(dropped.column_names) == {"instruction", "input", "output", "sdft"}
    assert leftovers(isolated[1]) == []
    # the same rows as a Dataset and as a list are the same rows (content ids, not positions)
    again = sdft.rewrite(ROWS, model=hf_tiny.model_path, engine=hf_tiny, **TINY)
    assert [r["id"] for r in iter_records(out)] == again["sdft"]["id"] and again.num_rows == len(ROWS)


def test_train_on_the_rows_rewrite_returned(hf_tiny, isolated):
    from sdft.train import TrainConfig

    ds = sdft.rewrite(ROWS, model=hf_tiny.model_path, engine=hf_tiny, **TINY)
    out = isolated[0] / "tuned"
    cfg = TrainConfig(model=hf_tiny.model_path, output_dir=str(out), max_steps=1, merge=False,
                      per_device_batch_size=2, gradient_accumulation_steps=1, save_steps=1)
    res = sdft.train(ds, config=cfg)
    assert res.final_dir == out / "final" and (out / "final" / "adapter_config.json").is_file()
    assert res.metrics["rows"] == len(ROWS) and res.metrics["global_step"] == 1
    assert leftovers(isolated[1]) == []


def test_the_documented_example_runs(tiny_model_dir, isolated, capsys):
    """The first python block under "Use from Python" in docs/ARCHITECTURE.md, on the tiny model."""
    text = DOC.read_text()
    section = text.split("## Use from Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    needle = f'model="{DEFAULT_MODEL}"'
    assert code.count(needle) == 1, "the example must name the default model once (the test swaps it)"
    code = code.replace(needle, f'model="{tiny_model_dir}", backend="hf"')
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)  # noqa: S102 - the project's own documentation
    ds, rows = namespace["ds"], namespace["rows"]
    assert ds.num_rows == len(rows)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == len(rows) + 1 and printed[-1].startswith("acceptance ")
    assert all(line.split()[0] in ("rewritten", "fallback") for line in printed[:-1])
    assert leftovers(*isolated) == []
