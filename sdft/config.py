"""Typed configs from YAML recipes, ``key=value`` overrides and command-line flags.

Every stage takes a dataclass config (``RewriteConfig``, ``TrainConfig``, ...) whose fields carry
``metadata={"help": ...}``: the one place a setting's name, type, default and help are written
(the CLI generates its options from them, :mod:`sdft.options`). :func:`from_dict` builds one
from a mapping, collecting *every* problem (unknown keys, wrong types, failed ``__post_init__``
checks) into one :class:`~sdft.errors.ConfigError`, so a user fixes a recipe in one pass.

Constructing a config never touches the disk or a model: ``__post_init__`` checks values only.
What needs files, models or the network (paths, output ownership, model resolution, a dataset's
fields) is checked by :mod:`sdft.preflight` before any expensive work.

Settings that several configs share (the model, the engine and its server, the KV cache) are
made by the field factories below, so that each has one name, type, default and help everywhere.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from sdft.errors import ConfigError, InputError

T = TypeVar("T")

#: Attribute where :func:`from_dict` records which fields the data gave (see :func:`given`).
_GIVEN = "_sdft_given"


def choices_text(choices: tuple[Any, ...] | list[Any]) -> str:
    """``a or b`` for two choices, ``one of a, b, c`` for more."""
    names = [str(c) for c in choices]
    return " or ".join(names) if len(names) <= 2 else f"one of {', '.join(names)}"


def literal_choices(tp: Any) -> tuple[Any, ...] | None:
    """The choices of a ``Literal[...]`` annotation (also inside ``Optional``), else None."""
    if typing.get_origin(tp) is Literal:
        return typing.get_args(tp)
    if typing.get_origin(tp) in (Union, types.UnionType):
        for a in typing.get_args(tp):
            if typing.get_origin(a) is Literal:
                return typing.get_args(a)
    return None


def check_literals(obj: Any) -> list[str]:
    """Problems of every ``Literal``-typed field of dataclass ``obj`` whose value is not a choice.

    ``__post_init__`` calls it, so a config built directly (not through :func:`from_dict`)
    is checked the same way.
    """
    problems = []
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        choices = literal_choices(hints.get(f.name))
        value = getattr(obj, f.name)
        if choices is not None and value not in choices and not (value is None and _optional(hints[f.name])):
            problems.append(f"{f.name} must be {choices_text(choices)}, got {value!r}")
    return problems


def _optional(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType) and type(None) in typing.get_args(tp)


def help_of(cls: type, name: str) -> str:
    """The ``help`` metadata of a dataclass field (empty when missing)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get("help", "")
    return ""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str, problems: list[str], refused: Mapping[str, str] | None = None) -> Any:
    """Check/convert ``value`` to the annotated type ``tp``; append a problem when impossible.

    ``refused``: keys a nested section may not set (key -> why), e.g. the pipeline's own.
    """
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errs: list[str] = []
        for a in args:
            if a is type(None):
                continue
            sub: list[str] = []
            out = _coerce(value, a, where, sub, refused)
            if not sub:
                return out
            errs.extend(sub)
        problems.append(errs[0] if errs else f"{where}: invalid value {value!r}")
        return value
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            problems.append(f"{where} must be {choices_text(choices)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            problems.append(f"{where}: expected a mapping of {_type_name(tp)} fields, got {value!r}")
            return value
        return _build(tp, value, where, problems, refused)
    if origin in (list, tuple):
        if isinstance(value, str):  # "a,b,c" from the command line
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            problems.append(f"{where}: expected a list, got {value!r}")
            return value
        args = typing.get_args(tp)
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{where}[{i}]", problems) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            problems.append(f"{where}: expected a mapping, got {value!r}")
        return dict(value) if isinstance(value, Mapping) else value
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        problems.append(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool):
            problems.append(f"{where}: expected an integer, got {value!r}")
            return value
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        problems.append(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        problems.append(f"{where}: expected a number, got {value!r}")
        return value
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        problems.append(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _build(cls: type[T], data: Mapping[str, Any], where: str, problems: list[str],
           refused: Mapping[str, str] | None = None) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    failed: set[str] = set()
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if refused and key in refused:
            problems.append(f"{path}: {refused[key]}")
            continue
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(f"{path}: unknown key{hint}")
            continue
        before = len(problems)
        owned = fields[key].metadata.get("owned")  # keys of a section that its parent sets itself
        why = fields[key].metadata.get("owned_why", "set by the enclosing config")
        coerced = _coerce(value, hints[key], path, problems, {k: why for k in owned} if owned else None)
        if len(problems) > before:
            failed.add(key)
            if dataclasses.is_dataclass(coerced) and not isinstance(coerced, type):
                kwargs[key] = coerced  # a section built from its good keys: preflight still sees them
        else:
            kwargs[key] = coerced
    missing = [n for n, f in fields.items() if n not in kwargs and n not in failed
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    for n in missing:
        problems.append(f"{where + '.' if where else ''}{n}: required")
    if missing or any(fields[k].default is dataclasses.MISSING and fields[k].default_factory is dataclasses.MISSING
                      for k in failed if k not in kwargs):
        return None  # type: ignore[return-value]
    # Unknown keys and bad values were left out: still run the checks of __post_init__ on the rest,
    # so that one error lists every problem of the config, not just the first kind found.
    try:
        obj = cls(**kwargs)
    except ConfigError as e:  # a section's own checks name its fields: "eval.suites: ..."
        problems.extend(f"{where}.{p}" if where else p for p in e.problems)
    except (InputError, ValueError, TypeError) as e:
        problems.append(f"{where + ': ' if where else ''}{e}")
    else:
        object.__setattr__(obj, _GIVEN, frozenset(kwargs))
        return obj
    return None  # type: ignore[return-value]


def from_dict(cls: type[T], data: Mapping[str, Any], *, source: str | None = None) -> T:
    """Build dataclass ``cls`` from ``data``; raise one ConfigError listing every problem."""
    obj, problems = build(cls, data)
    if problems:
        raise ConfigError(problems, source=source)
    return obj  # type: ignore[return-value]


def build(cls: type[T], data: Mapping[str, Any]) -> tuple[T | None, list[str]]:
    """Build ``cls`` from ``data`` as far as possible: ``(config or None, every problem)``.

    Keys with bad values are left out and the rest is still built when it can be, so that a
    preflight can check (say) a dataset's fields even while a section has a typo, and one error
    lists everything. The object is None when a required field is missing or ``__post_init__``
    refused the remaining values.
    """
    if not isinstance(data, Mapping):
        return None, [f"expected a mapping of {_type_name(cls)} fields, got {data!r}"]
    problems: list[str] = []
    obj = _build(cls, data, "", problems)
    return obj, problems


def given(obj: Any) -> frozenset[str]:
    """The fields of a config that its data set explicitly (for a config built by :func:`from_dict`).

    For a config constructed directly, the fields whose value differs from the default.
    """
    recorded = getattr(obj, _GIVEN, None)
    if recorded is not None:
        return recorded
    out = set()
    for f in dataclasses.fields(obj):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            out.add(f.name)
            continue
        if getattr(obj, f.name) != default:
            out.add(f.name)
    return frozenset(out)


def explicit(obj: Any) -> dict[str, Any]:
    """The explicitly given settings of a config as a plain mapping (what a recipe section said).

    A section given as data (a nested config) is itself reduced to its explicit settings.
    """
    out: dict[str, Any] = {}
    for name in given(obj):
        value = getattr(obj, name)
        out[name] = explicit(value) if dataclasses.is_dataclass(value) and not isinstance(value, type) else value
    return out


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["train.lr=1e-4", "model=x"]`` -> nested dict; values parsed as YAML scalars."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value (e.g. train.lr=1e-4)")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{p}' is not a section")
        node[parts[-1]] = value
    return out


def deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``over`` into a copy of ``base``."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors that name the file and line."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise InputError(f"recipe not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        loc = f" line {mark.line + 1}" if mark else ""
        raise InputError(f"{p}:{loc}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise InputError(f"{p}: a recipe must be a YAML mapping, got {type(data).__name__}")
    return data


def to_dict(obj: Any) -> Any:
    """A dataclass (possibly nested) as plain JSON-able data."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


# ---------------------------------------------------------------------------------------------
# shared fields: settings several configs have, with one name, type, default and help everywhere

Backend = Literal["auto", "vllm", "hf", "openai"]
DType = Literal["auto", "float32", "bfloat16", "float16"]
#: The vLLM KV-cache size of every command (on CPU vLLM cannot size it itself).
KV_CACHE_GIB = 2.0
MODEL_FORMS = "the alias smollm2-135m-instruct, a HF folder, a .gguf file, a LoRA adapter folder or a Hub id"


def model_field(role: str = "seed model", default: str | None = None) -> Any:
    """The model argument: every form :func:`sdft.models.resolve_model` takes."""
    from sdft.models import DEFAULT_MODEL

    return dataclasses.field(default=default or DEFAULT_MODEL, metadata={"help": f"{role}: {MODEL_FORMS}"})


def backend_field() -> Any:
    return dataclasses.field(default="auto", metadata={
        "help": "generation engine: auto (vllm when installed, else hf), vllm, hf (transformers) or openai "
                "(an OpenAI-compatible server at base_url)"})


def base_url_field() -> Any:
    return dataclasses.field(default=None, metadata={
        "help": "OpenAI-compatible server (vllm serve, sglang), e.g. http://127.0.0.1:8000/v1; implies backend "
                "openai"})


def api_key_field() -> Any:
    return dataclasses.field(default=None, metadata={"help": "API key of the base_url server (unset: "
                                                             "$OPENAI_API_KEY, read when the engine starts)"})


def max_concurrency_field() -> Any:
    return dataclasses.field(default=16, metadata={"help": "requests in flight to the base_url server"})


def kv_cache_field() -> Any:
    return dataclasses.field(default=KV_CACHE_GIB, metadata={"help": "vLLM KV-cache size in GiB"})


def dtype_field() -> Any:
    return dataclasses.field(default="auto", metadata={"help": "weights' dtype in the engine (auto: the model's)"})


def max_model_len_field() -> Any:
    return dataclasses.field(default=None, metadata={"help": "engine context length (default: the model's, "
                                                             "at most 4096)"})


def tensor_parallel_field() -> Any:
    return dataclasses.field(default=1, metadata={"help": "GPUs per vLLM engine (tensor parallelism)"})


def engine_problems(cfg: Any) -> list[str]:
    """Value checks of the engine fields above (``backend`` with ``base_url``, positive sizes).

    Mutates ``cfg.backend`` from ``auto`` to ``openai`` when a ``base_url`` is given.
    """
    problems = []
    if getattr(cfg, "base_url", None) and cfg.backend == "auto":
        cfg.backend = "openai"
    if cfg.backend == "openai" and not getattr(cfg, "base_url", None):
        problems.append("backend openai needs base_url (e.g. http://127.0.0.1:8000/v1)")
    if not cfg.kv_cache_gib > 0:
        problems.append(f"kv_cache_gib must be > 0, got {cfg.kv_cache_gib}")
    if getattr(cfg, "max_concurrency", 1) < 1:
        problems.append(f"max_concurrency must be >= 1, got {cfg.max_concurrency}")
    if getattr(cfg, "tensor_parallel_size", 1) < 1:
        problems.append(f"tensor_parallel_size must be >= 1, got {cfg.tensor_parallel_size}")
    if getattr(cfg, "max_model_len", None) is not None and cfg.max_model_len < 1:
        problems.append(f"max_model_len must be >= 1, got {cfg.max_model_len}")
    return problems


def engine_options_of(cfg: Any) -> Any:
    """The :class:`~sdft.engines.EngineOptions` of a config with the engine fields above."""
    import os

    from sdft.engines.base import EngineOptions

    # the environment's key is read here, never stored in the config (configs land in manifests and run.json)
    extra = ({"base_url": cfg.base_url, "api_key": cfg.api_key or os.environ.get("OPENAI_API_KEY"),
              "max_concurrency": cfg.max_concurrency} if cfg.backend == "openai" else {})
    return EngineOptions(dtype=getattr(cfg, "dtype", "auto"), kv_cache_gib=cfg.kv_cache_gib,
                         max_model_len=getattr(cfg, "max_model_len", None),
                         tensor_parallel_size=getattr(cfg, "tensor_parallel_size", 1), extra=extra)
