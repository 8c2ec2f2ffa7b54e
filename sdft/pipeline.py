"""The end-to-end recipe: (rewrite ->) train (-> eval), as one typed config.

``method: sdft`` rewrites the dataset with the seed model (cached: a rerun with the same
rewrite config reuses the output) and trains on the kept answers; ``method: sft`` trains on
the original answers (the baseline). ``replay`` mixes self-generated replay rows in at
``replay_ratio``. Every problem in a recipe (unknown keys, wrong types, a dataset lacking the
needed fields, LoRA targets the model lacks) is reported at once, before any model loads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdft import dist
from sdft.config import from_dict, to_dict
from sdft.data import FORMATS, DataSpec, iter_examples
from sdft.errors import ConfigError, InputError
from sdft.models import DEFAULT_MODEL, is_local_model_dir
from sdft.store import atomic_write_json, iter_kept

# keys of the rewrite/train sections the pipeline fills in itself
_REWRITE_OWNED = ("input", "output", "model", "data_format", "prompt_field", "response_field", "split", "limit")
_TRAIN_OWNED = ("model", "output_dir", "seed")


@dataclass
class DataSection:
    """Where the task data comes from (a recipe's ``data`` section)."""

    path: str = field(metadata={"help": "file, save_to_disk folder, Hub name, or example:arith"})
    format: str = field(default="auto", metadata={"help": f"auto | {' | '.join(FORMATS)}"})
    prompt_field: str | None = field(default=None, metadata={"help": "prompt column (prompt format)"})
    response_field: str | None = field(default=None, metadata={"help": "answer column (prompt format)"})
    split: str = field(default="train", metadata={"help": "split of a Hub / DatasetDict dataset"})
    limit: int | None = field(default=None, metadata={"help": "only the first N rows"})
    name: str | None = field(default=None, metadata={"help": "Hub dataset configuration (e.g. main)"})

    def spec(self) -> DataSpec:
        return DataSpec(path=self.path, format=self.format, prompt_field=self.prompt_field,
                        response_field=self.response_field, split=self.split, limit=self.limit, name=self.name)


@dataclass
class PipelineConfig:
    """A whole run: seed model, data, method, rewrite and train settings, replay, eval."""

    data: DataSection = field(metadata={"help": "the task dataset"})
    model: str = field(default=DEFAULT_MODEL, metadata={"help": "seed model (rewrites with it, trains it)"})
    method: str = field(default="sdft", metadata={"help": "sdft (rewrite, then train) | sft (train on originals)"})
    output_dir: str = field(default="runs/sdft", metadata={"help": "everything of this run goes here"})
    rewrite_model: str | None = field(default=None, metadata={"help": "model that rewrites (default: model)"})
    rewrite: dict = field(default_factory=dict, metadata={"help": "sdft rewrite settings (RewriteConfig fields)"})
    train: dict = field(default_factory=dict, metadata={"help": "training settings (TrainConfig fields)"})
    replay: str | None = field(default=None, metadata={"help": "a finished `sdft replay` output to mix in"})
    replay_ratio: float = field(default=0.0, metadata={"help": "share of replay rows in the training mix"})
    seed: int = field(default=0, metadata={"help": "seed for rewrite sampling, data order and mixing"})
    ask: str | None = field(default=None, metadata={"help": "after training, ask the merged model this question"})
    eval: dict | None = field(default=None, metadata={"help": "run `sdft eval` after training (EvalConfig fields)"})

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.method not in ("sdft", "sft"):
            problems.append(f"method must be sdft or sft, got '{self.method}'")
        if not 0 <= self.replay_ratio < 1:
            problems.append(f"replay_ratio must be in [0, 1), got {self.replay_ratio}")
        if self.replay_ratio > 0 and not self.replay:
            problems.append("replay_ratio > 0 needs replay: PATH (make one with `sdft replay`)")
        if self.replay and not Path(self.replay).exists():
            problems.append(f"replay: file not found: {self.replay}")
        for key in _REWRITE_OWNED:
            if key in self.rewrite:
                problems.append(f"rewrite.{key}: set by the pipeline (use data.* / model / rewrite_model)")
        for key in _TRAIN_OWNED:
            if key in self.train:
                problems.append(f"train.{key}: set by the pipeline (use model / output_dir / seed)")
        try:
            self.rewrite_config()
        except ConfigError as e:
            problems.extend(f"rewrite.{p}" if not p.startswith("rewrite") else p for p in e.problems)
        try:
            self.train_config()
        except ConfigError as e:
            problems.extend(f"train.{p}" for p in e.problems)
        problems.extend(self._check_data())
        if self.eval is not None:
            from sdft.eval.report import EvalConfig

            try:  # the tuned model does not exist yet: validate the section's own keys and values
                from_dict(EvalConfig, {"base": self.model, **self.eval})
            except ConfigError as e:
                problems.extend(f"eval.{p}" for p in e.problems)
            for key in ("base", "tuned", "output_dir"):
                if key in self.eval:
                    problems.append(f"eval.{key}: set by the pipeline (the seed model, this run's model, OUT/eval)")
        problems.extend(self._check_lora())
        if problems:
            raise ConfigError(problems)

    # -- derived configs -----------------------------------------------------------------------

    @property
    def rewrite_output(self) -> Path:
        return Path(self.output_dir) / "rewrite.jsonl"

    def rewrite_config(self) -> Any:
        from sdft.rewrite import RewriteConfig

        d = self.data
        base = {"input": d.path, "output": str(self.rewrite_output), "model": self.rewrite_model or self.model,
                "data_format": d.format, "prompt_field": d.prompt_field, "response_field": d.response_field,
                "split": d.split, "limit": d.limit, "seed": self.seed}
        return from_dict(RewriteConfig, {**base, **{k: v for k, v in self.rewrite.items() if k not in _REWRITE_OWNED}})

    def train_config(self) -> Any:
        from sdft.train import TrainConfig

        base = {"model": self.model, "output_dir": str(Path(self.output_dir) / "model"), "seed": self.seed}
        return from_dict(TrainConfig, {**base, **{k: v for k, v in self.train.items() if k not in _TRAIN_OWNED}})

    def _check_data(self) -> list[str]:
        """Read the first rows of a local dataset: missing fields fail now, not after an hour."""
        from sdft.data import resolve_data_path

        try:
            local = Path(resolve_data_path(self.data.path)).exists()
        except InputError as e:
            return [f"data.path: {e}"]
        if not local:
            from sdft.data import looks_like_path

            if looks_like_path(self.data.path):
                return [f"data.path: no such file or directory: {self.data.path}"]
            return []  # a Hub dataset: checked when loaded
        try:
            spec = DataSpec(**{**self.data.spec().__dict__, "limit": min(self.data.limit or 16, 16)})
            for _ in iter_examples(spec):
                pass
        except InputError as e:
            return [f"data: {e}"]
        return []

    def _check_lora(self) -> list[str]:
        tc = self.train
        if tc.get("finetune", "lora") != "lora":
            return []
        from sdft.models import ALIASES, sdft_home

        folder = sdft_home() / "models" / self.model if self.model in ALIASES else Path(self.model)
        if not is_local_model_dir(folder) or not (folder / "config.json").exists():
            return []  # not materialised yet / a Hub id: train() checks before loading weights
        from sdft.train import TrainConfig, check_lora_targets

        targets = tc.get("lora_target_modules") or TrainConfig().lora_target_modules
        if isinstance(targets, str):
            targets = [t.strip() for t in targets.split(",")]
        try:
            return check_lora_targets(str(folder), list(targets))
        except Exception as e:  # an unreadable config is reported, not fatal to validation
            return [f"model: could not read {folder}/config.json ({e})"]


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


def run_pipeline(cfg: PipelineConfig, *, on_progress: Callable[[str, int, int | None, dict[str, Any]], None] | None
                 = None, notice: Callable[[str], None] | None = None) -> PipelineResult:
    """Run rewrite (sdft only; cached), training, and the optional ask/eval steps.

    A failed eval gate does not raise here (the model and report are kept either way): pass
    ``result.eval_report`` to :func:`sdft.eval.report.check_gate` to turn it into exit code 3.

    Args:
        cfg: the validated pipeline config.
        on_progress: ``on_progress(stage, done, total, stats)`` with stage "rewrite" or "train".
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
        res = run_rewrite(cfg.rewrite_config(), notice=say,
                          on_progress=(lambda d, n, **k: on_progress("rewrite", d, n, k)) if on_progress else None)
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
                 on_progress=(lambda s, n, **k: on_progress("train", s, n, k)) if on_progress else None,
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

        engine = load_engine(str(tres.merged_dir), cfg.rewrite.get("backend", "auto"),
                             EngineOptions(kv_cache_gib=0.5), notice=say)
        try:
            gen = engine.generate([[{"role": "user", "content": cfg.ask}]], SamplingConfig(max_new_tokens=256))
            answer = gen[0].completions[0].text
        finally:
            engine.close()
        manifest["ask"] = {"question": cfg.ask, "answer": answer, "backend": engine.name}

    if cfg.eval is not None:
        from sdft.eval.report import EvalConfig, run_eval

        tuned = str(tres.merged_dir or tres.final_dir)
        ecfg = from_dict(EvalConfig, {"base": cfg.model, "tuned": [f"{cfg.method}={tuned}"],
                                      "output_dir": str(out / "eval"), **cfg.eval})
        report = run_eval(ecfg, notice=say)
        manifest["eval"] = {"output_dir": str(out / "eval"), "report": report.path,
                            "gate_failures": report.gate_failures}
    manifest["timings"] = timings
    atomic_write_json(out / "run.json", json.loads(json.dumps(manifest, default=str)))
    return PipelineResult(out, rewrite_out, tres.final_dir, tres.merged_dir, manifest, answer, report)
