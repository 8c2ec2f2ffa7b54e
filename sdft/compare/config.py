"""The compare recipe: a ``sdft train`` recipe plus a ``compare:`` and a ``methods:`` section.

The top-level keys are those of :class:`sdft.pipeline.PipelineConfig` and are shared by every
method (``method``, ``ask`` and ``output_dir`` are ignored: compare sets them per unit).
``compare:`` holds what the comparison adds (:class:`CompareSection`); ``methods:`` overrides
method presets or defines new methods (:func:`sdft.compare.methods.resolve_methods`). Every
problem of every section and method is reported at once, before any model loads.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdft.compare.methods import Method, resolve_methods, unavailable_reason
from sdft.config import deep_merge, explicit, from_dict, to_dict
from sdft.errors import ConfigError

# settings compare fills in itself (the shared task split, the unit's folder and seed)
REWRITE_OWNED = ("input", "output", "model", "data_format", "prompt_field", "response_field", "split", "limit")
TRAIN_OWNED = ("model", "output_dir", "seed")
EVAL_OWNED = ("base", "tuned", "output_dir")
MAX_SEEDS = 100


@dataclass
class CompareSection:
    """A recipe's ``compare:`` section."""

    methods: list[str] = field(default_factory=lambda: ["sft", "sdft"], metadata={
        "help": "methods to train, in report order (presets or names defined under methods:)"})
    seeds: int | list[int] = field(default=3, metadata={
        "help": "training seeds: N (0..N-1) or a list; the rewrite sampling seed stays the recipe's seed"})
    baseline: str = field(default="sft", metadata={"help": "the method every other is tested against"})
    output_dir: str | None = field(default=None, metadata={"help": "where the run goes (default runs/compare-NAME)"})
    task_eval: str | None = field(default=None, metadata={
        "help": "held-out task rows: a dataset file or Hub id (exclusive with task_holdout)"})
    task_eval_split: str = field(default="test", metadata={"help": "split of a Hub task_eval dataset"})
    task_holdout: float | None = field(default=None, metadata={
        "help": "share of the recipe's rows held out for the task eval (default 0.2 without task_eval)"})
    task_verifier: str | None = field(default=None, metadata={
        "help": "verifier scoring the task suite (default: the rewrite verifier, auto-resolved)"})
    replay: dict = field(default_factory=dict, metadata={
        "help": "ReplayConfig fields for the shared replay data (num defaults to what the mix needs)"})
    replay_ratio: float | None = field(default=None, metadata={
        "help": "share of replay rows in +replay mixes (default: the recipe's replay_ratio, else 0.2)"})
    bootstrap: int = field(default=2000, metadata={"help": "bootstrap replicates for intervals and p-values"})
    stats_seed: int = field(default=0, metadata={"help": "seed of the bootstrap"})
    examples: int = field(default=2, metadata={"help": "example answers per suite and model in report.md"})

    def __post_init__(self) -> None:
        problems = []
        seeds = self.seed_list()
        if isinstance(self.seeds, int) and not 1 <= self.seeds <= MAX_SEEDS:
            problems.append(f"seeds: must be between 1 and {MAX_SEEDS}, got {self.seeds}")
        elif not seeds:
            problems.append("seeds: empty")
        elif len(set(seeds)) != len(seeds) or any(s < 0 or s >= 2**31 for s in seeds) or len(seeds) > MAX_SEEDS:
            problems.append(f"seeds: must be distinct integers in [0, 2^31), at most {MAX_SEEDS}, got {self.seeds}")
        if self.task_eval is not None and self.task_holdout is not None:
            problems.append("task_eval and task_holdout are exclusive (a given eval file, or a share of the data)")
        if self.task_holdout is not None and not 0 < self.task_holdout < 1:
            problems.append(f"task_holdout: must be in (0, 1), got {self.task_holdout}")
        if self.replay_ratio is not None and not 0 < self.replay_ratio < 1:
            problems.append(f"replay_ratio: must be in (0, 1), got {self.replay_ratio}")
        if not 100 <= self.bootstrap <= 1_000_000:
            problems.append(f"bootstrap: must be between 100 and 1000000, got {self.bootstrap}")
        if not 0 <= self.examples <= 50:
            problems.append(f"examples: must be between 0 and 50, got {self.examples}")
        for key in ("output", "model"):
            if key in self.replay:
                problems.append(f"replay.{key}: set by compare (OUT/data/replay.jsonl, the seed model)")
        if problems:
            raise ConfigError(problems)

    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    @property
    def holdout(self) -> float | None:
        """The share held out (None when ``task_eval`` names the eval rows)."""
        return None if self.task_eval else (self.task_holdout if self.task_holdout is not None else 0.2)


@dataclass(frozen=True)
class Unit:
    """One (method, training seed) run: its own folder, trained once, skipped when finished."""

    method: Method
    seed: int
    dir: Path

    @property
    def label(self) -> str:
        """The model's name in the eval (a safe file name: no slash)."""
        return f"{self.method.name}@s{self.seed}"


@dataclass
class CompareConfig:
    """A validated comparison: the shared recipe, the compare section, methods and seeds."""

    pipeline: Any  # sdft.pipeline.PipelineConfig: the settings every method shares
    section: CompareSection
    methods: list[Method]
    output_dir: Path
    source: str
    raw: dict = field(default_factory=dict)

    @property
    def seeds(self) -> list[int]:
        return self.section.seed_list()

    @property
    def data_dir(self) -> Path:
        return self.output_dir / "data"

    @property
    def units(self) -> list[Unit]:
        return [Unit(m, s, self.output_dir / "units" / m.name / f"seed-{s}") for m in self.methods for s in self.seeds]

    @property
    def baseline(self) -> str | None:
        """The baseline method's name, when it is among the methods run."""
        return self.section.baseline if any(m.name == self.section.baseline for m in self.methods) else None

    def rewrite_settings(self, m: Method) -> dict[str, Any]:
        """The user-level rewrite settings of ``m`` (recipe section + the method's own + the fixed seed)."""
        s = deep_merge(explicit(self.pipeline.rewrite), m.rewrite)
        s.setdefault("seed", self.pipeline.seed)  # one sampling seed for every training seed
        return {k: v for k, v in s.items() if k not in REWRITE_OWNED}

    def rewrite_key(self, m: Method) -> str:
        """Methods with equal rewrite settings share one rewrite output (``OUT/data/rewrite-KEY.jsonl``)."""
        blob = json.dumps([self.pipeline.rewrite_model or self.pipeline.model, self.rewrite_settings(m)],
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]

    def rewrite_config(self, m: Method, train_file: Path) -> Any:
        from sdft.rewrite import RewriteConfig

        output = self.data_dir / f"rewrite-{self.rewrite_key(m)}.jsonl"
        # an absolute input: the rewrite's cache key holds the path, and a rerun may start elsewhere
        base = {"input": os.path.abspath(train_file), "output": str(output),
                "model": self.pipeline.rewrite_model or self.pipeline.model, "data_format": "messages",
                "split": "train"}
        return from_dict(RewriteConfig, {**base, **self.rewrite_settings(m)})

    def train_config(self, m: Method, seed: int, out_dir: Path, *, overwrite: bool = False) -> Any:
        from sdft.train import TrainConfig

        s = {k: v for k, v in deep_merge(explicit(self.pipeline.train), m.train).items() if k not in TRAIN_OWNED}
        if overwrite:
            s["overwrite"] = True
        return from_dict(TrainConfig, {**s, "model": self.pipeline.model, "output_dir": str(out_dir), "seed": seed})

    def replay_ratio(self, m: Method) -> float:
        if m.replay_ratio is not None:
            return m.replay_ratio
        if self.section.replay_ratio is not None:
            return self.section.replay_ratio
        return self.pipeline.replay_ratio if self.pipeline.replay_ratio > 0 else 0.2

    def replay_config(self, num: int) -> Any:
        from sdft.replay import ReplayConfig

        s = {"num": num, **self.section.replay}
        return from_dict(ReplayConfig, {**s, "output": str(self.data_dir / "replay.jsonl"),
                                        "model": self.pipeline.model})

    def eval_settings(self, tuned: list[str], task_file: Path | None, task_verifier: str | None) -> dict[str, Any]:
        """EvalConfig fields: the recipe's ``eval`` section, every model, and the task suite when it runs."""
        from sdft.eval import default_suites

        section = explicit(self.pipeline.eval) if self.pipeline.eval is not None else {}
        ev = {k: v for k, v in section.items() if k not in EVAL_OWNED}
        suites = list(ev.get("suites") or default_suites())
        data = dict(ev.get("data") or {})
        if task_file is not None:
            suites = ["task", *(s for s in suites if s != "task")]
            data["task"] = str(task_file)
            ev["task_verifier"] = task_verifier
        else:
            suites = [s for s in suites if s != "task"]
        return {**ev, "suites": suites, "data": data, "base": self.pipeline.model, "tuned": tuned,
                "output_dir": str(self.output_dir / "eval")}

    def describe(self) -> dict[str, Any]:
        """What compare.json records about the configuration."""
        return {"source": self.source, "recipe": self.raw, "compare": to_dict(self.section),
                "methods": [m.describe() for m in self.methods], "seeds": self.seeds, "baseline": self.baseline,
                "model": self.pipeline.model, "rewrite_seed": self.pipeline.seed}


def eval_api() -> tuple[Any, Any]:
    """``(EvalConfig, run_eval)`` wherever this sdft keeps them (``sdft.eval.run`` or ``sdft.eval.report``)."""
    try:
        from sdft.eval.run import EvalConfig, run_eval  # type: ignore[import-not-found]
    except ImportError:
        from sdft.eval.report import EvalConfig, run_eval
    return EvalConfig, run_eval


def task_suite_missing() -> str | None:
    """Why the eval cannot run the ``task`` suite in this installation (None when it can)."""
    import dataclasses

    from sdft.eval import SUITES

    EvalConfig, _ = eval_api()
    if "task" not in SUITES or "task_verifier" not in {f.name for f in dataclasses.fields(EvalConfig)}:
        return "this sdft's eval has no `task` suite yet: task gain is not measured"
    return None


def load_compare(data: dict[str, Any], *, source: str, output_dir: str | None = None) -> CompareConfig:
    """Validate a compare recipe mapping (recipe + overrides already merged).

    Args:
        data: the recipe mapping.
        source: where it came from (named in error messages).
        output_dir: the run folder when ``compare.output_dir`` is not set.

    Raises:
        ConfigError: every problem at once.
    """
    from sdft.pipeline import PipelineConfig

    data = dict(data)
    section_raw = data.pop("compare", None) or {}
    methods_raw = data.pop("methods", None) or {}
    problems: list[str] = []
    if not isinstance(section_raw, dict):
        raise ConfigError(f"compare: expected a mapping, got {section_raw!r}", source=source)
    base = {k: v for k, v in data.items() if k not in ("method", "ask")}
    pipeline = section = None
    try:
        pipeline = from_dict(PipelineConfig, {**base, "method": "sft"})
    except ConfigError as e:
        problems.extend(e.problems)
    try:
        section = from_dict(CompareSection, section_raw)
    except ConfigError as e:
        problems.extend(f"compare.{p}" for p in e.problems)
    methods: list[Method] = []
    names = section.methods if section is not None else section_raw.get("methods", CompareSection().methods)
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        try:  # checked even when another section failed: one pass shows every problem
            methods = resolve_methods(names, methods_raw)
        except ConfigError as e:
            problems.extend(e.problems)
    if problems or pipeline is None or section is None:
        raise ConfigError(problems, source=source)
    out = Path(section.output_dir or output_dir or "runs/compare")
    cfg = CompareConfig(pipeline, section, methods, out, source, raw=json.loads(json.dumps(data, default=str)))
    problems.extend(_check_methods(cfg))
    if problems:
        raise ConfigError(problems, source=source)
    return cfg


def _check_methods(cfg: CompareConfig) -> list[str]:
    """Build every method's rewrite/train/replay config and the eval config once, collecting problems."""
    problems: list[str] = []
    probe = cfg.data_dir / "task_train.jsonl"
    for m in cfg.methods:
        reason = unavailable_reason(m)
        if reason:
            problems.append(reason)
            continue
        hint = f" (the '{m.name}' preset needs {m.requires}, which this sdft lacks)" if m.requires else ""
        for key in REWRITE_OWNED:
            if key in m.rewrite:
                problems.append(f"methods.{m.name}.rewrite.{key}: set by compare")
        for key in TRAIN_OWNED:
            if key in m.train:
                problems.append(f"methods.{m.name}.train.{key}: set by compare (training seeds: compare.seeds)")
        if m.answers == "rewrite":
            try:
                cfg.rewrite_config(m, probe)
            except ConfigError as e:
                problems.extend(f"methods.{m.name}: rewrite.{p}{hint if 'unknown key' in p else ''}"
                                for p in e.problems)
        try:
            cfg.train_config(m, 0, cfg.output_dir / "units" / m.name / "seed-0" / "model")
        except ConfigError as e:
            problems.extend(f"methods.{m.name}: train.{p}{hint if 'unknown key' in p else ''}" for p in e.problems)
    if any(m.replay for m in cfg.methods) and not cfg.pipeline.replay:
        try:
            cfg.replay_config(1)
        except ConfigError as e:
            problems.extend(f"compare.replay.{p}" for p in e.problems)
    EvalConfig, _ = eval_api()
    settings = cfg.eval_settings([], None, None)
    try:
        from_dict(EvalConfig, settings)
    except ConfigError as e:
        problems.extend(f"eval.{p}" for p in e.problems)
    return problems


def load_compare_recipe(name_or_path: str | None, overrides: list[str] | tuple[str, ...] = ()
                        ) -> tuple[dict[str, Any], str, str]:
    """A compare recipe's mapping with overrides merged in, where it came from, and its short name.

    ``NAME`` is looked up as a file, then as ``recipes/compare/NAME.yaml``, then as any bundled
    ``sdft train`` recipe (which then runs with the default compare settings).
    """
    from sdft.config import load_yaml, parse_overrides
    from sdft.recipes import find_recipe, recipes_dir

    if not name_or_path:
        return parse_overrides(list(overrides)), "flags", "flags"
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        cand = recipes_dir() / "compare" / f"{name_or_path}.yaml"
        path = cand if cand.is_file() else find_recipe(name_or_path)
    return deep_merge(load_yaml(path), parse_overrides(list(overrides))), str(path), path.stem
