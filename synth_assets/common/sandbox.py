"""Run untrusted generated Python (a solution plus its `assert` tests) in a contained
subprocess and say whether it passed, and if not, why.

Layers, outermost first (each one is checked by tests/test_sandbox.py with a planted
malicious solution):

- a fresh temporary working directory, an empty environment, `python -I -S`
  (isolated mode, no site-packages: exercises use the standard library only);
- its own session / process group, killed as a whole (SIGKILL) on the wall-clock timeout;
- `resource.setrlimit` in the child before exec: RLIMIT_CPU, RLIMIT_AS (memory),
  RLIMIT_FSIZE, RLIMIT_NOFILE, RLIMIT_NPROC, RLIMIT_CORE=0;
- when running as root: a private network namespace (`unshare(CLONE_NEWNET)`, no
  interfaces but a down loopback) and a drop to uid/gid `nobody`. Root ignores
  RLIMIT_NPROC, so without the drop a fork bomb would only be stopped by the prelude;
  the drop needs an interpreter that `nobody` can execute, so one is probed for
  (the venv's python often lives under /root, which `nobody` cannot read);
- a prelude in the child that disables process creation (`os.fork`, `subprocess`,
  `os.system`, exec/spawn), sockets, `ctypes`, and file writes/deletes outside the
  working directory. The prelude alone is bypassable by determined code; it is
  defence in depth behind the kernel limits, not a security boundary by itself.

`run_many` runs several jobs concurrently (one thread per job waiting on its
subprocess; default one per CPU core).
"""

from __future__ import annotations

import ast
import ctypes
import functools
import marshal
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

CLONE_NEWNET = 0x40000000
NOBODY_UID = 65534
NOBODY_GID = 65534
RESULT_PREFIX = "__SANDBOX_RESULT__"

_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded in the parent: the child only calls it


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits for one sandboxed run."""

    timeout_s: float = 5.0  # wall clock, whole process group killed after it
    cpu_s: int = 5  # RLIMIT_CPU
    memory_mb: int = 512  # RLIMIT_AS: a huge allocation becomes MemoryError
    file_size_mb: int = 1  # RLIMIT_FSIZE
    open_files: int = 32  # RLIMIT_NOFILE
    processes: int = 1  # RLIMIT_NPROC (effective only for a non-root uid)
    isolate_network: bool = True  # unshare(CLONE_NEWNET) when permitted
    drop_privileges: bool = True  # setuid nobody when running as root
    python: str | None = None  # interpreter; None = probe (see module docstring)


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


# --------------------------------------------------------------------------- prelude

# Runs in the child before the solution. Reads the run's nonce from stdin so the
# solution cannot print a fake "passed" line without it.
_HARNESS = r'''
import builtins, io, _io, marshal, os, posix, sys
_nonce = sys.stdin.readline().strip()
_emit_fd = os.dup(1)
_real_exit = os._exit
_workdir = os.path.realpath(os.getcwd())

def _report(passed, reason):
    os.write(_emit_fd, ("\n%s %s %r\n" % (%(prefix)r, _nonce, (passed, reason))).encode())
    _real_exit(0)

def _blocked(name):
    def refuse(*args, **kwargs):
        raise PermissionError("sandbox: %s is disabled" % name)
    return refuse

for _mod in (os, posix):
    for _name in ("fork", "forkpty", "vfork", "system", "popen", "execv", "execve", "execvp", "execvpe",
                  "execl", "execle", "execlp", "execlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe",
                  "spawnl", "spawnle", "spawnlp", "spawnlpe", "posix_spawn", "posix_spawnp", "kill",
                  "killpg", "_exit", "abort", "setuid", "setgid", "chroot"):
        if hasattr(_mod, _name):
            setattr(_mod, _name, _blocked("os." + _name))

def _inside(path):
    try:
        resolved = os.path.realpath(os.fspath(path) if not isinstance(path, int) else ".")
    except Exception:
        return False
    return resolved == _workdir or resolved.startswith(_workdir + os.sep)

_real_open = _io.open
def _guarded_open(file, mode="r", *args, **kwargs):
    if isinstance(file, int) or any(flag in mode for flag in "wax+"):
        if not _inside(file):
            raise PermissionError("sandbox: writing outside the working directory is disabled")
    return _real_open(file, mode, *args, **kwargs)
builtins.open = io.open = _io.open = _guarded_open

class _GuardedFileIO(_io.FileIO):
    def __init__(self, file, mode="r", *args, **kwargs):
        if isinstance(file, int) or any(flag in mode for flag in "wax+"):
            if not _inside(file):
                raise PermissionError("sandbox: writing outside the working directory is disabled")
        super().__init__(file, mode, *args, **kwargs)
io.FileIO = _io.FileIO = _GuardedFileIO

_real_os_open = os.open
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
def _guarded_os_open(path, flags, *args, **kwargs):
    if flags & _WRITE_FLAGS and not _inside(path):
        raise PermissionError("sandbox: writing outside the working directory is disabled")
    return _real_os_open(path, flags, *args, **kwargs)
os.open = posix.open = _guarded_os_open

def _path_guard(name, real):
    def guarded(*paths, **kwargs):
        for path in paths[:2]:
            if isinstance(path, (str, bytes, os.PathLike)) and not _inside(path):
                raise PermissionError("sandbox: %s outside the working directory is disabled" % name)
        return real(*paths, **kwargs)
    return guarded

for _mod in (os, posix):
    for _name in ("remove", "unlink", "rmdir", "rename", "replace", "mkdir", "makedirs", "chmod",
                  "chown", "symlink", "link", "truncate", "utime"):
        if hasattr(_mod, _name):
            setattr(_mod, _name, _path_guard(_name, getattr(_mod, _name)))

# Stub modules instead of patched real ones: importing socket/subprocess costs more
# than the rest of the run, and a stub refuses every attribute.
def _stub(module_name, what):
    stub = type(sys)(module_name)
    def refuse(name):
        raise PermissionError("sandbox: %s is disabled (%s.%s)" % (what, module_name, name))
    stub.__getattr__ = refuse
    return stub
sys.modules["socket"] = _stub("socket", "network access")
sys.modules["subprocess"] = _stub("subprocess", "process creation")
for _name in ("ctypes", "_ctypes", "_posixsubprocess", "multiprocessing", "_multiprocessing", "pty"):
    sys.modules[_name] = None

_solution, _tests = marshal.loads(_real_open("job.bin", "rb").read())
_namespace = {"__name__": "__main__"}
try:
    exec(compile(_solution, "solution.py", "exec"), _namespace)
except SyntaxError as exc:
    _report(False, "syntax_error: %s (line %s)" % (exc.msg, exc.lineno))
except MemoryError:
    _report(False, "memory_error: in solution")
except BaseException as exc:
    _report(False, "error: %s in solution: %s" % (type(exc).__name__, str(exc)[:200]))
for _index, _test in enumerate(_tests):
    try:
        exec(compile(_test, "test_%d" % _index, "exec"), _namespace)
    except AssertionError:
        _report(False, "assertion_failed: test %d" % _index)
    except SyntaxError as exc:
        _report(False, "syntax_error: test %d: %s" % (_index, exc.msg))
    except MemoryError:
        _report(False, "memory_error: test %d" % _index)
    except RecursionError:
        _report(False, "error: RecursionError in test %d" % _index)
    except BaseException as exc:
        _report(False, "error: %s in test %d: %s" % (type(exc).__name__, _index, str(exc)[:200]))
_report(True, "passed")
'''.replace("%(prefix)r", repr(RESULT_PREFIX))


# --------------------------------------------------------------------------- isolation


def _is_root() -> bool:
    return os.geteuid() == 0


@functools.lru_cache(maxsize=8)
def _interpreter_runs_as_nobody(python: str) -> bool:
    """Can uid `nobody` execute this interpreter (and read its standard library)?"""
    if not python or not os.path.exists(python):
        return False
    try:
        probe = subprocess.run(
            [python, "-I", "-S", "-c", "import marshal, posix"],
            preexec_fn=_drop_to_nobody,
            env={},
            cwd="/",
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


def _drop_to_nobody() -> None:
    os.setgroups([])
    os.setgid(NOBODY_GID)
    os.setuid(NOBODY_UID)


@functools.lru_cache(maxsize=8)
def resolve_python(requested: str | None, drop_privileges: bool) -> tuple[str, bool]:
    """(interpreter, drops_to_nobody) for this process. As root, prefer an interpreter
    that `nobody` can run, so the kernel's RLIMIT_NPROC and file permissions apply."""
    candidates = [requested] if requested else [
        sys.executable,
        getattr(sys, "_base_executable", None),
        shutil.which("python3"),
        "/usr/bin/python3",
    ]
    candidates = [c for c in candidates if c]
    if not (_is_root() and drop_privileges):
        return candidates[0], False
    for candidate in candidates:
        if _interpreter_runs_as_nobody(candidate):
            return candidate, True
    return candidates[0], False


def isolation_report(limits: SandboxLimits = SandboxLimits()) -> dict[str, object]:
    """Which containment layers are active here (for asset metadata and the bench)."""
    python, drops = resolve_python(limits.python, limits.drop_privileges)
    return {
        "python": python,
        "runs_as_root": _is_root(),
        "drops_to_nobody": drops,
        "network_namespace": bool(limits.isolate_network and _is_root()),
        "limits": {
            "timeout_s": limits.timeout_s,
            "cpu_s": limits.cpu_s,
            "memory_mb": limits.memory_mb,
            "file_size_mb": limits.file_size_mb,
            "open_files": limits.open_files,
            "processes": limits.processes,
        },
    }


def _child_setup(limits: SandboxLimits, drop: bool):
    """The preexec_fn: runs in the forked child before exec. Only async-signal-safe-ish
    calls (no imports, no locks): unshare, setrlimit, setuid."""
    memory = limits.memory_mb * 1024 * 1024
    file_size = limits.file_size_mb * 1024 * 1024

    def setup() -> None:
        if limits.isolate_network and _is_root():
            _LIBC.unshare(CLONE_NEWNET)  # best effort: failure leaves the prelude's guard
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if drop:
            _drop_to_nobody()
        # After the uid change: lowering NPROC first would make setuid flag the
        # process as over the limit and its execve fail with EAGAIN.
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))

    return setup


# --------------------------------------------------------------------------- running


def run_solution(solution: str, tests: Sequence[str], limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Execute `solution` then each test (each an `assert ...` statement or a few lines)
    in a fresh contained interpreter. Never raises for anything the code does."""
    python, drop = resolve_python(limits.python, limits.drop_privileges)
    nonce = secrets.token_hex(16)
    workdir = tempfile.mkdtemp(prefix="sandbox-")
    started = time.monotonic()
    try:
        with open(os.path.join(workdir, "job.bin"), "wb") as handle:
            marshal.dump((str(solution), [str(t) for t in tests]), handle)
        if drop:
            os.chown(workdir, NOBODY_UID, NOBODY_GID)
            os.chmod(workdir, 0o700)
        process = subprocess.Popen(
            [python, "-I", "-S", "-c", _HARNESS],
            cwd=workdir,
            env={},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group, killed as one
            preexec_fn=_child_setup(limits, drop),
            close_fds=True,
        )
        try:
            stdout, stderr = process.communicate(nonce.encode() + b"\n", timeout=limits.timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            stdout, stderr = process.communicate()
            return SandboxResult(False, "timeout", time.monotonic() - started, len(tests), _tail(stderr))
        finally:
            _kill_group(process)  # anything the code left behind in its group
        duration = time.monotonic() - started
        return _interpret(process.returncode, stdout, stderr, nonce, duration, len(tests))
    except OSError as exc:
        return SandboxResult(False, f"sandbox_error: {type(exc).__name__}: {exc}", time.monotonic() - started, len(tests))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run_many(
    jobs: Sequence[SandboxJob], limits: SandboxLimits = SandboxLimits(), max_workers: int | None = None
) -> list[SandboxResult]:
    """Run jobs concurrently (default: one per CPU core); results in input order."""
    if not jobs:
        return []
    workers = max_workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda job: run_solution(job.solution, job.tests, limits), jobs))


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(stream: bytes | None, limit: int = 500) -> str:
    return (stream or b"").decode("utf-8", "replace")[-limit:]


def _interpret(returncode: int, stdout: bytes, stderr: bytes, nonce: str, duration: float, n_tests: int) -> SandboxResult:
    marker = f"{RESULT_PREFIX} {nonce} "
    for line in reversed((stdout or b"").decode("utf-8", "replace").splitlines()):
        if line.startswith(marker):
            passed, reason = ast.literal_eval(line[len(marker):])
            return SandboxResult(bool(passed), str(reason), duration, n_tests, _tail(stderr))
    if returncode < 0:
        signum = -returncode
        reason = "cpu_limit" if signum == signal.SIGXCPU else f"killed: {signal.Signals(signum).name}"
    else:
        err = _tail(stderr)
        reason = "memory_error" if "MemoryError" in err else f"exited: code {returncode} without a verdict"
    return SandboxResult(False, reason, duration, n_tests, _tail(stderr))
