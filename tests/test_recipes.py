"""Every shipped recipe validates (no model loads); `sdft recipes` lists them; bad configs list every problem."""

from __future__ import annotations

import json
import shlex
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
def test_every_shipped_recipe_validates(name, bfcl_prepared, monkeypatch):
    import transformers

    import sdft.engines

    def no_weights(*a, **k):
        raise AssertionError("validating a recipe must not load a model")

    # LoRA targets are checked on a meta-device skeleton built from config.json: never the weights
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_weights)
    monkeypatch.setattr(sdft.engines, "load_engine", no_weights)
    text = (ROOT / "recipes" / f"{name}.yaml").read_text()
    assert text.startswith("#") and "sdft train" in text.split("\n\n")[0], "header: what it does and how to run it"
    overrides = []
    if name == "openfunctions":  # its data is made by bin/prepare-bfcl
        overrides = [f"data.path={bfcl_prepared / 'train.jsonl'}",
                     f"eval.data.tool-use={bfcl_prepared / 'heldout.jsonl'}"]
    cfg = validate_recipe(name, overrides)
    assert cfg.rewrite_config() and cfg.train_config()
    _check_verifier(cfg)
    if cfg.eval is not None:
        assert cfg.eval.suites


def _check_verifier(cfg) -> None:
    """Verifier options are only checked when the rewrite starts: build the verifier now."""
    from sdft.verify import get_verifier

    rc = cfg.rewrite_config()
    if rc.verifier != "auto":
        get_verifier(rc.verifier, **rc.verifier_options)


def _header_examples(name: str) -> list[list[str]]:
    """The arguments after ``sdft train NAME`` of every example command in a recipe's header comment."""
    header = []
    for line in (ROOT / "recipes" / f"{name}.yaml").read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line.lstrip("#").strip())
    examples = []
    for line in "\n".join(header).replace("\\\n", " ").splitlines():
        cmd = line.split(" #", 1)[0].strip()
        if cmd.startswith("sdft train "):
            argv = shlex.split(cmd)[2:]
            assert argv and argv[0] == name, cmd
            examples.append(argv[1:])
    return examples


@pytest.mark.parametrize("name", SHIPPED)
def test_header_examples_validate(name, bfcl_prepared, monkeypatch):
    """Every `sdft train NAME key=value ...` line of a header is a valid config (local files that are not
    here, e.g. a private copy of a Hub dataset, are left out; keys, types and verifier options still count)."""
    monkeypatch.chdir(ROOT)  # the headers' relative paths (../shared/data/...) are from the repository root
    examples = _header_examples(name)
    assert examples, "the header shows how to run the recipe"
    for argv in examples:
        overrides, i = [], 0
        while i < len(argv):
            if argv[i] == "--method":
                overrides.append(f"method={argv[i + 1]}")
                i += 2
                continue
            assert "=" in argv[i], argv
            key, value = argv[i].split("=", 1)
            local_file_not_here = (key == "data.path" and not _hub_id(value) and not value.startswith("example:")
                                   and not Path(value).exists())
            if not local_file_not_here:
                overrides.append(argv[i])
            i += 1
        if name == "openfunctions" and not any(o.startswith("data.path=") for o in overrides):
            overrides = [f"data.path={bfcl_prepared / 'train.jsonl'}",
                         f"eval.data.tool-use={bfcl_prepared / 'heldout.jsonl'}", *overrides]
        _check_verifier(validate_recipe(name, overrides))


def _hub_id(value: str) -> bool:
    """``owner/name`` with no file extension and no leading ./ or ../: a Hub dataset id."""
    return value.count("/") == 1 and not value.startswith(".") and not Path(value).suffix


def test_recipes_readme_covers_every_recipe_and_launcher_config():
    text = (ROOT / "recipes" / "README.md").read_text()
    for name in SHIPPED:
        assert f"`{name}`" in text, name
    for cfg in (ROOT / "recipes" / "accelerate").glob("*.yaml"):
        assert f"`{cfg.name}`" in text, cfg.name


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
    cfg = validate_recipe("demo", ["train.learning_rate=1e-5", "data.limit=8", "method=sft", "eval.limit=3",
                                   "train.lora_target_modules=q_proj,v_proj", "train.merge=false"])
    tc = cfg.train_config()
    assert tc.learning_rate == 1e-5 and isinstance(tc.learning_rate, float)
    assert cfg.data.limit == 8 and cfg.method == "sft" and cfg.eval.limit == 3
    assert tc.lora_target_modules == ["q_proj", "v_proj"] and tc.merge is False
    with pytest.raises(ConfigError, match="train.learning_rate: expected a number"):
        validate_recipe("demo", ["train.learning_rate=fast"])


def test_bad_recipe_lists_every_problem_and_exits_2(tmp_path, tiny_model_dir, capfd):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"model: {tiny_model_dir}\nmethod: magic\nlearning_rate: 3\n"
                   "data: {path: example:arith}\n"
                   "train: {epochs: many, lora_target_modules: [q_proj, not_a_module], batch: 4}\n"
                   "eval: {suites: [safety, vibes]}\n")
    expected = ("learning_rate: unknown key",                 # top-level key that belongs in train
                "method must be sdft or sft, got 'magic'",    # bad method
                "train.epochs: expected a number, got 'many'",  # wrong type
                "train.batch: unknown key",                   # unknown key in a section
                "vibes",                                      # bad value in a section (eval.suites)
                "'not_a_module' is not a module of")          # LoRA target the tiny model lacks
    with pytest.raises(ConfigError) as e:
        validate_recipe(str(bad))
    assert len(e.value.problems) == len(expected), e.value.problems
    for part in expected:
        assert part in str(e.value), str(e.value)

    from sdft.cli import main

    for argv in (["recipes", "validate", str(bad)], ["train", str(bad)]):  # one error, exit 2, nothing loaded
        with pytest.raises(SystemExit) as ex:
            main(argv)
        err = capfd.readouterr().err
        assert ex.value.code == 2, err
        assert f"({len(expected)} problems)" in err and err.count("invalid configuration") == 1, err
        for part in expected:
            assert part in err, err


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
