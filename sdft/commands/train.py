"""``sdft train``: rewrite (SDFT) or not (SFT), then fine-tune, from a recipe or flags."""

from __future__ import annotations

import click

EPILOG = """\b
Examples:
  sdft train demo                                  # bundled recipe: rewrite + LoRA on the bundled model
  sdft train recipes/gsm8k.yaml data.path=../shared/data/gsm8k/train.jsonl data.limit=500
  sdft train demo --method sft                     # the plain-SFT baseline, same everything else
  sdft train demo train.finetune=full train.learning_rate=1e-5 --overwrite
  sdft train --data example:arith --output-dir runs/mine --max-steps 20
  accelerate launch --config_file recipes/accelerate/multi_gpu.yaml -m sdft train gsm8k   # 8 GPUs
  torchrun --nproc_per_node 2 -m sdft train demo --method sft   # 2 processes (gloo on CPU)

Overrides are key=value with dots for sections (train.lora_r=8, rewrite.samples=4).
Reruns resume: the rewrite is reused when its config is unchanged, training continues from the
last checkpoint in OUTPUT_DIR/model; --overwrite starts over.
"""


@click.command("train", epilog=EPILOG, context_settings={"ignore_unknown_options": False})
@click.argument("recipe", required=False)
@click.argument("overrides", nargs=-1)
@click.option("--method", type=click.Choice(["sdft", "sft"]), help="sdft: rewrite first (default); sft: originals.")
@click.option("--model", help="Seed model (alias, folder, .gguf, Hub id).")
@click.option("--data", "data_path", help="Dataset path (overrides data.path).")
@click.option("--output-dir", help="Run folder (overrides output_dir).")
@click.option("--lora/--full", "lora", default=None, help="LoRA adapters or full fine-tuning.")
@click.option("--merge/--no-merge", default=None, help="Also save a merged model vLLM can load.")
@click.option("--max-steps", type=int, help="Stop training after N optimizer steps.")
@click.option("--replay", help="A finished `sdft replay` output to mix in.")
@click.option("--replay-ratio", type=float, help="Share of replay rows in the training mix (e.g. 0.2).")
@click.option("--eval", "run_eval", is_flag=True, help="Run `sdft eval` (seed vs tuned) after training.")
@click.option("--overwrite", is_flag=True, help="Redo the rewrite and start training fresh.")
def command(recipe: str | None, overrides: tuple[str, ...], method: str | None, model: str | None,
            data_path: str | None, output_dir: str | None, lora: bool | None, merge: bool | None,
            max_steps: int | None, replay: str | None, replay_ratio: float | None, run_eval: bool,
            overwrite: bool) -> None:
    """Fine-tune the seed model on its own rewrites (SDFT) or on the original answers (SFT).

    RECIPE is a bundled recipe name (see `sdft recipes ls`) or a YAML path; key=value overrides follow it.
    """
    from sdft.config import deep_merge, from_dict
    from sdft.recipes import find_recipe, load_recipe

    if recipe and "=" in recipe:  # no recipe, only overrides
        overrides, recipe = (recipe, *overrides), None
    data = load_recipe(recipe, overrides)
    flags: dict = {}
    if method:
        flags["method"] = method
    if model:
        flags["model"] = model
    if data_path:
        flags["data"] = {"path": data_path}
    if output_dir:
        flags["output_dir"] = output_dir
    if replay:
        flags["replay"] = replay
    if replay_ratio is not None:
        flags["replay_ratio"] = replay_ratio
    train: dict = {}
    if lora is not None:
        train["finetune"] = "lora" if lora else "full"
    if merge is not None:
        train["merge"] = merge
    if max_steps is not None:
        train["max_steps"] = max_steps
    if overwrite:
        train["overwrite"] = True
        flags["rewrite"] = {"overwrite": True}
    if train:
        flags["train"] = train
    if run_eval and "eval" not in data:
        flags["eval"] = {}
    data = deep_merge(data, flags)
    if "output_dir" not in data:
        name = find_recipe(recipe).stem if recipe else "train"
        data["output_dir"] = f"runs/{name}-{data.get('method', 'sdft')}"
    from sdft.pipeline import PipelineConfig, run_pipeline

    cfg = from_dict(PipelineConfig, data, source=recipe or "flags")

    from sdft.commands._ui import console, notice, out, progress_bar

    bars: dict = {}
    stack = []

    def progress(stage: str, done: int, total: int | None, stats: dict) -> None:
        if stage not in bars:
            for cm in stack:
                cm.__exit__(None, None, None)
            stack.clear()
            cm = progress_bar(stage, total=total, unit="rows" if stage == "rewrite" else "steps")
            bars[stage] = cm.__enter__()
            stack.append(cm)
        bars[stage](done, total, **{k: v for k, v in stats.items() if v is not None})

    try:
        result = run_pipeline(cfg, on_progress=progress, notice=notice)
    finally:
        for cm in stack:
            cm.__exit__(None, None, None)
    m = result.manifest
    from sdft import dist

    if not dist.is_main():
        return  # under torchrun / accelerate only rank 0 reports (it alone saved, asked and evaluated)
    console.print(f"[bold]done[/]: {cfg.method} run in {result.output_dir}")
    if "rewrite" in m:
        r = m["rewrite"]
        cached = ", cached" if r["cached"] else ""
        console.print(f"rewrite: {r['rows']} (acceptance {r['acceptance_rate']:.1%}{cached})", markup=False)
    t = m["train"]
    console.print(f"train: {t['global_step']} steps, final loss {t['final_loss']}, {t['tokens_per_second']} tok/s; "
                  f"model: {result.model_dir}" + (f", merged: {result.merged_dir}" if result.merged_dir else ""))
    if result.answer is not None:
        out.rule(f"the tuned model answers: {cfg.ask}")
        out.print(result.answer, markup=False, highlight=False)
    if result.eval_report is not None:
        from sdft.commands.eval import print_report

        print_report(result.eval_report)
