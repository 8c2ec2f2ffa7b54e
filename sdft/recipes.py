"""Recipes: YAML files mapping onto the pipeline's typed config, with ``key=value`` overrides.

A recipe starts with a comment header (what it does, how to run it); its keys map onto
:class:`sdft.pipeline.PipelineConfig`. Recipes ship in the repository's ``recipes/`` folder
(``$SDFT_RECIPES`` points elsewhere); a recipe argument is a name (``demo``) or a path.

A relative input path in a recipe file (``data.path``, ``replay``, ``rewrite.template``,
``eval.data.*``) is read from the current folder when it is there, else from the recipe file's
folder, so a recipe and its data can travel together and a recipe validates from any folder.
``key=value`` overrides are command-line arguments: always relative to the current folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdft.config import deep_merge, load_yaml, parse_overrides
from sdft.errors import InputError


@dataclass(frozen=True)
class RecipeInfo:
    name: str
    path: Path
    summary: str


def recipes_dir() -> Path:
    """``$SDFT_RECIPES`` or the ``recipes/`` folder next to the package."""
    env = os.environ.get("SDFT_RECIPES")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "recipes"


def _summary(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        s = line.strip()
        if s.startswith("#"):
            text = s.lstrip("#").strip()
            if text:
                return text
        elif s:
            break
    return ""


def list_recipes() -> list[RecipeInfo]:
    """Every ``*.yaml`` in :func:`recipes_dir` (not in subfolders), sorted by name."""
    d = recipes_dir()
    if not d.is_dir():
        return []
    return [RecipeInfo(p.stem, p, _summary(p)) for p in sorted(d.glob("*.yaml"), key=lambda p: p.stem)]


def find_recipe(name_or_path: str) -> Path:
    """A path to an existing file, or the name of a bundled recipe."""
    p = Path(name_or_path).expanduser()
    if p.is_file():
        return p
    cand = recipes_dir() / f"{name_or_path}.yaml"
    if cand.is_file():
        return cand
    names = ", ".join(r.name for r in list_recipes()) or "none"
    raise InputError(f"recipe '{name_or_path}' not found (not a file; bundled recipes: {names})")


def load_recipe(name_or_path: str | None, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The recipe's mapping with ``key=value`` overrides merged in (no validation yet).

    Relative input paths of the file are resolved as :func:`resolve_input_paths` says.
    """
    data: dict[str, Any] = {}
    if name_or_path:
        path = find_recipe(name_or_path)
        data = resolve_input_paths(load_yaml(path), path.resolve().parent)
    return deep_merge(data, parse_overrides(list(overrides)))


def resolve_input_paths(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``data`` with each relative input path that is missing from the current folder but present
    in ``folder`` (the recipe's) replaced by that path; every other value is left as it is (a Hub
    id, ``example:NAME``, a path found nowhere: preflight names it).

    Args:
        data: a recipe's mapping (not changed).
        folder: the recipe file's folder.
    """
    def fix(value: Any) -> Any:
        if not isinstance(value, str) or not value.strip() or value.startswith(("example:", "~")):
            return value
        p = Path(value)
        try:
            moved = not p.is_absolute() and not p.exists() and (folder / p).exists()
        except (OSError, ValueError):  # a name too long, a NUL byte: preflight reports the value as given
            return value
        return str(folder / p) if moved else value

    out = dict(data)
    if "replay" in out:
        out["replay"] = fix(out["replay"])
    for section, key in (("data", "path"), ("rewrite", "template")):
        if isinstance(out.get(section), dict) and key in out[section]:
            out[section] = {**out[section], key: fix(out[section][key])}
    ev = out.get("eval")
    if isinstance(ev, dict) and isinstance(ev.get("data"), dict):
        out["eval"] = {**ev, "data": {suite: fix(v) for suite, v in ev["data"].items()}}
    return out


def validate_recipe(name_or_path: str, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """Build the typed pipeline config from a recipe and preflight it (:mod:`sdft.preflight`: the data's
    fields, the model, LoRA targets, the eval section), raising one ConfigError listing every problem.
    Writes nothing (output paths are checked when the recipe runs)."""
    from sdft.pipeline import PipelineConfig
    from sdft.preflight import validate

    path = find_recipe(name_or_path)
    return validate(PipelineConfig, load_recipe(str(path), overrides), source=str(path), write=False)
