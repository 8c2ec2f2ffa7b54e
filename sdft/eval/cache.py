"""The answer cache: what each model generated and scored, kept across runs.

``OUTPUT_DIR/generations/<label>.jsonl`` holds one row per generated answer and
``<label>.scores.jsonl`` one row per likelihood score, both append-only and keyed by a hash of
everything that determines the result (the model's weights fingerprint, suite, probe id, prompt,
budget; for scores also the scored text). A crashed, extended or re-gated run therefore only
generates what is missing, and a changed model, prompt or budget never reuses a stale answer. A
torn last line (a crash mid-write) is ignored: it was the group in flight.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from sdft.data import iter_json_lines

#: The files this module writes per model label under ``generations/`` (``--overwrite`` deletes only these).
CACHE_FILES = ("{label}.jsonl", "{label}.scores.jsonl", "{label}.drift-scores.json")  # the last: the old format


def fingerprint(model_path: str) -> str:
    """Identity of a model's weights: its path plus the names, sizes and mtimes of its weight files."""
    p = Path(model_path)
    parts = [str(p.resolve()) if p.exists() else model_path]
    if p.is_dir():
        for f in sorted(p.iterdir()):
            if f.suffix in (".safetensors", ".bin", ".json", ".gguf"):
                st = f.stat()
                parts.append(f"{f.name}:{st.st_size}:{int(st.st_mtime)}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def cache_key(*parts: Any) -> str:
    """A short hash of JSON-able parts."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


class KeyedLog:
    """An append-only JSONL file of rows that each carry a ``key``; the last row of a key wins."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: dict[str, dict[str, Any]] = {}
        if path.is_file():
            # a torn line from a crash mid-write is skipped: its answer is generated again
            for _, row in iter_json_lines(path, skip_damaged=True):
                if isinstance(row.get("key"), str):
                    self.rows[row["key"]] = row

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def __getitem__(self, key: str) -> dict[str, Any]:
        return self.rows[key]

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Add rows (each with a ``key``) and make them durable before returning."""
        if not rows:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+b") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell():  # after a torn last line, start on a fresh one
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    fh.write(b"\n")
            fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        self.rows.update((r["key"], r) for r in rows)


def clear(gens_dir: Path, labels: list[str]) -> None:
    """Delete the cache files (:data:`CACHE_FILES`) of the models ``labels`` in ``gens_dir``, nothing else."""
    for label in labels:
        for name in CACHE_FILES:
            f = gens_dir / name.format(label=label)
            if f.is_file():
                f.unlink()
