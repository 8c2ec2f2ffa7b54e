"""The end-to-end recipe: (rewrite ->) train (-> eval), as one typed config.

``method: sdft`` rewrites the dataset with the seed model (cached: a rerun with the same
rewrite config reuses the output) and trains on the kept answers; ``method: sft`` trains on
the original answers (the baseline). ``replay`` mixes self-generated replay rows in at
``replay_ratio``. Every problem in a recipe (unknown keys, wrong types, and through
:func:`sdft.preflight.check` a dataset lacking the needed fields or LoRA targets the model
lacks) is reported at once, before any model loads.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sdft import dist
from sdft.config import check_literals, given, model_field, to_dict
from sdft.data import FORMATS, DataSpec, iter_examples
from sdft.errors import ConfigError
from sdft.eval.config import EvalConfig
from sdft.progress import Progress, staged
from sdft.rewrite import RewriteConfig
from sdft.store import atomic_write_json, iter_kept
from sdft.train import TrainConfig

DataFormat = Literal[("auto", *FORMATS)]  # type: ignore[valid-type]

# keys of the rewrite/train/eval sections the pipeline fills in itself
REWRITE_OWNED = ("input", "output", "model", "data_format", "prompt_field", "response_field", "split", "limit")
TRAIN_OWNED = ("model", "output_dir", "seed")
EVAL_OWNED = ("base", "tuned", "output_dir")


@dataclass
class DataSection:
    """Where the task data comes from (a recipe's ``data`` section)."""

    path: str = field(metadata={"help": "dataset: file, save_to_disk folder, Hub name, or example:arith"})
    format: DataFormat = field(default="auto", metadata={"help": "input format: auto (detected from the fields), "
                                                                 "alpaca, gsm8k, prompt or messages"})
    prompt_field: str | None = field(default=None, metadata={"help": "prompt column (prompt format)"})
    response_field: str | None = field(default=None, metadata={"help": "answer column (prompt format)"})
    split: str = field(default="train", metadata={"help": "split of a Hub / DatasetDict dataset"})
    limit: int | None = field(default=None, metadata={"help": "only the first N rows"})
    name: str | None = field(default=None, metadata={"help": "Hub dataset configuration (e.g. main)"})

    def __post_init__(self) -> None:
        problems = check_literals(self)
        if self.limit is not None and self.limit < 1:
            problems.append(f"limit must be >= 1, got {self.limit}")
        if problems:
            raise ConfigError(problems)

    def spec(self) -> DataSpec:
        return DataSpec(path=self.path, format=self.format, prompt_field=self.prompt_field,
                        response_field=self.response_field, split=self.split, limit=self.limit, name=self.name)


@dataclass
class PipelineConfig:
    """A whole run: seed model, data, method, rewrite and train settings, replay, eval.

    ``rewrite``, ``train`` and ``eval`` are the stages' own configs; the settings the pipeline
    fills in itself (the data, the model, the output paths, the seed) are refused there.
    """

    data: DataSection = field(metadata={"help": "the task dataset"})
    model: str = model_field("seed model (it rewrites the data and is fine-tuned)")
    method: Literal["sdft", "sft"] = field(default="sdft", metadata={
        "help": "sdft: rewrite the answers with the seed model, then train; sft: train on the original answers"})
    output_dir: str = field(default="runs/sdft", metadata={
        "help": "run folder: rewrite.jsonl, model/, eval/, run.json, sdft.log"})
    rewrite_model: str | None = field(default=None, metadata={"help": "model that rewrites (default: model)"})
    rewrite: RewriteConfig = field(default_factory=RewriteConfig, metadata={
        "help": "sdft rewrite settings (RewriteConfig fields)", "owned": REWRITE_OWNED,
        "owned_why": "set by the pipeline (use data.* / model / rewrite_model)"})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={
        "help": "training settings (TrainConfig fields)", "owned": TRAIN_OWNED,
        "owned_why": "set by the pipeline (use model / output_dir / seed)"})
    replay: str | None = field(default=None, metadata={"help": "a finished `sdft replay` output to mix in"})
    replay_ratio: float = field(default=0.0, metadata={"help": "share of replay rows in the training mix"})
    seed: int = field(default=0, metadata={"help": "seed for rewrite sampling, data order and mixing"})
    ask: str | None = field(default=None, metadata={"help": "after training, ask the merged model this question"})
    eval: EvalConfig | None = field(default=None, metadata={
        "help": "run `sdft eval` seed vs tuned after training (EvalConfig fields)", "owned": EVAL_OWNED,
        "owned_why": "set by the pipeline (the seed model, this run's model, OUT/eval)"})

    def __post_init__(self) -> None:
        problems: list[str] = check_literals(self)
        if not 0 <= self.replay_ratio < 1:
            problems.append(f"replay_ratio must be in [0, 1), got {self.replay_ratio}")
        if self.replay_ratio > 0 and not self.replay:
            problems.append("replay_ratio > 0 needs replay: PATH (make one with `sdft replay`)")
        try:
            self.rewrite_config()
        except ConfigError as e:
            problems.extend(p if p.startswith("rewrite") else f"rewrite.{p}" for p in e.problems)
        try:
            self.train_config()
        except ConfigError as e:
            problems.extend(f"train.{p}" for p in e.problems)
        if problems:
            raise ConfigError(problems)

    # -- derived configs -----------------------------------------------------------------------

    @property
    def rewrite_output(self) -> Path:
        return Path(self.output_dir) / "rewrite.jsonl"

    def rewrite_config(self) -> RewriteConfig:
        """The rewrite section with the pipeline's data, model, output and (unless the section sets one) seed."""
        d = self.data
        seed = self.rewrite.seed if "seed" in given(self.rewrite) else self.seed
        return dataclasses.replace(self.rewrite, input=d.path, output=str(self.rewrite_output),
                                   model=self.rewrite_model or self.model, data_format=d.format,
                                   prompt_field=d.prompt_field, response_field=d.response_field, split=d.split,
                                   limit=d.limit, seed=seed)

    def train_config(self) -> TrainConfig:
        """The train section with the pipeline's model, output folder and seed."""
        return dataclasses.replace(self.train, model=self.model, output_dir=str(Path(self.output_dir) / "model"),
                                   seed=self.seed)

    def eval_config(self, tuned: list[str]) -> EvalConfig | None:
        """The eval section comparing the seed model with ``tuned`` (None without an eval section)."""
        if self.eval is None:
            return None
        return dataclasses.replace(self.eval, base=self.model, tuned=list(tuned),
                                   output_dir=str(Path(self.output_dir) / "eval"))


@dataclass
class PipelineResult:
    output_dir: Path
    rewrite_output: Path | None
    model_dir: Path
    merged_dir: Path | None
    manifest: dict[str, Any]
    answer: str | None = None
    eval_report: Any = None  # sdft.eval.report.EvalReport when the config has an eval section


def _wait_for(output: Path, say: Callable[[str], None], poll_s: float = 2.0) -> None:
    """Block until rank 0's rewrite of ``output`` is finished: its manifest written and its parts
    folder (and with it the lock on the output) gone. torchrun stops us if rank 0 dies."""
    from sdft.store import OutputPaths

    paths = OutputPaths(output)

    def finished() -> bool:
        return paths.manifest.exists() and not paths.parts.exists()

    if not finished():
        say(f"waiting for rank 0 to finish the rewrite ({output})")
    while not finished():
        time.sleep(poll_s)


def run_pipeline(cfg: PipelineConfig, *, on_progress: Progress | None = None,
                 notice: Callable[[str], None] | None = None) -> PipelineResult:
    """Run rewrite (sdft only; cached), training, and the optional ask/eval steps.

    A failed eval gate does not raise here (the model and report are kept either way): pass
    ``result.eval_report`` to :func:`sdft.eval.report.check_gate` to turn it into exit code 3.

    Args:
        cfg: the validated pipeline config.
        on_progress: ``on_progress(done, total, stage=..., **stats)`` (:mod:`sdft.progress`); stage
            ``rewrite``, ``train`` or ``eval: ...``.
        notice: one-line notices.
    """
    say = notice or (lambda _m: None)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    manifest: dict[str, Any] = {"kind": "sdft-train", "method": cfg.method, "config": to_dict(cfg)}
    rewrite_out = None
    t = time.time()
    rank, world = dist.rank(), dist.world_size()
    if cfg.method == "sdft":
        from sdft.rewrite import run_rewrite

        if rank != 0:  # under torchrun / accelerate: rank 0 rewrites, the others then read its cached output
            _wait_for(cfg.rewrite_output, say)
        res = run_rewrite(cfg.rewrite_config(), notice=say, on_progress=staged(on_progress, "rewrite"))
        rewrite_out = res.output
        # the kept rows' records (prompt + kept answer), whatever --format the training file has
        rows = [{"messages": r["messages"], "response": r["response"]} for r in iter_kept(res.output)]
        manifest["rewrite"] = {"output": str(res.output), "cached": res.cached, "rows": res.manifest["rows"],
                               "acceptance_rate": res.manifest["acceptance_rate"], "gap": res.manifest.get("gap"),
                               "config_hash": res.manifest["config_hash"]}
    else:
        rows = [{"messages": ex.messages, "response": ex.answer} for ex in iter_examples(cfg.data.spec())]
    timings["rewrite"] = round(time.time() - t, 2)

    if cfg.replay and cfg.replay_ratio > 0:
        from sdft.mix import mix_replay

        rows, mix = mix_replay(rows, cfg.replay, cfg.replay_ratio, cfg.seed)
        manifest["replay"] = mix
        say(f"mixed in {mix['replay_used']} replay rows from {cfg.replay}")

    from sdft.train import train

    t = time.time()
    tcfg = cfg.train_config()
    tres = train(tcfg, [(r["messages"], r["response"]) for r in rows], notice=say,
                 on_progress=staged(on_progress, "train"),
                 extra_metrics={"method": cfg.method, "replay": manifest.get("replay")})
    timings["train"] = round(time.time() - t, 2)
    manifest["train"] = {k: tres.metrics.get(k) for k in ("global_step", "train_loss", "final_loss",
                                                            "tokens_per_second", "runtime_seconds", "data")}
    manifest["model_dir"] = str(tres.final_dir)
    manifest["merged_dir"] = str(tres.merged_dir) if tres.merged_dir else None
    manifest["world_size"] = world
    if rank != 0:  # only rank 0 saved the model; it alone asks, evaluates and writes run.json
        return PipelineResult(out, rewrite_out, tres.final_dir, tres.merged_dir, manifest)

    answer = report = None
    if cfg.ask and tres.merged_dir is not None:
        from sdft.engines import EngineOptions, SamplingConfig, load_engine

        # the tuned model is not on a server: asking it needs an in-process engine
        backend = "auto" if cfg.rewrite.backend == "openai" else cfg.rewrite.backend
        engine = load_engine(str(tres.merged_dir), backend, EngineOptions(kv_cache_gib=0.5), notice=say)
        try:
            gen = engine.generate([[{"role": "user", "content": cfg.ask}]], SamplingConfig(max_new_tokens=256))
            answer = gen[0].completions[0].text
        finally:
            engine.close()
        manifest["ask"] = {"question": cfg.ask, "answer": answer, "backend": engine.name}

    if cfg.eval is not None:
        from sdft.eval.run import run_eval

        tuned = str(tres.merged_dir or tres.final_dir)
        ecfg = cfg.eval_config([f"{cfg.method}={tuned}"])
        from sdft.preflight import check

        check(ecfg)  # the tuned model exists only now
        report = run_eval(ecfg, notice=say, on_progress=staged(on_progress, "eval"))
        manifest["eval"] = {"output_dir": str(out / "eval"), "report": report.path,
                            "gate_failures": report.gate_failures}
    manifest["timings"] = timings
    log_run_summary(tcfg.report_to, out, manifest, report)
    atomic_write_json(out / "run.json", json.loads(json.dumps(manifest, default=str)))
    return PipelineResult(out, rewrite_out, tres.final_dir, tres.merged_dir, manifest, answer, report)


def log_run_summary(report_to: str, out: Path, manifest: dict[str, Any], report: Any = None) -> list[str]:
    """Log what the Trainer never sees (rewrite acceptance and gap, eval scores) to the ``report_to`` trackers.

    Returns:
        The trackers logged to (none when ``report_to`` is ``none``).
    """
    from sdft.tracking import log_summary, parse_report_to

    if not parse_report_to(report_to):
        return []
    summary: dict[str, Any] = {}
    if "rewrite" in manifest:
        r = manifest["rewrite"]
        summary["rewrite"] = {"acceptance_rate": r.get("acceptance_rate"), "rows": r.get("rows"),
                              "gap": {k: v for k, v in (r.get("gap") or {}).items() if not isinstance(v, dict)}}
    if report is not None:
        summary["eval"] = eval_scores(report.data)
    if not summary:
        return []
    return log_summary(report_to, f"sdft-{manifest.get('method', 'run')}", summary, log_dir=out)


def eval_scores(report: dict[str, Any]) -> dict[str, Any]:
    """``{suite: {model: score}}`` of an eval report (for trackers)."""
    return {row["suite"]: {label: m.get("score") for label, m in (row.get("models") or {}).items()}
            for row in report.get("suites") or [] if isinstance(row, dict) and "suite" in row}
