"""The suite registry: every suite by name, the default list, and construction from a config.

Suites are looked up here and nowhere else: the runner, the config checks, the CLI and the
reports only ever see the :class:`~sdft.eval.base.Suite` interface. To add a suite, append its
class to :data:`SUITE_CLASSES` (built-in) or call :func:`register` (a plugin) before the
config is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sdft.eval.base import Suite
from sdft.eval.code import CodeSuite
from sdft.eval.drift import DriftSuite
from sdft.eval.math import MathSuite
from sdft.eval.over_refusal import OverRefusalSuite
from sdft.eval.safety import JailbreakSuite, SafetySuite
from sdft.eval.task import TaskSuite
from sdft.eval.tool_use import ToolUseSuite

if TYPE_CHECKING:
    from sdft.eval.config import EvalConfig

#: name -> suite class, in report order.
SUITE_CLASSES: dict[str, type[Suite]] = {
    cls.name: cls
    for cls in (TaskSuite, SafetySuite, JailbreakSuite, OverRefusalSuite, MathSuite, CodeSuite, ToolUseSuite,
                DriftSuite)
}


def register(cls: type[Suite]) -> type[Suite]:
    """Add a suite class (usable as a decorator); its ``name`` must be new."""
    if not cls.name or cls.name in SUITE_CLASSES:
        raise ValueError(f"suite name {cls.name!r} is empty or taken")
    SUITE_CLASSES[cls.name] = cls
    return cls


def suite_names() -> tuple[str, ...]:
    """Every registered suite name."""
    return tuple(SUITE_CLASSES)


def default_suites() -> list[str]:
    """The suites run when none are named: each with ``in_defaults`` that can run here."""
    return [name for name, cls in SUITE_CLASSES.items() if cls.in_defaults and cls.available()]


def get_suite(name: str, cfg: EvalConfig | None = None) -> Suite:
    """The suite called ``name``, configured from ``cfg`` (defaults when None).

    Raises:
        KeyError: no such suite.
    """
    return SUITE_CLASSES[name].from_config(cfg)
