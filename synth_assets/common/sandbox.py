"""Run untrusted generated Python (a solution plus its `assert` tests) in a contained
process and say whether it passed, and if not, why.

Every run gets a fresh sandbox made of kernel namespaces, the same whether the pipeline
runs as root or as an ordinary user:

- network: a new network namespace with nothing but its own loopback: nothing outside
  is reachable, not even the host's 127.0.0.1;
- filesystem: a new mount namespace whose root is an empty read-only tmpfs holding
  read-only binds of /usr (and the interpreter's own prefix when it lives elsewhere), a
  minimal read-only /dev, and one writable, size-limited tmpfs `/sandbox` as the working
  directory. No home, no /tmp, no host /proc, nothing written on the host;
- processes: new PID, IPC and UTS namespaces (the host's processes cannot be seen or
  signalled), RLIMIT_NPROC against fork bombs, RLIMIT_AS against memory hogs, plus
  RLIMIT_CPU, RLIMIT_FSIZE, RLIMIT_NOFILE and RLIMIT_CORE=0; a wall-clock timeout kills
  the whole sandbox;
- secrets: an empty environment (the launcher itself starts with none, so not even the
  sandbox's init process holds a parent variable such as OPENAI_API_KEY).

Two backends build it: Debian's `bubblewrap` (`bwrap`), and when that is missing, a
small launcher here that makes the same namespaces with `unshare(2)` (needs
unprivileged user namespaces, as bwrap does). As root the sandbox is started as uid
`nobody`, because root ignores RLIMIT_NPROC; that needs an interpreter `nobody` can run
(the venv's python often lives under /root), which is probed for.

Isolation is measured, not assumed: before the first run, `isolation_report` runs a
probe inside the sandbox that tries what an attacker would (connect to a listener the
host opens on 127.0.0.1, find a canary variable held by its parent process, read a file
in $HOME, write outside the working directory, see the host's processes, fork, allocate
past the memory limit). If no backend contains all of it, `run_solution` and
`run_many` raise `SandboxUnavailable` saying what is missing, unless
`allow_unisolated_execution` is set: then the old way is used (a plain subprocess, plus a
network namespace and the drop to `nobody` when root), and the report says what it
leaves open.

Inside, a prelude disables process creation, sockets, ctypes and writes outside the
working directory. It is bypassable by determined code; it gives readable failure
reasons, the kernel is the boundary. The verdict travels on a channel the solution's
prints cannot reach (its stdout goes to /dev/null) and carries a per-run nonce; a channel
holding anything but that one line is reported as `forged_verdict`. Code that inspects
the harness's own frames could still fake its verdict (as it could return an object
whose `__eq__` is always True): tests that run in the process under test can only be
as honest as that process, and the sandbox guarantees containment, not honesty.

`run_many` runs several jobs concurrently (one thread per job waiting on its sandbox;
default one per CPU core).
"""

from __future__ import annotations

import ast
import copy
import ctypes
import functools
import json
import marshal
import os
import secrets
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

CLONE_NEWNET = 0x40000000
NOBODY_UID = 65534
NOBODY_GID = 65534
RESULT_PREFIX = "__SANDBOX_RESULT__"
SANDBOX_DIR = "/sandbox"  # the working directory inside the sandbox (a tmpfs)
CANARY_VARIABLE = "SYNTH_SANDBOX_CANARY"
SETUP_FAILED = 125  # exit code of the userns launcher when it cannot build the sandbox
BACKENDS = ("bubblewrap", "userns")
OUTPUT_LIMIT = 1 << 20  # bytes a run may put on stdout + stderr before it is killed
CONTAINMENT_CHECKS = ("network", "environment", "home", "writes_outside_workdir", "host_processes", "fork", "memory")

_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded in the parent: a forked child only calls it


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
    python: str | None = None  # interpreter; None = probe (see module docstring)
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


# --------------------------------------------------------------------------- programs run inside

# Shared head of the harness and the probe: argv[1:6] are the limits, applied by the
# program itself so that the launcher (bwrap, which forks) is not bound by RLIMIT_NPROC.
_LIMITS = r'''
import os, resource, sys
def _apply_limits():
    cpu_s, memory_mb, file_size_mb, open_files, processes = map(int, sys.argv[1:6])
    for limit, value in ((resource.RLIMIT_CPU, (cpu_s, cpu_s + 1)),
                         (resource.RLIMIT_AS, (memory_mb << 20,) * 2),
                         (resource.RLIMIT_FSIZE, (file_size_mb << 20,) * 2),
                         (resource.RLIMIT_NOFILE, (open_files,) * 2),
                         (resource.RLIMIT_CORE, (0, 0)),
                         (resource.RLIMIT_NPROC, (processes,) * 2)):
        resource.setrlimit(limit, value)
'''

# Reads "<nonce>\n<marshalled (solution, tests)>" from stdin, then runs them. The nonce,
# the result channel and the real exit live in _main's frame only: `import __main__`
# from the solution gives its own namespace.
_HARNESS = _LIMITS + r'''
import builtins, io, _io, marshal, posix

def _install_prelude(workdir):
    def blocked(name):
        def refuse(*args, **kwargs):
            raise PermissionError("sandbox: %s is disabled" % name)
        return refuse

    for mod in (os, posix):
        for name in ("fork", "forkpty", "vfork", "system", "popen", "execv", "execve", "execvp", "execvpe",
                     "execl", "execle", "execlp", "execlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe",
                     "spawnl", "spawnle", "spawnlp", "spawnlpe", "posix_spawn", "posix_spawnp", "kill",
                     "killpg", "_exit", "abort", "setuid", "setgid", "chroot"):
            if hasattr(mod, name):
                setattr(mod, name, blocked("os." + name))

    def inside(path):
        try:
            resolved = os.path.realpath(os.fspath(path) if not isinstance(path, int) else ".")
        except Exception:
            return False
        return resolved == workdir or resolved.startswith(workdir + os.sep)

    real_open = _io.open
    def guarded_open(file, mode="r", *args, **kwargs):
        if isinstance(file, int) or any(flag in mode for flag in "wax+"):
            if not inside(file):
                raise PermissionError("sandbox: writing outside the working directory is disabled")
        return real_open(file, mode, *args, **kwargs)
    builtins.open = io.open = _io.open = guarded_open

    class GuardedFileIO(_io.FileIO):
        def __init__(self, file, mode="r", *args, **kwargs):
            if isinstance(file, int) or any(flag in mode for flag in "wax+"):
                if not inside(file):
                    raise PermissionError("sandbox: writing outside the working directory is disabled")
            super().__init__(file, mode, *args, **kwargs)
    io.FileIO = _io.FileIO = GuardedFileIO

    real_os_open = os.open
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    def guarded_os_open(path, flags, *args, **kwargs):
        if flags & write_flags and not inside(path):
            raise PermissionError("sandbox: writing outside the working directory is disabled")
        return real_os_open(path, flags, *args, **kwargs)
    os.open = posix.open = guarded_os_open

    def path_guard(name, real):
        def guarded(*paths, **kwargs):
            for path in paths[:2]:
                if isinstance(path, (str, bytes, os.PathLike)) and not inside(path):
                    raise PermissionError("sandbox: %s outside the working directory is disabled" % name)
            return real(*paths, **kwargs)
        return guarded

    for mod in (os, posix):
        for name in ("remove", "unlink", "rmdir", "rename", "replace", "mkdir", "makedirs", "chmod",
                     "chown", "symlink", "link", "truncate", "utime"):
            if hasattr(mod, name):
                setattr(mod, name, path_guard(name, getattr(mod, name)))

    # Stub modules instead of patched real ones: importing socket/subprocess costs more
    # than the rest of the run, and a stub refuses every attribute.
    def stub(module_name, what):
        module = type(sys)(module_name)
        def refuse(name):
            raise PermissionError("sandbox: %s is disabled (%s.%s)" % (what, module_name, name))
        module.__getattr__ = refuse
        return module
    sys.modules["socket"] = stub("socket", "network access")
    sys.modules["subprocess"] = stub("subprocess", "process creation")
    for name in ("ctypes", "_ctypes", "_posixsubprocess", "multiprocessing", "_multiprocessing", "pty"):
        sys.modules[name] = None

def _main():
    chunks = []
    while True:
        chunk = os.read(0, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(0)
    nonce, _, job = b"".join(chunks).partition(b"\n")
    nonce = nonce.decode()
    _apply_limits()
    channel = os.dup(1)
    devnull = os.open("/dev/null", os.O_WRONLY)
    os.dup2(devnull, 1)  # the solution's prints never reach the result channel
    os.close(devnull)
    real_write, real_exit = os.write, os._exit

    def report(passed, reason):
        real_write(channel, ("%s %s %r\n" % (%(prefix)r, nonce, (passed, reason))).encode())
        real_exit(0)

    solution, tests = marshal.loads(job)
    _install_prelude(os.path.realpath(os.getcwd()))
    module = type(sys)("__main__")
    sys.modules["__main__"] = module
    namespace = module.__dict__
    try:
        exec(compile(solution, "solution.py", "exec"), namespace)
    except SyntaxError as exc:
        report(False, "syntax_error: %s (line %s)" % (exc.msg, exc.lineno))
    except MemoryError:
        report(False, "memory_error: in solution")
    except BaseException as exc:
        report(False, "error: %s in solution: %s" % (type(exc).__name__, str(exc)[:200]))
    for index, test in enumerate(tests):
        try:
            exec(compile(test, "test_%d" % index, "exec"), namespace)
        except AssertionError:
            report(False, "assertion_failed: test %d" % index)
        except SyntaxError as exc:
            report(False, "syntax_error: test %d: %s" % (index, exc.msg))
        except MemoryError:
            report(False, "memory_error: test %d" % index)
        except RecursionError:
            report(False, "error: RecursionError in test %d" % index)
        except BaseException as exc:
            report(False, "error: %s in test %d: %s" % (type(exc).__name__, index, str(exc)[:200]))
    report(True, "passed")

_main()
'''.replace("%(prefix)r", repr(RESULT_PREFIX))

# Tries, with no prelude in the way, what a hostile solution would; prints JSON
# {check: [contained, detail]}. argv[6] is its JSON task from the host.
_PROBE = _LIMITS + r'''
import json, _socket
task = json.loads(sys.argv[6])
_apply_limits()
found = {}

try:
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    s.settimeout(2)
    s.connect(("127.0.0.1", task["port"]))
    found["network"] = [False, "connected to a listener on the host's 127.0.0.1"]
except OSError as exc:
    found["network"] = [True, "connect to the host's listener: %s" % exc]

leaks = ["own environment"] if task["canary"].split("=")[0] in os.environ else []
pids = [p for p in os.listdir("/proc") if p.isdigit()] if os.path.isdir("/proc") else []
for pid in pids:
    try:
        with open("/proc/%s/environ" % pid, "rb") as handle:
            if task["canary"].encode() in handle.read():
                leaks.append("/proc/%s/environ" % pid)
    except OSError:
        pass
found["environment"] = [not leaks, ("parent's canary variable readable via " + ", ".join(leaks)) if leaks
                        else "no parent variable visible (own environment: %s)" % sorted(os.environ)]

readable = []
for path in task["home_files"]:
    try:
        with open(path, "rb") as handle:
            handle.read(1)
        readable.append(path)
    except OSError:
        pass
found["home"] = [not readable, ("readable: " + ", ".join(readable)) if readable
                 else "%s: none of %d files readable" % (task["home"], len(task["home_files"]))]

written = []
for path in task["write_targets"]:
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        written.append(path)
    except OSError:
        pass
try:
    with open("probe-workdir-check", "w") as handle:
        handle.write("ok")
    workdir_ok = True
except OSError:
    workdir_ok = False
found["writes_outside_workdir"] = [not written, ("created " + ", ".join(written)) if written
                                   else "refused (working directory writable: %s)" % workdir_ok]

visible = []
try:
    os.kill(task["host_pid"], 0)
    visible.append("signal 0 reached the host's pid %d" % task["host_pid"])
except ProcessLookupError:
    pass
except PermissionError:
    visible.append("the host's pid %d exists (EPERM)" % task["host_pid"])
try:
    with open("/proc/%d/stat" % task["host_pid"]) as handle:
        if handle.read().rsplit(")", 1)[1].split()[19] == task["host_starttime"]:
            visible.append("/proc/%d is the host process" % task["host_pid"])
except (OSError, IndexError):
    pass
found["host_processes"] = [not visible, "; ".join(visible) if visible
                           else "host pid invisible; %d processes in /proc" % len(pids)]

try:
    child = os.fork()
except OSError as exc:
    found["fork"] = [True, "fork refused: %s" % exc]
else:
    if child == 0:
        os._exit(0)
    os.waitpid(child, 0)
    found["fork"] = [False, "fork succeeded (RLIMIT_NPROC not effective)"]

try:
    blob = bytearray((int(sys.argv[2]) + 64) << 20)
    found["memory"] = [False, "allocated %d MB past the limit" % 64]
    del blob
except MemoryError:
    found["memory"] = [True, "allocation past %s MB refused" % sys.argv[2]]

os.write(1, json.dumps(found).encode())
'''

# The userns backend's launcher: what bwrap does, in Python. Runs as the sandbox uid;
# argv: [workdir_mb, newroot mount point, python, n_binds, *binds, n_links, *(link, target)] + command.
_USERNS_LAUNCHER = r'''
import ctypes, os, sys
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x20000, 0x4000000, 0x8000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
libc = ctypes.CDLL(None, use_errno=True)

def fail(what, err=None):
    err = ctypes.get_errno() if err is None else err
    os.write(2, ("sandbox-setup: %s failed: %s\n" % (what, os.strerror(err))).encode())
    os._exit(%(setup_failed)d)

def mount(source, target, fstype, flags, data=None):
    enc = lambda s: s.encode() if s is not None else None
    if libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
        fail("mount %s" % target)

def locked_flags(path):
    # A remount inside a user namespace must keep the flags the host set.
    f = os.statvfs(path).f_flag
    return ((MS_NOEXEC if f & os.ST_NOEXEC else 0) | (MS_NOATIME if f & os.ST_NOATIME else 0)
            | (MS_NODIRATIME if f & os.ST_NODIRATIME else 0) | (MS_RELATIME if f & os.ST_RELATIME else 0))

def reap(child):
    _, status = os.waitpid(child, 0)
    os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))

args = sys.argv[1:]
workdir_mb, newroot, python = int(args[0]), args[1], args[2]
n_binds = int(args[3]); binds = args[4:4 + n_binds]; rest = args[4 + n_binds:]
n_links = int(rest[0]); links = rest[1:1 + 2 * n_links]; command = rest[1 + 2 * n_links:]
uid, gid = os.getuid(), os.getgid()
if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS) != 0:
    fail("unshare(user, mount, pid, net, ipc, uts)")
try:
    for path, text in (("setgroups", "deny"), ("uid_map", "%d %d 1" % (uid, uid)), ("gid_map", "%d %d 1" % (gid, gid))):
        with open("/proc/self/" + path, "w") as handle:
            handle.write(text)
except OSError as exc:
    fail("writing /proc/self/" + path, exc.errno)
init = os.fork()  # pid 1 of the new PID namespace; when it dies, everything in it dies
if init:
    reap(init)
libc.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
mount(None, "/", None, MS_REC | MS_PRIVATE)
mount("tmpfs", newroot, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
for path in binds:
    target = newroot + path
    if os.path.isdir(path):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    mount(path, target, None, MS_BIND | MS_REC)
    mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | locked_flags(path))
for link, target in zip(links[::2], links[1::2]):
    os.symlink(target, newroot + link)
os.mkdir(newroot + "/dev")
for name in ("null", "zero", "full", "random", "urandom"):
    open(newroot + "/dev/" + name, "w").close()
    mount("/dev/" + name, newroot + "/dev/" + name, None, MS_BIND)
os.mkdir(newroot + %(workdir)r)
mount("tmpfs", newroot + %(workdir)r, "tmpfs", MS_NOSUID | MS_NODEV, "size=%dm,mode=0700" % workdir_mb)
mount(None, newroot, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
os.chroot(newroot)
os.chdir(%(workdir)r)
harness = os.fork()
if harness == 0:
    libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS; exec as a non-zero uid drops every capability
    os.execve(command[0], command, {})
reap(harness)
'''.replace("%(setup_failed)d", str(SETUP_FAILED)).replace("%(workdir)r", repr(SANDBOX_DIR))


# --------------------------------------------------------------------------- backends


def _is_root() -> bool:
    return os.geteuid() == 0


def _sandbox_ids() -> tuple[int, int]:
    """(uid, gid) the sandbox runs as: nobody when root (root ignores RLIMIT_NPROC)."""
    return (NOBODY_UID, NOBODY_GID) if _is_root() else (os.getuid(), os.getgid())


def _as_sandbox_user() -> dict:
    """Popen arguments that start the child as the sandbox uid (no preexec_fn needed)."""
    return {"user": NOBODY_UID, "group": NOBODY_GID, "extra_groups": []} if _is_root() else {}


@functools.lru_cache(maxsize=8)
def _interpreter_layout(python: str) -> tuple[str, tuple[str, ...]] | None:
    """(real path, install prefixes) of an interpreter the sandbox uid can run, else None."""
    if not python or not os.path.exists(python):
        return None
    code = "import os, sys; print(os.path.realpath(sys.executable)); print(sys.base_prefix); print(sys.base_exec_prefix)"
    try:
        done = subprocess.run([python, "-I", "-S", "-c", code], env={}, cwd="/", capture_output=True, timeout=20,
                              **_as_sandbox_user())
    except (OSError, subprocess.SubprocessError):
        return None
    lines = done.stdout.decode(errors="replace").split("\n")
    if done.returncode != 0 or len(lines) < 3:
        return None
    return lines[0], tuple(dict.fromkeys(lines[1:3]))


def _python_candidates(requested: str | None) -> list[str]:
    if requested:
        return [requested]
    found = [sys.executable, getattr(sys, "_base_executable", None), "/usr/bin/python3", shutil.which("python3")]
    return list(dict.fromkeys(c for c in found if c))


def resolve_python(requested: str | None = None) -> tuple[str, tuple[str, ...]] | None:
    """The interpreter the sandbox uid can run, as (real path, prefixes); an interpreter
    whose prefix holds $HOME comes last, since binding that prefix would show the home."""
    home = os.path.realpath(os.path.expanduser("~")).rstrip("/") + "/"
    layouts = [layout for layout in map(_interpreter_layout, _python_candidates(requested)) if layout]
    layouts.sort(key=lambda layout: any(home.startswith(p.rstrip("/") + "/") for p in layout[1]))
    return layouts[0] if layouts else None


def _filesystem(python: str, prefixes: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
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


@dataclass(frozen=True)
class _Sandbox:
    """How to start one contained process: a backend and its interpreter."""

    backend: str  # "bubblewrap", "userns" or "subprocess" (unisolated)
    python: str
    launcher: tuple[str, ...] = ()  # bwrap's argv before the interpreter; userns: the launcher's spec

    def command(self, program: str, args: Sequence[str], scratch: str | None) -> list[str]:
        inner = [self.python, "-I", "-S", "-c", program, *args]
        if self.backend == "userns":  # spec = (workdir_mb, n_binds, *binds, n_links, *links)
            return [self.python, "-I", "-S", "-c", _USERNS_LAUNCHER, self.launcher[0], scratch or "", self.python,
                    *self.launcher[1:], *inner]
        return [*self.launcher, *inner]


def _unisolated_setup() -> None:
    """The old way, only with allow_unisolated_execution: as root, a private network
    namespace when permitted (best effort; the probe reports the outcome) and nobody."""
    if _is_root():
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


def _bubblewrap(limits: SandboxLimits, python: str, prefixes: Sequence[str]) -> _Sandbox | str:
    bwrap = shutil.which(limits.bwrap)
    if not bwrap:
        return f"not installed (no {limits.bwrap!r} on PATH; Debian: apt-get install bubblewrap)"
    binds, links = _filesystem(python, prefixes)
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
    return _Sandbox("bubblewrap", python, tuple(argv))


def _userns(limits: SandboxLimits, python: str, prefixes: Sequence[str]) -> _Sandbox:
    binds, links = _filesystem(python, prefixes)
    spec = [str(limits.workdir_mb), str(len(binds)), *binds, str(len(links)), *(p for pair in links for p in pair)]
    return _Sandbox("userns", python, tuple(spec))


# --------------------------------------------------------------------------- running one process


@dataclass(frozen=True)
class _Outcome:
    returncode: int | None
    stdout: bytes
    stderr: bytes
    stopped: str | None  # "timeout", "output_limit" or None
    duration_s: float


def _execute(
    sandbox: _Sandbox, program: str, args: Sequence[str], stdin: bytes, timeout_s: float, canary: str | None = None
) -> _Outcome:
    """Start `program` in a fresh sandbox, feed stdin, collect bounded output, kill it all.
    With `canary` (the probe), the sandbox is started by a shell that holds it in its
    environment, the way the pipeline holds its API keys."""
    started = time.monotonic()
    scratch = None
    if sandbox.backend != "bubblewrap":
        scratch = tempfile.mkdtemp(prefix="sandbox-")  # userns: the new root's mount point; subprocess: the cwd
        if _is_root():
            os.chown(scratch, NOBODY_UID, NOBODY_GID)
    command = sandbox.command(program, args, scratch)
    env: dict[str, str] = {}
    if canary:
        command = ["/bin/sh", "-c", 'env -i "$@"; exit $?', "sandbox-probe-parent", *command]
        env = {CANARY_VARIABLE: canary}
    # As root everything runs as nobody; the unisolated way also tries a network namespace first.
    options: dict = {"preexec_fn": _unisolated_setup} if sandbox.backend == "subprocess" else _as_sandbox_user()
    try:
        process = subprocess.Popen(
            command, cwd=scratch if sandbox.backend == "subprocess" else "/", env=env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, close_fds=True, **options,
        )
        try:
            stdout, stderr, stopped = _exchange(process, stdin, started + timeout_s)
        finally:
            _stop(process, namespaced=sandbox.backend != "subprocess")
            for stream in (process.stdin, process.stdout, process.stderr):
                stream.close()
        return _Outcome(process.returncode, stdout, stderr, stopped, time.monotonic() - started)
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def _exchange(process: subprocess.Popen, stdin: bytes, deadline: float) -> tuple[bytes, bytes, str | None]:
    """communicate() with a deadline and a cap: untrusted output cannot fill the host's memory."""
    stdout, stderr, pending = bytearray(), bytearray(), memoryview(stdin)
    with selectors.DefaultSelector() as selector:
        os.set_blocking(process.stdin.fileno(), False)
        selector.register(process.stdin, selectors.EVENT_WRITE)
        selector.register(process.stdout, selectors.EVENT_READ, stdout)
        selector.register(process.stderr, selectors.EVENT_READ, stderr)
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return bytes(stdout), bytes(stderr), "timeout"
            for key, _ in selector.select(remaining):
                if key.fileobj is process.stdin:
                    try:
                        pending = pending[os.write(key.fd, pending[: 1 << 16]):]
                    except BrokenPipeError:
                        pending = pending[:0]
                    if not pending:
                        selector.unregister(process.stdin)
                        process.stdin.close()
                    continue
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                key.data.extend(chunk)
                if len(stdout) + len(stderr) > OUTPUT_LIMIT:
                    return bytes(stdout), bytes(stderr), "output_limit"
    try:
        process.wait(max(deadline - time.monotonic(), 0.001))
    except subprocess.TimeoutExpired:
        return bytes(stdout), bytes(stderr), "timeout"
    return bytes(stdout), bytes(stderr), None


def _stop(process: subprocess.Popen, namespaced: bool) -> None:
    """Kill whatever is left of a run and return only once all of it is gone. In a
    namespace sandbox, killing its init (the launcher's child) makes the kernel kill the
    whole PID namespace, and the launcher, which reaps init, exits only after that."""
    if namespaced and process.poll() is None:
        inits = _children(process.pid)
        for pid in inits:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if inits:
            try:
                process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
    _kill_group(process)  # the launcher, and anything the code left behind in its group
    process.wait()


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(child) for child in handle.read().split()]
    except (OSError, ValueError):
        return []


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _limit_args(limits: SandboxLimits) -> list[str]:
    return [str(v) for v in (limits.cpu_s, limits.memory_mb, limits.file_size_mb, limits.open_files, limits.processes)]


# --------------------------------------------------------------------------- measuring isolation


def _host_starttime() -> str:
    try:
        with open(f"/proc/{os.getpid()}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _home_samples(home: str, limit: int = 3) -> list[str]:
    """A few regular files at the top of $HOME (names only; the probe tries to read them)."""
    try:
        entries = sorted(os.scandir(home), key=lambda e: e.name)
    except OSError:
        return []
    files = [e.path for e in entries if e.is_file(follow_symlinks=False)]
    return files[:limit]


def _probe(sandbox: _Sandbox, limits: SandboxLimits) -> dict:
    """Run the probe in `sandbox`: {check: {"contained": bool, "detail": str}}, or
    {"error": why} when it did not even start."""
    token = secrets.token_hex(8)
    home = os.path.expanduser("~")
    targets = [os.path.join(tempfile.gettempdir(), f"sandbox-probe-{token}"), os.path.join(home, f".sandbox-probe-{token}")]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    task = {
        "port": listener.getsockname()[1], "canary": f"{CANARY_VARIABLE}={token}", "home": home,
        "home_files": _home_samples(home), "write_targets": targets, "host_pid": os.getpid(),
        "host_starttime": _host_starttime(),
    }
    try:
        args = [*_limit_args(limits), json.dumps(task)]
        outcome = _execute(sandbox, _PROBE, args, b"", max(limits.timeout_s, 15.0), canary=token)
        try:
            findings = json.loads(outcome.stdout.decode())
        except (UnicodeDecodeError, json.JSONDecodeError):
            return {"error": _failure_text(outcome)}
        try:  # the host's own view, in case the probe's was wrong
            listener.accept()[0].close()
            findings["network"] = [False, "a connection reached the host's listener on 127.0.0.1"]
        except BlockingIOError:
            pass
        for target in targets:
            if os.path.lexists(target):
                findings["writes_outside_workdir"] = [False, f"created {target} on the host"]
                os.unlink(target)
        return {name: {"contained": bool(value[0]), "detail": str(value[1])} for name, value in findings.items()}
    finally:
        listener.close()


def _failure_text(outcome: _Outcome) -> str:
    lines = [line for line in outcome.stderr.decode(errors="replace").splitlines() if line.strip()]
    why = lines[-1] if lines else f"exit code {outcome.returncode}"
    return f"{outcome.stopped}: {why}" if outcome.stopped else why


@dataclass(frozen=True)
class _Selection:
    sandbox: _Sandbox | None  # None: refuse to run
    report: dict


_SELECTION_LOCK = threading.Lock()


@functools.lru_cache(maxsize=16)
def _select_cached(limits: SandboxLimits, euid: int, path: str) -> _Selection:
    """Try the backends in order; the first whose probe shows every check contained runs
    the code. Otherwise the unisolated way is probed too, so the report can say what it
    would leave open, and it is used only with allow_unisolated_execution."""
    if limits.backend not in ("auto", *BACKENDS):
        raise ValueError(f"unknown sandbox backend {limits.backend!r}: 'auto', " + ", ".join(map(repr, BACKENDS)))
    started = time.monotonic()
    layout = resolve_python(limits.python)
    uid, _ = _sandbox_ids()
    attempts: dict[str, str] = {}

    def report(backend: str | None, findings: dict, missing: list[str]) -> dict:
        checks = {k: v for k, v in findings.items() if k != "error"}
        return {
            "isolated": not missing and backend in BACKENDS, "backend": backend, "executes_untrusted_code": backend is not None,
            "contained": {k: v["contained"] for k, v in checks.items()}, "missing": missing,
            "details": {k: v["detail"] for k, v in checks.items()}, "attempts": attempts,
            "runs_as_root": _is_root(), "sandbox_uid": uid, "python": layout[0] if layout else None,
            "limits": {k: getattr(limits, k) for k in ("timeout_s", "cpu_s", "memory_mb", "file_size_mb", "open_files",
                                                       "processes", "workdir_mb")},
            "probe_s": round(time.monotonic() - started, 3),
        }

    for name in BACKENDS if limits.backend == "auto" else (limits.backend,):
        if layout is None:
            attempts[name] = f"no interpreter that uid {uid} can run among {_python_candidates(limits.python)}"
            continue
        made = _bubblewrap(limits, *layout) if name == "bubblewrap" else _userns(limits, *layout)
        if isinstance(made, str):
            attempts[name] = made
            continue
        findings = _probe(made, limits)
        if "error" in findings:
            attempts[name] = f"failed: {findings['error']}"
            continue
        missing = _missing(findings)
        attempts[name] = "incomplete: " + "; ".join(missing) if missing else "isolated"
        if not missing:
            return _Selection(made, report(name, findings, []))
    unisolated = _Sandbox("subprocess", layout[0] if layout else sys.executable)
    findings = _probe(unisolated, limits)
    missing = _missing(findings) if "error" not in findings else [f"probe failed: {findings['error']}"]
    allowed = limits.allow_unisolated_execution
    return _Selection(unisolated if allowed else None, report("subprocess" if allowed else None, findings, missing))


def _missing(findings: dict) -> list[str]:
    return [f"{name}: {findings[name]['detail']}" if name in findings else f"{name}: not measured"
            for name in CONTAINMENT_CHECKS if not findings.get(name, {}).get("contained")]


def _select(limits: SandboxLimits) -> _Selection:
    with _SELECTION_LOCK:  # one probe per setting, not one per worker thread
        return _select_cached(limits, os.geteuid(), os.environ.get("PATH", ""))


def isolation_report(limits: SandboxLimits = SandboxLimits()) -> dict[str, object]:
    """The isolation measured here (probed once per process and setting): `isolated`,
    the `backend` that runs code (None = refuses), `contained` per check, `missing`
    (what the code could reach), `attempts` per backend, the interpreter and limits."""
    return copy.deepcopy(_select(limits).report)


def refusal_message(report: dict) -> str:
    attempts = "; ".join(f"{name}: {text}" for name, text in report["attempts"].items()) or "none tried"
    return (
        "refusing to execute untrusted generated code: no isolating sandbox is available "
        f"({attempts}). Without one the code could reach: {'; '.join(report['missing'])}. "
        "Install bubblewrap (Debian: apt-get install bubblewrap) or enable unprivileged user namespaces "
        "(sysctl user.max_user_namespaces / kernel.unprivileged_userns_clone), or set "
        "allow_unisolated_execution=True to accept the risk."
    )


def require_isolation(limits: SandboxLimits = SandboxLimits()) -> dict[str, object]:
    """The isolation report, or SandboxUnavailable when untrusted code must not run here."""
    selection = _select(limits)
    if selection.sandbox is None:
        raise SandboxUnavailable(refusal_message(selection.report))
    return copy.deepcopy(selection.report)


# --------------------------------------------------------------------------- running jobs


def run_solution(solution: str, tests: Sequence[str], limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Execute `solution` then each test (each an `assert ...` statement or a few lines)
    in a fresh sandbox. Never raises for anything the code does; raises
    SandboxUnavailable when this machine cannot isolate it (see `require_isolation`)."""
    sandbox = _select(limits).sandbox
    if sandbox is None:
        raise SandboxUnavailable(refusal_message(_select(limits).report))
    return _run(sandbox, solution, tests, limits)


def _run(sandbox: _Sandbox, solution: str, tests: Sequence[str], limits: SandboxLimits) -> SandboxResult:
    nonce = secrets.token_hex(16)
    payload = nonce.encode() + b"\n" + marshal.dumps((str(solution), [str(t) for t in tests]))
    try:
        outcome = _execute(sandbox, _HARNESS, _limit_args(limits), payload, limits.timeout_s)
    except OSError as exc:
        return SandboxResult(False, f"sandbox_error: {type(exc).__name__}: {exc}", 0.0, len(tests))
    return _interpret(outcome, nonce, len(tests), signals_as_exit_codes=sandbox.backend != "subprocess")


def run_many(
    jobs: Sequence[SandboxJob], limits: SandboxLimits = SandboxLimits(), max_workers: int | None = None
) -> list[SandboxResult]:
    """Run jobs concurrently (default: one per CPU core); results in input order."""
    if not jobs:
        return []
    sandbox = _select(limits).sandbox
    if sandbox is None:
        raise SandboxUnavailable(refusal_message(_select(limits).report))
    workers = max_workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda job: _run(sandbox, job.solution, job.tests, limits), jobs))


def _tail(stream: bytes | None, limit: int = 500) -> str:
    return (stream or b"").decode("utf-8", "replace")[-limit:]


def _interpret(outcome: _Outcome, nonce: str, n_tests: int, signals_as_exit_codes: bool) -> SandboxResult:
    def result(passed: bool, reason: str) -> SandboxResult:
        return SandboxResult(passed, reason, outcome.duration_s, n_tests, _tail(outcome.stderr))

    if outcome.stopped == "timeout":
        return result(False, "timeout")
    if outcome.stopped == "output_limit":
        return result(False, f"output_limit: more than {OUTPUT_LIMIT} bytes of output")
    lines = [line for line in outcome.stdout.decode("utf-8", "replace").splitlines() if line.strip()]
    marker = f"{RESULT_PREFIX} {nonce} "
    if len(lines) == 1 and lines[0].startswith(marker):
        try:
            passed, reason = ast.literal_eval(lines[0][len(marker):])
            return result(bool(passed), str(reason))
        except (ValueError, SyntaxError, TypeError):
            pass
    if lines:  # only the harness writes here, once: anything else is the code's doing
        return result(False, f"forged_verdict: {len(lines)} line(s) on the result channel")
    code = outcome.returncode or 0
    signum = -code if code < 0 else (code - 128 if signals_as_exit_codes and 128 < code < 128 + 65 else 0)
    if signum:
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = str(signum)
        return result(False, "cpu_limit" if signum == signal.SIGXCPU else f"killed: {name}")
    err = _tail(outcome.stderr)
    if err.startswith("bwrap:") or "sandbox-setup:" in err:
        return result(False, f"sandbox_error: {err.strip().splitlines()[-1]}")
    if "MemoryError" in err:
        return result(False, "memory_error")
    return result(False, f"exited: code {code} without a verdict")
