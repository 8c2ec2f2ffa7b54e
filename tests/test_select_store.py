"""Selection/fallback decisions and the resumable shard store."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sdft.errors import InputError, SdftError
from sdft.select import Candidate, decide
from sdft.store import StageRunner, check_output, iter_jsonl, iter_records, read_manifest
from sdft.verify.base import Verdict

OK = Verdict(True, "ok")
ROOT = Path(__file__).resolve().parents[1]


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


def rec(i: int, status: str = "rewritten") -> dict:
    """A minimal sdft record: row ``i``, kept unless ``status`` says otherwise."""
    return {"id": f"r{i}", "index": i, "messages": [{"role": "user", "content": f"q{i}"}],
            "response": None if status == "dropped" else f"a{i}", "original": f"o{i}", "status": status,
            "reason": "ok" if status == "rewritten" else "wrong-answer"}


def runner(out, settings=None, **kw) -> StageRunner:
    return StageRunner(out, kind="sdft-test", settings=settings or {"t": 0}, **kw)


def test_runner_resume_and_finalize(tmp_path):
    out = tmp_path / "o.jsonl"
    with runner(out) as r:
        assert r.resume(["r0", "r1", "r2"]) is None
        r.append([rec(0), rec(1, "dropped")])
    # a new runner (a rerun) sees the finished shard and continues
    with runner(out) as r2:
        assert r2.resume(["r0", "r1", "r2"]) is None and r2.done_ids() == {"r0", "r1"}
        r2.append([rec(2, "fallback")])
        m = r2.finalize({"kind": "sdft-test"}, expected_ids=["r0", "r1", "r2"])
    assert [x["id"] for x in iter_records(out)] == ["r0", "r1", "r2"]
    assert [x["id"] for x in iter_jsonl(tmp_path / "o.jsonl.records.jsonl")] == ["r0", "r2"]
    assert [x["reason"] for x in iter_jsonl(tmp_path / "o.jsonl.rejected.jsonl")] == ["wrong-answer"]
    assert list(iter_jsonl(out)) == [{"messages": [{"role": "user", "content": "q0"},
                                                   {"role": "assistant", "content": "a0"}]},
                                     {"messages": [{"role": "user", "content": "q2"},
                                                   {"role": "assistant", "content": "a2"}]}]
    assert read_manifest(out) == m and m["layout"] == 2 and m["selection"]["rows"] == 3
    assert not (tmp_path / "o.jsonl.parts").exists()
    # the same work again is reused as is
    with runner(out) as r3:
        assert r3.resume(["r0", "r1", "r2"]) == m


def test_runner_refuses_other_settings_or_input_unless_overwrite(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("1\n")
    out = tmp_path / "o.jsonl"
    with runner(out, {"temperature": 0}, inputs=[str(data)]) as r:
        r.resume(["r0"])
        r.append([rec(0)])
    with pytest.raises(InputError, match=r"temperature \(0 -> 1\)"), runner(out, {"temperature": 1},
                                                                           inputs=[str(data)]) as r:
        r.resume(["r0"])
    data.write_text("2\n")
    with pytest.raises(InputError, match="input's content"), runner(out, {"temperature": 0}, inputs=[str(data)]) as r:
        r.resume(["r0"])
    with runner(out, {"temperature": 1}, inputs=[str(data)], overwrite=True) as r:
        assert r.resume(["r0"]) is None and r.done_ids() == set()


def test_finalize_detects_missing_rows_and_puts_nothing_in_place(tmp_path):
    out = tmp_path / "o.jsonl"
    with runner(out) as r:
        r.resume(["r0", "r1"])
        r.append([rec(0)])
        with pytest.raises(SdftError, match="miss 1 rows"):
            r.finalize({"kind": "sdft-test"}, expected_ids=["r0", "r1"])
    assert not out.exists() and not (tmp_path / "o.jsonl.manifest.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.jsonl.parts"]  # no temp files left behind


def test_no_partial_shard_files_left(tmp_path):
    with runner(tmp_path / "o.jsonl") as r:
        r.resume()
        r.append([rec(i) for i in range(100)])
        files = sorted(p.name for p in r.paths.parts.iterdir())
    assert files == ["config.json", "shard-000001.jsonl"]
    assert json.loads((tmp_path / "o.jsonl.parts" / "config.json").read_text())["config_hash"] == r.config_hash


def test_one_process_per_output(tmp_path):
    out = tmp_path / "o.jsonl"
    with runner(out) as r:
        r.resume()
        with pytest.raises(InputError, match="another sdft process"), runner(out):
            pass


def test_stage_cache_keyed_atomic_and_cleared_with_the_parts(tmp_path):
    out = tmp_path / "o.jsonl"
    with runner(out) as r:
        r.resume(["r0", "r1"])
        own = r.stage_cache("own")
        assert own.get("r0") is None
        own.put_many({"r0": {"text": "x"}, "r1": {"text": "y"}})
        r.stage_cache("hint").put_many({"r0": {"text": "h"}})
    with runner(out) as r:  # a rerun finds the stages of the rows in flight
        r.resume(["r0", "r1"])
        assert r.stage_cache("own").get("r1") == {"text": "y"} and "r0" in r.stage_cache("hint")
        r.append([rec(0)])
        assert r.stage_cache("own").get("r0") is None  # finished rows leave the cache
    with runner(out) as r:
        r.resume(["r0", "r1"])
        assert r.stage_cache("own").get("r0") is None and r.stage_cache("own").get("r1") == {"text": "y"}
        r.append([rec(1)])
        r.finalize({"kind": "sdft-test"})
    assert not (tmp_path / "o.jsonl.parts").exists()
    with pytest.raises(ValueError):
        runner(tmp_path / "p.jsonl").stage_cache("../x")


def test_stage_cache_survives_kill_9(tmp_path):
    out = tmp_path / "o.jsonl"
    code = f"""
import os, signal
from sdft.store import StageRunner
r = StageRunner({str(out)!r}, kind="sdft-test", settings={{"t": 0}})
r.__enter__()
r.resume(["r0", "r1"])
r.stage_cache("own").put_many({{"r0": {{"text": "kept"}}}})
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with runner(out) as r:  # the lock died with the process
        r.resume(["r0", "r1"])
        assert r.stage_cache("own").get("r0") == {"text": "kept"} and r.stage_cache("own").get("r1") is None


def test_outputs_follow_the_umask(tmp_path):
    out = tmp_path / "o.jsonl"
    old = os.umask(0o027)
    try:
        with runner(out) as r:
            r.resume(["r0"])
            r.append([rec(0)])
            r.finalize({"kind": "sdft-test"})
    finally:
        os.umask(old)
    for name in ("o.jsonl", "o.jsonl.records.jsonl", "o.jsonl.rejected.jsonl", "o.jsonl.manifest.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640, name


def test_foreign_files_are_never_replaced(tmp_path):
    out = tmp_path / "o.jsonl"
    out.write_text("mine\n")
    for overwrite in (False, True):
        with pytest.raises(InputError, match="not written by sdft"):
            runner(out, overwrite=overwrite)
    assert out.read_text() == "mine\n"
    (tmp_path / "o.jsonl.manifest.json").write_text("{not json")
    with pytest.raises(InputError, match="damaged"):
        check_output(out)


def test_overwrite_keeps_the_finished_output_until_the_new_one_replaces_it(tmp_path):
    out = tmp_path / "o.jsonl"
    with runner(out, {"t": 0}) as r:
        r.resume(["r0"])
        r.append([rec(0)])
        r.finalize({"kind": "sdft-test"})
    before = out.read_bytes()
    with runner(out, {"t": 1}, overwrite=True) as r:  # a new run that dies before it finishes
        assert r.resume(["r0"]) is None and r.done_ids() == set()
    assert out.read_bytes() == before and read_manifest(out)["settings"] == {"t": 0}
    with runner(out, {"t": 1}) as r:  # its rerun continues the new work and then replaces the old output
        r.resume(["r0"])
        r.append([{**rec(0), "response": "new"}])
        r.finalize({"kind": "sdft-test"})
    assert read_manifest(out)["settings"] == {"t": 1} and '"new"' in out.read_text()
