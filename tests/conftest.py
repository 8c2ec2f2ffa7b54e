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
def in_other_process():
    """``run(setup, expr)``: ``expr`` evaluated in a fresh interpreter whose string hashing is seeded
    differently from this one's, as JSON. "Reproducible" means across processes: a value computed
    twice in one process cannot show that (``hash()`` is stable inside a process, not across)."""
    import json
    import subprocess
    import sys

    seed = str(int(os.environ.get("PYTHONHASHSEED", "0") or 0) + 1)

    def run(setup: str, expr: str):
        code = f"{setup}\nimport json, sys\nsys.stdout.write(json.dumps({expr}))"
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(HERE.parent)}
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    return run


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


# ---------------------------------------------------------------------------------------------
# Test tiers. `model`: the test loads a model (the tiny random Llama through vLLM/transformers,
# or the real SmolLM2): seconds to minutes each. Everything else is the fast tier
# (`bin/test --fast`, i.e. `pytest --fast`): pure logic, files and subprocesses without a model,
# well under a second each, under a minute in all on a 2-core machine.
#
# A test is marked `model` automatically when it uses a model fixture (directly, through another
# fixture, or by name in a parametrization for request.getfixturevalue), is marked `slow`, or is
# marked `model` by hand (a test that builds or loads a model some other way). Under --fast the
# rule is enforced, not trusted: building the tiny model or loading an engine in the test process
# fails the test with a message saying to mark it. (A CLI subprocess needs a model path to load
# one, and the only model paths tests have come from the model fixtures or the slow alias.)

MODEL_FIXTURES = frozenset({"tiny_model_dir", "vllm_tiny", "hf_tiny"})


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--fast", action="store_true",
                     help="run only the tests that load no model (deselects the `model` marker) and enforce it")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--fast"):
        try:  # property tests scale their example counts by the profile (tests/adversarial/test_fuzz.py)
            from hypothesis import settings
        except ImportError:
            return
        settings.register_profile("sdft-fast", max_examples=25)
        settings.load_profile("sdft-fast")


def loads_a_model(item: pytest.Item) -> bool:
    """Whether ``item`` needs a model: a model fixture anywhere in its closure, or a marker."""
    if item.get_closest_marker("model") or item.get_closest_marker("slow"):
        return True
    if MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    params = getattr(getattr(item, "callspec", None), "params", {})
    return any(isinstance(v, str) and v in MODEL_FIXTURES for v in params.values())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    model_items = [item for item in items if loads_a_model(item)]
    for item in model_items:
        if not item.get_closest_marker("model"):
            item.add_marker(pytest.mark.model)
    if config.getoption("--fast"):
        chosen = set(map(id, model_items))
        config.hook.pytest_deselected(items=model_items)
        items[:] = [item for item in items if id(item) not in chosen]


def _model_load_refused(what: str):
    def refuse(*_args, **_kwargs):
        pytest.fail(f"{what} in the fast tier: mark this test `@pytest.mark.model` (or use a model fixture)",
                    pytrace=False)

    return refuse


@pytest.fixture(autouse=True)
def _fast_tier_guard(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under --fast: building the tiny model or loading an engine fails the test (it is mis-tiered)."""
    if not request.config.getoption("--fast"):
        return
    import tiny_model

    from sdft.engines.hf import HFEngine
    from sdft.engines.vllm import VLLMEngine

    monkeypatch.setattr(tiny_model, "build_tiny_model", _model_load_refused("building the tiny model"))
    for engine in (HFEngine, VLLMEngine):  # the classes, not load_engine: callers bind that name at import
        monkeypatch.setattr(engine, "__init__", _model_load_refused(f"loading a model ({engine.__name__})"))
