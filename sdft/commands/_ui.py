"""Terminal UI of the CLI layer (the only place that uses rich): consoles, progress, quiet engines.

**Quiet by default.** vLLM, torch, transformers, datasets and tqdm write a hundred lines of
warnings and progress around the twenty a user needs, some of them from C++ straight to file
descriptor 2. While a command runs its engines, :func:`engine_logs` points file descriptors 1
and 2 at a log file in the run's folder (``OUT.log`` beside an output file, ``OUTDIR/sdft.log``
in a run folder), so everything a library or a child process writes lands there, and restores
them afterwards. sdft's own output (notices, progress bars, summaries, errors) goes through the
consoles below, which keep writing to the terminal through duplicates of the original
descriptors. ``-v`` leaves the descriptors alone (engine logs on the terminal); ``-q`` shows
errors only. Without real descriptors (an in-process test runner) nothing is redirected.

**Progress.** Library functions report through one callback type, :class:`sdft.progress.Progress`
(``on_progress(done, total, **stats)``, with ``stage=`` for functions that run several);
:class:`StageProgress` renders it as one rich bar per stage: count, rate, ETA, and the stage's
figures (tokens/s, rows accepted so far, loss).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def _width(stream: object) -> int | None:
    # Pipelines read our output from logs: do not wrap at rich's 80-column default there.
    return None if getattr(stream, "isatty", lambda: False)() or os.environ.get("COLUMNS") else 200


console = Console(stderr=True, highlight=False, width=_width(sys.stderr))  # status: notices, progress
out = Console(highlight=False, width=_width(sys.stdout))  # results: tables, paths
errors = Console(stderr=True, highlight=False, width=_width(sys.stderr))  # errors: shown even with -q

#: -1 quiet (errors only), 0 default (engine logs to the log file), 1 verbose (engine logs on the terminal)
_state: dict[str, Any] = {"level": 0}


def set_verbosity(verbose: bool = False, quiet: bool = False) -> int:
    """Apply ``-v`` / ``-q``; returns the level (-1, 0 or 1)."""
    level = 1 if verbose else -1 if quiet else 0
    _state.update(level=level, log=None)  # a command starts: no log of its own yet
    console.quiet = out.quiet = level < 0
    return level


def table(title: str | None = None, **kw: Any) -> Any:
    """A compact rich table for end-of-stage summaries: a header rule, no frame (few terminal lines)."""
    from rich import box
    from rich.table import Table

    return Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, title_justify="left", **kw)


def print_error(e: BaseException) -> None:
    # Escaped: messages hold literal brackets (pip install 'sdft-toolkit[ray]') that rich
    # would otherwise take for markup tags and drop.
    log = _state.get("log")
    if log:  # before the error, which stays the last line
        errors.print(f"[dim]engine and library logs: {escape(str(log))}[/]", markup=True, soft_wrap=True)
    errors.print(f"[bold red]error:[/] {escape(str(e))}", markup=True, soft_wrap=True)


def notice(msg: str) -> None:
    console.print(f"[dim]{escape(msg)}[/]", markup=True, soft_wrap=True)


# ---------------------------------------------------------------------------------------------
# engine logs


def _fd_backed(stream: Any, fd: int) -> bool:
    try:
        return stream.fileno() == fd
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation: an in-memory stream
        return False


@contextmanager
def engine_logs(log_path: str | Path | None) -> Iterator[Path | None]:
    """Send everything engines and libraries write (Python or C, this process or its children) to ``log_path``.

    A no-op with ``-v``, without a path, or when stdout/stderr are not real file descriptors.
    The log is appended to (a header line per command), so a rerun keeps earlier runs' logs.

    Yields:
        The log file, or None when nothing is redirected.
    """
    redirect = [fd for fd, stream in ((1, sys.stdout), (2, sys.stderr)) if _fd_backed(stream, fd)]
    if _state["level"] > 0 or log_path is None or not redirect:
        yield None
        return
    path = Path(log_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    log = open(path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115 - closed in finally
    log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} sdft {' '.join(sys.argv[1:])}\n")
    log.flush()
    notice(f"engine and library logs: {path} (-v shows them here)")
    pinned: list[tuple[Console, Any]] = []
    terminals: list[IO[str]] = []
    saved: dict[int, int] = {}
    try:
        for fd in redirect:  # our consoles keep the terminal through a duplicate of its descriptor
            term = os.fdopen(os.dup(fd), "w", buffering=1, encoding="utf-8", errors="replace")
            terminals.append(term)
            for c in ((out,) if fd == 1 else (console, errors)):
                pinned.append((c, c._file))  # rich keeps the explicit file here; None = sys.stdout/stderr
                c.file = term
        sys.stdout.flush()
        sys.stderr.flush()
        for fd in redirect:
            saved[fd] = os.dup(fd)
            os.dup2(log.fileno(), fd)
        _state["log"] = path
        yield path
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        for fd, orig in saved.items():
            os.dup2(orig, fd)
            os.close(orig)
        for c, file in pinned:
            c.file = file
        for term in terminals:
            term.close()
        log.close()


# ---------------------------------------------------------------------------------------------
# progress


def _stage_unit(stage: str) -> str:
    if stage.startswith("train"):
        return "steps"
    if "generate" in stage or "score" in stage:
        return "answers"
    if stage.startswith("replay"):
        return "kept"
    return "rows"


def _fmt(key: str, value: Any, done: int) -> str | None:
    """One stat as shown after the bar (None: not shown)."""
    if value is None:
        return None
    if key == "tok_s":
        return f"{value} tok/s"
    if key == "q_s":
        return f"{value} queries/s"
    if key == "accept_rate" and isinstance(value, (int, float)):
        return f"accepted {round(value * done)} ({value:.0%})"
    if key.endswith("_rate") and isinstance(value, (int, float)):
        return f"{key[:-5].replace('_', ' ')} rate {value:.0%}"
    return f"{key} {value}"


class StageProgress:
    """An :class:`sdft.progress.Progress` that draws one rich bar per stage.

    A call with a new ``stage`` (or the default stage) starts a new bar under the finished ones.
    Use as a context manager; quiet with ``-q``; printed once at the end when stderr is not a
    terminal.

    Args:
        stage: the stage of calls that name none (a single-stage function such as ``run_rewrite``).
        total: that stage's size, when known before the first call.
        units: stage -> unit shown in the rate (default: by the stage's name).
    """

    def __init__(self, stage: str = "", total: int | None = None, units: Mapping[str, str] | None = None):
        self.default, self.first_total, self.units = stage, total, dict(units or {})
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
            console=console, transient=False,
            # rich would otherwise catch what libraries print to sys.stdout/stderr and show it above the bar
            redirect_stdout=False, redirect_stderr=False)
        self.tasks: dict[str, Any] = {}
        self.started: dict[str, tuple[float, int]] = {}

    def __enter__(self) -> StageProgress:
        self.progress.start()
        if self.default and self.first_total is not None:
            self._task(self.default, self.first_total)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def _task(self, stage: str, total: int | None) -> Any:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage or "working", total=total, info="")
        return self.tasks[stage]

    def __call__(self, done: int, total: int | None = None, /, **stats: Any) -> None:
        stage = str(stats.pop("stage", None) or self.default)
        task = self._task(stage, total)
        now = time.monotonic()
        t0, d0 = self.started.setdefault(stage, (now, done))
        unit = self.units.get(stage) or _stage_unit(stage)
        parts = [f"{(done - d0) / (now - t0):.1f} {unit}/s"] if now - t0 > 0.5 and done > d0 else []
        parts += [s for s in (_fmt(k, v, done) for k, v in stats.items()) if s]
        self.progress.update(task, completed=done, total=total, info=" · ".join(parts))


@contextmanager
def progress_bar(description: str, total: int | None = None, unit: str = "rows") -> Iterator[StageProgress]:
    """A single-stage :class:`StageProgress` (kept for callers of the earlier helper)."""
    with StageProgress(description, total, units={description: unit}) as bar:
        yield bar
