"""What every eval suite shares: probes, verdict aggregation, intervals and probe loading.

A suite turns a probe set into :class:`Probe` s (a chat prompt, a token budget and whatever
the judge needs), and judges each of the model's greedy answers with a pure function. The
report code generates the answers for every suite in a few batched engine calls per model, so
suites never touch an engine (except ``drift``, which scores likelihoods).
"""

from __future__ import annotations

import csv
import gzip
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from sdft.errors import InputError
from sdft.verify.base import Verdict

Z95 = 1.959963984540054  # two-sided 95% normal quantile


@dataclass
class Probe:
    """One prompt of a suite.

    Attributes:
        id: stable id within the suite (from the data's id column, else the row number).
        messages: the chat prompt sent to the model.
        max_new_tokens: the answer budget.
        meta: what the judge needs (reference answer, tests, allowed calls, ...).
    """

    id: str
    messages: list[dict[str, str]]
    max_new_tokens: int
    meta: dict[str, Any] = field(default_factory=dict)


class Suite(Protocol):
    """A probe set plus a scoring rule, scoring one model at a time.

    Attributes:
        name: suite name used on the command line and in reports.
        metric: what the score means ("refusal rate", "accuracy", ...); scores are 0-100,
            higher is better.
    """

    name: str
    metric: str

    def probes(self, path: str | None, limit: int | None) -> list[Probe]:
        """Load the probes (``path`` overrides the suite's bundled default set)."""
        ...

    def judge(self, probe: Probe, text: str, finish_reason: str) -> Verdict:
        """Whether the model's answer counts as a success for this suite."""
        ...


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``k/n`` (as fractions; (0, 1) when n is 0)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # exact ends for 0/n and n/n (the formula leaves float dust there)
    return (0.0 if k == 0 else max(0.0, centre - half)), (1.0 if k == n else min(1.0, centre + half))


def newcombe_diff(k1: int, n1: int, k2: int, n2: int, z: float = Z95) -> tuple[float, float]:
    """95% interval for ``k2/n2 - k1/n1`` (Newcombe's hybrid score method, from two Wilson intervals).

    Treats the two samples as independent, which is conservative for the paired case (same
    probes for both models): an interval that excludes 0 is a real change.
    """
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1, z)
    l2, u2 = wilson(k2, n2, z)
    d = p2 - p1
    return d - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2), d + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2)


def mean_interval(values: list[float], z: float = Z95) -> tuple[float, float, float]:
    """Mean and normal-approximation 95% interval of ``values``."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    m = sum(values) / n
    if n == 1:
        return m, m, m
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    half = z * sd / math.sqrt(n)
    return m, m - half, m + half


def asset_path(name: str) -> str:
    """Path of a probe set bundled in ``sdft/assets``."""
    return str(resources.files("sdft").joinpath("assets", name))


def read_rows(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(row_number, row)`` from a .jsonl (optionally .gz), .json (list) or .csv file.

    Raises:
        InputError: the file is missing, unreadable or a line is not a JSON object.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"probe file not found: {path}")
    if p.suffix == ".csv":
        with p.open(newline="", encoding="utf-8") as f:
            yield from enumerate(csv.DictReader(f))
        return
    if p.suffix == ".json":
        data = json.loads(p.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise InputError(f"{path}: expected a JSON list of objects")
        yield from enumerate(data)
        return
    opener = gzip.open if p.suffix == ".gz" else open  # HumanEval ships as .jsonl.gz
    with opener(p, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}, line {i + 1}: not valid JSON ({e.msg})") from e
            if not isinstance(row, dict):
                raise InputError(f"{path}, line {i + 1}: expected a JSON object")
            yield i, row


def pick_text(row: dict[str, Any], fields: tuple[str, ...], where: str) -> str:
    """The first non-empty text among ``fields`` of ``row``.

    Raises:
        InputError: none of the fields holds text (names the row and the fields tried).
    """
    for name in fields:
        value = row.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    raise InputError(f"{where}: no prompt text: expected one of the fields {', '.join(fields)}; "
                     f"the row has {', '.join(sorted(row)) or 'no fields'}")


def row_id(row: dict[str, Any], index: int) -> str:
    """A probe id: the row's own id when it has one, else its row number."""
    rid = row.get("id")
    return str(rid) if rid not in (None, "") else str(index)


def take(probes: list[Probe], limit: int | None) -> list[Probe]:
    """The first ``limit`` probes (all when limit is None): reproducible, no sampling."""
    return probes if limit is None else probes[:limit]
