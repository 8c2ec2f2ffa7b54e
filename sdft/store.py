"""Resumable, append-only output: shards keyed by row id, manifest written last.

Layout for ``-o out.jsonl``::

    out.jsonl.parts/config.json     the config hash this work belongs to
    out.jsonl.parts/shard-000001.jsonl  one per finished batch, written atomically
    out.jsonl                       final output (atomic rename), rows in input order
    out.jsonl.manifest.json         written last: counts, config, versions, timings

A shard appears whole or not at all (temp file + fsync + rename), so a crash or ``kill -9``
loses at most the batch in flight; rerunning the same command skips every id already in a
shard. A different config refuses to mix with existing shards unless ``overwrite``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from sdft.errors import InputError, SdftError


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def manifest_path(output: Path) -> Path:
    return output.with_name(output.name + ".manifest.json")


def read_manifest(output: str | Path) -> dict[str, Any] | None:
    p = manifest_path(Path(output))
    if not p.exists():
        return None
    return json.loads(p.read_text(encoding="utf-8"))


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Stream the rows of a JSONL file."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


class ShardStore:
    """Append-only shard writer for one output, bound to one config hash.

    Args:
        output: the final output file path.
        config_hash: identifies the generation config; shards of another hash are refused.
        config: JSON-able config stored beside the shards (for the error message on mismatch).
        overwrite: delete existing shards/output of another config instead of refusing.
    """

    def __init__(self, output: str | Path, config_hash: str, config: dict[str, Any], *, overwrite: bool = False):
        self.output = Path(output)
        self.parts = self.output.with_name(self.output.name + ".parts")
        self.config_hash = config_hash
        if overwrite:
            self.reset()
        cfg_file = self.parts / "config.json"
        if cfg_file.exists():
            old = json.loads(cfg_file.read_text(encoding="utf-8"))
            if old.get("config_hash") != config_hash:
                changed = sorted(k for k in set(old.get("config", {})) | set(config)
                                 if old.get("config", {}).get(k) != config.get(k))
                raise InputError(
                    f"{self.parts} holds partial results of a different rewrite config "
                    f"(changed: {', '.join(changed) or 'unknown'}). Rerun with the same settings to resume, "
                    f"or pass --overwrite to discard them."
                )
        else:
            atomic_write_json(cfg_file, {"config_hash": config_hash, "config": config})
        self._next = 1 + max((int(p.stem.split("-")[1]) for p in self._shards()), default=0)

    def reset(self) -> None:
        """Remove shards, final output and manifest."""
        shutil.rmtree(self.parts, ignore_errors=True)
        self.output.unlink(missing_ok=True)
        manifest_path(self.output).unlink(missing_ok=True)

    def _shards(self) -> list[Path]:
        if not self.parts.exists():
            return []
        return sorted(self.parts.glob("shard-*.jsonl"))

    def done_ids(self) -> set[str]:
        """Ids of every row already written to a shard."""
        ids: set[str] = set()
        for shard in self._shards():
            for row in iter_jsonl(shard):
                ids.add(row["id"])
        return ids

    def iter_rows(self) -> Iterator[dict[str, Any]]:
        for shard in self._shards():
            yield from iter_jsonl(shard)

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        """Write one shard atomically."""
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        if not text:
            return
        atomic_write_text(self.parts / f"shard-{self._next:06d}.jsonl", text)
        self._next += 1

    def finalize(self, manifest: dict[str, Any], expected_ids: Iterable[str] | None = None) -> Path:
        """Concatenate shards into the output (atomic), check ids, write the manifest last.

        Args:
            manifest: JSON-able manifest; written after the output is in place.
            expected_ids: if given, every one must be present exactly once.
        """
        seen: set[str] = set()
        self.output.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.output.name}.", dir=self.output.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                for row in self.iter_rows():
                    if row["id"] in seen:
                        raise SdftError(f"internal error: row id {row['id']} appears twice in {self.parts}")
                    seen.add(row["id"])
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            if expected_ids is not None:
                missing = [i for i in expected_ids if i not in seen]
                if missing:
                    raise SdftError(f"internal error: {len(missing)} rows missing from the output (e.g. {missing[0]})")
            os.replace(tmp, self.output)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        atomic_write_json(manifest_path(self.output), manifest)
        shutil.rmtree(self.parts, ignore_errors=True)
        return self.output


def merge_outputs(inputs: list[str | Path], output: str | Path, *, expected_ids: Iterable[str] | None = None,
                  overwrite: bool = False) -> dict[str, Any]:
    """Combine finished shard outputs (``--shard I/N`` runs) into one output and manifest.

    Checks that every input is finished (has a manifest), that all share one config hash, that
    the shards ``0..N-1`` are each present once, and that every row id appears exactly once
    (and, with ``expected_ids``, that none is missing). Rows are ordered by source index, so
    the result equals a single-process run's output.

    Raises:
        InputError: a missing/unfinished input, mixed configs, a missing or repeated shard, or
            a row id missing or present twice.
    """
    output = Path(output)
    if output.exists() and not overwrite:
        raise InputError(f"{output} exists: pass --overwrite to replace it")
    manifests = []
    for p in inputs:
        m = read_manifest(p)
        if m is None:
            raise InputError(f"{p}: no manifest beside it: is that shard's run finished?")
        manifests.append(m)
    hashes = {m.get("config_hash") for m in manifests}
    if len(hashes) != 1:
        raise InputError(f"the inputs come from different configs (config hashes: {', '.join(map(str, hashes))})")
    shards = [m.get("shard") for m in manifests]
    if any(s is not None for s in shards):
        ns = {int(str(s).split("/")[1]) for s in shards if s is not None}
        got = sorted(int(str(s).split("/")[0]) for s in shards if s is not None)
        if None in shards or len(ns) != 1 or got != list(range(next(iter(ns)))):
            raise InputError(f"shards must be 0..N-1 of one N, each once; got {', '.join(map(str, shards))}")
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for p in inputs:
        for r in iter_jsonl(p):
            if r["id"] in seen:
                raise InputError(f"row id {r['id']} appears in more than one input (second time in {p})")
            seen.add(r["id"])
            rows.append(r)
    if expected_ids is not None:
        expected = list(expected_ids)
        missing = [i for i in expected if i not in seen]
        extra = len(seen) - (len(expected) - len(missing))
        if missing or extra:
            raise InputError(f"merged rows do not match the dataset: {len(missing)} missing, {extra} unexpected")
    rows.sort(key=lambda r: (r.get("index", 0), r["id"]))
    atomic_write_text(output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    merged = dict(manifests[0])
    counts: dict[str, int] = {}
    reasons: dict[str, int] = {}
    for m in manifests:
        for k, v in m.get("rows", {}).items():
            counts[k] = counts.get(k, 0) + v
        for k, v in (m.get("reasons") or {}).items():
            reasons[k] = reasons.get(k, 0) + v
    tokens = sum(m.get("generated_tokens_this_run") or 0 for m in manifests)
    secs = sum(m.get("generation_seconds_this_run") or 0 for m in manifests)
    merged.update(
        shard=None, rows=counts, reasons=dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
        acceptance_rate=counts.get("rewritten", 0) / counts["total"] if counts.get("total") else 0.0,
        generated_tokens_this_run=tokens, generation_seconds_this_run=round(secs, 3),
        tokens_per_second=round(tokens / secs, 2) if secs else None, gap=None,
        merged_from=[str(p) for p in inputs],
    )
    atomic_write_json(manifest_path(output), merged)
    return merged
