"""``sdft merge``: combine the outputs of data-parallel ``--shard I/N`` rewrite runs."""

from __future__ import annotations

import click


@click.command("merge", epilog="""\b
Examples:
  sdft rewrite data.jsonl -o part0.jsonl --shard 0/2 &    # one worker per GPU or machine
  sdft rewrite data.jsonl -o part1.jsonl --shard 1/2
  sdft merge part0.jsonl part1.jsonl -o out.jsonl --input data.jsonl

Without --input the check uses what each shard's manifest records (its rows' id digest and
count, the input's content hash, the shard number): a lost, repeated or foreign row fails.
""")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("-o", "--output", required=True, help="Merged training output (records, rejected rows and manifest "
                                                    "written beside it).")
@click.option("--input", "data", help="The dataset the shards came from: also check its rows are all there, once.")
@click.option("--data-format", default="auto", show_default=True)
@click.option("--prompt-field")
@click.option("--response-field")
@click.option("--format", "output_format",
              type=click.Choice(["messages", "alpaca", "sharegpt", "prompt-completion", "hf"]),
              help="Training rows of the merged output (default: the shards' format).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier merged output (sdft's own only).")
def command(inputs: tuple[str, ...], output: str, data: str | None, data_format: str, prompt_field: str | None,
            response_field: str | None, output_format: str | None, overwrite: bool) -> None:
    """Merge finished shard outputs into one, checking every row appears exactly once."""
    from sdft.commands._common import print_files, summary_table
    from sdft.commands._ui import console
    from sdft.store import merge_outputs

    expected = None
    protect: list[str] = []
    if data:
        from sdft.data import DataSpec, iter_examples, resolve_data_path

        spec = DataSpec(data, format=data_format, prompt_field=prompt_field, response_field=response_field)
        expected = [ex.id for ex in iter_examples(spec)]
        protect.append(resolve_data_path(data))
    manifest = merge_outputs(list(inputs), output, expected_ids=expected, overwrite=overwrite,
                             output_format=output_format, protect=protect)
    console.print(f"merged {len(inputs)} shard outputs into {output}")
    summary_table(manifest)
    print_files(output, manifest)
