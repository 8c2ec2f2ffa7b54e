"""sdft: fine-tune chat LLMs without making them forget (Self-Distillation Fine-Tuning).

The Python API (docs/ARCHITECTURE.md, "Use from Python")::

    import sdft

    ds = sdft.rewrite(rows, model="smollm2-135m-instruct")   # -> datasets.Dataset
    sdft.replay(num=100)                                     # -> datasets.Dataset
    sdft.train(rows, output_dir="runs/mine")                 # rewrite + LoRA (+ eval)
    sdft.evaluate(tuned="runs/mine/model/merged")            # the forgetting report
    sdft.compare("demo", methods=["sft", "sdft"], seeds=2)   # methods over seeds

Importing ``sdft`` is cheap: it loads nothing but this file. The API functions (:mod:`sdft.api`),
the config classes and the errors are attributes loaded on first use, and torch, transformers,
vLLM and datasets are imported only by the functions that use them.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

#: The API functions (sdft.api), by the names of the stages they run.
_API = ("rewrite", "replay", "train", "evaluate", "compare")
#: Other lazily exported names -> the module that defines them.
_LAZY = {
    "RewriteConfig": "sdft.rewrite",
    "ReplayConfig": "sdft.replay",
    "PipelineConfig": "sdft.pipeline",
    "TrainConfig": "sdft.train",
    "EvalConfig": "sdft.eval.config",
    "CompareConfig": "sdft.compare.config",
    "DataSpec": "sdft.data",
    "DEFAULT_MODEL": "sdft.models",
    "SdftError": "sdft.errors",
    "InputError": "sdft.errors",
    "ConfigError": "sdft.errors",
    "GateFailed": "sdft.errors",
}

__all__ = ["__version__", *_API, *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module("sdft.api"), name)
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module 'sdft' has no attribute '{name}'")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """The ``sdft`` package object, so that ``sdft.rewrite`` & co. stay the API functions.

    Four API names are also module names (sdft/rewrite.py, sdft/replay.py, sdft/train.py,
    sdft/compare/). Importing such a module makes Python set it as an attribute of the package,
    which would replace the function; this class ignores exactly that assignment. The modules
    stay importable as always (``from sdft.rewrite import RewriteConfig``,
    ``importlib.import_module("sdft.train")``); only ``sdft.rewrite`` the attribute is the function.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _API and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
