"""Property tests: random bytes, JSON and nested structures into every loader and format, random
and pathological text into every verifier. Loaders raise nothing but InputError; verifiers
raise nothing at all, and no call exceeds its limit.

Derandomized with fixed example counts (CI-stable, about half a minute in all; the fast tier runs a
quarter of them); no example database is written.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sdft.data import DataSpec, load_examples  # noqa: E402
from sdft.errors import InputError  # noqa: E402
from sdft.refusal import is_refusal  # noqa: E402
from sdft.verify import DEFAULT_BUDGET_S, find_meta_talk, get_verifier, guard, verify  # noqa: E402
from sdft.verify.base import Verdict  # noqa: E402
from sdft.verify.math import extract_answer  # noqa: E402
from sdft.verify.simple import extract_choice  # noqa: E402
from sdft.verify.toolcall import parse_calls  # noqa: E402
from sdft.verify.watchdog import warm_up  # noqa: E402

CHECK_LIMIT_S = 2.0  # a direct check
VERIFY_LIMIT_S = DEFAULT_BUDGET_S + 1.0  # verify(): its budget, plus stopping a worker that overran it


def examples(full: int) -> int:
    """``full`` examples, scaled by the loaded hypothesis profile: the default profile (100) runs them
    all; the fast tier's profile (``pytest --fast``, tests/conftest.py) a deterministic quarter."""
    return max(10, full * settings.default.max_examples // 100)


FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=examples(60),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

# ----------------------------------------------------------------------------------- loaders

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)
field_names = st.sampled_from(["question", "answer", "instruction", "input", "output", "prompt", "response",
                               "messages", "role", "content", "x"])
rows = st.dictionaries(field_names, json_values | st.text(max_size=30), max_size=5)


def deep(depth: int) -> Any:
    value: Any = "leaf"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


nested_rows = st.builds(lambda d, q: {"question": q, "answer": "4", "x": deep(d)},
                        st.integers(0, 3000), st.text(min_size=1, max_size=10))


def _load(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    try:
        load_examples(DataSpec(str(path)))
    except InputError as e:
        assert "\n" not in str(e).strip(), str(e)
    finally:
        path.unlink()


@FUZZ
@given(content=st.binary(max_size=400), suffix=st.sampled_from([".jsonl", ".json", ".csv", ".parquet"]))
def test_random_bytes_in_every_format(tmp_path: Path, content: bytes, suffix: str) -> None:
    _load(tmp_path, f"d{suffix}", content)


def _csv_bytes(items: list[dict]) -> bytes:
    out = io.StringIO()
    keys = sorted({str(k) for row in items for k in row})
    writer = csv.writer(out)
    writer.writerow(keys)
    for row in items:
        writer.writerow([json.dumps(row[k]) if not isinstance(row.get(k), str) and k in row else row.get(k, "")
                         for k in keys])
    return out.getvalue().encode("utf-8", "surrogatepass")


@FUZZ
@given(items=st.lists(rows | nested_rows, min_size=1, max_size=4))
def test_random_rows_in_every_format(tmp_path: Path, items: list[dict]) -> None:
    try:
        lines = "".join(json.dumps(r) + "\n" for r in items)
    except (ValueError, RecursionError):
        return
    _load(tmp_path, "d.jsonl", lines.encode("utf-8", "surrogatepass"))
    _load(tmp_path, "d.json", json.dumps(items).encode("utf-8", "surrogatepass"))
    _load(tmp_path, "d.csv", _csv_bytes(items))
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pa.Table.from_pylist(items)
        pq.write_table(table, tmp_path / "d.parquet")
    except (pa.ArrowException, ValueError, TypeError, OverflowError, RecursionError):
        return  # rows Arrow cannot hold cannot be written as Parquet either
    _load(tmp_path, "d.parquet", (tmp_path / "d.parquet").read_bytes())


@FUZZ
@given(values=st.lists(json_values, min_size=1, max_size=5))
def test_random_json_documents(tmp_path: Path, values: list[Any]) -> None:
    text = "\n".join(json.dumps(v) for v in values).encode("utf-8", "surrogatepass")
    _load(tmp_path, "d.jsonl", text)
    _load(tmp_path, "d.json", json.dumps(values).encode("utf-8", "surrogatepass"))


# --------------------------------------------------------------------------------- verifiers


def _times(unit: str, n: int) -> str:
    return unit * n


pathological = st.one_of(
    st.integers(1, 200_000).map(lambda n: "9" * n),
    st.integers(1, 50_000).map(lambda n: "#### 1e" + "9" * min(n, 12) + " " + "{" * n),
    st.builds(_times, st.sampled_from(["\\boxed{", "{", "[", "(", "f(", "[{", '"', "'", "\\frac{1}{", "^{9",
                                       "the answer is ", "answer ", "Answer: (A) ", "```\n", "#### ",
                                       "<tool_call>", '{"name": "f", "arguments": ', "I'm sorry, ",
                                       "the reference answer ", " ", "\n", "1,", "e9"]),
              st.integers(1, 60_000)),
    st.lists(st.sampled_from(["\\boxed{", "}", "f(", ")", "[", "]", "{", "'", '"', "9", "e", "!", "^", "x=",
                              "0x", "ff", "answer is", " ", "\n", "####", "```"]), max_size=300).map("".join),
)
texts = st.text(max_size=300) | pathological
VERIFIERS = {name: get_verifier(name, **({"pattern": r"(\d+)\s*$"} if name == "regex" else {}))
             for name in ("math", "tool-call", "exact", "regex", "choice", "none")}
REFERENCES = ["#### 72", "get_weather(city='Paris')", "The answer is (C)", "72"]


def _bounded(fn: Any, *args: Any) -> Any:
    # A worker stopped after an overrun restarts outside any limit: measure the check, not that.
    warm_up(getattr(args[-1], "prepare", None) if fn is verify else None)
    start = time.monotonic()
    result = fn(*args)
    elapsed = time.monotonic() - start
    assert elapsed < (VERIFY_LIMIT_S if fn is verify else CHECK_LIMIT_S), (fn, elapsed)
    return result


@settings(FUZZ, max_examples=examples(100))
@given(text=texts, reference=st.sampled_from(REFERENCES) | texts)
def test_random_text_into_every_verifier(text: str, reference: str) -> None:
    for verifier in VERIFIERS.values():
        assert isinstance(_bounded(verifier.check, text, reference, {}), Verdict)
        assert isinstance(_bounded(verify, text, "stop", reference, {}, verifier), Verdict)


@settings(FUZZ, max_examples=examples(100))
@given(text=texts)
def test_random_text_into_every_extractor_and_scanner(text: str) -> None:
    _bounded(extract_answer, text)
    _bounded(parse_calls, text)
    _bounded(extract_choice, text)
    _bounded(find_meta_talk, text)
    _bounded(is_refusal, text)
    assert isinstance(_bounded(guard, text, "length", text), Verdict)
