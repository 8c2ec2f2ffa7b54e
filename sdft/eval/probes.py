"""The one probe loader every suite uses: rows from :mod:`sdft.data`, one probe per row.

Files are read by :func:`sdft.data.iter_located`, sdft's one reader (JSONL, JSON, CSV, Parquet, a ``save_to_disk``
folder), so a bad probe file fails with the same one-line errors as a bad training file,
naming the file, the line or row and the field. Probe sets of any size stream through: with
``limit`` the file is read only as far as needed. Ids are the rows' own ``id`` column (else
the row number) and are made unique (``-2``, ``-3``, ... on repeats) because answers, caches
and the per-item results are joined on them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from sdft.errors import InputError

if TYPE_CHECKING:
    from sdft.eval.base import Probe

MakeProbe = Callable[[dict[str, Any], int, str], "Probe | None"]  # (row, index, where) -> probe or skip


def iter_rows(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(row_index, row)`` of a probe file, through the same reader as the task data."""
    return ((index, row) for index, row, _ in _located(path))


def _located(path: str) -> Iterator[tuple[int, dict[str, Any], str]]:
    """``(row_index, row, "FILE: row N (line L)")``: :func:`sdft.data.iter_located`, the one reader."""
    from sdft.data import DataSpec, iter_located

    return ((index, row, f"{path}: {where}") for index, row, where in iter_located(DataSpec(path=path)))


def load_probes(path: str, make: MakeProbe, limit: int | None = None,
                rows: Iterable[tuple[int, dict[str, Any]]] | None = None) -> list[Probe]:
    """Every probe ``make`` builds from the rows of ``path`` (the first ``limit`` when given).

    ``rows`` replaces reading ``path`` (data a package already parsed); ``path`` still names
    the source in errors.

    Raises:
        InputError: unreadable file, a bad row (from ``make``), or no usable row at all.
    """
    probes: list[Probe] = []
    seen: dict[str, int] = {}
    located = _located(path) if rows is None else ((i, row, f"{path}: row {i + 1}") for i, row in rows)
    for index, row, where in located:
        if limit is not None and len(probes) >= limit:
            break
        probe = make(row, index, where)
        if probe is None:
            continue
        count = seen[probe.id] = seen.get(probe.id, 0) + 1
        if count > 1:
            probe.id = f"{probe.id}-{count}"
        probes.append(probe)
    if not probes:
        raise InputError(f"{path}: no usable probes (the file is empty or every row was filtered out)")
    return probes


def prompt_text(row: dict[str, Any], fields: tuple[str, ...], where: str) -> str:
    """The text of the first of ``fields`` present in ``row`` (stripped).

    Raises:
        InputError: no field holds text, or the first present one is not a string.
    """
    for name in fields:
        value = row.get(name)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise InputError(f"{where}: field '{name}' must be text, got {type(value).__name__}")
        if value.strip():
            return value.strip()
    raise InputError(f"{where}: no prompt text: expected one of the fields {', '.join(fields)}; "
                     f"the row has {', '.join(sorted(map(str, row))) or 'no fields'}")


def row_id(row: dict[str, Any], index: int) -> str:
    """A probe id: the row's own ``id`` (text or number) when it has one, else its row number."""
    rid = row.get("id")
    if isinstance(rid, bool) or not isinstance(rid, (str, int, float)) or str(rid).strip() == "":
        return str(index)
    return str(rid).strip()


def user_turn(text: str) -> list[dict[str, str]]:
    """A one-turn chat prompt."""
    return [{"role": "user", "content": text}]
