"""Every shipped recipe validates (no model loads); `sdft recipes` lists them; bad configs list every problem."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sdft.cli import cli
from sdft.errors import ConfigError
from sdft.recipes import list_recipes, validate_recipe

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted(p.stem for p in (ROOT / "recipes").glob("*.yaml"))


@pytest.fixture(scope="module")
def bfcl_prepared(tmp_path_factory) -> Path:
    """bin/prepare-bfcl on a three-problem BFCL-format folder (the openfunctions recipe's data)."""
    src = tmp_path_factory.mktemp("bfcl-src")
    fn = {"name": "area", "parameters": {"type": "dict", "properties": {"r": {"type": "float"}}, "required": ["r"]}}
    (src / "simple_python.jsonl").write_text("".join(
        json.dumps({"id": f"s{i}", "question": [[{"role": "user", "content": f"Area of a circle of radius {i}?"}]],
                    "function": [fn]}) + "\n" for i in range(3)))
    (src / "simple_python_answers.jsonl").write_text("".join(
        json.dumps({"id": f"s{i}", "ground_truth": [{"area": {"r": [i]}}]}) + "\n" for i in range(3)))
    out = tmp_path_factory.mktemp("bfcl-out")
    subprocess.run([sys.executable, str(ROOT / "bin/prepare-bfcl"), str(src), "-o", str(out), "--heldout", "1"],
                   check=True, capture_output=True)
    return out


def test_the_shipped_set():
    assert {"demo", "gsm8k", "gsm8k-paper", "openfunctions", "alpaca", "dolly", "code"} <= set(SHIPPED)
    assert [r.name for r in list_recipes()] == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_recipe_validates(name, bfcl_prepared):
    text = (ROOT / "recipes" / f"{name}.yaml").read_text()
    assert text.startswith("#") and "sdft train" in text.split("\n\n")[0], "header: what it does and how to run it"
    overrides = []
    if name == "openfunctions":  # its data is made by bin/prepare-bfcl
        overrides = [f"data.path={bfcl_prepared / 'train.jsonl'}",
                     f"eval.data.tool-use={bfcl_prepared / 'heldout.jsonl'}"]
    cfg = validate_recipe(name, overrides)
    assert cfg.rewrite_config() and cfg.train_config()
    if cfg.eval is not None:
        assert cfg.eval.get("suites")


def test_prepare_bfcl_output_trains_and_evaluates(bfcl_prepared):
    from sdft.data import DataSpec, load_examples
    from sdft.eval import get_suite
    from sdft.verify.toolcall import is_correct

    rows = load_examples(DataSpec(path=str(bfcl_prepared / "train.jsonl"), format="messages"))
    assert len(rows) == 2 and rows[0].messages[0]["role"] == "system"
    assert is_correct(rows[1].answer, "area(r=1)").ok
    (probe,) = get_suite("tool-use").probes(str(bfcl_prepared / "heldout.jsonl"), None)
    assert get_suite("tool-use").judge(probe, "area(r=2)", "stop").ok


def test_overrides_apply_with_types():
    cfg = validate_recipe("demo", ["train.learning_rate=1e-5", "data.limit=8", "method=sft", "eval.limit=3"])
    assert cfg.train_config().learning_rate == 1e-5 and cfg.data.limit == 8 and cfg.method == "sft"
    assert cfg.eval["limit"] == 3


def test_bad_recipe_lists_every_problem_and_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: smollm2-135m-instruct\nmethod: magic\nlearning_rate: 3\n"
                   "data: {path: example:arith}\n"
                   "train: {epochs: many, lora_target_modules: [q_proj], batch: 4}\n"
                   "eval: {suites: [safety, vibes]}\n")
    with pytest.raises(ConfigError) as e:
        validate_recipe(str(bad))
    text = str(e.value)
    for part in ("method must be sdft or sft", "learning_rate", "epochs", "batch", "vibes"):
        assert part in text, text
    assert len(e.value.problems) >= 5
    from sdft.cli import main

    r = subprocess.run([sys.executable, "-c", f"from sdft.cli import main; main(['recipes', 'validate', '{bad}'])"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "problems" in r.stderr, r.stderr
    assert main  # imported without side effects


def test_lora_target_the_model_lacks_is_reported(tiny_model_dir):
    with pytest.raises(ConfigError, match="not_a_module"):
        validate_recipe("demo", [f"model={tiny_model_dir}", "train.lora_target_modules=[q_proj,not_a_module]"])


def test_recipes_cli_ls_show_validate():
    runner = CliRunner()
    r = runner.invoke(cli, ["recipes", "ls"])
    assert r.exit_code == 0
    for name in SHIPPED:
        assert name in r.output
    r = runner.invoke(cli, ["recipes", "show", "gsm8k"])
    assert r.exit_code == 0 and "verifier: math" in r.output
