"""Sandbox throughput: executed solutions per second through synth_assets.common.sandbox
(thread pool over both cores, full isolation) versus a plain
`subprocess.run([python, "-c", solution + tests])` per solution on the same pool,
on the same set of small solutions with asserts.

    .venv/bin/python -m bench.sandbox --n 200 --workers 2
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from synth_assets.common.sandbox import SandboxJob, SandboxLimits, isolation_report, resolve_python, run_many


def make_jobs(n: int) -> list[SandboxJob]:
    """Small HumanEval-sized solutions, a few asserts each; every 10th one fails."""
    jobs = []
    for i in range(n):
        expected = sum(range(i % 50)) + (1 if i % 10 == 9 else 0)
        solution = (
            f"def total_upto_{i}(n):\n"
            f'    """Sum of 0..n-1."""\n'
            f"    acc = 0\n"
            f"    for k in range(n):\n"
            f"        acc += k\n"
            f"    return acc\n"
        )
        tests = [f"assert total_upto_{i}({i % 50}) == {expected}", f"assert total_upto_{i}(0) == 0"]
        jobs.append(SandboxJob(solution, tests))
    return jobs


def plain_run(python: str, job: SandboxJob) -> bool:
    code = job.solution + "\n" + "\n".join(job.tests) + "\n"
    return subprocess.run([python, "-c", code], capture_output=True, timeout=10).returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    jobs = make_jobs(args.n)
    limits = SandboxLimits()
    python, _ = resolve_python(limits.python, limits.drop_privileges)
    print("isolation:", isolation_report(limits))

    started = time.perf_counter()
    sandboxed = run_many(jobs, limits, max_workers=args.workers)
    sandbox_s = time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        plain = list(pool.map(lambda job: plain_run(python, job), jobs))
    plain_s = time.perf_counter() - started

    assert [r.passed for r in sandboxed] == plain, "sandbox and plain runs disagree on pass/fail"
    sandbox_rate, plain_rate = args.n / sandbox_s, args.n / plain_s
    print(f"solutions: {args.n}, workers: {args.workers}, passed: {sum(plain)}, interpreter: {python}")
    print(f"sandbox: {sandbox_rate:8.1f} solutions/s ({sandbox_s:.2f}s)")
    print(f"plain subprocess.run: {plain_rate:8.1f} solutions/s ({plain_s:.2f}s)")
    print(f"ratio sandbox/plain: {sandbox_rate / plain_rate:.2f}")


if __name__ == "__main__":
    sys.exit(main())
