"""Measuring isolation: a probe that tries, inside a sandbox, what an attacker would.

`PROBE` runs with the same limits as the harness but without its prelude, and tries
each of `CONTAINMENT_CHECKS`: connect to a listener the host opens on 127.0.0.1, find a
canary variable held by its parent process, read files in $HOME, create files outside
the working directory, see or signal the host's process, fork, allocate past the memory
limit. It prints JSON {check: [contained, detail]}. The host then double-checks from
its own side (did a connection arrive, did a file appear) so a probe that was wrong
about itself cannot report containment.

`run_probe` returns {check: {"contained", "detail"}} and `missing_checks` lists what
was not contained; `isolation` uses them to pick a backend.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import tempfile

from synth_assets.common.sandbox.backends import Sandbox
from synth_assets.common.sandbox.harness import APPLY_LIMITS, limit_args
from synth_assets.common.sandbox.jobs import SandboxLimits
from synth_assets.common.sandbox.process import CANARY_VARIABLE, Outcome, execute


CONTAINMENT_CHECKS = ("network", "environment", "home", "writes_outside_workdir", "host_processes", "fork", "memory")


# Tries, with no prelude in the way, what a hostile solution would; prints JSON
# {check: [contained, detail]}. argv[6] is its JSON task from the host.
PROBE = APPLY_LIMITS + r'''
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


def run_probe(sandbox: Sandbox, limits: SandboxLimits) -> dict:
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
        args = [*limit_args(limits), json.dumps(task)]
        outcome = execute(sandbox, PROBE, args, b"", max(limits.timeout_s, 15.0), canary=token)
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


def _failure_text(outcome: Outcome) -> str:
    lines = [line for line in outcome.stderr.decode(errors="replace").splitlines() if line.strip()]
    why = lines[-1] if lines else f"exit code {outcome.returncode}"
    return f"{outcome.stopped}: {why}" if outcome.stopped else why


def missing_checks(findings: dict) -> list[str]:
    return [f"{name}: {findings[name]['detail']}" if name in findings else f"{name}: not measured"
            for name in CONTAINMENT_CHECKS if not findings.get(name, {}).get("contained")]
