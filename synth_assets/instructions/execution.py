"""Python in instruction outputs: found, parsed, and where it carries `assert`s, executed
in the sandbox (synth_assets.common.sandbox). The verdict goes on the row.

What counts as code: the fenced blocks of the output, or else the whole output when it
parses and holds at least one statement that is not a bare expression (so "Yes",
"O(n^2)" or "KeyError" are answers, not code). Top-level `assert` statements become the
job's tests, everything else its solution. Nothing here raises: when no sandbox isolates
on this machine (and unisolated execution is not allowed) the rows say
`not_run: sandbox_unavailable`.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass

import dagster as dg
from pydantic import Field

from synth_assets.common.sandbox import SandboxJob, SandboxLimits, SandboxUnavailable, require_isolation, run_many

_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


class ExecutionConfig(dg.Config):
    """Sandbox settings every instruction asset shares (as in `code_exercises`)."""

    sandbox_timeout_s: float = Field(default=5.0, description="Wall-clock limit per sandboxed output.")
    sandbox_memory_mb: int = Field(default=512, description="Address-space limit per sandboxed output.")
    sandbox_workers: int = Field(default=2, description="Outputs executed concurrently (one per core).")
    allow_unisolated_execution: bool = Field(
        default=False,
        description="UNSAFE. Run generated code in a plain subprocess when no isolating sandbox works here "
        "(it could reach the network, this process's environment and the user's files).",
    )

    def sandbox_limits(self) -> SandboxLimits:
        # RLIMIT_CPU one second behind the wall clock, as in code_exercises.
        return SandboxLimits(
            timeout_s=self.sandbox_timeout_s, cpu_s=math.ceil(self.sandbox_timeout_s) + 1,
            memory_mb=self.sandbox_memory_mb, allow_unisolated_execution=self.allow_unisolated_execution,
        )


@dataclass(frozen=True)
class CodeVerdict:
    has_code: bool
    code_parses: bool | None = None
    n_asserts: int = 0
    sandbox_passed: bool | None = None
    sandbox_reason: str = "no_code"

    def columns(self) -> dict:
        return {
            "has_code": self.has_code, "code_parses": self.code_parses, "n_asserts": self.n_asserts,
            "sandbox_passed": self.sandbox_passed, "sandbox_reason": self.sandbox_reason,
        }


def extract_python(output: str) -> str | None:
    """The Python an output holds (fenced blocks joined), or None."""
    blocks = _FENCE.findall(output or "")
    if blocks:
        return "\n".join(blocks)
    text = (output or "").strip()
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return None
    return text + "\n" if any(not isinstance(node, ast.Expr) for node in tree.body) else None


def split_asserts(code: str) -> tuple[str, list[str]]:
    """(the code without its top-level asserts, those asserts as test sources)."""
    tree = ast.parse(code)
    lines = code.splitlines()
    tests, skipped = [], set()
    for node in tree.body:
        if isinstance(node, ast.Assert):
            tests.append("\n".join(lines[node.lineno - 1 : node.end_lineno]).strip())
            skipped.update(range(node.lineno - 1, node.end_lineno))
    solution = "\n".join(line for index, line in enumerate(lines) if index not in skipped)
    return solution + "\n", tests


def code_verdicts(outputs: list[str], limits: SandboxLimits, workers: int) -> tuple[list[CodeVerdict], dict | None]:
    """One verdict per output, and the sandbox's isolation report (None when nothing ran)."""
    verdicts: list[CodeVerdict | None] = []
    jobs: list[tuple[int, SandboxJob]] = []
    for position, output in enumerate(outputs):
        code = extract_python(output)
        if code is None:
            verdicts.append(CodeVerdict(False))
            continue
        try:
            solution, tests = split_asserts(code)
        except (SyntaxError, ValueError) as exc:
            reason = f"syntax_error: {getattr(exc, 'msg', exc)}"
            verdicts.append(CodeVerdict(True, False, 0, None, reason))
            continue
        if not tests:
            verdicts.append(CodeVerdict(True, True, 0, None, "no_asserts"))
            continue
        verdicts.append(None)
        jobs.append((position, SandboxJob(solution, tests)))
    report = None
    if jobs:
        try:
            report = require_isolation(limits)
            results = run_many([job for _, job in jobs], limits, max_workers=workers)
        except SandboxUnavailable:
            results = None
        for index, (position, job) in enumerate(jobs):
            if results is None:
                verdicts[position] = CodeVerdict(True, True, len(job.tests), None, "not_run: sandbox_unavailable")
            else:
                verdicts[position] = CodeVerdict(True, True, len(job.tests), results[index].passed, results[index].reason)
    return verdicts, report


def attach_code_verdicts(rows: list[dict], config: ExecutionConfig) -> dict | None:
    """Parse and run the Python in every row's output; the verdict columns are set in place."""
    verdicts, report = code_verdicts([row["output"] for row in rows], config.sandbox_limits(), config.sandbox_workers)
    for row, verdict in zip(rows, verdicts, strict=True):
        row.update(verdict.columns())
    return report
