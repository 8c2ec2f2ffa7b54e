"""The CLI layer: help for every command, no heavy imports on start-up, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sdft.cli import COMMANDS, cli, main

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "vllm", "datasets", "peft", "matplotlib")


def test_top_level_help_lists_every_command():
    r = CliRunner().invoke(cli, ["--help"])
    assert r.exit_code == 0
    for name in COMMANDS:
        assert name in r.output


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_has_help_with_examples(name):
    r = CliRunner().invoke(cli, [name, "--help"])
    assert r.exit_code == 0, r.output
    assert "Usage:" in r.output
    assert "Example" in r.output or "example" in r.output


@pytest.mark.parametrize("argv", [["--help"], ["rewrite", "--help"], *[[c, "--help"] for c in COMMANDS]])
def test_help_imports_no_heavy_package(argv):
    code = (
        "import sys\nfrom sdft.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert r.stdout.strip().splitlines()[-1] == "HEAVY=", r.stdout + r.stderr


def run_main(argv: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main(argv)
    cap = capsys.readouterr()
    return e.value.code, cap.out + cap.err


def test_bad_input_exit_2_names_row_and_field(tmp_path, capsys):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n" + json.dumps({"question": "q2"}) + "\n")
    code, out = run_main(["rewrite", str(p), "-o", str(tmp_path / "o.jsonl"), "--backend", "hf"], capsys)
    assert code == 2
    assert "row 2" in out and "missing field 'answer'" in out
    assert not (tmp_path / "o.jsonl").exists()


def test_bad_flag_value_exit_2(tmp_path, capsys):
    code, out = run_main(["rewrite", "x.jsonl", "-o", str(tmp_path / "o"), "--samples", "3",
                          "--temperature", "0"], capsys)
    assert code == 2 and "temperature > 0" in out
    code, _ = run_main(["rewrite", "--no-such-flag"], capsys)
    assert code == 2


def test_missing_input_exit_2(tmp_path, capsys):
    code, out = run_main(["rewrite", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "o.jsonl")], capsys)
    assert code == 2 and "no such file" in out


def test_dry_run_prints_prompts_without_loading_weights(tiny_model_dir, gsm8k_file, tmp_path):
    r = CliRunner().invoke(cli, ["rewrite", str(gsm8k_file), "-o", str(tmp_path / "o.jsonl"),
                                 "--model", str(tiny_model_dir), "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "<|im_start|>system" in r.output and "Reference answer:" in r.output
    assert "Tom has 3 apples" in r.output
    assert not (tmp_path / "o.jsonl").exists()


def test_rewrite_and_inspect_cli(tiny_model_dir, gsm8k_file, tmp_path):
    out = tmp_path / "o.jsonl"
    r = CliRunner().invoke(cli, ["rewrite", str(gsm8k_file), "-o", str(out), "--model", str(tiny_model_dir),
                                 "--backend", "hf", "--max-new-tokens", "8", "--limit", "3", "--gap-rows", "2"])
    assert r.exit_code == 0, r.output
    assert "fallback" in r.output and "distribution gap" in r.output
    r = CliRunner().invoke(cli, ["inspect", str(out), "--show", "1"])
    assert r.exit_code == 0, r.output
    assert "fallback" in r.output and "original:" in r.output
