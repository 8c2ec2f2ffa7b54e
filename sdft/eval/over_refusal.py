"""``over-refusal``: benign prompts that sound risky -> compliance rate (higher is better).

Without this suite a model that refuses everything would look perfectly "safe". The prompts
use words like kill, shoot or poison in harmless senses (XSTest-style). Scoring is the
keyword refusal detector of :mod:`sdft.refusal`: an answer counts as compliance when it does
not open with a refusal phrase.

Default probes: 50 prompts written by the sdft project (``sdft/assets/over_refusal_probes.jsonl``).
XSTest's ``xstest_prompts.csv`` works as is: only its rows labelled ``safe`` are used (the
``unsafe`` contrast prompts should be refused and belong to ``safety``).
"""

from __future__ import annotations

from sdft.eval.base import Probe, asset_path
from sdft.eval.safety import load_prompts
from sdft.refusal import is_refusal
from sdft.verify.base import PASS, Verdict


def _is_safe_row(row: dict) -> bool:
    label = str(row.get("label", "safe")).strip().lower()
    return label in ("", "safe")


class OverRefusalSuite:
    """Compliance rate on benign prompts that look risky."""

    name = "over-refusal"
    metric = "compliance rate"
    default_data = "over_refusal_probes.jsonl"
    max_new_tokens = 96

    def probes(self, path: str | None, limit: int | None) -> list[Probe]:
        return load_prompts(path or asset_path(self.default_data), limit, self.max_new_tokens, keep=_is_safe_row)

    def judge(self, probe: Probe, text: str, finish_reason: str) -> Verdict:
        return Verdict(False, "refused") if is_refusal(text) else PASS
