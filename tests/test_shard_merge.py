"""Data-parallel sharding: two worker processes + merge equal one process (greedy)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sdft.errors import InputError
from sdft.rewrite import RewriteConfig, shard_of
from sdft.store import iter_jsonl, iter_records, merge_outputs, read_manifest

ROOT = Path(__file__).resolve().parents[1]


def test_shard_of_is_a_partition_by_id(in_other_process):
    ids = [f"{i:016x}" for i in range(1000)]
    owners = [[RewriteConfig(input="x", output="y", shard=f"{k}/3").in_shard(i) for k in range(3)] for i in ids]
    assert all(sum(o) == 1 for o in owners)
    assert min(sum(o[k] for o in owners) for k in range(3)) > 250  # roughly balanced
    # shard workers are separate processes: every one must give a row the same shard
    mine = [shard_of(i, 7) for i in ids[:50]]
    assert in_other_process("from sdft.rewrite import shard_of", f"[shard_of(i, 7) for i in {ids[:50]!r}]") == mine


@pytest.mark.parametrize("bad", ["2/2", "1", "a/b", "-1/2"])
def test_bad_shard_spec(bad):
    from sdft.errors import ConfigError

    with pytest.raises(ConfigError, match="shard must look like"):
        RewriteConfig(input="x", output="y", shard=bad)


def test_two_shard_processes_plus_merge_equal_single_process(tiny_model_dir, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {i} + 1?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"})
                            + "\n" for i in range(10)))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # greedy: hf draws samples from one generator per batch, so sampled candidates depend on how rows are
    # batched (vLLM seeds each request); the greedy ladder is batch-independent on both
    common = ["--model", str(tiny_model_dir), "--backend", "hf", "--max-new-tokens", "12", "--gap-rows", "0",
              "--samples", "1"]

    def cli(*args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "sdft.cli", "rewrite", str(data), *args, *common], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    procs = [cli("-o", str(tmp_path / f"p{k}.jsonl"), "--shard", f"{k}/2") for k in range(2)]
    procs.append(cli("-o", str(tmp_path / "single.jsonl")))
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    parts = [tmp_path / "p0.jsonl", tmp_path / "p1.jsonl"]
    assert all(len(list(iter_jsonl(p))) > 0 for p in parts)
    from sdft.data import DataSpec, iter_examples

    expected = [e.id for e in iter_examples(DataSpec(str(data)))]
    m = merge_outputs(parts, tmp_path / "merged.jsonl", expected_ids=expected)
    assert m["rows"]["total"] == 10 and m["merged_from"]
    merged = list(iter_jsonl(tmp_path / "merged.jsonl"))
    single = list(iter_jsonl(tmp_path / "single.jsonl"))
    assert merged == single
    assert list(iter_records(tmp_path / "merged.jsonl")) == list(iter_records(tmp_path / "single.jsonl"))
    assert read_manifest(tmp_path / "merged.jsonl")["rows"] == read_manifest(tmp_path / "single.jsonl")["rows"]

    # merge refuses a missing shard, a repeated shard, and an incomplete dataset
    with pytest.raises(InputError, match="shards must be"):
        merge_outputs(parts[:1], tmp_path / "m2.jsonl")
    with pytest.raises(InputError, match="more than one input|shards must be"):
        merge_outputs([parts[0], parts[0]], tmp_path / "m3.jsonl")
    with pytest.raises(InputError, match="missing"):
        merge_outputs(parts, tmp_path / "m4.jsonl", expected_ids=[*expected, "ffff"])
    # without --input: the shard manifests say which rows each shard must hold
    merge_outputs(parts, tmp_path / "m5.jsonl")
    assert list(iter_jsonl(tmp_path / "m5.jsonl")) == single
    recs = tmp_path / "p1.jsonl.records.jsonl"
    lines = recs.read_text().splitlines(keepends=True)
    recs.write_text("".join(lines[1:]))  # a row lost after the shard finished
    with pytest.raises(InputError, match="does not match"):
        merge_outputs(parts, tmp_path / "m6.jsonl")
    assert not (tmp_path / "m6.jsonl").exists()
    # the merged output is sdft's: --overwrite replaces it, a user's file at -o is never replaced
    with pytest.raises(InputError, match="exists"):
        merge_outputs(parts[:1] + parts[1:], tmp_path / "m5.jsonl")
    (tmp_path / "mine.jsonl").write_text("x\n")
    recs.write_text("".join(lines))
    with pytest.raises(InputError, match="not written by sdft"):
        merge_outputs(parts, tmp_path / "mine.jsonl", overwrite=True)
    assert (tmp_path / "mine.jsonl").read_text() == "x\n"
