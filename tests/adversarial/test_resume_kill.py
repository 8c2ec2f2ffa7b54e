"""Resume never trusts stale state, and kill -9 anywhere loses nothing and changes nothing.

Real ``python -m sdft`` processes on the tiny model (transformers backend: it starts in
seconds). Refused commands exit 2 with one ``error:`` line and leave every file as it was;
runs killed with SIGKILL at seeded random points and rerun end with exactly the files of an
uninterrupted run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from sdft.store import iter_jsonl, iter_records, read_manifest

from .test_ownership import refused, snapshot

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--backend", "hf", "--max-new-tokens", "8", "--gap-rows", "0"]


def rows(n: int, start: int = 0) -> list[dict]:
    return [{"question": f"What is {i} plus {i}?", "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"}
            for i in range(start, start + n)]


def write(p: Path, data: list[dict]) -> Path:
    p.write_text("".join(json.dumps(r) + "\n" for r in data))
    return p


def argv(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "sdft", *map(str, args)]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}


def sdft(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(argv(*args), env=env(), capture_output=True, text=True, timeout=300)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def outputs(out: Path) -> dict[str, bytes | None]:
    return snapshot(out, *(Path(f"{out}{s}") for s in (".records.jsonl", ".rejected.jsonl", ".manifest.json")))


def test_edited_input_never_reuses_or_mixes_old_rows(tiny_model_dir, tmp_path):
    data = write(tmp_path / "d.jsonl", rows(3))
    out = tmp_path / "o.jsonl"
    model = ["--model", tiny_model_dir]
    ok(sdft("rewrite", data, "-o", out, *model, *FAST))
    write(data, rows(2) + rows(1, start=7))  # one row edited: same row count, new content
    before = outputs(out) | snapshot(data)
    refused(sdft("rewrite", data, "-o", out, *model, *FAST), "the input's content", "--overwrite")
    assert outputs(out) | snapshot(data) == before
    ok(sdft("rewrite", data, "-o", out, *model, *FAST, "--overwrite"))
    got = list(iter_records(out))
    assert [r["original"] for r in got] == [r["answer"] for r in rows(2) + rows(1, start=7)]
    assert len({r["id"] for r in got}) == len({r["index"] for r in got}) == 3


def test_smaller_limit_never_cuts_a_finished_output_back(tiny_model_dir, tmp_path):
    data = write(tmp_path / "d.jsonl", rows(4))
    out = tmp_path / "o.jsonl"
    model = ["--model", tiny_model_dir]
    ok(sdft("rewrite", data, "-o", out, *model, *FAST, "--limit", "3"))
    before = outputs(out) | snapshot(data)
    refused(sdft("rewrite", data, "-o", out, *model, *FAST, "--limit", "2"), "never cut back")
    assert outputs(out) | snapshot(data) == before


def test_shard_workers_never_share_an_output_and_merge_needs_every_row(tiny_model_dir, tmp_path):
    data = write(tmp_path / "d.jsonl", rows(6))
    model = ["--model", tiny_model_dir]
    parts = [tmp_path / "p0.jsonl", tmp_path / "p1.jsonl"]
    ok(sdft("rewrite", data, "-o", parts[0], *model, *FAST, "--shard", "0/2"))
    before = outputs(parts[0]) | snapshot(data)
    # a second worker pointed at the first one's output
    refused(sdft("rewrite", data, "-o", parts[0], *model, *FAST, "--shard", "1/2"), 'shard ("0/2" -> "1/2")')
    assert outputs(parts[0]) | snapshot(data) == before
    # shard 1 of a smaller selection: config hashes agree, but rows of shard 1 would be missing
    ok(sdft("rewrite", data, "-o", parts[1], *model, *FAST, "--shard", "1/2", "--limit", "4"))
    refused(sdft("merge", *parts, "-o", tmp_path / "m.jsonl"), "row selections")
    ok(sdft("rewrite", data, "-o", parts[1], *model, *FAST, "--shard", "1/2", "--overwrite"))
    ok(sdft("merge", *parts, "-o", tmp_path / "m.jsonl"))
    assert sorted(r["index"] for r in iter_records(tmp_path / "m.jsonl")) == list(range(6))
    # without --input: a row lost from one shard's records after it finished
    recs = Path(f"{parts[1]}.records.jsonl")
    recs.write_text("".join(recs.read_text().splitlines(keepends=True)[1:]))
    refused(sdft("merge", *parts, "-o", tmp_path / "m2.jsonl"), "does not match")
    refused(sdft("merge", parts[0], "-o", tmp_path / "m3.jsonl"), "shards must be 0..N-1")
    assert not (tmp_path / "m2.jsonl").exists() and not (tmp_path / "m3.jsonl").exists()


def _shards(out: Path) -> list[Path]:
    return sorted(Path(f"{out}.parts").glob("shard-*.jsonl"))


def _kill_at(args: list[str], out: Path, at_shard: int, extra_s: float) -> int | None:
    """Start ``args``, SIGKILL it once ``at_shard`` shards exist plus ``extra_s``.

    Returns:
        The number of shards on disk at the kill, or None when the run finished first.
    """
    proc = subprocess.Popen(args, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and len(_shards(out)) < at_shard:
        time.sleep(0.02)
    time.sleep(extra_s)
    if proc.poll() is not None:
        assert proc.returncode == 0, proc.stderr.read()
        return None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return len(_shards(out))


def _killed(args: list[str], out: Path, n_shards: int, seed: int, kills: int) -> list[int]:
    """Kill ``args`` ``kills`` times at seeded random points (rising shard counts, random delays).

    Returns:
        The shards on disk at each kill that landed.
    """
    rng = random.Random(seed)
    landed = []
    for at in sorted(rng.sample(range(1, n_shards // 2), kills)):
        n = _kill_at(args, out, max(at, len(_shards(out))), rng.uniform(0, 0.4))
        if n is None:
            break  # finished before the kill: nothing more to interrupt
        landed.append(n)
    return landed


def test_rewrite_killed_at_random_points_equals_an_uninterrupted_run(tiny_model_dir, tmp_path):
    data = write(tmp_path / "d.jsonl", rows(24))
    src = snapshot(data)
    base = ["--model", tiny_model_dir, "--backend", "hf", "--max-new-tokens", "12", "--gap-rows", "0",
            "--batch-size", "2"]
    clean, chaos = tmp_path / "clean.jsonl", tmp_path / "chaos.jsonl"
    ok(sdft("rewrite", data, "-o", clean, *base))
    args = argv("rewrite", data, "-o", chaos, *base)
    first = _kill_at(args, chaos, 2, 0.1)
    assert first is not None and 2 <= first < 12 and not chaos.exists(), first
    # a shard damaged after the crash (a truncated line) is reported, not trusted and not deleted
    last = _shards(chaos)[-1]
    last.write_bytes(last.read_bytes()[:-5])
    refused(sdft("rewrite", data, "-o", chaos, *base), str(last), "Delete")
    last.unlink()
    # the input edited while parts are pending: refused, never mixed
    write(data, rows(23) + rows(1, start=99))
    refused(sdft("rewrite", data, "-o", chaos, *base), "the input's content")
    write(data, rows(24))
    landed = _killed(args, chaos, 12, seed=0, kills=2)
    assert all(n < 12 for n in landed), landed
    again = ok(sdft("rewrite", data, "-o", chaos, *base))
    assert "resuming" in again.stderr
    assert snapshot(data) == src
    got = list(iter_records(chaos))
    assert len(got) == len({r["id"] for r in got}) == 24 and [r["index"] for r in got] == list(range(24))
    for suffix in ("", ".records.jsonl", ".rejected.jsonl"):
        assert Path(f"{chaos}{suffix}").read_bytes() == Path(f"{clean}{suffix}").read_bytes(), suffix
    a, b = read_manifest(clean), read_manifest(chaos)
    def unnamed(m: dict) -> dict:
        return {role: {k: v for k, v in f.items() if k != "name"} for role, f in m["files"].items()}

    assert (a["rows"], a["reasons"], unnamed(a)) == (b["rows"], b["reasons"], unnamed(b))
    assert not Path(f"{chaos}.parts").exists()


def test_replay_killed_at_random_points_equals_an_uninterrupted_run(tiny_model_dir, tmp_path):
    base = ["--model", tiny_model_dir, "--backend", "hf", "--num", "1000", "--batch-size", "4", "--max-rounds", "6",
            "--query-max-tokens", "8", "--answer-max-tokens", "8", "--allow-non-questions", "--seed", "3"]
    clean, chaos = tmp_path / "clean.jsonl", tmp_path / "chaos.jsonl"
    ok(sdft("replay", "-o", clean, *base))
    landed = _killed(argv("replay", "-o", chaos, *base), chaos, 6, seed=1, kills=2)
    assert any(0 < n < 6 for n in landed), f"the kills must land mid-run: {landed}"
    ok(sdft("replay", "-o", chaos, *base))
    got = list(iter_records(chaos))
    assert len(got) == len({r["id"] for r in got}) == 24
    for suffix in ("", ".records.jsonl", ".rejected.jsonl"):
        assert Path(f"{chaos}{suffix}").read_bytes() == Path(f"{clean}{suffix}").read_bytes(), suffix
    assert read_manifest(chaos)["filters"] == read_manifest(clean)["filters"]
    assert len(list(iter_jsonl(chaos))) == read_manifest(chaos)["rows"]["kept"]
