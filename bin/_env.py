"""Shared preamble of the Python scripts in bin/: ``import _env`` before anything from sdft.

* puts this checkout first on ``sys.path`` (its ``sdft``, installed or not) and exposes ``ROOT``;
* applies the runtime settings of ``bin/_env.sh`` (read from that file, so the two cannot drift),
  each only when the environment does not set it already;
* when started by another Python while the project's venv exists (``SDFT_VENV``, else ``.venv``),
  runs the script again with the venv's Python (nothing is installed here: ``bin/setup`` does that).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

BIN = Path(__file__).resolve().parent
ROOT = BIN.parent
_SETTING = re.compile(r'^export (\w+)="\$\{\1:-([^}]*)\}"')


def settings() -> dict[str, str]:
    """``NAME -> default`` of every runtime setting in bin/_env.sh."""
    lines = (BIN / "_env.sh").read_text(encoding="utf-8").splitlines()
    return {m.group(1): m.group(2) for m in map(_SETTING.match, lines) if m}


def _venv_python() -> Path | None:
    venv = Path(os.environ.get("SDFT_VENV") or ROOT / ".venv")
    python = venv / "bin" / "python"
    if not python.exists() or Path(sys.prefix).resolve() == venv.resolve():
        return None
    return python


for _name, _value in settings().items():
    os.environ.setdefault(_name, _value)
if (_python := _venv_python()) is not None:
    os.execv(_python, [str(_python), *sys.argv])
sys.path.insert(0, str(ROOT))
