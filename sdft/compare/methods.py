"""Named fine-tuning methods that ``sdft compare`` trains side by side.

A method says where the training answers come from (the original references, or a rewrite by
the seed model with some rewrite settings), whether self-generated replay rows are mixed in,
and any training settings of its own. Everything else (data, model, budget) is the recipe's
and the same for every method. A recipe's ``methods:`` mapping overrides a preset field by
field, or adds a method built on one (``base: sdft``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from sdft.config import deep_merge
from sdft.errors import ConfigError

ANSWERS = ("original", "rewrite")
RUNNERS = ("sdft", "trl-sdft")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9+._-]{0,63}$")


@dataclass(frozen=True)
class Method:
    """One method of a comparison.

    Attributes:
        name: the method's name (a folder name under ``OUT/units`` and a report column).
        doc: one line saying what it is.
        answers: ``original`` (the dataset's answers) or ``rewrite`` (the seed model's rewrites).
        rewrite: RewriteConfig fields layered over the recipe's ``rewrite`` section.
        train: TrainConfig fields layered over the recipe's ``train`` section.
        replay: mix self-generated replay rows into the training rows.
        replay_ratio: share of replay rows in the mix (None: ``compare.replay_ratio``).
        requires: the sdft feature this preset needs, named when its settings are rejected.
        runner: ``sdft`` (rewrite/replay -> train) or ``trl-sdft`` (not wired yet: refuses).
    """

    name: str
    doc: str = ""
    answers: str = "rewrite"
    rewrite: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    replay: bool = False
    replay_ratio: float | None = None
    requires: str | None = None
    runner: str = "sdft"

    def describe(self) -> dict[str, Any]:
        """JSON-able description (what compare.json and report.json record)."""
        return {"name": self.name, "doc": self.doc, "answers": self.answers, "rewrite": dict(self.rewrite),
                "train": dict(self.train), "replay": self.replay, "replay_ratio": self.replay_ratio,
                "runner": self.runner}


# Plain SDFT is the paper's: the seed rewrites the reference, else the reference itself. The rewrite defaults
# are the ladder's, so the preset turns off what the ladder adds to a reference rewrite as well (continuing the
# seed's own answer, calculator decoding, the length bound against the seed's own answer, which would generate
# an own answer per row). Sampling (samples, temperature, select) stays the recipe's.
_SDFT = {"sources": ["reference", "original"], "own_prefix": False, "calculator": False, "max_length_ratio": 0}
# The ladder: RewriteConfig's defaults (every source; the rest of the recipe's rewrite section applies).
_LADDER = {"sources": ["own", "hint", "reference", "original"]}

#: The bundled presets, in the order ``--help`` lists them.
PRESETS: dict[str, Method] = {m.name: m for m in (
    Method("sft", "plain SFT on the dataset's original answers (the baseline)", answers="original"),
    Method("sft+replay", "plain SFT with self-generated replay rows mixed in (no rewriting)", answers="original",
           replay=True),
    Method("sdft", "SDFT: the seed model rewrites each reference answer; a rewrite is kept when still correct",
           rewrite=_SDFT),
    Method("sdft+replay", "SDFT plus self-generated replay rows", rewrite=_SDFT, replay=True),
    Method("ladder", "answer-source ladder: own answer, else with a hint, else rewritten reference, else original",
           rewrite=_LADDER,
           requires="RewriteConfig.sources (the answer-source ladder)"),
    Method("ladder+replay", "the answer-source ladder plus self-generated replay rows", rewrite=_LADDER, replay=True,
           requires="RewriteConfig.sources (the answer-source ladder)"),
    Method("dft", "plain SFT with the DFT loss (token losses weighted by the model's own probability)",
           answers="original", train={"loss_type": "dft"}, requires="TrainConfig.loss_type (the DFT loss)"),
    Method("trl-sdft", "TRL's on-policy self-distillation (needs a GPU; not wired into sdft compare yet)",
           runner="trl-sdft"),
)}

_OVERRIDE_KEYS = ("base", "doc", "answers", "rewrite", "train", "replay", "replay_ratio")


def _apply(m: Method, spec: dict[str, Any], where: str, problems: list[str]) -> Method:
    changes: dict[str, Any] = {}
    for key, value in spec.items():
        if key == "base":
            continue
        if key not in _OVERRIDE_KEYS:
            problems.append(f"{where}.{key}: unknown key (one of {', '.join(_OVERRIDE_KEYS)})")
        elif key in ("rewrite", "train"):
            if not isinstance(value, dict):
                problems.append(f"{where}.{key}: expected a mapping of {key} settings, got {value!r}")
            else:
                changes[key] = deep_merge(getattr(m, key), value)
        elif key == "answers" and value not in ANSWERS:
            problems.append(f"{where}.answers: must be one of {', '.join(ANSWERS)}, got {value!r}")
        elif key == "replay" and not isinstance(value, bool):
            problems.append(f"{where}.replay: expected true/false, got {value!r}")
        elif key == "replay_ratio" and value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1):
            problems.append(f"{where}.replay_ratio: must be a number in (0, 1), got {value!r}")
        elif key == "doc" and not isinstance(value, str):
            problems.append(f"{where}.doc: expected a string, got {value!r}")
        else:
            changes[key] = float(value) if key == "replay_ratio" and value is not None else value
    return replace(m, **changes)


def resolve_methods(names: list[str], overrides: dict[str, Any] | None = None) -> list[Method]:
    """The methods to run, presets with the recipe's ``methods:`` overrides applied.

    Args:
        names: method names, in report order (presets or names defined in ``overrides``).
        overrides: the recipe's ``methods:`` mapping, name -> fields; a name that is not a preset
            needs ``base: PRESET``.

    Raises:
        ConfigError: every problem at once (unknown names, bad fields, duplicates).
    """
    overrides = overrides or {}
    problems: list[str] = []
    if not isinstance(overrides, dict):
        raise ConfigError(f"methods: expected a mapping of method name -> settings, got {overrides!r}")
    if not names:
        problems.append("compare.methods: empty (e.g. sft,sdft)")
    if len(set(names)) != len(names):
        problems.append(f"compare.methods: a method is listed twice ({', '.join(names)})")
    out: list[Method] = []
    for name in names:
        if not NAME_RE.match(name):
            problems.append(f"compare.methods: '{name}' is not a valid method name (letters, digits, + . _ -)")
            continue
        spec = overrides.get(name)
        if spec is not None and not isinstance(spec, dict):
            problems.append(f"methods.{name}: expected a mapping, got {spec!r}")
            continue
        spec = spec or {}
        base_name = spec.get("base", name if name in PRESETS else None)
        if base_name is None:
            problems.append(f"compare.methods: unknown method '{name}' (presets: {', '.join(PRESETS)}; "
                            f"or define it under methods: with base: PRESET)")
            continue
        if base_name not in PRESETS:
            problems.append(f"methods.{name}.base: unknown preset '{base_name}' ({', '.join(PRESETS)})")
            continue
        m = replace(PRESETS[base_name], name=name)
        out.append(_apply(m, spec, f"methods.{name}", problems))
    for name, spec in overrides.items():  # methods a recipe defines but this run does not select are fine,
        if name not in names and name not in PRESETS and not (isinstance(spec, dict) and "base" in spec):
            problems.append(f"methods.{name}: not a preset and no base: PRESET (a typo? presets: "
                            f"{', '.join(PRESETS)})")  # ... a name that can never run is a typo
    if problems:
        raise ConfigError(problems)
    return out


def unavailable_reason(m: Method) -> str | None:
    """Why ``m`` cannot run in this installation (None when it can)."""
    if m.runner != "trl-sdft":
        return None
    try:
        import torch

        gpu = torch.cuda.is_available()
    except ImportError:
        gpu = False
    if not gpu:
        return (f"method '{m.name}' (TRL's on-policy self-distillation) needs a GPU: the student generates at "
                f"every step, which is impractical on a CPU. Drop it from --methods here "
                f"(see recipes/compare/README.md)")
    return (f"method '{m.name}' (TRL's on-policy self-distillation) is registered but not wired into sdft compare "
            f"yet; run it with TRL directly and compare with `sdft eval`, or drop it from --methods")


def presets_help() -> str:
    """One line per preset, for ``sdft compare --help``."""
    width = max(len(n) for n in PRESETS)
    return "\n".join(f"  {m.name:<{width}}  {m.doc}" for m in PRESETS.values())
