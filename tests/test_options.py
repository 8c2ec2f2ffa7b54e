"""Options generated from the config dataclasses: one name, type, default and help per setting.

Every test here loads no model and reads no data (fast tier).
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import typing

import click
import pytest
from click.testing import CliRunner

from sdft.cli import cli
from sdft.config import KV_CACHE_GIB, from_dict, literal_choices
from sdft.options import ConfigOptions

# command -> its module; each module's ConfigOptions objects are the options it generates
COMMANDS = {name: f"sdft.commands.{name}" for name in ("rewrite", "replay", "eval", "train", "compare", "inspect")}
GENERATING = ("rewrite", "replay", "eval", "train", "compare")


def generators(name: str) -> list[ConfigOptions]:
    module = importlib.import_module(COMMANDS[name])
    return [v for v in vars(module).values() if isinstance(v, ConfigOptions)]


def squash(text: str) -> str:
    """Help text without whitespace: Click wraps lines (and breaks at hyphens) wherever it likes."""
    return re.sub(r"\s+", "", text).lower()


def expected_default(f: dataclasses.Field, flag: str) -> str | None:
    """The default as the test reads it off the field, independently of sdft.options."""
    value = f.default if f.default is not dataclasses.MISSING else (
        f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
    if value in (None, "", [], {}):
        return None
    if isinstance(value, bool):
        return flag[2:] if value else f"no-{flag[2:]}"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def help_of(name: str) -> str:
    r = CliRunner().invoke(cli, [name, "--help"], terminal_width=100)
    assert r.exit_code == 0, r.output
    return r.output


@pytest.mark.parametrize("name", list(COMMANDS))
def test_help_shows_each_fields_help_and_default(name):
    """The dataclass field is the only place: --help carries its help text and its default."""
    text = squash(help_of(name))
    checked = 0
    for opts in generators(name):
        fields = {f.name: f for f in dataclasses.fields(opts.cls)}
        for g in opts.generated:
            if g.hidden:
                continue
            f = fields[g.field]
            assert f.metadata.get("help"), f"{opts.cls.__name__}.{f.name} has no help"
            assert squash(f.metadata["help"]) in text, (name, f.name)
            flag = g.flags[-1].split("/")[0]
            default = expected_default(f, flag)
            if default is not None:
                assert squash(f.metadata["help"] + f"  [default: {default}]") in text, (name, f.name, default)
            checked += 1
    assert checked >= 5


@pytest.mark.parametrize("name", list(COMMANDS))
def test_literal_fields_are_choices_and_nothing_is_given_by_default(name):
    command = importlib.import_module(COMMANDS[name]).command
    params = {p.name: p for p in command.params}
    for opts in generators(name):
        assert opts.given({}) == {}  # the Click default of every generated option is "not given"
        for g in opts.generated:
            param = params[g.param]
            assert param.default is None
            choices = literal_choices(opts.hints[g.field])
            if choices is not None and not g.hidden:
                assert isinstance(param.type, click.Choice) and list(param.type.choices) == [str(c) for c in choices]


def parse(name: str, argv: list[str]) -> dict:
    """What the user gave, as the command hands it to from_dict (parsing only, nothing runs)."""
    command = importlib.import_module(COMMANDS[name]).command
    ctx = command.make_context(name, argv, resilient_parsing=False)
    kw = dict(ctx.params)
    out: dict = {}
    for opts in generators(name):
        for k, v in opts.given(kw).items():
            out[k] = {**out.get(k, {}), **v} if isinstance(v, dict) and k in ("train", "data", "rewrite",
                                                                                "compare") else v
    return out


def test_only_given_values_reach_the_config():
    got = parse("rewrite", ["in.jsonl", "-o", "out.jsonl", "--samples", "2", "--no-calculator"])
    assert got == {"output": "out.jsonl", "samples": 2, "calculator": False}
    from sdft.rewrite import RewriteConfig

    cfg = from_dict(RewriteConfig, {**got, "input": "in.jsonl"})
    assert cfg.samples == 2 and cfg.select == "min-nll" and cfg.top_p == 1.0  # the rest: the dataclass defaults


def test_lists_dicts_and_unions_parse():
    got = parse("eval", ["--tuned", "a=x", "--tuned", "b=y,c=z", "--max-drop", "safety=2,math=5.5",
                         "--data", "safety=p,q.csv", "--suites", "safety,drift", "--max-new-tokens", "safety=8",
                         "--max-new-tokens", "30"])
    assert got["tuned"] == ["a=x", "b=y", "c=z"] and got["suites"] == ["safety", "drift"]
    assert got["max_drop"] == {"safety": 2, "math": 5.5} and got["data"] == {"safety": "p,q.csv"}
    assert got["max_new_tokens"] == {"safety": 8, "default": 30}
    assert parse("rewrite", ["i", "-o", "o", "--verifier-option", "pattern=^a{1,3}$"])["verifier_options"] == {
        "pattern": "^a{1,3}$"}
    assert parse("compare", ["--seeds", "0,5,7"])["compare"] == {"seeds": "0,5,7"}


def test_renamed_flags_keep_hidden_aliases():
    assert parse("eval", ["--base", "m"]) == {"base": "m"} == parse("eval", ["--model", "m"])
    assert not re.search(r"--base\b(?!-)", help_of("eval")) and "--model" in help_of("eval")
    assert parse("replay", ["-o", "o", "--allow-non-questions"]) == {"output": "o", "require_question": False}
    assert parse("train", ["--full"]) == {"train": {"finetune": "full"}} == parse("train", ["--finetune", "full"])
    with pytest.raises(click.UsageError, match="conflicts"):
        parse("eval", ["--base", "a", "--model", "b"])


def test_shared_vocabulary_is_one_option_everywhere():
    """--backend, --base-url, --api-key, --kv-cache-gib, --model: the same name, choices and default."""
    seen: dict[str, tuple] = {}
    for name in GENERATING:
        text = help_of(name)
        assert "--backend [auto|vllm|hf|openai]" in text, name
        assert "--base-url" in text and "--api-key" in text, name
        for opts in generators(name):
            for g in opts.generated:
                if g.field in ("backend", "base_url", "api_key", "kv_cache_gib", "max_concurrency") and not g.hidden:
                    f = {f.name: f for f in dataclasses.fields(opts.cls)}[g.field]
                    key = (g.flags[-1], f.default, f.metadata["help"], typing.get_type_hints(opts.cls)[g.field])
                    assert seen.setdefault(g.field, key) == key, (name, g.field)
    assert seen["kv_cache_gib"][1] == KV_CACHE_GIB


def test_output_is_a_file_and_output_dir_a_folder():
    for name in ("rewrite", "replay"):
        assert "-o, --output TEXT" in help_of(name)
    for name in ("eval", "train", "compare"):
        assert "-o, --output-dir TEXT" in help_of(name)


def test_overrides_and_flags_merge_flags_win():
    from sdft.commands._run import settings

    data = settings({"samples": 3}, ("samples=2", "source_samples.own=8", "top_p=0.9"), {"seed": 5})
    assert data == {"samples": 3, "source_samples": {"own": 8}, "top_p": 0.9, "seed": 5}
    with pytest.raises(click.UsageError, match="KEY=VALUE"):
        settings({}, ("stray",))


@pytest.mark.parametrize("argv,needle", [
    (["rewrite", "x.jsonl", "-o", "o.jsonl", "samplez=2"], "did you mean 'samples'"),
    (["replay", "-o", "o.jsonl", "num=zero"], "num: expected an integer"),
    (["eval", "--tuned", "x", "limit=0"], "limit must be >= 1"),
])
def test_trailing_key_values_are_checked_like_a_recipe(argv, needle, capsys):
    from sdft.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and needle in err, err


def test_one_progress_type_with_stages():
    from sdft.commands._ui import StageProgress, set_verbosity
    from sdft.progress import staged

    calls = []
    report = staged(lambda done, total=None, **stats: calls.append((done, total, stats)), "eval")
    report(1, 4)
    staged(report, "base: generate")(2, 4, tok_s=10)  # nested stages compose
    assert calls == [(1, 4, {"stage": "eval"}), (2, 4, {"stage": "eval: base: generate", "tok_s": 10})]
    assert staged(None, "x") is None
    set_verbosity(quiet=True)
    try:
        with StageProgress("rewrite", 3) as bar:  # the CLI's implementation takes both forms
            bar(1, 3, accept_rate=0.5, tok_s=12)
            bar(2, 5, stage="train", loss=1.5)
        assert list(bar.tasks) == ["rewrite", "train"]
    finally:
        set_verbosity()
