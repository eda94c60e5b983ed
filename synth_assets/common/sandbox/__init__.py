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

One module per piece, each importing only the ones above it:

- `jobs`             what a caller passes and gets back: `SandboxLimits`, `SandboxJob`,
                     `SandboxResult`, `SandboxUnavailable`;
- `user`             the uid the sandbox runs as (`nobody` when root);
- `interpreter`      finding a python the sandbox uid can run (`resolve_python`);
- `filesystem`       the read-only root both namespace backends build;
- `userns_launcher`  the program that builds the sandbox with `unshare(2)`;
- `backends`         bubblewrap, userns and the unisolated subprocess, as a `Sandbox`;
- `process`          starting one program in a sandbox, bounded output, killing it all;
- `harness`          the program that runs a job inside and reports its verdict;
- `probe`            the program that tries to escape, and what it found;
- `isolation`        picking the backend by probing, the report, the refusal;
- `runner`           `run_solution` and `run_many`, and reading the verdict.

Callers import from this package, not from the modules.
"""

from synth_assets.common.sandbox.backends import CLONE_NEWNET
from synth_assets.common.sandbox.filesystem import SANDBOX_DIR
from synth_assets.common.sandbox.harness import RESULT_PREFIX
from synth_assets.common.sandbox.interpreter import resolve_python
from synth_assets.common.sandbox.isolation import BACKENDS, isolation_report, refusal_message, require_isolation
from synth_assets.common.sandbox.jobs import SandboxJob, SandboxLimits, SandboxResult, SandboxUnavailable
from synth_assets.common.sandbox.probe import CONTAINMENT_CHECKS
from synth_assets.common.sandbox.process import CANARY_VARIABLE, OUTPUT_LIMIT
from synth_assets.common.sandbox.runner import run_many, run_solution
from synth_assets.common.sandbox.user import NOBODY_GID, NOBODY_UID
from synth_assets.common.sandbox.userns_launcher import SETUP_FAILED

__all__ = [
    "BACKENDS",
    "CANARY_VARIABLE",
    "CLONE_NEWNET",
    "CONTAINMENT_CHECKS",
    "NOBODY_GID",
    "NOBODY_UID",
    "OUTPUT_LIMIT",
    "RESULT_PREFIX",
    "SANDBOX_DIR",
    "SETUP_FAILED",
    "SandboxJob",
    "SandboxLimits",
    "SandboxResult",
    "SandboxUnavailable",
    "isolation_report",
    "refusal_message",
    "require_isolation",
    "resolve_python",
    "run_many",
    "run_solution",
]
