"""What a caller hands the sandbox and gets back.

- `SandboxLimits`: the resource limits one run is held to (CPU, memory, file size,
  open files, processes, working-directory size, wall clock) and the isolation settings
  (which backend, which interpreter, whether running unisolated is allowed at all);
- `SandboxJob`: one generated solution and the `assert` tests to run after it;
- `SandboxResult`: the verdict, `passed` plus a `reason` such as "timeout" or
  "assertion_failed: test 2";
- `SandboxUnavailable`: raised instead of running when no backend isolates here.

Plain frozen data with no behaviour, so every other module of the package can use it
without importing anything else. `SandboxLimits` is hashable on purpose: the isolation
probe is cached per setting (see `isolation`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


class SandboxUnavailable(RuntimeError):
    """No isolating sandbox here, and unisolated execution was not allowed."""


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits and isolation settings for sandboxed runs."""

    timeout_s: float = 5.0  # wall clock, whole sandbox killed after it
    cpu_s: int = 5  # RLIMIT_CPU
    memory_mb: int = 512  # RLIMIT_AS: a huge allocation becomes MemoryError
    file_size_mb: int = 1  # RLIMIT_FSIZE
    open_files: int = 32  # RLIMIT_NOFILE
    processes: int = 1  # RLIMIT_NPROC
    workdir_mb: int = 16  # size of the writable tmpfs working directory
    python: str | None = None  # interpreter; None = probe for one (see `interpreter`)
    backend: str = "auto"  # "auto" (bubblewrap, then userns), "bubblewrap" or "userns"
    bwrap: str = "bwrap"  # bubblewrap executable (name on PATH or a path)
    # Unsafe: when no backend isolates, run in a plain subprocess instead of refusing.
    allow_unisolated_execution: bool = False


@dataclass(frozen=True)
class SandboxJob:
    solution: str
    tests: Sequence[str] = field(default_factory=tuple)


@dataclass(frozen=True)
class SandboxResult:
    passed: bool
    reason: str  # "passed", "timeout", "assertion_failed: test 2", "error: ZeroDivisionError ...", ...
    duration_s: float
    n_tests: int
    stderr_tail: str = ""
