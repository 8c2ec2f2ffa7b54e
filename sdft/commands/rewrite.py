"""``sdft rewrite``: self-distil a dataset's answers with the seed model."""

from __future__ import annotations

import click

from sdft.commands._common import print_gap, summary_table

EPILOG = """\b
Examples:
  sdft rewrite sdft/assets/arith.jsonl -o runs/arith.rewrite.jsonl
  sdft rewrite gsm8k.jsonl -o out.jsonl --samples 4 --select min-nll --limit 200
  sdft rewrite data.csv -o out.jsonl --prompt-field q --response-field a --verifier none
  sdft rewrite data.jsonl -o out.jsonl --dry-run          # show the first prompts, load nothing
  sdft rewrite data.jsonl -o out.jsonl --base-url http://127.0.0.1:8000/v1   # a running `vllm serve`
  sdft rewrite data.jsonl -o out.jsonl --ray 8             # 8 workers (one engine per GPU) via Ray, merged
  sdft rewrite data.jsonl -o out.jsonl --ray 16 --ray-address auto   # a running Ray cluster (shared storage)

Rerun the same command after a crash to resume; --overwrite starts over.
"""


@click.command("rewrite", epilog=EPILOG)
@click.argument("input", metavar="INPUT")
@click.option("-o", "--output", required=True, help="Training output (--format); OUT.records.jsonl, "
                                                    "OUT.rejected.jsonl and OUT.manifest.json are written beside it.")
@click.option("--model", default="smollm2-135m-instruct", show_default=True,
              help="Seed model: alias, HF folder, .gguf file or Hub id.")
@click.option("--backend", type=click.Choice(["auto", "vllm", "hf", "openai"]), default="auto", show_default=True)
@click.option("--base-url", help="OpenAI-compatible server (vllm serve, sglang), e.g. http://127.0.0.1:8000/v1.")
@click.option("--api-key", envvar="OPENAI_API_KEY", help="API key for --base-url (env OPENAI_API_KEY).")
@click.option("--max-concurrency", type=int, default=16, show_default=True, help="Requests in flight to the server.")
@click.option("--limit", type=int, help="Only the first N rows.")
@click.option("--dry-run", is_flag=True, help="Print the first rendered rewrite prompts and exit.")
@click.option("--data-format", type=click.Choice(["auto", "alpaca", "gsm8k", "prompt", "messages"]),
              default="auto", show_default=True)
@click.option("--prompt-field", help="Prompt column (prompt/response data).")
@click.option("--response-field", help="Answer column (prompt/response data).")
@click.option("--split", default="train", show_default=True, help="Split for Hub / DatasetDict inputs.")
@click.option("--verifier", default="auto", show_default=True,
              help="math | tool-call | code | exact | regex | choice | none | auto.")
@click.option("--verifier-option", "verifier_options", multiple=True, metavar="KEY=VALUE",
              help="Verifier option, e.g. pattern='^\\d+$' for regex (repeatable).")
@click.option("--sources", help="Answer sources pooled per row, in order of preference for ties "
                               "[default: own,hint,reference,original].")
@click.option("--samples", type=int, help="Candidates drawn per row and source (best-of-k) [default: 4].")
@click.option("--select", type=click.Choice(["first", "min-nll"]),
              help="Among passing candidates: the first, or the one the seed model finds most likely "
                   "[default: min-nll].")
@click.option("--accept-nll", type=float, help="Skip later sources for a row once a candidate at or below this "
                                               "NLL per token passed (cost control).")
@click.option("--calculator/--no-calculator", default=None,
              help="Math: write the exact result after each arithmetic '=' while decoding [default: on].")
@click.option("--own-prefix/--no-own-prefix", default=None,
              help="Math: half the hint/reference candidates continue the seed's own answer [default: on].")
@click.option("--max-length-ratio", type=float,
              help="Reject candidates longer than this multiple of the seed's own answer; 0 = off [default: 2].")
@click.option("--on-fail", type=click.Choice(["keep-original", "drop"]), default="keep-original",
              show_default=True)
@click.option("--temperature", type=float, help="0 = greedy (default with 1 sample; 0.7 with more).")
@click.option("--top-p", type=float, default=1.0, show_default=True)
@click.option("--max-new-tokens", type=int, default=512, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--template", type=click.Path(dir_okay=False), help="Jinja file for the rewrite request.")
@click.option("--system-prompt", help="System instruction of the rewrite request.")
@click.option("--paper", "paper_style", is_flag=True, help="The paper's Alpaca-format rewrite prompt.")
@click.option("--batch-size", type=int, default=512, show_default=True, help="Rows per engine call and shard.")
@click.option("--format", "output_format",
              type=click.Choice(["messages", "alpaca", "sharegpt", "prompt-completion", "hf"]), default="messages",
              show_default=True, help="Training rows of -o (kept rows only; the rest go to OUT.rejected.jsonl): "
                                      "chat messages, alpaca, sharegpt, TRL prompt-completion, or hf (a "
                                      "datasets.save_to_disk folder at -o). See docs/FORMATS.md.")
@click.option("--gap-rows", type=int, default=64, show_default=True,
              help="Rows scored for the distribution-gap report (0 skips it).")
@click.option("--kv-cache-gib", type=float, default=2.0, show_default=True, help="vLLM KV cache (GiB).")
@click.option("--tensor-parallel-size", type=int, default=1, show_default=True)
@click.option("--shard", help="I/N: this worker's share of the rows (0-based), e.g. 0/2; see `sdft merge`.")
@click.option("--ray", "ray_workers", type=click.IntRange(min=1), metavar="N",
              help="Run N workers through Ray (one engine per GPU; shards 0/N..N-1/N) and merge their outputs. "
                   "Needs the [ray] extra.")
@click.option("--ray-address", help="Ray cluster to join for --ray (default: $RAY_ADDRESS, else a local cluster). "
                                    "Multi-node: data and -o on storage every node mounts.")
@click.option("--overwrite", is_flag=True, help="Discard results of an earlier, different run.")
def command(input: str, output: str, dry_run: bool, verifier_options: tuple[str, ...], ray_workers: int | None,
            ray_address: str | None, **kw) -> None:
    """Rewrite each reference answer of INPUT in the seed model's own words.

    A rewrite is kept only if the verifier says it still reaches the reference's result;
    otherwise the original answer is kept (--on-fail keep-original) or the row dropped.
    """
    if ray_workers and kw.get("shard"):
        raise click.UsageError("--ray and --shard are exclusive: --ray N runs shards 0/N..N-1/N itself")
    if ray_address and not ray_workers:
        raise click.UsageError("--ray-address needs --ray N")
    from sdft.config import from_dict, parse_overrides

    opts = parse_overrides(list(verifier_options)) if verifier_options else {}
    cfg = from_dict(_rewrite_cls(), {"input": input, "output": output, "verifier_options": opts,
                                     **{k: v for k, v in kw.items() if v is not None}})
    from sdft.commands._ui import console, notice, out, progress_bar

    if dry_run:
        from sdft.rewrite import dry_run as render

        for i, row in enumerate(render(cfg)):
            out.rule(f"prompt {i + 1} · id {row['id']}")
            if row["rendered"] is not None:
                out.print(row["rendered"], markup=False)
            else:
                for m in row["messages"]:
                    out.print(f"[{m['role']}] {m['content']}", markup=False)
        return
    from sdft.data import count_rows
    from sdft.rewrite import run_rewrite

    if ray_workers:
        from sdft.ray_launch import require_ray

        require_ray()  # before the progress bar: a missing extra is a one-line error
    total = count_rows(cfg.data_spec())
    with progress_bar("rewriting", total=total) as bar:
        if ray_workers:
            from sdft.ray_launch import run_rewrite_ray

            result = run_rewrite_ray(cfg, ray_workers, address=ray_address, on_progress=bar, notice=notice)
        else:
            result = run_rewrite(cfg, on_progress=bar, notice=notice)
    console.print(f"output: {result.output}")
    summary_table(result.manifest)
    print_gap(result.manifest.get("gap"))


def _rewrite_cls():
    from sdft.rewrite import RewriteConfig

    return RewriteConfig
