"""Verdicts, the verifier interface shared by every task kind, and the shared input caps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

#: Reason of a check that raised or overran its time limit (counted in manifests like any other).
VERIFIER_ERROR = "verifier-error"

#: Longest excerpt of an answer quoted in a verdict's detail (details end up in every row).
DETAIL_CHARS = 120


@dataclass(frozen=True)
class Verdict:
    """Whether a candidate answer is acceptable, and why.

    Attributes:
        ok: the candidate passes.
        reason: a short category used for counting in manifests ("ok", "wrong-answer",
            "no-answer", "truncated", "empty", "meta-talk", "refusal", "tests-failed",
            "timeout", "extra-call", "verifier-error", ...). Keep it a stable kebab-case token.
        detail: free text for humans (e.g. "got 12, expected 13").
    """

    ok: bool
    reason: str
    detail: str = ""


PASS = Verdict(True, "ok")


class Verifier(Protocol):
    """A task verifier: checks a candidate answer against the row's reference.

    Optional attributes read by :func:`sdft.verify.verify`:

    * ``pure`` (bool): ``check`` depends only on its arguments and keeps no state, so it may
      run in the killable watchdog worker process (:mod:`sdft.verify.watchdog`). The built-in
      text verifiers are pure; the code verifier is not (it runs its own sandbox).
    * ``prepare`` (a module-level function or None): a one-time warm-up (an import) run
      before the first check in a process, outside the time budget.
    * ``timeout_s`` / ``time_budget_s`` (float): the verifier enforces its own wall-clock
      limit; :func:`sdft.verify.verify` then does not relabel a slow check as an overrun.
    """

    name: str

    def check(self, candidate: str, reference: str, row: dict[str, Any]) -> Verdict:
        """Return a verdict for ``candidate``; ``row`` holds the row's extra fields (tests, ...)."""
        ...


def clip(text: Any, limit: int = DETAIL_CHARS) -> str:
    """Return ``text`` as one line of at most ``limit`` characters (for verdict details).

    Args:
        text: anything; non-strings are converted with ``str``.
        limit: the longest result.

    Returns:
        The text with line breaks escaped, cut in the middle with "..." when too long.
    """
    text = text if isinstance(text, str) else str(text)
    if len(text) > limit:
        half = max((limit - 5) // 2, 1)
        text = f"{text[:half]} ... {text[-half:]}"
    return text.replace("\r", "\\r").replace("\n", "\\n")


def error_verdict(exc: BaseException) -> Verdict:
    """The verdict for a check that raised ``exc`` (reason :data:`VERIFIER_ERROR`)."""
    return Verdict(False, VERIFIER_ERROR, clip(f"{type(exc).__name__}: {exc}", 2 * DETAIL_CHARS))

