"""Selection/fallback decisions and the resumable shard store."""

from __future__ import annotations

import json

import pytest

from sdft.errors import InputError
from sdft.select import Candidate, decide
from sdft.store import ShardStore, iter_jsonl, read_manifest
from sdft.verify.base import Verdict

OK = Verdict(True, "ok")


def cand(text, ok=True, reason="ok", nll=None):
    return Candidate(text, "stop", 3, OK if ok else Verdict(False, reason), nll)


def test_first_and_min_nll():
    cs = [cand("a", False, "wrong-answer"), cand("b", nll=1.5), cand("c", nll=0.7)]
    assert decide(cs, "orig", "first", "keep-original").response == "b"
    d = decide(cs, "orig", "min-nll", "keep-original")
    assert (d.status, d.response, d.chosen) == ("rewritten", "c", 2)


def test_fallback_and_drop_use_majority_reason():
    cs = [cand("a", False, "truncated"), cand("b", False, "wrong-answer"), cand("c", False, "wrong-answer")]
    d = decide(cs, "orig", "first", "keep-original")
    assert (d.status, d.response, d.reason) == ("fallback", "orig", "wrong-answer")
    d = decide(cs, "orig", "first", "drop")
    assert (d.status, d.response) == ("dropped", None)


def test_store_resume_and_finalize(tmp_path):
    out = tmp_path / "o.jsonl"
    s = ShardStore(out, "h1", {"a": 1})
    s.append([{"id": "x", "v": 1}, {"id": "y", "v": 2}])
    # a new store object (a rerun) sees the finished shard
    s2 = ShardStore(out, "h1", {"a": 1})
    assert s2.done_ids() == {"x", "y"}
    s2.append([{"id": "z", "v": 3}])
    s2.finalize({"kind": "t"}, expected_ids=["x", "y", "z"])
    assert [r["id"] for r in iter_jsonl(out)] == ["x", "y", "z"]
    assert read_manifest(out) == {"kind": "t"}
    assert not s2.parts.exists()


def test_store_refuses_other_config_unless_overwrite(tmp_path):
    out = tmp_path / "o.jsonl"
    ShardStore(out, "h1", {"temperature": 0}).append([{"id": "x"}])
    with pytest.raises(InputError, match="temperature"):
        ShardStore(out, "h2", {"temperature": 1})
    s = ShardStore(out, "h2", {"temperature": 1}, overwrite=True)
    assert s.done_ids() == set()


def test_store_finalize_detects_missing_rows(tmp_path):
    s = ShardStore(tmp_path / "o.jsonl", "h", {})
    s.append([{"id": "x"}])
    with pytest.raises(Exception, match="missing"):
        s.finalize({}, expected_ids=["x", "y"])
    assert not (tmp_path / "o.jsonl").exists()


def test_no_partial_shard_files_left(tmp_path):
    s = ShardStore(tmp_path / "o.jsonl", "h", {})
    s.append([{"id": str(i)} for i in range(100)])
    files = sorted(p.name for p in s.parts.iterdir())
    assert files == ["config.json", "shard-000001.jsonl"]
    assert json.loads((s.parts / "config.json").read_text())["config_hash"] == "h"
