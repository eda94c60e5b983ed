"""What the sandbox's root filesystem is made of, shared by both namespace backends.

The root is an empty read-only tmpfs holding read-only binds of /usr, the merged-/usr
links (/bin, /lib, ... or real directories on older layouts), the dynamic loader's
cache and the interpreter's own install prefix when it lives outside /usr; a minimal
/dev; and one writable, size-limited tmpfs at `SANDBOX_DIR`, the working directory. No
home, no /tmp, no host /proc: nothing the code writes lands on the host.
"""

from __future__ import annotations

import os
from collections.abc import Sequence


SANDBOX_DIR = "/sandbox"  # the working directory inside the sandbox (a tmpfs)


def root_layout(python: str, prefixes: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """(read-only binds, symlinks) the sandbox root is built from: /usr, the merged-/usr
    links (or real dirs on older layouts), the loader cache, the interpreter's prefix."""
    binds, links = ["/usr"], []
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            links.append((top, os.readlink(top)))
        elif os.path.isdir(top):
            binds.append(top)
    if os.path.exists("/etc/ld.so.cache"):
        binds.append("/etc/ld.so.cache")
    for path in (*prefixes, os.path.dirname(python)):
        if not any(path == b or path.startswith(b.rstrip("/") + "/") for b in binds):
            binds.append(path)
    return binds, links
