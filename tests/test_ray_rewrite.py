"""``sdft rewrite --ray N``: Ray workers + merge equal one process (greedy), on a real local cluster.

The engine is the transformers backend (``--backend hf``), as in test_shard_merge: two vLLM
engines plus Ray do not fit this test's time budget on a 2-core machine. Ray and the engines
are real; only the "ray is not installed" test fakes the package lookup.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from sdft.cli import main
from sdft.rewrite import RewriteConfig, run_rewrite
from sdft.store import iter_jsonl, read_manifest

COMMON = ["--backend", "hf", "--max-new-tokens", "12", "--gap-rows", "2"]


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    p = tmp_path / "d.jsonl"
    p.write_text("".join(json.dumps({"question": f"What is {i} + 1?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"})
                         + "\n" for i in range(10)))
    return p


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main(argv)
    cap = capsys.readouterr()
    return e.value.code, cap.out + cap.err


def cli_ok(argv: list[str]) -> None:
    try:
        main(argv)
    except SystemExit as e:  # main() exits only on errors
        raise AssertionError(f"sdft {' '.join(argv)} exited {e.code}") from e


def test_ray_workers_plus_merge_equal_single_process(tiny_model_dir, data, tmp_path, capsys):
    ray = pytest.importorskip("ray")
    model = ["--model", str(tiny_model_dir)]
    out = tmp_path / "ray" / "out.jsonl"

    # 1. The library starts its own local cluster (none is running) and shuts it down after.
    assert not ray.is_initialized()
    cli_ok(["rewrite", str(data), "-o", str(out), *model, *COMMON, "--ray", "2"])
    assert not ray.is_initialized()
    single = run_rewrite(RewriteConfig(input=str(data), output=str(tmp_path / "single.jsonl"),
                                       model=str(tiny_model_dir), backend="hf", max_new_tokens=12, gap_rows=2))
    merged_rows = list(iter_jsonl(out))
    assert merged_rows == list(iter_jsonl(single.output))  # row for row, config hash included
    m = read_manifest(out)
    assert m["rows"] == single.manifest["rows"] and m["rows"]["total"] == 10
    parts = [out.parent / "out.jsonl.ray" / f"part-{i}.jsonl" for i in range(2)]
    assert m["merged_from"] == [str(p) for p in parts] and m["ray"]["workers"] == 2
    assert m["ray"]["gpus_per_worker"] == 0 and m["shard"] is None and m["config"]["output"] == str(out)
    assert [read_manifest(p)["shard"] for p in parts] == ["0/2", "1/2"]
    assert all(list(iter_jsonl(p)) for p in parts)  # both workers got rows
    assert m["gap"] and m["gap"]["rows"] > 0  # worker 0's gap report is carried over

    # 2. A cluster the caller already runs is used as is (and left running); a rerun reuses
    # every finished part and the merged output.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=80 * 2**20)
    try:
        capsys.readouterr()
        cli_ok(["rewrite", str(data), "-o", str(out), *model, *COMMON, "--ray", "2"])
        assert ray.is_initialized()
        err = capsys.readouterr().err
        assert "shard 0/2:" in err and "already complete" in err
        assert list(iter_jsonl(out)) == merged_rows

        # 3. A worker that fails is named by its shard, and the run fails with no merged output.
        # Shard 1's part is made to belong to another config: a real error in run_rewrite.
        # (Shard 0's finished part is copied in, so that it succeeds without another engine load.)
        out2 = tmp_path / "ray2" / "out.jsonl"
        parts2 = [out2.parent / "out.jsonl.ray" / f"part-{i}.jsonl" for i in range(2)]
        parts2[0].parent.mkdir(parents=True)
        for suffix in ("", ".records.jsonl", ".rejected.jsonl", ".manifest.json"):
            Path(str(parts2[0]) + suffix).write_bytes(Path(str(parts[0]) + suffix).read_bytes())
        parts2[1].write_text("")
        Path(str(parts2[1]) + ".manifest.json").write_text(json.dumps({"config_hash": "another"}))
        code, text = run_main(["rewrite", str(data), "-o", str(out2), *model, *COMMON, "--ray", "2"], capsys)
        assert code == 2, text  # the worker's own error was bad input: its exit code is kept
        assert "1 of 2 ray workers failed" in text and "not an sdft manifest" in text
        assert f"shard 1/2 ({parts2[1]})" in text and "shard 0/2 (" not in text
        assert not out2.exists()
    finally:
        ray.shutdown()


def test_ray_and_shard_are_exclusive(data, tmp_path, capsys):
    code, text = run_main(["rewrite", str(data), "-o", str(tmp_path / "o.jsonl"), "--ray", "2", "--shard", "0/2"],
                          capsys)
    assert code == 2 and "exclusive" in text
    code, text = run_main(["rewrite", str(data), "-o", str(tmp_path / "o.jsonl"), "--ray-address", "auto"], capsys)
    assert code == 2 and "--ray-address needs --ray" in text
    code, _ = run_main(["rewrite", str(data), "-o", str(tmp_path / "o.jsonl"), "--ray", "0"], capsys)
    assert code == 2
    from sdft.errors import ConfigError
    from sdft.ray_launch import run_rewrite_ray

    with pytest.raises(ConfigError, match="exclusive"):
        run_rewrite_ray(RewriteConfig(input=str(data), output=str(tmp_path / "o.jsonl"), shard="0/2"), 2)


def test_missing_ray_names_the_extra(data, tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec

    def find_spec(name: str, *args, **kwargs):
        return None if name == "ray" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    code, text = run_main(["rewrite", str(data), "-o", str(tmp_path / "o.jsonl"), "--ray", "2"], capsys)
    assert code == 1
    assert "'ray' is not installed" in text and "pip install 'sdft-toolkit[ray]'" in text
    assert not (tmp_path / "o.jsonl").exists()
