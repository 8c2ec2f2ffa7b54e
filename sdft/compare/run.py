"""Run a comparison: task split -> shared rewrites and replay -> one unit per (method, seed) -> one eval.

Layout of ``OUT``::

    compare.json                      the plan and what happened (written at each stage, atomically)
    data/task_train.jsonl, task_eval.jsonl, split.json    the task split (see sdft.compare.split)
    data/rewrite-KEY.jsonl (+ manifest)   one rewrite per distinct rewrite setting, shared by seeds
    data/replay.jsonl (+ manifest)        self-generated replay rows, shared by every +replay unit
    units/METHOD/seed-S/unit.json     the unit's fingerprint, written when its training starts
    units/METHOD/seed-S/model/        checkpoints, final/, merged/, train_metrics.json (sdft.train)
    units/METHOD/seed-S/run.json      written last: the unit is finished
    eval/                             one `sdft eval` of the seed model and every unit (answers.jsonl, ...)
    report.md, report.json, pareto.png, radar.png

A unit is finished when its ``run.json`` exists and records the fingerprint of its current
settings (method, training config, and a hash of the exact training pairs); a rerun skips it.
A unit whose fingerprint changed is retrained from scratch; an unfinished unit resumes from its
last checkpoint. A ``kill -9`` therefore costs at most the unit in flight.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdft.compare.config import CompareConfig, Unit, eval_api, task_suite_missing
from sdft.compare.methods import Method
from sdft.compare.results import read_json
from sdft.compare.split import TaskSplit, prepare_task_split
from sdft.config import from_dict, to_dict
from sdft.errors import ConfigError, InputError
from sdft.progress import staged
from sdft.store import atomic_write_json

ProgressCb = Callable[..., None]  # on_progress(done, total, stage=..., **stats): see sdft.progress


@dataclass
class TrainingData:
    """What one method trains on (the same for each of its seeds)."""

    pairs: list[tuple[list[dict[str, str]], str]]
    provenance: dict[str, Any]

    @property
    def digest(self) -> str:
        blob = json.dumps(self.pairs, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


@dataclass
class CompareResult:
    output_dir: Path
    report: dict[str, Any]
    trained: list[str]  # labels of units trained by this call
    skipped: list[str]  # labels of units that were already finished


class _Plan:
    """``compare.json``: updated and rewritten atomically after each stage."""

    def __init__(self, cfg: CompareConfig):
        self.path = cfg.output_dir / "compare.json"
        old = read_json(self.path) or {}
        from sdft import __version__

        self.data: dict[str, Any] = {
            "kind": "sdft-compare", "version": __version__, "config": cfg.describe(),
            "units": [{"method": u.method.name, "seed": u.seed, "label": u.label,
                       "dir": str(u.dir.relative_to(cfg.output_dir))} for u in cfg.units],
            "stats": {"bootstrap": cfg.section.bootstrap, "seed": cfg.section.stats_seed,
                      "examples": cfg.section.examples},
            "timings": {}, "status": "running",
        }
        if old.get("kind") == "sdft-compare":  # what earlier runs recorded stays until this run redoes it
            self.data.update({k: old[k] for k in ("timings", "split", "shared", "eval") if k in old})
        self.save()

    def timing(self, stage: str, seconds: float, cached: bool) -> None:
        if not cached or stage not in self.data["timings"]:  # a cache hit keeps the time of the real work
            self.data["timings"][stage] = round(seconds, 2)
        self.save()

    def save(self) -> None:
        atomic_write_json(self.path, json.loads(json.dumps(self.data, default=str)))


def run_compare(cfg: CompareConfig, *, on_progress: ProgressCb | None = None,
                notice: Callable[[str], None] | None = None) -> CompareResult:
    """Train every unit that is not finished, evaluate all models once, and write the report.

    Args:
        cfg: the validated comparison.
        on_progress: ``on_progress(done, total, stage=..., **stats)`` (:mod:`sdft.progress`); stage
            is ``rewrite``, ``replay``, ``train LABEL`` or ``eval: ...``.
        notice: one-line notices.
    """
    say = notice or (lambda _m: None)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("sdft compare runs in one process (it trains its units one after another); "
                          "launch it without torchrun / accelerate")
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(cfg.output_dir):
        return _run(cfg, say, on_progress)


def _run(cfg: CompareConfig, say: Callable[[str], None], on_progress: ProgressCb | None) -> CompareResult:
    budget = cfg.train_config(cfg.methods[0], cfg.seeds[0], cfg.output_dir).max_steps
    if budget < 1 and any(m.replay for m in cfg.methods):
        say("train.max_steps is not set: +replay methods train on more rows, so for more steps than the others; "
            "set train.max_steps for an equal budget")
    plan = _Plan(cfg)
    t = time.time()
    split = prepare_task_split(cfg, say)
    plan.data["split"] = split.info
    plan.timing("split", time.time() - t, cached=False)
    sources = prepare_training_data(cfg, split, plan, say, on_progress)
    trained, skipped = [], []
    for i, unit in enumerate(cfg.units):
        say(f"unit {i + 1}/{len(cfg.units)}: {unit.label}")
        _, did_train = run_unit(cfg, unit, sources[unit.method.name], say, on_progress)
        (trained if did_train else skipped).append(unit.label)
    run_evaluation(cfg, split, plan, say, on_progress)
    plan.data["status"] = "finished"
    plan.save()
    from sdft.compare.report import write_report

    report = write_report(cfg.output_dir, notice=say)
    return CompareResult(cfg.output_dir, report, trained, skipped)


@contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """One compare process per output folder: a second one fails at once instead of mixing units.

    The lock file holds the owner's pid; a lock left by a killed process (pid gone) is taken over.

    Raises:
        InputError: another live process runs a comparison in ``out``.
    """
    lock = out / ".compare.lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or "0")
            except (OSError, ValueError):
                pid = 0
            if pid > 0 and pid != os.getpid() and _alive(pid):
                raise InputError(f"{out}: another sdft compare (pid {pid}) is running in this folder; wait for it "
                                 f"or use another --output-dir") from None
            lock.unlink(missing_ok=True)  # left behind by a killed run
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        break
    else:
        raise InputError(f"{out}: could not take the lock {lock}")
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def prepare_training_data(cfg: CompareConfig, split: TaskSplit, plan: _Plan, say: Callable[[str], None],
                          on_progress: ProgressCb | None) -> dict[str, TrainingData]:
    """Run each distinct rewrite once and the replay once (both cached), then build every method's pairs."""
    from sdft.data import DataSpec, iter_examples

    originals = [{"messages": ex.messages, "response": ex.answer}
                 for ex in iter_examples(DataSpec(path=str(split.train_file), format="messages"))]
    rewrites: dict[str, tuple[list[dict[str, Any]], dict[str, Any]]] = {}
    shared: dict[str, Any] = {"rewrites": {}, "replay": None}
    for m in cfg.methods:
        if m.answers != "rewrite":
            continue
        key = cfg.rewrite_key(m)
        if key not in rewrites:
            rewrites[key] = _rewrite(cfg, m, split, plan, say, on_progress)
            shared["rewrites"][key] = {**rewrites[key][1], "methods": []}
        shared["rewrites"][key]["methods"].append(m.name)
    replay_path = _replay(cfg, split, plan, say, on_progress) if any(m.replay for m in cfg.methods) else None
    if replay_path:
        shared["replay"] = {"output": str(replay_path)}
    plan.data["shared"] = shared
    plan.save()
    out: dict[str, TrainingData] = {}
    for m in cfg.methods:
        rows, prov = (originals, {"answers": "original"}) if m.answers == "original" else rewrites[cfg.rewrite_key(m)]
        prov = dict(prov)
        if m.replay:
            from sdft.mix import mix_replay

            # mixed with the fixed recipe seed: every training seed of a method sees the same rows
            rows, mix = mix_replay(rows, replay_path, cfg.replay_ratio(m), cfg.pipeline.seed)
            prov["replay"] = mix
            if mix["capped"]:
                say(f"{m.name}: only {mix['replay_used']} of the {mix['replay_wanted']} replay rows wanted are "
                    f"available in {replay_path}: it trains at replay share {mix['actual_ratio']:.0%}, not "
                    f"{mix['ratio']:.0%} (raise compare.replay.num or max_rounds)")
        out[m.name] = TrainingData([(r["messages"], r["response"]) for r in rows], prov)
    return out


def _rewrite(cfg: CompareConfig, m: Method, split: TaskSplit, plan: _Plan, say: Callable[[str], None],
             on_progress: ProgressCb | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from sdft.rewrite import run_rewrite
    from sdft.store import iter_kept

    rcfg = cfg.rewrite_config(m, split.train_file)
    key = cfg.rewrite_key(m)
    users = [x.name for x in cfg.methods if x.answers == "rewrite" and cfg.rewrite_key(x) == key]
    say(f"rewrite {key} for {', '.join(users)} (sampling seed {rcfg.seed}, shared by every training seed)")
    t = time.time()
    res = run_rewrite(rcfg, notice=say,
                      on_progress=staged(on_progress, "rewrite"))
    plan.timing(f"rewrite-{key}", time.time() - t, res.cached)
    rows = [{"messages": r["messages"], "response": r["response"]} for r in iter_kept(res.output)]
    man = res.manifest
    prov = {"answers": "rewrite", "output": str(res.output), "config_hash": man.get("config_hash"),
            "rows": man.get("rows"), "acceptance_rate": man.get("acceptance_rate"), "gap": man.get("gap")}
    return rows, prov


def _replay(cfg: CompareConfig, split: TaskSplit, plan: _Plan, say: Callable[[str], None],
            on_progress: ProgressCb | None) -> Path:
    if cfg.pipeline.replay:
        say(f"replay rows from {cfg.pipeline.replay}")
        return Path(cfg.pipeline.replay)
    from sdft.mix import mix_stats
    from sdft.replay import run_replay

    # enough rows for the largest mix any +replay method asks for
    num = max(mix_stats(split.train_rows, 10**9, cfg.replay_ratio(m))["replay_wanted"]
              for m in cfg.methods if m.replay)
    rcfg = cfg.replay_config(max(1, num))
    say(f"replay: {rcfg.num} self-generated rows from the seed model (shared by every +replay unit)")
    t = time.time()
    res = run_replay(rcfg, notice=say,
                     on_progress=staged(on_progress, "replay"))
    plan.timing("replay", time.time() - t, res.cached)
    return res.output


def fingerprint(m: Method, train_config: Any, data: TrainingData) -> str:
    """What makes a unit's result: the method, its training settings (seed included) and the exact pairs."""
    t = to_dict(train_config)
    for key in ("overwrite", "output_dir"):  # neither changes the trained weights
        t.pop(key, None)
    method = {k: v for k, v in m.describe().items() if k != "doc"}
    blob = json.dumps({"method": method, "train": t, "data": data.digest}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def run_unit(cfg: CompareConfig, unit: Unit, data: TrainingData, say: Callable[[str], None],
             on_progress: ProgressCb | None) -> tuple[dict[str, Any], bool]:
    """Train one unit unless it is finished with the same fingerprint.

    Returns:
        ``(run, trained)``: the unit's ``run.json`` content, and whether this call trained it.
    """
    from sdft.train import train

    run_file, intent_file = unit.dir / "run.json", unit.dir / "unit.json"
    fp = fingerprint(unit.method, cfg.train_config(unit.method, unit.seed, unit.dir / "model"), data)
    done = read_json(run_file)
    if done is not None and done.get("fingerprint") == fp and (unit.dir / str(done.get("tuned", ""))).exists():
        say(f"{unit.label}: finished earlier with the same settings: skipped")
        return done, False
    intent = read_json(intent_file)
    fresh = (intent is not None and intent.get("fingerprint") != fp) or done is not None
    if done is not None:  # a finished run of other settings: no longer this unit's result
        run_file.unlink()
    if fresh:
        say(f"{unit.label}: settings changed since the last attempt: training from scratch")
    atomic_write_json(intent_file, {"fingerprint": fp, "method": unit.method.name, "seed": unit.seed,
                                    "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
    tcfg = cfg.train_config(unit.method, unit.seed, unit.dir / "model", overwrite=fresh)
    t = time.time()
    res = train(tcfg, data.pairs, notice=say,
                on_progress=staged(on_progress, f"train {unit.label}"),
                extra_metrics={"method": unit.method.name, "compare_unit": unit.label})
    seconds = time.time() - t
    tuned = res.merged_dir or res.final_dir
    m = res.metrics
    run = {"kind": "sdft-compare-unit", "label": unit.label, "method": unit.method.name, "seed": unit.seed,
           "fingerprint": fp, "tuned": str(Path(tuned).relative_to(unit.dir)), "data": data.provenance,
           "pairs": len(data.pairs), "data_hash": data.digest,
           "train": {k: m.get(k) for k in ("global_step", "train_loss", "final_loss", "tokens_per_second",
                                           "runtime_seconds", "resumed_from", "data")},
           "timings": {"train_s": round(seconds, 2)}, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_json(run_file, json.loads(json.dumps(run, default=str)))
    return run, True


def run_evaluation(cfg: CompareConfig, split: TaskSplit, plan: _Plan, say: Callable[[str], None],
                   on_progress: ProgressCb | None) -> Any:
    """One ``run_eval`` of the seed model and every unit on the same prompts (answers cached by the eval)."""
    EvalConfig, run_eval = eval_api()
    missing = task_suite_missing()
    if missing is None and split.verifier == "none":
        missing = ("the task has no verifier (rewrite verifier none): task gain is not measured; "
                   "set compare.task_verifier")
    if missing:
        say(missing)
    tuned = [f"{u.label}={u.dir / str(read_json(u.dir / 'run.json')['tuned'])}" for u in cfg.units]
    settings = cfg.eval_settings(tuned, None if missing else split.eval_file, split.verifier)
    ecfg = from_dict(EvalConfig, settings)
    plan.data["eval"] = {"output_dir": "eval", "suites": list(ecfg.suites),
                         "task": {"measured": missing is None, "reason": missing, "verifier": split.verifier}}
    plan.save()
    t = time.time()
    report = run_eval(ecfg, notice=say,
                      on_progress=staged(on_progress, "eval"))
    plan.timing("eval", time.time() - t, cached=False)
    return report
