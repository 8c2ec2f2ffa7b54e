"""Typed configs from YAML recipes and ``key=value`` overrides.

Every stage takes a dataclass config (``RewriteConfig``, ``TrainConfig``, ...) whose fields carry
``metadata={"help": ...}``. :func:`from_dict` builds one from a mapping, collecting *every*
problem (unknown keys, wrong types, failed ``__post_init__`` checks) into one
:class:`~sdft.errors.ConfigError`, so a user fixes a recipe in one pass.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar, Union

from sdft.errors import ConfigError, InputError

T = TypeVar("T")


def help_of(cls: type, name: str) -> str:
    """The ``help`` metadata of a dataclass field (empty when missing)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get("help", "")
    return ""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str, problems: list[str]) -> Any:
    """Check/convert ``value`` to the annotated type ``tp``; append a problem when impossible."""
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
            out = _coerce(value, a, where, sub)
            if not sub:
                return out
            errs.extend(sub)
        problems.append(errs[0] if errs else f"{where}: invalid value {value!r}")
        return value
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            problems.append(f"{where}: must be one of {', '.join(map(str, choices))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            problems.append(f"{where}: expected a mapping of {_type_name(tp)} fields, got {value!r}")
            return value
        return _build(tp, value, where, problems)
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


def _build(cls: type[T], data: Mapping[str, Any], where: str, problems: list[str]) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    failed: set[str] = set()
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(f"{path}: unknown key{hint}")
            continue
        before = len(problems)
        coerced = _coerce(value, hints[key], path, problems)
        if len(problems) > before:
            failed.add(key)
        else:
            kwargs[key] = coerced
    missing = [n for n, f in fields.items() if n not in kwargs and n not in failed
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    for n in missing:
        problems.append(f"{where + '.' if where else ''}{n}: required")
    if missing or any(fields[k].default is dataclasses.MISSING and fields[k].default_factory is dataclasses.MISSING
                      for k in failed):
        return None  # type: ignore[return-value]
    # Unknown keys and bad values were left out: still run the checks of __post_init__ on the rest,
    # so that one error lists every problem of the config, not just the first kind found.
    try:
        return cls(**kwargs)
    except ConfigError as e:
        prefix = f"{where}: " if where else ""
        problems.extend(prefix + p for p in e.problems)
    except (InputError, ValueError, TypeError) as e:
        problems.append(f"{where + ': ' if where else ''}{e}")
    return None  # type: ignore[return-value]


def from_dict(cls: type[T], data: Mapping[str, Any], *, source: str | None = None) -> T:
    """Build dataclass ``cls`` from ``data``; raise one ConfigError listing every problem."""
    problems: list[str] = []
    obj = _build(cls, data, "", problems)
    if problems:
        raise ConfigError(problems, source=source)
    return obj


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
