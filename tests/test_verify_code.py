"""Code verifier: extraction, test running, and the sandbox's adversarial cases.

Each run starts a fresh interpreter (~30 ms); only the infinite loop waits for its 2 s limit.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest

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


def test_failure_detail_is_last_stderr_line() -> None:
    verdict = run_tests("x = 1", "assert x == 2, 'x should be 2'")
    assert verdict.detail == "AssertionError: x should be 2"


def test_infinite_loop_times_out_quickly() -> None:
    start = time.monotonic()
    verdict = run_tests("while True:\n    pass\n", "pass", timeout_s=2)
    assert verdict.reason == "timeout"
    assert time.monotonic() - start < 5


def test_timeout_kills_the_child(tmp_path: Path) -> None:
    # after a timeout the child is dead, not merely abandoned: it never gets to write
    marker = tmp_path / "late.txt"
    code = f"import time\ntime.sleep(1.5)\nopen({str(marker)!r}, 'w').write('late')\n"
    assert run_tests(code, "pass", timeout_s=0.5).reason == "timeout"
    time.sleep(1.5)
    assert not marker.exists()


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


def test_writes_stay_in_the_throwaway_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Absolute paths cannot be fenced off without OS sandboxing (documented); what is
    # guaranteed is that relative writes, "../" included, land in a temporary tree that is
    # deleted, and never in the calling process's working directory.
    cwd = tmp_path / "caller"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    sandbox_parent = tmp_path / "tmp"
    sandbox_parent.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(sandbox_parent))
    code = (
        "import os\n"
        "open('inside.txt', 'w').write('x')\n"
        "open('../escape.txt', 'w').write('x')\n"
        "os.makedirs('sub/dir')\n"
        "open('sub/dir/f.txt', 'w').write('x')\n"
    )
    tests = "import os\nassert os.path.exists('inside.txt') and os.path.exists('../escape.txt')\n"
    assert run_tests(code, tests).ok
    assert list(cwd.iterdir()) == []
    assert list(sandbox_parent.iterdir()) == []  # the whole temporary tree is gone
    assert not (tmp_path / "escape.txt").exists()


def test_file_size_limit() -> None:
    verdict = run_tests("open('big.bin', 'wb').write(b'0' * (3 * 1024 * 1024))\n", "pass", max_file_mb=1)
    assert verdict.reason == "tests-failed"
    assert "File too large" in verdict.detail


def test_minimal_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDFT_SECRET_TOKEN", "hunter2")
    assert run_tests("import os", "assert 'SDFT_SECRET_TOKEN' not in os.environ").ok


def test_cwd_is_not_the_callers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert run_tests("import os", f"assert os.getcwd() != {str(tmp_path)!r}").ok
    assert os.getcwd() == str(tmp_path)


@pytest.mark.parametrize(
    "options",
    [{"timeout_s": 0}, {"timeout_s": -1}, {"memory_mb": 10}, {"max_file_mb": 0}, {"tests_field": ""}],
)
def test_bad_options(options: dict) -> None:
    with pytest.raises(ConfigError):
        CodeVerifier(**options)


def test_verifier_protocol() -> None:
    verifier = CodeVerifier(timeout_s=5)
    assert verifier.name == "code"
    assert verifier.check(fenced(ADD), "ignored reference", {"test": ADD_TESTS}).ok
    assert verifier.extract_answer(fenced(ADD)) == ADD
