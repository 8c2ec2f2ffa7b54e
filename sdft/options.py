"""Click options generated from the config dataclasses: each setting is written once, in its field.

A command declares which config it exposes; :class:`ConfigOptions` turns each field into an
option with the field's name (``max_new_tokens`` -> ``--max-new-tokens``), its type, its help
(the field's ``metadata["help"]``) and its default (shown in ``--help``, taken from the field).
Types map as follows:

================================  ==========================================================
field type                        option
================================  ==========================================================
``Literal["a", "b"]``             ``click.Choice(["a", "b"])``
``bool``                          ``--x/--no-x`` flag
``int`` / ``float`` / ``str``     ``INTEGER`` / ``FLOAT`` / ``TEXT``
``list[...]``                     repeatable, each value also comma-separated: ``--x a,b --x c``
``dict``                          repeatable ``KEY=VALUE`` (also ``K1=V1,K2=V2``); YAML scalars
``int | dict``                    ``N`` or ``KEY=N`` pairs (a plain ``N`` is then ``default=N``)
``X | None``                      as ``X``; unset when not given
================================  ==========================================================

A field's ``metadata`` may also hold ``metavar`` (how ``--help`` names the value).

The Click default of every generated option is "not given": only values the user actually
typed (or set through an option's environment variable) reach the config, so the dataclass
default is the one default there is. :meth:`ConfigOptions.given` returns those values as a
(possibly nested) mapping for :func:`sdft.config.from_dict`, merged over a recipe and
``KEY=VALUE`` overrides by the command.

The shared vocabulary (:data:`SHORT`, :data:`ENVVAR`): options several commands have are the
same fields made by the same factories in :mod:`sdft.config` (``model``, ``backend``,
``base_url``, ``api_key``, ``max_concurrency``, ``kv_cache_gib``, ``dtype``, ...), so they have one
name, type, default and help everywhere; ``-o`` is ``--output`` where the command writes a file
and ``--output-dir`` where it writes a folder.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Union

import click

from sdft.config import literal_choices, parse_overrides

#: Short flags by field name: a file output and a folder output are both ``-o`` (a command has one).
SHORT = {"output": "-o", "output_dir": "-o"}
#: Environment variables an option reads when not given (none: e.g. OPENAI_API_KEY is read by the engine
#: itself, so that a key in the environment never lands in a config, a manifest or run.json).
ENVVAR: dict[str, str] = {}
_PAIR_SPLIT = re.compile(r",(?=\s*[\w.-]+=)")  # "a=1,b=x,y" -> "a=1", "b=x,y": a comma inside a value stays

F = typing.TypeVar("F", bound=Callable[..., Any])


def flag_name(name: str) -> str:
    """``max_new_tokens`` -> ``--max-new-tokens``."""
    return "--" + name.replace("_", "-")


@dataclasses.dataclass
class Generated:
    """One generated option (what the help test and :meth:`ConfigOptions.given` need)."""

    field: str
    param: str
    flags: list[str]
    help: str
    default: str | None
    kind: str  # "scalar" | "flag" | "list" | "dict" | "union"
    hidden: bool = False
    value: Any = None  # a flag alias: the field value it sets


class ConfigOptions:
    """The Click options of a config dataclass's fields, and the values a user gave.

    Args:
        cls: the config dataclass.
        only: the fields to expose (default: all init fields).
        exclude: fields to leave out (positional arguments, settings a command fixes itself).
        section: the nested key the values go under (``train`` -> ``{"train": {...}}``).
        names: field -> visible flag, when it differs from the field name (``base`` -> ``--model``).
        aliases: field -> hidden alternative flags: a string takes a value like the option, a
            ``(flag, value)`` pair is a flag that sets ``value`` (``("--allow-non-questions", False)``).
        required: fields the command requires.
    """

    def __init__(self, cls: type, *, only: Iterable[str] | None = None, exclude: Iterable[str] = (),
                 section: str | None = None, names: Mapping[str, str] | None = None,
                 aliases: Mapping[str, list[Any]] | None = None, required: Iterable[str] = ()):
        self.cls, self.section = cls, section
        self.names, self.aliases, self.required = dict(names or {}), dict(aliases or {}), set(required)
        hints = typing.get_type_hints(cls)
        fields = [f for f in dataclasses.fields(cls) if f.init]
        wanted = list(only) if only is not None else [f.name for f in fields]
        by_name = {f.name: f for f in fields}
        unknown = [n for n in [*wanted, *exclude, *self.names, *self.aliases, *self.required] if n not in by_name]
        if unknown:
            raise ValueError(f"{cls.__name__} has no field(s) {', '.join(unknown)}")
        self.fields = [by_name[n] for n in wanted if n not in set(exclude)]
        self.hints = {f.name: hints[f.name] for f in self.fields}
        self.generated: list[Generated] = []
        self.options = [opt for f in self.fields for opt in self._options(f)]

    # -- generation ----------------------------------------------------------------------------

    def __call__(self, fn: F) -> F:
        """Decorate a Click command function with the options (in field order)."""
        for opt in reversed(self.options):
            fn = opt(fn)
        return fn

    def _param(self, name: str) -> str:
        return f"{self.section}__{name}" if self.section else name

    def _options(self, f: dataclasses.Field) -> list[Callable[[F], F]]:
        tp = self.hints[f.name]
        kind, ctype = _kind(tp)
        help_text = f.metadata.get("help", "")
        if not help_text.split(" ", 1)[0].endswith(":"):  # "sdft: ..." names a choice: keep its case
            help_text = help_text[:1].upper() + help_text[1:]  # the field's help, as a sentence
        flag = self.names.get(f.name) or flag_name(f.name)
        default = default_text(f, flag if kind == "flag" else None)
        shown = help_text + (f"  [default: {default}]" if default is not None else "")
        decls = [flag] if kind != "flag" else [f"{flag}/--no-{flag[2:]}"]
        if f.name in SHORT and kind != "flag":
            decls.insert(0, SHORT[f.name])
        common: dict[str, Any] = {"default": None, "show_default": False, "help": shown,
                                  "required": f.name in self.required}
        if f.name in ENVVAR:
            common["envvar"] = ENVVAR[f.name]
        param = self._param(f.name)
        extra = _click_kwargs(kind, ctype, tp)
        if "metavar" in f.metadata and kind != "flag":
            extra["metavar"] = f.metadata["metavar"]
        opts = [click.option(*decls, param, **common, **extra)]
        self.generated.append(Generated(f.name, param, decls, help_text, default, kind))
        for i, alias in enumerate(self.aliases.get(f.name, [])):
            aparam = f"_alias{i}__{param}"
            if isinstance(alias, tuple):
                aflag, value = alias
                opts.append(click.option(aflag, aparam, is_flag=True, default=None, hidden=True))
                self.generated.append(Generated(f.name, aparam, [aflag], help_text, None, "alias-flag", True, value))
            else:
                opts.append(click.option(alias, aparam, default=None, hidden=True, **extra))
                self.generated.append(Generated(f.name, aparam, [alias], help_text, None, kind, True))
        return opts

    # -- values --------------------------------------------------------------------------------

    def given(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Pop this config's parameters from a command's ``kwargs``; the values the user gave.

        Returns:
            ``{field: value}`` (under ``{section: ...}`` for a section), ready for ``from_dict``.

        Raises:
            click.UsageError: an option and its alias both given with different values.
        """
        values: dict[str, Any] = {}
        for g in self.generated:
            raw = kwargs.pop(g.param, None)
            if raw is None or raw == ():
                continue
            if g.kind == "alias-flag":
                if not raw:
                    continue
                value = g.value
            else:
                value = _parse(g.kind, raw, self.hints[g.field], g.flags[-1])
            if g.field in values and values[g.field] != value:
                raise click.UsageError(f"{g.flags[-1]} conflicts with another option setting {g.field}")
            values[g.field] = value
        return {self.section: values} if self.section and values else values


def default_text(f: dataclasses.Field, flag: str | None = None) -> str | None:
    """How ``--help`` shows a field's default (None: nothing worth showing, e.g. unset or empty)."""
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return None
    if value is None or value == "" or value == [] or value == {}:
        return None
    if isinstance(value, bool):
        name = (flag or flag_name(f.name))[2:]
        return name if value else f"no-{name}"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def _kind(tp: Any) -> tuple[str, Any]:
    """(kind, click type) of a field annotation."""
    args = [a for a in typing.get_args(tp) if a is not type(None)] \
        if typing.get_origin(tp) in (Union, types.UnionType) else [tp]
    choices = literal_choices(tp)
    if choices is not None:
        return "scalar", click.Choice([str(c) for c in choices])
    if len(args) > 1:
        return "union", click.STRING
    (t,) = args
    origin = typing.get_origin(t)
    if t is bool:
        return "flag", click.BOOL
    if t is int:
        return "scalar", click.INT
    if t is float:
        return "scalar", click.FLOAT
    if origin in (list, tuple):
        return "list", click.STRING
    if t is dict or origin is dict:
        return "dict", click.STRING
    return "scalar", click.STRING


def _click_kwargs(kind: str, ctype: Any, tp: Any) -> dict[str, Any]:
    if kind == "flag":
        return {}
    if kind == "list":
        return {"type": ctype, "multiple": True, "metavar": "A,B,..."}
    if kind in ("dict", "union") and (kind == "dict" or _has_dict(tp)):
        return {"type": ctype, "multiple": True, "metavar": "N | KEY=N,..." if kind == "union" else "KEY=VALUE"}
    return {"type": ctype}


def _has_dict(tp: Any) -> bool:
    return any(a is dict or typing.get_origin(a) is dict for a in typing.get_args(tp))


def _parse(kind: str, raw: Any, tp: Any, flag: str) -> Any:
    """A Click value as config data: lists split on commas, KEY=VALUE pairs as a mapping."""
    if kind == "list":
        return [part.strip() for value in raw for part in value.split(",") if part.strip()]
    if kind == "dict" or (kind == "union" and _has_dict(tp)):
        values = list(raw) if isinstance(raw, (list, tuple)) else [raw]
        plain = [v.strip() for v in values if "=" not in v]
        pairs = [p for v in values if "=" in v for p in _PAIR_SPLIT.split(v) if p.strip()]
        if kind == "dict" and plain:
            raise click.BadParameter(f"expected KEY=VALUE, got '{plain[0]}'", param_hint=flag)
        if len(plain) > 1:
            raise click.BadParameter("give one plain value at most", param_hint=flag)
        mapping = parse_overrides([p.strip() for p in pairs]) if pairs else {}
        if plain and not mapping:
            return plain[0]
        if plain:  # parsed like the pairs' values: "30" -> 30
            mapping.setdefault("default", parse_overrides([f"default={plain[0]}"])["default"])
        return mapping
    return raw


def overrides_option(fn: F) -> F:
    """The trailing ``KEY=VALUE`` arguments of a command (any config field; dots for sections)."""
    return click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")(fn)


def verbosity_options(fn: F) -> F:
    """``-v`` (engine logs on the terminal) and ``-q`` (errors only)."""
    fn = click.option("-q", "--quiet", is_flag=True, help="Only errors on the terminal.")(fn)
    return click.option("-v", "--verbose", is_flag=True,
                        help="Show engine and library logs (vLLM, torch, transformers) on the terminal instead "
                             "of only in the run's log file.")(fn)


def hub_options(fn: F) -> F:
    """``--push-to-hub OWNER/NAME`` and ``--public`` (sdft.hub; docs/HUB.md)."""
    fn = click.option("--public", is_flag=True, help="Create the Hub repo public (default: private).")(fn)
    return click.option("--push-to-hub", metavar="OWNER/NAME",
                        help="After the run, push the result to this Hugging Face Hub repo (needs HF_TOKEN); "
                             "checked before the run starts. See docs/HUB.md.")(fn)
