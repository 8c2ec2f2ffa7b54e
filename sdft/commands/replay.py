"""``sdft replay``: generate Magpie-style replay data from the model itself."""

from __future__ import annotations

from typing import Any

import click

from sdft.options import ConfigOptions, hub_options, overrides_option, verbosity_options
from sdft.replay import ReplayConfig

EPILOG = """\b
Examples:
  sdft replay -o runs/replay.jsonl --num 500
  sdft replay -o runs/replay.jsonl --model ./my-chat-model --num 2000 --language en
  sdft replay -o out.jsonl --system-prompt "You are a concise assistant." --num 200
  sdft replay -o out.jsonl --pre-query $'<s>[INST] ' --num 100     # template it cannot derive
  sdft replay -o out.jsonl --base-url http://127.0.0.1:8000/v1      # a running `vllm serve`
  sdft replay -o out.jsonl num=200 answer_max_tokens=256            # any setting as KEY=VALUE
  sdft replay -o out.jsonl --dry-run                                 # show the pre-query, load nothing
  sdft inspect runs/replay.jsonl --show 5
  sdft train recipes/demo.yaml replay=runs/replay.jsonl replay_ratio=0.2

The model writes user queries from the start of its own chat template, then answers them.
Rerun the same command after a crash to resume; a larger --num continues a finished run.
Engine logs go to OUT.log (-v shows them here).
"""

OPTIONS = ConfigOptions(ReplayConfig, required=["output"], names={"output_format": "--format"},
                        aliases={"output_format": ["--output-format"],
                                 "require_question": [("--allow-non-questions", False)]})


@click.command("replay", epilog=EPILOG)
@overrides_option
@OPTIONS
@click.option("--dry-run", is_flag=True, help="Print the pre-query prompt and stop strings and exit.")
@hub_options
@verbosity_options
def command(overrides: tuple[str, ...], dry_run: bool, push_to_hub: str | None, public: bool, verbose: bool,
            quiet: bool, **kw: Any) -> None:
    """Write replay rows: queries the model writes as a user, and its own answers.

    Each query and answer goes through filters (length, truncation, template leakage, not a
    request, language, exact and near duplicates); the manifest counts every filter.
    Trailing KEY=VALUE arguments set any ReplayConfig field; flags win over them.
    """
    from sdft.commands._run import build, settings
    from sdft.commands._ui import set_verbosity

    set_verbosity(verbose, quiet)
    data = settings(OPTIONS.given(kw), overrides)
    if dry_run:
        _dry_run(build(ReplayConfig, data, write=False))
        return
    _run(build(ReplayConfig, data, push_to_hub=push_to_hub), push_to_hub, public)


def _dry_run(cfg: ReplayConfig) -> None:
    from sdft.commands._ui import out
    from sdft.replay import describe

    d = describe(cfg)
    out.rule("pre-query prompt" + (" (derived from the chat template)" if d["derived"] else " (given)"))
    out.print(repr(d["pre_query"]), markup=False)
    out.print(f"stop strings: {d['stops'] or 'none (the end-of-turn token stops)'}", markup=False)
    if d["context_lines"]:
        out.print(f"context lines a query must not repeat: {d['context_lines']}", markup=False)


def _run(cfg: ReplayConfig, push_to_hub: str | None, public: bool) -> None:
    from sdft.commands._common import summary_table
    from sdft.commands._run import log_file, push_dataset
    from sdft.commands._ui import StageProgress, console, engine_logs, notice
    from sdft.replay import run_replay

    with engine_logs(log_file(cfg.output, folder=False)), StageProgress("replay", cfg.num) as bar:
        result = run_replay(cfg, on_progress=bar, notice=notice)
    console.print(f"output: {result.output}", markup=False, highlight=False)
    summary_table(result.manifest)
    push_dataset(result.output, result.manifest, push_to_hub, public)
