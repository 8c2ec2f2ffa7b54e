"""What every command does around its library call: config, preflight, quiet engines, Hub push."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def command_line() -> str:
    """The command as typed (for cards and run records)."""
    return "sdft " + shlex.join(sys.argv[1:])


def settings(given: Mapping[str, Any], overrides: tuple[str, ...] | list[str] = (),
             base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A config's data: ``base`` (a recipe), then ``KEY=VALUE`` overrides, then the flags the user gave."""
    from sdft.config import deep_merge, parse_overrides

    bad = [o for o in overrides if "=" not in o]
    if bad:
        import click

        raise click.UsageError(f"unexpected argument '{bad[0]}': trailing arguments are KEY=VALUE settings "
                               f"(e.g. samples=4)")
    return deep_merge(deep_merge(dict(base or {}), parse_overrides(list(overrides))), given)


def build(cls: type[T], data: Mapping[str, Any], *, source: str | None = None, **preflight: Any) -> T:
    """Build and preflight a config: one error lists every problem (exit 2)."""
    from sdft.preflight import validate

    return validate(cls, data, source=source, **preflight)


def push_dataset(output: str | Path, manifest: dict[str, Any], repo: str | None, public: bool) -> None:
    """Write the dataset card beside a finished output, then push it when ``--push-to-hub`` was given."""
    from sdft.card import write_card_beside
    from sdft.commands._ui import console, notice

    write_card_beside(output, manifest, command_line=command_line(), notice=notice)
    if repo:
        from sdft.hub import push_dataset as push

        url = push(output, repo, private=not public, command_line=command_line(), notice=notice)
        console.print(f"pushed to {url}", markup=False, highlight=False)


def push_model(model_dir: str | Path, run: dict[str, Any] | None, repo: str | None, public: bool) -> None:
    """Write the model card into a trained model folder, then push it when ``--push-to-hub`` was given."""
    from sdft.card import write_card_beside
    from sdft.commands._ui import console, notice

    write_card_beside(model_dir, run, command_line=command_line(), notice=notice)
    if repo:
        from sdft.hub import push_model as push

        url = push(model_dir, repo, run=run, private=not public, command_line=command_line(), notice=notice)
        console.print(f"pushed to {url}", markup=False, highlight=False)


def log_file(output: str | Path, *, folder: bool) -> Path:
    """Where engine logs go: ``OUT.log`` beside an output file, ``DIR/sdft.log`` in a run folder."""
    p = Path(output)
    return p / "sdft.log" if folder else p.with_name(p.name + ".log")
