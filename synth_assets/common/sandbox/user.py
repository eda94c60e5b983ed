"""Who the sandbox runs as.

As root, every sandboxed process (and the interpreter probe in `interpreter`) runs as
uid/gid `nobody` (65534): root ignores RLIMIT_NPROC, the limit that stops fork bombs,
and a dropped uid holds no capabilities. As an ordinary user the sandbox runs as that
user, inside namespaces of its own.
"""

from __future__ import annotations

import os


NOBODY_UID = 65534
NOBODY_GID = 65534


def is_root() -> bool:
    return os.geteuid() == 0


def sandbox_ids() -> tuple[int, int]:
    """(uid, gid) the sandbox runs as: nobody when root (root ignores RLIMIT_NPROC)."""
    return (NOBODY_UID, NOBODY_GID) if is_root() else (os.getuid(), os.getgid())


def as_sandbox_user() -> dict:
    """Popen arguments that start the child as the sandbox uid (no preexec_fn needed)."""
    return {"user": NOBODY_UID, "group": NOBODY_GID, "extra_groups": []} if is_root() else {}
