"""The one progress-callback type of the library.

Every long-running library function takes ``on_progress: Progress | None`` and calls it as::

    on_progress(done, total, **stats)

* ``done``: units finished so far in the current stage (rows, kept rows, optimizer steps, answers);
  never decreasing within a stage.
* ``total``: the stage's size when known, else None.
* ``stats``: optional figures of the stage, each a number or a short string. Names the CLI
  renders specially: ``stage`` (str: the stage the call belongs to, for functions that run
  several, e.g. ``rewrite``, ``train``, ``eval: base: generate``; a new value starts a new
  progress bar), ``tok_s`` (generated or trained tokens per second), ``accept_rate`` /
  ``keep_rate`` (share of rows kept so far), ``loss``, ``lr``, ``round``.

A function that runs other stages passes them :func:`staged` callbacks, so a stage's own
function never needs to know its name. The CLI's rich bars (:mod:`sdft.commands._ui`) are one
implementation; a plain ``lambda done, total=None, **stats: ...`` is another.
"""

from __future__ import annotations

from typing import Any, Protocol


class Progress(Protocol):
    """``on_progress(done, total=None, **stats)``: see the module docstring."""

    def __call__(self, done: int, total: int | None = None, /, **stats: Any) -> None: ...


def staged(on_progress: Progress | None, stage: str) -> Progress | None:
    """``on_progress`` with ``stage=stage`` added to every call (None stays None).

    A call that names its own stage (a function with several) becomes ``"STAGE: its stage"``.
    """
    if on_progress is None:
        return None

    def report(done: int, total: int | None = None, /, **stats: Any) -> None:
        inner = stats.get("stage")
        on_progress(done, total, **{**stats, "stage": f"{stage}: {inner}" if inner else stage})

    return report
