"""Data loading: formats, detection, stable ids, and errors that name file, row and field."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from sdft.data import DataSpec, content_id, detect_format, iter_examples, load_examples
from sdft.errors import InputError


def write_jsonl(p: Path, rows: list[dict]) -> Path:
    p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return p


@pytest.mark.parametrize(
    "row, fmt, question, answer",
    [
        ({"instruction": "Add", "input": "2 and 3", "output": "5"}, "alpaca", "Add\n\n2 and 3", "5"),
        ({"instruction": "Say hi", "input": "", "output": "hi"}, "alpaca", "Say hi", "hi"),
        ({"question": "1+1?", "answer": "2\n#### 2"}, "gsm8k", "1+1?", "2\n#### 2"),
        ({"prompt": "p", "response": "r"}, "prompt", "p", "r"),
        ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                       {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]},
         "messages", "c", "d"),
    ],
)
def test_formats_detected_and_normalised(tmp_path, row, fmt, question, answer):
    p = write_jsonl(tmp_path / "d.jsonl", [row])
    (ex,) = load_examples(DataSpec(str(p)))
    assert ex.question == question
    assert ex.answer == answer
    assert detect_format(set(row), DataSpec(str(p))) == fmt


def test_messages_context_keeps_earlier_turns(tmp_path):
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"},
            {"role": "assistant", "content": "d"}]
    (ex,) = load_examples(DataSpec(str(write_jsonl(tmp_path / "m.jsonl", [{"messages": msgs}]))))
    assert ex.messages == msgs[:4]


def test_prompt_fields_and_extra_columns(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"q": "x", "a": "y", "test": "assert True"}])
    (ex,) = load_examples(DataSpec(str(p), prompt_field="q", response_field="a"))
    assert (ex.question, ex.answer, ex.extra) == ("x", "y", {"test": "assert True"})


def test_csv_json_parquet_and_save_to_disk_give_same_ids(tmp_path):
    rows = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(3)]
    jl = write_jsonl(tmp_path / "d.jsonl", rows)
    js = tmp_path / "d.json"
    js.write_text(json.dumps(rows))
    cs = tmp_path / "d.csv"
    with cs.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["question", "answer"])
        w.writeheader()
        w.writerows(rows)
    import datasets

    ds = datasets.Dataset.from_list(rows)
    pq = tmp_path / "d.parquet"
    ds.to_parquet(str(pq))
    disk = tmp_path / "disk"
    ds.save_to_disk(str(disk))
    ids = [[e.id for e in load_examples(DataSpec(str(p)))] for p in (jl, js, cs, pq, disk)]
    assert all(i == ids[0] for i in ids)
    assert len(set(ids[0])) == 3


def test_ids_stable_unique_and_not_positional(tmp_path):
    rows = [{"question": "same", "answer": "x"}, {"question": "other", "answer": "y"},
            {"question": "same", "answer": "x"}]
    ids = [e.id for e in load_examples(DataSpec(str(write_jsonl(tmp_path / "a.jsonl", rows))))]
    assert len(set(ids)) == 3 and ids[2] == ids[0] + "-2"
    # reordering distinct rows keeps each row's id
    re = [e.id for e in load_examples(DataSpec(str(write_jsonl(tmp_path / "b.jsonl", rows[::-1]))))]
    assert re[1] == ids[1]
    assert ids[1] == content_id([{"role": "user", "content": "other"}], "y")


def test_limit_and_system_prompt(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"question": f"q{i}", "answer": "a"} for i in range(5)])
    exs = load_examples(DataSpec(str(p), limit=2, system_prompt="be brief"))
    assert len(exs) == 2 and exs[0].messages[0] == {"role": "system", "content": "be brief"}


@pytest.mark.parametrize(
    "content, suffix, fragments",
    [
        ('{"question": "q", "answer": "a"}\n{"question": "q2"\n', ".jsonl", ["line 2", "malformed JSON"]),
        ('{"question": "q", "answer": "a"}\n{"question": "q2"}\n', ".jsonl", ["row 2", "missing field 'answer'"]),
        ('{"question": "q", "answer": "  "}\n', ".jsonl", ["row 1", "empty answer"]),
        ('{"foo": 1, "bar": 2}\n', ".jsonl", ["cannot tell the data format", "--prompt-field"]),
        ('{"question": "q", "answer": "a", "prompt": "p", "response": "r"}\n', ".jsonl",
         ["ambiguous", "--data-format"]),
        ('{"messages": [{"role": "user", "content": "hi"}]}\n', ".jsonl", ["no assistant turn"]),
        ("question,answer\n", ".csv", ["no rows"]),
        ("a", ".txt", ["unsupported file type"]),
    ],
)
def test_bad_input_errors_name_file_row_field(tmp_path, content, suffix, fragments):
    p = tmp_path / f"bad{suffix}"
    p.write_text(content)
    with pytest.raises(InputError) as e:
        load_examples(DataSpec(str(p)))
    msg = str(e.value)
    assert str(p) in msg
    for f in fragments:
        assert f in msg


def test_missing_path_and_unknown_format(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_examples(DataSpec(str(tmp_path / "nope.jsonl")))
    with pytest.raises(InputError, match="unknown data format"):
        DataSpec("x.jsonl", format="yaml")


def test_bundled_example_dataset():
    exs = list(iter_examples(DataSpec("example:arith")))
    assert len(exs) == 64
    assert all(e.answer.rsplit("####", 1)[1].strip().lstrip("-").isdigit() for e in exs)


# ---------------------------------------------------------------------------------------------
# the one reader: sdft's own files and caches read their lines through sdft.data too


def test_own_files_fail_in_the_same_style_and_caches_skip_torn_lines(tmp_path):
    from sdft.data import MAX_NESTING, iter_json_lines
    from sdft.eval.cache import KeyedLog
    from sdft.store import iter_jsonl

    good = [{"key": "a", "v": 1}, {"key": "b", "v": 2}]
    f = tmp_path / "o.jsonl"
    for body, where in ((b'{"key": "a"}\n{"key": \n', r"line 2: malformed JSON"),
                        (b'{"key": "a"}\n\n[1, 2]\n', r"line 3: expected a JSON object \(\{\.\.\.\}\), got a list"),
                        (b'{"key": "a"}\n{"key": "\xff"}\n', r"line 2, column 10: byte 0xff is not valid UTF-8")):
        f.write_bytes(body)
        with pytest.raises(InputError, match=where) as e:  # a user's data file: how to fix it
            list(iter_json_lines(f))
        assert str(e.value).startswith(f"{f}: ")
        with pytest.raises(InputError, match=where + r".*the file is damaged or truncated"):  # sdft's own file
            list(iter_jsonl(f))
    with pytest.raises(InputError, match=r"cannot be read"):
        list(iter_jsonl(tmp_path))
    # a record nests its source row's fields a few levels deeper than the row itself did
    deep: object = "leaf"
    for _ in range(MAX_NESTING):
        deep = [deep]
    f.write_text(json.dumps({"id": "r0", "record": {"extra": {"x": deep}}}) + "\n")
    assert next(iter_jsonl(f))["id"] == "r0"
    with pytest.raises(InputError, match=r"line 1: field 'record\.extra\.x.*' is nested more than"):
        list(iter_json_lines(f))
    # an append-only cache keeps every whole line and skips the torn and damaged ones
    log = tmp_path / "cache.jsonl"
    log.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in good[:1]) + b'{"key": "\xff"}\n'
                    + b"[3]\n" + json.dumps(good[1]).encode() + b'\n{"key": "c", "v"')
    assert KeyedLog(log).rows == {r["key"]: r for r in good}
