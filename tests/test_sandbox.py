"""The sandbox contains planted malicious solutions, records each as a failure with a
reason, and leaves the test process (and the filesystem, and the network) unharmed."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from synth_assets.common.sandbox import RESULT_PREFIX, SandboxJob, SandboxLimits, isolation_report, run_many, run_solution

GOOD = "def add(a, b):\n    return a + b\n"
FAST = SandboxLimits(timeout_s=3.0, cpu_s=3)


def leftover_sandbox_processes() -> list[int]:
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


def test_a_correct_solution_passes_and_a_wrong_one_fails_with_the_test_index():
    passed = run_solution(GOOD, ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"], FAST)
    assert passed.passed and passed.reason == "passed" and passed.n_tests == 2
    failed = run_solution(GOOD, ["assert add(1, 2) == 3", "assert add(2, 2) == 5"], FAST)
    assert not failed.passed and failed.reason == "assertion_failed: test 1"
    crashed = run_solution("def f(x):\n    return 1 / x\n", ["assert f(0) == 1"], FAST)
    assert not crashed.passed and crashed.reason.startswith("error: ZeroDivisionError in test 0")
    broken = run_solution("def f(:\n    pass\n", [], FAST)
    assert broken.reason.startswith("syntax_error")


def test_printing_a_fake_verdict_does_not_pass():
    fake = f'print("{RESULT_PREFIX} 0000 {{\\"passed\\": true, \\"reason\\": \\"passed\\"}}")\nraise SystemExit(0)\n'
    result = run_solution(fake, [], FAST)
    assert not result.passed and "SystemExit" in result.reason


def test_infinite_loop_is_killed_on_the_wall_clock_timeout():
    started = time.monotonic()
    result = run_solution("while True:\n    pass\n", [], SandboxLimits(timeout_s=1.0, cpu_s=30))
    assert not result.passed and result.reason == "timeout"
    assert time.monotonic() - started < 5
    assert leftover_sandbox_processes() == []


def test_cpu_limit_stops_a_busy_loop_before_the_wall_clock():
    result = run_solution("while True:\n    pass\n", [], SandboxLimits(timeout_s=20.0, cpu_s=1))
    assert not result.passed and result.reason == "cpu_limit"
    assert result.duration_s < 10


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


@pytest.mark.skipif(not isolation_report()["drops_to_nobody"], reason="needs root and an interpreter nobody can run")
def test_kernel_process_limit_stops_fork_without_the_prelude():
    """Below the prelude: the child setup alone (uid nobody + RLIMIT_NPROC) refuses fork."""
    import subprocess

    from synth_assets.common.sandbox import _child_setup, resolve_python

    python, drops = resolve_python(None, True)
    code = "import os\ntry:\n    os.fork()\nexcept BlockingIOError:\n    print('refused')\nelse:\n    print('forked')\n"
    done = subprocess.run(
        [python, "-I", "-S", "-c", code], preexec_fn=_child_setup(FAST, drops), env={}, cwd="/",
        capture_output=True, timeout=10, start_new_session=True,
    )
    assert done.stdout.decode().split() == ["refused"], done


def test_huge_allocation_is_a_memory_error():
    result = run_solution("blob = bytearray(8 * 1024 ** 3)\n", [], SandboxLimits(timeout_s=5.0, memory_mb=256))
    assert not result.passed and result.reason.startswith("memory_error")


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
    # Writing inside its own temporary directory is allowed, and it is cleaned up.
    inside = run_solution("open('notes.txt', 'w').write('ok')\nassert open('notes.txt').read() == 'ok'\n", [], FAST)
    assert inside.passed


def test_removing_files_outside_is_refused(tmp_path):
    victim = tmp_path / "keep.txt"
    victim.write_text("precious")
    result = run_solution(f"import os\nos.remove({str(victim)!r})\n", [], FAST)
    assert not result.passed and "PermissionError" in result.reason
    assert victim.read_text() == "precious"


def test_large_file_in_the_workdir_hits_the_size_limit():
    result = run_solution("open('big.bin', 'wb').write(b'x' * (8 * 1024 * 1024))\n", [], SandboxLimits(timeout_s=5.0, file_size_mb=1))
    assert not result.passed
    assert "OSError" in result.reason or "File too large" in result.reason or result.reason.startswith("killed")


def test_network_attempt_fails_and_reaches_nothing(listener):
    port, accepted = listener
    result = run_solution(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n", [], FAST)
    assert not result.passed and "disabled" in result.reason
    time.sleep(0.3)
    assert accepted == []


@pytest.mark.skipif(os.geteuid() != 0, reason="the private network namespace needs root")
def test_raw_socket_bypassing_the_prelude_is_stopped_by_the_network_namespace(listener):
    port, accepted = listener
    code = f"import _socket\ns = _socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', {port}))\n"
    result = run_solution(code, [], FAST)
    assert not result.passed and "Error" in result.reason
    time.sleep(0.3)
    assert accepted == []
    assert isolation_report()["network_namespace"] is True


def test_environment_is_empty():
    os.environ["SANDBOX_TEST_SECRET"] = "sk-should-not-leak"
    try:
        result = run_solution("import os\nassert 'SANDBOX_TEST_SECRET' not in os.environ and len(os.environ) <= 1\n", [], FAST)
    finally:
        del os.environ["SANDBOX_TEST_SECRET"]
    assert result.passed, result


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
