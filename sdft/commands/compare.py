"""``sdft compare``: train several methods over several seeds, then task gain against forgetting."""

from __future__ import annotations

from typing import Any

import click

from sdft.compare.config import CompareSection
from sdft.compare.methods import presets_help
from sdft.options import ConfigOptions, overrides_option, verbosity_options
from sdft.pipeline import DataSection, PipelineConfig
from sdft.rewrite import RewriteConfig

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


PIPELINE = ConfigOptions(PipelineConfig, only=["model", "rewrite_model", "seed", "replay"])
DATA = ConfigOptions(DataSection, section="data",
                     names={"path": "--data", "format": "--data-format", "name": "--data-name"})
COMPARE = ConfigOptions(CompareSection, section="compare", exclude=["replay"])
ENGINE = ConfigOptions(RewriteConfig, section="rewrite", only=["backend", "base_url", "api_key", "max_concurrency"])


@click.command("compare", epilog=EPILOG)
@click.argument("recipe", required=False)
@overrides_option
@COMPARE
@PIPELINE
@DATA
@ENGINE
@click.option("--report", "report_dir", metavar="DIR",
              help="Only regenerate the report of the compare run in DIR from its files (loads no model).")
@verbosity_options
def command(recipe: str | None, overrides: tuple[str, ...], report_dir: str | None, verbose: bool, quiet: bool,
            **kw: Any) -> None:
    """Train each method over several seeds from one seed model; report task gain against forgetting.

    RECIPE is a compare recipe (recipes/compare/NAME.yaml), any `sdft train` recipe, or a YAML path;
    key=value overrides follow it (compare.* and methods.* included); flags win over them.
    """
    from pathlib import Path

    from sdft.commands._ui import set_verbosity

    set_verbosity(verbose, quiet)
    if report_dir:
        if recipe or overrides:
            raise click.UsageError("--report DIR takes no recipe or overrides: it rebuilds a finished run's report")
        from sdft.commands._ui import notice
        from sdft.compare.report import write_report

        print_report(write_report(Path(report_dir), notice=notice))
        return
    from sdft.commands._run import settings
    from sdft.compare.config import load_compare, load_compare_recipe
    from sdft.config import deep_merge
    from sdft.preflight import check

    if recipe and "=" in recipe:  # no recipe, only overrides
        overrides, recipe = (recipe, *overrides), None
    data, source, name = load_compare_recipe(recipe, ())
    flags: dict[str, Any] = {}
    for opts in (COMPARE, PIPELINE, DATA, ENGINE):
        flags = deep_merge(flags, opts.given(kw))
    data = settings(flags, overrides, data)
    _share_engine(data, flags.get("rewrite", {}))
    cfg = load_compare(data, source=source, output_dir=f"runs/compare-{name}")
    check(cfg)
    _run(cfg)


def _share_engine(data: dict[str, Any], engine: dict[str, Any]) -> None:
    """``--backend``/``--base-url`` flags: the rewrite's engine also writes the shared replay data, and an
    in-process backend also runs the eval (a server holds the seed model only)."""
    if not engine:
        return
    section = data.setdefault("compare", {})
    replay = section.setdefault("replay", {}) if isinstance(section, dict) else None
    if isinstance(replay, dict):
        for key, value in engine.items():
            replay.setdefault(key, value)
    if isinstance(data.get("eval"), dict) and engine.get("backend") not in (None, "openai"):
        data["eval"].setdefault("backend", engine["backend"])


def _run(cfg: Any) -> None:
    from sdft.commands._run import log_file
    from sdft.commands._ui import StageProgress, console, engine_logs, notice
    from sdft.compare.run import run_compare

    with engine_logs(log_file(cfg.output_dir, folder=True)), StageProgress("compare") as bar:
        result = run_compare(cfg, on_progress=bar, notice=notice)
    console.print(f"[bold]done[/]: {len(result.trained)} units trained, {len(result.skipped)} already finished; "
                  f"run in {result.output_dir}", markup=True)
    print_report(result.report)


def print_report(report: dict[str, Any]) -> None:
    """The main table (score and Δ vs the seed model per method) and the report's paths."""
    from sdft.commands._ui import out
    from sdft.commands._ui import table as Table
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
