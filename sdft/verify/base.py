"""Verdicts and the verifier interface shared by every task kind."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Verdict:
    """Whether a candidate answer is acceptable, and why.

    Attributes:
        ok: the candidate passes.
        reason: a short category used for counting in manifests ("ok", "wrong-answer",
            "no-answer", "truncated", "empty", "meta-talk", "refusal", "tests-failed",
            "timeout", "extra-call", ...). Keep it a stable kebab-case token.
        detail: free text for humans (e.g. "got 12, expected 13").
    """

    ok: bool
    reason: str
    detail: str = ""


PASS = Verdict(True, "ok")


class Verifier(Protocol):
    """A task verifier: checks a candidate answer against the row's reference."""

    name: str

    def check(self, candidate: str, reference: str, row: dict[str, Any]) -> Verdict:
        """Return a verdict for ``candidate``; ``row`` holds the row's extra fields (tests, ...)."""
        ...
