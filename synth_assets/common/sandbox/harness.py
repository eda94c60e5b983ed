"""The program that runs one job inside the sandbox and reports its verdict.

`HARNESS` is Python source run as `python -I -S -c HARNESS <limits>`. It reads a
nonce line and then the marshalled (solution, tests) from stdin, applies the resource
limits to itself (`APPLY_LIMITS`, shared with the probe: the limits are set by the
program, not the launcher, so bwrap, which forks, is not bound by RLIMIT_NPROC),
installs a prelude that disables process creation, sockets, ctypes and writes outside
the working directory, then runs the solution and each test in one namespace.

The prelude is bypassable by determined code: it gives readable failure reasons, the
kernel is the boundary. The verdict is one line, `RESULT_PREFIX <nonce> (passed,
reason)`, written to a channel the solution's prints cannot reach (its stdout goes to
/dev/null); `runner` rejects anything else on that channel as a forged verdict.
`limit_args` turns `SandboxLimits` into the argv the program expects.
"""

from __future__ import annotations

from synth_assets.common.sandbox.jobs import SandboxLimits


RESULT_PREFIX = "__SANDBOX_RESULT__"


# Shared head of the harness and the probe: argv[1:6] are the limits, applied by the
# program itself so that the launcher (bwrap, which forks) is not bound by RLIMIT_NPROC.
APPLY_LIMITS = r'''
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
HARNESS = APPLY_LIMITS + r'''
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


def limit_args(limits: SandboxLimits) -> list[str]:
    return [str(v) for v in (limits.cpu_s, limits.memory_mb, limits.file_size_mb, limits.open_files, limits.processes)]
