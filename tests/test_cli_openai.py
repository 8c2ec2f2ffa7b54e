"""Every generating command on the OpenAI-compatible backend: a real `vllm serve` of the tiny model."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from test_openai_backend import server  # noqa: F401 - the module-scoped `vllm serve` fixture

from sdft.cli import cli
from sdft.store import iter_records, read_manifest

pytestmark = pytest.mark.vllm


def test_replay_through_a_server(server, tiny_model_dir, tmp_path):  # noqa: F811 - the fixture
    out = tmp_path / "replay.jsonl"
    r = CliRunner().invoke(cli, ["replay", "-o", str(out), "--model", str(tiny_model_dir), "--backend", "openai",
                                 "--base-url", server.url, "--num", "2", "--batch-size", "4", "--max-rounds", "1",
                                 "--query-max-tokens", "8", "--answer-max-tokens", "8", "--allow-non-questions",
                                 "--min-query-words", "0", "--max-concurrency", "2"])
    assert r.exit_code == 0, r.output
    manifest = read_manifest(out)
    assert manifest["backend"] == "openai" and manifest["rows"]["total"] == 4
    rows = list(iter_records(out))
    assert len(rows) == 4 and {row["extra"]["round"] for row in rows} == {0}
    assert sum(row["extra"]["query_tokens"] for row in rows) > 0  # the server wrote the queries


def test_eval_scores_drift_through_a_server(server, tiny_model_dir, tmp_path):  # noqa: F811 - the fixture
    out = tmp_path / "eval"
    r = CliRunner().invoke(cli, ["eval", "--model", str(tiny_model_dir), "--base-url", server.url,
                                 "--suites", "drift,safety", "--limit", "2", "--max-new-tokens", "8", "-o", str(out)])
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    scores = {row["suite"]: row["models"]["base"]["score"] for row in report["suites"]}
    assert set(scores) == {"drift", "safety"} and 0 < scores["drift"] <= 100  # scored by prompt_logprobs
