"""Code generation: run the row's tests against the candidate's code in a separate process.

The candidate's code (the longest ```` ```python ```` block, else the whole text when it
parses as Python) is executed, then the row's test code (asserts; MBPP-style lists of
assert strings are joined), then, HumanEval style, ``check(<entry_point>)`` when the tests
define ``check`` and the row names an ``entry_point``. The candidate passes when all of
that finishes without an exception.

Isolation, and its limits (this is a best-effort sandbox for *accidents* of model-written
code, not a security boundary against hostile code):

* a fresh interpreter (``python -I``: no user site, no ``PYTHON*`` variables) in its own
  session, with a minimal environment and stdin closed; on timeout the whole process group
  is killed;
* resource limits set by the child itself before the candidate runs: address space
  (``RLIMIT_AS``, default 512 MB, so a 2 GB allocation raises MemoryError), file size
  (``RLIMIT_FSIZE``, also caps captured output), CPU time, no core dumps. They are set in
  the child rather than in ``preexec_fn`` because ``preexec_fn`` is unsafe when the calling
  program has threads (and sdft may verify from a thread pool). Where the OS refuses a limit
  (e.g. ``RLIMIT_AS`` on macOS) it is not enforced;
* a throw-away working directory inside a fresh temporary directory, deleted afterwards:
  relative writes, including ``../x``, land in it and disappear. Absolute paths elsewhere are
  writable with the user's permissions; preventing that needs OS sandboxing (containers,
  bubblewrap, seccomp), which is out of scope;
* no network and no child processes, through an audit hook (:pep:`578`) installed before the
  candidate runs: creating a socket, DNS look-ups, ``subprocess``/``os.system``/``os.exec*``/
  ``os.fork``/``os.posix_spawn`` and signalling other processes raise ``PermissionError``.
  Audit hooks cannot be removed from Python code, but native code (``ctypes``, C extensions)
  can bypass them. Network namespaces (``unshare -n``) would be stronger but need privileges
  on many systems, so they are not used;
* success is signalled by a per-run random token written after the tests, so code that calls
  ``sys.exit(0)`` or ``os._exit(0)`` early fails instead of passing;
* output is read back as bytes and decoded with ``errors="replace"``.
"""

from __future__ import annotations

import ast
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from typing import Any

from sdft.errors import ConfigError
from sdft.verify.base import PASS, Verdict

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MEMORY_MB = 512
DEFAULT_MAX_FILE_MB = 16
DEFAULT_TESTS_FIELD = "test"
DEFAULT_ENTRY_POINT_FIELD = "entry_point"

_FENCE_RE = re.compile(r"```[ \t]*([\w+.-]*)[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_TAGS = {"", "python", "python3", "py", "py3"}
_TAIL_BYTES = 64 * 1024
_DETAIL_CHARS = 300

# Runs in the child: read the job from stdin, lock the process down, run code and tests,
# then write the success token. Kept free of f-strings/format braces so it can stay a plain
# string constant.
_RUNNER = r"""
import json, os, sys, types

def _main():
    job = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    sys.stdin.close()
    sys.stdin = open(os.devnull)  # input() raises EOFError instead of hanging
    result_fd = os.dup(1)
    try:
        import resource
    except ImportError:
        resource = None
    if resource is not None:
        for name, value in job["limits"]:
            res = getattr(resource, name, None)
            if res is None:
                continue
            try:
                hard = resource.getrlimit(res)[1]
                if hard != resource.RLIM_INFINITY:
                    value = min(value, hard)
                resource.setrlimit(res, (value, value))
            except (ValueError, OSError):
                pass  # the OS refuses this limit (e.g. RLIMIT_AS on macOS)
    blocked = frozenset(job["blocked_events"])
    own_pid, own_pgid = os.getpid(), os.getpgid(0)

    def audit(event, args):
        if event in blocked:
            raise PermissionError(event + " is blocked in the sdft code sandbox")
        if event == "os.kill" and args[0] not in (0, own_pid):
            raise PermissionError("signalling other processes is blocked in the sdft code sandbox")
        if event == "os.killpg" and args[0] not in (0, own_pgid):
            raise PermissionError("signalling other processes is blocked in the sdft code sandbox")

    sys.addaudithook(audit)
    module = types.ModuleType("solution")
    module.__file__ = os.path.join(os.getcwd(), "solution.py")
    sys.modules["solution"] = module
    scope = module.__dict__
    exec(compile(job["code"], "<candidate>", "exec"), scope)
    exec(compile(job["tests"], "<tests>", "exec"), scope)
    entry_point = job["entry_point"]
    if entry_point:
        if entry_point not in scope:
            raise NameError("entry point " + repr(entry_point) + " is not defined by the candidate")
        scope["check"](scope[entry_point])
    try:
        sys.stdout.flush()
    except Exception:
        pass
    os.write(result_fd, ("\n" + job["token"] + "\n").encode("ascii"))

_main()
"""

# Audit events (PEP 578) the child refuses: network and process creation.
_BLOCKED_EVENTS = (
    "socket.__new__",
    "socket.connect",
    "socket.bind",
    "socket.getaddrinfo",
    "socket.gethostbyname",
    "socket.gethostbyaddr",
    "socket.getnameinfo",
    "socket.sethostname",
    "subprocess.Popen",
    "os.system",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "os.fork",
    "os.forkpty",
)


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


def _tail(path: str) -> str:
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - _TAIL_BYTES))
        return fh.read().decode("utf-8", errors="replace")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:_DETAIL_CHARS] if lines else ""


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    # The child leads its own session, so its pid is the group id; it has not been reaped
    # yet when this is called, so the id cannot have been reused by another group.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_tests(
    code: str,
    tests: str,
    entry_point: str | None = None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_mb: int = DEFAULT_MEMORY_MB,
    max_file_mb: int = DEFAULT_MAX_FILE_MB,
) -> Verdict:
    """Run ``code`` then ``tests`` (then ``check(entry_point)``) in a sandboxed child process.

    Args:
        code: the candidate's Python code.
        tests: Python test code (asserts, or a HumanEval ``check`` function).
        entry_point: when given, ``check(<entry_point>)`` is called after the tests.
        timeout_s: wall-clock limit for the child.
        memory_mb: address-space limit for the child.
        max_file_mb: the largest file (including captured output) the child may write.

    Returns:
        PASS, or a verdict with reason "tests-failed" (detail: last line of stderr) or
        "timeout".
    """
    token = secrets.token_hex(16)
    limits = [
        ("RLIMIT_AS", int(memory_mb) * 1024 * 1024),
        ("RLIMIT_FSIZE", int(max_file_mb) * 1024 * 1024),
        ("RLIMIT_CPU", int(timeout_s) + 2),  # backstop only; the wall-clock limit fires first
        ("RLIMIT_CORE", 0),
    ]
    job = {
        "code": code,
        "tests": tests,
        "entry_point": entry_point or "",
        "token": token,
        "limits": limits,
        "blocked_events": list(_BLOCKED_EVENTS),
    }
    root = tempfile.mkdtemp(prefix="sdft-code-")
    try:
        work = os.path.join(root, "work")
        os.mkdir(work)
        out_path, err_path = os.path.join(root, "stdout"), os.path.join(root, "stderr")
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": work, "TMPDIR": work}
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-c", _RUNNER],
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                cwd=work,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
            try:
                proc.communicate(json.dumps(job).encode("utf-8"), timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                proc.communicate()
                return Verdict(False, "timeout", f"no result after {timeout_s:g} s")
            except BaseException:
                _kill_group(proc)  # e.g. KeyboardInterrupt: do not leave the child running
                proc.communicate()
                raise
        if proc.returncode == 0 and token in _tail(out_path):
            return PASS
        detail = _last_line(_tail(err_path))
        if not detail:
            if proc.returncode < 0:
                detail = f"killed by signal {signal.Signals(-proc.returncode).name}"
            else:
                detail = f"exited with code {proc.returncode} before the tests finished"
        return Verdict(False, "tests-failed", detail)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _tests_from_row(row: dict[str, Any], field: str) -> str | None:
    tests = row.get(field)
    if isinstance(tests, (list, tuple)):  # MBPP "test_list": a list of assert strings
        tests = "\n".join(str(t) for t in tests)
    if not isinstance(tests, str) or not tests.strip():
        return None
    return tests


def is_correct(
    candidate: str,
    row: dict[str, Any],
    *,
    tests_field: str = DEFAULT_TESTS_FIELD,
    entry_point_field: str = DEFAULT_ENTRY_POINT_FIELD,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_mb: int = DEFAULT_MEMORY_MB,
    max_file_mb: int = DEFAULT_MAX_FILE_MB,
) -> Verdict:
    """Check the candidate's code against the row's tests.

    Args:
        candidate: the rewritten answer containing code.
        row: the dataset row; ``row[tests_field]`` holds the tests (a string, or a list of
            assert strings) and ``row[entry_point_field]`` optionally the function to pass to
            a HumanEval-style ``check``.
        tests_field: the row field with the tests.
        entry_point_field: the row field with the entry point.
        timeout_s: wall-clock limit for the run.
        memory_mb: address-space limit for the run.
        max_file_mb: file-size limit for the run.

    Returns:
        A verdict with reason "ok", "no-tests" (the row has no tests: a configuration
        problem, never a pass), "no-code", "tests-failed" or "timeout".
    """
    tests = _tests_from_row(row, tests_field)
    if tests is None:
        return Verdict(False, "no-tests", f"the row has no tests in field '{tests_field}'")
    code = extract_code(candidate)
    if code is None:
        return Verdict(False, "no-code", "no Python code found in the candidate")
    entry_point = row.get(entry_point_field)
    if not (isinstance(entry_point, str) and entry_point.strip() and _defines_check(tests)):
        entry_point = None
    return run_tests(
        code, tests, entry_point, timeout_s=timeout_s, memory_mb=memory_mb, max_file_mb=max_file_mb
    )


class CodeVerifier:
    """Verifier for code data: runs the row's unit tests in a sandboxed subprocess."""

    name = "code"

    def __init__(
        self,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        memory_mb: int = DEFAULT_MEMORY_MB,
        tests_field: str = DEFAULT_TESTS_FIELD,
        entry_point_field: str = DEFAULT_ENTRY_POINT_FIELD,
        max_file_mb: int = DEFAULT_MAX_FILE_MB,
    ):
        """Create the verifier.

        Args:
            timeout_s: wall-clock limit per candidate, in seconds.
            memory_mb: address-space limit per candidate, in MiB.
            tests_field: the row field holding the tests.
            entry_point_field: the row field naming the function passed to ``check``.
            max_file_mb: the largest file a candidate may write, in MiB.

        Raises:
            ConfigError: an option is out of range, or the platform is not POSIX.
        """
        if os.name != "posix":
            raise ConfigError("the 'code' verifier needs a POSIX system (Linux or macOS)")
        self.timeout_s = float(timeout_s)
        self.memory_mb = int(memory_mb)
        self.max_file_mb = int(max_file_mb)
        self.tests_field = str(tests_field)
        self.entry_point_field = str(entry_point_field)
        problems = []
        if not self.timeout_s > 0:
            problems.append(f"code verifier: timeout_s must be > 0, got {timeout_s!r}")
        if self.memory_mb < 64:
            problems.append(f"code verifier: memory_mb must be >= 64, got {memory_mb!r}")
        if self.max_file_mb < 1:
            problems.append(f"code verifier: max_file_mb must be >= 1, got {max_file_mb!r}")
        if not self.tests_field:
            problems.append("code verifier: tests_field must not be empty")
        if problems:
            raise ConfigError(problems)

    def extract_answer(self, text: str) -> str | None:
        """Return the code in ``text`` (see :func:`extract_code`)."""
        return extract_code(text)

    def check(self, candidate: str, reference: str, row: dict[str, Any]) -> Verdict:
        """Run ``row``'s tests against the candidate's code; ``reference`` is not used."""
        return is_correct(
            candidate,
            row,
            tests_field=self.tests_field,
            entry_point_field=self.entry_point_field,
            timeout_s=self.timeout_s,
            memory_mb=self.memory_mb,
            max_file_mb=self.max_file_mb,
        )
