"""``sdft rewrite --ray N``: one rewrite worker per GPU through Ray, then one merged output.

:func:`run_rewrite_ray` is the data-parallel loop of the README (``--shard i/N`` per GPU, then
``sdft merge``) run by Ray: it starts ``N`` Ray tasks, each an ordinary :func:`run_rewrite`
over shard ``i/N`` with its own engine on the GPU Ray gives it (Ray sets
``CUDA_VISIBLE_DEVICES``), and merges the parts into ``cfg.output`` with every row of the
dataset checked present exactly once. Layout for ``-o out.jsonl``::

    out.jsonl.ray/part-0.jsonl (+ .manifest.json)   shard 0/N, written by worker 0
    out.jsonl.ray/part-1.jsonl ...                  one per worker, kept so that a rerun is cheap
    out.jsonl (+ .manifest.json)                    the merged output, rows in input order

Every part is a normal resumable rewrite output: after a crash (a worker, a node or the
driver), rerunning the same command resumes each part where it stopped.

Shared filesystem: the workers read the dataset and write their parts at the paths the driver
gives them, and the driver reads the parts back to merge. On one machine that is automatic; on
a multi-node cluster the dataset, the output folder (and a local model folder or ``--template``)
must be on storage every node mounts at the same path, and the driver's working directory
should exist there too (relative paths are resolved against it on each worker). Every node needs
sdft-toolkit installed with its engine extra (``[gpu]`` on CUDA nodes).

Ray is an optional extra (``pip install 'sdft-toolkit[ray]'``) and is imported only here, only
when called.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdft.errors import ConfigError, InputError, SdftError, WorkerFailed
from sdft.rewrite import ProgressCb, RewriteConfig, RewriteResult, run_rewrite
from sdft.store import atomic_write_json, check_output, manifest_path, merge_outputs, read_manifest

# How often a worker reports progress to the driver, and how often the driver polls: frequent
# enough for a live bar, rare enough that thousands of rows a second cost nothing.
_REPORT_EVERY_S = 0.5
_POLL_S = 0.5


def require_ray() -> Any:
    """Import Ray, or raise :class:`MissingDependency` naming the ``ray`` extra to install."""
    from sdft._deps import require

    return require("ray", "sdft rewrite --ray")


def part_paths(output: str | Path, workers: int) -> list[Path]:
    """The per-worker outputs of ``-o output --ray workers``: ``<output>.ray/part-<i>.jsonl``."""
    out = Path(output)
    folder = out.with_name(out.name + ".ray")
    return [folder / f"part-{i}.jsonl" for i in range(workers)]


def run_rewrite_ray(
    cfg: RewriteConfig,
    workers: int,
    *,
    gpus_per_worker: float | None = None,
    address: str | None = None,
    on_progress: ProgressCb | None = None,
    notice: Callable[[str], None] | None = None,
) -> RewriteResult:
    """Rewrite ``cfg.input`` with ``workers`` Ray workers (one engine each) and merge; resumable.

    Args:
        cfg: the run's settings, as for :func:`sdft.rewrite.run_rewrite`; ``cfg.shard`` must be
            unset (worker ``i`` runs shard ``i/workers``).
        workers: number of workers, i.e. engines (one per GPU with the default
            ``gpus_per_worker``). More workers than free GPUs queue until one frees.
        gpus_per_worker: GPUs Ray reserves for each worker. Default: ``cfg.tensor_parallel_size``
            when the cluster has GPUs (one engine per GPU at tensor parallel 1), else 0 (CPU
            engines, or the ``openai`` backend whose server does the inference). Fractions (0.5)
            put several small engines on one GPU.
        address: the Ray cluster to join (``auto``, ``host:6379``, ``ray://host:10001``). When
            None: ``$RAY_ADDRESS`` if set, else a local cluster on this machine, started here
            and shut down at the end. An already initialised Ray (``ray.init`` called by the
            caller) is used as is and left running.
        on_progress: ``on_progress(done, total, accept_rate=..., tok_s=...)`` over all workers,
            a few times a second.
        notice: one-line notices; a worker's own notices come prefixed with ``shard i/N:``.

    Returns:
        The merged output path and manifest (its ``ray`` entry lists the workers and parts;
        ``gap`` is worker 0's distribution-gap report). ``cached=True`` when every part and the
        merged output were already complete for this config.

    Raises:
        MissingDependency: Ray is not installed (names the ``ray`` extra).
        ConfigError: ``cfg.shard`` set, fewer than one worker, or more GPUs per worker than the
            cluster has.
        InputError: bad data (checked before Ray starts) or an existing output of another run.
        WorkerFailed: one or more workers failed; the message names each shard and its error.
    """
    say = notice or (lambda _m: None)
    t0 = time.time()
    problems = []
    if cfg.shard is not None:
        problems.append("shard and ray are exclusive: --ray N runs shards 0/N .. N-1/N itself")
    if workers < 1:
        problems.append(f"ray workers must be >= 1, got {workers}")
    if gpus_per_worker is not None and gpus_per_worker < 0:
        problems.append(f"gpus_per_worker must be >= 0, got {gpus_per_worker}")
    if problems:
        raise ConfigError(problems)
    ray = require_ray()

    # Read every row id before starting Ray: a bad row fails here in seconds, and the merge
    # needs the full id list to prove that no row was lost or written twice.
    from sdft.data import iter_examples

    expected = [ex.id for ex in iter_examples(cfg.data_spec())]
    output = Path(cfg.output)
    parts = part_paths(output, workers)
    from sdft.formats import is_folder_format
    from sdft.rewrite import protected_paths

    # sdft's own files only, never an input; checked before Ray or any model starts.
    check_output(output, folder=is_folder_format(cfg.output_format), protect=protected_paths(cfg))
    old = read_manifest(output)
    # An earlier --ray output at this path is rebuilt from the parts; another sdft output needs --overwrite.
    ours = bool(old and old.get("ray"))
    if output.exists() and not ours and not cfg.overwrite:
        raise InputError(f"{output} exists and is not the output of an earlier --ray run: "
                         f"pass --overwrite to replace it, or choose another -o path")

    started_here = not ray.is_initialized()
    if started_here:
        kwargs: dict[str, Any] = {"address": address or None, "include_dashboard": False, "log_to_driver": False}
        if not (address or os.environ.get("RAY_ADDRESS")):
            # A new local cluster: every worker holds one CPU slot, so reserve at least one per
            # worker, or the workers past the core count would wait instead of running.
            kwargs["num_cpus"] = max(workers, os.cpu_count() or 1)
        ray.init(**kwargs)
    try:
        gpus = _gpus_per_worker(ray, cfg, gpus_per_worker, workers, say)
        outcomes = _run_workers(ray, cfg, parts, gpus, len(expected), on_progress, say)
        failed = {i: o for i, o in outcomes.items() if not o.get("ok")}
        if failed:
            raise _failure(failed, workers, parts)
        if (output.exists() and old and not cfg.overwrite and all(o.get("cached") for o in outcomes.values())
                and old.get("merged_from") == [str(p) for p in parts] and old.get("format") == cfg.output_format
                and old.get("config_hash") == outcomes[0]["manifest"].get("config_hash")):
            say(f"{output} is already complete for this config: reusing it (pass --overwrite to redo)")
            return RewriteResult(output, old, cached=True)
        merged = merge_outputs(parts, output, expected_ids=expected, overwrite=True, output_format=cfg.output_format,
                               protect=protected_paths(cfg))
        merged.update(
            config={**merged.get("config", {}), "output": str(cfg.output), "shard": None,
                    "gap_rows": cfg.gap_rows, "output_format": cfg.output_format},
            gap=outcomes[0]["manifest"].get("gap"),  # worker 0's sample of the rows (see _worker_cfg)
            wall_seconds_this_run=round(time.time() - t0, 3),
            ray={"workers": workers, "gpus_per_worker": gpus, "address": address or os.environ.get("RAY_ADDRESS")
                 or "local", "parts": [str(p) for p in parts],
                 "tokens_per_second_all_workers": round(sum(o["manifest"].get("tokens_per_second") or 0
                                                            for o in outcomes.values()), 2)},
        )
        atomic_write_json(manifest_path(output), merged)
        return RewriteResult(output, merged)
    finally:
        if started_here:
            ray.shutdown()


def _gpus_per_worker(ray: Any, cfg: RewriteConfig, asked: float | None, workers: int,
                     say: Callable[[str], None]) -> float:
    """GPUs to reserve per worker, checked against the cluster (an infeasible ask hangs in Ray)."""
    have = float(ray.cluster_resources().get("GPU", 0))
    if asked is None:
        asked = float(cfg.tensor_parallel_size) if have > 0 and cfg.backend != "openai" else 0.0
    if asked > have:
        raise ConfigError(f"each ray worker asks for {asked:g} GPU(s) but the cluster has {have:g}")
    if asked > 0 and workers * asked > have:
        say(f"{workers} workers × {asked:g} GPU(s) > {have:g} GPUs in the cluster: "
            f"{int(have // asked)} run at a time, the rest wait for a free GPU")
    return asked


def _worker_cfg(cfg: RewriteConfig, i: int, parts: list[Path]) -> RewriteConfig:
    """Worker ``i``'s config: shard ``i/N`` into its part file.

    Only fields outside the config hash change, so every part (and a plain single-process run
    of the same settings) shares one hash and the merge accepts them together.
    """
    return dataclasses.replace(
        cfg, shard=f"{i}/{len(parts)}", output=str(parts[i]),
        # The merge writes the whole output in the asked format; parts stay plain chat JSONL.
        output_format="messages",
        # The gap report costs a scoring pass: one worker's sample of the rows is enough.
        gap_rows=cfg.gap_rows if i == 0 else 0,
    )


def _run_workers(ray: Any, cfg: RewriteConfig, parts: list[Path], gpus: float, total: int,
                 on_progress: ProgressCb | None, say: Callable[[str], None]) -> dict[int, dict[str, Any]]:
    """Launch one Ray task per part, relay progress and notices, and collect each outcome."""
    n = len(parts)
    env = {
        # The engine in the worker process itself: vLLM's extra engine-core process buys
        # nothing inside a Ray task and is one more process to lose on a failure.
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "TOKENIZERS_PARALLELISM": "false",
    }
    if gpus == 0:
        # CPU engines: one OMP thread per worker (the worker holds one CPU slot), measured
        # fastest for small models, and N workers do not fight over the cores.
        env["OMP_NUM_THREADS"] = "1"
    tally = ray.remote(num_cpus=0)(_Tally).remote(n)
    task = ray.remote(_rewrite_part)
    cwd = os.getcwd()
    refs = {
        task.options(num_cpus=1, num_gpus=gpus, runtime_env={"env_vars": env}, name=f"sdft-rewrite-{i}of{n}",
                     # A worker whose process or node dies is started again and resumes its part;
                     # an exception in run_rewrite is returned, not raised, so it is never retried.
                     max_retries=1).remote(_worker_cfg(cfg, i, parts), i, tally, cwd): i
        for i in range(n)
    }
    outcomes: dict[int, dict[str, Any]] = {}
    shown = 0
    try:
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=_POLL_S)
            for ref in ready:
                i = refs.pop(ref)
                try:
                    outcomes[i] = ray.get(ref)
                except ray.exceptions.RayError as e:  # the worker process or its node died
                    outcomes[i] = {"ok": False, "error": f"{type(e).__name__}: {_first_line(e)}", "exit_code": 1}
            done, stats, notes = ray.get(tally.snapshot.remote(shown))
            for i, msg in notes:
                say(f"shard {i}/{n}: {msg}")
            shown += len(notes)
            if on_progress:
                on_progress(done, total, **stats)
    finally:
        # Workers still listed only after an interrupt or an error here; their finished chunks
        # stay on disk. Cleanup must not hide the exception that brought us here.
        with contextlib.suppress(Exception):
            for ref in refs:
                ray.cancel(ref, force=True)
            ray.kill(tally)
    return outcomes


def _rewrite_part(cfg: RewriteConfig, i: int, tally: Any, cwd: str) -> dict[str, Any]:
    """Ray task body: an ordinary resumable :func:`run_rewrite` of one shard.

    Errors come back as a dict rather than an exception: sdft's errors carry their exit code,
    and some cannot be rebuilt from their message alone on the driver.
    """
    if os.path.isdir(cwd):
        # Relative paths (dataset, -o, template) mean what they meant on the driver.
        os.chdir(cwd)
    last = [0.0]

    def progress(done: int, _total: int, **stats: Any) -> None:
        now = time.monotonic()
        if now - last[0] >= _REPORT_EVERY_S:
            last[0] = now
            tally.update.remote(i, done, stats)

    import ray

    try:
        result = run_rewrite(cfg, on_progress=progress, notice=lambda m: tally.notice.remote(i, m))
    except SdftError as e:  # expected failures: the message says what to fix
        return {"ok": False, "error": str(e), "exit_code": e.exit_code}
    except Exception as e:  # a bug or an engine crash: the traceback is all we have
        return {"ok": False, "error": f"{type(e).__name__}: {e}", "exit_code": 1,
                "traceback": traceback.format_exc()}
    rows = result.manifest.get("rows", {}).get("total", 0)
    # Waited on, so that the final count is in before the driver sees this task done.
    ray.get(tally.update.remote(i, rows, {}))
    return {"ok": True, "output": str(result.output), "cached": result.cached, "manifest": result.manifest}


class _Tally:
    """A small Ray actor that gathers the workers' progress and notices for the driver."""

    def __init__(self, workers: int):
        self.done = [0] * workers
        self.stats: list[dict[str, Any]] = [{} for _ in range(workers)]
        self.notes: list[tuple[int, str]] = []

    def update(self, i: int, done: int, stats: dict[str, Any]) -> None:
        self.done[i] = done
        if stats:
            self.stats[i] = stats

    def notice(self, i: int, msg: str) -> None:
        self.notes.append((i, msg))

    def snapshot(self, skip_notes: int) -> tuple[int, dict[str, Any], list[tuple[int, str]]]:
        """Rows done over all workers, merged rates, and the notices after the first ``skip_notes``."""
        done = sum(self.done)
        stats: dict[str, Any] = {}
        rated = [(d, s["accept_rate"]) for d, s in zip(self.done, self.stats, strict=True) if "accept_rate" in s]
        if rated and sum(d for d, _ in rated):
            stats["accept_rate"] = sum(d * r for d, r in rated) / sum(d for d, _ in rated)
        speeds = [s["tok_s"] for s in self.stats if "tok_s" in s]
        if speeds:
            stats["tok_s"] = sum(speeds)  # the workers generate at the same time
        return done, stats, self.notes[skip_notes:]


def _failure(failed: dict[int, dict[str, Any]], workers: int, parts: list[Path]) -> WorkerFailed:
    """One error for every failed worker, each named by its shard and part file."""
    lines = [f"{len(failed)} of {workers} ray workers failed:"]
    for i in sorted(failed):
        lines.append(f"  - shard {i}/{workers} ({parts[i]}): {failed[i]['error']}")
        if failed[i].get("traceback"):  # worker logs are not streamed to the driver: show where
            lines.extend("      " + t for t in failed[i]["traceback"].rstrip().splitlines()[-12:])
    lines.append("Finished rows of every part are saved: rerun the same command to resume.")
    codes = {int(o.get("exit_code") or 1) for o in failed.values()}
    return WorkerFailed("\n".join(lines), shards=[f"{i}/{workers}" for i in sorted(failed)],
                        exit_code=2 if codes == {2} else 1)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else repr(e)
