"""Recipes: YAML files mapping onto the pipeline's typed config, with ``key=value`` overrides.

A recipe starts with a comment header (what it does, how to run it); its keys map onto
:class:`sdft.pipeline.PipelineConfig`. Recipes ship in the repository's ``recipes/`` folder
(``$SDFT_RECIPES`` points elsewhere); a recipe argument is a name (``demo``) or a path.
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
    """The recipe's mapping with ``key=value`` overrides merged in (no validation yet)."""
    data = load_yaml(find_recipe(name_or_path)) if name_or_path else {}
    return deep_merge(data, parse_overrides(list(overrides)))


def validate_recipe(name_or_path: str, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """Build the typed pipeline config from a recipe and preflight it (:mod:`sdft.preflight`: the data's
    fields, the model, LoRA targets, the eval section), raising one ConfigError listing every problem.
    Writes nothing (output paths are checked when the recipe runs)."""
    from sdft.pipeline import PipelineConfig
    from sdft.preflight import validate

    path = find_recipe(name_or_path)
    return validate(PipelineConfig, load_recipe(str(path), overrides), source=str(path), write=False)
