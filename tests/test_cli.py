"""The CLI layer: help for every command, no heavy imports on start-up, exit codes."""

from __future__ import annotations

import json
import os
import re
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


def example_lines(help_text: str, argv: list[str]) -> list[str]:
    """The lines of ``help_text`` that run ``sdft ARGV...`` (also as ``python -m sdft`` or under a launcher)."""
    call = re.compile(rf"^\s*(\S+ )*(sdft|-m sdft) {re.escape(' '.join(argv))}(\s|$)")
    return [line for line in help_text.splitlines() if call.match(line) and not line.startswith("Usage:")]


def test_example_lines_finds_only_invocations_of_the_command():
    text = "Usage: sdft train [OPTIONS]\n  --data TEXT  name, or example:arith\n\n  Examples:\n" \
           "    sdft train demo\n    torchrun --nproc_per_node 2 -m sdft train demo\n    sdft trainer x\n"
    found = example_lines(text, ["train"])
    assert found == ["    sdft train demo", "    torchrun --nproc_per_node 2 -m sdft train demo"]
    assert example_lines("Usage: sdft eval\n  --limit N  examples per suite", ["eval"]) == []


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_has_help_with_examples(name):
    """`sdft CMD --help`, and `--help` of each subcommand of a group, shows at least one example run of it
    (the word "example" alone does not count: option help texts use it)."""
    import click

    command = cli.get_command(click.Context(cli), name)
    commands = [[name]]
    if isinstance(command, click.Group):
        commands += [[name, sub] for sub in command.list_commands(click.Context(command))]
    for argv in commands:
        r = CliRunner().invoke(cli, [*argv, "--help"], prog_name="sdft")
        assert r.exit_code == 0, r.output
        assert r.output.startswith(f"Usage: sdft {' '.join(argv)} "), r.output
        assert example_lines(r.output, argv), f"`sdft {' '.join(argv)} --help` shows no example:\n{r.output}"


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


# ---------------------------------------------------------------- quiet by default (16.4)
ENGINE_NOISE = """
import os, subprocess, sys
from sdft.commands._ui import engine_logs, notice, out, set_verbosity
set_verbosity(verbose={verbose})
with engine_logs(sys.argv[1]):
    os.write(2, b"C-LEVEL-STDERR\\n")             # what vLLM / torch write from C++
    os.write(1, b"C-LEVEL-STDOUT\\n")
    print("PY-PRINT", flush=True)                 # a library's print / logging handler on sys.stdout
    sys.stderr.write("PY-WARNING\\n")
    subprocess.run(["sh", "-c", "echo CHILD-PROCESS >&2"])  # an engine's worker process
    notice("sdft-notice")
    out.print("sdft-result")
print("AFTER", flush=True)
os.write(2, b"AFTER-FD\\n")
"""


@pytest.mark.parametrize("verbose", [False, True])
def test_engine_logs_go_to_the_log_file_unless_verbose(tmp_path, verbose):
    log = tmp_path / "run" / "sdft.log"
    r = subprocess.run([sys.executable, "-c", ENGINE_NOISE.format(verbose=verbose), str(log)], capture_output=True,
                       text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert r.returncode == 0, r.stderr
    terminal = r.stdout + r.stderr
    noise = ("C-LEVEL-STDERR", "C-LEVEL-STDOUT", "PY-PRINT", "PY-WARNING", "CHILD-PROCESS")
    assert "sdft-notice" in r.stderr and "sdft-result" in r.stdout  # sdft's own output stays on the terminal
    assert "AFTER" in r.stdout and "AFTER-FD" in r.stderr  # the descriptors are restored afterwards
    if verbose:
        assert all(n in terminal for n in noise) and not log.exists()
    else:
        assert not any(n in terminal for n in noise), terminal
        text = log.read_text()
        assert all(n in text for n in noise) and "AFTER" not in text


def sdft_proc(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    return subprocess.run([sys.executable, "-m", "sdft", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600)


@pytest.mark.vllm
def test_rewrite_on_vllm_shows_no_engine_logs(tiny_model_dir, gsm8k_file, tmp_path):
    pytest.importorskip("vllm")
    out = tmp_path / "o.jsonl"
    args = [gsm8k_file, "-o", out, "--model", tiny_model_dir, "--backend", "vllm", "--max-new-tokens", "8",
            "--limit", "3", "--gap-rows", "0", "--samples", "1", "--kv-cache-gib", "0.25"]
    r = sdft_proc("rewrite", *args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    terminal = r.stdout + r.stderr
    assert "WARNING" not in terminal and "INFO" not in terminal and "it/s]" not in terminal, terminal
    assert "rewrite summary" in r.stdout and len(terminal.splitlines()) <= 40, terminal
    log = Path(f"{out}.log").read_text()
    assert "WARNING" in log or "INFO" in log  # vLLM did write them: to the log
    q = sdft_proc("rewrite", *args, "-q", cwd=tmp_path)  # finished: reused; -q prints nothing but errors
    assert q.returncode == 0 and q.stdout.strip() == "" and q.stderr.strip() == "", q.stdout + q.stderr


# ---------------------------------------------------------------- Hub push and trackers (wiring)
@pytest.fixture()
def hub(monkeypatch: pytest.MonkeyPatch):
    """The local mock of the Hub API (tests/mock_hub.py), as the CLI's default endpoint, with a token."""
    import huggingface_hub.constants
    from mock_hub import MockHub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    server = MockHub(token="hf_mock_token").start()
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", server.url)
    monkeypatch.setenv("HF_TOKEN", "hf_mock_token")
    yield server
    server.stop()


def test_rewrite_push_to_hub_writes_the_card_and_pushes(hub, tiny_model_dir, gsm8k_file, tmp_path):
    out = tmp_path / "pushed.jsonl"
    r = CliRunner().invoke(cli, ["rewrite", str(gsm8k_file), "-o", str(out), "--model", str(tiny_model_dir),
                                 "--backend", "hf", "--max-new-tokens", "4", "--limit", "2", "--gap-rows", "0",
                                 "--samples", "1", "--push-to-hub", "alice/gsm", "--public"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "pushed.jsonl.README.md").is_file()  # the local card, beside the output
    repo = hub.repo("alice/gsm", "dataset")
    assert repo.private is False and repo.files["pushed.jsonl"] == out.read_bytes() and "README.md" in repo.files


def test_train_pushes_the_model_and_reports_to_tensorboard(hub, tiny_model_dir, gsm8k_file, tmp_path):
    run = tmp_path / "run"
    r = CliRunner().invoke(cli, ["train", "--data", str(gsm8k_file), "--model", str(tiny_model_dir), "-o", str(run),
                                 "--backend", "hf", "rewrite.max_new_tokens=4", "rewrite.samples=1",
                                 "rewrite.gap_rows=0", "--max-steps", "1", "--lora-target-modules", "q_proj,v_proj",
                                 "--max-length", "128", "--report-to", "tensorboard", "--push-to-hub", "alice/m"])
    assert r.exit_code == 0, r.output
    # the gap verdict is part of the summary: a random-weight model's rows all fall back, and it says so
    assert "warning: no row was rewritten" in " ".join(r.output.split()), r.output
    config = json.loads((run / "run.json").read_text())["config"]
    assert config["train"]["report_to"] == "tensorboard" and config["rewrite"]["backend"] == "hf"
    assert list((run / "sdft-sdft").glob("events.out.tfevents.*"))  # the rewrite summary, logged by sdft
    files = hub.repo("alice/m", "model").files
    assert hub.repo("alice/m", "model").private and "README.md" in files and "sdft_run.json" in files
    assert (run / "model" / "merged" / "README.md").is_file()


# ---------------------------------------------------------------- every model form (16.5)
def test_every_model_form_passes_the_preflight_and_an_adapter_is_merged_once(tiny_model_dir, tmp_path, monkeypatch):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from sdft.models import resolve_model
    from sdft.preflight import model_problem

    monkeypatch.setenv("SDFT_HOME", str(tmp_path / "home"))
    torch.manual_seed(0)
    adapter = tmp_path / "runs" / "x" / "final"
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                   LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(str(adapter))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    for form in ("smollm2-135m-instruct", str(gguf), str(tiny_model_dir), str(adapter), "org/name"):
        assert model_problem(form) is None, form
    assert "not found" in model_problem(str(tmp_path / "nope" / "m"))
    r = CliRunner().invoke(cli, ["replay", "-o", str(tmp_path / "r.jsonl"), "--model", str(adapter), "--dry-run"])
    assert r.exit_code == 0 and "pre-query prompt" in r.output, r.output
    merged = Path(resolve_model(str(adapter)))
    assert (merged / "config.json").is_file() and merged.parent == tmp_path / "home" / "models"
    assert [p.name for p in merged.parent.iterdir() if not p.name.startswith(".")] == [merged.name]  # once
