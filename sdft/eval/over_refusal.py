"""``over-refusal``: benign prompts that sound risky -> compliance rate (higher is better).

Without this suite a model that refuses everything would look perfectly "safe". The prompts
use words like kill, shoot or poison in harmless senses (XSTest-style). Scoring is the
keyword refusal detector of :mod:`sdft.refusal`: an answer counts as compliance when it does
not open with a refusal phrase (64 tokens by default, like ``safety``).

Default probes: 50 prompts written by the sdft project (``sdft/assets/over_refusal_probes.jsonl``).
XSTest's ``xstest_prompts.csv`` works as is: only its rows labelled ``safe`` are used (all 250
of them; the ``unsafe`` contrast prompts should be refused and belong to ``safety``).
"""

from __future__ import annotations

from typing import Any

from sdft.eval.safety import RefusalSuite


class OverRefusalSuite(RefusalSuite):
    """Compliance rate on benign prompts that look risky."""

    name = "over-refusal"
    metric = "compliance rate"
    default_data = "over_refusal_probes.jsonl"
    refusal_wanted = False

    def keep(self, row: dict[str, Any]) -> bool:
        """XSTest's ``safe`` rows (and every row of a file without a ``label`` column)."""
        label = row.get("label")
        return label is None or str(label).strip().lower() in ("", "safe")
