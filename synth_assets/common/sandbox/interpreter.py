"""Which Python interpreter runs inside the sandbox.

It has to be one the sandbox uid can execute: as root that is `nobody`, and a venv's
python often lives under /root, where `nobody` cannot go. So each candidate (the
running interpreter, its base interpreter, /usr/bin/python3, python3 on PATH, or the
one `SandboxLimits.python` names) is started once as the sandbox uid, and
`resolve_python` returns the first that works as (real path, install prefixes). The
backends bind those prefixes read-only into the sandbox's root (see `filesystem`).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys

from synth_assets.common.sandbox.user import as_sandbox_user


@functools.lru_cache(maxsize=8)
def _interpreter_layout(python: str) -> tuple[str, tuple[str, ...]] | None:
    """(real path, install prefixes) of an interpreter the sandbox uid can run, else None."""
    if not python or not os.path.exists(python):
        return None
    code = "import os, sys; print(os.path.realpath(sys.executable)); print(sys.base_prefix); print(sys.base_exec_prefix)"
    try:
        done = subprocess.run([python, "-I", "-S", "-c", code], env={}, cwd="/", capture_output=True, timeout=20,
                              **as_sandbox_user())
    except (OSError, subprocess.SubprocessError):
        return None
    lines = done.stdout.decode(errors="replace").split("\n")
    if done.returncode != 0 or len(lines) < 3:
        return None
    return lines[0], tuple(dict.fromkeys(lines[1:3]))


def python_candidates(requested: str | None) -> list[str]:
    if requested:
        return [requested]
    found = [sys.executable, getattr(sys, "_base_executable", None), "/usr/bin/python3", shutil.which("python3")]
    return list(dict.fromkeys(c for c in found if c))


def resolve_python(requested: str | None = None) -> tuple[str, tuple[str, ...]] | None:
    """The interpreter the sandbox uid can run, as (real path, prefixes); an interpreter
    whose prefix holds $HOME comes last, since binding that prefix would show the home."""
    home = os.path.realpath(os.path.expanduser("~")).rstrip("/") + "/"
    layouts = [layout for layout in map(_interpreter_layout, python_candidates(requested)) if layout]
    layouts.sort(key=lambda layout: any(home.startswith(p.rstrip("/") + "/") for p in layout[1]))
    return layouts[0] if layouts else None
