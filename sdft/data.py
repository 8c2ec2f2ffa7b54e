"""Data in: sdft's one reader, and task datasets as :class:`Example` rows.

Every file sdft reads row by row is read here, with one error style. :func:`iter_located` reads
any source into ``(row number, dict, "row N (line L)")``: JSONL, a JSON list, CSV, Parquet, a
``datasets.save_to_disk`` folder, or a Hub dataset name (task data, probe sets). Under it,
:func:`iter_json_lines` reads JSON Lines, also for sdft's own files (:func:`sdft.store.iter_jsonl`:
outputs, records, shards; the eval answer cache; a compare run's ``answers.jsonl``).
:func:`iter_examples` normalises task rows. Formats (detected when unambiguous):

* ``alpaca``: ``instruction`` (+ optional ``input``) -> ``output``
* ``gsm8k``: ``question`` -> ``answer``
* ``prompt``: ``--prompt-field`` -> ``--response-field`` (defaults ``prompt`` / ``response``)
* ``messages``: chat ``messages``; the last assistant turn is the answer, earlier turns context.

Every row gets a stable ``id`` at load time (a hash of its content, made unique within the
file), so outputs are joined by id, never by position.

Every input is hostile: any problem (bad UTF-8, a UTF-16 file, malformed JSON or CSV, an integer
of more than 4300 digits, values nested deeper than :data:`MAX_NESTING`, a corrupt Parquet file,
a missing, null or mistyped field, a turn after the last assistant turn, a path that is neither
a file nor a reachable Hub dataset) is an :class:`~sdft.errors.InputError` with one line naming
the file, the line or row, the field, what was expected and what to do. A UTF-8 BOM is fine.
Fields other than the text are kept as they are, except what later steps could not store:
integers beyond 64 bits become floats (text beyond float range), dates and decimals their text.
"""

from __future__ import annotations

import csv
import datetime
import decimal
import hashlib
import json
import math
import os
import re
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sdft.errors import InputError

FORMATS = ("alpaca", "gsm8k", "prompt", "messages")
FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")

#: Values may nest at most this many levels inside a row (deeper rows are rejected, not crashed on).
MAX_NESTING = 64
#: The longest integer accepted in a JSON row (Python's own int/str conversion limit).
MAX_INT_DIGITS = 4300
#: Seconds to wait for the Hub (or a proxy) to accept a connection before saying it is unreachable.
HUB_PROBE_TIMEOUT_S = 3.0
# Integers outside this range cannot be stored by Arrow (``--format hf``, datasets): kept as text.
_INT64 = (-(2**63), 2**63 - 1)
_BOM = b"\xef\xbb\xbf"
_HUB_ID_RE = re.compile(r"(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*")


@dataclass
class Example:
    """One task row, normalised.

    Attributes:
        id: stable id (content hash, unique within the dataset).
        index: 0-based row number in the source, for error messages.
        messages: the conversation up to the answer (system/user/... turns); the last one is
            a user turn. This is the *training* prompt.
        answer: the reference answer (the assistant turn to rewrite).
        extra: every other field of the source row (tests, functions, entry_point, ...).
    """

    id: str
    index: int
    messages: list[dict[str, str]]
    answer: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def question(self) -> str:
        """The content of the last user turn."""
        return self.messages[-1]["content"]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "index": self.index, "messages": self.messages, "answer": self.answer,
                "extra": self.extra}


@dataclass(frozen=True)
class DataSpec:
    """How to read a dataset.

    Attributes:
        path: a file, a ``save_to_disk`` folder, or a Hub dataset name.
        format: one of :data:`FORMATS`, or "auto" to detect from the columns.
        prompt_field: column holding the prompt (``prompt`` format).
        response_field: column holding the answer (``prompt`` format).
        split: Hub/DatasetDict split to use.
        system_prompt: optional system turn prepended to every conversation without one.
        limit: keep only the first N rows (None = all).
    """

    path: str
    format: str = "auto"
    prompt_field: str | None = None
    response_field: str | None = None
    split: str = "train"
    system_prompt: str | None = None
    name: str | None = None  # Hub dataset configuration (e.g. "main" for openai/gsm8k)
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.format not in (*FORMATS, "auto"):
            raise InputError(f"unknown data format '{self.format}': choose one of auto, {', '.join(FORMATS)}")
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int)
                                       or self.limit < 1):
            raise InputError(f"limit must be a whole number >= 1, got {self.limit!r}")


# ---------------------------------------------------------------------------------------------
# raw readers: yield (row_number, dict, location) where location names the line or row


def _one_line(text: Any, limit: int = 200) -> str:
    """``text`` squeezed onto one line and clipped (third-party messages span lines)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show(value: Any, limit: int = 60) -> str:
    """A value quoted for an error message: one line, clipped."""
    return _one_line(repr(value), limit)


def _open_binary(path: Path) -> Any:
    try:
        return path.open("rb")
    except OSError as e:
        raise InputError(f"{path}: cannot be read ({e.strerror or e}); check the path and its permissions") from None


def _decode(raw: bytes, path: Path, where: str, *, first: bool, fix: str | None = None) -> str:
    """Decode one chunk of a UTF-8 file; a BOM is accepted, anything else names the bad byte."""
    if first:
        if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise InputError(f"{path}: the file is UTF-16 encoded; expected UTF-8: {fix or 're-save it as UTF-8'}")
        if raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line_no = raw.count(b"\n", 0, e.start)
        line_start = raw.rfind(b"\n", 0, e.start) + 1
        at = f"line {line_no + 1}, " if where == "" else f"{where}, "
        raise InputError(
            f"{path}: {at}column {e.start - line_start + 1}: byte 0x{raw[e.start]:02x} is not valid UTF-8; "
            f"expected UTF-8 text: {fix or 're-save the file as UTF-8'}"
        ) from None


class _HugeInt:
    """Stands in for a JSON integer too long to convert, so that its field can be named."""

    def __init__(self, digits: int):
        self.digits = digits


def _parse_int(text: str) -> Any:
    digits = len(text.lstrip("-"))
    return _HugeInt(digits) if digits > MAX_INT_DIGITS else int(text)


def _check_values(obj: Any, path: Path, where: str, max_nesting: int = MAX_NESTING) -> None:
    """Reject a value nested deeper than ``max_nesting`` or holding an oversized integer."""
    stack: list[tuple[Any, str, int]] = [(obj, "", 0)]
    while stack:
        value, field_name, depth = stack.pop()
        name = _one_line(field_name, 60) if field_name else "the row"
        if isinstance(value, _HugeInt):
            raise InputError(
                f"{path}: {where}: field '{name}' holds an integer with {value.digits} digits "
                f"(at most {MAX_INT_DIGITS}); expected a normal number: quote it as a string"
            )
        if depth > max_nesting:
            raise InputError(
                f"{path}: {where}: field '{name}' is nested more than {max_nesting} levels deep; "
                f"expected flat values: flatten the row"
            )
        if isinstance(value, dict):
            stack.extend((v, f"{field_name}.{k}" if field_name else str(k), depth + 1) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, f"{field_name}[{i}]", depth + 1) for i, v in enumerate(value))


def _parse_json(text: str, path: Path, where: str, *, fix: str | None = None,
                max_nesting: int = MAX_NESTING) -> Any:
    """``json.loads`` whose every failure is an :class:`InputError` naming ``where``."""
    try:
        obj = json.loads(text, parse_int=_parse_int)
    except json.JSONDecodeError as e:
        at = f"{where}: " if where else f"line {e.lineno}: "
        raise InputError(
            f"{path}: {at}malformed JSON ({e.msg}, column {e.colno}); expected one JSON object per line: "
            f"{fix or 'fix or remove that line'}"
        ) from None
    except RecursionError:
        raise InputError(
            f"{path}: {where or 'the file'}: JSON nested too deeply; expected at most {max_nesting} levels: "
            f"{fix or 'flatten the row'}"
        ) from None
    except ValueError as e:  # e.g. a number json cannot convert
        raise InputError(f"{path}: {where or 'the file'}: unreadable JSON ({_one_line(e)}); "
                         f"{fix or 'fix that row'}") from None
    if where:  # one row; a whole file is checked item by item
        _check_values(obj, path, where, max_nesting)
    return obj


def iter_json_lines(path: str | Path, *, fix: str | None = None, max_nesting: int = MAX_NESTING,
                    skip_damaged: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for every non-blank line of a JSON Lines file.

    sdft's one line reader: task data and probe sets (through :func:`iter_located`), sdft's own
    outputs, records and shards (:func:`sdft.store.iter_jsonl`), the eval answer caches and a
    compare run's ``answers.jsonl`` all read their lines here, so every damaged line gets the
    same one-line error: ``FILE: line N: problem; expected X: what to do``.

    Args:
        path: the file.
        fix: what to do, ending each error message (default: the advice for a user's data file,
            e.g. "fix or remove that line"; sdft's own files say they are damaged).
        max_nesting: the deepest a value may nest inside a row.
        skip_damaged: skip lines that are not UTF-8, not JSON or not an object instead of failing
            (an append-only log whose last line a crash may have torn).

    Raises:
        InputError: the file cannot be opened, or (unless ``skip_damaged``) a damaged line.
    """
    p = Path(path)
    with _open_binary(p) as fh:
        for lineno, raw in enumerate(fh, 1):
            where = f"line {lineno}"
            try:
                line = _decode(raw, p, where, first=lineno == 1, fix=fix)
                if not line.strip():
                    continue
                obj = _parse_json(line, p, where, fix=fix, max_nesting=max_nesting)
                if not isinstance(obj, dict):
                    raise InputError(f"{p}: {where}: expected a JSON object ({{...}}), got {_json_kind(obj)}: "
                                     f"{fix or 'write one object per line'}")
            except InputError:
                if skip_damaged:
                    continue
                raise
            yield lineno, obj


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict, str]]:
    for n, (lineno, obj) in enumerate(iter_json_lines(path)):
        yield n, obj, _row_at(n, lineno)


def _row_at(n: int, line: int) -> str:
    """"row 3", or "row 3 (line 5)" when the row does not sit on the line of the same number."""
    return f"row {n + 1}" if line == n + 1 else f"row {n + 1} (line {line})"


def _json_kind(obj: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(obj), "a number")


def _iter_json(path: Path) -> Iterator[tuple[int, dict, str]]:
    with _open_binary(path) as fh:
        raw = fh.read()
    text = _decode(raw, path, "", first=True)
    try:
        data = json.loads(text, parse_int=_parse_int)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # several objects: JSON Lines in a .json file
            yield from _iter_jsonl(path)
            return
        data = _parse_json(text, path, "")  # raises with the position
    except (RecursionError, ValueError):
        data = _parse_json(text, path, "")  # raises with a clear message
    if isinstance(data, dict):
        # tolerate {"data": [...]} / {"train": [...]}: a single list-valued key; else one row
        lists = [v for v in data.values() if isinstance(v, list) and all(isinstance(x, dict) for x in v)]
        data = lists[0] if len(lists) == 1 else [data]
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON list of objects, got {_json_kind(data)}: write [{{...}}, ...] "
                         f"or JSON Lines")
    for i, obj in enumerate(data):
        if not isinstance(obj, dict):
            raise InputError(f"{path}: row {i + 1}: expected a JSON object ({{...}}), got {_json_kind(obj)}: "
                             f"make every list item an object")
        _check_values(obj, path, f"row {i + 1}")
        yield i, obj, f"row {i + 1}"


def _decoded_lines(path: Path, fh: Any, counter: list[int]) -> Iterator[str]:
    """Yield the decoded lines of ``fh``, counting them in ``counter[0]`` (for CSV positions)."""
    for lineno, raw in enumerate(fh, 1):
        counter[0] = lineno
        yield _decode(raw, path, f"line {lineno}", first=lineno == 1)


def _iter_csv(path: Path) -> Iterator[tuple[int, dict, str]]:
    with _open_binary(path) as fh:
        counter = [0]
        # strict: an unclosed quote is an error, not a field that swallows the rest of the file
        reader = csv.reader(_decoded_lines(path, fh, counter), strict=True)
        header: list[str] | None = None
        n, start = 0, 1
        while True:
            try:
                record = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                raise InputError(f"{path}: line {counter[0]}: malformed CSV ({_one_line(e)}); fix the quoting "
                                 f"of that line, or use JSON Lines") from None
            first_line, start = start, counter[0] + 1  # this record's first line; the next one's
            where = f"line {first_line}"
            if not record:
                continue  # a blank line
            if header is None:
                header = record
                continue
            if len(record) != len(header):
                raise InputError(f"{path}: {where}: {len(record)} fields, but the header has {len(header)}; "
                                 f"expected one value per column: quote values that contain commas")
            yield n, dict(zip(header, record)), _row_at(n, first_line)
            n += 1
        if header is None:
            raise InputError(f"{path}: empty CSV file (no header row); expected a header line with column names")


def _iter_rows(rows: Iterator[dict], path: Any, what: str) -> Iterator[tuple[int, dict, str]]:
    """Rows of a Parquet file or a datasets object; a read failure names the row reached."""
    i = 0
    try:
        for row in rows:
            yield i, dict(row), f"row {i + 1}"
            i += 1
    except (OSError, ValueError, TypeError, KeyError, IndexError, RuntimeError) as e:
        raise InputError(f"{path}: row {i + 1}: cannot be read ({type(e).__name__}: {_one_line(e)}); "
                         f"expected a valid {what}: re-export it") from None


def _iter_parquet(path: Path) -> Iterator[tuple[int, dict, str]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow comes with datasets
        from sdft._deps import require

        require("pyarrow", "reading Parquet files")
        raise
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ...: all "not Parquet"
        raise InputError(f"{path}: not a readable Parquet file ({type(e).__name__}: {_one_line(e)}); "
                         f"expected Parquet: re-export it, or convert it to JSON Lines") from None

    def rows() -> Iterator[dict]:
        for batch in pf.iter_batches(batch_size=1024):
            yield from batch.to_pylist()

    try:
        yield from _iter_rows(rows(), path, "Parquet file")
    except Exception as e:  # noqa: BLE001 - pyarrow's own error types (ArrowInvalid, ...)
        if isinstance(e, InputError):
            raise
        raise InputError(f"{path}: cannot be read past a corrupt part ({type(e).__name__}: {_one_line(e)}); "
                         f"expected Parquet: re-export it") from None


def _hub_offline() -> str | None:
    """The environment variable that puts the Hub offline, if one is set."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return var
    return None


def is_hub_id(name: str) -> bool:
    """True when ``name`` can be a Hub dataset id (``name`` or ``org/name``, Hub character rules)."""
    if not _HUB_ID_RE.fullmatch(name):
        return False
    return all(len(part) <= 96 and ".." not in part and "--" not in part and not part.endswith((".", "-"))
               for part in name.split("/"))


def _hub_cached(name: str) -> bool:
    """True when the datasets or hub cache holds something for ``name`` (usable offline)."""
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")).expanduser()
    hub = Path(os.environ.get("HF_HUB_CACHE", home / "hub")).expanduser()
    cache = Path(os.environ.get("HF_DATASETS_CACHE", home / "datasets")).expanduser()
    return (hub / f"datasets--{name.replace('/', '--')}").exists() or (cache / name.replace("/", "___")).exists()


def _hub_unreachable(timeout_s: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """Why the Hub (or the proxy in front of it) cannot be reached, or None when it answers.

    One TCP connection with a short timeout, in a thread so that a slow DNS lookup is bounded
    too: a typo must not spend half a minute in the Hub client's retries.
    """
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlsplit(proxy or os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname, url.port or (80 if url.scheme == "http" else 443)
    if not host:
        return None
    result: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            result.append(None)
        except OSError as e:
            result.append(f"{host}:{port}: {e.strerror or e}")

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout_s + 0.5)
    return result[0] if result else f"{host}:{port}: no answer within {timeout_s:g} s"


def _check_hub_name(name: str) -> None:
    """Fail fast, before importing datasets, when ``name`` cannot be loaded from the Hub."""
    local_hint = "a local file needs its extension (.jsonl, .json, .csv, .parquet); check the path"
    if not is_hub_id(name):
        raise InputError(f"{name}: no such file or folder (and not a Hub dataset id); {local_hint}")
    offline = _hub_offline()
    if offline and not _hub_cached(name):
        raise InputError(f"{name}: no such file or folder, and {offline} is set so the Hub is not asked; "
                         f"{local_hint}, or unset {offline} to download it")
    if not offline:
        why = _hub_unreachable()
        if why is not None and not _hub_cached(name):
            raise InputError(f"{name}: no such file or folder, and the Hub cannot be reached ({why}); "
                             f"{local_hint}, or set HF_HUB_OFFLINE=1 to use the cache only")


def _load_hf(spec: DataSpec) -> Iterator[tuple[int, dict, str]]:
    """A ``save_to_disk`` folder or a Hub dataset name."""
    p = Path(spec.path).expanduser()
    if not p.is_dir():
        _check_hub_name(spec.path)
    import datasets  # heavy: only here

    if p.is_dir():
        try:
            ds = datasets.load_from_disk(str(p))
        except Exception as e:  # noqa: BLE001 - missing or corrupt metadata, arrow errors, ...
            raise InputError(f"{p}: not a datasets.save_to_disk folder nor a data file ({type(e).__name__}: "
                             f"{_one_line(e)}); pass a data file or a folder written by save_to_disk") from None
    else:
        try:
            ds = datasets.load_dataset(spec.path, spec.name, split=spec.split)
        except Exception as e:  # the Hub raises many types; all mean "could not load"
            raise InputError(
                f"could not load '{spec.path}': it is not a local file or folder, and loading it as a "
                f"Hub dataset failed ({type(e).__name__}: {_one_line(e)}). Pass a path to a "
                f".jsonl/.json/.csv/.parquet file or a save_to_disk folder."
            ) from None
    if isinstance(ds, datasets.DatasetDict):
        if spec.split not in ds:
            raise InputError(f"{spec.path}: no split '{spec.split}' (has: {', '.join(ds)}); pass --split")
        ds = ds[spec.split]
    return _iter_rows(iter(ds), spec.path, "datasets folder")


def resolve_data_path(path: str) -> str:
    """``example:NAME`` names a dataset bundled with sdft (``sdft/assets/NAME.jsonl``)."""
    if path.startswith("example:"):
        name = path.split(":", 1)[1]
        p = Path(__file__).parent / "assets" / f"{name}.jsonl"
        if not p.is_file():
            avail = sorted(q.stem for q in (Path(__file__).parent / "assets").glob("*.jsonl"))
            raise InputError(f"no bundled example '{name}' (bundled: {', '.join(avail)})")
        return str(p)
    return path


def iter_located(spec: DataSpec) -> Iterator[tuple[int, dict, str]]:
    """Yield ``(row_number, row_dict, location)`` from any supported source.

    ``location`` names the row for error messages ("row 3", "row 6 (line 7)").
    """
    p = Path(resolve_data_path(spec.path)).expanduser()
    if p.is_file():
        suffix = p.suffix.lower()
        if suffix == ".jsonl":
            return _iter_jsonl(p)
        if suffix == ".json":
            return _iter_json(p)
        if suffix == ".csv":
            return _iter_csv(p)
        if suffix == ".parquet":
            return _iter_parquet(p)
        raise InputError(f"{p}: unsupported file type '{suffix}': use one of {', '.join(FILE_SUFFIXES)}")
    if p.is_dir() or not looks_like_path(spec.path):
        return _load_hf(spec)
    raise InputError(f"{spec.path}: no such file or directory; check the path")


def iter_raw(spec: DataSpec) -> Iterator[tuple[int, dict]]:
    """Yield ``(row_number, row_dict)`` from any supported source."""
    return ((i, row) for i, row, _ in iter_located(spec))


def looks_like_path(s: str) -> bool:
    # "org/name" is a Hub id; "./x", "/x", "x.jsonl" are paths.
    return s.startswith((".", "/", "~")) or s.lower().endswith(FILE_SUFFIXES) or s.count("/") > 1


# ---------------------------------------------------------------------------------------------
# format detection and normalisation


def detect_format(columns: set[str], spec: DataSpec) -> str:
    """Pick the format from the column names, or raise saying which flags to pass."""
    if spec.format != "auto":
        return spec.format
    if spec.prompt_field or spec.response_field:
        return "prompt"
    found = []
    if "messages" in columns:
        found.append("messages")
    if "instruction" in columns and "output" in columns:
        found.append("alpaca")
    if "question" in columns and "answer" in columns:
        found.append("gsm8k")
    if "prompt" in columns and ("response" in columns or "completion" in columns):
        found.append("prompt")
    if len(found) == 1:
        return found[0]
    cols = _columns(dict.fromkeys(sorted(str(c) for c in columns))) if columns else "(none)"
    if not found:
        raise InputError(
            f"{spec.path}: cannot tell the data format from the columns ({cols}). Pass "
            f"--prompt-field COL --response-field COL, or --data-format one of {', '.join(FORMATS)}."
        )
    raise InputError(
        f"{spec.path}: ambiguous data format, the columns ({cols}) fit {' and '.join(found)}. "
        f"Pass --data-format {found[0]} (or another), or --prompt-field/--response-field."
    )


def _columns(row: dict) -> str:
    keys = [str(k) for k in row]
    shown = ", ".join(_one_line(k, 40) for k in keys[:20])
    return (shown + f", ... ({len(keys)} in all)" if len(keys) > 20 else shown) or "nothing"


def _text(row: dict, key: str, where: str, *, required: bool = True) -> str:
    """The text of field ``key``; numbers are accepted as their text, anything else is an error."""
    if key not in row:
        if not required:
            return ""
        raise InputError(f"{where}: missing field '{key}' (row has: {_columns(row)}); "
                         f"expected a text field '{key}': add it, or pass --prompt-field/--response-field")
    v = row[key]
    if v is None:
        if not required:
            return ""
        raise InputError(f"{where}: field '{key}' is null; expected text: fill it in or drop the row")
    if isinstance(v, str):
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InputError(f"{where}: field '{key}' is {_type_name(v)} ({_show(v)}); expected text: "
                         f"store it as a string")
    if isinstance(v, float) and not math.isfinite(v):
        raise InputError(f"{where}: field '{key}' is the number {v}; expected text or a finite number")
    return str(v)


def _type_name(v: Any) -> str:
    names = {dict: "an object", list: "a list", bool: "a boolean", bytes: "binary data", type(None): "null"}
    name = type(v).__name__
    return names.get(type(v), f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}")


def _portable(value: Any, where: str, name: str) -> Any:
    """``value`` with what JSON/Arrow cannot store made storable (a non-text field of a row).

    Integers beyond 64 bits become floats (Arrow cannot hold them; as most JSON readers do),
    or their text beyond float range; dates, times and decimals become their text, binary data
    its UTF-8 text; NaN and infinities stay floats (JSON and Arrow both hold them). Anything
    else that is not JSON (an image, a set) is an error.
    """
    if value is None or isinstance(value, (str, bool, float)):
        return value
    if isinstance(value, int):
        if _INT64[0] <= value <= _INT64[1]:
            return value
        try:  # beside other numbers (a column, a list) a float keeps Arrow's column type
            return float(value)
        except OverflowError:
            return str(value)
    if isinstance(value, dict):
        return {str(k): _portable(v, where, f"{name}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_portable(v, where, f"{name}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (datetime.date, datetime.time, datetime.timedelta, decimal.Decimal)):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            pass
    raise InputError(f"{where}: field '{_one_line(name, 60)}' holds {_type_name(value)}; expected text, numbers, "
                     f"lists or objects: convert or drop that column")


def normalise(row: dict, fmt: str, spec: DataSpec, where: str) -> tuple[list[dict], str, dict]:
    """Turn one raw row into ``(messages, answer, extra)`` or raise an :class:`InputError`."""
    if fmt == "alpaca":
        instr = _text(row, "instruction", where)
        inp = _text(row, "input", where, required=False)
        answer = _text(row, "output", where)
        user = f"{instr}\n\n{inp}" if inp.strip() else instr
        used = {"instruction", "input", "output"}
        messages = [{"role": "user", "content": user}]
        fields = ("instruction", "output")
    elif fmt == "gsm8k":
        messages = [{"role": "user", "content": _text(row, "question", where)}]
        answer = _text(row, "answer", where)
        used = {"question", "answer"}
        fields = ("question", "answer")
    elif fmt == "prompt":
        pf = spec.prompt_field or "prompt"
        rf = spec.response_field or ("response" if "response" in row or "completion" not in row else "completion")
        messages = [{"role": "user", "content": _text(row, pf, where)}]
        answer = _text(row, rf, where)
        used = {pf, rf}
        fields = (pf, rf)
    elif fmt == "messages":
        messages, answer = _split_messages(row, where)
        used = {"messages"}
        fields = ("messages", "messages")
    else:  # pragma: no cover - DataSpec validates
        raise AssertionError(fmt)
    if not answer.strip():
        raise InputError(f"{where}: field '{fields[1]}' has an empty answer; expected the reference answer text: "
                         f"fill it in or drop the row")
    if not messages[-1]["content"].strip():
        raise InputError(f"{where}: field '{fields[0]}' has an empty prompt; expected the question text: "
                         f"fill it in or drop the row")
    if spec.system_prompt and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": spec.system_prompt}, *messages]
    extra = {str(k): _portable(v, where, str(k)) for k, v in row.items() if k not in used}
    return messages, answer, extra


def jsonable_row(row: Any, where: str) -> dict[str, Any]:
    """A row given in memory (a dict of a list, a ``datasets.Dataset`` row) as JSON-storable values.

    The same conversions the reader applies to the extra fields of a file's rows (integers beyond
    64 bits, dates, decimals, binary text), so rows written from memory read back as they would
    from a file.

    Raises:
        InputError: ``row`` is not a mapping, or a value is nothing JSON can hold (``where`` named).
    """
    if not isinstance(row, Mapping):
        raise InputError(f"{where}: expected a row (a mapping of field names to values), got {_type_name(row)}: "
                         f"pass a list of dicts or a datasets.Dataset")
    return {str(k): _portable(v, where, str(k)) for k, v in row.items()}


_ROLES = ("system", "user", "assistant", "tool")


def _content(value: Any, where: str, j: int) -> str:
    """A message's content: text, null (empty), or a list of ``{"type": "text", "text": ...}`` parts."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) and isinstance(p.get("text"), str) for p in value):
        return "".join(p["text"] for p in value)
    raise InputError(f"{where}: field 'messages[{j}].content' is {_type_name(value)}; expected text "
                     f"(or a list of {{\"type\": \"text\", \"text\": ...}} parts)")


def _split_messages(row: dict, where: str) -> tuple[list[dict], str]:
    if "messages" not in row:
        raise InputError(f"{where}: missing field 'messages' (row has: {_columns(row)}); expected a list of "
                         f"{{role, content}} objects")
    msgs = row["messages"]
    if msgs is None:
        raise InputError(f"{where}: field 'messages' is null; expected a list of {{role, content}} objects")
    if isinstance(msgs, str):  # CSV cells hold JSON text
        try:
            msgs = json.loads(msgs)
        except (ValueError, RecursionError):
            raise InputError(f"{where}: field 'messages' is text that is not JSON; expected a JSON list of "
                             f"{{role, content}} objects") from None
    if not isinstance(msgs, list) or not msgs:
        raise InputError(f"{where}: field 'messages' is {_type_name(msgs) if msgs else 'empty'}; expected a "
                         f"non-empty list of {{role, content}} objects")
    clean = []
    for j, m in enumerate(msgs):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise InputError(f"{where}: field 'messages[{j}]' is not an object with 'role' and 'content'; "
                             f"expected {{\"role\": ..., \"content\": ...}}")
        if not isinstance(m["role"], str) or m["role"] not in _ROLES:
            raise InputError(f"{where}: field 'messages[{j}].role' is {_show(m['role'])}; expected one of "
                             f"{', '.join(_ROLES)}")
        clean.append({"role": m["role"], "content": _content(m["content"], where, j)})
    last_asst = max((j for j, m in enumerate(clean) if m["role"] == "assistant"), default=None)
    if last_asst is None:
        raise InputError(f"{where}: field 'messages' has no assistant turn to rewrite; expected the conversation "
                         f"to end with the assistant's answer")
    if last_asst != len(clean) - 1:
        after = clean[last_asst + 1]["role"]
        raise InputError(f"{where}: field 'messages[{last_asst + 1}]' is a {after} turn after the last assistant "
                         f"turn; expected the conversation to end with the assistant's answer (the one to "
                         f"rewrite): drop the trailing turns or add their answer")
    context = clean[:last_asst]
    if not context or context[-1]["role"] != "user":
        raise InputError(f"{where}: field 'messages[{last_asst}]' (the last assistant turn) does not follow a user "
                         f"turn; expected a user question right before the answer")
    return context, clean[last_asst]["content"]


def content_id(messages: list[dict], answer: str) -> str:
    """A stable id for a row: the first 16 hex digits of a SHA-256 of its content."""
    blob = json.dumps({"m": messages, "a": answer}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def iter_examples(spec: DataSpec) -> Iterator[Example]:
    """Stream :class:`Example` rows from ``spec``; raises :class:`InputError` on the first bad row.

    Duplicate rows get ids suffixed ``-2``, ``-3``, ... in order of appearance, so every row
    keeps a distinct id without depending on its position among distinct rows.
    """
    raw = iter_located(spec)
    fmt: str | None = None
    seen: dict[str, int] = {}
    count = 0
    for i, row, location in raw:
        if spec.limit is not None and count >= spec.limit:
            break
        if fmt is None:
            fmt = detect_format(set(row), spec)
        where = f"{spec.path}: {location}"
        messages, answer, extra = normalise(row, fmt, spec, where)
        rid = content_id(messages, answer)
        k = seen.get(rid, 0) + 1
        seen[rid] = k
        if k > 1:
            rid = f"{rid}-{k}"
        yield Example(id=rid, index=i, messages=messages, answer=answer, extra=extra)
        count += 1
    if count == 0:
        raise InputError(f"{spec.path}: no rows; expected at least one data row")


def load_examples(spec: DataSpec) -> list[Example]:
    """Load every row (validating all of them before any work starts)."""
    return list(iter_examples(spec))


def count_rows(spec: DataSpec) -> int:
    """Count rows cheaply (for progress bars) by streaming the source once."""
    return sum(1 for _ in iter_examples(spec))
