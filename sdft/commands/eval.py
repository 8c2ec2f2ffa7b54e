"""``sdft eval``: the forgetting report (base vs tuned) and the CI gate."""

from __future__ import annotations

from typing import Any

import click

from sdft.eval.config import EvalConfig
from sdft.options import ConfigOptions, overrides_option, verbosity_options

EPILOG = """\b
Examples:
  sdft eval --tuned runs/demo/merged --limit 20
  sdft eval --model smollm2-135m-instruct --tuned sft=runs/sft/merged --tuned sdft=runs/sdft/merged
  sdft eval --tuned runs/demo/final --suites safety,over-refusal,math      # a LoRA adapter works too
  sdft eval --tuned smollm2-135m-instruct --model runs/seed/merged        # any model form, either side
  sdft eval --tuned runs/demo/merged --max-drop safety=2,math=5            # exit 3 when crossed
  sdft eval --tuned runs/gsm/merged --data task=heldout.jsonl --task-verifier math   # the task itself
  sdft eval --tuned x=runs/x/merged --max-new-tokens safety=64,math=512,default=256
  sdft eval --model my-served-model --backend openai --base-url http://127.0.0.1:8000/v1 --suites safety,drift
  sdft eval --tuned x=runs/x/merged --data safety=../shared/data/advbench/harmful_behaviors.csv \\
            --data over-refusal=../shared/data/xstest/xstest_prompts.csv \\
            --data math=../shared/data/gsm8k/train.jsonl --data tool-use=../shared/data/bfcl/simple_python.jsonl

\b
Suites: task (held-out rows of your task, scored by its verifier; needs --data task=PATH, then runs
first by default), safety (refusal rate on harmful requests), safety-jailbreak (the same with an
adversarial suffix), over-refusal (compliance on benign prompts that sound risky), math (final-answer
accuracy), code (HumanEval pass@1, needs the [eval] extra), tool-use (BFCL-style call accuracy), drift
(likelihood of the base model's own answers). All scores are 0-100, higher is better; answers are
cached in OUTPUT_DIR/generations, so a rerun only generates what is missing. Per-item results (for
paired tests between models): OUTPUT_DIR/answers.jsonl. Engine logs: OUTPUT_DIR/sdft.log.
With --backend openai the server's model is the one evaluated (its tokenizer: --model), alone.
Exit codes: 0 ok, 1 runtime error, 2 bad input, 3 --max-drop gate failed.
"""

OPTIONS = ConfigOptions(EvalConfig, names={"base": "--model", "task_verifier_options": "--task-verifier-option"},
                        aliases={"base": ["--base"]})


@click.command("eval", epilog=EPILOG)
@overrides_option
@OPTIONS
@verbosity_options
def command(overrides: tuple[str, ...], verbose: bool, quiet: bool, **kw: Any) -> None:
    """Score the base and tuned model(s) on the same probes with the same greedy decoding.

    Writes report.json, report.md (suite, metric, n, scores with 95% intervals, deltas,
    example answers), radar.png and answers.jsonl to the output dir, and prints the table.
    Trailing KEY=VALUE arguments set any EvalConfig field; flags win over them.
    """
    from sdft.commands._run import build, settings
    from sdft.commands._ui import set_verbosity

    set_verbosity(verbose, quiet)
    data = settings(OPTIONS.given(kw), overrides)
    if not data.get("tuned") and "base" not in data:
        # a full evaluation of the default model alone is never what a bare `sdft eval` meant
        raise click.UsageError("nothing to evaluate: give --tuned MODEL (or --model MODEL to score one model)")
    run_and_print(build(EvalConfig, data))


def run_and_print(cfg: EvalConfig) -> None:
    """Run the eval with a progress bar per stage, print the table and paths, then apply the gate."""
    from sdft.commands._run import log_file
    from sdft.commands._ui import StageProgress, engine_logs, notice
    from sdft.eval.run import run_eval

    with engine_logs(log_file(cfg.output_dir, folder=True)), StageProgress("eval") as bar:
        report = run_eval(cfg, on_progress=bar, notice=notice)
    print_report(report)


def print_report(report: Any) -> None:
    """Print the report table and file paths, then apply the gate (GateFailed -> exit 3)."""
    from sdft.commands._ui import out
    from sdft.commands._ui import table as Table
    from sdft.eval.report import table_rows
    from sdft.eval.run import check_gate

    header, rows = table_rows(report.data)
    table = Table(title="sdft eval (0-100, higher is better; 95% intervals)")
    for h in header:
        table.add_column(h, justify="left" if h in ("suite", "metric") else "right")
    for r in rows:
        table.add_row(*r)
    out.print(table)
    out.print(f"report: {report.path}  ·  table: {report.path[:-4]}md  ·  chart: {report.data.get('chart', 'n/a')}",
              markup=False, soft_wrap=True)
    check_gate(report)
