"""The task split: the rows every method trains on, and held-out rows that measure task gain.

Either ``compare.task_eval`` names the eval rows (a file or Hub id; the recipe's data is then
all training data) or ``compare.task_holdout`` holds out a share of the recipe's rows. Rows
are grouped by their normalised prompt (the last user turn, Unicode-NFKC, case-folded,
whitespace collapsed) and groups are ordered by a SHA-256 of that key, so the split is stable
(it depends on no seed and no row order) and two rows asking the same question always land on
the same side. Whatever the source, the two sides are checked for shared row ids and shared
normalised prompts; any overlap is an :class:`~sdft.errors.InputError` naming how many rows
and one example. Both sides are written in the chat ``messages`` format to
``OUT/data/task_train.jsonl`` and ``OUT/data/task_eval.jsonl`` (only when their content changed,
so a rerun keeps their modification times).
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdft.data import DataSpec, Example, iter_examples
from sdft.errors import InputError
from sdft.store import atomic_write_json, atomic_write_text

# columns the data loader would take for another format: left out of the written rows so the
# files always read back as the messages format
RESERVED = ("id", "messages", "instruction", "input", "output", "question", "answer", "prompt", "response",
            "completion")


@dataclass
class TaskSplit:
    """The written split."""

    train_file: Path
    eval_file: Path
    train_rows: int
    eval_rows: int
    verifier: str
    info: dict[str, Any]


def normalise_prompt(text: str) -> str:
    """The text two prompts are compared on: NFKC, case-folded, whitespace runs collapsed."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text).casefold()).strip()


def prompt_key(ex: Example) -> str:
    return normalise_prompt(ex.question)


def _order(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def split_holdout(examples: list[Example], share: float) -> tuple[list[Example], list[Example]]:
    """Hold out ``round(share * groups)`` prompt groups (at least one, never all), chosen by key hash.

    Returns:
        ``(train, eval)``, each in the source order.

    Raises:
        InputError: fewer than two distinct prompts.
    """
    keys = {prompt_key(ex) for ex in examples}
    if len(keys) < 2:
        raise InputError(f"task_holdout needs at least 2 distinct prompts in the data, found {len(keys)}")
    n_eval = min(max(1, round(share * len(keys))), len(keys) - 1)
    held = set(sorted(keys, key=_order)[:n_eval])
    return [ex for ex in examples if prompt_key(ex) not in held], [ex for ex in examples if prompt_key(ex) in held]


def check_disjoint(train: list[Example], held: list[Example], *, train_name: str, eval_name: str) -> None:
    """Raise when an eval row shares a row id or a normalised prompt with a training row.

    Raises:
        InputError: names how many eval rows overlap and the first one (both row numbers and the prompt).
    """
    ids = {ex.id: ex for ex in train}
    prompts: dict[str, Example] = {}
    for ex in train:
        prompts.setdefault(prompt_key(ex), ex)
    overlap = [(e, ids.get(e.id) or prompts.get(prompt_key(e))) for e in held
               if e.id in ids or prompt_key(e) in prompts]
    if overlap:
        e, t = overlap[0]
        assert t is not None
        q = " ".join(e.question.split())
        snippet = json.dumps(q[:80] + ("..." if len(q) > 80 else ""), ensure_ascii=False)
        raise InputError(
            f"task data overlap: {len(overlap)} of the {len(held)} task-eval rows share a row id or a prompt with "
            f"the training rows (e.g. {eval_name} row {e.index + 1} and {train_name} row {t.index + 1}: {snippet}); "
            f"task gain on seen prompts measures memory, not the task. Remove those rows from the eval set, or "
            f"use compare.task_holdout to split the data without overlap")


def to_row(ex: Example) -> dict[str, Any]:
    """A row in the messages format that reads back with the same prompt, answer and extra fields."""
    extra = {k: v for k, v in ex.extra.items() if k not in RESERVED}
    return {"id": ex.id, "messages": [*ex.messages, {"role": "assistant", "content": ex.answer}], **extra}


def _write(path: Path, examples: list[Example]) -> str:
    text = "".join(json.dumps(to_row(ex), ensure_ascii=False, default=str) + "\n" for ex in examples)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if not (path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == digest):
        atomic_write_text(path, text)
    return digest


def resolve_task_verifier(explicit: str | None, rewrite_verifier: str, first: Example) -> str:
    """The task suite's verifier: explicit, else the rewrite's, with ``auto`` resolved like the rewrite does."""
    name = explicit or rewrite_verifier or "auto"
    if name == "auto":
        return "math" if "####" in first.answer else "none"
    return name


def prepare_task_split(cfg: Any, notice: Callable[[str], None] | None = None) -> TaskSplit:
    """Load the recipe's data (and ``compare.task_eval``), split, check and write both sides.

    Args:
        cfg: the :class:`~sdft.compare.config.CompareConfig`.
        notice: one-line notices.
    """
    say = notice or (lambda _m: None)
    sec, data = cfg.section, cfg.pipeline.data
    examples = list(iter_examples(data.spec()))
    if sec.task_eval:
        train = examples
        held = list(iter_examples(DataSpec(path=sec.task_eval, split=sec.task_eval_split)))
        mode = "given"
    else:
        train, held = split_holdout(examples, sec.holdout)
        mode = "holdout"
    check_disjoint(train, held, train_name=data.path, eval_name=sec.task_eval or data.path)
    out = cfg.data_dir
    train_file, eval_file = out / "task_train.jsonl", out / "task_eval.jsonl"
    dropped = sorted({k for ex in [*train, *held] for k in ex.extra if k in RESERVED})
    verifier = resolve_task_verifier(sec.task_verifier, cfg.pipeline.rewrite.verifier, train[0])
    info = {"mode": mode, "holdout": sec.holdout, "data": data.path, "task_eval": sec.task_eval,
            "train_rows": len(train), "eval_rows": len(held), "verifier": verifier,
            "key": "normalised last user turn (NFKC, case-folded, whitespace collapsed)",
            "train_sha256": _write(train_file, train), "eval_sha256": _write(eval_file, held),
            "fields_not_copied": dropped}
    atomic_write_json(out / "split.json", info)
    say(f"task split ({mode}): {len(train)} training rows, {len(held)} held-out eval rows, no overlap")
    return TaskSplit(train_file, eval_file, len(train), len(held), verifier, info)
