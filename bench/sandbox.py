"""Sandbox throughput: executed solutions per second through synth_assets.common.sandbox
(thread pool over both cores), side by side on the same small solutions with asserts:

- each isolating backend available here (bubblewrap; user namespaces via unshare);
- the old way: a plain subprocess with the prelude and rlimits (plus a network namespace
  and the drop to nobody as root), i.e. what `allow_unisolated_execution` runs;
- a bare `subprocess.run([python, "-c", solution + tests])` per solution.

Each is run `--repeats` times; the median rate is reported, and each ratio is against
the old way.

    .venv/bin/python -m bench.sandbox --n 200 --workers 2 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from synth_assets.common import sandbox
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


def modes(workers: int) -> dict[str, Callable[[list[SandboxJob]], list[bool]]]:
    """name -> run(jobs) -> pass/fail per job, for every way available here."""
    found: dict[str, Callable[[list[SandboxJob]], list[bool]]] = {}
    for backend in sandbox.BACKENDS:
        limits = SandboxLimits(backend=backend)
        report = isolation_report(limits)
        if report["isolated"]:
            found[backend] = lambda jobs, limits=limits: [r.passed for r in run_many(jobs, limits, max_workers=workers)]
        else:
            print(f"{backend}: not measured ({report['attempts'].get(backend)})")
    old_way = SandboxLimits(backend="bubblewrap", bwrap="/nonexistent/bwrap", allow_unisolated_execution=True)
    found["old way (subprocess + prelude)"] = lambda jobs: [r.passed for r in run_many(jobs, old_way, max_workers=workers)]
    layout = resolve_python(None)
    python = layout[0] if layout else sys.executable

    def plain(jobs: list[SandboxJob]) -> list[bool]:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(lambda job: plain_run(python, job), jobs))

    found["plain subprocess.run"] = plain
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    jobs = make_jobs(args.n)
    report = isolation_report(SandboxLimits())
    print("isolation:", {k: report[k] for k in ("isolated", "backend", "sandbox_uid", "python", "attempts", "probe_s")})
    ways = modes(args.workers)
    rates: dict[str, list[float]] = {name: [] for name in ways}
    expected = None
    for _ in range(args.repeats):
        for name, run in ways.items():  # interleaved, so load changes hit every way alike
            started = time.perf_counter()
            verdicts = run(jobs)
            rates[name].append(args.n / (time.perf_counter() - started))
            expected = expected or verdicts
            assert verdicts == expected, f"{name} disagrees with the others on pass/fail"
    print(f"solutions: {args.n}, workers: {args.workers}, repeats: {args.repeats}, passed: {sum(expected)}")
    old = statistics.median(rates["old way (subprocess + prelude)"])
    for name, values in rates.items():
        median = statistics.median(values)
        spread = ", ".join(f"{v:.1f}" for v in values)
        print(f"{name:32s} median {median:7.1f} solutions/s  ({spread})  ratio vs old way: {median / old:.2f}")


if __name__ == "__main__":
    sys.exit(main())
