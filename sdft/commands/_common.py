"""Rendering shared by several commands (summary tables, the gap report)."""

from __future__ import annotations

from typing import Any

from sdft.commands._ui import console, out
from sdft.commands._ui import table as Table


def summary_table(manifest: dict[str, Any]) -> None:
    """Per-status and per-reason counts of a rewrite/replay manifest."""
    if manifest.get("kind") == "sdft-replay":
        _replay_summary(manifest)
        return
    rows = manifest.get("rows", {})
    total = rows.get("total", 0) or 1
    t = Table(title="rewrite summary")
    t.add_column("status")
    t.add_column("rows", justify="right")
    t.add_column("share", justify="right")
    for k in ("rewritten", "fallback", "dropped"):
        t.add_row(k, str(rows.get(k, 0)), f"{rows.get(k, 0) / total:.1%}")
    t.add_row("[bold]total", f"[bold]{rows.get('total', 0)}", "")
    out.print(t)
    reasons = manifest.get("reasons") or {}
    if reasons:
        r = Table(title="reasons")
        r.add_column("reason")
        r.add_column("rows", justify="right")
        for k, v in reasons.items():
            r.add_row(k, str(v))
        out.print(r)
    tps = manifest.get("tokens_per_second")
    if tps:
        out.print(f"generation: {manifest.get('generated_tokens_this_run')} tokens at {tps} tok/s "
                  f"({manifest.get('backend')}), wall {manifest.get('wall_seconds_this_run')} s")


def _replay_summary(manifest: dict[str, Any]) -> None:
    """Kept rows, the filter funnel (rows removed by each check, in order) and throughput."""
    rows = manifest.get("rows", {})
    total = rows.get("total", 0)
    t = Table(title=f"replay summary: {rows.get('kept', 0)} of {manifest.get('num_requested')} rows kept "
                    f"from {total} attempts")
    t.add_column("reason")
    t.add_column("rows", justify="right")
    t.add_column("share of attempts", justify="right")
    t.add_column("kept by this check", justify="right")
    left = total
    for k, v in (manifest.get("filters") or {}).items():
        if k in ("ok", "surplus"):
            continue
        t.add_row(k, str(v), f"{v / (total or 1):.1%}", f"{(left - v) / left:.1%}" if left else "–")
        left -= v
    surplus = (manifest.get("filters") or {}).get("surplus", 0)
    t.add_row("surplus (past --num)", str(surplus), f"{surplus / (total or 1):.1%}", "")
    t.add_row("[bold]kept", f"[bold]{rows.get('kept', 0)}", f"{rows.get('kept', 0) / (total or 1):.1%}", "")
    out.print(t)
    ref = manifest.get("refusals") or {}
    if ref.get("answered"):
        out.print(f"refusals ({ref.get('mode')}): {ref.get('share_answered', 0):.1%} of answers, "
                  f"{ref.get('share_kept') or 0:.1%} of kept rows")
    if manifest.get("queries_per_second"):
        out.print(f"generation: {manifest.get('queries_this_run')} queries at {manifest['queries_per_second']} "
                  f"queries/s, {manifest.get('tokens_per_second')} tok/s ({manifest.get('backend')}), "
                  f"wall {manifest.get('wall_seconds_this_run')} s")


def print_files(output: str, manifest: dict[str, Any]) -> None:
    """Where the training rows, the records and the rejected rows are."""
    files = manifest.get("files")
    if not files:  # an output of an older sdft: rows and bookkeeping in one file
        return
    fmt = manifest.get("format")
    rows = manifest.get("rows", {})
    kept = rows.get("kept", rows.get("rewritten", 0) + rows.get("fallback", 0))
    out.print(f"training rows ({kept}, --format {fmt}): {output}; records: {files['records']['name']}; "
              f"rejected ({rows.get('total', 0) - kept}): {files['rejected']['name']}", markup=False, highlight=False)


def print_gap(gap: dict[str, Any] | None) -> None:
    """The distribution-gap report: seed NLL of originals, kept answers and own answers; per source."""
    if not gap or not gap.get("rows"):
        return
    t = Table(title=f"distribution gap over {gap['rows']} rows (seed NLL per token under the training prompt; "
                    f"lower = closer to the model)")
    t.add_column("answers")
    t.add_column("mean NLL", justify="right")
    t.add_row("original (reference)", _f(gap.get("original_nll")))
    t.add_row("kept (what training sees; fallback rows = original)", _f(gap.get("kept_nll")))
    t.add_row(f"model's own answers (floor, {gap.get('rows_with_own_answer', 0)} rows)", _f(gap.get("own_answer_nll")))
    out.print(t)
    per = gap.get("per_source") or {}
    if per:
        s = Table(title="per source")
        for col in ("source", "rows kept", "mean NLL", "candidates", "passed", "generated tokens", "seconds"):
            s.add_column(col, justify="left" if col == "source" else "right")
        for name, v in per.items():
            s.add_row(name, str(v.get("rows", 0)), _f(v.get("nll")), str(v.get("candidates", "–")),
                      str(v.get("passed", "–")), str(v.get("generated_tokens", "–")), str(v.get("seconds", "–")))
        out.print(s)
    closed = gap.get("gap_closed")
    if closed is not None:
        per_row = gap.get("generated_tokens_per_kept_row")
        out.print(f"gap closed over all rows: {closed:.1%}; acceptance {gap.get('acceptance', 0):.1%}"
                  + (f"; {per_row:.0f} generated tokens per kept row" if per_row else "")
                  + f"; kept answers {gap.get('kept_tokens_mean') or 0:.0f} tokens, total NLL "
                    f"{gap.get('kept_total_nll_mean') or 0:.1f} on average", markup=False, highlight=False)
    print_gap_verdict(gap)


def print_gap_verdict(gap: dict[str, Any] | None) -> None:
    """One line: did the training answers move closer to the model, and by how much (or the warning)."""
    if not gap or not gap.get("rows"):
        return
    closed = gap.get("gap_closed")
    if gap.get("warning"):
        console.print(f"[bold yellow]warning:[/] {gap['warning']}")
    elif closed is not None and closed > 0:
        console.print(f"[green]the training answers moved closer to the model: {closed:.0%} of the gap closed[/] "
                      f"(seed NLL per token: originals {_f(gap.get('original_nll'))}, kept "
                      f"{_f(gap.get('kept_nll'))}, its own answers {_f(gap.get('own_answer_nll'))})")
    elif closed is not None:
        console.print(f"[yellow]the training answers are no closer to the model than the originals[/] "
                      f"(0% of the gap closed: seed NLL per token {_f(gap.get('kept_nll'))} vs originals "
                      f"{_f(gap.get('original_nll'))})")


def _f(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"
