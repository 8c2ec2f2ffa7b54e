"""Training-ready output formats: what ``--format`` writes for each kept row.

A kept row's sdft record (docs/FORMATS.md) has the training prompt ``messages`` (ending with
a user turn) and the kept answer ``response``. Each format turns that into the row shape a
trainer reads without any mapping:

* ``messages`` (default): ``{"messages": [...prompt, {"role": "assistant", "content": answer}]}``,
  the chat format of TRL, axolotl (``chat_template``) and LLaMA-Factory (sharegpt/openai style).
* ``alpaca``: ``{"instruction", "input": "", "output"}`` plus ``system`` and ``history``
  (``[[user, assistant], ...]``, LLaMA-Factory's alpaca columns) when the prompt has them.
* ``sharegpt``: ``{"conversations": [{"from": "system"|"human"|"gpt"|"observation", "value"}]}``.
* ``prompt-completion``: TRL's conversational prompt-completion, ``{"prompt": [...messages],
  "completion": [{"role": "assistant", "content": answer}]}`` (loss on the completion only).
* ``hf``: the ``messages`` rows as a ``datasets.save_to_disk`` folder at the output path.

Bookkeeping (ids, statuses, candidates) stays in the sdft records beside the output, so
trainers see no extra columns.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from sdft.errors import InputError

FORMATS = ("messages", "alpaca", "sharegpt", "prompt-completion", "hf")
DEFAULT_FORMAT = "messages"
_SHAREGPT_ROLES = {"system": "system", "user": "human", "assistant": "gpt", "tool": "observation"}


def is_folder_format(fmt: str) -> bool:
    """Whether the format writes a folder (``hf``) rather than a JSONL file."""
    return fmt == "hf"


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise InputError(f"unknown output format '{fmt}': choose one of {', '.join(FORMATS)}")


def conversation(record: dict[str, Any]) -> list[dict[str, str]]:
    """The full training conversation of a kept record: its prompt and the kept answer."""
    return [*record["messages"], {"role": "assistant", "content": record["response"]}]


def _alpaca(record: dict[str, Any]) -> dict[str, Any]:
    msgs = list(record["messages"])
    row: dict[str, Any] = {}
    if msgs and msgs[0]["role"] == "system":
        row["system"] = msgs.pop(0)["content"]
    *context, last = msgs
    if len(context) % 2 or any(m["role"] != r for m, r in zip(context, ["user", "assistant"] * len(context))):
        raise InputError(f"row {record.get('id')}: --format alpaca holds user/assistant pairs only, but this prompt "
                         f"has the turns {[m['role'] for m in msgs]}: use --format messages or sharegpt")
    out: dict[str, Any] = {"instruction": last["content"], "input": "", "output": record["response"]}
    if context:
        out["history"] = [[context[i]["content"], context[i + 1]["content"]] for i in range(0, len(context), 2)]
    return {**out, **row}


def to_training_row(record: dict[str, Any], fmt: str) -> dict[str, Any]:
    """The training row of one kept record in format ``fmt``."""
    if fmt in ("messages", "hf"):
        return {"messages": conversation(record)}
    if fmt == "alpaca":
        return _alpaca(record)
    if fmt == "sharegpt":
        return {"conversations": [{"from": _SHAREGPT_ROLES.get(m["role"], m["role"]), "value": m["content"]}
                                  for m in conversation(record)]}
    if fmt == "prompt-completion":
        return {"prompt": list(record["messages"]),
                "completion": [{"role": "assistant", "content": record["response"]}]}
    raise InputError(f"unknown output format '{fmt}': choose one of {', '.join(FORMATS)}")


def write_hf_folder(rows: list[dict[str, Any]], target: Path) -> str:
    """Save ``rows`` with ``datasets.save_to_disk`` into a new temp folder beside ``target``.

    Returns:
        The temp folder (the caller renames it to ``target``); nothing else is touched.
    """
    import datasets

    from sdft.store import current_umask

    tmp = tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.chmod(tmp, 0o777 & ~current_umask())
    try:
        ds = datasets.Dataset.from_list(rows) if rows else datasets.Dataset.from_dict({"messages": []})
        ds.save_to_disk(tmp)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)  # our own fresh temp folder
        raise
    return tmp
