"""Choosing the sandbox: isolation is measured, not assumed.

Before the first run with a given `SandboxLimits`, `select_sandbox` tries the backends
in `BACKENDS` order, runs the probe in each, and takes the first in which every check is
contained. If none is, the unisolated way is probed too, so the report can say what it
would leave open, and it is used only with `allow_unisolated_execution`; otherwise runs
are refused with `SandboxUnavailable` and `refusal_message` says what is missing and how
to fix it. The choice is cached per limits, effective uid and PATH, and made under a
lock so concurrent workers share one probe.

`isolation_report` and `require_isolation` expose that report (assets attach it as
metadata).
"""

from __future__ import annotations

import copy
import functools
import os
import sys
import threading
import time
from dataclasses import dataclass

from synth_assets.common.sandbox.backends import Sandbox, bubblewrap, userns
from synth_assets.common.sandbox.interpreter import python_candidates, resolve_python
from synth_assets.common.sandbox.jobs import SandboxLimits, SandboxUnavailable
from synth_assets.common.sandbox.probe import CONTAINMENT_CHECKS, missing_checks, run_probe
from synth_assets.common.sandbox.user import is_root, sandbox_ids


BACKENDS = ("bubblewrap", "userns")


@dataclass(frozen=True)
class Selection:
    sandbox: Sandbox | None  # None: refuse to run
    report: dict


_SELECTION_LOCK = threading.Lock()


@functools.lru_cache(maxsize=16)
def _select_cached(limits: SandboxLimits, euid: int, path: str) -> Selection:
    """Try the backends in order; the first whose probe shows every check contained runs
    the code. Otherwise the unisolated way is probed too, so the report can say what it
    would leave open, and it is used only with allow_unisolated_execution."""
    if limits.backend not in ("auto", *BACKENDS):
        raise ValueError(f"unknown sandbox backend {limits.backend!r}: 'auto', " + ", ".join(map(repr, BACKENDS)))
    started = time.monotonic()
    layout = resolve_python(limits.python)
    uid, _ = sandbox_ids()
    attempts: dict[str, str] = {}

    def report(backend: str | None, findings: dict, missing: list[str]) -> dict:
        checks = {k: v for k, v in findings.items() if k != "error"}
        return {
            "isolated": not missing and backend in BACKENDS, "backend": backend, "executes_untrusted_code": backend is not None,
            "contained": {k: v["contained"] for k, v in checks.items()}, "missing": missing,
            "details": {k: v["detail"] for k, v in checks.items()}, "attempts": attempts,
            "runs_as_root": is_root(), "sandbox_uid": uid, "python": layout[0] if layout else None,
            "limits": {k: getattr(limits, k) for k in ("timeout_s", "cpu_s", "memory_mb", "file_size_mb", "open_files",
                                                       "processes", "workdir_mb")},
            "probe_s": round(time.monotonic() - started, 3),
        }

    for name in BACKENDS if limits.backend == "auto" else (limits.backend,):
        if layout is None:
            attempts[name] = f"no interpreter that uid {uid} can run among {python_candidates(limits.python)}"
            continue
        made = bubblewrap(limits, *layout) if name == "bubblewrap" else userns(limits, *layout)
        if isinstance(made, str):
            attempts[name] = made
            continue
        findings = run_probe(made, limits)
        if "error" in findings:
            attempts[name] = f"failed: {findings['error']}"
            continue
        missing = missing_checks(findings)
        attempts[name] = "incomplete: " + "; ".join(missing) if missing else "isolated"
        if not missing:
            return Selection(made, report(name, findings, []))
    unisolated = Sandbox("subprocess", layout[0] if layout else sys.executable)
    findings = run_probe(unisolated, limits)
    missing = missing_checks(findings) if "error" not in findings else [f"probe failed: {findings['error']}"]
    allowed = limits.allow_unisolated_execution
    return Selection(unisolated if allowed else None, report("subprocess" if allowed else None, findings, missing))


def select_sandbox(limits: SandboxLimits) -> Selection:
    with _SELECTION_LOCK:  # one probe per setting, not one per worker thread
        return _select_cached(limits, os.geteuid(), os.environ.get("PATH", ""))


def isolation_report(limits: SandboxLimits = SandboxLimits()) -> dict[str, object]:
    """The isolation measured here (probed once per process and setting): `isolated`,
    the `backend` that runs code (None = refuses), `contained` per check, `missing`
    (what the code could reach), `attempts` per backend, the interpreter and limits."""
    return copy.deepcopy(select_sandbox(limits).report)


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
    selection = select_sandbox(limits)
    if selection.sandbox is None:
        raise SandboxUnavailable(refusal_message(selection.report))
    return copy.deepcopy(selection.report)
