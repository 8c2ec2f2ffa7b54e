"""``sdft compare``: train several methods over several seeds, then task gain against forgetting."""

from __future__ import annotations

from typing import Any

import click

from sdft.compare.methods import presets_help

EPILOG = """\b
Examples:
  sdft compare demo --methods sft,sdft --seeds 3            # bundled compare recipe (recipes/compare/demo.yaml)
  sdft compare gsm8k data.path=../shared/data/gsm8k/train.jsonl data.limit=500 \\
      --methods sft,sdft,sdft+replay --seeds 3 compare.task_holdout=0.2 eval.limit=100
  sdft compare recipes/my.yaml compare.task_eval=heldout.jsonl train.max_steps=200
  sdft compare demo methods.sdft.rewrite.samples=4           # override a preset's settings
  sdft compare --report runs/compare-demo                    # rebuild the report only (no model loads)

\b
Method presets (a recipe's methods: mapping overrides them or adds methods with base: PRESET):
""" + presets_help() + """

\b
Every (method, seed) unit trains from the same seed model with the same budget in
OUT/units/METHOD/seed-S/; rewrites and replay rows are made once (one sampling seed) and shared
by every training seed. A rerun skips finished units (run.json with the same settings), so an
interrupted run loses at most the unit in flight. Then one `sdft eval` scores the seed model and
every unit on the same prompts; OUT/report.md shows task gain and each forgetting suite per
method: mean over seeds [95% CI], Δ vs the seed model, p and MDE vs the baseline (sft).
"""


def _seeds(value: str | None) -> int | list[int] | None:
    if value is None:
        return None
    try:
        if "," in value:
            return [int(v) for v in value.split(",") if v.strip()]
        return int(value)
    except ValueError:
        raise click.BadParameter(f"expected N or a comma-separated list of seeds, got '{value}'",
                                 param_hint="--seeds") from None


@click.command("compare", epilog=EPILOG)
@click.argument("recipe", required=False)
@click.argument("overrides", nargs=-1)
@click.option("--methods", help="Comma-separated methods, in report order (default: sft,sdft).")
@click.option("--seeds", help="Training seeds: N (0..N-1) or a comma-separated list such as 0,5,7.")
@click.option("-o", "--output-dir", help="Run folder (default: compare.output_dir, else runs/compare-RECIPE).")
@click.option("--model", help="Seed model (alias, folder, .gguf, Hub id).")
@click.option("--data", "data_path", help="Task dataset (overrides data.path).")
@click.option("--report", "report_dir", metavar="DIR",
              help="Only regenerate the report of the compare run in DIR from its files (loads no model).")
def command(recipe: str | None, overrides: tuple[str, ...], methods: str | None, seeds: str | None,
            output_dir: str | None, model: str | None, data_path: str | None, report_dir: str | None) -> None:
    """Train each method over several seeds from one seed model; report task gain against forgetting.

    RECIPE is a compare recipe (recipes/compare/NAME.yaml), any `sdft train` recipe, or a YAML path;
    key=value overrides follow it (compare.* and methods.* included).
    """
    from pathlib import Path

    if report_dir:
        if recipe or overrides:
            raise click.UsageError("--report DIR takes no recipe or overrides: it rebuilds a finished run's report")
        from sdft.commands._ui import notice
        from sdft.compare.report import write_report

        print_report(write_report(Path(report_dir), notice=notice))
        return
    from sdft.compare.config import load_compare, load_compare_recipe

    if recipe and "=" in recipe:  # no recipe, only overrides
        overrides, recipe = (recipe, *overrides), None
    data, source, name = load_compare_recipe(recipe, overrides)
    flags: dict[str, Any] = {}
    if methods:
        flags["methods"] = [m.strip() for m in methods.split(",") if m.strip()]
    parsed = _seeds(seeds)
    if parsed is not None:
        flags["seeds"] = parsed
    if output_dir:
        flags["output_dir"] = output_dir
    if flags:
        data["compare"] = {**(data.get("compare") or {}), **flags}
    if model:
        data["model"] = model
    if data_path:
        data["data"] = {**(data.get("data") or {}), "path": data_path}
    cfg = load_compare(data, source=source, output_dir=f"runs/compare-{name}")
    _run(cfg)


def _run(cfg: Any) -> None:
    from sdft.commands._ui import console, notice, progress_bar
    from sdft.compare.run import run_compare

    current: dict[str, Any] = {}

    def progress(stage: str, done: int, total: int | None, stats: dict) -> None:
        if current.get("stage") != stage:
            if current.get("cm") is not None:
                current["cm"].__exit__(None, None, None)
            cm = progress_bar(stage, total=total, unit="steps" if stage.startswith("train") else "rows")
            current.update(stage=stage, cm=cm, bar=cm.__enter__())
        current["bar"](done, total, **{k: v for k, v in stats.items() if v is not None})

    try:
        result = run_compare(cfg, on_progress=progress, notice=notice)
    finally:
        if current.get("cm") is not None:
            current["cm"].__exit__(None, None, None)
    console.print(f"[bold]done[/]: {len(result.trained)} units trained, {len(result.skipped)} already finished; "
                  f"run in {result.output_dir}", markup=True)
    print_report(result.report)


def print_report(report: dict[str, Any]) -> None:
    """The main table (score and Δ vs the seed model per method) and the report's paths."""
    from rich.table import Table

    from sdft.commands._ui import out
    from sdft.compare.report import table_rows

    header, rows = table_rows(report)
    table = Table(title="sdft compare (0-100, higher is better; mean over seeds [95% CI]; Δ vs the seed model)")
    for h in header:
        table.add_column(h, justify="left" if h == "suite" else "right")
    for r in rows:
        table.add_row(*(c.replace("**", "") for c in r))
    out.print(table)
    task = report.get("task") or {}
    if not task.get("measured"):
        out.print(f"task gain not measured: {task.get('reason')}", markup=False)
    files = report.get("files") or {}
    out.print("  ·  ".join(f"{k}: {v}" for k, v in files.items()), markup=False, soft_wrap=True)
