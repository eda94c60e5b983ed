"""The sandbox contains planted malicious solutions, records each as a failure with a
reason, and leaves the test process (and the filesystem, and the network) unharmed.

The attack list runs in a separate driver process whose environment holds canary
secrets, once as root and once as an unprivileged user (a throwaway user made here when
the tests run as root), for each sandbox backend. Every attack is first run without a
sandbox to show that it works there, so a contained attack is a real containment."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from resources.compute import Compute
from tests.openai_double import TEST_KEY_REF

import pytest

from synth_assets.common import sandbox
from synth_assets.common.sandbox import (
    RESULT_PREFIX,
    SandboxJob,
    SandboxLimits,
    SandboxUnavailable,
    isolation_report,
    require_isolation,
    run_many,
    run_solution,
)

PROJECT = Path(__file__).resolve().parents[1]
GOOD = "def add(a, b):\n    return a + b\n"
FAST = SandboxLimits(timeout_s=3.0, cpu_s=3)
NO_BWRAP = SandboxLimits(timeout_s=3.0, cpu_s=3, backend="bubblewrap", bwrap="/nonexistent/bwrap")
REPORT = isolation_report(FAST)
needs_isolation = pytest.mark.skipif(
    not REPORT["isolated"], reason=f"no isolating sandbox here, refusal tested instead: {REPORT['attempts']}"
)


def leftover_sandbox_processes(ignore: set[int] | frozenset[int] = frozenset(), settle_s: float = 3.0) -> list[int]:
    """Sandbox processes still alive, other than `ignore` (those that existed before the
    test: other test runs on a shared machine run sandboxes too). A process of another run
    that started meanwhile ends within `settle_s`; a leaked one of ours does not."""
    deadline = time.monotonic() + settle_s
    while True:
        alive = [pid for pid in _sandbox_processes() if pid not in ignore]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def _sandbox_processes() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if RESULT_PREFIX.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.fixture
def listener():
    """A TCP server on 127.0.0.1 in the test process, counting connections."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.settimeout(0.2)
    accepted: list[object] = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                accepted.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join(2)
    server.close()


# --------------------------------------------------------------------------- verdicts and limits


@needs_isolation
def test_a_correct_solution_passes_and_a_wrong_one_fails_with_the_test_index():
    passed = run_solution(GOOD, ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"], FAST)
    assert passed.passed and passed.reason == "passed" and passed.n_tests == 2
    failed = run_solution(GOOD, ["assert add(1, 2) == 3", "assert add(2, 2) == 5"], FAST)
    assert not failed.passed and failed.reason == "assertion_failed: test 1"
    crashed = run_solution("def f(x):\n    return 1 / x\n", ["assert f(0) == 1"], FAST)
    assert not crashed.passed and crashed.reason.startswith("error: ZeroDivisionError in test 0")
    broken = run_solution("def f(:\n    pass\n", [], FAST)
    assert broken.reason.startswith("syntax_error")


@needs_isolation
def test_printing_a_fake_verdict_does_not_pass():
    fake = f'print("{RESULT_PREFIX} 0000 {{\\"passed\\": true, \\"reason\\": \\"passed\\"}}")\nraise SystemExit(0)\n'
    result = run_solution(fake, [], FAST)
    assert not result.passed and "SystemExit" in result.reason


@needs_isolation
def test_infinite_loop_is_killed_on_the_wall_clock_timeout():
    before = set(_sandbox_processes())
    started = time.monotonic()
    result = run_solution("while True:\n    pass\n", [], SandboxLimits(timeout_s=1.0, cpu_s=30))
    assert not result.passed and result.reason == "timeout"
    assert time.monotonic() - started < 5
    assert leftover_sandbox_processes(ignore=before) == []


@needs_isolation
def test_cpu_limit_stops_a_busy_loop_before_the_wall_clock():
    result = run_solution("while True:\n    pass\n", [], SandboxLimits(timeout_s=20.0, cpu_s=1))
    assert not result.passed and result.reason == "cpu_limit"
    assert result.duration_s < 10


@needs_isolation
@pytest.mark.parametrize(
    "bomb",
    [
        "import os\nwhile True:\n    os.fork()\n",
        "import posix\nwhile True:\n    posix.fork()\n",
        "import subprocess\nsubprocess.Popen(['sh', '-c', ':(){ :|:& };:'])\n",
        "import multiprocessing\n",
        "import ctypes\nctypes.CDLL(None).fork()\n",
    ],
)
def test_fork_bombs_are_contained(bomb):
    result = run_solution(bomb, [], FAST)
    assert not result.passed
    assert result.reason.startswith("error: ")
    assert "disabled" in result.reason or "ModuleNotFoundError" in result.reason
    assert leftover_sandbox_processes() == []
    assert os.getpid() > 0 and run_solution(GOOD, ["assert add(2, 2) == 4"], FAST).passed


@needs_isolation
def test_kernel_process_limit_stops_a_fork_bomb_that_bypasses_the_prelude():
    """Below the prelude: ctypes re-imported behind its back, then fork in a loop."""
    result = run_solution(ATTACKS["fork_bomb_via_reimported_ctypes"].solution, [], FAST)
    assert not result.passed and "children forked: 0" in result.reason, result
    assert leftover_sandbox_processes() == []


@needs_isolation
def test_huge_allocation_is_a_memory_error():
    result = run_solution("blob = bytearray(8 * 1024 ** 3)\n", [], SandboxLimits(timeout_s=5.0, memory_mb=256))
    assert not result.passed and result.reason.startswith("memory_error")


@needs_isolation
def test_file_writes_outside_the_working_directory_never_appear(tmp_path):
    targets = [tmp_path / "escaped.txt", Path("/tmp") / f"sandbox-escape-{uuid.uuid4().hex}.txt"]
    for target in targets:
        for code in (
            f"open({str(target)!r}, 'w').write('owned')\n",
            f"import os\nfd = os.open({str(target)!r}, os.O_WRONLY | os.O_CREAT)\nos.write(fd, b'owned')\n",
            f"import pathlib\npathlib.Path({str(target)!r}).write_text('owned')\n",
            f"import io\nio.FileIO({str(target)!r}, 'w').write(b'owned')\n",
        ):
            result = run_solution(code, [], FAST)
            assert not result.passed and "PermissionError" in result.reason, (code, result)
            assert not target.exists()
    # Writing inside its own working directory is allowed, and nothing of it stays on the host.
    inside = run_solution("open('notes.txt', 'w').write('ok')\nassert open('notes.txt').read() == 'ok'\n", [], FAST)
    assert inside.passed


@needs_isolation
def test_removing_files_outside_is_refused(tmp_path):
    victim = tmp_path / "keep.txt"
    victim.write_text("precious")
    result = run_solution(f"import os\nos.remove({str(victim)!r})\n", [], FAST)
    assert not result.passed and "PermissionError" in result.reason
    assert victim.read_text() == "precious"


@needs_isolation
def test_large_file_in_the_workdir_hits_the_size_limit():
    result = run_solution("open('big.bin', 'wb').write(b'x' * (8 * 1024 * 1024))\n", [], SandboxLimits(timeout_s=5.0, file_size_mb=1))
    assert not result.passed
    assert "OSError" in result.reason or "File too large" in result.reason or result.reason.startswith("killed")


@needs_isolation
def test_many_files_in_the_workdir_hit_the_tmpfs_size():
    code = "for i in range(64):\n    open('f%d' % i, 'wb').write(b'x' * ((1 << 20) - 1))\n"
    result = run_solution(code, [], SandboxLimits(timeout_s=5.0, workdir_mb=4))
    assert not result.passed and "No space left on device" in result.reason, result


@needs_isolation
def test_network_attempt_fails_and_reaches_nothing(listener):
    port, accepted = listener
    result = run_solution(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n", [], FAST)
    assert not result.passed and "disabled" in result.reason
    time.sleep(0.3)
    assert accepted == []


@needs_isolation
def test_raw_socket_bypassing_the_prelude_is_stopped_by_the_network_namespace(listener):
    port, accepted = listener
    code = f"import _socket\ns = _socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', {port}))\n"
    result = run_solution(code, [], FAST)
    assert not result.passed and "Error" in result.reason
    time.sleep(0.3)
    assert accepted == []
    assert isolation_report(FAST)["contained"]["network"] is True


@needs_isolation
def test_environment_holds_nothing_from_the_parent(monkeypatch):
    monkeypatch.setenv("SANDBOX_TEST_SECRET", "sk-should-not-leak")
    code = "import os\nassert 'SANDBOX_TEST_SECRET' not in os.environ and set(os.environ) <= {'PWD', 'LC_CTYPE'}\n"
    result = run_solution(code, [], FAST)
    assert result.passed, result


@needs_isolation
def test_output_flood_is_cut_off_without_filling_the_host():
    code = "import os\nwhile True:\n    os.write(2, b'x' * 65536)\n"
    result = run_solution(code, [], SandboxLimits(timeout_s=5.0, cpu_s=10))
    assert not result.passed and result.reason.startswith("output_limit"), result
    assert leftover_sandbox_processes() == []


@needs_isolation
def test_run_many_runs_concurrently_and_keeps_order():
    jobs = [SandboxJob(GOOD, [f"assert add({i}, 1) == {i + 1}"]) for i in range(6)]
    jobs.insert(2, SandboxJob("while True:\n    pass\n", []))
    jobs.insert(4, SandboxJob("import os\nos.fork()\n", []))
    started = time.monotonic()
    results = run_many(jobs, SandboxLimits(timeout_s=2.0, cpu_s=5), max_workers=2)
    elapsed = time.monotonic() - started
    assert [r.reason for r in results][2] == "timeout"
    assert results[4].reason.startswith("error: PermissionError")
    assert all(r.passed for i, r in enumerate(results) if i not in (2, 4))
    assert elapsed < 2.0 + 3.0  # the loop ran beside the others, not before all of them
    assert leftover_sandbox_processes() == []


# --------------------------------------------------------------------------- measured isolation and refusal


@needs_isolation
def test_isolation_is_measured_and_complete_here():
    assert REPORT["isolated"] is True and REPORT["backend"] in sandbox.BACKENDS
    assert REPORT["contained"] == {check: True for check in sandbox.CONTAINMENT_CHECKS}
    assert REPORT["missing"] == [] and REPORT["attempts"][REPORT["backend"]] == "isolated"
    assert REPORT["sandbox_uid"] != 0


def test_without_bubblewrap_untrusted_code_is_refused_and_says_why():
    report = isolation_report(NO_BWRAP)
    assert report["isolated"] is False and report["backend"] is None and not report["executes_untrusted_code"]
    assert report["attempts"]["bubblewrap"].startswith("not installed")
    # The unisolated way is measured, not assumed: the host's processes and /tmp are in reach.
    assert any(m.startswith("host_processes") for m in report["missing"])
    assert any(m.startswith("writes_outside_workdir") for m in report["missing"])
    with pytest.raises(SandboxUnavailable, match="bubblewrap: not installed") as refused:
        require_isolation(NO_BWRAP)
    assert "allow_unisolated_execution" in str(refused.value) and "host_processes" in str(refused.value)
    with pytest.raises(SandboxUnavailable):
        run_solution(GOOD, ["assert add(1, 2) == 3"], NO_BWRAP)
    with pytest.raises(SandboxUnavailable):
        run_many([SandboxJob(GOOD, ["assert add(1, 2) == 3"])], NO_BWRAP)


def test_the_explicit_override_runs_unisolated_and_reports_it():
    allowed = dataclasses.replace(NO_BWRAP, allow_unisolated_execution=True)
    report = require_isolation(allowed)
    assert report["isolated"] is False and report["backend"] == "subprocess" and report["executes_untrusted_code"]
    assert report["missing"]
    assert run_solution(GOOD, ["assert add(1, 2) == 3"], allowed).passed
    assert run_solution(GOOD, ["assert add(1, 2) == 4"], allowed).reason == "assertion_failed: test 0"


def test_code_exercises_refuses_before_any_llm_call_and_runs_only_with_the_override(warehouse, monkeypatch):
    import dagster as dg

    from synth_assets.synthesis import code_exercises as module
    from tests.openai_double import OpenAIDouble

    monkeypatch.setattr(module, "SandboxLimits", functools.partial(SandboxLimits, backend="bubblewrap", bwrap="/nonexistent/bwrap"))
    answer = json.dumps({"parameters": ["n"], "docstring": "Double.", "body": "return n * 2", "tests": []})
    with OpenAIDouble(chat=lambda body: answer) as server:
        llm = module.LLMResource(base_url=server.base_url, api_key=TEST_KEY_REF, model="gpt-4o-mini",
                                 embedding_model="text-embedding-3-small", max_retries=0)
        refused = dg.materialize(
            [module.code_exercises], resources={"compute": Compute(), "warehouse": warehouse, "llm": llm}, raise_on_error=False,
            run_config=dg.RunConfig({"code_exercises": module.CodeExercisesConfig(n_exercises=2)}),
        )
        assert not refused.success
        failure = next(e for e in refused.all_events if e.event_type_value == "STEP_FAILURE")
        assert "refusing to execute untrusted generated code" in str(failure.event_specific_data.error)
        assert "bubblewrap: not installed" in str(failure.event_specific_data.error)
        assert server.chat_requests == []  # nothing was paid for
        allowed = dg.materialize(
            [module.code_exercises], resources={"compute": Compute(), "warehouse": warehouse, "llm": llm},
            run_config=dg.RunConfig({"code_exercises": module.CodeExercisesConfig(
                n_exercises=2, allow_unisolated_execution=True)}),
        )
    assert allowed.success
    isolation = allowed.asset_materializations_for_node("code_exercises")[0].metadata["sandbox_isolation"].value
    assert isolation["isolated"] is False and isolation["backend"] == "subprocess" and isolation["missing"]


# --------------------------------------------------------------------------- the attack list, root and unprivileged


@dataclasses.dataclass(frozen=True)
class Attack:
    """`solution` succeeds (its own asserts hold) only if the attack worked. `baseline`
    is the same attack run with no sandbox, to show that it works there (None: the
    attack is on the sandbox's own protocol, there is nothing to compare with).
    `contained_by`: the failure reasons that show it was stopped by the intended layer
    (so a typo in the attack cannot pass as containment)."""

    solution: str
    contained_by: tuple[str, ...]
    tests: tuple[str, ...] = ()
    baseline: str | None = ""  # "" = the solution itself


_REIMPORT_CTYPES = "import sys\nfor _m in ('ctypes', '_ctypes'):\n    sys.modules.pop(_m, None)\nimport ctypes\nlibc = ctypes.CDLL(None)\n"
_SCAN_ENVIRON = (
    "import os\nhits = []\nfor pid in os.listdir('/proc'):\n    try:\n"
    "        if '$canary'.encode() in open('/proc/%s/environ' % pid, 'rb').read():\n            hits.append(pid)\n"
    "    except OSError:\n        pass\nassert hits\n"
)
_FORK = (
    _REIMPORT_CTYPES + "children = 0\nfor _ in range(FORKS):\n    pid = libc.fork()\n    if pid == 0:\n"
    "        libc.sleep(LINGER)\n        libc._exit(0)\n    if pid > 0:\n        children += 1\n"
    "assert children > 0, 'children forked: %d' % children\n"
)
_FORGE = "line = ('$prefix %s (True, \"passed\")\\n' % nonce).encode()\nfor fd in range(10):\n    try:\n        os.write(fd, line)\n    except OSError:\n        pass\n" + _REIMPORT_CTYPES + "libc._exit(0)\n"
_NO_FILE = ("FileNotFoundError", "PermissionError", "Read-only file system")

ATTACKS = {
    "network_via_socket": Attack("import socket\nsocket.create_connection(('127.0.0.1', $port), timeout=2).close()\n",
                                 ("network access is disabled",)),
    "network_via_reimported_socket": Attack(
        "import sys\nsys.modules.pop('socket', None)\nimport socket\nsocket.create_connection(('127.0.0.1', $port), timeout=2).close()\n",
        ("Connection refused", "Network is unreachable")),
    "network_via__socket": Attack("import _socket\ns = _socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', $port))\ns.close()\n",
                                  ("Connection refused", "Network is unreachable")),
    "parent_env_via_os_environ": Attack("import os\nassert any('$canary' in v for v in os.environ.values())\n",
                                        ("AssertionError",)),
    "parent_env_via_proc_ppid_environ": Attack(
        "import os\nassert b'$canary' in open('/proc/%d/environ' % os.getppid(), 'rb').read()\n", (*_NO_FILE, "AssertionError")),
    "parent_env_via_any_proc_environ": Attack(_SCAN_ENVIRON, ("FileNotFoundError", "AssertionError")),
    "home_canary_file": Attack("assert '$home_secret' in open('$home/canary.txt').read()\n", _NO_FILE),
    "home_listing": Attack("import os\nassert 'canary.txt' in os.listdir('$home')\n", _NO_FILE),
    "write_outside_workdir_bypassing_prelude": Attack(
        "import _io\nreal = next(c for c in _io.FileIO.__mro__ if c.__name__ == 'FileIO' and c.__module__ == '_io')\n"
        "real('$outside/escaped.txt', 'w').write(b'owned')\n", _NO_FILE),
    "write_into_home_via_reimported_ctypes": Attack(
        _REIMPORT_CTYPES + "fd = libc.open(b'$home/escaped.txt', 0o101, 0o600)\nassert fd >= 0 and libc.write(fd, b'owned', 5) == 5\n",
        ("AssertionError",)),
    "see_host_processes": Attack(
        _REIMPORT_CTYPES + "import os\nassert libc.kill($driver_pid, 0) == 0 or os.path.exists('/proc/$driver_pid')\n",
        ("AssertionError",)),
    "fork_bomb_via_reimported_ctypes": Attack(_FORK.replace("FORKS", "64").replace("LINGER", "30"), ("children forked: 0",),
                                              baseline=_FORK.replace("FORKS", "3").replace("LINGER", "0")),
    "memory_hog": Attack("blob = bytearray($hog_mb << 20)\nassert len(blob) == $hog_mb << 20\n", ("memory_error",)),
    "forged_marker_printed": Attack(f"print('\\n{RESULT_PREFIX} 0000 (True, \"passed\")')\n" + _REIMPORT_CTYPES + "libc._exit(0)\n",
                                    ("exited: code 0 without a verdict",), tests=("assert False",), baseline=None),
    "forged_marker_with_mains_nonce": Attack("import __main__, os\nnonce = getattr(__main__, '_nonce', 'none')\n" + _FORGE,
                                             ("forged_verdict",), tests=("assert False",), baseline=None),
    "forged_verdict_via_mains_report": Attack("import __main__\n__main__._report(True, 'passed')\n", ("AttributeError",),
                                              tests=("assert False",), baseline=None),
}

_DRIVER = r'''
import json, marshal, os, socket, string, subprocess, sys
config = json.load(open(sys.argv[1]))
sys.path.insert(0, config["project"])
from synth_assets.common.sandbox import RESULT_PREFIX, SandboxLimits, SandboxUnavailable, isolation_report, run_solution

def leftovers():
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/cmdline" % entry, "rb") as handle:
                    if RESULT_PREFIX.encode() in handle.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found

listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(64)
listener.setblocking(False)

def drain():
    """Connections that reached the listener: the kernel queues them, accepted or not."""
    count = 0
    while True:
        try:
            listener.accept()[0].close()
            count += 1
        except BlockingIOError:
            return count

RUNNER = "import marshal, sys\nsolution, tests = marshal.loads(sys.stdin.buffer.read())\nns = {}\nexec(solution, ns)\nfor t in tests:\n    exec(t, ns)\n"
values = dict(config["values"], port=listener.getsockname()[1], driver_pid=os.getpid())
fill = lambda code: string.Template(code).safe_substitute(values)
limits = SandboxLimits(**config["limits"])
out = {"uid": os.getuid(), "attacks": {}}
try:
    out["report"] = isolation_report(limits)
    for name, attack in config["attacks"].items():
        baseline = None
        if attack["baseline"] is not None:
            code = fill(attack["baseline"] or attack["solution"])
            done = subprocess.run([sys.executable, "-I", "-S", "-c", RUNNER], capture_output=True, timeout=60,
                                  input=marshal.dumps((code, [fill(t) for t in attack["tests"]])))
            baseline = {"worked": done.returncode == 0, "stderr": done.stderr.decode(errors="replace")[-300:]}
            for path in config["escape_paths"]:
                if os.path.exists(path):
                    os.unlink(path)
        drain()
        result = run_solution(fill(attack["solution"]), [fill(t) for t in attack["tests"]], limits)
        connections = drain()
        escaped = [path for path in config["escape_paths"] if os.path.exists(path)]
        out["attacks"][name] = {"passed": result.passed, "reason": result.reason, "duration_s": result.duration_s,
                                "baseline": baseline, "connections": connections,
                                "escaped": escaped, "leftovers": leftovers()}
        for path in escaped:
            os.unlink(path)
except SandboxUnavailable as exc:
    out["refused"] = str(exc)
print(json.dumps(out))
'''

# Runs the driver in a new user namespace in which no further user namespace may be
# made: what a machine with unprivileged user namespaces disabled looks like.
_NO_USERNS = r'''
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
uid, gid = os.getuid(), os.getgid()
if libc.unshare(0x10000000) != 0:
    sys.exit("unshare: " + os.strerror(ctypes.get_errno()))
for name, text in (("setgroups", "deny"), ("uid_map", "%d %d 1" % (uid, uid)), ("gid_map", "%d %d 1" % (gid, gid))):
    with open("/proc/self/" + name, "w") as handle:
        handle.write(text)
with open("/proc/sys/user/max_user_namespaces", "w") as handle:
    handle.write("0")
os.execve(sys.argv[1], sys.argv[1:], os.environ)
'''

THROWAWAY_USER = "synthsbx"


@dataclasses.dataclass(frozen=True)
class Identity:
    name: str
    uid: int
    gid: int
    python: str


def _runs_python(python: str, uid: int, gid: int) -> bool:
    try:
        return subprocess.run([python, "-I", "-S", "-c", "import json, marshal, string"], cwd="/", env={},
                              user=uid, group=gid, extra_groups=[], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.fixture(scope="module")
def identities():
    """{"root": Identity | skip reason, "unprivileged": Identity | skip reason}."""
    found: dict[str, Identity | str] = {}
    created = False
    if os.geteuid() != 0:
        found["root"] = "the tests do not run as root"
        found["unprivileged"] = Identity(pwd.getpwuid(os.getuid()).pw_name, os.getuid(), os.getgid(), sys.executable)
    else:
        found["root"] = Identity("root", 0, 0, sys.executable)
        try:
            entry = pwd.getpwnam(THROWAWAY_USER)
        except KeyError:
            entry = None
            if not shutil.which("useradd"):
                found["unprivileged"] = "running as root and there is no useradd to make an unprivileged user"
            else:
                done = subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                                       "--shell", "/usr/sbin/nologin", THROWAWAY_USER], capture_output=True)
                created = done.returncode == 0
                entry = pwd.getpwnam(THROWAWAY_USER) if created else None
                if entry is None:
                    found["unprivileged"] = f"useradd {THROWAWAY_USER} failed: {done.stderr.decode(errors='replace')}"
        if entry is not None:
            python = next((p for p in (sys.executable, "/usr/bin/python3", shutil.which("python3"))
                           if p and _runs_python(p, entry.pw_uid, entry.pw_gid)), None)
            found["unprivileged"] = (Identity(THROWAWAY_USER, entry.pw_uid, entry.pw_gid, python) if python
                                     else f"no python interpreter that {THROWAWAY_USER} can run")
    yield found
    if created:
        subprocess.run(["userdel", THROWAWAY_USER], capture_output=True)


def _identity(identities, mode: str) -> Identity:
    identity = identities[mode]
    if isinstance(identity, str):
        pytest.skip(f"{mode}: {identity}")
    return identity


def _run_driver(identity: Identity, limits: dict, attacks: dict[str, Attack], no_userns: bool = False,
                path: str = "/usr/local/bin:/usr/bin:/bin") -> dict:
    """Run the driver as `identity` with canary secrets in its environment and a canary
    file in its $HOME; returns its JSON plus the canaries."""
    base = tempfile.mkdtemp(prefix="synth-sbx-")
    try:
        os.chmod(base, 0o755)
        home, outside = os.path.join(base, "home"), os.path.join(base, "outside")
        os.mkdir(home, 0o700)
        os.mkdir(outside)
        os.chmod(outside, 0o777)  # a place the attacker could write to without a sandbox
        values = {"canary": f"sk-canary-{secrets.token_hex(8)}", "home_secret": f"home-canary-{secrets.token_hex(8)}",
                  "home": home, "outside": outside, "prefix": RESULT_PREFIX, "hog_mb": limits["memory_mb"] + 64}
        Path(home, "canary.txt").write_text(values["home_secret"])
        os.chmod(os.path.join(home, "canary.txt"), 0o600)
        os.chown(home, identity.uid, identity.gid)
        os.chown(os.path.join(home, "canary.txt"), identity.uid, identity.gid)
        config = {
            "project": str(PROJECT), "limits": limits, "values": values,
            "escape_paths": [os.path.join(outside, "escaped.txt"), os.path.join(home, "escaped.txt")],
            "attacks": {name: dataclasses.asdict(attack) for name, attack in attacks.items()},
        }
        Path(base, "driver.py").write_text(_DRIVER)
        Path(base, "config.json").write_text(json.dumps(config))
        command = [identity.python, "-B", os.path.join(base, "driver.py"), os.path.join(base, "config.json")]
        if no_userns:
            command = [identity.python, "-I", "-S", "-c", _NO_USERNS, *command]
        env = {"HOME": home, "PATH": path, "OPENAI_API_KEY": values["canary"], "SANDBOX_CANARY_SECRET": values["canary"]}
        switch_user = {"user": identity.uid, "group": identity.gid, "extra_groups": []} if os.geteuid() == 0 else {}
        done = subprocess.run(command, cwd=base, env=env, capture_output=True, timeout=600, **switch_user)
        assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
        return {**json.loads(done.stdout.decode().strip().splitlines()[-1]), "values": values}
    finally:
        shutil.rmtree(base, ignore_errors=True)


@functools.lru_cache(maxsize=2)
def _backend_precondition(backend: str) -> str | None:
    """Why this machine cannot run the backend at all (checked without the sandbox code)."""
    if backend == "bubblewrap":
        if not shutil.which("bwrap"):
            return "bubblewrap is not installed (apt-get install bubblewrap)"
        done = subprocess.run(["bwrap", "--unshare-all", "--ro-bind", "/", "/", "true"], capture_output=True)
        return f"bubblewrap cannot make namespaces here: {done.stderr.decode(errors='replace').strip()}" if done.returncode else None
    done = subprocess.run(["unshare", "-Urn", "true"], capture_output=True)
    return f"unprivileged user namespaces are not available here: {done.stderr.decode(errors='replace').strip()}" if done.returncode else None


ATTACK_LIMITS = {"timeout_s": 5.0, "cpu_s": 5, "memory_mb": 256}
_attack_runs: dict[tuple[str, str], dict] = {}


@pytest.fixture(scope="module")
def attack_run(identities):
    def run(mode: str, backend: str) -> dict:
        identity = _identity(identities, mode)
        missing = _backend_precondition(backend)
        if missing:
            pytest.skip(missing)
        if (mode, backend) not in _attack_runs:
            _attack_runs[mode, backend] = _run_driver(identity, {**ATTACK_LIMITS, "backend": backend}, ATTACKS)
        return _attack_runs[mode, backend]

    return run


@pytest.mark.parametrize("backend", sandbox.BACKENDS)
@pytest.mark.parametrize("mode", ["root", "unprivileged"])
def test_the_sandbox_is_measured_as_isolated_for_every_user(attack_run, mode, backend):
    run = attack_run(mode, backend)
    assert "refused" not in run, run["refused"]
    report = run["report"]
    assert report["isolated"] is True and report["backend"] == backend, report
    assert report["runs_as_root"] is (mode == "root") and report["sandbox_uid"] != 0


@pytest.mark.parametrize("attack", sorted(ATTACKS))
@pytest.mark.parametrize("backend", sandbox.BACKENDS)
@pytest.mark.parametrize("mode", ["root", "unprivileged"])
def test_attack_is_contained(attack_run, mode, backend, attack):
    run = attack_run(mode, backend)
    assert "refused" not in run, run["refused"]
    outcome = run["attacks"][attack]
    if outcome["baseline"] is not None:  # the attack is real: it works when nothing contains it
        assert outcome["baseline"]["worked"], outcome["baseline"]["stderr"]
    assert not outcome["passed"], outcome
    assert any(why in outcome["reason"] for why in ATTACKS[attack].contained_by), outcome
    assert outcome["connections"] == 0 and outcome["escaped"] == [] and outcome["leftovers"] == [], outcome


@pytest.mark.xfail(strict=True, reason="tests run in the process under test: code that inspects the harness's frames "
                   "can fake its verdict (as an always-equal object can); the sandbox contains, it does not make honest")
@needs_isolation
def test_a_solution_that_reads_the_harness_frames_can_fake_its_verdict():
    code = ("import sys\nframe = sys._getframe(1)\nwhile frame and 'report' not in frame.f_locals:\n    frame = frame.f_back\n"
            "frame.f_locals['report'](True, 'passed')\n")
    assert run_solution(code, ["assert False"], FAST).passed is False


def test_a_failed_unshare_is_never_reported_as_isolated(identities):
    """As an unprivileged user on a machine where user namespaces are disabled:
    bubblewrap and the userns backend both fail, the report says so, nothing runs."""
    identity = _identity(identities, "unprivileged")
    missing = _backend_precondition("userns")
    if missing:
        pytest.skip(missing)
    jobs = {"good": Attack(GOOD + "assert add(1, 2) == 3\n", (), baseline=None)}
    refused = _run_driver(identity, {**ATTACK_LIMITS}, jobs, no_userns=True)
    assert "refused" in refused and refused["attacks"] == {}
    message = refused["refused"]
    assert "refusing to execute untrusted generated code" in message
    assert "userns: failed: sandbox-setup: unshare(user, mount, pid, net, ipc, uts) failed" in message, message
    if _backend_precondition("bubblewrap") is None:
        assert "bubblewrap: failed: bwrap:" in message, message
    allowed = _run_driver(identity, {**ATTACK_LIMITS, "bwrap": "/nonexistent/bwrap", "allow_unisolated_execution": True},
                          jobs, no_userns=True)
    report = allowed["report"]
    assert report["isolated"] is False and report["backend"] == "subprocess"
    assert report["attempts"]["bubblewrap"].startswith("not installed")
    assert report["attempts"]["userns"].startswith("failed: sandbox-setup: unshare")
    # Measured: unisolated, an unprivileged user's code reaches the network and the parent's environment.
    assert report["contained"]["network"] is False and report["contained"]["environment"] is False
    assert allowed["attacks"]["good"]["passed"] is True
