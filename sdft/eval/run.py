"""Run every suite on the base and the tuned model(s): generate, score, judge, aggregate, gate.

The same steps for every suite, driven by its declarations (:mod:`sdft.eval.base`):

1. every probe set is loaded first, so a bad probe file fails before any model loads;
2. per model (base first): aliases resolved and LoRA adapters merged (:func:`prepare_model`);
   the probes of suites the model answers itself (``answers_from = "self"``, and every suite
   for the base) are generated greedily in one batched engine call per budget, through the
   answer cache (:mod:`sdft.eval.cache`); suites with ``answers_from = "base"`` take the base's
   answers; suites with ``needs_likelihood`` get the model's NLL of each answer (cached too);
3. every answer is judged into an :class:`~sdft.eval.base.ItemResult`, aggregated per suite
   and model, and compared with the base (:mod:`sdft.eval.report` builds and writes the files);
4. ``max_drop`` turns the report into a gate (:func:`check_gate` raises
   :class:`~sdft.errors.GateFailed`, exit 3).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdft.errors import GateFailed
from sdft.eval.base import Answer, ItemResult, Probe, Suite
from sdft.eval.cache import KeyedLog, cache_key, clear, fingerprint
from sdft.eval.config import EvalConfig
from sdft.eval.registry import get_suite
from sdft.eval.report import build_report, write_report

ProgressCb = Callable[..., None]  # on_progress(done, total, stage=...): see sdft.progress
Notice = Callable[[str], None]
Answers = dict[str, dict[str, Answer]]  # suite -> probe id -> answer
#: Prompts per engine call: a crash loses at most one chunk of answers.
CHUNK = 512


@dataclass
class EvalReport:
    """What :func:`run_eval` produced.

    Attributes:
        path: the ``report.json`` written.
        data: its content.
        gate_failures: one line per (tuned model, suite) that dropped more than ``max_drop``.
    """

    path: str
    data: dict[str, Any]
    gate_failures: list[str]


def run_eval(cfg: EvalConfig, *, on_progress: ProgressCb | None = None, notice: Notice | None = None) -> EvalReport:
    """Run the suites on every model, write the report files and evaluate the gate.

    Args:
        cfg: the validated config.
        on_progress: ``on_progress(done, total, stage=...)`` (:mod:`sdft.progress`); stage is
            ``"<label>: generate"``, ``"<label>: score <suite>"`` or ``"judge <suite>"``.
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
        clear(gens_dir, [label for label, _ in cfg.models()])
    suites, probes = load_suites(cfg)
    answers: dict[str, Answers] = {}
    models: list[tuple[str, str]] = []
    for label, model in cfg.models():
        path = prepare_model(label, model, cfg.base, out / "merged", say)
        models.append((label, path))
        run = _ModelRun(cfg, label, path, gens_dir, on_progress, say)
        answers[label] = run.answer(suites, probes, answers.get("base", {}))
    results = judge_all(suites, probes, answers, on_progress)
    report = build_report(cfg, suites, probes, answers, results, models)
    failures = gate_failures(report, cfg.max_drop)
    report["gate"] = {"max_drop": cfg.max_drop, "failures": failures, "passed": not failures}
    task_verifier = getattr(suites.get("task"), "_verifier", None)
    if "code" in suites or getattr(task_verifier, "name", None) == "code":
        from sdft.sandbox import active_isolation

        report["sandbox"] = active_isolation()  # which OS isolation ran the model-written code
    write_report(out, report, probes, answers, results, say)
    return EvalReport(str(out / "report.json"), report, failures)


def load_suites(cfg: EvalConfig) -> tuple[dict[str, Suite], dict[str, list[Probe]]]:
    """Every configured suite and its probes, with the configured budget (nothing is loaded but files)."""
    suites = {name: get_suite(name, cfg) for name in cfg.suites}
    probes = {}
    for name, suite in suites.items():
        budget = cfg.budget(name)
        probes[name] = [dataclasses.replace(p, max_new_tokens=budget)
                        for p in suite.probes(cfg.data.get(name), cfg.limit)]
    return suites, probes


def prepare_model(label: str, model: str, base: str, cache: Path, notice: Notice) -> str:
    """A folder (or Hub id) the engines can load: aliases and .gguf resolved, LoRA adapters merged once.

    An adapter is merged into the base model named in its ``adapter_config.json`` when that is a
    local folder, else into ``base`` (for a tuned adapter) or that Hub id (for an adapter as the base).
    """
    from sdft.models import resolve_model

    p = Path(model).expanduser()
    if not (p.is_dir() and (p / "adapter_config.json").is_file()):
        return resolve_model(model, log=notice)
    out = cache / f"{label}-{fingerprint(str(p))}"
    if (out / "config.json").is_file():
        return str(out)
    notice(f"{label}: merging the LoRA adapter {model} into its base model (once; cached in {out})")
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter_base = json.loads((p / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if isinstance(adapter_base, str) and Path(adapter_base).is_dir():
        base_path = adapter_base
    else:
        base_path = resolve_model(base if label != "base" or not adapter_base else adapter_base, log=notice)
    merged = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    merged = PeftModel.from_pretrained(merged, str(p)).merge_and_unload()
    tok_src = str(p) if (p / "tokenizer_config.json").is_file() else base_path
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    merged.save_pretrained(str(tmp), safe_serialization=True)
    AutoTokenizer.from_pretrained(tok_src).save_pretrained(str(tmp))
    os.replace(tmp, out)
    return str(out)


class _ModelRun:
    """One model's answers: generated or cached, and scored when a suite needs likelihoods."""

    def __init__(self, cfg: EvalConfig, label: str, path: str, gens_dir: Path, on_progress: ProgressCb | None,
                 say: Notice):
        self.cfg, self.label, self.path, self.say = cfg, label, path, say
        self.on_progress = on_progress or (lambda *_a, **_k: None)
        self.fp = fingerprint(path)
        self.gens = KeyedLog(gens_dir / f"{label}.jsonl")
        self.scores = KeyedLog(gens_dir / f"{label}.scores.jsonl")
        self._engine: Any = None

    def engine(self) -> Any:
        """The engine, loaded on first use (a fully cached model loads none)."""
        if self._engine is None:
            from sdft.engines import load_engine

            self._engine = load_engine(self.path, self.cfg.backend, self.cfg.engine_options(), notice=self.say)
        return self._engine

    def answer(self, suites: dict[str, Suite], probes: dict[str, list[Probe]], base: dict[str, Answers]) -> Answers:
        """Answers by suite and probe id: its own (``answers_from == "self"``; all for the base), else the base's."""
        own = [n for n, s in suites.items() if s.answers_from == "self" or self.label == "base"]
        keyed = {n: {p.id: cache_key(self.fp, n, p.id, p.messages, p.max_new_tokens, "") for p in probes[n]}
                 for n in own}
        try:
            self.generate([(n, p, keyed[n][p.id]) for n in own for p in probes[n] if keyed[n][p.id] not in self.gens])
            answers = {n: {pid: _answer(self.gens[k]) for pid, k in keyed[n].items()} for n in own}
            for name in suites:
                if name not in answers:  # judged on the base's answers; copies, each gets its own score
                    answers[name] = {pid: dataclasses.replace(a) for pid, a in base[name].items()}
                if suites[name].needs_likelihood:
                    self.score(name, probes[name], answers[name])
            return answers
        finally:
            if self._engine is not None:
                self._engine.close()
                self._engine = None

    def generate(self, todo: list[tuple[str, Probe, str]]) -> None:
        """Generate ``(suite, probe, key)`` greedily, one batched call per budget (chunked), into the cache."""
        if not todo:
            return
        from sdft.engines import SamplingConfig

        self.say(f"{self.label}: generating {len(todo)} answers (greedy)")
        done = 0

        def tick(n: int) -> None:  # engines report increments
            nonlocal done
            done += n
            self.on_progress(done, len(todo), stage=f"{self.label}: generate")

        for budget in sorted({p.max_new_tokens for _, p, _ in todo}):
            group = [t for t in todo if t[1].max_new_tokens == budget]
            sampling = SamplingConfig(temperature=0.0, max_new_tokens=budget, n=1, seed=self.cfg.seed)
            for start in range(0, len(group), CHUNK):
                chunk = group[start:start + CHUNK]
                gens = self.engine().generate([p.messages for _, p, _ in chunk], sampling, progress=tick)
                self.gens.append([{"key": k, "suite": s, "id": p.id, "text": g.completions[0].text,
                                   "finish_reason": g.completions[0].finish_reason,
                                   "num_tokens": g.completions[0].num_tokens}
                                  for (s, p, k), g in zip(chunk, gens)])

    def score(self, suite: str, probes: list[Probe], answers: dict[str, Answer]) -> None:
        """Fill ``nll`` / ``scored_tokens`` of each answer: this model's likelihood of it (cached)."""
        keys = {p.id: cache_key("nll", self.fp, suite, p.id, p.messages, answers[p.id].text) for p in probes}
        todo = [p for p in probes if keys[p.id] not in self.scores]
        if todo:
            self.on_progress(0, len(todo), stage=f"{self.label}: score {suite}")
            got = self.engine().score([p.messages for p in todo], [answers[p.id].text for p in todo])
            self.scores.append([{"key": keys[p.id], "suite": suite, "id": p.id, "nll": s.nll,
                                 "num_tokens": s.num_tokens} for p, s in zip(todo, got)])
            self.on_progress(len(todo), len(todo), stage=f"{self.label}: score {suite}")
        for p in probes:
            row = self.scores[keys[p.id]]
            answers[p.id].nll, answers[p.id].scored_tokens = float(row["nll"]), int(row["num_tokens"])


def _answer(row: dict[str, Any]) -> Answer:
    return Answer(str(row.get("text", "")), str(row.get("finish_reason", "")), int(row.get("num_tokens") or 0))


def judge_all(suites: dict[str, Suite], probes: dict[str, list[Probe]], answers: dict[str, Answers],
              on_progress: ProgressCb | None = None) -> dict[str, dict[str, list[ItemResult]]]:
    """Every answer of every model judged: label -> suite -> item results in probe order."""
    results: dict[str, dict[str, list[ItemResult]]] = {label: {} for label in answers}
    for name, suite in suites.items():
        labels = list(answers)
        for i, label in enumerate(labels):
            if on_progress:
                on_progress(i, len(labels), stage=f"judge {name}")
            by_id = answers[label][name]
            with ThreadPoolExecutor(max(1, suite.judge_workers)) as pool:
                results[label][name] = list(pool.map(suite.result, probes[name], [by_id[p.id] for p in probes[name]]))
    return results


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
