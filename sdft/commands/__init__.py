"""Click subcommands, one module each; imported lazily by :mod:`sdft.cli`."""
