"""``sdft train``: rewrite (SDFT) or not (SFT), then fine-tune, from a recipe or flags."""

from __future__ import annotations

from typing import Any

import click

from sdft.commands._recipe import DATA, ENGINE
from sdft.options import ConfigOptions, hub_options, overrides_option, verbosity_options
from sdft.pipeline import TRAIN_OWNED, PipelineConfig
from sdft.train import TrainConfig

EPILOG = """\b
Examples:
  sdft train demo                                  # bundled recipe: rewrite + LoRA on the bundled model
  sdft train recipes/gsm8k.yaml data.path=../shared/data/gsm8k/train.jsonl data.limit=500
  sdft train demo --method sft                     # the plain-SFT baseline, same everything else
  sdft train demo train.finetune=full train.learning_rate=1e-5 --overwrite
  sdft train --data example:arith --output-dir runs/mine --max-steps 20
  sdft train demo --base-url http://127.0.0.1:8000/v1   # the rewrite through a running `vllm serve`
  sdft train demo --report-to tensorboard --push-to-hub alice/smollm2-demo-sdft
  accelerate launch --config_file recipes/accelerate/multi_gpu.yaml -m sdft train gsm8k   # 8 GPUs
  torchrun --nproc_per_node 2 -m sdft train demo --method sft   # 2 processes (gloo on CPU)

Overrides are key=value with dots for sections (train.lora_r=8, rewrite.samples=4, eval.limit=10);
flags win over them. Reruns resume: the rewrite is reused when its config is unchanged, training
continues from the last checkpoint in OUTPUT_DIR/model; --overwrite starts over. Engine logs go to
OUTPUT_DIR/sdft.log (-v shows them here).
"""

PIPELINE = ConfigOptions(PipelineConfig, only=["model", "method", "output_dir", "rewrite_model", "replay",
                                               "replay_ratio", "seed", "ask"])
TRAIN = ConfigOptions(TrainConfig, section="train", exclude=[*TRAIN_OWNED, "overwrite"],
                      aliases={"finetune": [("--lora", "lora"), ("--full", "full")]})


@click.command("train", epilog=EPILOG)
@click.argument("recipe", required=False)
@overrides_option
@PIPELINE
@DATA
@ENGINE
@TRAIN
@click.option("--eval", "run_eval", is_flag=True, help="Run `sdft eval` (seed vs tuned) after training.")
@click.option("--overwrite", is_flag=True, help="Redo the rewrite and start training fresh.")
@hub_options
@verbosity_options
def command(recipe: str | None, overrides: tuple[str, ...], run_eval: bool, overwrite: bool, push_to_hub: str | None,
            public: bool, verbose: bool, quiet: bool, **kw: Any) -> None:
    """Fine-tune the seed model on its own rewrites (SDFT) or on the original answers (SFT).

    RECIPE is a bundled recipe name (see `sdft recipes ls`) or a YAML path; key=value overrides follow it.
    """
    from sdft.commands._ui import set_verbosity

    set_verbosity(verbose, quiet)
    cfg, source = _config(recipe, overrides, kw, run_eval, overwrite, push_to_hub)
    _run(cfg, push_to_hub, public)


def _config(recipe: str | None, overrides: tuple[str, ...], kw: dict[str, Any], run_eval: bool, overwrite: bool,
            push_to_hub: str | None) -> tuple[PipelineConfig, str]:
    """The recipe, its overrides and the flags, built and preflighted."""
    from sdft.commands._run import build, settings
    from sdft.config import deep_merge
    from sdft.recipes import find_recipe, load_recipe

    if recipe and "=" in recipe:  # no recipe, only overrides
        overrides, recipe = (recipe, *overrides), None
    flags: dict[str, Any] = {}
    for opts in (PIPELINE, DATA, ENGINE, TRAIN):
        flags = deep_merge(flags, opts.given(kw))
    data = settings(flags, overrides, load_recipe(recipe))
    if overwrite:
        data = deep_merge(data, {"train": {"overwrite": True}, "rewrite": {"overwrite": True}})
    if run_eval and data.get("eval") is None:
        data["eval"] = {}
    engine = flags.get("rewrite", {})
    if isinstance(data.get("eval"), dict) and engine.get("backend") not in (None, "openai"):
        data["eval"].setdefault("backend", engine["backend"])  # a server holds the seed model only
    if "output_dir" not in data:
        name = find_recipe(recipe).stem if recipe else "train"
        data["output_dir"] = f"runs/{name}-{data.get('method', 'sdft')}"
    source = recipe or "flags"
    from sdft import dist

    # under torchrun / accelerate rank 0 alone writes the outputs: only it checks (and claims) them
    return build(PipelineConfig, data, source=source, push_to_hub=push_to_hub, write=dist.is_main()), source


def _run(cfg: PipelineConfig, push_to_hub: str | None, public: bool) -> None:
    from pathlib import Path

    from sdft import dist
    from sdft.commands._run import log_file
    from sdft.commands._ui import StageProgress, engine_logs, notice
    from sdft.pipeline import run_pipeline

    log = log_file(cfg.output_dir, folder=True)
    if not dist.is_main():  # one log per process under torchrun / accelerate
        log = log.with_name(f"sdft.rank{dist.rank()}.log")
    with engine_logs(log), StageProgress("train", units={"rewrite": "rows", "train": "steps"}) as bar:
        result = run_pipeline(cfg, on_progress=bar, notice=notice)
    if not dist.is_main():
        return  # under torchrun / accelerate only rank 0 reports (it alone saved, asked and evaluated)
    _summary(cfg, result)
    from sdft.commands._run import push_dataset, push_model

    if result.rewrite_output is not None and Path(result.rewrite_output).is_file():
        from sdft.store import read_manifest

        push_dataset(result.rewrite_output, read_manifest(result.rewrite_output) or {}, None, False)
    report = result.eval_report
    if report is not None and report.gate_failures and push_to_hub:
        notice(f"not pushing to {push_to_hub}: the eval gate failed")
        push_to_hub = None
    push_model(result.merged_dir or result.model_dir, result.manifest, push_to_hub, public)
    if report is not None:
        from sdft.commands.eval import print_report

        print_report(report)


def _summary(cfg: PipelineConfig, result: Any) -> None:
    from sdft.commands._ui import console, out

    m = result.manifest
    console.print(f"[bold]done[/]: {cfg.method} run in {result.output_dir}")
    if "rewrite" in m:
        r = m["rewrite"]
        cached = ", cached" if r["cached"] else ""
        console.print(f"rewrite: {r['rows']} (acceptance {r['acceptance_rate']:.1%}{cached})", markup=False)
        from sdft.commands._common import print_gap_verdict

        print_gap_verdict(r.get("gap"))
    t = m["train"]
    console.print(f"train: {t['global_step']} steps, final loss {t['final_loss']}, {t['tokens_per_second']} tok/s; "
                  f"model: {result.model_dir}" + (f", merged: {result.merged_dir}" if result.merged_dir else ""),
                  markup=False)
    if result.answer is not None:
        out.rule(f"the tuned model answers: {cfg.ask}")
        out.print(result.answer, markup=False, highlight=False)
