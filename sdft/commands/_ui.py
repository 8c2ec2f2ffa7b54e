"""Terminal UI helpers for the CLI layer (the only place that uses rich)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

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


console = Console(stderr=True, highlight=False, width=_width(sys.stderr))
out = Console(highlight=False, width=_width(sys.stdout))


def print_error(e: BaseException) -> None:
    # Escaped: messages hold literal brackets (pip install 'sdft-toolkit[ray]') that rich
    # would otherwise take for markup tags and drop.
    console.print(f"[bold red]error:[/] {escape(str(e))}", markup=True, soft_wrap=True)


def notice(msg: str) -> None:
    console.print(f"[dim]{escape(msg)}[/]", markup=True, soft_wrap=True)


class ProgressReporter:
    """Adapts library progress callbacks (``on_progress(done, total, **stats)``) to a rich bar."""

    def __init__(self, progress: Progress, task: Any, unit: str):
        self.progress = progress
        self.task = task
        self.unit = unit
        self.start = time.monotonic()

    def __call__(self, done: int, total: int | None = None, **stats: Any) -> None:
        elapsed = max(time.monotonic() - self.start, 1e-6)
        parts = [f"{done / elapsed:.1f} {self.unit}/s"]
        for k, v in stats.items():
            parts.append(f"{k} {v:.1%}" if isinstance(v, float) and 0 <= v <= 1 and "rate" in k else f"{k} {v}")
        self.progress.update(self.task, completed=done, total=total, info=" · ".join(parts))


@contextmanager
def progress_bar(description: str, total: int | None = None, unit: str = "rows") -> Iterator[ProgressReporter]:
    """A rich progress bar (rate, stats, ETA); plain and quiet when stderr is not a terminal."""
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
    ]
    with Progress(*columns, console=console, disable=not sys.stderr.isatty() and False,
                  transient=False) as progress:
        task = progress.add_task(description, total=total, info="")
        yield ProgressReporter(progress, task, unit)
