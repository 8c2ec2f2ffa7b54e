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


def test_recipe_paths_resolve_from_the_recipe_folder(bfcl_prepared, tmp_path, monkeypatch):
    """A checkout's openfunctions recipe, its data prepared where the header says (the repository's
    data/bfcl), validates from any folder: relative paths missing from the cwd are read from the recipe's."""
    import shutil

    repo = tmp_path / "repo"
    (repo / "recipes").mkdir(parents=True)
    shutil.copy(ROOT / "recipes" / "openfunctions.yaml", repo / "recipes")
    shutil.copytree(bfcl_prepared, repo / "data" / "bfcl")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("SDFT_RECIPES", str(repo / "recipes"))
    monkeypatch.chdir(elsewhere)
    cfg = validate_recipe("openfunctions", ["train.finetune=full"])  # full: no LoRA check (fast tier)
    assert Path(cfg.data.path).resolve() == (repo / "data" / "bfcl" / "train.jsonl").resolve()
    assert Path(cfg.eval.data["tool-use"]).resolve() == (repo / "data" / "bfcl" / "heldout.jsonl").resolve()


def test_recipe_paths_prefer_the_cwd_and_overrides_stay_cwd_relative(tmp_path, monkeypatch):
    from sdft.recipes import load_recipe

    (tmp_path / "r").mkdir()
    (tmp_path / "cwd").mkdir()
    recipe = tmp_path / "r" / "my.yaml"
    recipe.write_text("model: m\ndata: {path: d.jsonl}\nrewrite: {template: t.j2}\nreplay: replay.jsonl\n"
                      "eval: {data: {safety: s.jsonl, drift: x.jsonl}}\n")
    for name in ("d.jsonl", "t.j2", "replay.jsonl", "s.jsonl"):
        (tmp_path / "r" / name).write_text("{}\n")
    (tmp_path / "cwd" / "s.jsonl").write_text("{}\n")
    monkeypatch.chdir(tmp_path / "cwd")
    data = load_recipe(str(recipe))
    here = tmp_path / "r"
    assert data["data"]["path"] == str(here / "d.jsonl") and data["rewrite"]["template"] == str(here / "t.j2")
    assert data["replay"] == str(here / "replay.jsonl")
    assert data["eval"]["data"] == {"safety": "s.jsonl", "drift": "x.jsonl"}  # in the cwd / found nowhere
    assert load_recipe(str(recipe), ["data.path=d.jsonl"])["data"]["path"] == "d.jsonl"  # an override: the cwd's
    assert "d.jsonl" not in recipe.read_text().split("path:")[0]  # the file itself is untouched


def test_missing_data_hides_no_other_problem(tmp_path, capfd):
    """With the data missing, every bad probe file is still reported, one line each."""
    bad_rows = tmp_path / "bad.jsonl"
    bad_rows.write_text(json.dumps({"nothing": "here"}) + "\n")
    wrong_type = tmp_path / "probes.md"
    wrong_type.write_text("# not a probe file\n")
    overrides = [f"data.path={tmp_path / 'none.jsonl'}", f"eval.data.tool-use={tmp_path / 'none2.jsonl'}",
                 f"eval.data.safety={wrong_type}", f"eval.data.over-refusal={bad_rows}", "rewrite.verifier=bogus",
                 "train.finetune=full"]  # full: no LoRA check (it imports transformers: not for the fast tier)
    with pytest.raises(ConfigError) as e:
        validate_recipe("openfunctions", overrides)
    found = e.value.problems
    for part in ("data: no such file or directory", "eval.data.tool-use: ", "eval.data.safety: ",
                 "eval.data.over-refusal: ", "rewrite.verifier: unknown verifier 'bogus'"):
        assert sum(p.startswith(part) for p in found) == 1, (part, found)
    assert len(found) == 5 and all("\n" not in p for p in found), found

    from sdft.cli import main

    with pytest.raises(SystemExit) as ex:
        main(["recipes", "validate", "openfunctions", *overrides])
    err = capfd.readouterr().err
    assert ex.value.code == 2 and "(5 problems)" in err and "Traceback" not in err, err
