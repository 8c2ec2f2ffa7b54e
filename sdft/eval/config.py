"""``EvalConfig``: which models, which suites on which probes, with which budgets, and the gate.

Every problem is collected into one :class:`~sdft.errors.ConfigError` before anything loads:
value checks when the config is built (no file is read then), models, probe files and the output
folder in :func:`sdft.preflight.check`. Models are given the way ``--model`` takes them everywhere in sdft: the alias
``smollm2-135m-instruct``, a ``.gguf`` file, a Hugging Face folder, a LoRA adapter folder (merged
into its base once, cached) or a Hub id ``ORG/NAME``; a tuned model is ``MODEL`` or ``NAME=MODEL``.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sdft.config import (
    Backend,
    api_key_field,
    backend_field,
    base_url_field,
    check_literals,
    engine_options_of,
    engine_problems,
    kv_cache_field,
    max_concurrency_field,
    model_field,
)
from sdft.data import FORMATS as DATA_FORMATS
from sdft.errors import ConfigError
from sdft.eval.registry import SUITE_CLASSES, default_suites, suite_names
from sdft.models import ALIASES, is_local_model_dir

#: The largest answer budget accepted (a typo such as 10**9 should not reach the engine).
MAX_BUDGET = 131_072
TaskFormat = Literal[("auto", *DATA_FORMATS)]  # type: ignore[valid-type]
_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass
class EvalConfig:
    """What `sdft eval` compares, on which suites, and the gate."""

    base: str = model_field("the seed (base) model every tuned model is compared with")
    tuned: list[str] = field(default_factory=list, metadata={
        "help": "tuned models: MODEL or NAME=MODEL, in any form the base model takes (a LoRA adapter is merged "
                "once); repeatable", "metavar": "[NAME=]MODEL"})
    suites: list[str] | None = field(default=None, metadata={
        "help": f"any of {', '.join(SUITE_CLASSES)} (default: {', '.join(default_suites())}; task first "
                "when data.task is given)"})
    limit: int | None = field(default=None, metadata={"help": "only the first N probes of each suite"})
    data: dict = field(default_factory=dict, metadata={
        "help": "suite -> probe file replacing the bundled set (task: the held-out task data)",
        "metavar": "SUITE=PATH"})
    output_dir: str = field(default="runs/eval", metadata={"help": "report.json, report.md, radar.png, "
                                                                    "answers.jsonl, cached generations, sdft.log"})
    backend: Backend = backend_field()
    base_url: str | None = base_url_field()
    api_key: str | None = api_key_field()
    max_concurrency: int = max_concurrency_field()
    max_drop: dict = field(default_factory=dict, metadata={
        "help": "suite -> largest allowed drop in points (tuned below base); crossing it exits 3",
        "metavar": "SUITE=POINTS"})
    max_new_tokens: int | dict | None = field(default=None, metadata={
        "help": "answer budget: one number for every suite, or suite -> tokens ('default' for the rest); "
                "unset suites use their own (refusal suites 64, task 256, math 320, ...)",
        "metavar": "N | SUITE=N,..."})
    kv_cache_gib: float = kv_cache_field()
    seed: int = field(default=0, metadata={"help": "engine seed (decoding is greedy)"})
    overwrite: bool = field(default=False, metadata={"help": "discard cached answers in output_dir"})
    task_verifier: str = field(default="auto", metadata={
        "help": "verifier of the task suite: math | tool-call | code | exact | regex | choice | none | "
                "auto (math for GSM8K-style answers, else none)"})
    task_verifier_options: dict = field(default_factory=dict, metadata={
        "help": "options of the task verifier (e.g. pattern for regex, timeout_s for code)"})
    task_format: TaskFormat = field(default="auto", metadata={"help": "task data format: auto, alpaca, gsm8k, "
                                                                       "prompt or messages"})
    task_prompt_field: str | None = field(default=None, metadata={"help": "task prompt column (prompt format)"})
    task_response_field: str | None = field(default=None, metadata={"help": "task answer column (prompt format)"})

    def __post_init__(self) -> None:
        if self.suites is None:
            self.suites = (["task"] if "task" in self.data else []) + default_suites()
        # models, files and the output folder are checked by sdft.preflight (they touch the disk)
        problems = [*check_literals(self), *engine_problems(self), *self._suite_problems(),
                    *self._budget_problems(), *self._task_problems()]
        for key, value in self.max_drop.items():
            if key not in self.suites:
                problems.append(f"max_drop.{key}: not one of the suites run ({', '.join(self.suites)})")
            if not _is_number(value) or not math.isfinite(value) or value < 0:
                problems.append(f"max_drop.{key}: must be a number of points >= 0, got {value!r}")
        if self.limit is not None and self.limit < 1:
            problems.append(f"limit must be >= 1, got {self.limit}")
        if problems:
            raise ConfigError(problems)

    def engine_options(self) -> Any:
        """The engines' options (KV cache; the server for backend openai)."""
        return engine_options_of(self)

    def models(self) -> list[tuple[str, str]]:
        """``(label, model)`` for the base, then each tuned model."""
        return [("base", self.base), *(split_tuned(t) for t in self.tuned)]

    def budget(self, suite: str) -> int:
        """The answer budget of ``suite``: the configured one, else the suite's own default."""
        own = SUITE_CLASSES[suite].max_new_tokens
        if isinstance(self.max_new_tokens, dict):
            return int(self.max_new_tokens.get(suite, self.max_new_tokens.get("default", own)))
        return int(self.max_new_tokens) if self.max_new_tokens is not None else own

    def _suite_problems(self) -> list[str]:
        names = suite_names()
        problems = []
        unknown = [s for s in self.suites if s not in names]
        if unknown:
            problems.append(f"suites: unknown {', '.join(unknown)} (choose from {', '.join(names)})")
        if not self.suites:
            problems.append("suites: empty")
        if len(set(self.suites)) != len(self.suites):
            problems.append("suites: listed twice")
        for key, value in self.data.items():  # the files themselves are read (and checked) before any model loads
            if key not in names:
                problems.append(f"data.{key}: not a suite ({', '.join(names)})")
            if not isinstance(value, str) or not value.strip():
                problems.append(f"data.{key}: expected a path, got {value!r}")
        if "task" in self.suites and not self.data.get("task"):
            problems.append("suites: task needs its data: data.task=PATH (the held-out split of the task)")
        return problems

    def _budget_problems(self) -> list[str]:
        budgets = self.max_new_tokens
        if budgets is None:
            return []
        if not isinstance(budgets, dict):
            return _budget_problem("max_new_tokens", budgets)
        problems = []
        for key, value in budgets.items():
            if key != "default" and key not in suite_names():
                problems.append(f"max_new_tokens.{key}: not a suite (nor 'default')")
            problems += _budget_problem(f"max_new_tokens.{key}", value)
        return problems

    def _model_problems(self) -> list[str]:
        problems = [f"base: {p}" for p in [model_problem(self.base)] if p]
        labels = ["base"]
        for item in self.tuned:
            label, model = split_tuned(item)
            if not _LABEL_RE.match(label):
                problems.append(f"tuned: '{item}': the name '{label}' must be letters, digits, '.', '_', '+' "
                                "or '-' (give NAME=MODEL)")
            if label in labels:
                problems.append(f"tuned: the name '{label}' is used twice (give NAME=MODEL)")
            labels.append(label)
            problem = model_problem(model)
            if problem:
                problems.append(f"tuned: {problem}")
        return problems

    def _task_problems(self) -> list[str]:
        problems = []
        if self.task_verifier != "auto" or self.task_verifier_options:
            from sdft.verify import get_verifier

            try:  # builds the verifier: unknown names, unknown options and bad values all show here
                get_verifier("none" if self.task_verifier == "auto" else self.task_verifier,
                             **self.task_verifier_options)
            except ConfigError as e:
                problems += [f"task_verifier: {p}" for p in e.problems]
        return problems


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _budget_problem(where: str, value: Any) -> list[str]:
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_BUDGET:
        return []
    return [f"{where} must be a whole number of tokens from 1 to {MAX_BUDGET}, got {value!r}"]


def model_problem(model: str) -> str | None:
    """Why ``model`` cannot be a model argument (None when it can), without loading anything."""
    if model in ALIASES:
        return None
    p = Path(model).expanduser()
    if p.suffix.lower() == ".gguf":
        return None if p.is_file() else f"'{model}' not found (a .gguf file)"
    if p.exists():
        return None if is_local_model_dir(p) else f"'{model}' is not a model folder (no config.json or " \
                                                  "adapter_config.json)"
    if looks_like_hub_id(model):
        return None
    return (f"'{model}' not found: expected the alias {', '.join(ALIASES)}, a .gguf file, a model or LoRA "
            "adapter folder, or a Hub id ORG/NAME")


def looks_like_hub_id(s: str) -> bool:
    """``ORG/NAME`` that is not a local path."""
    return s.count("/") == 1 and not s.startswith((".", "/", "~")) and all(s.split("/")) and not os.path.exists(s)


def split_tuned(item: str) -> tuple[str, str]:
    """``NAME=MODEL`` -> (NAME, MODEL); a bare MODEL gets a name from itself.

    ``runs/x/merged`` -> x (also for ``final`` and ``model``), ``dir/m.gguf`` -> m, ``org/name``
    -> name, the alias -> the alias. Characters that cannot be part of a file name become ``-``.
    """
    if "=" in item and not os.path.exists(item):
        name, model = item.split("=", 1)
        return name.strip(), model.strip()
    p = Path(item.rstrip("/"))
    name = p.parent.name if p.name in ("merged", "final", "model") and p.parent.name else p.name
    if name.lower().endswith(".gguf"):
        name = name[:-5]
    name = re.sub(r"[^A-Za-z0-9._+-]", "-", name).strip(".-")
    return name or "tuned", item
