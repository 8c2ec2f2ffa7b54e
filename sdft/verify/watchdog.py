"""A hard time limit for checks that may run away: a killable worker process.

CPython cannot stop a runaway computation inside its own process: a signal or an injected
exception only lands between bytecodes, and a single C-level operation (a huge integer power
in sympy, a backtracking regular expression, ``int()`` of a million digits) holds the GIL
until it is done. The verifiers therefore bound their own work with caps first (linear
parsing, limits on answer length, number size, nesting depth and call count), and whatever
still calls code whose cost cannot be capped runs here: in one long-lived worker process that
is killed and restarted when a call overruns its limit. A killed call costs one worker start
(about a second); normal calls cost one pipe round trip.

:func:`run_bounded` runs a picklable module-level function in the worker. Inside the worker
it simply calls the function (the outer call is already bounded). When no worker can be
started (or ``SDFT_VERIFY_WORKER=0``), functions run in-process and the limit is only
checked afterwards by the callers.
"""

from __future__ import annotations

import atexit
import logging
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Seconds a new worker may take to start (not counted against any call's limit).
STARTUP_TIMEOUT_S = 120.0
#: Seconds a one-time ``prepare`` step (e.g. importing sympy) may take in a worker.
PREPARE_TIMEOUT_S = 120.0
#: Address-space limit of the worker, so that a runaway allocation fails there, not here.
WORKER_MEMORY_BYTES = 4 << 30

_HEADER = struct.Struct("!Q")
_IN_WORKER = False


class CheckTimeout(Exception):
    """A bounded call did not finish within its limit; the worker running it was killed."""


class CheckFailed(Exception):
    """A bounded call raised in the worker, or the worker died; the message says which."""


class _NotPortable(Exception):
    """The call cannot cross the process boundary (unpicklable); run it in-process instead."""


def in_worker() -> bool:
    """True inside the watchdog worker process."""
    return _IN_WORKER


def worker_enabled() -> bool:
    """False when ``SDFT_VERIFY_WORKER`` is 0/false/no/off (every call then runs in-process)."""
    return os.environ.get("SDFT_VERIFY_WORKER", "1").strip().lower() not in ("0", "false", "no", "off")


def _send(fh: Any, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    fh.write(_HEADER.pack(len(data)) + data)
    fh.flush()


def _read_exact(fh: Any, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        chunk = fh.read(n - got)
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def serve() -> None:
    """The worker's main loop: run ``fn(*args)`` requests from stdin, answer on stdout."""
    global _IN_WORKER
    _IN_WORKER = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when this process ends
    try:
        import resource  # noqa: PLC0415 - POSIX only

        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, WORKER_MEMORY_BYTES))
    except (ImportError, ValueError, OSError):
        pass
    rfile = sys.stdin.buffer
    wfile = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints of third-party code must not corrupt the protocol
    _send(wfile, ("ready", os.getpid()))
    while True:
        header = _read_exact(rfile, _HEADER.size)
        if header is None:
            return  # the parent closed the pipe or died
        payload = _read_exact(rfile, _HEADER.unpack(header)[0])
        if payload is None:
            return
        try:
            fn, args = pickle.loads(payload)
        except Exception as exc:  # noqa: BLE001 - e.g. a class the worker cannot import
            _send(wfile, ("not-portable", f"{type(exc).__name__}: {exc}"))
            continue
        try:
            reply: tuple[str, Any] = ("ok", fn(*args))
        except Exception as exc:  # noqa: BLE001 - reported to the caller, which decides
            reply = ("error", f"{type(exc).__name__}: {str(exc)[:300]}")
        try:
            _send(wfile, reply)
        except Exception as exc:  # noqa: BLE001 - an unpicklable result
            _send(wfile, ("error", f"result cannot be returned: {type(exc).__name__}: {exc}"))


class _Worker:
    """The parent's handle on one worker process (started lazily, restarted after a kill)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.owner = os.getpid()
        self.prepared: set[str] = set()
        self.lock = threading.Lock()
        self.broken = False  # could not start: run everything in-process from now on

    def _start(self) -> None:
        root = str(Path(__file__).resolve().parents[2])  # the folder that holds the sdft package
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        env.setdefault("OMP_NUM_THREADS", "1")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from sdft.verify.watchdog import serve; serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, close_fds=True,
            cwd=root,  # "python -c" puts the working folder first on sys.path: import this very sdft
        )
        self.prepared = set()
        try:
            kind, _ = self._receive(time.monotonic() + STARTUP_TIMEOUT_S)
        except (CheckTimeout, CheckFailed) as exc:
            raise OSError(f"the verifier worker did not start: {exc}") from None
        if kind != "ready":  # pragma: no cover - protocol error
            self.stop()
            raise OSError(f"the verifier worker did not start ({kind})")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or self.owner != os.getpid():
            return
        try:
            proc.kill()
            proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):  # pragma: no cover - already gone
            pass
        for stream in (proc.stdin, proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:  # pragma: no cover
                pass

    def _receive(self, deadline: float) -> tuple[str, Any]:
        """Read one reply; kill the worker and raise CheckTimeout at ``deadline``."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        buf = bytearray()
        need = _HEADER.size
        header_done = False
        while True:
            while len(buf) < need:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([fd], [], [], left)[0]:
                    self.stop()
                    raise CheckTimeout("the check did not finish in time; its worker was stopped")
                chunk = os.read(fd, max(need - len(buf), 1 << 16))
                if not chunk:
                    code = self.proc.poll()
                    self.stop()
                    raise CheckFailed(f"the verifier worker died (exit code {code}), e.g. out of memory")
                buf += chunk
            if header_done:
                return pickle.loads(bytes(buf[_HEADER.size:need]))
            need += _HEADER.unpack(bytes(buf[: _HEADER.size]))[0]
            header_done = True

    def _roundtrip(self, fn: Callable[..., Any], args: tuple[Any, ...], timeout_s: float) -> Any:
        try:
            data = pickle.dumps((fn, args), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - lambdas, local classes, open files, ...
            raise _NotPortable(str(exc)) from None
        deadline = time.monotonic() + timeout_s
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(_HEADER.pack(len(data)) + data)
            self.proc.stdin.flush()
        except OSError:
            self.stop()
            raise CheckFailed("the verifier worker went away") from None
        kind, value = self._receive(deadline)
        if kind == "ok":
            return value
        if kind == "not-portable":
            raise _NotPortable(value)
        raise CheckFailed(value)

    def ready(self, prepare: Callable[[], Any] | None) -> None:
        """Start the worker if it is not running, and run ``prepare`` in it once (call with the lock)."""
        if self.proc is None or self.proc.poll() is not None:
            self.stop()
            self._start()
        if prepare is not None:
            key = f"{prepare.__module__}.{getattr(prepare, '__qualname__', prepare)}"
            if key not in self.prepared:
                self._roundtrip(prepare, (), PREPARE_TIMEOUT_S)
                self.prepared.add(key)

    def call(self, fn: Callable[..., Any], args: tuple[Any, ...], timeout_s: float,
             prepare: Callable[[], Any] | None) -> Any:
        with self.lock:
            self.ready(prepare)
            return self._roundtrip(fn, args, timeout_s)


_worker: _Worker | None = None
_worker_guard = threading.Lock()


def _get_worker() -> _Worker | None:
    global _worker
    with _worker_guard:
        if _worker is None or _worker.owner != os.getpid():  # first use, or a forked child
            _worker = _Worker()
        return None if _worker.broken else _worker


def run_bounded(fn: Callable[..., Any], args: tuple[Any, ...] = (), *, timeout_s: float,
                prepare: Callable[[], Any] | None = None) -> Any:
    """Run ``fn(*args)`` in the worker process and return its result within ``timeout_s``.

    Args:
        fn: a module-level function (it is pickled by reference).
        args: picklable arguments.
        timeout_s: the hard limit for this call; the worker is killed when it is crossed.
        prepare: an optional module-level function run once per worker before its first
            call (outside the limit), e.g. to import a heavy package.

    Returns:
        What ``fn`` returned.

    Raises:
        CheckTimeout: the call overran ``timeout_s`` (in-process: reported after it ended).
        CheckFailed: ``fn`` raised in the worker (the message names the exception) or the
            worker died.
        Exception: whatever ``fn`` raised when it ran in-process.
    """
    worker = None if _IN_WORKER or not worker_enabled() else _get_worker()
    if worker is not None:
        try:
            return worker.call(fn, args, timeout_s, prepare)
        except _NotPortable:
            pass  # fall through: run it here
        except OSError as exc:  # the worker could not be started at all
            log.warning("sdft: no verifier worker process (%s); checks run in-process", exc)
            worker.broken = True
    if _IN_WORKER:  # the whole request is already bounded by the parent
        return fn(*args)
    if prepare is not None:
        prepare()
    # In-process, a runaway cannot be stopped; it is reported once it ends (the callers' caps
    # keep that from taking long).
    start = time.monotonic()
    result = fn(*args)
    elapsed = time.monotonic() - start
    if elapsed > timeout_s:
        raise CheckTimeout(f"the check took {elapsed:.1f} s, over its {timeout_s:g} s limit")
    return result


def warm_up(prepare: Callable[[], Any] | None = None) -> bool:
    """Start the worker now (and run ``prepare`` in it), so that no later call waits for it.

    Args:
        prepare: an optional module-level warm-up function, as for :func:`run_bounded`.

    Returns:
        True when a worker process is running, False when checks run in-process.
    """
    worker = None if _IN_WORKER or not worker_enabled() else _get_worker()
    if worker is None:
        return False
    try:
        with worker.lock:
            worker.ready(prepare)
    except OSError as exc:
        log.warning("sdft: no verifier worker process (%s); checks run in-process", exc)
        worker.broken = True
        return False
    return True


def shutdown() -> None:
    """Stop the worker process (also registered to run at exit)."""
    with _worker_guard:
        if _worker is not None:
            with _worker.lock:
                _worker.stop()


atexit.register(shutdown)
