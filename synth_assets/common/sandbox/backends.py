"""The ways to start one contained process, each described by a `Sandbox`.

- `bubblewrap`: Debian's `bwrap` with every namespace unshared, an empty environment,
  the read-only root from `filesystem` and a tmpfs working directory;
- `userns`: the same namespaces and root built by this package's own launcher
  (`userns_launcher`) when bwrap is missing;
- `subprocess` (unisolated, only with `allow_unisolated_execution`): a plain child
  process that, as root, tries a private network namespace and drops to `nobody` in
  `unisolated_setup`.

A constructor returns a `Sandbox` (or, for bubblewrap, a sentence saying why it cannot
be used); whether it really isolates is measured afterwards by the probe (see
`isolation`), never assumed from the constructor succeeding.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from synth_assets.common.sandbox.filesystem import SANDBOX_DIR, root_layout
from synth_assets.common.sandbox.jobs import SandboxLimits
from synth_assets.common.sandbox.user import NOBODY_GID, NOBODY_UID, is_root
from synth_assets.common.sandbox.userns_launcher import USERNS_LAUNCHER


CLONE_NEWNET = 0x40000000

_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded in the parent: a forked child only calls it


@dataclass(frozen=True)
class Sandbox:
    """How to start one contained process: a backend and its interpreter."""

    backend: str  # "bubblewrap", "userns" or "subprocess" (unisolated)
    python: str
    launcher: tuple[str, ...] = ()  # bwrap's argv before the interpreter; userns: the launcher's spec

    def command(self, program: str, args: Sequence[str], scratch: str | None) -> list[str]:
        inner = [self.python, "-I", "-S", "-c", program, *args]
        if self.backend == "userns":  # spec = (workdir_mb, n_binds, *binds, n_links, *links)
            return [self.python, "-I", "-S", "-c", USERNS_LAUNCHER, self.launcher[0], scratch or "", self.python,
                    *self.launcher[1:], *inner]
        return [*self.launcher, *inner]


def unisolated_setup() -> None:
    """The old way, only with allow_unisolated_execution: as root, a private network
    namespace when permitted (best effort; the probe reports the outcome) and nobody."""
    if is_root():
        _LIBC.unshare(CLONE_NEWNET)  # failure shows in the probe's network check
        os.setgroups([])
        os.setgid(NOBODY_GID)
        os.setuid(NOBODY_UID)


@functools.lru_cache(maxsize=4)
def _bwrap_help(bwrap: str) -> str:
    try:
        return subprocess.run([bwrap, "--help"], capture_output=True, timeout=10).stdout.decode(errors="replace")
    except (OSError, subprocess.SubprocessError):
        return ""


def bubblewrap(limits: SandboxLimits, python: str, prefixes: Sequence[str]) -> Sandbox | str:
    bwrap = shutil.which(limits.bwrap)
    if not bwrap:
        return f"not installed (no {limits.bwrap!r} on PATH; Debian: apt-get install bubblewrap)"
    binds, links = root_layout(python, prefixes)
    # No --new-session: the launcher already starts a session without a terminal, and one
    # process group lets a timeout kill the launcher and the sandbox together.
    argv = [bwrap, "--unshare-all", "--die-with-parent", "--clearenv"]
    if "--disable-userns" in _bwrap_help(bwrap):  # bubblewrap >= 0.8
        argv += ["--unshare-user", "--disable-userns"]  # no nested namespaces for the code either
    for path in binds:
        argv += ["--ro-bind", path, path]
    for link, target in links:
        argv += ["--symlink", target, link]
    argv += ["--dev", "/dev", "--remount-ro", "/dev"]
    if "--size" in _bwrap_help(bwrap):  # bubblewrap >= 0.5; without it the tmpfs is bounded by RAM only
        argv += ["--size", str(limits.workdir_mb << 20)]
    argv += ["--tmpfs", SANDBOX_DIR, "--chdir", SANDBOX_DIR, "--remount-ro", "/", "--"]
    return Sandbox("bubblewrap", python, tuple(argv))


def userns(limits: SandboxLimits, python: str, prefixes: Sequence[str]) -> Sandbox:
    binds, links = root_layout(python, prefixes)
    spec = [str(limits.workdir_mb), str(len(binds)), *binds, str(len(links)), *(p for pair in links for p in pair)]
    return Sandbox("userns", python, tuple(spec))
