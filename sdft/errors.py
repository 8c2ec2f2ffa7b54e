"""Domain errors.

The library raises these; the CLI maps them to exit codes:

* :class:`InputError` / :class:`ConfigError` -> exit 2 (fix your input or flags),
* :class:`SdftError` (any other) -> exit 1 (runtime failure),
* :class:`GateFailed` -> exit 3 (an eval gate was crossed).
"""

from __future__ import annotations


class SdftError(Exception):
    """Base class for every error sdft raises on purpose (exit code 1)."""

    exit_code = 1


class InputError(SdftError):
    """Bad user input: a file, a row, a field or a flag that must be fixed (exit code 2)."""

    exit_code = 2


class ConfigError(InputError):
    """A configuration with one or more problems; ``problems`` lists each one."""

    def __init__(self, problems: list[str] | str, *, source: str | None = None):
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        head = f"invalid configuration{f' in {source}' if source else ''}"
        if len(self.problems) == 1:
            msg = f"{head}: {self.problems[0]}"
        else:
            msg = head + f" ({len(self.problems)} problems):\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(msg)


class MissingDependency(SdftError):
    """An optional package is missing; the message names the extra to install."""

    exit_code = 1

    def __init__(self, package: str, extra: str, purpose: str = ""):
        why = f" (needed for {purpose})" if purpose else ""
        super().__init__(
            f"the package '{package}' is not installed{why}. "
            f"Install it with: pip install '{f'sdft-toolkit[{extra}]' if extra else 'sdft-toolkit'}'"
        )
        self.package = package
        self.extra = extra


class WorkerFailed(SdftError):
    """One or more data-parallel workers (shards of a ``--ray`` run) failed; names each shard.

    Exit code 2 when every failed worker failed on bad input or configuration (fix it and
    rerun), else 1.
    """

    def __init__(self, message: str, *, shards: list[str], exit_code: int = 1):
        super().__init__(message)
        self.shards = list(shards)
        self.exit_code = exit_code


class GateFailed(SdftError):
    """An evaluation gate (``--max-drop``) was crossed (exit code 3)."""

    exit_code = 3
