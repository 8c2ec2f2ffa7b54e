"""The suite interface: what a probe set declares, and how one answer becomes one scored item.

A suite is a class with a few declarations and three small methods; :mod:`sdft.eval.run`
does everything else the same way for every suite (load the probes before any model, generate
greedily in one batched call per budget, cache, score likelihoods, judge, aggregate, compare):

===================  ==========================================================================
``name``             the name on the command line, in ``EvalConfig.suites`` and in the reports
``metric``           what the 0-100 score means ("refusal rate", "accuracy", ...); higher is better
``default_data``     the bundled probe file in ``sdft/assets`` (``EvalConfig.data[name]`` replaces it)
``max_new_tokens``   the default answer budget (``EvalConfig.max_new_tokens`` overrides it)
``answers_from``     ``"self"``: every model answers the probes; ``"base"``: only the base model
                     answers and every model is scored on the base's answers (``drift``)
``needs_likelihood`` run a scoring pass: each model's NLL of the answer it is judged on
                     arrives in :attr:`Answer.nll` (``drift``)
``judge_workers``    threads for judging (answers judged by running code in a sandbox)
``in_defaults``      part of the default suite list
``probe(row, ...)``  one raw data row -> a :class:`Probe` (or None to skip the row)
``judge(probe, ..)`` the verdict on one answer, for pass/fail suites
``result(...)``      the :class:`ItemResult` of one answer; by default 100 for a pass, 0 for a fail
``aggregate(items)`` the model's score over the items; by default a rate with a Wilson interval
``delta(base, m)``   the tuned-minus-base change with a 95% interval; by default Newcombe's
===================  ==========================================================================

To add a suite: write ``sdft/eval/<name>.py`` with a :class:`Suite` subclass (a pass/fail suite
only needs the declarations, ``probe`` and ``judge``), add it to
:data:`sdft.eval.registry.SUITE_CLASSES` (or call :func:`sdft.eval.registry.register`), and
bundle a probe file in ``sdft/assets``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any, ClassVar

from sdft.errors import ConfigError
from sdft.eval.probes import load_probes, prompt_text, row_id, user_turn
from sdft.eval.stats import newcombe_diff, wilson
from sdft.verify.base import Verdict

if TYPE_CHECKING:
    from sdft.eval.config import EvalConfig


@dataclass
class Probe:
    """One prompt of a suite.

    Attributes:
        id: stable id within the suite (the row's ``id`` column, else its row number; unique).
        messages: the chat prompt sent to the model.
        max_new_tokens: the answer budget.
        meta: what the judge needs (reference answer, tests, allowed calls, ...).
    """

    id: str
    messages: list[dict[str, str]]
    max_new_tokens: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt(self) -> str:
        """The last turn's text (what reports show as the prompt)."""
        return self.messages[-1]["content"]


@dataclass
class Answer:
    """The answer a model is judged on, as generated (or cached).

    Attributes:
        text: the answer text.
        finish_reason: ``"stop"`` or ``"length"`` (the budget ran out).
        num_tokens: generated tokens.
        nll: the judged model's summed negative log-likelihood of ``text`` after the prompt
            (only for suites with ``needs_likelihood``).
        scored_tokens: the number of tokens ``nll`` sums over.
    """

    text: str
    finish_reason: str
    num_tokens: int = 0
    nll: float | None = None
    scored_tokens: int | None = None


@dataclass
class ItemResult:
    """The score of one answer: the unit of the per-item results in ``answers.jsonl``.

    Attributes:
        id: the probe id.
        value: the item's score on the suite's 0-100 scale (100/0 for pass/fail suites), or
            None when the item has no score (left out of the aggregate).
        passed: the verdict for pass/fail suites; None for suites that score a continuous value.
        reason: a stable kebab-case token ("ok", "complied", "wrong-answer", ...).
        detail: free text for humans.
        stats: numbers the suite's aggregate needs besides ``value`` (drift: nll, tokens).
    """

    id: str
    value: float | None
    passed: bool | None
    reason: str
    detail: str = ""
    stats: dict[str, float] = field(default_factory=dict)


def asset_path(name: str) -> str:
    """Path of a probe set bundled in ``sdft/assets``."""
    return str(resources.files("sdft").joinpath("assets", name))


class Suite:
    """A probe set plus a scoring rule (see the module docstring for every declaration).

    The defaults make a pass/fail suite scored as a rate: subclasses set the class attributes
    and implement :meth:`probe` and :meth:`judge`.
    """

    name: ClassVar[str] = ""
    metric: str = ""
    default_data: ClassVar[str | None] = None
    max_new_tokens: ClassVar[int] = 256
    answers_from: ClassVar[str] = "self"
    needs_likelihood: ClassVar[bool] = False
    in_defaults: ClassVar[bool] = True
    judge_workers: int = 1

    @classmethod
    def from_config(cls, cfg: EvalConfig | None) -> Suite:
        """The suite as configured by ``cfg`` (None: defaults); suites with options override this."""
        return cls()

    @classmethod
    def available(cls) -> bool:
        """Whether the suite can run here (its optional packages are installed)."""
        return True

    def default_path(self) -> str:
        """The bundled probe file.

        Raises:
            ConfigError: the suite has no bundled probes (the user must give ``data.<name>``).
        """
        if not self.default_data:
            raise ConfigError(f"data.{self.name}: the {self.name} suite has no bundled probes; give a file "
                              f"(--data {self.name}=PATH)")
        return asset_path(self.default_data)

    def probes(self, path: str | None = None, limit: int | None = None) -> list[Probe]:
        """Load the probes (``path`` replaces the bundled set; ``limit`` keeps the first N).

        Raises:
            InputError: the file is missing or unreadable, a row lacks what the suite needs
                (naming file, row and field), or no row is usable.
            ConfigError: no ``path`` and the suite bundles no probes.
        """
        return load_probes(path or self.default_path(), self.probe, limit)

    def probe(self, row: dict[str, Any], index: int, where: str) -> Probe | None:
        """One raw row -> a probe (None skips the row); ``where`` names file and row for errors."""
        raise NotImplementedError

    def judge(self, probe: Probe, text: str, finish_reason: str) -> Verdict:
        """Whether the answer counts as a success (pass/fail suites)."""
        raise NotImplementedError

    def result(self, probe: Probe, answer: Answer) -> ItemResult:
        """The scored item: the verdict of :meth:`judge`, valued 100 (pass) or 0 (fail)."""
        v = self.judge(probe, answer.text, answer.finish_reason)
        return ItemResult(probe.id, 100.0 if v.ok else 0.0, v.ok, v.reason, v.detail)

    def aggregate(self, items: list[ItemResult]) -> dict[str, Any]:
        """Score of one model: the pass rate with a 95% Wilson interval, all in points."""
        k, n = sum(bool(i.passed) for i in items), len(items)
        lo, hi = wilson(k, n)
        return {"n": n, "k": k, "score": 100 * k / n if n else None, "low": 100 * lo, "high": 100 * hi}

    def delta(self, base: dict[str, Any], other: dict[str, Any]) -> tuple[float, float, float]:
        """Other minus base, with a 95% Newcombe interval (points)."""
        lo, hi = newcombe_diff(base["k"], base["n"], other["k"], other["n"])
        return other["score"] - base["score"], 100 * lo, 100 * hi


#: Columns that hold the prompt in public prompt-only sets (AdvBench ``goal``, XSTest ``prompt``, ...).
PROMPT_FIELDS = ("prompt", "goal", "question", "instruction")


class PromptSuite(Suite):
    """A suite whose probes are one user turn each, from a prompt column (``suffix`` appended).

    Subclasses filter rows with :meth:`keep` and judge the answers.
    """

    suffix: str = ""

    def keep(self, row: dict[str, Any]) -> bool:
        """Whether a row is a probe of this suite (all rows by default)."""
        return True

    def probe(self, row: dict[str, Any], index: int, where: str) -> Probe | None:
        if not self.keep(row):
            return None
        text = prompt_text(row, PROMPT_FIELDS, where) + self.suffix
        return Probe(row_id(row, index), user_turn(text), self.max_new_tokens)
