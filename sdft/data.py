"""Data in: load task datasets from files or the Hub into :class:`Example` rows.

Sources: JSONL, a JSON list, CSV, Parquet, a ``datasets.save_to_disk`` folder, or a Hub
dataset name. Formats (detected when unambiguous):

* ``alpaca``: ``instruction`` (+ optional ``input``) -> ``output``
* ``gsm8k``: ``question`` -> ``answer``
* ``prompt``: ``--prompt-field`` -> ``--response-field`` (defaults ``prompt`` / ``response``)
* ``messages``: chat ``messages``; the last assistant turn is the answer, earlier turns context.

Every row gets a stable ``id`` at load time (a hash of its content, made unique within the
file), so outputs are joined by id, never by position.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdft.errors import InputError

FORMATS = ("alpaca", "gsm8k", "prompt", "messages")
FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


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
        if self.limit is not None and self.limit < 1:
            raise InputError(f"limit must be >= 1, got {self.limit}")


# ---------------------------------------------------------------------------------------------
# raw readers: yield (row_number, dict)


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    with path.open("r", encoding="utf-8") as fh:
        n = 0
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}: line {lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise InputError(f"{path}: line {lineno}: expected a JSON object, got {type(obj).__name__}")
            yield n, obj
            n += 1


def _iter_json(path: Path) -> Iterator[tuple[int, dict]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: malformed JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if isinstance(data, dict):
        # tolerate {"data": [...]} / {"train": [...]}: a single list-valued key
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise InputError(f"{path}: expected a JSON list of objects (or JSON Lines)")
        data = lists[0]
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
    for i, obj in enumerate(data):
        if not isinstance(obj, dict):
            raise InputError(f"{path}: item {i}: expected a JSON object, got {type(obj).__name__}")
        yield i, obj


def _iter_csv(path: Path) -> Iterator[tuple[int, dict]]:
    with path.open("r", encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames:
            raise InputError(f"{path}: empty CSV file (no header row)")
        for i, row in enumerate(reader):
            yield i, dict(row)


def _iter_datasets(ds: Any) -> Iterator[tuple[int, dict]]:
    for i, row in enumerate(ds):
        yield i, dict(row)


def _iter_parquet(path: Path) -> Iterator[tuple[int, dict]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow comes with datasets
        from sdft._deps import require

        require("pyarrow", "reading Parquet files")
        raise
    pf = pq.ParquetFile(path)
    i = 0
    for batch in pf.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            yield i, row
            i += 1


def _load_hf(spec: DataSpec) -> Iterator[tuple[int, dict]]:
    """A ``save_to_disk`` folder or a Hub dataset name."""
    import datasets  # heavy: only here

    p = Path(spec.path)
    if p.is_dir():
        try:
            ds = datasets.load_from_disk(str(p))
        except FileNotFoundError as e:
            raise InputError(f"{p}: not a datasets.save_to_disk folder nor a data file ({e})") from None
    else:
        try:
            ds = datasets.load_dataset(spec.path, spec.name, split=spec.split)
        except Exception as e:  # the Hub raises many types; all mean "could not load"
            raise InputError(
                f"could not load '{spec.path}': it is not a local file or folder, and loading it as a "
                f"Hub dataset failed ({type(e).__name__}: {e}). Pass a path to a .jsonl/.json/.csv/.parquet "
                f"file or a save_to_disk folder."
            ) from None
    if isinstance(ds, datasets.DatasetDict):
        if spec.split not in ds:
            raise InputError(f"{spec.path}: no split '{spec.split}' (has: {', '.join(ds)}); pass --split")
        ds = ds[spec.split]
    return _iter_datasets(ds)


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


def iter_raw(spec: DataSpec) -> Iterator[tuple[int, dict]]:
    """Yield ``(row_number, row_dict)`` from any supported source."""
    p = Path(resolve_data_path(spec.path))
    if p.is_file():
        suffix = p.suffix.lower()
        if suffix == ".jsonl" or (suffix == ".json" and _looks_like_jsonl(p)):
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
    raise InputError(f"{spec.path}: no such file or directory")


def _looks_like_jsonl(p: Path) -> bool:
    with p.open("r", encoding="utf-8") as fh:
        head = fh.read(1)
        while head and head.isspace():
            head = fh.read(1)
    return head == "{"


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
    cols = ", ".join(sorted(columns)) or "(none)"
    if not found:
        raise InputError(
            f"{spec.path}: cannot tell the data format from the columns ({cols}). Pass "
            f"--prompt-field COL --response-field COL, or --data-format one of {', '.join(FORMATS)}."
        )
    raise InputError(
        f"{spec.path}: ambiguous data format, the columns ({cols}) fit {' and '.join(found)}. "
        f"Pass --data-format {found[0]} (or another), or --prompt-field/--response-field."
    )


def _text(row: dict, key: str, where: str, *, required: bool = True) -> str:
    if key not in row or row[key] is None:
        if not required:
            return ""
        raise InputError(f"{where}: missing field '{key}' (row has: {', '.join(sorted(row)) or 'nothing'})")
    v = row[key]
    if not isinstance(v, str):
        if isinstance(v, (int, float)):
            v = str(v)
        else:
            raise InputError(f"{where}: field '{key}' must be a string, got {type(v).__name__}")
    return v


def normalise(row: dict, fmt: str, spec: DataSpec, where: str) -> tuple[list[dict], str, dict]:
    """Turn one raw row into ``(messages, answer, extra)`` or raise an :class:`InputError`."""
    if fmt == "alpaca":
        instr = _text(row, "instruction", where)
        inp = _text(row, "input", where, required=False)
        answer = _text(row, "output", where)
        user = f"{instr}\n\n{inp}" if inp.strip() else instr
        used = {"instruction", "input", "output"}
        messages = [{"role": "user", "content": user}]
    elif fmt == "gsm8k":
        messages = [{"role": "user", "content": _text(row, "question", where)}]
        answer = _text(row, "answer", where)
        used = {"question", "answer"}
    elif fmt == "prompt":
        pf = spec.prompt_field or "prompt"
        rf = spec.response_field or ("response" if "response" in row or "completion" not in row else "completion")
        messages = [{"role": "user", "content": _text(row, pf, where)}]
        answer = _text(row, rf, where)
        used = {pf, rf}
    elif fmt == "messages":
        messages, answer = _split_messages(row.get("messages"), where)
        used = {"messages"}
    else:  # pragma: no cover - DataSpec validates
        raise AssertionError(fmt)
    if not answer.strip():
        raise InputError(f"{where}: empty answer")
    if not messages[-1]["content"].strip():
        raise InputError(f"{where}: empty prompt")
    if spec.system_prompt and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": spec.system_prompt}, *messages]
    extra = {k: v for k, v in row.items() if k not in used}
    return messages, answer, extra


def _split_messages(msgs: Any, where: str) -> tuple[list[dict], str]:
    if msgs is None:
        raise InputError(f"{where}: missing field 'messages'")
    if isinstance(msgs, str):  # CSV cells hold JSON text
        try:
            msgs = json.loads(msgs)
        except json.JSONDecodeError:
            raise InputError(f"{where}: field 'messages' is not a list of {{role, content}} objects") from None
    if not isinstance(msgs, list) or not msgs:
        raise InputError(f"{where}: field 'messages' must be a non-empty list of {{role, content}} objects")
    clean = []
    for j, m in enumerate(msgs):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise InputError(f"{where}: messages[{j}] must be an object with 'role' and 'content'")
        if m["role"] not in ("system", "user", "assistant", "tool"):
            raise InputError(f"{where}: messages[{j}]: unknown role '{m['role']}'")
        clean.append({"role": m["role"], "content": "" if m["content"] is None else str(m["content"])})
    last_asst = max((j for j, m in enumerate(clean) if m["role"] == "assistant"), default=None)
    if last_asst is None:
        raise InputError(f"{where}: field 'messages' has no assistant turn to rewrite")
    context = clean[:last_asst]
    if not context or context[-1]["role"] != "user":
        raise InputError(f"{where}: the last assistant turn in 'messages' must follow a user turn")
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
    raw = iter_raw(spec)
    fmt: str | None = None
    seen: dict[str, int] = {}
    count = 0
    for i, row in raw:
        if spec.limit is not None and count >= spec.limit:
            break
        if fmt is None:
            fmt = detect_format(set(row), spec)
        where = f"{spec.path}: row {i + 1}"
        messages, answer, extra = normalise(row, fmt, spec, where)
        rid = content_id(messages, answer)
        k = seen.get(rid, 0) + 1
        seen[rid] = k
        if k > 1:
            rid = f"{rid}-{k}"
        yield Example(id=rid, index=i, messages=messages, answer=answer, extra=extra)
        count += 1
    if count == 0:
        raise InputError(f"{spec.path}: no rows")


def load_examples(spec: DataSpec) -> list[Example]:
    """Load every row (validating all of them before any work starts)."""
    return list(iter_examples(spec))


def count_rows(spec: DataSpec) -> int:
    """Count rows cheaply (for progress bars) by streaming the source once."""
    return sum(1 for _ in iter_examples(spec))
