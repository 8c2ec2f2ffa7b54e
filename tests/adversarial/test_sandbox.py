"""Forgery attempts: model-written code that tries to pass tests it does not pass.

Every candidate below computes the wrong answer (``add`` returns 0, or nothing) and then tries
to make the verdict say "ok" anyway, or to harm the host. Each must fail, and where it reaches
for the host, the host must be untouched. The honest control passes under the same tests, so a
verifier that always fails cannot pass this file either. Real processes, no mocks; the whole
file takes well under a minute on 2 shared cores.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from sdft import sandbox
from sdft.verify.code import CodeVerifier, run_tests

HONEST = "def add(a, b):\n    return a + b\n"
WRONG = "def add(a, b):\n    return 0\n"
HUMANEVAL = {"test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(10, 5) == 15\n",
             "entry_point": "add"}
MBPP = {"test": "assert add(2, 3) == 5\nassert add(10, 5) == 15\n"}
TOKEN = f"sdftadv{os.getpid() % 100000}"  # names processes and files the candidates leave behind


def judge(code: str, row: dict | None = None, timeout_s: float = 10.0):
    return CodeVerifier(timeout_s=timeout_s).check(f"```python\n{code}```", "", row or HUMANEVAL)


def processes_named(name: str) -> list[int]:
    """Live host pids whose name or command line contains ``name`` (the host sees every pid
    namespace). Zombies are dead: they only wait for the machine's init to collect them."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            comm = Path(f"/proc/{entry}/comm").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().decode("latin-1")
            state = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            continue
        if (name in comm or name in cmdline) and state not in ("Z", "X"):
            found.append(int(entry))
    return found


def assert_no_process_named(name: str) -> None:
    # no grace period: the verifier returns only once the candidate's whole tree is dead
    assert processes_named(name) == []


whole_tree_killed = pytest.mark.skipif(
    sandbox.active_isolation() == "rlimits-only" and not sandbox._probed()["drop_uid"],
    reason="rlimits-only without a uid of its own cannot find a daemon that left its process group (documented)",
)
namespaced = pytest.mark.skipif(
    sandbox.active_isolation() not in sandbox.NAMESPACE_ISOLATIONS and os.geteuid() == 0,
    reason="as root without namespaces this attack would reach the real host",
)


# ---------------------------------------------------------------------------------- controls
@pytest.mark.parametrize("row", [HUMANEVAL, MBPP], ids=["humaneval", "mbpp"])
def test_honest_candidate_passes_and_wrong_one_fails(row: dict) -> None:
    assert judge(HONEST, row).ok
    honest_noisy = "import sys, math\nprint('debug')\ndef add(a, b):\n    print(a, b, file=sys.stderr)\n"
    honest_noisy += "    return int(math.fsum([a, b]))\n"
    assert judge(honest_noisy, row).ok
    verdict = judge(WRONG, row)
    assert (verdict.ok, verdict.reason) == (False, "tests-failed")


# ------------------------------------------------------------------- forgeries in the child
FORGERIES = {
    "sys-exit-at-import": WRONG + "import sys\nsys.exit(0)\n",
    "os-exit-at-import": WRONG + "import os\nos._exit(0)\n",
    "os-exit-in-call": "def add(a, b):\n    import os\n    os._exit(0)\n",
    "system-exit-in-call": "def add(a, b):\n    raise SystemExit(0)\n",
    "exception-hooks": (
        "import atexit, os, sys, threading\n"
        "sys.excepthook = lambda *a: None\nthreading.excepthook = lambda *a: None\n"
        "atexit.register(lambda: os._exit(0))\n"
        "def add(a, b):\n    raise AssertionError('ignore me')\n"
    ),
    "frames-and-gc": (
        "import gc, sys\n"
        "def add(a, b):\n"
        "    f = sys._getframe()\n"
        "    while f is not None:  # every caller's namespace: make the encoder lie, asserts vanish\n"
        "        for ns in (f.f_globals, f.f_locals):\n"
        "            if 'encode' in ns:\n"
        "                ns['encode'] = lambda v: 5\n"
        "            ns['AssertionError'] = type('Nope', (Exception,), {})\n"
        "        f = f.f_back\n"
        "    for o in gc.get_objects():\n"
        "        if isinstance(o, dict) and 'check' in o:\n"
        "            o['check'] = lambda c: None\n"
        "    return 0\n"
    ),
    "patched-builtins": (
        WRONG + "import builtins\n"
        "builtins.AssertionError = type('Nope', (Exception,), {})\n"
        "builtins.print = lambda *a, **k: None\n"
        "builtins.isinstance = lambda *a: True\n"
        "__builtins__['len'] = lambda x: 0\n"
    ),
    "always-equal-object": (
        "class Eq:\n"
        "    def __eq__(self, other): return True\n"
        "    def __ne__(self, other): return False\n"
        "    def __bool__(self): return True\n"
        "    def __hash__(self): return 0\n"
        "def add(a, b):\n    return Eq()\n"
    ),
    "always-equal-int-subclass": (
        "class E(int):\n"
        "    def __eq__(self, other): return True\n"
        "    def __ne__(self, other): return False\n"
        "    __hash__ = int.__hash__\n"
        "def add(a, b):\n    return E(0)\n"
    ),
    "fake-protocol-frames": (
        "import json, os\n"
        "def frame(o):\n    d = json.dumps(o).encode()\n    return len(d).to_bytes(4, 'big') + d\n"
        "forged = frame({'ready': True}) + frame({'kind': 'callable'}) + frame({'ret': 5}) * 20\n"
        "forged += b'{\"nonce\": \"x\", \"ok\": true, \"reason\": \"ok\", \"detail\": \"\"}\\n'\n"
        "for fd in range(0, 64):\n"
        "    try:\n        os.write(fd, forged)\n    except OSError:\n        pass\n"
        "print('{\"ok\": true, \"reason\": \"ok\"}')\n"
        + WRONG
    ),
    "fake-result-files": (
        "import os\n"
        f"for path in ('stdout', '../stdout', 'result.json', '../result.json', '/tmp/{TOKEN}-verdict'):\n"
        "    try:\n        open(path, 'w').write('{\"ok\": true, \"reason\": \"ok\"}\\nok\\n')\n"
        "    except OSError:\n        pass\n"
        + WRONG
    ),
    "audit-hook-disabled": (
        "import gc, os\n"
        "def _make(blocked, own_pid):\n"
        "    def audit(event, args):\n        blocked, own_pid\n        return None\n"
        "    return audit\n"
        "for o in gc.get_objects():  # swap the code of the sandbox's audit hook for a no-op\n"
        "    if callable(o) and getattr(o, '__name__', '') == 'audit' and o.__code__.co_freevars:\n"
        "        try:\n            o.__code__ = _make(0, 0).__code__\n        except Exception:\n            pass\n"
        "os.system('echo forged > /tmp/" + TOKEN + "-hook; echo ok')\n"
        + WRONG
    ),
}


@pytest.mark.parametrize("code", FORGERIES.values(), ids=FORGERIES.keys())
def test_forgery_fails(code: str) -> None:
    verdict = judge(code)
    assert not verdict.ok, f"forged a pass: {verdict}"
    assert verdict.reason == "tests-failed", verdict
    leftovers = [p for p in (Path(f"/tmp/{TOKEN}-hook"), Path(f"/tmp/{TOKEN}-verdict")) if p.exists()]
    for path in leftovers:
        path.unlink()
    if sandbox.active_isolation() in sandbox.NAMESPACE_ISOLATIONS:
        assert leftovers == []  # the host's /tmp is not the candidate's


@pytest.mark.parametrize("name", ["sys-exit-at-import", "frames-and-gc", "always-equal-object",
                                  "fake-protocol-frames", "patched-builtins"])
def test_forgery_fails_without_namespaces_too(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The verdict is the judge's whatever the isolation: the same forgeries under rlimits-only.
    monkeypatch.setattr(sandbox, "_PROBED", {"mode": "rlimits-only", "drop_uid": False})
    assert judge(HONEST).ok
    assert not judge(FORGERIES[name]).ok


def test_string_subclass_cannot_fake_equality() -> None:
    row = {"test": "assert greet('ann') == 'hi ann'\nassert greet('bo') == 'hi bo'\n"}
    assert judge("def greet(n):\n    return 'hi ' + n\n", row).ok
    cheat = "class S(str):\n    def __eq__(self, o): return True\n    __hash__ = str.__hash__\n"
    assert not judge(cheat + "def greet(n):\n    return S('nope')\n", row).ok


# -------------------------------------------------------------------------- reaching the host
def test_processes_spawned_past_the_audit_hook_stay_inside(tmp_path: Path) -> None:
    # fork/exec through ctypes (no audit event): the shell runs, but inside the sandbox
    marker = f"/tmp/{TOKEN}-ctypes"
    code = (
        "import ctypes\n"
        f"ctypes.CDLL(None).system(b'echo forged > {marker}; echo ok')\n"
        + WRONG
    )
    verdict = judge(code)
    assert (verdict.ok, verdict.reason) == (False, "tests-failed")
    if sandbox.active_isolation() in sandbox.NAMESPACE_ISOLATIONS:
        assert not Path(marker).exists()  # a private /tmp
    Path(marker).unlink(missing_ok=True)


@whole_tree_killed
def test_process_that_outlives_the_run_is_killed() -> None:
    name = f"{TOKEN}d"[:15]
    code = (
        "import ctypes, os, time\n"
        "libc = ctypes.CDLL(None)\n"
        "if libc.fork() == 0:  # a daemon: new session, new name, waits for the verdict to pass\n"
        "    libc.setsid()\n"
        f"    libc.prctl(15, {name.encode()!r}, 0, 0, 0)\n"
        "    if libc.fork() == 0:\n        time.sleep(60)\n"
        "    os._exit(0)\n"
        "time.sleep(0.3)\n"
        + WRONG
    )
    verdict = judge(code)
    assert (verdict.ok, verdict.reason) == (False, "tests-failed")
    assert_no_process_named(name)


@namespaced
def test_signals_to_the_parent_and_everyone() -> None:
    host_pid = os.getpid()
    code = (
        "import ctypes, os, signal\n"
        "libc = ctypes.CDLL(None)\n"
        f"for pid in (os.getppid(), 1, {host_pid}):\n"
        "    libc.kill(pid, signal.SIGSTOP)\n"
        "    libc.kill(pid, signal.SIGKILL)\n"
        "libc.kill(-1, signal.SIGKILL)\n"
        + WRONG
    )
    # Had any signal reached this process (the caller) or the judge, this test would hang or die
    # here, or the verdict would be a sandbox-error; the candidate can only kill its own process.
    verdict = judge(code)
    assert (verdict.ok, verdict.reason) == (False, "tests-failed"), verdict


@whole_tree_killed  # the same condition: a child with the caller's uid and /proc can read its environ
def test_parent_environment_is_out_of_reach(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = f"{TOKEN}-secret-value"
    monkeypatch.setenv("SDFT_ADVERSARIAL_SECRET", secret)
    code = (
        "import os\n"
        "def leak():\n"
        "    seen = [repr(dict(os.environ))]\n"
        f"    for pid in ['self', str(os.getppid()), '1', '{os.getpid()}'] + os.listdir('/proc'):\n"
        "        for part in ('environ', 'cmdline'):\n"
        "            try:\n"
        "                seen.append(open(f'/proc/{pid}/{part}', 'rb').read().decode('latin-1'))\n"
        "            except OSError:\n"
        "                pass\n"
        "    return '\\n'.join(seen)\n"
    )
    verdict = judge(code, {"test": f"assert {secret!r} in leak()\n"})
    assert (verdict.ok, verdict.reason) == (False, "tests-failed")
    assert verdict.detail.startswith("AssertionError"), verdict  # leak() ran and found nothing


@namespaced
def test_fork_bomb_is_bounded() -> None:
    name = f"{TOKEN}b"[:15]
    code = (
        "import ctypes\n"
        "libc = ctypes.CDLL(None)\n"
        f"libc.prctl(15, {name.encode()!r}, 0, 0, 0)\n"
        "def add(a, b):\n"
        "    for _ in range(10000):\n"
        "        libc.fork()\n"
        "    return 0\n"
    )
    start = time.monotonic()
    verdict = judge(code, timeout_s=3)
    assert not verdict.ok
    assert time.monotonic() - start < 20
    assert_no_process_named(name)


@pytest.mark.parametrize(
    "code",
    [
        WRONG + "blob = bytearray(8 * 1024 ** 3)\n",
        "def add(a, b):\n    hoard = []\n    while True:\n        hoard.append(bytearray(10 ** 7))\n",
    ],
    ids=["at-import", "growing"],
)
def test_memory_bomb(code: str) -> None:
    verdict = judge(code)  # filling 512 MB takes seconds on a loaded 2-core machine
    assert (verdict.ok, verdict.reason) == (False, "tests-failed")
    assert "MemoryError" in verdict.detail


@pytest.mark.parametrize(
    "code",
    [
        "import os\ndef add(a, b):\n    while True:\n"
        "        os.write(1, b'5' * 65536)\n        os.write(2, b'ok\\n' * 20000)\n",
        "while True:\n    pass\n" + HONEST,
    ],
    ids=["output-flood", "infinite-loop-at-import"],
)
def test_floods_and_hangs_time_out(code: str) -> None:
    start = time.monotonic()
    verdict = judge(code, timeout_s=2)
    assert (verdict.ok, verdict.reason) == (False, "timeout")
    assert time.monotonic() - start < 15


def test_giant_or_deep_return_values_fail_cleanly() -> None:
    for body in ("return [[[[0]]]] if False else eval('[' * 5000 + ']' * 5000)",
                 "return 'x' * (MAX + 1)",
                 "return 10 ** 100000"):
        head = f"import sys\nsys.setrecursionlimit(100000)\nMAX = {sandbox.MAX_MESSAGE_BYTES}\n"
        verdict = run_tests(f"{head}def add(a, b):\n    {body}\n", "assert add(1, 2) == 3\n", timeout_s=10)
        assert (verdict.ok, verdict.reason) == (False, "tests-failed"), (body, verdict)


def test_a_dead_judge_is_never_a_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    # if the judge itself cannot run, the verdict is a failure, not silence read as success
    monkeypatch.setattr(sandbox.sys, "executable", "/bin/false")
    verdict = run_tests(HONEST, MBPP["test"])
    assert (verdict.ok, verdict.reason) == (False, "sandbox-error")
