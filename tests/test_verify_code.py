"""Code verifier: extraction, test running, limits and options.

Each run starts a judge and a sandboxed child (~80 ms of CPU); only the infinite loops wait for
their limit. The forgery attempts (a candidate trying to pass tests it fails) are in
tests/adversarial/test_sandbox.py.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from sdft import sandbox
from sdft.errors import ConfigError
from sdft.verify.code import CodeVerifier, extract_code, is_correct, run_tests

ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = "assert add(1, 2) == 3\nassert add(-1, 1) == 0\n"
HUMANEVAL_TESTS = "METADATA = {}\n\ndef check(candidate):\n    assert candidate(2, 3) == 5\n"


def fenced(code: str, tag: str = "python") -> str:
    return f"Here is my solution:\n```{tag}\n{code}```\nIt adds two numbers."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (fenced(ADD), ADD),
        (fenced(ADD, tag=""), ADD),
        (fenced(ADD, tag="py"), ADD),
        # the longest python block wins over a short usage example
        (fenced(ADD) + "\nUsage:\n```python\nadd(1, 2)\n```", ADD),
        ("```bash\npip install foo\n```\n" + fenced(ADD), ADD),  # non-Python blocks are ignored
        ("```python\n" + ADD, ADD),  # unterminated fence (truncated output)
        (ADD, ADD),  # bare code that parses
        ("The function adds a and b.", None),  # prose does not parse
        ("```bash\nls -la\n```", None),
        ("", None),
    ],
)
def test_extract_code(text: str, expected: str | None) -> None:
    assert extract_code(text) == expected


@pytest.mark.parametrize(
    ("candidate", "row", "reason"),
    [
        (fenced(ADD), {"test": ADD_TESTS}, "ok"),
        (fenced("def add(a, b):\n    return a - b\n"), {"test": ADD_TESTS}, "tests-failed"),
        (fenced(ADD), {"test": HUMANEVAL_TESTS, "entry_point": "add"}, "ok"),
        (
            fenced("def add(a, b):\n    return 0\n"),
            {"test": HUMANEVAL_TESTS, "entry_point": "add"},
            "tests-failed",
        ),
        (
            fenced("def plus(a, b):\n    return a + b\n"),
            {"test": HUMANEVAL_TESTS, "entry_point": "add"},
            "tests-failed",
        ),
        (fenced(ADD), {"test_list": ["assert add(1, 2) == 3"]}, "no-tests"),  # wrong field by default
        (fenced(ADD), {}, "no-tests"),
        (fenced(ADD), {"test": "   "}, "no-tests"),
        ("I don't know how to write this.", {"test": ADD_TESTS}, "no-code"),
        # a solution whose demo block reads stdin does not hang: the demo is not run
        (
            fenced(ADD + "if __name__ == '__main__':\n    print(add(int(input()), 1))\n"),
            {"test": ADD_TESTS},
            "ok",
        ),
        # exiting early must not count as passing
        (fenced(ADD + "import sys\nsys.exit(0)\n"), {"test": ADD_TESTS}, "tests-failed"),
        (fenced(ADD + "import os\nos._exit(0)\n"), {"test": ADD_TESTS}, "tests-failed"),
    ],
)
def test_is_correct(candidate: str, row: dict, reason: str) -> None:
    verdict = is_correct(candidate, row)
    assert verdict.reason == reason, verdict.detail
    assert verdict.ok is (reason == "ok")


def test_mbpp_style_test_list() -> None:
    verifier = CodeVerifier(tests_field="test_list")
    assert verifier.check(
        fenced(ADD), "", {"test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]}
    ).ok


def test_failure_detail_names_the_failed_assert() -> None:
    verdict = run_tests("x = 1", "assert x == 2, 'x should be 2'")
    assert verdict.detail == "AssertionError: x should be 2"
    verdict = run_tests(ADD, "assert add(1, 1) == 2\nassert add(2, 2) == 5\n")
    assert verdict.detail == "AssertionError at tests line 2: assert add(2, 2) == 5"


def test_candidate_exceptions_keep_their_type() -> None:
    code = "def parse(s):\n    return int(s)\n"
    # a test may expect the candidate to raise: the exception's type crosses the boundary
    assert run_tests(code, "try:\n    parse('x')\nexcept ValueError:\n    pass\nelse:\n    raise AssertionError\n").ok
    verdict = run_tests(code, "assert parse('x') == 0\n")
    assert (verdict.reason, verdict.detail.split(":")[0]) == ("tests-failed", "ValueError")


@pytest.mark.parametrize(
    ("code", "tests"),
    [
        # every plain type crosses with its exact type, and in-place changes to arguments come back
        ("def f():\n    return (1, [2.5, None], {'a': {1, 2}}, b'x', 1+2j, frozenset({3}), True)\n",
         "assert f() == (1, [2.5, None], {'a': {1, 2}}, b'x', 1+2j, frozenset({3}), True)\n"
         "assert type(f()[0]) is int and type(f()) is tuple\n"),
        ("def f(xs):\n    xs.sort()\n", "xs = [3, 1, 2]\nf(xs)\nassert xs == [1, 2, 3]\n"),
        ("def f(n):\n    return (i * i for i in range(n))\n", "assert list(f(3)) == [0, 1, 4]\n"),
        ("import collections\ndef f(s):\n    return collections.Counter(s)\n", "assert f('aab') == {'a': 2, 'b': 1}\n"),
        ("import math\ndef f():\n    return 2.0\n", "assert math.isclose(f(), 2.0)\n"),  # the candidate's import
        ("N = 3\ndef f(k=1):\n    return N * k\n", "assert N == 3 and f(k=2) == 6\n"),  # data and kwargs
    ],
)
def test_plain_data_round_trips(code: str, tests: str) -> None:
    verdict = run_tests(code, tests)
    assert verdict.ok, verdict.detail


def test_objects_that_cannot_cross_never_pass() -> None:
    # a class instance returned to the tests: not plain data, the test fails
    verdict = run_tests("class P:\n    pass\ndef f():\n    return P()\n", "assert f() is not None\n")
    assert (verdict.ok, verdict.reason) == (False, "tests-failed")
    # tests that hand the candidate a lambda are outside what the sandbox can judge
    verdict = run_tests("def apply(g, x):\n    return g(x)\n", "assert apply(lambda v: v + 1, 1) == 2\n")
    assert (verdict.ok, verdict.reason) == (False, "sandbox-error")


def test_trusted_setup_is_the_datasets_not_the_candidates() -> None:
    # HumanEval/32 style: the test calls a helper from the prompt. A candidate that redefines it
    # to make any answer look right must not win; passed as setup, the helper is the judge's own.
    setup = "def poly(xs, x):\n    return sum(c * x ** i for i, c in enumerate(xs))\n"
    tests = "def check(candidate):\n    assert abs(poly([-6, 1], candidate([-6, 1]))) < 1e-6\n"
    honest = setup + "def find_zero(xs):\n    return -xs[0] / xs[1]\n"
    cheat = "def poly(xs, x):\n    return 0\ndef find_zero(xs):\n    return 0.0\n"
    assert run_tests(honest, tests, "find_zero", setup=setup).ok
    assert not run_tests(cheat, tests, "find_zero", setup=setup).ok
    assert run_tests(cheat, tests, "find_zero").ok  # without setup the candidate's helper is used


def test_mbpp_setup_code_field() -> None:
    row = {"test_list": ["assert add(K, 1) == 11"], "test_setup_code": "K = 10"}
    assert CodeVerifier(tests_field="test_list").check(fenced(ADD), "", row).ok
    assert CodeVerifier(tests_field="test_list").check(fenced(ADD), "", {**row, "test_setup_code": "K = 9"}).ok is False


def test_infinite_loop_times_out_quickly() -> None:
    start = time.monotonic()
    verdict = run_tests("while True:\n    pass\n", "pass", timeout_s=2)
    assert verdict.reason == "timeout"
    assert time.monotonic() - start < 10  # 2 s, plus start-up on a loaded machine


def _processes_named(name: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and Path(f"/proc/{entry}/comm").read_text().strip() == name:
                pids.append(int(entry))
        except OSError:
            pass
    return pids


def test_timeout_kills_the_child() -> None:
    # after a timeout the child is dead, not merely abandoned: no process carries its name
    name = f"sdft{os.getpid() % 100000}t"
    code = f"import ctypes, time\nctypes.CDLL(None).prctl(15, {name.encode()!r}, 0, 0, 0)\ntime.sleep(60)\n"
    start = time.monotonic()
    assert run_tests(code, "pass", timeout_s=3).reason == "timeout"
    assert time.monotonic() - start < 15
    assert _processes_named(name) == []


def test_memory_limit() -> None:
    verdict = run_tests("blob = bytearray(2 * 1024 ** 3)\n", "pass", memory_mb=512)
    assert verdict.reason == "tests-failed"
    assert "MemoryError" in verdict.detail


@pytest.mark.parametrize(
    "code",
    [
        "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_STREAM)\n",
        "import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)\n",
        "import _socket\n_socket.socket()\n",  # the C module is covered too
        "import urllib.request\nurllib.request.urlopen('http://example.com', timeout=1)\n",
        "import subprocess\nsubprocess.run(['curl', 'http://example.com'])\n",  # no detour via a child
        "import os\nos.system('true')\n",
    ],
)
def test_network_and_processes_are_blocked(code: str) -> None:
    verdict = run_tests(code, "pass")
    assert verdict.reason == "tests-failed"
    assert "blocked in the sdft code sandbox" in verdict.detail


@pytest.mark.parametrize(
    ("code", "ok"),
    [
        ("import sys\nsys.stdout.buffer.write(b'\\xff\\xfe\\x80 bad utf-8\\n')\n", True),
        ("import sys\nsys.stderr.buffer.write(b'\\xff\\xfe\\x80 bad utf-8\\n')\n", True),
        (
            "import sys\nsys.stderr.buffer.write(b'\\xff\\xfe\\x80 bad utf-8\\n')\nraise SystemExit(1)\n",
            False,
        ),
    ],
)
def test_non_utf8_output_does_not_crash(code: str, ok: bool) -> None:
    verdict = run_tests(code, "pass")
    assert verdict.ok is ok
    assert isinstance(verdict.detail, str)


def test_writes_stay_in_the_sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Relative writes, "../" included, land in the child's own directory; the caller's working
    # directory stays empty. With namespace isolation, absolute paths on the host are out of reach
    # too (the directory is world-writable, so only isolation can keep the file out).
    caller = tmp_path / "caller"
    caller.mkdir()
    monkeypatch.chdir(caller)
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    host_dir.chmod(0o777)
    code = (
        "import os\n"
        "def probe():\n"
        "    open('inside.txt', 'w').write('x')\n"
        "    for path in ('../escape.txt', {!r}):\n"
        "        try:\n"
        "            open(path, 'w').write('x')\n"
        "        except OSError:\n"
        "            pass\n"
        "    return os.getcwd(), os.path.exists('inside.txt')\n"
    ).format(str(host_dir / "escape.txt"))
    assert run_tests(code, f"cwd, inside = probe()\nassert inside and cwd != {str(caller)!r}\n").ok
    assert not run_tests(code, f"assert probe()[0] == {str(caller)!r}\n").ok  # the check can fail
    assert list(caller.iterdir()) == []
    if sandbox.active_isolation() == "bwrap":
        assert list(host_dir.iterdir()) == []


def test_file_size_limit() -> None:
    verdict = run_tests("open('big.bin', 'wb').write(b'0' * (3 * 1024 * 1024))\n", "pass", max_file_mb=1)
    assert verdict.reason == "tests-failed"
    assert "File too large" in verdict.detail


def test_minimal_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDFT_SECRET_TOKEN", "hunter2")
    code = "import os\ndef env():\n    return dict(os.environ)\n"
    assert run_tests(code, "assert 'SDFT_SECRET_TOKEN' not in env() and env()['PATH']").ok
    assert not run_tests(code, "assert 'SDFT_SECRET_TOKEN' in env()").ok  # both ways: the check is real


@pytest.mark.parametrize(
    "options",
    [{"timeout_s": 0}, {"timeout_s": -1}, {"memory_mb": 10}, {"max_file_mb": 0}, {"tests_field": ""},
     {"sandbox": "off"}],
)
def test_bad_options(options: dict) -> None:
    with pytest.raises(ConfigError):
        CodeVerifier(**options)


def test_verifier_protocol() -> None:
    verifier = CodeVerifier(timeout_s=5)
    assert verifier.name == "code"
    assert verifier.check(fenced(ADD), "ignored reference", {"test": ADD_TESTS}).ok
    assert verifier.extract_answer(fenced(ADD)) == ADD


def test_active_isolation_is_probed_and_reported() -> None:
    mode = sandbox.active_isolation()
    assert mode in sandbox.ISOLATION_ORDER
    assert sandbox.active_isolation() == mode  # cached
    if mode != "bwrap":
        assert sandbox.isolation_problems()  # every stronger mode says why it did not work


def test_strict_refuses_without_namespaces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "_PROBED", None)
    monkeypatch.setenv(sandbox.FORCE_ENV, "rlimits-only")
    assert sandbox.active_isolation() == "rlimits-only"
    with pytest.raises(ConfigError, match="bubblewrap"):
        CodeVerifier(sandbox="strict")
    assert CodeVerifier(sandbox="auto").check(fenced(ADD), "", {"test": ADD_TESTS}).ok
    assert not CodeVerifier(sandbox="auto").check(fenced("def add(a, b):\n    return 0\n"), "", {"test": ADD_TESTS}).ok


def test_strict_runs_where_namespaces_work() -> None:
    if sandbox.active_isolation() not in sandbox.NAMESPACE_ISOLATIONS:
        pytest.skip(f"no namespace isolation here: {sandbox.isolation_problems()}")
    verifier = CodeVerifier(sandbox="strict")
    assert verifier.check(fenced(ADD), "", {"test": ADD_TESTS}).ok
    assert verifier.check(fenced("def add(a, b):\n    return 0\n"), "", {"test": ADD_TESTS}).reason == "tests-failed"


@pytest.mark.parametrize("binary", ["/bin/false", "/nonexistent/bwrap"])
def test_a_broken_sandbox_is_never_a_pass(binary: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # the launcher exits at once, or is not there: "sandbox-error", whatever the candidate
    monkeypatch.setattr(sandbox, "_PROBED", {"mode": "bwrap", "drop_uid": False})
    monkeypatch.setattr(sandbox, "_bwrap_binary", lambda: binary)
    verdict = run_tests(ADD, ADD_TESTS)
    assert (verdict.ok, verdict.reason) == (False, "sandbox-error"), verdict
