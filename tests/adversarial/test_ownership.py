"""sdft deletes or replaces only what it wrote, and bad paths fail with one line, not a traceback.

Each test drives the real CLI entry point (``sdft ...``, in process; ``python -m sdft`` where the
process matters) the way a user would, expects exit code 2 with a one-line ``error:`` and no
traceback, and shows the inputs byte-identical afterwards.
Rewrites use ``--model /nonexistent/model``: these refusals must come before any model is
resolved or loaded, so reaching the model would fail with another message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sdft.store import StageRunner, iter_jsonl

from . import run_cli

ROOT = Path(__file__).resolve().parents[2]
NO_MODEL = ["--model", "/nonexistent/model", "--backend", "hf"]
ROWS = [{"question": f"What is {i} + {i}?", "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"} for i in range(3)]


def sdft(*args: str | Path, cwd: Path | None = None, umask: int | None = None) -> subprocess.CompletedProcess:
    """``sdft ARGS``: through the entry point in this process, or as ``python -m sdft`` under ``umask``."""
    if umask is None:
        return run_cli(list(args), cwd=cwd, env={"COLUMNS": "200"})
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "sdft", *map(str, args)], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=300, preexec_fn=lambda: os.umask(umask))


def refused(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit code 2, one ``error:`` (last, a line or a list of every problem found), no traceback; returns it."""
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2, text
    assert "Traceback" not in text, text
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [i for i, line in enumerate(lines) if line.startswith("error:")]
    assert len(errors) == 1, text
    block = lines[errors[0]:]  # "error: invalid configuration (N problems):" then "  - ..." per problem
    assert len(block) == 1 or all(line.startswith("  - ") for line in block[1:]), text
    error = "\n".join(block)
    for n in needles:
        assert n in error, (n, error)
    return error


def snapshot(*paths: Path) -> dict[str, bytes | None]:
    """Every file under ``paths`` with its bytes (None: the path does not exist)."""
    out: dict[str, bytes | None] = {}
    for p in paths:
        if p.is_dir():
            out.update({str(f): f.read_bytes() for f in sorted(p.rglob("*")) if f.is_file()})
            out[str(p)] = b"<dir>"
        else:
            out[str(p)] = p.read_bytes() if p.exists() else None
    return out


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    p = tmp_path / "data.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return p


def test_hf_format_never_deletes_a_folder_it_did_not_write(tmp_path):
    import datasets

    folder = tmp_path / "dataset"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(folder))
    runs = tmp_path / "runs"
    (runs / "old").mkdir(parents=True)
    (runs / "old" / "model.bin").write_bytes(b"weights")
    before = snapshot(folder, runs)
    # -o the input dataset folder itself
    refused(sdft("rewrite", folder, "-o", folder, "--format", "hf", *NO_MODEL, "--overwrite"), "the input")
    # -o an existing folder sdft did not write (also without an extension)
    for extra in ([], ["--overwrite"]):
        refused(sdft("rewrite", folder, "-o", runs, "--format", "hf", *NO_MODEL, *extra), "not written by sdft")
    assert snapshot(folder, runs) == before


def test_output_that_is_the_input_is_refused_before_any_work(data, tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.jsonl").symlink_to(data)
    os.link(data, tmp_path / "hard.jsonl")
    before = snapshot(data)
    for out in (data, tmp_path / "sub" / ".." / "data.jsonl", tmp_path / "link.jsonl", tmp_path / "hard.jsonl"):
        for extra in ([], ["--overwrite"]):
            refused(sdft("rewrite", data, "-o", out, *NO_MODEL, *extra), "the input")
    # a relative path from another working directory
    refused(sdft("rewrite", data, "-o", "../data.jsonl", *NO_MODEL, "--overwrite", cwd=tmp_path / "sub"), "the input")
    assert snapshot(data) == before and (tmp_path / "link.jsonl").is_symlink()


def test_existing_file_sdft_did_not_write_is_never_replaced(data, tmp_path):
    mine = tmp_path / "notes.jsonl"
    mine.write_text('{"my": "notes"}\n')
    before = snapshot(data, mine)
    for extra in ([], ["--overwrite"]):
        refused(sdft("rewrite", data, "-o", mine, *NO_MODEL, *extra), "not written by sdft")
        refused(sdft("replay", "-o", mine, *NO_MODEL, *extra), "not written by sdft")
    # a side file of the output path that is the user's is protected the same way
    (tmp_path / "out.jsonl.rejected.jsonl").write_text("mine too\n")
    refused(sdft("rewrite", data, "-o", tmp_path / "out.jsonl", *NO_MODEL, "--overwrite"), "rejected.jsonl")
    assert snapshot(data, mine) == before and (tmp_path / "out.jsonl.rejected.jsonl").read_text() == "mine too\n"


def _shard_outputs(tmp_path: Path) -> list[Path]:
    """Two finished shard outputs of one run, written by sdft's own stage runner."""
    from sdft.rewrite import shard_of

    ids = [f"row{i}" for i in range(6)]
    parts = []
    for k in range(2):
        out = tmp_path / f"part{k}.jsonl"
        mine = [i for i in ids if shard_of(i, 2) == k]
        with StageRunner(out, kind="sdft-rewrite", settings={"s": 1}, shard=f"{k}/2") as r:
            r.resume(mine)
            r.append([{"id": i, "index": ids.index(i), "messages": [{"role": "user", "content": i}], "response": "a",
                       "original": "a", "status": "fallback", "reason": "wrong-answer"} for i in mine])
            r.finalize({"kind": "sdft-rewrite", "rows": {"total": len(mine), "fallback": len(mine)},
                        "input_rows": len(ids)})
        parts.append(out)
    return parts


def test_outputs_follow_the_umask(tmp_path):
    parts = _shard_outputs(tmp_path)
    for mask, mode in ((0o022, 0o644), (0o077, 0o600)):
        out = tmp_path / f"merged-{mask:o}.jsonl"
        proc = sdft("merge", *parts, "-o", out, umask=mask)
        assert proc.returncode == 0, proc.stderr
        for f in (out, Path(f"{out}.records.jsonl"), Path(f"{out}.rejected.jsonl"), Path(f"{out}.manifest.json")):
            assert f.stat().st_mode & 0o777 == mode, (f, oct(f.stat().st_mode))
    assert len(list(iter_jsonl(tmp_path / "merged-22.jsonl"))) == 6


def test_unwritable_output_or_a_parent_that_is_a_file(data, tmp_path):
    before = snapshot(data)
    refused(sdft("rewrite", data, "-o", "/proc/sdft-out/out.jsonl", *NO_MODEL), "cannot write")
    notes = tmp_path / "notes.txt"
    notes.write_text("a file\n")
    refused(sdft("rewrite", data, "-o", notes / "out.jsonl", *NO_MODEL), "is a file, not a folder")
    refused(sdft("rewrite", data, "-o", data / "out.jsonl", *NO_MODEL), "the input")
    if os.geteuid() != 0:  # root writes through permission bits
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        refused(sdft("rewrite", data, "-o", ro / "out.jsonl", *NO_MODEL), "no write permission")
    assert snapshot(data) == before


def test_output_path_that_is_a_folder_fails_before_any_work(data, tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    refused(sdft("rewrite", data, "-o", folder, *NO_MODEL), "is a folder")
    refused(sdft("replay", "-o", folder, *NO_MODEL), "is a folder")
    assert list(folder.iterdir()) == []


def test_merge_refuses_a_truncated_shard_line(tmp_path):
    parts = _shard_outputs(tmp_path)
    recs = Path(f"{parts[1]}.records.jsonl")
    recs.write_bytes(recs.read_bytes()[:-7])  # a line cut short, as by a full disk
    before = snapshot(*parts, recs)
    refused(sdft("merge", *parts, "-o", tmp_path / "m.jsonl"), "does not match")
    # the records' own manifest entry forged to match: the line itself is then reported
    m = json.loads(Path(f"{parts[1]}.manifest.json").read_text())
    m["files"]["records"].update(bytes=recs.stat().st_size, sha256=__import__("hashlib").sha256(
        recs.read_bytes()).hexdigest())
    Path(f"{parts[1]}.manifest.json").write_text(json.dumps(m))
    refused(sdft("merge", *parts, "-o", tmp_path / "m.jsonl"), "malformed JSON", "line")
    assert snapshot(recs) == {str(recs): before[str(recs)]} and not (tmp_path / "m.jsonl").exists()


def test_merge_and_inspect_refuse_a_corrupt_manifest(tmp_path):
    parts = _shard_outputs(tmp_path)
    man = Path(f"{parts[0]}.manifest.json")
    for bad in ("{truncated", '{"kind": "sdft-rewrite", "rows": "many"}', "[1, 2]", "\xff\xfe"):
        man.write_bytes(bad.encode("latin-1"))
        refused(sdft("merge", *parts, "-o", tmp_path / "m.jsonl"), str(man))
        refused(sdft("inspect", parts[0]), str(man))
    assert not (tmp_path / "m.jsonl").exists()


def test_inspect_on_a_file_sdft_did_not_write(data):
    before = snapshot(data)
    refused(sdft("inspect", data), "no manifest")
    refused(sdft("inspect", data, "--show", "3"), "no manifest")
    assert snapshot(data) == before
