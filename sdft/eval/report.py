"""The report files: ``report.json``, ``report.md``, ``radar.png`` and ``answers.jsonl``.

``answers.jsonl`` is **the per-item source** (``report.json`` holds aggregates only): one row
per (model, suite, probe), models in report order, suites in config order, probes in file
order; every model has a row for every probe of every suite it was scored on, so rows pair up
across models on ``(suite, id)``. Each row::

    {"model": str,           # "base" or the tuned model's label
     "suite": str,           # suite name
     "id": str,              # probe id, unique within the suite (same id for every model)
     "prompt": str,          # the last prompt turn's text
     "answer": str,          # the judged answer (drift: the base's answer, for every model)
     "finish_reason": str,   # "stop" | "length"
     "pass": bool | null,    # the verdict of pass/fail suites; null for drift (a continuous score)
     "value": float | null,  # the item's score, 0-100, higher is better: 100/0 for pass/fail
                             # suites, for drift 100*exp(-NLL per token of the base's answer under
                             # this model); null = no score (an empty base answer), left out of
                             # the aggregates: pair items where both models have a value
     "reason": str,          # kebab-case verdict token ("ok", "complied", "refused", "wrong-answer", ...)
     "detail": str}          # free text ("refusal marker 'i cannot'", "NLL 0.83 per token over 57 tokens")

A pass/fail suite's aggregate score is the mean of its item values; drift's is token-weighted
(see :mod:`sdft.eval.drift`), so it differs from the plain mean of its item values.

``report.json``: ``{"kind": "sdft-eval", "format": 2, "config", "models": [{"label", "model", "path"}],
"suites": [{"suite", "metric", "max_new_tokens", "models": {label: aggregate}}], "answers":
"answers.jsonl", "gate": {"max_drop", "failures", "passed"}, "chart"}``; an aggregate holds
``n``, ``score``, ``low``, ``high`` (95%), ``failures`` (reason -> count), ``truncated``,
``examples`` (two answers), ``k`` for rates, ``nll``/``tokens`` for drift, and for tuned models
``delta``, ``delta_low``, ``delta_high``.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdft.config import to_dict
from sdft.eval.base import Answer, ItemResult, Probe, Suite
from sdft.store import atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    from sdft.eval.config import EvalConfig

FORMAT = 2
EXAMPLE_CHARS = 200
PROMPT_CHARS = 120


def build_report(cfg: EvalConfig, suites: dict[str, Suite], probes: dict[str, list[Probe]],
                 answers: dict[str, dict[str, dict[str, Answer]]],
                 results: dict[str, dict[str, list[ItemResult]]], models: list[tuple[str, str]]) -> dict[str, Any]:
    """The report data: per suite and model the aggregate, examples and the change against the base."""
    labels = [label for label, _ in models]
    given = dict(cfg.models())  # the model arguments as the user gave them; "path" is what was loaded
    rows = []
    for name, suite in suites.items():
        ms: dict[str, dict[str, Any]] = {}
        for label in labels:
            items, by_id = results[label][name], answers[label][name]
            ms[label] = {**suite.aggregate(items),
                         "failures": dict(Counter(i.reason for i in items if i.passed is False)),
                         "truncated": sum(by_id[p.id].finish_reason == "length" for p in probes[name]),
                         "examples": pick_examples(probes[name], by_id, items)}
        base = ms["base"]
        for label in labels[1:]:
            m = ms[label]
            if m.get("score") is not None and base.get("score") is not None:
                m["delta"], m["delta_low"], m["delta_high"] = suite.delta(base, m)
        rows.append({"suite": name, "metric": suite.metric, "max_new_tokens": cfg.budget(name), "models": ms})
    return {"kind": "sdft-eval", "format": FORMAT, "config": to_dict(cfg),
            "models": [{"label": lab, "model": given[lab], "path": p} for lab, p in models], "suites": rows,
            "answers": "answers.jsonl"}


def pick_examples(probes: list[Probe], answers: dict[str, Answer], items: list[ItemResult],
                  k: int = 2) -> list[dict[str, Any]]:
    """``k`` answers to show: the first best-scoring and the first worst-scoring (a pass and a fail
    when both exist), then others in probe order; text cut to :data:`EXAMPLE_CHARS`."""
    order = [i for i, it in enumerate(items) if it.value is not None] or list(range(len(items)))
    value = [it.value or 0.0 for it in items]
    best = max(order, key=lambda i: (value[i], -i))
    worst = min(order, key=lambda i: (value[i], i))
    chosen = list(dict.fromkeys([best, worst, *order]))[:k]
    return [{"id": items[i].id, "pass": items[i].passed, "value": items[i].value, "reason": items[i].reason,
             "prompt": clip(probes[i].prompt, PROMPT_CHARS), "answer": clip(answers[probes[i].id].text, EXAMPLE_CHARS),
             "finish_reason": answers[probes[i].id].finish_reason} for i in chosen]


def clip(text: str, limit: int) -> str:
    """``text`` on one line (whitespace runs folded), cut to ``limit`` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def answer_rows(probes: dict[str, list[Probe]], answers: dict[str, dict[str, dict[str, Answer]]],
                results: dict[str, dict[str, list[ItemResult]]]) -> list[dict[str, Any]]:
    """The rows of ``answers.jsonl`` (the per-item contract in the module docstring)."""
    rows = []
    for label, per_suite in results.items():
        for name, items in per_suite.items():
            for probe, it in zip(probes[name], items):
                a = answers[label][name][probe.id]
                rows.append({"model": label, "suite": name, "id": probe.id, "prompt": probe.prompt, "answer": a.text,
                             "finish_reason": a.finish_reason, "pass": it.passed, "value": it.value,
                             "reason": it.reason, "detail": it.detail})
    return rows


def write_report(out: Path, report: dict[str, Any], probes: dict[str, list[Probe]],
                 answers: dict[str, dict[str, dict[str, Answer]]], results: dict[str, dict[str, list[ItemResult]]],
                 notice: Callable[[str], None]) -> None:
    """Write ``answers.jsonl``, ``report.md``, ``radar.png`` and, last, ``report.json`` (each atomically)."""
    lines = [json.dumps(r, ensure_ascii=False) for r in answer_rows(probes, answers, results)]
    atomic_write_text(out / "answers.jsonl", "\n".join(lines) + ("\n" if lines else ""))
    atomic_write_text(out / "report.md", render_markdown(report))
    try:
        radar_chart(report, out / "radar.png")
        report["chart"] = str(out / "radar.png")
    except ImportError:  # matplotlib is a core dependency, but a broken install should not lose the report
        notice("matplotlib is not importable: radar.png not written")
    atomic_write_json(out / "report.json", report)


def _cell(m: dict[str, Any]) -> str:
    if m.get("score") is None:
        return "n/a"
    return f"{m['score']:.1f} [{m['low']:.1f}, {m['high']:.1f}]"


def _delta(m: dict[str, Any]) -> str:
    if "delta" not in m:
        return ""
    return f"{m['delta']:+.1f} [{m['delta_low']:+.1f}, {m['delta_high']:+.1f}]"


def table_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the report table (shared by report.md and the CLI's rich table)."""
    labels = [m["label"] for m in report["models"]]
    header = ["suite", "metric", "n", *labels, *(f"Δ {lab}" for lab in labels[1:])]
    rows = []
    for row in report["suites"]:
        ms = row["models"]
        n = ms["base"].get("n", 0)
        rows.append([row["suite"], row["metric"], str(n), *(_cell(ms[lab]) for lab in labels),
                     *(_delta(ms[lab]) for lab in labels[1:])])
    return header, rows


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>#|~])")


def _md(text: str) -> str:
    """Model or user text made inert in Markdown (no markup, no HTML)."""
    return _MD_SPECIAL.sub(r"\\\1", text)


def render_examples(report: dict[str, Any]) -> list[str]:
    """Markdown lines: per suite and model, the example answers of the report."""
    lines = ["", "## Example answers", "",
             "Per suite and model: a passing and a failing answer where both exist (drift: the answers this model "
             f"finds most and least likely), cut to {EXAMPLE_CHARS} characters; every answer is in `answers.jsonl`."]
    for row in report["suites"]:
        lines += ["", f"### {row['suite']}: {row['metric']}, ≤{row.get('max_new_tokens', '?')} tokens", ""]
        for label, m in row["models"].items():
            for ex in m.get("examples", []):
                verdict = {True: "pass", False: "FAIL", None: "value"}[ex["pass"]]
                value = "" if ex["value"] is None or ex["pass"] is not None else f" {ex['value']:.1f}"
                cut = " (hit the token budget)" if ex.get("finish_reason") == "length" else ""
                lines.append(f"- **{_md(label)}** {verdict}{value} · {_md(ex['reason'])} · id {_md(ex['id'])}: "
                             f"“{_md(ex['prompt'])}” → “{_md(ex['answer'])}”{cut}")
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    """``report.md``: the table with sample sizes and 95% intervals, how to read it, and example answers."""
    header, rows = table_rows(report)
    lines = ["# sdft eval: forgetting report", ""]
    lines += [f"- **{_md(m['label'])}**: `{m['path']}`" for m in report["models"]]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", "Scores are 0-100, higher is better, with 95% intervals (Wilson for rates; for drift, "
              "100·exp(-NLL) of the base model's own greedy answers, normal approximation). Δ is tuned minus base "
              "with a 95% interval (Newcombe; it treats the two samples as independent, so it is conservative): "
              "an interval that excludes 0 is a real change. Decoding is greedy for every model. Refusals are "
              "detected by keywords (see `sdft.refusal` for its false positives and negatives). Per-item results "
              "for paired tests: `answers.jsonl`."]
    gate = report.get("gate") or {}
    if gate.get("max_drop"):
        lines += ["", f"Gate (largest allowed drop, points): {gate['max_drop']} — "
                      + ("passed" if gate.get("passed") else "FAILED")]
        lines += [f"- {f}" for f in gate.get("failures", [])]
    lines += render_examples(report)
    return "\n".join(lines) + "\n"


def radar_chart(report: dict[str, Any], path: Path) -> None:
    """One axis per suite (0-100), one polygon per model; a bar chart when fewer than 3 suites."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["suite"] for r in report["suites"]]
    labels = [m["label"] for m in report["models"]]
    values = {lab: [r["models"][lab].get("score") or 0.0 for r in report["suites"]] for lab in labels}
    if len(names) >= 3:
        angles = [2 * math.pi * i / len(names) for i in range(len(names))]
        fig, ax = plt.subplots(figsize=(6, 6), subplot_kw={"polar": True})
        for lab in labels:
            v = values[lab]
            ax.plot([*angles, angles[0]], [*v, v[0]], label=lab, linewidth=2 if lab == "base" else 1.5)
            ax.fill([*angles, angles[0]], [*v, v[0]], alpha=0.08)
        ax.set_xticks(angles)
        ax.set_xticklabels(names)
        ax.set_ylim(0, 100)
        ax.legend(loc="upper right", bbox_to_anchor=(1.25, 1.1))
    else:
        fig, ax = plt.subplots(figsize=(6, 4))
        width = 0.8 / len(labels)
        for i, lab in enumerate(labels):
            ax.bar([x + i * width for x in range(len(names))], values[lab], width, label=lab)
        ax.set_xticks([x + width * (len(labels) - 1) / 2 for x in range(len(names))])
        ax.set_xticklabels(names)
        ax.set_ylim(0, 100)
        ax.legend()
    ax.set_title("sdft eval (higher is better)")
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


# Before the split into run/config/report, these lived here; sdft.pipeline and bin/reproduce still
# import them from this module. New code imports them from sdft.eval.
_MOVED = {"EvalConfig": "sdft.eval.config", "split_tuned": "sdft.eval.config", "run_eval": "sdft.eval.run",
          "EvalReport": "sdft.eval.run", "check_gate": "sdft.eval.run", "gate_failures": "sdft.eval.run"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
