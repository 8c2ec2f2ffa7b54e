"""Read a compare run's files: the plan (``compare.json``), each unit's ``run.json`` and the eval answers.

:func:`read_answers` is the only code that reads ``eval/answers.jsonl``: the rest of the report
works on :class:`Item` s, so a change of the eval's per-item format touches one function.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdft.data import iter_json_lines
from sdft.errors import InputError


@dataclass(frozen=True)
class Item:
    """One model's answer to one probe, scored on the suite's 0-100 scale (higher is better)."""

    model: str
    suite: str
    id: str
    value: float
    prompt: str | None = None
    answer: str | None = None
    passed: bool | None = None


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``; None when missing or unreadable (a file from a killed run)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _value(row: dict[str, Any], where: str) -> float | None:
    """The item's score: ``value`` when the eval writes one, else 100/0 from ``pass``; None to skip."""
    v = row.get("value")
    if v is not None:
        number = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if not number or not -1e-9 <= v <= 100 + 1e-9:
            raise InputError(f"{where}: 'value' must be a score in [0, 100], got {v!r}")
        return float(v)
    p = row.get("pass")
    if isinstance(p, bool):
        return 100.0 if p else 0.0
    return None  # e.g. drift rows before the eval writes per-prompt values: no per-item score to pair


def read_answers(path: Path) -> list[Item]:
    """Every scored item of an ``answers.jsonl`` written by ``sdft eval``.

    Rows ``{"model", "suite", "id", "pass", "value", "prompt", "answer", ...}``: ``value`` is the
    item's score on the suite's 0-100 scale when present; otherwise it is 100/0 from ``pass``,
    and rows with neither are skipped.

    Raises:
        InputError: the file is missing, a line is not a JSON object, a field has the wrong type,
            or a (model, suite, id) appears twice.
    """
    if not path.is_file():
        raise InputError(f"{path}: not found: the eval of this compare run has not finished (rerun sdft compare)")
    items: list[Item] = []
    seen: set[tuple[str, str, str]] = set()
    for lineno, row in iter_json_lines(path, fix="the file is damaged: rerun sdft compare to redo the eval"):
        where = f"{path}: line {lineno}"
        model, suite, rid = row.get("model"), row.get("suite"), row.get("id")
        if not (isinstance(model, str) and isinstance(suite, str) and isinstance(rid, (str, int))):
            raise InputError(f"{where}: expected string fields model, suite and id")
        value = _value(row, where)
        if value is None:
            continue
        key = (model, suite, str(rid))
        if key in seen:
            raise InputError(f"{where}: model '{model}', suite '{suite}', id '{rid}' appears twice")
        seen.add(key)
        prompt, answer = row.get("prompt"), row.get("answer")
        items.append(Item(model, suite, str(rid), value, prompt if isinstance(prompt, str) else None,
                          answer if isinstance(answer, str) else None,
                          row["pass"] if isinstance(row.get("pass"), bool) else None))
    return items


def read_plan(out: Path) -> dict[str, Any]:
    """``OUT/compare.json``, the record of what a compare run planned and did.

    Raises:
        InputError: the folder holds no compare run.
    """
    path = out / "compare.json"
    plan = read_json(path)
    if plan is None or plan.get("kind") != "sdft-compare":
        raise InputError(f"{out}: no compare run here (compare.json missing or unreadable); "
                         f"pass the output folder of `sdft compare`")
    cfg, units = plan.get("config"), plan.get("units")
    methods = cfg.get("methods") if isinstance(cfg, dict) else None
    if not (isinstance(methods, list) and all(isinstance(m, dict) and isinstance(m.get("name"), str)
                                              for m in methods)):
        raise InputError(f"{path}: config.methods must be a list of {{name, ...}} objects")
    if not (isinstance(units, list) and all(
            isinstance(u, dict) and isinstance(u.get("method"), str) and isinstance(u.get("label"), str)
            and isinstance(u.get("dir"), str) and isinstance(u.get("seed"), int) for u in units)):
        raise InputError(f"{path}: units must be a list of {{method, seed, label, dir}} objects")
    for key in ("stats", "eval", "timings"):
        if not isinstance(plan.get(key, {}), dict):
            raise InputError(f"{path}: {key} must be an object")
    st = plan.get("stats", {})
    for key, lo, hi in (("bootstrap", 100, 1_000_000), ("seed", 0, 2**63 - 1), ("examples", 0, 50)):
        v = st.get(key, lo)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise InputError(f"{path}: stats.{key} must be an integer in [{lo}, {hi}], got {v!r}")
    return plan


def read_units(out: Path, plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``label -> run.json`` of every finished unit the plan lists (unfinished ones are left out)."""
    done = {}
    for u in plan.get("units", []):
        run = read_json(out / str(u.get("dir", "")) / "run.json")
        if run is not None and "label" in u:
            done[u["label"]] = run
    return done
