"""Hostile inputs, ownership, resumption and the sandbox: tests that attack sdft the way the world will."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path


def run_cli(args: list[str | Path], *, cwd: Path | None = None,
            env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
    """``sdft ARGS`` through its console entry point (:func:`sdft.cli.main`), in this process.

    Returns what a subprocess would: the exit code, stdout and stderr (an exception that escaped
    the entry point is exit code 1 with its traceback on stderr, as Python prints it). In process
    because a fresh interpreter costs a second or more per call and these tests make dozens: what
    they check (exit code, the one error line, no traceback, files untouched) is the entry point's
    behaviour. Tests that need a process of their own (umask, kill -9, heavy imports) spawn one.
    """
    from sdft.cli import main

    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with _environment(env or {}), _cwd(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except Exception:  # noqa: BLE001 - what the interpreter would print, then exit 1
            err.write(traceback.format_exc())
            code = 1
    return subprocess.CompletedProcess(["sdft", *argv], code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _cwd(folder: Path | None) -> Iterator[None]:
    old = os.getcwd()
    if folder is not None:
        os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(old)
