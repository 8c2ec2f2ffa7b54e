"""The ``sdft`` command line: a thin Click layer over the library.

Subcommands live in :mod:`sdft.commands` and are imported only when used, so ``sdft --help``
never imports torch, transformers, vLLM or datasets. Errors map to exit codes: 2 for bad
input or usage, 1 for runtime failures, 3 for a failed eval gate.
"""

from __future__ import annotations

import importlib
import sys

import click

from sdft import __version__

# name -> (module, short help shown by `sdft --help` without importing the module)
COMMANDS: dict[str, tuple[str, str]] = {
    "rewrite": ("sdft.commands.rewrite", "Rewrite a dataset's answers with the seed model (self-distillation)."),
    "merge": ("sdft.commands.merge", "Combine the outputs of data-parallel --shard I/N rewrite runs."),
    "inspect": ("sdft.commands.inspect", "Summarise a rewrite output: statuses, reasons, distribution gap."),
    "train": ("sdft.commands.train", "Rewrite then fine-tune (SDFT), or fine-tune on the originals (SFT)."),
    "eval": ("sdft.commands.eval", "Measure forgetting: base vs tuned on safety, math, code, tools, drift."),
    "compare": ("sdft.commands.compare", "Train several methods over seeds; report task gain against forgetting."),
    "replay": ("sdft.commands.replay", "Generate Magpie-style self-replay data from the model itself."),
    "recipes": ("sdft.commands.recipes", "List, show and validate the bundled YAML recipes."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module = importlib.import_module(COMMANDS[name][0])
        return module.command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, short) for name, (_, short) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="sdft")
def cli() -> None:
    """sdft: fine-tune chat LLMs without making them forget.

    \b
    Typical flow:
      sdft rewrite data.jsonl -o rewritten.jsonl     # self-distil the answers
      sdft train recipes/demo.yaml                   # rewrite + LoRA fine-tune
      sdft eval --model SEED --tuned runs/demo/model # forgetting report

    Exit codes: 0 ok, 1 runtime error, 2 bad input/usage, 3 eval gate failed.
    """


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the CLI and map sdft errors to exit codes."""
    from sdft.errors import SdftError

    try:
        cli.main(args=argv, prog_name="sdft", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except SdftError as e:
        from sdft.commands._ui import print_error

        print_error(e)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted: finished work is saved; rerun the same command to continue", err=True)
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
