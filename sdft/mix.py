"""Mix replay rows into the task rows of a training run (``replay=PATH replay_ratio=0.2``).

``ratio`` is the share of replay rows in the *mixed* set: 0.2 means one row in five is a
replay row, so ``ratio / (1 - ratio) * n_task`` replay rows (rounded half up) are wanted, capped by what
the replay file has. The task rows keep their order; replay rows are spread evenly through
them (one in each of ``n_replay`` equal strata of the mixed list, at a position the seed picks
inside its stratum), so every stretch of the mixed list holds the ratio give or take one row,
and the same seed always gives the same list.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

from sdft.errors import ConfigError, InputError

#: Statuses of rows that carry a usable answer (``response``) in rewrite-format outputs.
USABLE_STATUSES = ("rewritten", "fallback")


def _check_ratio(ratio: float) -> None:
    if not 0 <= ratio < 1:
        raise ConfigError(f"replay_ratio must be in [0, 1) (the share of replay rows in the mix), got {ratio}")


def mix_stats(n_task: int, n_replay: int, ratio: float) -> dict[str, Any]:
    """How many replay rows a mix of ``n_task`` task rows at ``ratio`` uses.

    Args:
        n_task: task rows.
        n_replay: replay rows available.
        ratio: wanted share of replay rows in the mixed set, in [0, 1).

    Returns:
        ``ratio``, ``task_rows``, ``replay_available``, ``replay_wanted`` (before the cap),
        ``replay_used``, ``capped`` (True when fewer replay rows were available than wanted),
        ``total`` and ``actual_ratio`` (replay share of the mixed set).
    """
    _check_ratio(ratio)
    # Rounded half up, with a little slack for float error (0.2 / 0.8 * 100 is 25.000000000000004).
    wanted = math.floor(ratio / (1 - ratio) * n_task + 0.5 + 1e-9)
    used = min(wanted, n_replay)
    total = n_task + used
    return {"ratio": ratio, "task_rows": n_task, "replay_available": n_replay, "replay_wanted": wanted,
            "replay_used": used, "capped": used < wanted, "total": total,
            "actual_ratio": round(used / total, 6) if total else 0.0}


def mix_rows(task_rows: list, replay_rows: list, ratio: float, seed: int) -> list:
    """Interleave replay rows with task rows so that ``ratio`` of the result are replay rows.

    Args:
        task_rows: the task's training rows (kept in their order).
        replay_rows: candidate replay rows; when more are available than needed, a seeded
            sample of them is used (in their file order).
        ratio: share of replay rows in the result, in [0, 1); 0 returns ``task_rows`` unchanged.
        seed: makes the choice of replay rows and their positions reproducible.

    Returns:
        A new list of the same row objects (not copied). See :func:`mix_stats` for the counts.
    """
    stats = mix_stats(len(task_rows), len(replay_rows), ratio)
    used, total = stats["replay_used"], stats["total"]
    if used == 0:
        return list(task_rows)
    rng = random.Random(seed)
    chosen = sorted(rng.sample(range(len(replay_rows)), used)) if used < len(replay_rows) else range(used)
    picked = [replay_rows[i] for i in chosen]
    # One replay row per stratum [i*total/used, (i+1)*total/used): strata are non-empty since
    # total >= used, so positions are distinct and any window of the mix keeps the ratio +-1 row.
    positions = {rng.randrange(i * total // used, (i + 1) * total // used) for i in range(used)}
    out: list = []
    task_it, replay_it = iter(task_rows), iter(picked)
    for pos in range(total):
        out.append(next(replay_it) if pos in positions else next(task_it))
    return out


def load_replay_rows(path: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The usable rows of a replay (or rewrite) output, and its manifest.

    The records of the rows in its training output (status ``rewritten`` or ``fallback``,
    with ``messages`` and ``response``), whatever its ``--format``; filtered and surplus
    attempts are not among them.

    Raises:
        InputError: the output or its manifest is missing (the run is not finished), or damaged.
    """
    from sdft.store import iter_kept, read_manifest

    p = Path(path)
    if not p.exists():
        raise InputError(f"replay file not found: {p}")
    manifest = read_manifest(p)
    if manifest is None:
        raise InputError(f"{p}: no manifest beside it ({p}.manifest.json): is the replay run finished?")
    rows = [r for r in iter_kept(p) if r.get("status") in USABLE_STATUSES]
    return rows, manifest


def mix_replay(task_rows: list, replay_path: str | Path, ratio: float, seed: int) -> tuple[list, dict[str, Any]]:
    """Load a replay output and mix it into ``task_rows``: what the training pipeline calls.

    Args:
        task_rows: the task's training rows.
        replay_path: a finished ``sdft replay`` output (rewrite-format rows).
        ratio: share of replay rows in the mixed set, in [0, 1).
        seed: the training seed.

    Returns:
        ``(mixed_rows, stats)``; ``stats`` is :func:`mix_stats` plus ``replay`` (the path),
        ``replay_config_hash``, ``replay_kind`` and ``seed``, for the training manifest.
    """
    _check_ratio(ratio)
    rows, manifest = load_replay_rows(replay_path)
    stats = mix_stats(len(task_rows), len(rows), ratio)
    stats.update(replay=str(replay_path), replay_config_hash=manifest.get("config_hash"),
                 replay_kind=manifest.get("kind"), seed=seed)
    return mix_rows(task_rows, rows, ratio, seed), stats
