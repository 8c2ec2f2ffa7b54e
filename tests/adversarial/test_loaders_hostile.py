"""Data loaders against hostile files: every failure is one InputError line, never a traceback.

Each reported example is loaded in-process (the message must name the file, the line or row,
the field, what was expected and what to do) and through the CLI's entry point
(``sdft rewrite BAD -o out.jsonl --dry-run``: exit code 2, one stderr line, the input untouched,
no output written).
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from pathlib import Path

import pytest

from sdft.data import DataSpec, content_id, load_examples
from sdft.errors import InputError

from . import run_cli

ROOT = Path(__file__).resolve().parents[2]
ROW = b'{"question": "What is 2 + 2?", "answer": "4"}\n'


def _jsonl(*objs: object) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objs)


def _corrupt_parquet() -> bytes:
    return b"PAR1" + b"\x00\x13garbage pages" * 50 + b"PAR1"


# name -> (file name, bytes, fragments the one-line message must contain)
CASES: dict[str, tuple[str, bytes, list[str]]] = {
    "bad-utf8": ("d.jsonl", ROW + b'{"question": "caf\xe9?", "answer": "4"}\n', ["line 2", "UTF-8", "re-save"]),
    "bad-utf8-csv": ("d.csv", b"question,answer\nq,a\ncaf\xe9,b\n", ["line 3", "UTF-8"]),
    "utf16": ("d.jsonl", ROW.decode().encode("utf-16"), ["UTF-16", "UTF-8"]),
    "huge-int": ("d.jsonl", ROW + b'{"question": "q", "answer": "a", "n": ' + b"7" * 5000 + b"}\n",
                 ["line 2", "field 'n'", "5000 digits", "quote it"]),
    "huge-int-json": ("d.json", b'[{"question": "q", "answer": ' + b"7" * 5000 + b"}]",
                      ["row 1", "field 'answer'", "digits"]),
    "deep-nesting": ("d.jsonl", ROW + b'{"question": "q", "answer": "a", "x": ' + b"[" * 50_000
                     + b"]" * 50_000 + b"}\n", ["line 2", "nested", "flatten"]),
    "nesting-over-cap": ("d.jsonl", b'{"question": "q", "answer": "a", "x": ' + b"[" * 80 + b"]" * 80 + b"}\n",
                         ["line 1", "field 'x[0]", "nested more than 64"]),
    "corrupt-parquet": ("d.parquet", _corrupt_parquet(), ["not a readable Parquet file", "re-export"]),
    "truncated-line": ("d.jsonl", ROW + b'{"question": "q2", "ans', ["line 2", "malformed JSON"]),
    "garbage-line": ("d.jsonl", ROW + b"\x00\x01<<garbage>>\n" + ROW, ["line 2", "malformed JSON"]),
    "not-an-object": ("d.jsonl", ROW + b"[1, 2]\n", ["line 2", "expected a JSON object", "a list"]),
    "trailing-user-turn": ("d.jsonl", _jsonl({"messages": [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]}),
        ["row 1", "messages[2]", "user turn after the last assistant turn"]),
    "null-field": ("d.jsonl", _jsonl({"question": "q", "answer": None}), ["row 1", "field 'answer' is null"]),
    "wrong-type": ("d.jsonl", _jsonl({"question": "q", "answer": {"text": "4"}}),
                   ["row 1", "field 'answer' is an object", "expected text"]),
    "nan-answer": ("d.jsonl", b'{"question": "q", "answer": NaN}\n', ["field 'answer'", "finite"]),
    "csv-ragged": ("d.csv", b'question,answer\nq,"a",extra\n', ["line 2", "3 fields", "header has 2"]),
    "csv-unclosed-quote": ("d.csv", b'question,answer\nq,"a\n', ["line", "CSV"]),
    "bad-role": ("d.jsonl", _jsonl({"messages": [{"role": "wizard", "content": "a"}]}),
                 ["messages[0].role", "'wizard'", "expected one of"]),
}


def _check_message(message: str, path: Path, fragments: list[str]) -> None:
    assert "\n" not in message.strip(), message
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_file_is_one_input_error(tmp_path: Path, case: str) -> None:
    name, content, fragments = CASES[case]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError) as err:
        load_examples(DataSpec(str(path)))
    _check_message(str(err.value), path, fragments)
    assert "missing field" not in str(err.value)  # present-but-wrong fields are not "missing"


def _cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(args, cwd=ROOT, env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env or {})})


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_file_through_the_cli(tmp_path: Path, case: str) -> None:
    name, content, fragments = CASES[case]
    path = tmp_path / name
    path.write_bytes(content)
    out = tmp_path / "out.jsonl"
    proc = _cli(["rewrite", str(path), "-o", str(out), "--dry-run"])
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    _check_message(lines[0], path, fragments)
    assert path.read_bytes() == content  # the input is never touched
    assert not out.exists()


# --------------------------------------------------------------------- accepted hostile input


@pytest.mark.parametrize(("name", "content"), [
    ("d.jsonl", b"\xef\xbb\xbf" + ROW),
    ("d.json", b"\xef\xbb\xbf[" + ROW.strip() + b"]"),
    ("d.csv", b"\xef\xbb\xbfquestion,answer\nWhat is 2 + 2?,4\n"),
])
def test_utf8_bom_is_accepted(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    (ex,) = load_examples(DataSpec(str(path)))
    assert (ex.question, ex.answer) == ("What is 2 + 2?", "4")


def test_huge_numbers_in_other_fields_survive_downstream(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"question": "q", "answer": 42, "big": 1e309, "nan": NaN, "neg": -Infinity, '
                     b'"wide": ' + b"9" * 40 + b', "nested": {"xs": [1e309, ' + b"8" * 30 + b"]}}\n")
    (ex,) = load_examples(DataSpec(str(path)))
    assert ex.answer == "42"  # a number where text is expected is its text
    assert ex.extra["big"] == math.inf and math.isnan(ex.extra["nan"]) and ex.extra["neg"] == -math.inf
    assert ex.extra["wide"] == float("9" * 40)  # beyond 64 bits: a float, as JSON readers do
    assert ex.extra["nested"]["xs"][1] == float("8" * 30)
    # what the later steps do with a row: hash it, write it as JSON, store it with Arrow (--format hf)
    assert content_id(ex.messages, ex.answer) == ex.id
    again = json.loads(json.dumps(ex.to_dict()))
    assert again["extra"]["big"] == math.inf
    import pyarrow as pa

    table = pa.Table.from_pylist([ex.to_dict(), ex.to_dict()])
    assert table.num_rows == 2


def test_present_but_wrong_fields_are_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(_jsonl({"question": "q", "answer": "a"}, {"question": "q2"}))
    with pytest.raises(InputError, match=r"d.jsonl: row 2: missing field 'answer' \(row has: question\)"):
        load_examples(DataSpec(str(path)))
    path.write_bytes(ROW + b"\n\n" + _jsonl({"question": "q2", "answer": None}))  # blank lines: row 2 is line 4
    with pytest.raises(InputError, match=r"d.jsonl: row 2 \(line 4\): field 'answer' is null"):
        load_examples(DataSpec(str(path)))
    csv_path = tmp_path / "d.csv"
    csv_path.write_bytes(b"question,answer\nq,\n")
    with pytest.raises(InputError, match=r"d.csv: row 1 \(line 2\): field 'answer' has an empty answer"):
        load_examples(DataSpec(str(csv_path)))
    path.write_bytes(_jsonl({"question": "q", "answer": True}))
    with pytest.raises(InputError, match="field 'answer' is a boolean"):
        load_examples(DataSpec(str(path)))


# --------------------------------------------------------------------------- fail fast on paths


def test_typo_in_extensionless_path_fails_fast_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(InputError, match="HF_HUB_OFFLINE is set") as err:
        load_examples(DataSpec("my_dataa"))
    assert time.monotonic() - start < 2 and "\n" not in str(err.value)


def test_typo_fails_fast_when_the_hub_is_unreachable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    start = time.monotonic()
    with pytest.raises(InputError, match="the Hub cannot be reached"):
        load_examples(DataSpec("my_dataa"))
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("name", ["my data", "data\\train", "-dash", "a..b", "x" * 120])
def test_a_name_that_cannot_be_a_hub_id_is_not_sent_there(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(InputError, match="not a Hub dataset id"):
        load_examples(DataSpec(name))


def test_typo_through_the_cli(tmp_path: Path) -> None:
    proc = _cli(["rewrite", "my_dataa", "-o", str(tmp_path / "o.jsonl"), "--dry-run"],
                env={"HF_HOME": str(tmp_path / "hf")})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "my_dataa" in proc.stderr
