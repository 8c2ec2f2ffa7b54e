"""Shared fixtures: the tiny model, small data files, and engine caches."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# Engines in-process with one thread: fast and deterministic on a small CPU machine.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight Llama + trained tokenizer, built once per test session."""
    from tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def vllm_tiny(tiny_model_dir: Path):
    """One vLLM engine on the tiny model shared by every test (an engine start costs ~10 s)."""
    pytest.importorskip("vllm")
    from sdft.engines import EngineOptions, load_engine

    engine = load_engine(str(tiny_model_dir), "vllm", EngineOptions(kv_cache_gib=0.25, max_model_len=1024))
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def hf_tiny(tiny_model_dir: Path):
    from sdft.engines import EngineOptions, load_engine

    return load_engine(str(tiny_model_dir), "hf", EngineOptions(batch_size=8))


@pytest.fixture()
def gsm8k_file(tmp_path: Path) -> Path:
    """Six GSM8K-style rows with exact ``#### N`` answers."""
    rows = [
        {"question": f"Tom has {a} apples and buys {b} more. How many apples does he have?",
         "answer": f"Tom starts with {a} apples and buys {b}, so {a} + {b} = {a + b}.\n#### {a + b}"}
        for a, b in [(3, 4), (10, 5), (7, 8), (2, 9), (12, 1), (6, 6)]
    ]
    p = tmp_path / "gsm.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p
