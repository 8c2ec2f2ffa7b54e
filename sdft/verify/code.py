"""Code generation: judge the candidate's code by the row's tests, in a sandbox it cannot fool.

The candidate's code (the longest ```` ```python ```` block, else the whole text when it
parses as Python) is loaded in an isolated, resource-limited child process; the row's tests
(asserts; MBPP-style lists of assert strings are joined; then, HumanEval style,
``check(<entry_point>)`` when the tests define ``check`` and the row names an ``entry_point``)
run in a separate trusted judge process. Every call from the tests into the candidate's
functions crosses a pipe, and only plain data (numbers, strings, lists, tuples, dicts, sets,
bytes) comes back, so nothing the candidate does (``sys.exit``, patched builtins, frame
inspection, an ``__eq__`` that is always true, printed tokens, killing its parent) can turn
a failed test into a pass. A dead, hung or misbehaving candidate fails.

The isolation of the child (bubblewrap, unshare or resource limits only; see
:mod:`sdft.sandbox` and docs/SANDBOX.md) is probed at run time; ``sandbox="strict"`` refuses to
run without namespace isolation. Limits: no third-party packages in the candidate (stdlib only),
and tests can only exchange plain data with it (a test that passes a lambda, or uses an object
of a class the candidate defines, ends in "sandbox-error", never in a pass).
"""

from __future__ import annotations

import ast
import os
import re
from typing import Any

from sdft import sandbox as sandbox_mod
from sdft.errors import ConfigError
from sdft.verify.base import PASS, Verdict

DEFAULT_TIMEOUT_S = sandbox_mod.DEFAULT_TIMEOUT_S
DEFAULT_MEMORY_MB = sandbox_mod.DEFAULT_MEMORY_MB
DEFAULT_MAX_FILE_MB = sandbox_mod.DEFAULT_MAX_FILE_MB
DEFAULT_TESTS_FIELD = "test"
DEFAULT_ENTRY_POINT_FIELD = "entry_point"
DEFAULT_SETUP_FIELD = "test_setup_code"
DEFAULT_SANDBOX = "auto"

_FENCE_RE = re.compile(r"```[ \t]*([\w+.-]*)[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_TAGS = {"", "python", "python3", "py", "py3"}


def extract_code(text: str) -> str | None:
    """Return the candidate's code.

    Args:
        text: a model answer.

    Returns:
        The longest Python (or untagged) fenced block, the later one on ties; else the whole
        text when it parses as Python; else None. An unterminated fence (truncated output)
        counts as a block.
    """
    if not text or not text.strip():
        return None
    blocks = [body for tag, body in _FENCE_RE.findall(text) if tag.lower() in _PYTHON_TAGS and body.strip()]
    if blocks:
        longest = max(len(b.strip()) for b in blocks)
        return [b for b in blocks if len(b.strip()) == longest][-1]
    if "```" in text:
        return None
    try:
        ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    return text


def extract_answer(text: str) -> str | None:
    """Alias of :func:`extract_code`, for symmetry with the other verifiers."""
    return extract_code(text)


def _defines_check(tests: str) -> bool:
    try:
        tree = ast.parse(tests)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False  # it will fail loudly when run
    return any(isinstance(n, ast.FunctionDef) and n.name == "check" for n in tree.body)


def run_tests(
    code: str,
    tests: str,
    entry_point: str | None = None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_mb: int = DEFAULT_MEMORY_MB,
    max_file_mb: int = DEFAULT_MAX_FILE_MB,
    sandbox: str = DEFAULT_SANDBOX,
    setup: str | None = None,
) -> Verdict:
    """Judge ``code`` by ``tests`` (then ``check(entry_point)``) with the code in the sandbox.

    Args:
        code: the candidate's Python code.
        tests: Python test code (asserts, or a HumanEval ``check`` function); the names it uses
            without defining them (other than builtins) are the candidate's.
        entry_point: when given, ``check(<entry_point>)`` is called after the tests.
        timeout_s: wall-clock limit for the candidate.
        memory_mb: address-space limit for the candidate.
        max_file_mb: the largest file the candidate may write.
        sandbox: "auto" or "strict" (refuse to run without namespace isolation).
        setup: trusted code the judge runs before the tests, e.g. HumanEval's prompt, so that
            helpers the tests call (``poly``, ``encode_cyclic``) are the dataset's own.

    Returns:
        PASS, or a verdict with reason "tests-failed" (detail: the failed assert or the error),
        "timeout" or "sandbox-error" (the sandbox could not judge; never a pass).

    Raises:
        ConfigError: ``sandbox`` is invalid, or "strict" cannot be honoured on this machine.
    """
    ok, reason, detail = sandbox_mod.run_judged(
        code, tests, entry_point, setup=setup, timeout_s=timeout_s, memory_mb=memory_mb,
        max_file_mb=max_file_mb, sandbox=sandbox,
    )
    return PASS if ok else Verdict(False, reason, detail)


def _tests_from_row(row: dict[str, Any], field: str) -> str | None:
    tests = row.get(field)
    if isinstance(tests, (list, tuple)):  # MBPP "test_list": a list of assert strings
        tests = "\n".join(str(t) for t in tests)
    if not isinstance(tests, str) or not tests.strip():
        return None
    return tests


def is_correct(candidate: str, row: dict[str, Any], **options: Any) -> Verdict:
    """Check the candidate's code against the row's tests: ``CodeVerifier(**options).check``.

    Args:
        candidate: the rewritten answer containing code.
        row: the dataset row with the tests (see :meth:`CodeVerifier.check`).
        **options: :class:`CodeVerifier`'s (``tests_field``, ``timeout_s``, ``sandbox``, ...).

    Raises:
        ConfigError: a bad option (see :class:`CodeVerifier`).
    """
    return CodeVerifier(**options).check(candidate, "", row)


class CodeVerifier:
    """Verifier for code data: judges the candidate by the row's unit tests, the code sandboxed."""

    name = "code"

    def __init__(
        self,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        memory_mb: int = DEFAULT_MEMORY_MB,
        tests_field: str = DEFAULT_TESTS_FIELD,
        entry_point_field: str = DEFAULT_ENTRY_POINT_FIELD,
        max_file_mb: int = DEFAULT_MAX_FILE_MB,
        setup_field: str = DEFAULT_SETUP_FIELD,
        sandbox: str = DEFAULT_SANDBOX,
    ):
        """Create the verifier.

        Args:
            timeout_s: wall-clock limit per candidate, in seconds.
            memory_mb: address-space limit per candidate, in MiB.
            tests_field: the row field holding the tests.
            entry_point_field: the row field naming the function passed to ``check``.
            max_file_mb: the largest file a candidate may write, in MiB.
            setup_field: the row field with trusted setup code (MBPP's ``test_setup_code``).
            sandbox: "auto" (the strongest isolation this machine offers, see
                :func:`sdft.sandbox.active_isolation`) or "strict" (refuse to run without
                namespace isolation: bwrap or unshare).

        Raises:
            ConfigError: an option is out of range, the platform is not POSIX, or
                ``sandbox="strict"`` and no namespace isolation works here.
        """
        if os.name != "posix":
            raise ConfigError("the 'code' verifier needs a POSIX system (Linux or macOS)")
        self.timeout_s = float(timeout_s)
        self.memory_mb = int(memory_mb)
        self.max_file_mb = int(max_file_mb)
        self.tests_field = str(tests_field)
        self.entry_point_field = str(entry_point_field)
        self.setup_field = str(setup_field)
        self.sandbox = str(sandbox)
        problems = []
        if not self.timeout_s > 0:
            problems.append(f"code verifier: timeout_s must be > 0, got {timeout_s!r}")
        if self.memory_mb < 64:
            problems.append(f"code verifier: memory_mb must be >= 64, got {memory_mb!r}")
        if self.max_file_mb < 1:
            problems.append(f"code verifier: max_file_mb must be >= 1, got {max_file_mb!r}")
        if not self.tests_field:
            problems.append("code verifier: tests_field must not be empty")
        if self.sandbox not in sandbox_mod.SANDBOX_MODES:
            problems.append(f"code verifier: sandbox must be one of {', '.join(sandbox_mod.SANDBOX_MODES)}, "
                            f"got {sandbox!r}")
        if problems:
            raise ConfigError(problems)
        sandbox_mod.check_sandbox_option(self.sandbox)  # "strict": fail now, before any model loads

    def extract_answer(self, text: str) -> str | None:
        """Return the code in ``text`` (see :func:`extract_code`)."""
        return extract_code(text)

    def check(self, candidate: str, reference: str, row: dict[str, Any]) -> Verdict:
        """Run ``row``'s tests against the candidate's code; ``reference`` is not used.

        ``row[tests_field]`` holds the tests (a string, or a list of assert strings),
        ``row[entry_point_field]`` optionally the function passed to a HumanEval-style ``check``
        and ``row[setup_field]`` optionally trusted setup code run before the tests.

        Returns:
            A verdict with reason "ok", "no-tests" (the row has no tests: a configuration
            problem, never a pass), "no-code", "tests-failed", "timeout" or "sandbox-error".
        """
        tests = _tests_from_row(row, self.tests_field)
        if tests is None:
            return Verdict(False, "no-tests", f"the row has no tests in field '{self.tests_field}'")
        code = extract_code(candidate)
        if code is None:
            return Verdict(False, "no-code", "no Python code found in the candidate")
        entry_point = row.get(self.entry_point_field)
        if not (isinstance(entry_point, str) and entry_point.strip() and _defines_check(tests)):
            entry_point = None
        setup = row.get(self.setup_field)
        return run_tests(
            code, tests, entry_point, timeout_s=self.timeout_s, memory_mb=self.memory_mb,
            max_file_mb=self.max_file_mb, sandbox=self.sandbox,
            setup=setup if isinstance(setup, str) and setup.strip() else None,
        )
