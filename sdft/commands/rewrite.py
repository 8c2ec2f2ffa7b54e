"""``sdft rewrite``: self-distil a dataset's answers with the seed model."""

from __future__ import annotations

from typing import Any

import click

from sdft.commands._common import print_gap, summary_table
from sdft.options import ConfigOptions, hub_options, overrides_option, verbosity_options
from sdft.rewrite import RewriteConfig

EPILOG = """\b
Examples:
  sdft rewrite sdft/assets/arith.jsonl -o runs/arith.rewrite.jsonl
  sdft rewrite gsm8k.jsonl -o out.jsonl --samples 4 --select min-nll --limit 200
  sdft rewrite data.csv -o out.jsonl --prompt-field q --response-field a --verifier none
  sdft rewrite data.jsonl -o out.jsonl samples=2 source_samples.own=8   # any setting as KEY=VALUE
  sdft rewrite data.jsonl -o out.jsonl --dry-run          # show the first prompts, load nothing
  sdft rewrite data.jsonl -o out.jsonl --base-url http://127.0.0.1:8000/v1   # a running `vllm serve`
  sdft rewrite data.jsonl -o out.jsonl --ray 8             # 8 workers (one engine per GPU) via Ray, merged
  sdft rewrite data.jsonl -o out.jsonl --ray 16 --ray-address auto   # a running Ray cluster (shared storage)
  sdft rewrite data.jsonl -o out.jsonl --push-to-hub alice/data-sdft # then push it (private) to the Hub

Rerun the same command after a crash to resume; --overwrite starts over. Engine logs go to OUT.log
(-v shows them here).
"""

OPTIONS = ConfigOptions(RewriteConfig, exclude=["input"], required=["output"],
                        names={"output_format": "--format", "paper_style": "--paper",
                               "verifier_options": "--verifier-option"},
                        aliases={"output_format": ["--output-format"], "paper_style": [("--paper-style", True)]})


@click.command("rewrite", epilog=EPILOG)
@click.argument("input", metavar="INPUT")
@overrides_option
@OPTIONS
@click.option("--dry-run", is_flag=True, help="Print the first rendered rewrite prompts and exit (loads no model).")
@click.option("--ray", "ray_workers", type=click.IntRange(min=1), metavar="N",
              help="Run N workers through Ray (one engine per GPU; shards 0/N..N-1/N) and merge their outputs. "
                   "Needs the [ray] extra.")
@click.option("--ray-address", help="Ray cluster to join for --ray (default: $RAY_ADDRESS, else a local cluster). "
                                    "Multi-node: data and -o on storage every node mounts.")
@hub_options
@verbosity_options
def command(input: str, overrides: tuple[str, ...], dry_run: bool, ray_workers: int | None, ray_address: str | None,
            push_to_hub: str | None, public: bool, verbose: bool, quiet: bool, **kw: Any) -> None:
    """Rewrite each reference answer of INPUT in the seed model's own words.

    A rewrite is kept only if the verifier says it still reaches the reference's result;
    otherwise the original answer is kept (--on-fail keep-original) or the row dropped.
    Trailing KEY=VALUE arguments set any RewriteConfig field; flags win over them.
    """
    from sdft.commands._run import build, settings
    from sdft.commands._ui import set_verbosity

    set_verbosity(verbose, quiet)
    data = settings(OPTIONS.given(kw), overrides)
    if ray_workers and data.get("shard"):
        raise click.UsageError("--ray and --shard are exclusive: --ray N runs shards 0/N..N-1/N itself")
    if ray_address and not ray_workers:
        raise click.UsageError("--ray-address needs --ray N")
    if dry_run:
        _dry_run(build(RewriteConfig, {**data, "input": input}, write=False))
        return
    cfg = build(RewriteConfig, {**data, "input": input}, push_to_hub=push_to_hub)
    _run(cfg, ray_workers, ray_address, push_to_hub, public)


def _dry_run(cfg: RewriteConfig) -> None:
    from sdft.commands._ui import out
    from sdft.rewrite import dry_run as render

    for i, row in enumerate(render(cfg)):
        out.rule(f"prompt {i + 1} · id {row['id']}")
        if row["rendered"] is not None:
            out.print(row["rendered"], markup=False)
        else:
            for m in row["messages"]:
                out.print(f"[{m['role']}] {m['content']}", markup=False)


def _run(cfg: RewriteConfig, ray_workers: int | None, ray_address: str | None, push_to_hub: str | None,
         public: bool) -> None:
    from sdft.commands._run import log_file, push_dataset
    from sdft.commands._ui import StageProgress, console, engine_logs, notice
    from sdft.data import count_rows

    if ray_workers:
        from sdft.ray_launch import require_ray

        require_ray()  # before the progress bar: a missing extra is a one-line error
    total = count_rows(cfg.data_spec())
    with engine_logs(log_file(cfg.output, folder=False)), StageProgress("rewrite", total) as bar:
        if ray_workers:
            from sdft.ray_launch import run_rewrite_ray

            result = run_rewrite_ray(cfg, ray_workers, address=ray_address, on_progress=bar, notice=notice)
        else:
            from sdft.rewrite import run_rewrite

            result = run_rewrite(cfg, on_progress=bar, notice=notice)
    console.print(f"output: {result.output}", markup=False, highlight=False)
    summary_table(result.manifest)
    print_gap(result.manifest.get("gap"))
    push_dataset(result.output, result.manifest, push_to_hub, public)
