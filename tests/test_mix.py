"""Mixing replay rows into task rows: exact counts, even spread, determinism, the cap."""

from __future__ import annotations

import json

import pytest

from sdft.errors import ConfigError, InputError
from sdft.mix import load_replay_rows, mix_replay, mix_rows, mix_stats


def task(n: int) -> list[dict]:
    return [{"id": f"t{i}", "src": "task"} for i in range(n)]


def replay(n: int) -> list[dict]:
    return [{"id": f"r{i}", "src": "replay"} for i in range(n)]


@pytest.mark.parametrize("n_task, n_replay, ratio, used, capped", [
    (100, 1000, 0.2, 25, False),   # 25 / 125 = 0.2 exactly
    (80, 1000, 0.5, 80, False),    # one replay row per task row
    (90, 1000, 0.1, 10, False),    # 10 / 100
    (100, 10, 0.2, 10, True),      # only 10 available: capped
    (100, 25, 0.2, 25, False),     # exactly enough
    (100, 1000, 0.0, 0, False),
    (0, 50, 0.3, 0, False),
    (7, 1000, 0.25, 2, False),     # 7 / 3 = 2.33 -> 2
    (9, 1000, 0.1, 1, False),      # 9 / 9 = 1
    (6, 1000, 0.2, 2, False),      # 1.5 rounds half up -> 2
])
def test_counts(n_task, n_replay, ratio, used, capped):
    s = mix_stats(n_task, n_replay, ratio)
    assert s["replay_used"] == used and s["capped"] is capped
    assert s["total"] == n_task + used
    out = mix_rows(task(n_task), replay(n_replay), ratio, seed=0)
    assert len(out) == n_task + used
    assert sum(r["src"] == "replay" for r in out) == used
    exact = ratio / (1 - ratio) * n_task
    if not capped and n_task and abs(exact - round(exact)) < 1e-9:  # a whole number of replay rows: exact ratio
        assert used / len(out) == pytest.approx(ratio, abs=1e-12)
    if capped:
        assert s["replay_wanted"] == 25 and s["actual_ratio"] == pytest.approx(10 / 110, abs=1e-6)


def test_task_order_kept_and_replay_rows_spread_evenly():
    t, r = task(400), replay(1000)
    out = mix_rows(t, r, 0.2, seed=3)
    assert [x for x in out if x["src"] == "task"] == t
    # one replay row in each of 100 strata of 5: every prefix holds the ratio within one row
    flags = [x["src"] == "replay" for x in out]
    for end in range(1, len(out) + 1):
        assert abs(sum(flags[:end]) - 0.2 * end) <= 1
    for k in range(100):
        assert sum(flags[5 * k:5 * k + 5]) == 1
    # the replay rows used are distinct and keep their file order
    used = [x["id"] for x in out if x["src"] == "replay"]
    assert len(set(used)) == 100 and used == sorted(used, key=lambda i: int(i[1:]))


def test_deterministic_with_the_seed():
    t, r = task(50), replay(200)
    a = mix_rows(t, r, 0.2, seed=1)
    assert a == mix_rows(t, r, 0.2, seed=1)
    b = mix_rows(t, r, 0.2, seed=2)
    assert a != b and len(a) == len(b)
    # inputs are not modified and rows are the same objects
    assert t == task(50) and r == replay(200)
    assert any(x is r[int(x["id"][1:])] for x in a if x["src"] == "replay")


def test_all_replay_rows_used_when_capped():
    out = mix_rows(task(100), replay(10), 0.2, seed=0)
    assert sorted(x["id"] for x in out if x["src"] == "replay") == sorted(f"r{i}" for i in range(10))


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_bad_ratio(ratio):
    with pytest.raises(ConfigError, match="replay_ratio"):
        mix_rows(task(3), replay(3), ratio, seed=0)


def test_mix_replay_reads_only_kept_rows(tmp_path):
    p = tmp_path / "replay.jsonl"
    rows = [{"id": f"r{i}", "messages": [{"role": "user", "content": f"q{i}"}], "response": f"a{i}" if i % 3 else None,
             "status": "rewritten" if i % 3 else "dropped", "source": "replay"} for i in range(30)]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InputError, match="manifest"):
        load_replay_rows(p)
    (tmp_path / "replay.jsonl.manifest.json").write_text(json.dumps({"kind": "sdft-replay", "config_hash": "abc"}))
    kept, manifest = load_replay_rows(p)
    assert len(kept) == 20 and all(r["response"] for r in kept) and manifest["kind"] == "sdft-replay"
    mixed, stats = mix_replay(task(40), p, 0.2, seed=5)
    assert stats == {"ratio": 0.2, "task_rows": 40, "replay_available": 20, "replay_wanted": 10, "replay_used": 10,
                     "capped": False, "total": 50, "actual_ratio": 0.2, "replay": str(p), "replay_config_hash": "abc",
                     "replay_kind": "sdft-replay", "seed": 5}
    assert sum(r.get("source") == "replay" for r in mixed) == 10
    with pytest.raises(InputError, match="not found"):
        load_replay_rows(tmp_path / "missing.jsonl")


@pytest.mark.parametrize("fmt", ["sharegpt", "alpaca"])
def test_mix_reads_the_records_whatever_the_training_format(tmp_path, fmt):
    """The replay rows come from OUT.records.jsonl: the training file's format does not matter."""
    from sdft.store import StageRunner

    out = tmp_path / "replay.jsonl"
    rows = [{"id": f"r{i}", "index": i, "messages": [{"role": "user", "content": f"q{i}"}],
             "response": f"a{i}" if i % 3 else None, "original": None, "status": "rewritten" if i % 3 else "dropped",
             "reason": "ok" if i % 3 else "too-short", "source": "replay"} for i in range(12)]
    with StageRunner(out, kind="sdft-replay", settings={"x": 1}, output_format=fmt) as r:
        r.resume()
        r.append(rows)
        r.finalize({"kind": "sdft-replay", "config_hash": "ignored"})
    kept, manifest = load_replay_rows(out)
    assert [x["id"] for x in kept] == [x["id"] for x in rows if x["status"] == "rewritten"]
    assert all(x["messages"][-1]["role"] == "user" and x["response"] for x in kept)
    assert manifest["format"] == fmt and "messages" not in json.loads(out.read_text().splitlines()[0])
