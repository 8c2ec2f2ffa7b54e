"""The comparison report: task gain next to every forgetting suite, per method, over training seeds.

:func:`build_report` turns a finished run's files (plan, units, eval answers) into one JSON-able
dict with the statistics of :mod:`sdft.compare.stats`; :func:`write_report` writes
``report.json``, ``report.md``, ``pareto.png`` and ``radar.png`` atomically. Nothing here loads
a model, so ``sdft compare --report DIR`` regenerates a report from a finished run in seconds.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sdft.compare import stats
from sdft.compare.results import Item, read_answers, read_plan, read_units
from sdft.store import atomic_write_json, atomic_write_text

SEED_MODEL = "base"  # the eval's label of the seed model

DEFINITIONS = [
    "Scores are each suite's 0-100 scale, higher is better; every model answered the same prompts with the "
    "same greedy decoding in one `sdft eval` run.",
    "**Mean [95% CI]**: mean over training seeds and prompts. The interval is a two-way percentile bootstrap: "
    "each replicate draws the seeds with replacement and the prompts with replacement (one prompt draw shared by "
    "all seeds, since every seed answered the same prompts), so it covers seed variance and prompt sampling; "
    "with one seed it is a prompt bootstrap.",
    "**Δ vs seed model**: the method's mean minus the seed model's on the same prompts, with the same bootstrap "
    "(paired on prompts).",
    "**vs baseline**: the method's mean minus the baseline method's (paired on prompts; seeds of each method "
    "drawn independently). p: for suites scored 0/100 per item, the exact two-sided McNemar test on seed-averaged "
    "discordant pairs (n10 = Σ_i pa_i(1 − pb_i), n01 = Σ_i (1 − pa_i)pb_i, pa_i = share of a's seeds passing "
    "prompt i; rounded to integers); otherwise the two-sided null-shifted bootstrap p-value.",
    "**MDE**: the smallest true difference the test would detect with 80% power at two-sided α = 0.05: for "
    "0/100 suites from the observed discordance (Connor 1987), otherwise (z0.975 + z0.8) × bootstrap SE. A "
    "difference smaller than the MDE that is not significant is not evidence of no difference.",
]


def _suite_order(plan: dict[str, Any], items: list[Item]) -> list[str]:
    planned = list((plan.get("eval") or {}).get("suites") or [])
    seen = [i.suite for i in items]
    return [s for s in planned if s in seen] + [s for s in dict.fromkeys(seen) if s not in planned]


def suite_matrices(items: list[Item], suite: str, labels: dict[str, list[tuple[int, str]]]
                   ) -> tuple[list[str], np.ndarray | None, dict[str, tuple[list[int], np.ndarray]]]:
    """The seed model's vector and each method's seeds x prompts matrix on the prompts every model answered.

    Args:
        items: every scored item.
        suite: the suite.
        labels: method -> [(training seed, eval label)] of its finished units.

    Returns:
        ``(prompt ids, seed model scores or None, method -> (seeds, matrix))``.
    """
    by: dict[str, dict[str, float]] = {}
    for it in items:
        if it.suite == suite:
            by.setdefault(it.model, {})[it.id] = it.value
    base = by.get(SEED_MODEL)
    if not base:
        return [], None, {}
    ids = list(base)
    present = {m: [(s, lab) for s, lab in units if lab in by] for m, units in labels.items()}
    for units in present.values():
        for _, lab in units:
            ids = [i for i in ids if i in by[lab]]
    if not ids:
        return [], None, {}
    mats = {m: ([s for s, _ in units], np.array([[by[lab][i] for i in ids] for _, lab in units]))
            for m, units in present.items() if units}
    return ids, np.array([base[i] for i in ids]), mats


def build_report(plan: dict[str, Any], units: dict[str, dict[str, Any]], items: list[Item]) -> dict[str, Any]:
    """Every statistic of the comparison as one JSON-able dict (see :data:`DEFINITIONS`)."""
    cfg = plan["config"]
    st = plan.get("stats", {})
    n_boot, seed0 = int(st.get("bootstrap", 2000)), int(st.get("seed", 0))
    methods = [m["name"] for m in cfg["methods"]]
    baseline = cfg.get("baseline")
    labels = {m: [(u["seed"], u["label"]) for u in plan["units"] if u["method"] == m and u["label"] in units]
              for m in methods}
    task = (plan.get("eval") or {}).get("task") or {"measured": False, "reason": "no eval recorded"}
    rows, per_seed = [], {}
    for suite in _suite_order(plan, items):
        ids, base, mats = suite_matrices(items, suite, labels)
        if base is None:
            continue
        row: dict[str, Any] = {"suite": suite, "role": "task" if suite == "task" else "forgetting", "n": len(ids),
                               "binary": stats.is_binary(base, *(x for _, x in mats.values())),
                               "seed_model": stats.summarise(base, n_boot=n_boot,
                                                             seed=stats.stable_int(seed0, suite, SEED_MODEL)),
                               "methods": {}}
        for m, (seeds, x) in mats.items():
            cell: dict[str, Any] = {
                "seeds": seeds,
                "score": stats.summarise(x, n_boot=n_boot, seed=stats.stable_int(seed0, suite, m)),
                "delta": stats.compare(x, base, n_boot=n_boot, seed=stats.stable_int(seed0, suite, m, "delta")),
                "vs_baseline": None}
            if baseline and m != baseline and baseline in mats:
                cell["vs_baseline"] = stats.compare(x, mats[baseline][1], n_boot=n_boot,
                                                    seed=stats.stable_int(seed0, suite, m, "vs", baseline))
            row["methods"][m] = cell
            per_seed.setdefault(m, {})[suite] = dict(zip(seeds, x.mean(axis=1).tolist()))
        per_seed.setdefault(SEED_MODEL, {})[suite] = {0: float(base.mean())}
        rows.append(row)
    return {"kind": "sdft-compare-report", "model": cfg.get("model"), "methods": cfg["methods"],
            "seeds": cfg.get("seeds"), "baseline": baseline, "rewrite_seed": cfg.get("rewrite_seed"),
            "split": plan.get("split"), "task": task, "suites": rows,
            "pareto": pareto_points(rows, per_seed, methods), "examples": examples(items, rows, labels,
                                                                                   int(st.get("examples", 2))),
            "timings": {"stages": plan.get("timings", {}), "units": {
                lab: {**(u.get("timings") or {}), **{k: (u.get("train") or {}).get(k)
                                                     for k in ("global_step", "final_loss", "tokens_per_second")},
                      "pairs": u.get("pairs")} for lab, u in units.items()}},
            "unfinished": [u["label"] for u in plan["units"] if u["label"] not in units],
            "statistics": {"bootstrap": n_boot, "seed": seed0, "alpha": stats.ALPHA, "power": stats.POWER,
                           "definitions": DEFINITIONS}}


def pareto_points(rows: list[dict[str, Any]], per_seed: dict[str, dict[str, dict[int, float]]],
                  methods: list[str]) -> dict[str, Any] | None:
    """Task gain (x) against the mean score over forgetting suites (y), per method, with seed spreads.

    For each training seed, x is the task score minus the seed model's and y the mean of the
    forgetting suites' scores; a point is the mean over seeds and its error bars the standard
    deviation over seeds. None when the task suite or every forgetting suite is missing.
    """
    forgetting = [r["suite"] for r in rows if r["role"] == "forgetting"]
    if "task" not in {r["suite"] for r in rows} or not forgetting:
        return None
    base_task = per_seed[SEED_MODEL]["task"][0]
    out: dict[str, Any] = {"seed_model": {"x": 0.0, "y": float(np.mean([per_seed[SEED_MODEL][s][0]
                                                                         for s in forgetting]))},
                           "forgetting_suites": forgetting, "methods": {}}
    for m in methods:
        suites = per_seed.get(m, {})
        if "task" not in suites or any(s not in suites for s in forgetting):
            continue
        seeds = [s for s in suites["task"] if all(s in suites[f] for f in forgetting)]
        if not seeds:
            continue
        xs = np.array([suites["task"][s] - base_task for s in seeds])
        ys = np.array([np.mean([suites[f][s] for f in forgetting]) for s in seeds])
        sd = (lambda v: float(v.std(ddof=1)) if len(v) > 1 else 0.0)
        out["methods"][m] = {"x": float(xs.mean()), "x_sd": sd(xs), "y": float(ys.mean()), "y_sd": sd(ys),
                             "seeds": len(seeds)}
    return out


def examples(items: list[Item], rows: list[dict[str, Any]], labels: dict[str, list[tuple[int, str]]],
             k: int) -> list[dict[str, Any]]:
    """The first ``k`` prompts of each suite with the seed model's and each method's first seed's answers."""
    if k <= 0:
        return []
    index = {(i.suite, i.model, i.id): i for i in items}
    out = []
    for row in rows:
        suite = row["suite"]
        models = [SEED_MODEL, *(units[0][1] for m, units in labels.items() if units)]
        ids = [i.id for i in items if i.suite == suite and i.model == SEED_MODEL][:k]
        for pid in ids:
            base = index.get((suite, SEED_MODEL, pid))
            answers = {}
            for lab in models:
                it = index.get((suite, lab, pid))
                if it is not None:
                    answers[lab] = {"answer": _clip(it.answer, 600), "value": it.value, "pass": it.passed}
            out.append({"suite": suite, "id": pid, "prompt": _clip(base.prompt if base else None, 400),
                        "answers": answers})
    return out


def _clip(text: str | None, n: int) -> str | None:
    if text is None:
        return None
    text = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", text)  # model output: no terminal or markdown control bytes
    return text if len(text) <= n else text[:n] + " [...]"


# ---------------------------------------------------------------------------------------------
# rendering


def _f(v: float | None, signed: bool = False) -> str:
    if v is None:
        return "n/a"
    return f"{v:+.1f}" if signed else f"{v:.1f}"


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _score(s: dict[str, Any]) -> str:
    return f"{_f(s['estimate'])} [{_f(s['low'])}, {_f(s['high'])}]"


def _delta(d: dict[str, Any]) -> str:
    return f"{_f(d['estimate'], True)} [{_f(d['low'], True)}, {_f(d['high'], True)}]"


def _versus(v: dict[str, Any] | None) -> str:
    if v is None:
        return "–"
    mde = "n/a" if v.get("mde") is None else f"{v['mde']:.1f}"
    return f"{_delta(v)}, p={_p(v['p'])} ({v['test']}), MDE {mde}"


def _suite_name(row: dict[str, Any]) -> str:
    return "**task** (gain)" if row["role"] == "task" else row["suite"].replace("|", "/")


def table_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the main table: score [CI] and Δ vs the seed model per method (report.md and CLI)."""
    methods = [m["name"] for m in report["methods"]]
    seeds = {m: max((len(r["methods"][m]["seeds"]) for r in report["suites"] if m in r["methods"]), default=0)
             for m in methods}
    header = ["suite", "n", "seed model", *(f"{m} ({seeds[m]} seed{'s' if seeds[m] != 1 else ''})" for m in methods)]
    rows = []
    if not any(r["role"] == "task" for r in report["suites"]):
        rows.append(["task (gain)", "–", "not measured", *(["–"] * len(methods))])
    for r in report["suites"]:
        cells = []
        for m in methods:
            c = r["methods"].get(m)
            cells.append("–" if c is None else f"{_score(c['score'])}; Δ {_delta(c['delta'])}")
        rows.append([_suite_name(r), str(r["n"]), _score(r["seed_model"]), *cells])
    return header, rows


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _fence(text: str) -> list[str]:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + "text", text, fence]


def render_markdown(report: dict[str, Any]) -> str:
    """``report.md``: the tables, the plots, how to read them, timings and example answers."""
    methods = [m["name"] for m in report["methods"]]
    base = report.get("baseline")
    split = report.get("split") or {}
    task = report.get("task") or {}
    lines = ["# sdft compare: task gain against forgetting", "",
             f"Seed model `{report.get('model')}`; training seeds {report.get('seeds')}; rewrites sampled once "
             f"with seed {report.get('rewrite_seed')} and shared by every training seed.", ""]
    lines += [f"- **{m['name']}**: {m.get('doc', '')}" for m in report["methods"]]
    if split:
        src = (f"{split.get('eval_rows')} rows of {split.get('task_eval')}" if split.get("mode") == "given" else
               f"{split.get('eval_rows')} held-out rows ({split.get('holdout', 0):.0%} of {split.get('data')})")
        lines += ["", f"Task eval: {src}, verifier `{split.get('verifier')}`; {split.get('train_rows')} training "
                      f"rows; no row id or prompt shared."]
    if not task.get("measured"):
        lines += ["", f"**Task gain not measured**: {task.get('reason')}"]
    if report.get("unfinished"):
        lines += ["", f"**Unfinished units** (left out): {', '.join(report['unfinished'])}"]
    header, rows = table_rows(report)
    lines += ["", "## Score: mean over training seeds [95% CI]; Δ vs the seed model [95% CI]", ""]
    lines += _md_table(header, rows)
    others = [m for m in methods if m != base]
    if base and others:
        lines += ["", f"## Each method against `{base}` (paired on prompts): difference [95% CI], p, MDE", ""]
        lines += _md_table(["suite", *others], [[_suite_name(r), *(_versus((r["methods"].get(m) or {}).get(
            "vs_baseline")) for m in others)] for r in report["suites"]])
    elif not base:
        lines += ["", "No baseline method in this run: no paired tests (add `sft` to the methods)."]
    files = report.get("files") or {}
    if "pareto" in files:
        lines += ["", "## Task gain against forgetting", "", "![pareto](pareto.png)"]
    if "radar" in files:
        lines += ["", "![radar](radar.png)"]
    lines += ["", "## How to read this", ""]
    lines += [f"- {d}" for d in report["statistics"]["definitions"]]
    lines += _timings_md(report)
    lines += _examples_md(report)
    return "\n".join(lines) + "\n"


def _timings_md(report: dict[str, Any]) -> list[str]:
    t = report["timings"]
    lines = ["", "## Timings", "", "Shared stages (seconds, first run that did the work): "
             + (", ".join(f"{k} {v}" for k, v in t["stages"].items()) or "none recorded"), ""]
    rows = [[lab, str(u.get("pairs")), str(u.get("global_step")), str(u.get("train_s")),
             str(u.get("tokens_per_second")), "n/a" if u.get("final_loss") is None else f"{u['final_loss']:.4f}"]
            for lab, u in t["units"].items()]
    return lines + _md_table(["unit", "training rows", "steps", "train s", "tokens/s", "final loss"], rows)


def _examples_md(report: dict[str, Any]) -> list[str]:
    if not report.get("examples"):
        return []
    lines = ["", "## Example answers", ""]
    for ex in report["examples"]:
        lines += [f"### {ex['suite']} · probe {str(ex['id'])[:40]}", ""]
        lines += _fence(ex.get("prompt") or "")
        for lab, a in ex["answers"].items():
            verdict = "pass" if a.get("pass") else "fail" if a.get("pass") is False else f"{a.get('value'):.1f}"
            lines += ["", f"**{'seed model' if lab == SEED_MODEL else lab}** ({verdict}):", ""]
            lines += _fence(a.get("answer") or "")
        lines.append("")
    return lines


def pareto_plot(report: dict[str, Any], path: Path) -> None:
    """Task gain (x) against mean forgetting-suite score (y), one point per method with seed error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = report["pareto"]
    fig, ax = plt.subplots(figsize=(6.5, 5))
    ax.scatter([0.0], [p["seed_model"]["y"]], marker="*", s=220, color="black", zorder=3, label="seed model")
    for name, pt in p["methods"].items():
        ax.errorbar(pt["x"], pt["y"], xerr=pt["x_sd"], yerr=pt["y_sd"], fmt="o", capsize=4, label=name)
        ax.annotate(name, (pt["x"], pt["y"]), textcoords="offset points", xytext=(6, 6), fontsize=9)
    ax.axvline(0.0, color="grey", linewidth=0.8, linestyle=":")
    ax.axhline(p["seed_model"]["y"], color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("task gain over the seed model (points)")
    ax.set_ylabel(f"mean score over {len(p['forgetting_suites'])} forgetting suites (0-100)")
    ax.set_title("task gain against forgetting (error bars: sd over training seeds)", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def _save(fig: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def radar(report: dict[str, Any], path: Path) -> None:
    """The eval's radar chart (one axis per suite) with the seed model and each method's seed mean."""
    from sdft.eval.report import radar_chart

    methods = [m["name"] for m in report["methods"]]
    pseudo = {"models": [{"label": "seed model"}, *({"label": m} for m in methods)],
              "suites": [{"suite": r["suite"], "models": {
                  "seed model": {"score": r["seed_model"]["estimate"]},
                  **{m: {"score": (r["methods"].get(m) or {}).get("score", {}).get("estimate")} for m in methods}}}
                  for r in report["suites"]]}
    radar_chart(pseudo, path)


def write_report(out: Path, *, notice: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Read a compare run's files, compute the statistics and write every report file (no model loads).

    Raises:
        InputError: ``out`` is not a compare run, or its eval has not finished.
    """
    say = notice or (lambda _m: None)
    out = Path(out)
    plan = read_plan(out)
    units = read_units(out, plan)
    report = build_report(plan, units, read_answers(out / "eval" / "answers.jsonl"))
    files = {"report.md": str(out / "report.md"), "report.json": str(out / "report.json")}
    if report.get("pareto") and report["pareto"]["methods"]:
        pareto_plot(report, out / "pareto.png")
        files["pareto"] = str(out / "pareto.png")
    try:
        radar(report, out / "radar.png")
        files["radar"] = str(out / "radar.png")
    except (ImportError, KeyError, ValueError) as e:  # a chart must not cost the report
        say(f"radar.png not written ({type(e).__name__}: {e})")
    report["files"] = files
    atomic_write_text(out / "report.md", render_markdown(report))
    atomic_write_json(out / "report.json", report)
    return report
