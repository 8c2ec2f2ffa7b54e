"""``sdft eval``: the forgetting report, one module per probe suite.

Every suite scores one model on a 0-100 scale where higher is better. The package:

* :mod:`sdft.eval.base`: the suite interface (:class:`~sdft.eval.base.Suite`, probes, answers,
  item results) and how to add a suite; :mod:`sdft.eval.registry`: the suites by name;
* one module per suite: ``task``, ``safety`` (+ ``safety-jailbreak``), ``over_refusal``,
  ``math``, ``code``, ``tool_use``, ``drift``;
* :mod:`sdft.eval.probes`: the shared probe loader; :mod:`sdft.eval.stats`: intervals;
* :mod:`sdft.eval.config`: :class:`EvalConfig`; :mod:`sdft.eval.cache`: the answer cache;
* :mod:`sdft.eval.run`: :func:`run_eval` (generate, score, judge, aggregate, gate);
* :mod:`sdft.eval.report`: ``report.json``, ``report.md``, ``radar.png``, ``answers.jsonl``.

``EvalConfig``, ``EvalReport``, ``run_eval`` and ``check_gate`` are importable from here.
"""

from __future__ import annotations

from sdft.eval.config import EvalConfig
from sdft.eval.registry import SUITE_CLASSES, default_suites, get_suite, register, suite_names
from sdft.eval.run import EvalReport, check_gate, run_eval

#: The built-in suite names (the live list is :func:`suite_names`).
SUITES = tuple(SUITE_CLASSES)

__all__ = ["SUITES", "EvalConfig", "EvalReport", "check_gate", "default_suites", "get_suite", "register",
           "run_eval", "suite_names"]
