"""Outputs sdft owns: atomic files, ownership, the resumable-stage runner, readers and merge.

Layout for ``-o out.jsonl`` (docs/FORMATS.md has the row schemas)::

    out.jsonl                    training rows only (kept rows), in the chosen --format
                                 (``--format hf``: a datasets.save_to_disk folder at this path)
    out.jsonl.records.jsonl      the sdft record of each kept row: line k describes row k of out.jsonl
    out.jsonl.rejected.jsonl     the sdft record of every row not kept, with its status and reason
    out.jsonl.manifest.json      written last: counts, settings, fingerprints, and the files above
                                 with their sha256 (what marks them as sdft's own)
    out.jsonl.parts/             only while a run is unfinished:
        config.json              the fingerprint of the work in progress (settings, input, shard)
        shard-000001.jsonl       one per finished chunk of rows, written atomically
        stage-NAME/part-*.jsonl  intermediate stage caches (:meth:`StageRunner.stage_cache`)
        pending.json             during finalize: the files about to be put in place

Rules every writer here follows:

* Every file is written to a temp name in its folder, fsynced and renamed into place, with
  the mode the umask gives (never a private 0600 temp-file mode).
* sdft deletes or replaces only what it can prove it wrote: a file whose sha256 (a folder
  whose file list) matches its manifest or the pending record in its own parts folder, and
  parts folders holding sdft's ``config.json``. Anything else at an output path is refused
  (exit code 2), with ``--overwrite`` too.
* An output path that is, or is inside, or contains an input (also through a symlink or a
  hard link) is refused before any work.
* The runner fingerprints the input's content and every setting that changes rows; earlier
  results of another fingerprint are never mixed in (refused, or discarded with
  ``overwrite``), and a finished output is never cut back to fewer rows.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from sdft.data import MAX_NESTING, iter_json_lines
from sdft.errors import InputError, SdftError

#: Version of the output layout above (manifests without it are from sdft before the split
#: into training rows + records; their rows are read as they are, and never resumed).
LAYOUT = 2
#: Statuses of rows that go into the training output.
KEPT_STATUSES = ("rewritten", "fallback")

# ---------------------------------------------------------------------------------------------
# file primitives


def current_umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _temp_file(path: Path) -> tuple[int, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600: follow the umask like open() does
    return fd, tmp


def atomic_write_bytes_from(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(fh)`` on a temp file beside ``path``, fsync, and rename it into place."""
    fd, tmp = _temp_file(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder and an atomic rename."""
    atomic_write_bytes_from(Path(path), lambda fh: fh.write(text.encode("utf-8")))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def dumps_row(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False) + "\n"


#: How much deeper than in its source row a value may sit in sdft's own files (stage line ->
#: record -> extra -> field), on top of :data:`sdft.data.MAX_NESTING`.
RECORD_NESTING = 4
_DAMAGED = "the file is damaged or truncated: rerun the command that wrote it"


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Stream the JSON objects of one of sdft's own JSONL files (outputs, records, shards, caches).

    Lines are read by :func:`sdft.data.iter_json_lines`, sdft's one line reader, so a damaged
    file fails like a bad data file: ``FILE: line N: problem; expected X: what to do``.

    Raises:
        InputError: the file cannot be read, or a line that is not UTF-8 or not a JSON object
            (a damaged or truncated file); the message names the file and line.
    """
    for _, obj in iter_json_lines(path, fix=_DAMAGED, max_nesting=MAX_NESTING + RECORD_NESTING):
        yield obj


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def digest_ids(ids: Iterable[str]) -> str:
    """An order-independent digest of a set of row ids."""
    h = hashlib.sha256()
    for i in sorted(ids):
        h.update(i.encode("utf-8") + b"\n")
    return h.hexdigest()[:16]


def settings_hash(settings: dict[str, Any]) -> str:
    """The 16-hex-digit hash of a JSON-able settings dict (key order does not matter)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# fingerprints of inputs


def fingerprint_path(source: str | Path) -> dict[str, Any]:
    """A content fingerprint of an input: a file's sha256, a folder's (paths and contents).

    A source that is not on disk (a Hub dataset name) is identified by its name only.
    """
    p = Path(source)
    if p.is_file():
        return {"kind": "file", "sha256": file_sha256(p), "bytes": p.stat().st_size}
    if p.is_dir():
        h = hashlib.sha256()
        n = 0
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            h.update(str(f.relative_to(p)).encode() + b"\0" + file_sha256(f).encode() + b"\n")
            n += 1
        return {"kind": "folder", "sha256": h.hexdigest(), "files": n}
    return {"kind": "name", "name": str(source)}


def folder_listing(folder: Path) -> dict[str, int]:
    """Relative path -> size of every file under ``folder`` (what marks an output folder as ours)."""
    return {str(f.relative_to(folder)): f.stat().st_size for f in sorted(folder.rglob("*")) if f.is_file()}


def model_files(model_path: str | None) -> dict[str, int] | None:
    """Names and sizes of a local model folder's files (cheap; tells another model at one path)."""
    if not model_path or not Path(model_path).is_dir():
        return None
    return {f.name: f.stat().st_size for f in sorted(Path(model_path).iterdir()) if f.is_file()}


# ---------------------------------------------------------------------------------------------
# output paths and ownership


class OutputPaths:
    """Every path sdft writes for one ``-o OUTPUT``."""

    def __init__(self, output: str | Path):
        self.main = Path(output)
        name = self.main.name
        self.manifest = self.main.with_name(name + ".manifest.json")
        self.records = self.main.with_name(name + ".records.jsonl")
        self.rejected = self.main.with_name(name + ".rejected.jsonl")
        self.parts = self.main.with_name(name + ".parts")

    @property
    def files(self) -> dict[str, Path]:
        """The finished output's files by role (the manifest aside)."""
        return {"output": self.main, "records": self.records, "rejected": self.rejected}

    def all(self) -> list[Path]:
        return [self.main, self.records, self.rejected, self.manifest, self.parts]


def manifest_path(output: str | Path) -> Path:
    return OutputPaths(output).manifest


def read_manifest(output: str | Path) -> dict[str, Any] | None:
    """The manifest of a finished output, or None when there is none.

    Raises:
        InputError: the manifest is not valid JSON or not an sdft manifest.
    """
    p = manifest_path(output)
    if not p.is_file():
        return None
    try:
        m = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{p}: not valid JSON ({getattr(e, 'msg', e)}): the manifest is damaged; rerun the command "
                         f"that wrote {output} into a new -o path") from None
    if not isinstance(m, dict) or not str(m.get("kind", "")).startswith("sdft-"):
        raise InputError(f"{p} is not an sdft manifest (no 'kind: sdft-...'): was {output} written by sdft?")
    bad = _manifest_problem(m)
    if bad:
        raise InputError(f"{p}: {bad}: the manifest is damaged; rerun the command that wrote {output} into a new "
                         f"-o path")
    return m


def _manifest_problem(m: dict[str, Any]) -> str | None:
    """What is wrong with the shape of a parsed manifest (readers index into it), or None."""
    def counts(v: Any) -> bool:
        return isinstance(v, dict) and all(isinstance(x, int) and not isinstance(x, bool) for x in v.values())

    for key, ok in (("rows", counts), ("reasons", counts), ("filters", counts),
                    ("files", lambda v: isinstance(v, dict) and all(isinstance(x, dict) for x in v.values())),
                    ("fingerprint", lambda v: isinstance(v, dict)), ("selection", lambda v: isinstance(v, dict)),
                    ("gap", lambda v: isinstance(v, dict)), ("config", lambda v: isinstance(v, dict)),
                    ("format", lambda v: isinstance(v, str)), ("shard", lambda v: isinstance(v, str)),
                    ("acceptance_rate", lambda v: isinstance(v, (int, float))), ("layout", lambda v: v == LAYOUT)):
        if m.get(key) is not None and not ok(m[key]):
            return f"field '{key}' has an unexpected value ({json.dumps(m[key])[:60]})"
    if m.get("layout") is not None:
        missing = [r for r in ("output", "records", "rejected") if r not in (m.get("files") or {})]
        if missing:
            return f"field 'files' lacks {', '.join(missing)}"
    return None


def _describe(path: Path) -> dict[str, Any]:
    """How an output file or folder is recorded in a manifest."""
    if path.is_dir():
        return {"name": path.name, "type": "folder", "files": folder_listing(path)}
    return {"name": path.name, "type": "file", "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def _matches(path: Path, rec: dict[str, Any] | None) -> bool:
    if not isinstance(rec, dict) or rec.get("name") != path.name:
        return False
    if rec.get("type") == "folder":
        return path.is_dir() and not path.is_symlink() and folder_listing(path) == rec.get("files")
    return (path.is_file() and not path.is_symlink() and path.stat().st_size == rec.get("bytes")
            and file_sha256(path) == rec.get("sha256"))


def _same_or_inside(a: Path, b: Path) -> bool:
    return a == b or b in a.parents


def _resolved(p: Path) -> Path:
    return Path(os.path.realpath(p))


def check_not_input(paths: OutputPaths, protect: Iterable[str | Path]) -> None:
    """Refuse output paths that are, are inside, or hold an input (resolved paths and inodes)."""
    for src in protect:
        s = Path(src)
        if not s.exists():
            continue
        rs = _resolved(s)
        for target in paths.all():
            rt = _resolved(target)
            same = _same_or_inside(rt, rs) or _same_or_inside(rs, rt)
            if not same and target.exists():
                with contextlib.suppress(OSError):
                    a, b = target.stat(), s.stat()
                    same = (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
            if same:
                raise InputError(f"-o {paths.main} would write {target}, which is (or holds, or is inside) the input "
                                 f"{src}: choose an output path outside the inputs")


def check_writable(paths: OutputPaths, *, folder: bool, check_type: bool = True) -> None:
    """Refuse an output of the wrong type, or in a place that cannot be written, before any work."""
    main = paths.main
    if check_type and main.exists():
        if folder and not main.is_dir():
            raise InputError(f"{main} exists and is a file: --format hf writes a datasets folder there; choose "
                             f"another -o path")
        if not folder and main.is_dir():
            raise InputError(f"{main} is a folder: give a file path for -o (or --format hf for a datasets folder)")
    anc = main.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise InputError(f"cannot create {main}: {anc} is a file, not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {main}: no write permission in {anc}")
    created: list[Path] = []
    try:
        d = main.parent
        missing = []
        while not d.exists():
            missing.append(d)
            d = d.parent
        for d in reversed(missing):
            d.mkdir()
            created.append(d)
        fd, tmp = tempfile.mkstemp(prefix=f".{main.name}.", suffix=".probe", dir=main.parent)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        for d in reversed(created):
            with contextlib.suppress(OSError):
                d.rmdir()
        raise InputError(f"cannot write {main}: {e.strerror or e}") from None


def _parts_is_ours(parts: Path) -> bool:
    cfg = parts / "config.json"
    if not cfg.is_file():
        return False
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "config_hash" in data


def _ours(path: Path, manifest: dict[str, Any] | None, pending: dict[str, Any] | None, role: str) -> bool:
    """Whether the existing ``path`` is the file sdft recorded for ``role``."""
    for record in (manifest, pending):
        if not record:
            continue
        if record.get("layout") is None and role == "output":  # an older sdft: OUT held the rows
            if path.is_file():
                return True
        if _matches(path, (record.get("files") or {}).get(role)):
            return True
    return False


def claim_output(paths: OutputPaths) -> dict[str, Any] | None:
    """Check that whatever exists at the output's paths is sdft's own; return its manifest.

    Raises:
        InputError: a file, folder or manifest at one of the paths that sdft did not write
            (or that changed since), named with what to do.
    """
    manifest = None
    if paths.manifest.exists() or paths.manifest.is_symlink():
        try:
            manifest = read_manifest(paths.main)
        except InputError as e:
            raise InputError(f"{e}. sdft does not replace files it cannot prove it wrote: move "
                             f"{paths.manifest} away, or choose another -o path") from None
        if manifest is None:
            raise InputError(f"{paths.manifest} is not a file: move it away or choose another -o path")
    if paths.parts.exists() and (not paths.parts.is_dir() or (any(paths.parts.iterdir())
                                                              and not _parts_is_ours(paths.parts))):
        raise InputError(f"{paths.parts} exists and was not made by sdft: move it away or choose another -o path")
    pending = _read_pending(paths)
    for role, path in paths.files.items():
        if (path.exists() or path.is_symlink()) and not _ours(path, manifest, pending, role):
            why = "changed since sdft wrote it" if manifest else "not written by sdft (no manifest records it)"
            raise InputError(f"{path} exists and was {why}: sdft only replaces its own outputs; move it away "
                             f"or choose another -o path")
    return manifest


def _read_pending(paths: OutputPaths) -> dict[str, Any] | None:
    p = paths.parts / "pending.json"
    if not (p.is_file() and _parts_is_ours(paths.parts)):
        return None
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def check_output(output: str | Path, *, folder: bool = False, protect: Iterable[str | Path] = ()) -> None:
    """Every check of an output path that needs no model: call it before loading one.

    Raises:
        InputError: ``output`` is an input, of the wrong type, not writable, or holds files
            sdft did not write.
    """
    if not str(output).strip():
        raise InputError("the output path is empty")
    paths = OutputPaths(output)
    check_not_input(paths, protect)
    try:
        claim_output(paths)
    except InputError as e:
        check_writable(paths, folder=folder)  # the wrong type of path is the more useful message
        raise e from None
    # sdft's own output (a file or a datasets folder) may change type with --format
    check_writable(paths, folder=folder, check_type=not paths.main.exists())


def _remove_owned(paths: OutputPaths, manifest: dict[str, Any] | None, pending: dict[str, Any] | None,
                  roles: Iterable[str] | None = None) -> None:
    """Delete the output files that are provably sdft's (never a folder's foreign files)."""
    for role, path in paths.files.items():
        if roles is not None and role not in roles:
            continue
        if not (path.exists() or path.is_symlink()):
            continue
        if not _ours(path, manifest, pending, role):
            raise InputError(f"{path} is not sdft's to delete: move it away or choose another -o path")
        if path.is_dir():
            for rel in folder_listing(path):
                (path / rel).unlink()
            for d in sorted((q for q in path.rglob("*") if q.is_dir()), key=lambda q: -len(q.parts)):
                d.rmdir()
            path.rmdir()
        else:
            path.unlink()


_PART_FILE = re.compile(r"^(config\.json|pending\.json|shard-\d+\.jsonl|part-\d+\.jsonl|\..*\.tmp)$")


def _clear_parts(parts: Path) -> None:
    """Delete sdft's files in a parts folder (and the folder when that empties it)."""
    if not parts.is_dir():
        return
    for d in [parts, *sorted(q for q in parts.glob("stage-*") if q.is_dir())]:
        for f in d.iterdir():
            if f.is_file() and _PART_FILE.match(f.name) and not (d is parts and f.name == "config.json"):
                f.unlink()
        if d is not parts:
            with contextlib.suppress(OSError):
                d.rmdir()
    (parts / "config.json").unlink(missing_ok=True)  # last: it is what marks the folder as ours


# ---------------------------------------------------------------------------------------------
# readers


def _legacy(manifest: dict[str, Any]) -> bool:
    return manifest.get("layout") is None


def _finished(output: str | Path) -> tuple[OutputPaths, dict[str, Any]]:
    paths = OutputPaths(output)
    manifest = read_manifest(output)
    if manifest is None:
        raise InputError(f"{output}: no manifest beside it ({paths.manifest}): is the run finished, and was it "
                         f"written by sdft?")
    return paths, manifest


def iter_records(output: str | Path) -> Iterator[dict[str, Any]]:
    """Every row's sdft record of a finished rewrite/replay output, in row order.

    Records carry ``id, index, messages, response, original, status, reason, ...`` (see
    docs/FORMATS.md), whatever ``--format`` the training output has. Outputs of older sdft
    versions (rows and bookkeeping in one file) are read as they are.
    """
    paths, manifest = _finished(output)
    if _legacy(manifest):
        yield from iter_jsonl(paths.main)
        return
    yield from heapq.merge(iter_jsonl(paths.records), iter_jsonl(paths.rejected),
                           key=lambda r: (r.get("index") or 0))


def iter_kept(output: str | Path) -> Iterator[dict[str, Any]]:
    """The records of the rows in the training output (status ``rewritten`` or ``fallback``)."""
    paths, manifest = _finished(output)
    rows = iter_jsonl(paths.main) if _legacy(manifest) else iter_jsonl(paths.records)
    for r in rows:
        if r.get("status") in KEPT_STATUSES and r.get("response") is not None:
            yield r


def iter_rejected(output: str | Path) -> Iterator[dict[str, Any]]:
    """The records of the rows not in the training output, with their status and reason."""
    paths, manifest = _finished(output)
    if _legacy(manifest):
        yield from (r for r in iter_jsonl(paths.main) if r.get("status") not in KEPT_STATUSES)
    elif paths.rejected.exists():
        yield from iter_jsonl(paths.rejected)


# ---------------------------------------------------------------------------------------------
# writing a finished output set


def _open_temps(paths: OutputPaths, roles: Iterable[str], temps: dict[str, str]) -> dict[str, IO[bytes]]:
    handles = {}
    for role in roles:
        fd, tmp = _temp_file(paths.files[role])
        temps[role] = tmp
        handles[role] = os.fdopen(fd, "wb")
    return handles


def write_output_set(paths: OutputPaths, records: Iterable[dict[str, Any]], output_format: str,
                     build_manifest: Callable[[], dict[str, Any]], *, expected_ids: Iterable[str] | None = None,
                     replace: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the training output, records, rejected rows, then the manifest, each atomically.

    Args:
        paths: the output's paths (the parts folder must be ours and locked by the caller).
        records: every row's final record, in output order.
        output_format: a name of :data:`sdft.formats.FORMATS`.
        build_manifest: called after every record was read (so that counts gathered while
            streaming are complete); the layout, format and file records are added to it.
        expected_ids: when given, each must appear exactly once (and no other id).
        replace: the manifest of the earlier output these files replace (its files are sdft's).

    Raises:
        SdftError: a row id repeated, missing or unexpected (nothing is put in place then).
    """
    from sdft.formats import is_folder_format, to_training_row, write_hf_folder

    folder = is_folder_format(output_format)
    old_pending = _read_pending(paths)  # a finalize killed half-way vouches for the files it placed
    seen: set[str] = set()
    temps: dict[str, str] = {}
    handles = _open_temps(paths, ["records", "rejected"] + ([] if folder else ["output"]), temps)
    hf_rows: list[dict[str, Any]] = []
    try:
        for r in records:
            rid = r.get("id")
            if not isinstance(rid, str) or rid in seen:
                raise SdftError(f"internal error: row id {rid!r} is missing or appears twice in the results for "
                                f"{paths.main}")
            seen.add(rid)
            if r.get("status") in KEPT_STATUSES and r.get("response") is not None:
                handles["records"].write(dumps_row(r).encode("utf-8"))
                row = to_training_row(r, output_format)
                if folder:
                    hf_rows.append(row)
                else:
                    handles["output"].write(dumps_row(row).encode("utf-8"))
            else:
                handles["rejected"].write(dumps_row(r).encode("utf-8"))
        for fh in handles.values():
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
        handles.clear()
        if expected_ids is not None:
            expected = set(expected_ids)
            missing, extra = expected - seen, seen - expected
            if missing or extra:
                raise SdftError(f"internal error: the results for {paths.main} miss {len(missing)} rows and hold "
                                f"{len(extra)} unexpected ones (e.g. {next(iter(missing or extra))})")
        if folder:
            temps["output"] = write_hf_folder(hf_rows, paths.main)
        manifest = build_manifest()
        files = {role: {**_describe(Path(temps[role])), "name": paths.files[role].name} for role in paths.files}
        manifest.update(layout=LAYOUT, format=output_format, files=files)
        atomic_write_json(paths.parts / "pending.json", {"layout": LAYOUT, "files": files})
        _remove_owned(paths, replace, old_pending)
        for role, path in paths.files.items():
            os.replace(temps.pop(role), path)
        _fsync_dir(paths.main.parent)
        manifest = json.loads(json.dumps(manifest, default=str))  # what a reader of the file gets
        atomic_write_json(paths.manifest, manifest)
        (paths.parts / "pending.json").unlink(missing_ok=True)
        return manifest
    finally:
        for fh in handles.values():
            fh.close()
        for tmp in temps.values():
            _discard(Path(tmp))


def _discard(p: Path) -> None:
    """Remove one of our own temp files or folders."""
    if p.is_dir():
        import shutil

        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# the resumable-stage runner


class _Lock:
    """An exclusive, non-blocking lock on an output's parts folder (released by the OS on kill)."""

    def __init__(self, paths: OutputPaths):
        self.paths = paths
        self.fd: int | None = None
        self.created = False

    def acquire(self) -> None:
        import fcntl

        parts = self.paths.parts
        for _ in range(3):
            self.created = not parts.exists()
            parts.mkdir(parents=True, exist_ok=True)
            fd = os.open(parts, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise InputError(f"another sdft process is writing {self.paths.main} right now (it holds "
                                 f"{parts}): wait for it to finish, or choose another -o path") from None
            # the holder before us may have finished and removed the folder: lock the live one
            if parts.exists() and os.stat(parts).st_ino == os.fstat(fd).st_ino:
                self.fd = fd
                return
            os.close(fd)
        raise SdftError(f"could not lock {parts}: it keeps being removed by another process")

    def release(self) -> None:
        if self.fd is None:
            return
        parts = self.paths.parts
        with contextlib.suppress(OSError):
            if parts.is_dir() and not any(parts.iterdir()):
                parts.rmdir()
        os.close(self.fd)  # closing the descriptor releases the lock
        self.fd = None


class StageCache:
    """A keyed, append-only cache of one intermediate stage's results (kill -9 safe).

    ``put_many`` writes one file atomically, so after a crash a rerun finds every batch that
    was put whole, and none in part. Entries of rows already appended to the runner are not
    loaded (they are finished), so memory holds only the rows in flight.
    """

    def __init__(self, folder: Path, done: set[str]):
        self.folder = folder
        self._data: dict[str, dict[str, Any]] = {}
        files = sorted(folder.glob("part-*.jsonl")) if folder.is_dir() else []
        for f in files:
            for line in iter_jsonl(f):
                if line.get("id") not in done:
                    self._data[line["id"]] = line["record"]
        self._next = 1 + max((int(f.stem.split("-")[1]) for f in files), default=0)

    def get(self, row_id: str) -> dict[str, Any] | None:
        """The record put for ``row_id``, or None."""
        return self._data.get(row_id)

    def __contains__(self, row_id: object) -> bool:
        return row_id in self._data

    def put_many(self, records: dict[str, dict[str, Any]]) -> None:
        """Store ``{row_id: record}`` (JSON-able records) as one atomic file."""
        if not records:
            return
        text = "".join(dumps_row({"id": k, "record": v}) for k, v in records.items())
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.folder / f"part-{self._next:06d}.jsonl", text)
        self._next += 1
        self._data.update(records)

    def forget(self, ids: Iterable[str]) -> None:
        for i in ids:
            self._data.pop(i, None)


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): d}


def _changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human names of the settings that differ, e.g. ``shard (0/2 -> 1/2)``."""
    a, b = _flat(old), _flat(new)
    out = []
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            va, vb = (json.dumps(x, default=str)[:40] if x is not None else "unset" for x in (a.get(k), b.get(k)))
            out.append(f"{k} ({va} -> {vb})")
    return out


class StageRunner:
    """One resumable stage (rewrite, replay) writing one output; see the module docstring.

    Usage::

        check_output(out, protect=[data_path])          # before loading any model
        runner = StageRunner(out, kind="sdft-rewrite", settings=key, inputs=[data_path],
                             shard="0/2", output_format="messages", overwrite=False, notice=say)
        with runner:                                     # exclusive: one process per output
            finished = runner.resume(wanted_ids)         # None, or the manifest to reuse
            if finished is None:
                for chunk in chunks(ids not in runner.done_ids()):
                    runner.append(process(chunk))        # one atomic shard per chunk
                runner.finalize(manifest, expected_ids=wanted_ids)

    Args:
        output: the ``-o`` path.
        kind: the manifest kind (``sdft-rewrite``, ``sdft-replay``).
        settings: every setting that changes the rows (JSON-able); its hash is
            :attr:`config_hash`, shared by all shards of one run.
        inputs: files/folders the rows come from: their content is fingerprinted, and
            the output may not be, hold or be inside them.
        protect: other paths the output must not touch (a template, a local model).
        shard: ``I/N`` of a data-parallel worker (part of the fingerprint).
        output_format: the training output's format (:data:`sdft.formats.FORMATS`).
        overwrite: discard sdft's own earlier results of other settings instead of refusing.
        notice: one-line notices (resume, reuse).
    """

    def __init__(self, output: str | Path, *, kind: str, settings: dict[str, Any], inputs: Sequence[str] = (),
                 protect: Sequence[str | Path] = (), shard: str | None = None, output_format: str = "messages",
                 overwrite: bool = False, notice: Callable[[str], None] | None = None):
        from sdft.formats import is_folder_format

        self.paths = OutputPaths(output)
        self.kind = kind
        self.settings = json.loads(json.dumps(settings, default=str))
        self.config_hash = settings_hash(self.settings)
        self.output_format = output_format
        self.overwrite = overwrite
        self.shard = shard
        self.say = notice or (lambda _m: None)
        protect = [*inputs, *protect]
        check_output(output, folder=is_folder_format(output_format), protect=protect)
        # content only (a Hub dataset: its name), so the same data under another path still resumes
        self.input = [fingerprint_path(s) for s in inputs]
        self.fingerprint = {"config_hash": self.config_hash, "input": self.input, "shard": shard}
        self._lock = _Lock(self.paths)
        self._done: set[str] | None = None
        self._caches: dict[str, StageCache] = {}
        self._next = 1
        self._old: dict[str, Any] | None = None
        self.selection: dict[str, Any] | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> StageRunner:
        self._lock.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._lock.release()

    def _config(self) -> dict[str, Any]:
        return {"config_hash": self.config_hash, "kind": self.kind, "settings": self.settings, "input": self.input,
                "shard": self.shard}

    def _mismatch(self, where: str, old: dict[str, Any]) -> InputError:
        changed = _changes({"settings": old.get("settings"), "input": old.get("input"), "shard": old.get("shard")},
                           {"settings": self.settings, "input": self.input, "shard": self.shard})
        if old.get("input") != self.input:  # a digest says nothing to a reader: say what it means
            changed = ["the input's content"] + [c for c in changed if not c.startswith("input")]
        return InputError(f"{where} holds results of other settings (changed: {'; '.join(changed) or 'unknown'}); "
                          f"rerun with the same settings to continue, pass --overwrite to discard them, or choose "
                          f"another -o path")

    def resume(self, wanted_ids: Sequence[str] | None = None, *,
               reusable: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any] | None:
        """Settle earlier results at this output; call once, inside ``with runner``.

        Args:
            wanted_ids: the ids of every row this run must write (None: the caller tracks
                its own rows, as replay does by rounds).
            reusable: without ``wanted_ids``, says whether a finished output of the same
                fingerprint is this run's result as is (else its rows are loaded to continue).

        Returns:
            The manifest of a finished output that already holds exactly this work (reuse it:
            the training output is rewritten first when only ``--format`` changed), or None
            when the caller should generate the rows not in :meth:`done_ids`.

        Raises:
            InputError: earlier results of other settings or input (without ``overwrite``),
                a finished output holding rows this run does not select (e.g. a smaller
                ``--limit``; never cut back silently), or damaged parts.
        """
        paths = self.paths
        old = claim_output(paths)
        pending = _read_pending(paths)
        wanted_digest = digest_ids(wanted_ids) if wanted_ids is not None else None
        self.selection = {"rows": len(wanted_ids), "ids_digest": wanted_digest} if wanted_ids is not None else None
        if self.overwrite:
            # Start over, but keep the finished output until the new one replaces it: a run that
            # fails half-way must not have destroyed the last good result.
            _clear_parts(paths.parts)
            atomic_write_json(paths.parts / "config.json", self._config())
            if pending:  # files a killed final write put in place stay claimable by the next one
                atomic_write_json(paths.parts / "pending.json", pending)
        if _parts_is_ours(paths.parts) and not self.overwrite:
            cfg = json.loads((paths.parts / "config.json").read_text(encoding="utf-8"))
            if cfg.get("config_hash") != self.config_hash or cfg.get("input") != self.input \
                    or cfg.get("shard") != self.shard:
                raise self._mismatch(str(paths.parts), cfg)
        elif old is not None and not self.overwrite:
            reuse = self._settle_finished(old, wanted_ids, wanted_digest, reusable)
            if reuse is not None:
                return reuse
        if not _parts_is_ours(paths.parts):
            atomic_write_json(paths.parts / "config.json", self._config())
        self._old = old
        done = self.done_ids()
        if wanted_ids is not None:
            extra = done - set(wanted_ids)
            if extra:
                raise InputError(f"{paths.parts} holds {len(extra)} rows this run does not select (a smaller --limit "
                                 f"or --shard than the run that wrote them?): rerun with the earlier selection, pass "
                                 f"--overwrite to start over, or choose another -o path")
        if done:
            self.say(f"resuming: {len(done)} rows already done in {paths.parts}")
        return None

    def _settle_finished(self, old: dict[str, Any], wanted_ids: Sequence[str] | None, wanted_digest: str | None,
                         reusable: Callable[[dict[str, Any]], bool] | None) -> dict[str, Any] | None:
        """A finished output exists: reuse it, continue from it, or refuse."""
        paths = self.paths
        if _legacy(old):
            raise InputError(f"{paths.main} was written by an older sdft version (no layout in {paths.manifest}): "
                             f"pass --overwrite to redo it in the current layout, or choose another -o path")
        fp = old.get("fingerprint") or {}
        if fp.get("config_hash") != self.config_hash or fp.get("input") != self.input or fp.get("shard") != self.shard:
            raise self._mismatch(str(paths.main), {"settings": old.get("settings"), **fp})
        sel = old.get("selection") or {}
        same = sel.get("ids_digest") == wanted_digest if wanted_ids is not None else bool(reusable and reusable(old))
        if same:
            if old.get("format") != self.output_format or not paths.main.exists():
                return self._reformat(old)
            self.say(f"{paths.main} is already complete for this config: reusing it (pass --overwrite to redo)")
            return old
        if wanted_ids is not None:
            have = {r["id"] for r in self._finished_records()}
            if not have <= set(wanted_ids):
                raise InputError(f"{paths.main} is finished with {sel.get('rows', len(have))} rows, "
                                 f"{len(have - set(wanted_ids))} of which this run does not select (a smaller "
                                 f"--limit?): a finished output is never cut back; pass --overwrite to redo it with "
                                 f"this selection, or choose another -o path")
        # Same settings, more rows wanted (a larger --limit or --num): continue from the finished rows.
        atomic_write_json(paths.parts / "config.json", self._config())
        self._next = 1
        recs = list(self._finished_records())
        if recs:
            self.append(recs)
        return None

    def _finished_records(self) -> Iterator[dict[str, Any]]:
        return heapq.merge(iter_jsonl(self.paths.records), iter_jsonl(self.paths.rejected),
                           key=lambda r: (r.get("index") or 0))

    def _reformat(self, old: dict[str, Any]) -> dict[str, Any]:
        """Same rows, another --format: write the training output again from the records."""
        self.say(f"{self.paths.main} is complete for this config: writing the training rows again "
                 f"(--format {self.output_format}) from {self.paths.records.name}")
        atomic_write_json(self.paths.parts / "config.json", self._config())
        manifest = {k: v for k, v in old.items() if k not in ("layout", "format", "files")}
        out = write_output_set(self.paths, list(self._finished_records()), self.output_format, lambda: manifest,
                               replace=old)
        _clear_parts(self.paths.parts)
        return out

    # -- rows --------------------------------------------------------------------------------------

    def _shards(self) -> list[Path]:
        parts = self.paths.parts
        return sorted(parts.glob("shard-*.jsonl")) if parts.is_dir() else []

    def done_ids(self) -> set[str]:
        """Ids of every row already appended (by this run or an earlier one)."""
        if self._done is None:
            self._done = set()
            shards = self._shards()
            for shard in shards:
                for row in self._read_shard(shard):
                    self._done.add(row["id"])
            self._next = 1 + max((int(p.stem.split("-")[1]) for p in shards), default=0)
        return self._done

    def _read_shard(self, shard: Path) -> Iterator[dict[str, Any]]:
        try:
            for row in iter_jsonl(shard):
                if not isinstance(row.get("id"), str):
                    raise InputError(f"{shard}: a row without a string 'id'")
                yield row
        except InputError as e:
            raise InputError(f"{e}. Delete {shard} to generate its rows again, or pass --overwrite to start "
                             f"over") from None

    def iter_records(self) -> Iterator[dict[str, Any]]:
        """Every appended row, in append order."""
        for shard in self._shards():
            yield from self._read_shard(shard)

    def append(self, rows: Sequence[dict[str, Any]]) -> None:
        """Write ``rows`` (each with a string ``id``) as one shard, atomically."""
        if not rows:
            return
        done = self.done_ids()
        text = "".join(dumps_row(r) for r in rows)
        atomic_write_text(self.paths.parts / f"shard-{self._next:06d}.jsonl", text)
        self._next += 1
        ids = [r["id"] for r in rows]
        done.update(ids)
        for cache in self._caches.values():
            cache.forget(ids)

    def stage_cache(self, name: str) -> StageCache:
        """The side cache of intermediate stage ``name`` (letters, digits, ``-``, ``_``).

        Cleared with the parts (on finalize and overwrite); survives a crash or kill -9.
        """
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
            raise ValueError(f"bad stage name {name!r}")
        if name not in self._caches:
            self._caches[name] = StageCache(self.paths.parts / f"stage-{name}", self.done_ids())
        return self._caches[name]

    def ordered_records(self) -> Iterable[dict[str, Any]]:
        """Records by row index: append order when it already is (the usual case), else sorted."""
        last = None
        for row in self.iter_records():
            idx = row.get("index") or 0
            if last is not None and idx < last:
                return sorted(self.iter_records(), key=lambda r: (r.get("index") or 0, r["id"]))
            last = idx
        return self.iter_records()

    def finalize(self, manifest: dict[str, Any], *, expected_ids: Iterable[str] | None = None,
                 records: Iterable[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Write the finished output set (each row exactly once), the manifest last; clear the parts.

        Args:
            manifest: the stage's manifest; ``fingerprint``, ``settings``, ``selection``,
                ``shard``, ``layout``, ``format`` and ``files`` are added.
            expected_ids: every id that must be present exactly once (default: the wanted ids
                given to :meth:`resume`, when any).
            records: the final records in row order (default: the appended rows by index).

        Returns:
            The manifest as written.
        """
        def build() -> dict[str, Any]:
            return {**manifest, "config_hash": self.config_hash, "fingerprint": self.fingerprint,
                    "settings": self.settings, "selection": self.selection, "shard": self.shard}

        rows = records if records is not None else self.ordered_records()
        out = write_output_set(self.paths, rows, self.output_format, build, expected_ids=expected_ids,
                               replace=self._old)
        _clear_parts(self.paths.parts)
        self._caches.clear()
        self._done = None
        return out


# ---------------------------------------------------------------------------------------------
# merge


def _check_part(p: Path, m: dict[str, Any]) -> list[dict[str, Any]]:
    """A shard output's records, checked against what its manifest recorded."""
    paths = OutputPaths(p)
    if _legacy(m):
        raise InputError(f"{p} was written by an older sdft version: rerun that shard to merge it")
    for role in ("records", "rejected"):
        if not _matches(paths.files[role], (m.get("files") or {}).get(role)):
            raise InputError(f"{paths.files[role]} does not match {paths.manifest} (changed, truncated or missing "
                             f"since the shard finished): rerun that shard with --overwrite")
    rows = list(iter_records(p))
    sel = m.get("selection") or {}
    if sel and (len(rows) != sel.get("rows") or digest_ids(r["id"] for r in rows) != sel.get("ids_digest")):
        raise InputError(f"{p}: its rows are not the ones its manifest lists ({len(rows)} rows, "
                         f"{sel.get('rows')} expected): rerun that shard with --overwrite")
    return rows


def _check_shards(inputs: Sequence[str | Path], manifests: list[dict[str, Any]]) -> None:
    shards = [m.get("shard") for m in manifests]
    if any(s is not None for s in shards):
        try:
            pairs = [tuple(int(x) for x in str(s).split("/")) for s in shards]
        except ValueError:
            raise InputError(f"shards must be 0..N-1 of one N, each once; got {', '.join(map(str, shards))}") from None
        ns = {n for _, n in pairs}
        got = sorted(i for i, _ in pairs)
        if len(ns) != 1 or got != list(range(next(iter(ns)))):
            raise InputError(f"shards must be 0..N-1 of one N, each once; got {', '.join(map(str, shards))}")
    for key, what in (("config_hash", "settings"), ("input", "input data"), ("input_rows", "row selections (--limit)")):
        vals = {json.dumps((m.get("fingerprint") or {}).get(key, m.get(key)), sort_keys=True) for m in manifests}
        if len(vals) != 1:
            raise InputError(f"the inputs to merge come from different {what} ({', '.join(map(str, inputs))}): "
                             f"merge the shards of one run only")


def merge_outputs(inputs: Sequence[str | Path], output: str | Path, *, expected_ids: Iterable[str] | None = None,
                  overwrite: bool = False, output_format: str | None = None,
                  protect: Sequence[str | Path] = ()) -> dict[str, Any]:
    """Combine finished shard outputs (``--shard I/N`` runs) into one output and manifest.

    Checks that every input is a finished sdft output whose records match its manifest, that
    all share one config and input fingerprint, that the shards ``0..N-1`` are each present
    once, that each shard holds exactly the rows its manifest lists, and that every row id
    appears exactly once; with ``expected_ids`` (the dataset's ids), that none is missing or
    extra. Rows are ordered by source index, so the result equals a single-process run's.

    Raises:
        InputError: a missing, unfinished, damaged or foreign input, mixed configs or inputs,
            a missing or repeated shard, a row missing or present twice, or an output that
            exists and is not a merge sdft wrote (or exists at all, without ``overwrite``).
    """
    from sdft.formats import FORMATS, is_folder_format
    from sdft.rewrite import shard_of

    paths = OutputPaths(output)
    manifests = []
    for p in inputs:
        m = read_manifest(p)
        if m is None:
            raise InputError(f"{p}: no manifest beside it: is that shard's run finished?")
        manifests.append(m)
    _check_shards(inputs, manifests)
    fmt = output_format or manifests[0].get("format") or "messages"
    if fmt not in FORMATS:
        raise InputError(f"unknown output format '{fmt}': choose one of {', '.join(FORMATS)}")
    check_not_input(paths, [*inputs, *[OutputPaths(p).records for p in inputs], *[OutputPaths(p).rejected
                                                                                  for p in inputs], *protect])
    check_writable(paths, folder=is_folder_format(fmt))
    old = claim_output(paths)
    if (old is not None or paths.main.exists()) and not overwrite:
        raise InputError(f"{output} exists: pass --overwrite to replace it")
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for p, m in zip(inputs, manifests):
        part = _check_part(Path(p), m)
        shard = m.get("shard")
        for r in part:
            if r["id"] in seen:
                raise InputError(f"row id {r['id']} appears in more than one input (second time in {p})")
            if shard is not None:
                i, n = (int(x) for x in str(shard).split("/"))
                if shard_of(r["id"], n) != i:
                    raise InputError(f"{p}: row {r['id']} does not belong to shard {shard}")
            seen.add(r["id"])
            rows.append(r)
    _check_total(manifests, rows, expected_ids)
    rows.sort(key=lambda r: (r.get("index") or 0, r["id"]))
    merged = _merged_manifest(inputs, manifests, seen)
    lock = _Lock(paths)
    lock.acquire()
    try:
        if not _parts_is_ours(paths.parts):
            atomic_write_json(paths.parts / "config.json", {"config_hash": merged.get("config_hash"), "merge": True})
        out = write_output_set(paths, rows, fmt, lambda: merged, replace=old)
        _clear_parts(paths.parts)
    finally:
        lock.release()
    return out


def _check_total(manifests: list[dict[str, Any]], rows: list[dict[str, Any]], expected_ids: Iterable[str] | None):
    seen = {r["id"] for r in rows}
    if expected_ids is not None:
        expected = set(expected_ids)
        missing, extra = len(expected - seen), len(seen - expected)
        if missing or extra:
            raise InputError(f"merged rows do not match the dataset: {missing} missing, {extra} unexpected")
    whole = {(m.get("input_rows")) for m in manifests}
    if manifests[0].get("shard") is not None and len(whole) == 1 and None not in whole:
        n = next(iter(whole))
        if len(seen) != n:
            raise InputError(f"the shards hold {len(seen)} rows but the input selection has {n}: "
                             f"{n - len(seen)} missing")


def _merged_manifest(inputs: Sequence[str | Path], manifests: list[dict[str, Any]], ids: set[str]) -> dict[str, Any]:
    merged = {k: v for k, v in manifests[0].items() if k not in ("layout", "format", "files")}
    counts: dict[str, int] = {}
    reasons: dict[str, int] = {}
    for m in manifests:
        for k, v in m.get("rows", {}).items():
            counts[k] = counts.get(k, 0) + v
        for k, v in (m.get("reasons") or {}).items():
            reasons[k] = reasons.get(k, 0) + v
    tokens = sum(m.get("generated_tokens_this_run") or 0 for m in manifests)
    secs = sum(m.get("generation_seconds_this_run") or 0 for m in manifests)
    fp = dict(merged.get("fingerprint") or {})
    fp["shard"] = None
    merged.update(
        shard=None, rows=counts, reasons=dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
        acceptance_rate=counts.get("rewritten", 0) / counts["total"] if counts.get("total") else 0.0,
        generated_tokens_this_run=tokens, generation_seconds_this_run=round(secs, 3),
        tokens_per_second=round(tokens / secs, 2) if secs else None, gap=None, fingerprint=fp,
        selection={"rows": len(ids), "ids_digest": digest_ids(ids)},
        merged_from=[str(p) for p in inputs],
    )
    return merged
