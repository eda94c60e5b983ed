"""Running jobs: the entry points the pipeline calls.

`run_solution` runs one solution and its tests in a fresh sandbox; `run_many` runs
several concurrently (one thread per job waiting on its sandbox; default one per CPU
core), results in input order. Both pick the sandbox through `isolation` and raise
`SandboxUnavailable` when nothing here isolates; nothing the code itself does makes them
raise.

Each run gets a fresh nonce. The harness's single verdict line must carry it; output on
the result channel that is not exactly that line is reported as `forged_verdict`. Without
a verdict the exit status explains the failure: a signal (`cpu_limit` for SIGXCPU), a
sandbox setup error, a MemoryError, or a plain exit code.

Code that inspects the harness's own frames could still fake its verdict (as it could
return an object whose `__eq__` is always True): tests that run in the process under
test can only be as honest as that process. The sandbox guarantees containment, not
honesty.
"""

from __future__ import annotations

import ast
import marshal
import os
import secrets
import signal
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from synth_assets.common.sandbox.backends import Sandbox
from synth_assets.common.sandbox.harness import HARNESS, RESULT_PREFIX, limit_args
from synth_assets.common.sandbox.isolation import refusal_message, select_sandbox
from synth_assets.common.sandbox.jobs import SandboxJob, SandboxLimits, SandboxResult, SandboxUnavailable
from synth_assets.common.sandbox.process import OUTPUT_LIMIT, Outcome, execute


def run_solution(solution: str, tests: Sequence[str], limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Execute `solution` then each test (each an `assert ...` statement or a few lines)
    in a fresh sandbox. Never raises for anything the code does; raises
    SandboxUnavailable when this machine cannot isolate it (see `require_isolation`)."""
    sandbox = select_sandbox(limits).sandbox
    if sandbox is None:
        raise SandboxUnavailable(refusal_message(select_sandbox(limits).report))
    return _run(sandbox, solution, tests, limits)


def _run(sandbox: Sandbox, solution: str, tests: Sequence[str], limits: SandboxLimits) -> SandboxResult:
    nonce = secrets.token_hex(16)
    payload = nonce.encode() + b"\n" + marshal.dumps((str(solution), [str(t) for t in tests]))
    try:
        outcome = execute(sandbox, HARNESS, limit_args(limits), payload, limits.timeout_s)
    except OSError as exc:
        return SandboxResult(False, f"sandbox_error: {type(exc).__name__}: {exc}", 0.0, len(tests))
    return _interpret(outcome, nonce, len(tests), signals_as_exit_codes=sandbox.backend != "subprocess")


def run_many(
    jobs: Sequence[SandboxJob], limits: SandboxLimits = SandboxLimits(), max_workers: int | None = None
) -> list[SandboxResult]:
    """Run jobs concurrently (default: one per CPU core); results in input order."""
    if not jobs:
        return []
    sandbox = select_sandbox(limits).sandbox
    if sandbox is None:
        raise SandboxUnavailable(refusal_message(select_sandbox(limits).report))
    workers = max_workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda job: _run(sandbox, job.solution, job.tests, limits), jobs))


def _tail(stream: bytes | None, limit: int = 500) -> str:
    return (stream or b"").decode("utf-8", "replace")[-limit:]


def _interpret(outcome: Outcome, nonce: str, n_tests: int, signals_as_exit_codes: bool) -> SandboxResult:
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
