"""Generation engines behind one small interface (see :mod:`sdft.engines.base`)."""

from __future__ import annotations

from collections.abc import Callable

from sdft._deps import is_vllm_available
from sdft.engines.base import (
    Chat,
    Completion,
    Engine,
    EngineOptions,
    Generation,
    Prompt,
    SamplingConfig,
    Score,
)
from sdft.errors import InputError

BACKENDS = ("auto", "vllm", "hf", "openai")

__all__ = [
    "BACKENDS", "Chat", "Completion", "Engine", "EngineOptions", "Generation", "Prompt",
    "SamplingConfig", "Score", "load_engine", "pick_backend",
]


def pick_backend(backend: str, notice: Callable[[str], None] | None = None) -> str:
    """Resolve ``auto`` to ``vllm`` when vLLM is installed, else ``hf`` (with a one-line notice)."""
    if backend not in BACKENDS:
        raise InputError(f"unknown backend '{backend}': choose one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    if is_vllm_available():
        return "vllm"
    if notice:
        notice("vLLM is not installed: using the slower transformers backend (pip install 'sdft-toolkit[cpu]')")
    return "hf"


def load_engine(model_path: str, backend: str = "auto", options: EngineOptions | None = None,
                notice: Callable[[str], None] | None = None) -> Engine:
    """Load ``model_path`` (already resolved by :func:`sdft.models.resolve_model`) on a backend."""
    backend = pick_backend(backend, notice)
    if backend == "vllm":
        from sdft.engines.vllm import VLLMEngine

        return VLLMEngine(model_path, options)
    if backend == "openai":
        from sdft.engines.openai import OpenAIEngine

        return OpenAIEngine(model_path, options)
    from sdft.engines.hf import HFEngine

    return HFEngine(model_path, options)
