"""Run every suite on the base and the tuned model(s) and write the forgetting report.

For each model the prompts of all suites are rendered up front and generated greedily in one
batched engine call per token budget; answers are cached in ``generations/<label>.jsonl``
(append-only, keyed by model fingerprint, suite, probe and prompt), so a crashed or extended
run only generates what is missing. Then every answer is judged, scores get 95% intervals
(Wilson for rates; normal approximation for drift), deltas get Newcombe intervals, and
``report.json``, ``report.md`` and ``radar.png`` are written atomically. ``max_drop`` turns
the report into a gate (:class:`sdft.errors.GateFailed`, exit 3).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdft.config import to_dict
from sdft.errors import ConfigError, GateFailed
from sdft.eval import SUITES, default_suites, get_suite
from sdft.eval.base import Probe, newcombe_diff, wilson
from sdft.models import DEFAULT_MODEL
from sdft.store import atomic_write_json, atomic_write_text, iter_jsonl

ProgressCb = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class EvalConfig:
    """What `sdft eval` compares, on which suites, and the gate."""

    base: str = field(default=DEFAULT_MODEL, metadata={"help": "the seed model (alias, HF folder, .gguf, Hub id)"})
    tuned: list[str] = field(default_factory=list, metadata={
        "help": "tuned models: PATH or NAME=PATH (a merged model or a LoRA adapter folder); repeatable"})
    suites: list[str] = field(default_factory=default_suites, metadata={"help": f"any of {', '.join(SUITES)}"})
    limit: int | None = field(default=None, metadata={"help": "only the first N probes of each suite"})
    data: dict = field(default_factory=dict, metadata={"help": "suite -> probe file replacing the bundled set"})
    output_dir: str = field(default="runs/eval", metadata={"help": "report.json, report.md, radar.png, answers"})
    backend: str = field(default="auto", metadata={"help": "auto | vllm | hf"})
    max_drop: dict = field(default_factory=dict, metadata={
        "help": "suite -> largest allowed drop in points (tuned below base); crossing it exits 3"})
    max_new_tokens: int | None = field(default=None, metadata={"help": "answer budget for every suite "
                                                                       "(default: each suite's own)"})
    kv_cache_gib: float = field(default=1.0, metadata={"help": "vLLM KV cache (GiB)"})
    seed: int = field(default=0, metadata={"help": "engine seed (decoding is greedy)"})
    overwrite: bool = field(default=False, metadata={"help": "discard cached answers in output_dir"})

    def __post_init__(self) -> None:
        problems: list[str] = []
        unknown = [s for s in self.suites if s not in SUITES]
        if unknown:
            problems.append(f"suites: unknown {', '.join(unknown)} (choose from {', '.join(SUITES)})")
        if not self.suites:
            problems.append("suites: empty")
        if len(set(self.suites)) != len(self.suites):
            problems.append("suites: listed twice")
        for key, value in self.max_drop.items():
            if key not in self.suites:
                problems.append(f"max_drop.{key}: not one of the suites run ({', '.join(self.suites)})")
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                problems.append(f"max_drop.{key}: must be a number of points >= 0, got {value!r}")
        for key in self.data:  # the files themselves are read (and checked) before any model loads
            if key not in SUITES:
                problems.append(f"data.{key}: not a suite ({', '.join(SUITES)})")
        if self.limit is not None and self.limit < 1:
            problems.append(f"limit must be >= 1, got {self.limit}")
        if self.backend not in ("auto", "vllm", "hf"):
            problems.append(f"backend must be auto, vllm or hf, got '{self.backend}'")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            problems.append(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        labels = ["base"]
        for item in self.tuned:
            label, path = split_tuned(item)
            if not label:
                problems.append(f"tuned: '{item}' has an empty name")
            if label in labels:
                problems.append(f"tuned: the name '{label}' is used twice (give NAME=PATH)")
            labels.append(label)
            if not (Path(path).exists() or _looks_like_hub_id(path)):
                problems.append(f"tuned: '{path}' not found")
        if self.max_drop and not self.tuned:
            problems.append("max_drop needs at least one tuned model to compare with the base")
        if problems:
            raise ConfigError(problems)

    def models(self) -> list[tuple[str, str]]:
        """``(label, model)`` for the base, then each tuned model."""
        return [("base", self.base), *(split_tuned(t) for t in self.tuned)]


def _looks_like_hub_id(s: str) -> bool:
    return s.count("/") == 1 and not s.startswith((".", "/")) and not os.path.exists(s)


def split_tuned(item: str) -> tuple[str, str]:
    """``NAME=PATH`` -> (NAME, PATH); a bare PATH gets a name from its folder (``runs/x/merged`` -> x)."""
    if "=" in item and not os.path.exists(item):
        name, path = item.split("=", 1)
        return name.strip(), path.strip()
    p = Path(item.rstrip("/"))
    name = p.parent.name if p.name in ("merged", "final", "model") and p.parent.name else p.name
    return name or "tuned", item


@dataclass
class EvalReport:
    """What :func:`run_eval` produced."""

    path: str  # report.json
    data: dict[str, Any]
    gate_failures: list[str]


def _fingerprint(model_path: str) -> str:
    """Identity of a model's weights: path plus sizes and mtimes of the weight files."""
    p = Path(model_path)
    parts = [str(p.resolve()) if p.exists() else model_path]
    if p.is_dir():
        for f in sorted(p.iterdir()):
            if f.suffix in (".safetensors", ".bin", ".json", ".gguf"):
                st = f.stat()
                parts.append(f"{f.name}:{st.st_size}:{int(st.st_mtime)}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _key(fp: str, suite: str, probe: Probe, extra: str = "") -> str:
    blob = json.dumps([fp, suite, probe.id, probe.messages, probe.max_new_tokens, extra], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def prepare_model(label: str, model: str, base: str, cache: Path, notice: Callable[[str], None]) -> str:
    """A folder (or hub id) the engines can load: aliases resolved, LoRA adapters merged once."""
    from sdft.models import resolve_model

    p = Path(model)
    if not (p.is_dir() and (p / "adapter_config.json").is_file()):
        return resolve_model(model, log=notice)
    out = cache / f"{label}-{_fingerprint(model)}"
    if (out / "config.json").is_file():
        return str(out)
    notice(f"{label}: merging the LoRA adapter {model} into its base model (once; cached in {out})")
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter_base = json.loads((p / "adapter_config.json").read_text()).get("base_model_name_or_path")
    base_path = adapter_base if adapter_base and Path(adapter_base).is_dir() else resolve_model(base, log=notice)
    merged = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    merged = PeftModel.from_pretrained(merged, str(p)).merge_and_unload()
    tok_src = str(p) if (p / "tokenizer_config.json").is_file() else base_path
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    merged.save_pretrained(str(tmp), safe_serialization=True)
    AutoTokenizer.from_pretrained(tok_src).save_pretrained(str(tmp))
    os.replace(tmp, out)
    return str(out)


def _judge_all(suite: Any, probes: list[Probe], answers: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    def one(probe: Probe) -> dict[str, Any]:
        a = answers[probe.id]
        v = suite.judge(probe, a["text"], a["finish_reason"])
        return {"id": probe.id, "pass": v.ok, "reason": v.reason, "detail": v.detail}

    # the code suite runs a sandboxed process per answer: overlap them; the rest is instant
    workers = min(4, os.cpu_count() or 1) if suite.name == "code" else 1
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, probes))


def _rate(items: list[dict[str, Any]]) -> dict[str, Any]:
    k, n = sum(i["pass"] for i in items), len(items)
    lo, hi = wilson(k, n)
    return {"n": n, "k": k, "score": 100 * k / n if n else None, "low": 100 * lo, "high": 100 * hi}


def run_eval(cfg: EvalConfig, *, on_progress: ProgressCb | None = None,
             notice: Callable[[str], None] | None = None) -> EvalReport:
    """Run the suites on every model, write the report files and evaluate the gate.

    Args:
        cfg: the validated config.
        on_progress: ``on_progress(stage, done, total)``; stage is ``"<label>: generate"`` etc.
        notice: one-line notices.

    Returns:
        The report (its ``gate_failures`` is empty when every ``max_drop`` holds); call
        :func:`check_gate` to raise :class:`GateFailed`.
    """
    say = notice or (lambda _m: None)
    out = Path(cfg.output_dir)
    gens_dir = out / "generations"
    gens_dir.mkdir(parents=True, exist_ok=True)
    if cfg.overwrite:
        for f in gens_dir.glob("*.jsonl"):
            f.unlink()
    # load every probe set first: bad probe files fail before any model loads
    suites = {name: get_suite(name) for name in cfg.suites}
    probes: dict[str, list[Probe]] = {}
    for name, suite in suites.items():
        ps = suite.probes(cfg.data.get(name), cfg.limit)
        if cfg.max_new_tokens:
            for p in ps:
                p.max_new_tokens = cfg.max_new_tokens
        probes[name] = ps
    gen_suites = [n for n in cfg.suites if n != "drift"]
    answers: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}  # label -> suite -> id -> answer
    drift_answers: dict[str, str] = {}
    drift_scores: dict[str, list[Any]] = {}
    models: list[tuple[str, str]] = []
    for label, model in cfg.models():
        path = prepare_model(label, model, cfg.base, out / "merged", say)
        models.append((label, path))
        answers[label], own, drift_scores[label] = _run_model(
            cfg, label, path, probes, gen_suites, drift_answers, gens_dir, on_progress, say)
        if label == "base":
            drift_answers = own

    report = _build_report(cfg, suites, probes, answers, drift_scores, models, on_progress)
    failures = gate_failures(report, cfg.max_drop)
    report["gate"] = {"max_drop": cfg.max_drop, "failures": failures, "passed": not failures}
    _write_items(out, suites, probes, answers, report)
    atomic_write_text(out / "report.md", render_markdown(report))
    try:
        radar_chart(report, out / "radar.png")
        report["chart"] = str(out / "radar.png")
    except ImportError:  # matplotlib is a core dependency, but a broken install should not lose the report
        say("matplotlib is not importable: radar.png not written")
    atomic_write_json(out / "report.json", report)
    return EvalReport(str(out / "report.json"), report, failures)


def _run_model(cfg: EvalConfig, label: str, path: str, probes: dict[str, list[Probe]], gen_suites: list[str],
               drift_answers: dict[str, str], gens_dir: Path, on_progress: ProgressCb | None,
               say: Callable[[str], None]) -> tuple[dict[str, Any], dict[str, str], list[Any]]:
    """Answers of one model (cached or generated), the base's drift answers, and its drift scores.

    Returns:
        ``(answers, own_drift_answers, drift_scores)``: answers by suite and probe id; the
        model's own answers to the drift prompts (only generated for the base: pass them back
        in as ``drift_answers`` for the tuned models); ``[nll, tokens]`` per drift answer.
    """
    from sdft.engines import EngineOptions, SamplingConfig, load_engine

    fp = _fingerprint(path)
    cache_file = gens_dir / f"{label}.jsonl"
    cached = {r["key"]: r for r in iter_jsonl(cache_file)} if cache_file.is_file() else {}
    with_drift = "drift" in probes
    wanted = [(s, p) for s in gen_suites for p in probes[s]]
    if with_drift and label == "base":
        wanted += [("drift", p) for p in probes["drift"]]
    todo = [(s, p, _key(fp, s, p)) for s, p in wanted if _key(fp, s, p) not in cached]
    engine = None

    def engine_() -> Any:
        nonlocal engine
        if engine is None:
            engine = load_engine(path, cfg.backend, EngineOptions(kv_cache_gib=cfg.kv_cache_gib), notice=say)
        return engine

    done = 0

    def tick(n: int) -> None:  # engines report increments
        nonlocal done
        done += n
        if on_progress:
            on_progress(f"{label}: generate", done, len(todo))

    try:
        if todo:
            say(f"{label}: generating {len(todo)} answers (greedy)")
        for budget in sorted({p.max_new_tokens for _, p, _ in todo}):
            group = [(s, p, k) for s, p, k in todo if p.max_new_tokens == budget]
            sampling = SamplingConfig(temperature=0.0, max_new_tokens=budget, n=1, seed=cfg.seed)
            gens = engine_().generate([p.messages for _, p, _ in group], sampling, progress=tick)
            rows = []
            for (s, p, k), g in zip(group, gens):
                c = g.completions[0]
                rows.append({"key": k, "suite": s, "id": p.id, "text": c.text, "finish_reason": c.finish_reason,
                             "num_tokens": c.num_tokens})
                cached[k] = rows[-1]
            # append-only: a crash loses at most the group in flight
            with cache_file.open("a", encoding="utf-8") as f:
                f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
                f.flush()
                os.fsync(f.fileno())
        answers = {s: {p.id: cached[_key(fp, s, p)] for p in probes[s]} for s in gen_suites}
        own = {p.id: cached[_key(fp, "drift", p)]["text"] for p in probes["drift"]} \
            if with_drift and label == "base" else {}
        scores: list[Any] = []
        if with_drift:
            texts = own or drift_answers
            score_key = hashlib.sha256(json.dumps([fp, texts], sort_keys=True).encode()).hexdigest()[:24]
            score_file = gens_dir / f"{label}.drift-scores.json"
            stored = json.loads(score_file.read_text()) if score_file.is_file() else {}
            if stored.get("key") == score_key:
                scores = stored["scores"]
            else:
                ps = probes["drift"]
                scores = [[s.nll, s.num_tokens] for s in engine_().score([p.messages for p in ps],
                                                                          [texts[p.id] for p in ps])]
                atomic_write_json(score_file, {"key": score_key, "scores": scores})
        return answers, own, scores
    finally:
        if engine is not None:
            engine.close()


def _build_report(cfg: EvalConfig, suites: dict[str, Any], probes: dict[str, list[Probe]],
                  answers: dict[str, Any], drift_scores: dict[str, list[Any]], models: list[tuple[str, str]],
                  on_progress: ProgressCb | None) -> dict[str, Any]:
    from sdft.engines.base import Score
    from sdft.eval.drift import summarise

    labels = [label for label, _ in models]
    table: list[dict[str, Any]] = []
    for name, suite in suites.items():
        row: dict[str, Any] = {"suite": name, "metric": suite.metric, "models": {}}
        if name == "drift":
            for label in labels:
                row["models"][label] = summarise([Score(nll, n) for nll, n in drift_scores[label]])
        else:
            for i, label in enumerate(labels):
                if on_progress:
                    on_progress(f"judge {name}", i, len(labels))
                items = _judge_all(suite, probes[name], answers[label][name])
                answers[label][name] = {it["id"]: {**answers[label][name][it["id"]], **it} for it in items}
                rates = _rate(items)
                reasons: dict[str, int] = {}
                for it in items:
                    if not it["pass"]:
                        reasons[it["reason"]] = reasons.get(it["reason"], 0) + 1
                row["models"][label] = {**rates, "failures": reasons,
                                        "truncated": sum(a["finish_reason"] == "length"
                                                         for a in answers[label][name].values())}
        base = row["models"]["base"]
        for label in labels[1:]:
            m = row["models"][label]
            if m.get("score") is None or base.get("score") is None:
                continue
            m["delta"] = m["score"] - base["score"]
            if name == "drift":  # the base's own score is the reference; the interval is the tuned one's, shifted
                m["delta_low"], m["delta_high"] = m["low"] - base["score"], m["high"] - base["score"]
            else:
                lo, hi = newcombe_diff(base["k"], base["n"], m["k"], m["n"])
                m["delta_low"], m["delta_high"] = 100 * lo, 100 * hi
        table.append(row)
    return {"kind": "sdft-eval", "config": to_dict(cfg), "models": [{"label": lab, "path": p} for lab, p in models],
            "suites": table}


def gate_failures(report: dict[str, Any], max_drop: dict[str, float]) -> list[str]:
    """Every (tuned model, suite) whose score fell below the base by more than allowed (points)."""
    failures = []
    for row in report["suites"]:
        allowed = max_drop.get(row["suite"])
        if allowed is None:
            continue
        base = row["models"]["base"]["score"]
        for label, m in row["models"].items():
            if label == "base" or m.get("score") is None or base is None:
                continue
            drop = base - m["score"]
            if drop > allowed:
                failures.append(f"{label}: {row['suite']} dropped {drop:.1f} points "
                                f"({base:.1f} -> {m['score']:.1f}; allowed {allowed:g})")
    return failures


def check_gate(report: EvalReport) -> None:
    """Raise :class:`GateFailed` (exit 3) when the report's gate failed."""
    if report.gate_failures:
        raise GateFailed("eval gate failed:\n" + "\n".join(f"  - {f}" for f in report.gate_failures)
                         + f"\nreport: {report.path}")


def _write_items(out: Path, suites: dict[str, Any], probes: dict[str, list[Probe]], answers: dict[str, Any],
                 report: dict[str, Any]) -> None:
    lines = []
    for label, per_suite in answers.items():
        for name, by_id in per_suite.items():
            for p in probes[name]:
                a = by_id[p.id]
                lines.append(json.dumps({"model": label, "suite": name, "id": p.id, "prompt": p.messages[-1]["content"],
                                         "answer": a["text"], "finish_reason": a["finish_reason"],
                                         "pass": a.get("pass"), "reason": a.get("reason"),
                                         "detail": a.get("detail")}, ensure_ascii=False))
    atomic_write_text(out / "answers.jsonl", "\n".join(lines) + ("\n" if lines else ""))


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


def render_markdown(report: dict[str, Any]) -> str:
    """``report.md``: the table with sample sizes and 95% intervals, and how to read it."""
    header, rows = table_rows(report)
    lines = ["# sdft eval: forgetting report", ""]
    lines += [f"- **{m['label']}**: `{m['path']}`" for m in report["models"]]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", "Scores are 0-100, higher is better, with 95% intervals (Wilson for rates; for drift, "
              "100·exp(-NLL) of the base model's own greedy answers, normal approximation). Δ is tuned minus base "
              "with a 95% interval (Newcombe; it treats the two samples as independent, so it is conservative): "
              "an interval that excludes 0 is a real change. Decoding is greedy for every model. Refusals are "
              "detected by keywords (see `sdft.refusal` for its false positives and negatives)."]
    gate = report.get("gate") or {}
    if gate.get("max_drop"):
        lines += ["", f"Gate (largest allowed drop, points): {gate['max_drop']} — "
                      + ("passed" if gate.get("passed") else "FAILED")]
        lines += [f"- {f}" for f in gate.get("failures", [])]
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
