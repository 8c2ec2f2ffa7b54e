"""``sdft recipes``: list, show and validate the bundled recipes."""

from __future__ import annotations

import click


@click.group("recipes", epilog="""\b
Examples:
  sdft recipes ls
  sdft recipes show demo
  sdft recipes validate                 # every bundled recipe
  sdft recipes validate my.yaml train.learning_rate=2e-4
""")
def command() -> None:
    """Ready-made YAML configs per task (run one with `sdft train NAME`)."""


@command.command("ls", epilog="Example:\n\n  sdft recipes ls")
def ls() -> None:
    """List bundled recipes with their one-line summary."""
    from sdft.commands._ui import out
    from sdft.commands._ui import table as Table
    from sdft.recipes import list_recipes, recipes_dir

    t = Table(title=f"recipes in {recipes_dir()}")
    t.add_column("name")
    t.add_column("what it does")
    for r in list_recipes():
        t.add_row(r.name, r.summary)
    out.print(t)


@command.command("show", epilog="Example:\n\n  sdft recipes show gsm8k")
@click.argument("name")
def show(name: str) -> None:
    """Print a recipe's YAML."""
    from sdft.commands._ui import out
    from sdft.recipes import find_recipe

    out.print(find_recipe(name).read_text(encoding="utf-8"), markup=False, highlight=False)


@command.command("validate", epilog="Example:\n\n  sdft recipes validate demo train.epochs=2")
@click.argument("name", required=False)
@click.argument("overrides", nargs=-1)
def validate(name: str | None, overrides: tuple[str, ...]) -> None:
    """Check one recipe (with overrides), or every bundled one; exit 2 on problems."""
    from sdft.commands._ui import out
    from sdft.errors import ConfigError, InputError
    from sdft.recipes import list_recipes, validate_recipe

    names = [name] if name else [r.name for r in list_recipes()]
    errors: list[ConfigError] = []
    for n in names:
        try:
            validate_recipe(n, overrides)
            out.print(f"ok  {n}")
        except ConfigError as e:
            errors.append(e)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise InputError(f"{len(errors)} recipes are invalid:\n" + "\n".join(str(e) for e in errors))
