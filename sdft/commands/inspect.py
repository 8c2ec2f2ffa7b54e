"""``sdft inspect``: summarise a finished rewrite (or replay) output."""

from __future__ import annotations

import click

from sdft.commands._common import print_files, print_gap, summary_table
from sdft.options import ConfigOptions, verbosity_options
from sdft.rewrite import RewriteConfig

# the engine that scores --gap: the same options as every command that loads one
ENGINE = ConfigOptions(RewriteConfig, only=["backend", "base_url", "api_key", "max_concurrency", "kv_cache_gib",
                                            "gap_rows"])


@click.command("inspect", epilog="""\b
Examples:
  sdft inspect runs/arith.rewrite.jsonl
  sdft inspect runs/arith.rewrite.jsonl --gap --gap-rows 128   # recompute the NLL report
  sdft inspect out.jsonl --show 3                               # print 3 rows side by side
""")
@click.argument("output", type=click.Path(exists=True))
@click.option("--gap", "recompute_gap", is_flag=True, help="Recompute the distribution-gap report (loads the model).")
@ENGINE
@click.option("--show", type=int, default=0, help="Print the first N rows (original vs kept, with status and reason).")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@verbosity_options
def command(output: str, recompute_gap: bool, show: int, as_json: bool, verbose: bool, quiet: bool,
            **kw: object) -> None:
    """Show statuses, reasons, throughput and the distribution gap of OUTPUT.

    Reads the manifest and the sdft records beside OUTPUT (OUTPUT.records.jsonl and
    OUTPUT.rejected.jsonl), whatever --format the training rows were written in.
    """
    import json

    from sdft.commands._ui import out, set_verbosity
    from sdft.config import from_dict
    from sdft.errors import InputError
    from sdft.store import iter_records, read_manifest

    set_verbosity(verbose, quiet)
    engine_cfg = from_dict(RewriteConfig, ENGINE.given(kw))

    manifest = read_manifest(output)
    if manifest is None:
        raise InputError(f"{output}: no manifest beside it ({output}.manifest.json): is the run finished, and was it "
                         f"written by sdft (rewrite, replay or merge)?")
    if recompute_gap:
        manifest["gap"] = _gap(output, manifest, engine_cfg)
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


def _gap(output: str, manifest: dict, cfg: RewriteConfig) -> dict:
    """The distribution-gap report recomputed with the seed model the manifest names."""
    from sdft.commands._run import log_file
    from sdft.commands._ui import engine_logs, notice
    from sdft.engines import load_engine
    from sdft.gap import gap_report, score_records
    from sdft.models import resolve_model
    from sdft.preflight import model_problem
    from sdft.store import iter_records

    problem = model_problem(str(manifest.get("model")))
    if problem:
        from sdft.errors import InputError

        raise InputError(f"--gap: the manifest's {problem}")
    with engine_logs(log_file(output, folder=False)):
        engine = load_engine(resolve_model(manifest["model"], log=notice), cfg.backend, cfg.engine_options(),
                             notice=notice)
        try:
            return gap_report(score_records(engine, iter_records(output), limit=cfg.gap_rows),
                              sources=manifest.get("sources"))
        finally:
            engine.close()
