"""Where this process stands in a distributed run, and which device and dtype it trains on.

``torchrun`` and ``accelerate launch`` describe each process through environment variables:
``RANK`` (0..WORLD_SIZE-1 over all machines), ``LOCAL_RANK`` (the process's index on its own
machine, i.e. its GPU) and ``WORLD_SIZE`` (the number of processes). A plain ``sdft train`` sets
none of them and is rank 0 of 1. Every part of sdft that asks "am I the writer?", "how many
processes share the batch?" or "bf16 or fp32?" asks here, so the answer is the same everywhere.

Importing this module is cheap (no torch): the CLI layer uses it too. Functions that need to
know about CUDA import torch only when called, and take ``cuda=`` / ``bf16=`` overrides so that
their decisions can be tested on any machine.
"""

from __future__ import annotations

import os
from typing import Any

from sdft.errors import ConfigError

DTYPES = ("auto", "float32", "bfloat16", "float16")


def _env_int(name: str, default: int, minimum: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise ConfigError(f"environment variable {name}={raw!r}: expected an integer >= {minimum} "
                          f"(torchrun / accelerate launch set it; unset it to run as a single process)")
    return value


def world_size() -> int:
    """Number of processes in this run (``WORLD_SIZE``; 1 when unset)."""
    return _env_int("WORLD_SIZE", 1, 1)


def rank() -> int:
    """This process's global rank (``RANK``; 0 when unset).

    Raises:
        ConfigError: ``RANK`` is not an integer, or not below ``WORLD_SIZE``.
    """
    r = _env_int("RANK", 0, 0)
    world = world_size()
    if r >= world:
        raise ConfigError(f"environment variable RANK={r} is not below WORLD_SIZE={world}: "
                          f"a rank counts 0..WORLD_SIZE-1 (launch through torchrun or accelerate launch)")
    return r


def local_rank() -> int:
    """This process's index on its own machine (``LOCAL_RANK``; 0 when unset): its GPU number."""
    return _env_int("LOCAL_RANK", 0, 0)


def is_main() -> bool:
    """True for the one process that writes shared outputs (global rank 0)."""
    return rank() == 0


def is_distributed() -> bool:
    """True when more than one process takes part in this run."""
    return world_size() > 1


def cuda_available() -> bool:
    """True when torch sees a CUDA device (imports torch)."""
    import torch

    return bool(torch.cuda.is_available())


def bf16_supported() -> bool:
    """True when a CUDA device is present and does bfloat16 natively (imports torch)."""
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def device(*, cuda: bool | None = None) -> str:
    """The device this process computes on: ``cuda:<local rank>`` with CUDA, else ``cpu``.

    Args:
        cuda: whether CUDA is usable; None asks torch.
    """
    if cuda is None:
        cuda = cuda_available()
    return f"cuda:{local_rank()}" if cuda else "cpu"


def cpu_ddp(*, cuda: bool | None = None) -> bool:
    """True when several processes train without CUDA: gloo, and accelerate told to use the CPU.

    Without ``use_cpu`` accelerate sees no device backend there, leaves the model unwrapped (no
    DDP, no gradient all-reduce) and every rank would train its own copy on its shard.
    """
    if not is_distributed():
        return False
    if cuda is None:
        cuda = cuda_available()
    return not cuda


def resolve_dtype(name: str, *, cuda: bool | None = None, bf16: bool | None = None) -> str:
    """The concrete dtype name for a config's ``dtype``: ``auto`` becomes ``bfloat16`` on a GPU
    that supports it and ``float32`` everywhere else (CPUs and older GPUs train in fp32).

    Args:
        name: ``auto``, ``float32``, ``bfloat16`` or ``float16``.
        cuda: whether CUDA is usable; None asks torch (only needed for ``auto``).
        bf16: whether the GPU does bf16; None asks torch (only needed for ``auto`` with CUDA).

    Raises:
        ConfigError: an unknown name.
    """
    if name not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    if name != "auto":
        return name
    if cuda is None:
        cuda = cuda_available()
    if not cuda:
        return "float32"
    if bf16 is None:
        bf16 = bf16_supported()
    return "bfloat16" if bf16 else "float32"


def torch_dtype(name: str, **kw: Any) -> Any:
    """:func:`resolve_dtype` as a ``torch.dtype`` (imports torch)."""
    import torch

    return getattr(torch, resolve_dtype(name, **kw))
