"""Running one program in a fresh sandbox and collecting what it did, whatever it does.

`execute` starts the program with the backend's command line (as the sandbox uid, in a
new session, with an empty environment), feeds it stdin, reads at most `OUTPUT_LIMIT`
bytes of output before a wall-clock deadline, and then kills the whole sandbox and waits
until every process in it is gone. It returns an `Outcome` (exit code, output, why it was
stopped, duration); turning that into a verdict is the caller's job (`runner` for the
harness, `probe` for the isolation probe).
"""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

from synth_assets.common.sandbox.backends import Sandbox, unisolated_setup
from synth_assets.common.sandbox.user import NOBODY_GID, NOBODY_UID, as_sandbox_user, is_root


CANARY_VARIABLE = "SYNTH_SANDBOX_CANARY"
OUTPUT_LIMIT = 1 << 20  # bytes a run may put on stdout + stderr before it is killed


@dataclass(frozen=True)
class Outcome:
    returncode: int | None
    stdout: bytes
    stderr: bytes
    stopped: str | None  # "timeout", "output_limit" or None
    duration_s: float


def execute(
    sandbox: Sandbox, program: str, args: Sequence[str], stdin: bytes, timeout_s: float, canary: str | None = None
) -> Outcome:
    """Start `program` in a fresh sandbox, feed stdin, collect bounded output, kill it all.
    With `canary` (the probe), the sandbox is started by a shell that holds it in its
    environment, the way the pipeline holds its API keys."""
    started = time.monotonic()
    scratch = None
    if sandbox.backend != "bubblewrap":
        scratch = tempfile.mkdtemp(prefix="sandbox-")  # userns: the new root's mount point; subprocess: the cwd
        if is_root():
            os.chown(scratch, NOBODY_UID, NOBODY_GID)
    command = sandbox.command(program, args, scratch)
    env: dict[str, str] = {}
    if canary:
        command = ["/bin/sh", "-c", 'env -i "$@"; exit $?', "sandbox-probe-parent", *command]
        env = {CANARY_VARIABLE: canary}
    # As root everything runs as nobody; the unisolated way also tries a network namespace first.
    options: dict = {"preexec_fn": unisolated_setup} if sandbox.backend == "subprocess" else as_sandbox_user()
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
        return Outcome(process.returncode, stdout, stderr, stopped, time.monotonic() - started)
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
