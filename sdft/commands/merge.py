"""``sdft merge``: combine the outputs of data-parallel ``--shard I/N`` rewrite runs."""

from __future__ import annotations

import click


@click.command("merge", epilog="""\b
Examples:
  sdft rewrite data.jsonl -o part0.jsonl --shard 0/2 &    # one worker per GPU or machine
  sdft rewrite data.jsonl -o part1.jsonl --shard 1/2
  sdft merge part0.jsonl part1.jsonl -o out.jsonl --input data.jsonl
""")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, help="Merged output JSONL (manifest written beside it).")
@click.option("--input", "data", help="The dataset the shards came from: check every row is present exactly once.")
@click.option("--data-format", default="auto", show_default=True)
@click.option("--prompt-field")
@click.option("--response-field")
@click.option("--overwrite", is_flag=True, help="Replace an existing merged output.")
def command(inputs: tuple[str, ...], output: str, data: str | None, data_format: str, prompt_field: str | None,
            response_field: str | None, overwrite: bool) -> None:
    """Merge finished shard outputs into one, checking every row appears exactly once."""
    from sdft.commands._common import summary_table
    from sdft.commands._ui import console
    from sdft.store import merge_outputs

    expected = None
    if data:
        from sdft.data import DataSpec, iter_examples

        spec = DataSpec(data, format=data_format, prompt_field=prompt_field, response_field=response_field)
        expected = [ex.id for ex in iter_examples(spec)]
    manifest = merge_outputs(list(inputs), output, expected_ids=expected, overwrite=overwrite)
    console.print(f"merged {len(inputs)} shard outputs into {output}")
    summary_table(manifest)
