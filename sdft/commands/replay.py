"""``sdft replay``: generate Magpie-style replay data from the model itself."""

from __future__ import annotations

import click

EPILOG = """\b
Examples:
  sdft replay -o runs/replay.jsonl --num 500
  sdft replay -o runs/replay.jsonl --model ./my-chat-model --num 2000 --language en
  sdft replay -o out.jsonl --system-prompt "You are a concise assistant." --num 200
  sdft replay -o out.jsonl --pre-query $'<s>[INST] ' --num 100     # template it cannot derive
  sdft replay -o out.jsonl --dry-run                                 # show the pre-query, load nothing
  sdft inspect runs/replay.jsonl --show 5
  sdft train recipes/demo.yaml replay=runs/replay.jsonl replay_ratio=0.2

The model writes user queries from the start of its own chat template, then answers them.
Rerun the same command after a crash to resume; a larger --num continues a finished run.
"""


@click.command("replay", epilog=EPILOG)
@click.option("-o", "--output", required=True, help="Training output (--format); OUT.records.jsonl, "
                                                    "OUT.rejected.jsonl and OUT.manifest.json are written beside it.")
@click.option("--format", "output_format",
              type=click.Choice(["messages", "alpaca", "sharegpt", "prompt-completion", "hf"]), default="messages",
              show_default=True, help="Training rows of -o (kept rows only). See docs/FORMATS.md.")
@click.option("--model", default="smollm2-135m-instruct", show_default=True,
              help="Seed model: alias, HF folder, .gguf file or Hub id.")
@click.option("--num", type=int, default=1000, show_default=True, help="Replay rows to keep.")
@click.option("--backend", type=click.Choice(["auto", "vllm", "hf"]), default="auto", show_default=True)
@click.option("--system-prompt", help="System turn before the user turn (for queries and answers).")
@click.option("--pre-query", help="Raw text that starts a user turn, instead of deriving it from the template.")
@click.option("--batch-size", type=int, default=128, show_default=True, help="Query attempts per round.")
@click.option("--max-rounds", type=int, help="Give up after this many rounds (default: 4 x num attempts).")
@click.option("--query-temperature", type=float, default=1.0, show_default=True)
@click.option("--query-top-p", type=float, default=1.0, show_default=True)
@click.option("--query-max-tokens", type=int, default=128, show_default=True)
@click.option("--answer-temperature", type=float, default=0.2, show_default=True)
@click.option("--answer-top-p", type=float, default=1.0, show_default=True)
@click.option("--answer-max-tokens", type=int, default=512, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--min-query-words", type=int, default=3, show_default=True)
@click.option("--max-query-words", type=int, default=200, show_default=True)
@click.option("--min-answer-words", type=int, default=1, show_default=True, help="Refusals are exempt.")
@click.option("--max-answer-words", type=int, help="Drop longer answers (default: no limit).")
@click.option("--allow-non-questions", is_flag=True, help="Keep queries that do not read as a request.")
@click.option("--language", type=click.Choice(["en"]), help="Keep rows in this language only.")
@click.option("--near-dup-threshold", type=float, default=0.7, show_default=True,
              help="Jaccard similarity of character 5-grams that makes a query a near duplicate (1 disables).")
@click.option("--refusals", type=click.Choice(["proportional", "keep", "drop"]), default="proportional",
              show_default=True, help="proportional: refusals (part of the model's alignment) are kept in the share "
                                      "the model gives them; keep: every refusal that passes; drop: none.")
@click.option("--kv-cache-gib", type=float, default=2.0, show_default=True, help="vLLM KV cache (GiB).")
@click.option("--tensor-parallel-size", type=int, default=1, show_default=True)
@click.option("--overwrite", is_flag=True, help="Discard results of an earlier, different run.")
@click.option("--dry-run", is_flag=True, help="Print the pre-query prompt and stop strings and exit.")
def command(output: str, dry_run: bool, allow_non_questions: bool, **kw) -> None:
    """Write replay rows: queries the model writes as a user, and its own answers.

    Each query and answer goes through filters (length, truncation, template leakage, not a
    request, language, exact and near duplicates); the manifest counts every filter.
    """
    from sdft.config import from_dict

    cfg = from_dict(_replay_cls(), {"output": output, "require_question": not allow_non_questions,
                                    **{k: v for k, v in kw.items() if v is not None}})
    from sdft.commands._ui import console, notice, out, progress_bar

    if dry_run:
        from sdft.replay import describe

        d = describe(cfg)
        out.rule("pre-query prompt" + (" (derived from the chat template)" if d["derived"] else " (given)"))
        out.print(repr(d["pre_query"]), markup=False)
        out.print(f"stop strings: {d['stops'] or 'none (the end-of-turn token stops)'}", markup=False)
        if d["context_lines"]:
            out.print(f"context lines a query must not repeat: {d['context_lines']}", markup=False)
        return
    from sdft.commands._common import summary_table
    from sdft.replay import run_replay

    with progress_bar("replay", total=cfg.num) as bar:
        result = run_replay(cfg, on_progress=bar, notice=notice)
    console.print(f"output: {result.output}")
    summary_table(result.manifest)


def _replay_cls():
    from sdft.replay import ReplayConfig

    return ReplayConfig
