"""Rendering shared by several commands (summary tables, the gap report)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from sdft.commands._ui import console, out


def summary_table(manifest: dict[str, Any]) -> None:
    """Per-status and per-reason counts of a rewrite/replay manifest."""
    rows = manifest.get("rows", {})
    total = rows.get("total", 0) or 1
    t = Table(title="rewrite summary", title_justify="left")
    t.add_column("status")
    t.add_column("rows", justify="right")
    t.add_column("share", justify="right")
    for k in ("rewritten", "fallback", "dropped"):
        t.add_row(k, str(rows.get(k, 0)), f"{rows.get(k, 0) / total:.1%}")
    t.add_row("[bold]total", f"[bold]{rows.get('total', 0)}", "")
    out.print(t)
    reasons = manifest.get("reasons") or {}
    if reasons:
        r = Table(title="reasons", title_justify="left")
        r.add_column("reason")
        r.add_column("rows", justify="right")
        for k, v in reasons.items():
            r.add_row(k, str(v))
        out.print(r)
    tps = manifest.get("tokens_per_second")
    if tps:
        out.print(f"generation: {manifest.get('generated_tokens_this_run')} tokens at {tps} tok/s "
                  f"({manifest.get('backend')}), wall {manifest.get('wall_seconds_this_run')} s")


def print_gap(gap: dict[str, Any] | None) -> None:
    """The distribution-gap report: seed-model NLL of originals vs kept rewrites vs own answers."""
    if not gap or not gap.get("rows"):
        return
    t = Table(title=f"distribution gap (seed-model NLL per token, first {gap['rows']} rows; lower = closer)",
              title_justify="left")
    t.add_column("answers")
    t.add_column("mean NLL", justify="right")
    t.add_row("original (all rows)", _f(gap.get("original_nll")))
    t.add_row(f"original (the {gap.get('rewritten_rows', 0)} rewritten rows)",
              _f(gap.get("original_nll_on_rewritten_rows")))
    t.add_row("kept rewrites", _f(gap.get("rewrite_nll")))
    t.add_row("model's own answers (floor)", _f(gap.get("own_answer_nll")))
    out.print(t)
    if gap.get("length_ratio") is not None:
        out.print(f"rewrite/original length ratio: {gap['length_ratio']:.2f}")
    if gap.get("warning"):
        console.print(f"[bold yellow]warning:[/] {gap['warning']}")


def _f(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"
