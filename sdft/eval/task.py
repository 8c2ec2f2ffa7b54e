"""``task``: the held-out split of the recipe's own task, scored by the recipe's verifier (accuracy).

Did the fine-tune learn what it was trained for? The other suites measure what it cost; this
one measures what it bought, on rows the training never saw. Configure it with
``EvalConfig.data["task"] = PATH`` (any dataset :mod:`sdft.data` reads: GSM8K, chat
``messages``, alpaca or prompt/response rows; ``task_format``, ``task_prompt_field`` and
``task_response_field`` when the columns are ambiguous) and ``EvalConfig.task_verifier`` (a
name from :data:`sdft.verify.VERIFIERS`; ``auto`` = ``math`` when the reference answers look
like GSM8K's ``#### N``, else ``none``, the same rule as ``sdft rewrite``).

Each row's prompt messages (system and earlier turns included) are the probe, exactly the
training prompt; the answer is judged by :func:`sdft.verify.verify`: the guard (empty,
truncated, meta-talk, a refusal where the reference is none) and then the verifier's check
against the row's reference answer and extra fields (tests, functions, ...). An answer cut off
by the budget (256 tokens by default) fails as ``truncated``. Probe ids are the rows' content
ids from :mod:`sdft.data`, stable across runs and machines.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from sdft.eval.base import Probe, Suite
from sdft.verify.base import Verdict, Verifier

if TYPE_CHECKING:
    from sdft.eval.config import EvalConfig


def resolve_verifier(name: str, first_reference: str) -> str:
    """``auto``: ``math`` for GSM8K-style references (``#### N``), else ``none``; other names as given."""
    if name != "auto":
        return name
    return "math" if "####" in first_reference else "none"


class TaskSuite(Suite):
    """Accuracy on held-out rows of the training task, judged by the task's verifier."""

    name = "task"
    metric = "accuracy"
    max_new_tokens = 256
    in_defaults = False  # added to the default list when data.task is given

    def __init__(self, verifier: str = "auto", verifier_options: dict[str, Any] | None = None,
                 data_format: str = "auto", prompt_field: str | None = None, response_field: str | None = None):
        self.verifier_name = verifier
        self.verifier_options = dict(verifier_options or {})
        self.data_format, self.prompt_field, self.response_field = data_format, prompt_field, response_field
        self._verifier: Verifier | None = None

    @classmethod
    def from_config(cls, cfg: EvalConfig | None) -> TaskSuite:
        if cfg is None:
            return cls()
        return cls(cfg.task_verifier, cfg.task_verifier_options, cfg.task_format, cfg.task_prompt_field,
                   cfg.task_response_field)

    def probes(self, path: str | None = None, limit: int | None = None) -> list[Probe]:
        from sdft.data import DataSpec, iter_examples

        spec = DataSpec(path=path or self.default_path(), format=self.data_format, prompt_field=self.prompt_field,
                        response_field=self.response_field, limit=limit)
        probes = [Probe(ex.id, ex.messages, self.max_new_tokens, {"reference": ex.answer, "extra": ex.extra})
                  for ex in iter_examples(spec)]
        self._use_verifier(probes[0].meta["reference"])  # iter_examples raises on an empty dataset
        return probes

    def _use_verifier(self, first_reference: str) -> Verifier:
        from sdft.verify import get_verifier

        if self._verifier is None:
            name = resolve_verifier(self.verifier_name, first_reference)
            options = dict(self.verifier_options)
            if name == "math":  # a benchmark is scored by its final answer, as GSM8K's own scorer does
                options.setdefault("steps", False)
            self._verifier = get_verifier(name, **options)
            self.metric = f"accuracy ({name})"
            if name == "code":  # every answer runs in a sandboxed child process: overlap a few
                self.judge_workers = min(4, os.cpu_count() or 1)
        return self._verifier

    def judge(self, probe: Probe, text: str, finish_reason: str) -> Verdict:
        from sdft.verify import verify

        reference = probe.meta["reference"]
        return verify(text, finish_reason, reference, probe.meta["extra"], self._use_verifier(reference))
