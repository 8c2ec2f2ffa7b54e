"""``tool-use``: BFCL-style function calling -> call accuracy (higher is better).

Each probe gives the model one or more function schemas (in the system turn, as JSON) and a
user request; the answer must be exactly the right call(s): parsed structurally (Python call
syntax or JSON), same function names, no extra or missing calls, every required argument
present and every argument among the allowed values (:func:`sdft.verify.toolcall.matches_allowed`,
BFCL's "possible answers" rule: strings compare ignoring case, spaces and punctuation).

Default probes: 20 requests written by the sdft project (``sdft/assets/tool_probes.jsonl``).
BFCL's ``simple_python.jsonl`` works as is; its answers are read from ``ground_truth`` in the
row or from the sibling file ``<name>_answers.jsonl`` (joined on ``id``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sdft.errors import InputError
from sdft.eval.base import Probe, Suite
from sdft.eval.probes import iter_rows, row_id
from sdft.verify.base import Verdict
from sdft.verify.toolcall import matches_allowed, parse_calls

SYSTEM = ("You can call the functions described below (JSON schemas). Answer the user's request with the "
          "function call only, in Python syntax, for example: get_time(city=\"Oslo\"). Do not explain.\n\n"
          "Functions:\n{functions}")


def answers_beside(path: str) -> dict[str, Any]:
    """BFCL's answers file next to the questions (``<stem>_answers<suffix>``), by id; {} when absent."""
    p = Path(path)
    side = p.with_name(f"{p.stem}_answers{p.suffix}")
    if not side.is_file():
        return {}
    return {str(row["id"]): row.get("ground_truth") for _, row in iter_rows(str(side)) if "id" in row}


def _user_turns(question: Any, where: str) -> list[dict[str, str]]:
    # BFCL nests turns: [[{role, content}, ...]] (one list per conversation turn); we take the first turn.
    if isinstance(question, str) and question.strip():
        return [{"role": "user", "content": question}]
    if isinstance(question, list) and question and isinstance(question[0], list):
        question = question[0]
    if isinstance(question, list) and question and all(
            isinstance(m, dict) and isinstance(m.get("content"), str) for m in question):
        return [{"role": str(m.get("role", "user")), "content": m["content"]} for m in question]
    raise InputError(f"{where}: field 'question' must be text or a list of chat messages")


def _param_order(functions: list[Any], where: str) -> dict[str, list[str]]:
    order = {}
    for f in functions:
        if not isinstance(f, dict) or not isinstance(f.get("name"), str):
            raise InputError(f"{where}: field 'function' must hold JSON schemas with a 'name'")
        params = f.get("parameters")
        props = params.get("properties") if isinstance(params, dict) else None
        order[f["name"]] = list(props) if isinstance(props, dict) else []
    return order


class ToolUseSuite(Suite):
    """Structural function-call accuracy."""

    name = "tool-use"
    metric = "call accuracy"
    default_data = "tool_probes.jsonl"
    max_new_tokens = 128

    def __init__(self) -> None:
        self._side: dict[str, Any] = {}
        self._side_name = ""

    def probes(self, path: str | None = None, limit: int | None = None) -> list[Probe]:
        path = path or self.default_path()
        self._side, self._side_name = answers_beside(path), f"{Path(path).stem}_answers{Path(path).suffix}"
        return super().probes(path, limit)

    def probe(self, row: dict[str, Any], index: int, where: str) -> Probe:
        pid = row_id(row, index)
        functions = row.get("function") or row.get("functions")
        truth = row.get("ground_truth", self._side.get(pid))
        if not functions or truth is None:
            raise InputError(f"{where}: a tool-use probe needs 'function' (schemas) and 'ground_truth' "
                             f"(in the row, or in {self._side_name or 'NAME_answers.jsonl'} joined on id)")
        functions = functions if isinstance(functions, list) else [functions]
        order = _param_order(functions, where)
        system = SYSTEM.format(functions=json.dumps(functions, ensure_ascii=False))
        messages = [{"role": "system", "content": system}, *_user_turns(row.get("question"), where)]
        return Probe(pid, messages, self.max_new_tokens, {"ground_truth": truth, "param_order": order})

    def judge(self, probe: Probe, text: str, finish_reason: str) -> Verdict:
        calls = parse_calls(text)
        if not calls:
            return Verdict(False, "no-call", "no function call found in the answer")
        return matches_allowed(calls, probe.meta["ground_truth"], probe.meta["param_order"])
