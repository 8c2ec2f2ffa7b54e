"""``sdft inspect``: summarise a finished rewrite (or replay) output."""

from __future__ import annotations

import click

from sdft.commands._common import print_files, print_gap, summary_table


@click.command("inspect", epilog="""\b
Examples:
  sdft inspect runs/arith.rewrite.jsonl
  sdft inspect runs/arith.rewrite.jsonl --gap --gap-rows 128   # recompute the NLL report
  sdft inspect out.jsonl --show 3                               # print 3 rows side by side
""")
@click.argument("output", type=click.Path(exists=True))
@click.option("--gap", "recompute_gap", is_flag=True, help="Recompute the distribution-gap report (loads the model).")
@click.option("--gap-rows", type=int, default=64, show_default=True)
@click.option("--backend", type=click.Choice(["auto", "vllm", "hf"]), default="auto", show_default=True)
@click.option("--show", type=int, default=0, help="Print the first N rows (original vs kept, with status and reason).")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def command(output: str, recompute_gap: bool, gap_rows: int, backend: str, show: int, as_json: bool) -> None:
    """Show statuses, reasons, throughput and the distribution gap of OUTPUT.

    Reads the manifest and the sdft records beside OUTPUT (OUTPUT.records.jsonl and
    OUTPUT.rejected.jsonl), whatever --format the training rows were written in.
    """
    import json

    from sdft.commands._ui import notice, out
    from sdft.errors import InputError
    from sdft.store import iter_records, read_manifest

    manifest = read_manifest(output)
    if manifest is None:
        raise InputError(f"{output}: no manifest beside it ({output}.manifest.json): is the run finished, and was it "
                         f"written by sdft (rewrite, replay or merge)?")
    if recompute_gap:
        from sdft.engines import load_engine
        from sdft.gap import gap_report, score_records
        from sdft.models import resolve_model

        engine = load_engine(resolve_model(manifest["model"], log=notice), backend, notice=notice)
        try:
            manifest["gap"] = gap_report(score_records(engine, iter_records(output), limit=gap_rows),
                                         sources=manifest.get("sources"))
        finally:
            engine.close()
    if as_json:
        out.print_json(json.dumps(manifest))
        return
    rate = manifest.get("acceptance_rate")
    out.print(f"{output}: model {manifest.get('model')}, verifier {manifest.get('verifier')}, "
              f"acceptance {rate if isinstance(rate, (int, float)) else 0:.1%}", markup=False, highlight=False)
    summary_table(manifest)
    print_files(output, manifest)
    print_gap(manifest.get("gap"))
    for i, row in enumerate(iter_records(output)):
        if i >= show:
            break
        out.rule(f"row {row.get('index')} · {row.get('status')} · {row.get('reason')}")
        messages = row.get("messages") or [{}]
        for label, text in (("question", messages[-1].get("content")), ("original", row.get("original")),
                            ("kept", row.get("response"))):
            out.print(f"{label}: {text}", markup=False, highlight=False)
