"""Signal 5, functional equivalence: does the exercise's solution pass a benchmark
problem's own tests? An exercise that computes the same function as a HumanEval problem
is contaminated however it is worded, renamed or restructured (issue 17; the
LLM-decontaminator paper, arXiv 2311.04850, shows rephrased copies pass n-gram filters).

Which problems an exercise is run against (`candidate_tasks`): the top-k nearest by the
other signals (AST, MinHash, embedding) plus every problem whose signature is the
exercise's (same parameter annotations, and the same return annotation when both give
one), restricted to problems the function can be called like (`accepts_arity`).

How it runs: the official tests are split into statements (`ProblemTests`: HumanEval's
`check(candidate)` body with `candidate` bound to the exercise's function; MBPP asserts
with the problem's function name bound to it), and many (exercise, problem) pairs run
in one sandbox job (`synth_assets.common.sandbox`), jobs in parallel with `run_many`:
starting a sandbox costs ~0.1 s, a pair ~1 ms. Inside a job each pair gets a fresh
namespace (the benchmark's helper functions, then the exercise), its own wall-clock
timer (SIGALRM), and builtins restored afterwards. A job that dies (timeout, memory,
a solution that ignores the timer) is split in halves and re-run until the pair that
kills it runs alone. No LLM call.

The job's per-pair results travel on the sandbox's one authenticated verdict channel:
the driver ends by raising an exception whose class name carries them, which the
harness reports as `error: <name> in solution`. (A sandbox API for structured results
would be cleaner; the channel and its nonce are the sandbox's, untouched.) Code under
test could forge its batch's line, as any code can fake its own tests in-process: the
sandbox guarantees containment, not honesty.
"""

from __future__ import annotations

import ast
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from synth_assets.common.sandbox import SandboxJob, SandboxLimits, run_many
from synth_assets.decontamination.benchmarks import BenchmarkProblem


@dataclass(frozen=True)
class FunctionalConfig:
    # Nearest problems taken from each of the AST, MinHash and embedding signals: a
    # paraphrase's own problem is in the AST top 3 for 100% of the planted set (sweep).
    top_k: int = 3
    # Also every problem with the exercise's exact annotated signature.
    signature_candidates: bool = True
    # A pair's wall clock: `pair_timeout_factor` x the problem's own reference solution's
    # time on its tests (measured in the sandbox when the index is built), within
    # [pair_timeout_min_s, pair_timeout_s]. HumanEval's slowest check takes ~0.4 s, the
    # median ~1 ms; a fixed 2 s would let one looping mismatch cost 1000 pairs' time.
    pair_timeout_s: float = 2.0
    pair_timeout_min_s: float = 0.1
    pair_timeout_factor: float = 20.0
    # A pair stops after this many failed test statements (it cannot pass any more);
    # tests_passed is then a lower bound.
    max_failures: int = 3
    # Pairs per sandbox job: a job start (~0.1 s) is amortised over ~1,000 pairs of
    # ~0.3 ms (measured: 400 pairs/job 3,150 pairs/s, 1,500 pairs/job 6,700 pairs/s).
    pairs_per_job: int = 1000
    # A whole job's wall clock, at most 10 s + 20 ms a pair (the backstop: a pair that
    # swallows its timer kills its job a second after its budget, and the job is re-run
    # without it).
    job_timeout_s: float = 60.0
    workers: int | None = None  # concurrent sandbox jobs (None = one per core)


@dataclass(frozen=True)
class Signature:
    """How a function is called: positional parameters and their annotations."""

    required: int  # positional parameters without a default
    positional: int  # all positional parameters (inf when *args)
    annotations: tuple[str | None, ...]
    returns: str | None

    def accepts(self, n_args: int) -> bool:
        return self.required <= n_args <= self.positional

    @property
    def fully_annotated(self) -> bool:
        return bool(self.annotations) and all(self.annotations)


@dataclass(frozen=True)
class FunctionalMatch:
    """The best benchmark problem by tests passed (None when nothing ran)."""

    task_id: str | None = None
    tests_passed: int = 0
    tests_total: int = 0
    candidates_run: int = 0
    outcome: str = "no candidate"  # "passed", "failed", "no function", "timeout", ...

    @property
    def passed_all(self) -> bool:
        return self.task_id is not None and self.outcome == "passed" and self.tests_total > 0

    @property
    def pass_rate(self) -> float | None:
        return None if self.task_id is None or not self.tests_total else self.tests_passed / self.tests_total


# ----------------------------------------------------------------------------- signatures

_TYPING_ALIASES = re.compile(r"\b(?:typing\.)?(List|Dict|Tuple|Set|FrozenSet|Type)\b")


def normalise_annotation(node: ast.expr | None) -> str | None:
    """`List[int]`, `typing.List[int]` and `list[int]` read the same."""
    if node is None:
        return None
    text = _TYPING_ALIASES.sub(lambda m: m.group(1).lower(), ast.unparse(node))
    return text.replace("typing.", "").replace(" ", "")


def signature_of(function: ast.FunctionDef | ast.AsyncFunctionDef) -> Signature:
    args = function.args
    positional = args.posonlyargs + args.args
    return Signature(
        required=len(positional) - len(args.defaults),
        positional=10**6 if args.vararg else len(positional),
        annotations=tuple(normalise_annotation(a.annotation) for a in positional),
        returns=normalise_annotation(function.returns),
    )


def entry_function(tree: ast.Module, name: str | None) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    """The exercise's function: the top-level def named `name`, else the last top-level
    def (helpers come first in HumanEval-style code)."""
    functions = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if not functions:
        return None
    return next((f for f in functions if f.name == name), functions[-1]) if name else functions[-1]


def exercise_signature(source: str, name: str | None = None, tree: ast.Module | None = None) -> tuple[str, Signature] | None:
    """(function name, signature) of an exercise's entry function; None if it has none
    or does not parse."""
    if tree is None:
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None
    function = entry_function(tree, name)
    return None if function is None else (function.name, signature_of(function))


# ----------------------------------------------------------------------------- benchmark tests


@dataclass(frozen=True)
class ProblemTests:
    """One problem's official tests as statements run one by one (so `tests_passed`
    counts them) in a namespace holding the benchmark's own code (check() functions call
    helpers such as HumanEval/38's `encode_cyclic`, and HumanEval/33 compares with the
    reference `sort_third` itself) and `candidate`, the exercise's function. MBPP-style
    asserts call the function by its benchmark name: `bind_entry_point` points that name
    at the candidate."""

    task_id: str
    entry_point: str
    arity: int
    reference: str
    setup: str
    statements: tuple[tuple[str, bool], ...]  # (source, counts as a test)
    bind_entry_point: bool

    @property
    def n_tests(self) -> int:
        return sum(is_test for _, is_test in self.statements)


def _is_test(statement: ast.stmt) -> bool:
    """A statement with a real assert (not HumanEval's `assert True, "..."` markers)."""
    return any(isinstance(n, ast.Assert) and not isinstance(n.test, ast.Constant) for n in ast.walk(statement))


def problem_tests(problem: BenchmarkProblem) -> ProblemTests | None:
    """The problem's tests in runnable form, or None when it has none (or they do not
    parse, or the reference solution has no entry point)."""
    if not problem.has_tests:
        return None
    try:
        reference = ast.parse(problem.source)
        entry = next(
            (n for n in reference.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == problem.entry_point),
            None,
        )
        if entry is None:
            return None
        if problem.test:
            tree = ast.parse(problem.test)
            check = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"), None)
            if check is None:
                return None
            setup = ast.unparse([n for n in tree.body if n is not check])
            body = check.body
        else:
            setup = problem.test_setup_code
            body = [statement for test in problem.test_list for statement in ast.parse(test).body]
    except (SyntaxError, ValueError, RecursionError):
        return None
    statements = tuple((ast.unparse(statement), _is_test(statement)) for statement in body)
    if not any(is_test for _, is_test in statements):
        return None
    return ProblemTests(
        problem.task_id, problem.entry_point, signature_of(entry).positional, problem.source, setup, statements,
        bind_entry_point=not problem.test,
    )


class SignatureIndex:
    """Problems by annotated signature, for the "same signature" candidates."""

    def __init__(self, problems: Sequence[BenchmarkProblem]):
        self.by_annotations: dict[tuple[str | None, ...], list[tuple[int, str | None]]] = {}
        for position, problem in enumerate(problems):
            found = exercise_signature(problem.source, problem.entry_point)
            if found is not None and found[1].fully_annotated:
                self.by_annotations.setdefault(found[1].annotations, []).append((position, found[1].returns))

    def compatible(self, signature: Signature) -> list[int]:
        if not signature.fully_annotated:
            return []
        return [
            position for position, returns in self.by_annotations.get(signature.annotations, ())
            if returns is None or signature.returns is None or returns == signature.returns
        ]


def candidate_tasks(
    nearest: Sequence[int], signature: Signature | None, signatures: SignatureIndex, tests: Sequence[ProblemTests | None],
    config: FunctionalConfig = FunctionalConfig(),
) -> list[int]:
    """Problem positions to run an exercise against: its nearest by the other signals
    plus every same-signature problem, each only if it has tests the function can be
    called with (its arity), in first-seen order without repeats."""
    if signature is None:
        return []
    found = list(nearest)
    if config.signature_candidates:
        found += signatures.compatible(signature)
    chosen: list[int] = []
    for position in found:
        problem = tests[position]
        if problem is not None and position not in chosen and signature.accepts(problem.arity):
            chosen.append(position)
    return chosen


# ----------------------------------------------------------------------------- running in the sandbox

RESULT_CLASS = "FUNCTIONAL_RESULTS"
_RESULT = re.compile(rf"{RESULT_CLASS} (\S*) in solution")
_PAIR_MARKER = re.compile(r"FUNCTIONAL_PAIR (\d+)\n")

# Runs inside the sandbox. `_DATA` = (exercises {i: (source, function)}, problems
# {j: (entry, reference, setup, statements, seconds allowed, bind entry)}, pairs
# [(i, j)], failures after which a pair stops). The exercise runs in a namespace of its
# own; the tests in one holding the benchmark's reference code and `candidate`. Per
# pair: "p.f.ms" (tests passed, statements failed, milliseconds), "n" no such function,
# "c" the exercise or the benchmark's code failed to run, "t" the pair's timer expired.
_DRIVER = r'''
import builtins, os, signal, sys, time

class _PairTimeout(BaseException):
    pass

_deadline = [0.0]
import _signal
_set_handler, _set_timer = _signal.signal, _signal.setitimer

def _refuse(*args, **kwargs):
    raise PermissionError("functional signal: the pair timer's signals are not the code's")

# the code under test cannot turn its timer off (bypassable; the job timeout is the backstop)
for _module in (signal, _signal):
    for _name in ("signal", "setitimer", "alarm", "pthread_sigmask", "sigwait", "pause", "siginterrupt"):
        if hasattr(_module, _name):
            setattr(_module, _name, _refuse)

def _on_alarm(signum, frame):
    # A pair that swallows the timeout (a bare `except:` in a loop) is still running a
    # second later: end the job; the runner reads which pair from the last marker.
    if time.perf_counter() > _deadline[0]:
        signal.raise_signal(signal.SIGKILL)
    raise _PairTimeout()

def _run_pairs(data):
    exercises, problems, pairs, max_failures = data
    compiled = {}
    def code(key, text):
        found = compiled.get(key)
        if found is None:
            found = compiled[key] = compile(text, key[0], "exec")
        return found
    saved_builtins = dict(builtins.__dict__)
    recursion = sys.getrecursionlimit()
    out = []
    for k, (i, j) in enumerate(pairs):
        source, function = exercises[i]
        entry, reference, setup, statements, pair_s, bind_entry = problems[j]
        os.write(2, b"\nFUNCTIONAL_PAIR %d\n" % k)
        _set_handler(signal.SIGALRM, _on_alarm)
        started = time.perf_counter()
        _deadline[0] = started + pair_s + 1.0
        _set_timer(signal.ITIMER_REAL, pair_s, 0.05)
        try:
            try:
                own = {"__name__": "__exercise__"}
                exec(code(("exercise", i), source), own)
                candidate = own.get(function)
                if not callable(candidate):
                    out.append("n")
                    continue
                namespace = {"__name__": "__functional__"}
                exec(code(("reference", j), reference), namespace)
                namespace["candidate"] = candidate
                if bind_entry:
                    namespace[entry] = candidate
                exec(code(("setup", j), setup), namespace)
            except _PairTimeout:
                raise
            except BaseException:
                out.append("c")
                continue
            passed = failed = 0
            for index, (statement, is_test) in enumerate(statements):
                try:
                    exec(code(("test", j, index), statement), namespace)
                    passed += is_test
                except _PairTimeout:
                    raise
                except BaseException:
                    failed += 1
                    if failed >= max_failures:
                        break
            out.append("%d.%d.%d" % (passed, failed, 1000 * (time.perf_counter() - started)))
        except _PairTimeout:
            out.append("t")
        finally:
            _set_timer(signal.ITIMER_REAL, 0, 0)
            if builtins.__dict__ != saved_builtins:
                builtins.__dict__.clear()
                builtins.__dict__.update(saved_builtins)
            sys.setrecursionlimit(recursion)
    raise type("FUNCTIONAL_RESULTS " + ",".join(out), (Exception,), {})()

_run_pairs(_DATA)
'''


def driver_source(
    pairs: Sequence[tuple[int, int]], sources: Sequence[str], functions: Sequence[str], tests: Sequence[ProblemTests | None],
    budgets: Sequence[float], max_failures: int,
) -> str:
    """The program one sandbox job runs for `pairs` of (exercise index, problem
    position); `budgets[j]` is problem j's per-pair wall clock."""
    exercises = {i: (sources[i], functions[i]) for i, _ in pairs}
    problems = {}
    for _, j in pairs:
        problem = tests[j]
        assert problem is not None
        problems[j] = (
            problem.entry_point, problem.reference, problem.setup, problem.statements, float(budgets[j]), problem.bind_entry_point
        )
    data = (exercises, problems, [tuple(pair) for pair in pairs], int(max_failures))
    return "_DATA = " + repr(data) + "\n" + _DRIVER


def parse_results(reason: str, n_pairs: int) -> list[str] | None:
    """The per-pair tokens of a job's verdict reason; None if the job did not finish."""
    found = _RESULT.search(reason)
    if not found:
        return None
    tokens = found.group(1).split(",") if found.group(1) else []
    return tokens if len(tokens) == n_pairs else None


def last_started_pair(stderr_tail: str, n_pairs: int) -> int | None:
    """The pair a dead job was running: the last progress marker on its stderr (None
    when the tail holds none, e.g. the code under test wrote over it)."""
    found = _PAIR_MARKER.findall(stderr_tail)
    if not found or int(found[-1]) >= n_pairs:
        return None
    return int(found[-1])


def run_pairs(
    pairs: Sequence[tuple[int, int]], sources: Sequence[str], functions: Sequence[str], tests: Sequence[ProblemTests | None],
    config: FunctionalConfig = FunctionalConfig(), stats: dict[str, float] | None = None,
    budgets: Sequence[float] | None = None,
) -> list[str]:
    """One result token per pair (see `_DRIVER`; "x: <reason>" when the pair killed its
    sandbox). Jobs of `pairs_per_job` run concurrently. A job that does not report is
    re-run without the pair it was running (that pair gets "x: ..."), or, when its
    progress marker is lost, split in halves. Raises SandboxUnavailable when nothing
    here isolates."""
    stats = stats if stats is not None else {}
    budgets = budgets if budgets is not None else [config.pair_timeout_s] * len(tests)
    job_timeout_s = min(config.job_timeout_s, 10.0 + 0.02 * config.pairs_per_job)
    limits = SandboxLimits(timeout_s=job_timeout_s, cpu_s=int(job_timeout_s) + 1)
    results: list[str | None] = [None] * len(pairs)
    pending = [list(range(start, min(start + config.pairs_per_job, len(pairs)))) for start in range(0, len(pairs), config.pairs_per_job)]
    while pending:
        jobs = [
            SandboxJob(driver_source([pairs[k] for k in chunk], sources, functions, tests, budgets, config.max_failures))
            for chunk in pending
        ]
        outcomes = run_many(jobs, limits, max_workers=config.workers)
        stats["jobs"] = stats.get("jobs", 0) + len(jobs)
        retry: list[list[int]] = []
        for chunk, outcome in zip(pending, outcomes):
            tokens = parse_results(outcome.reason, len(chunk))
            running = last_started_pair(outcome.stderr_tail, len(chunk)) if tokens is None else None
            if tokens is not None:
                for k, token in zip(chunk, tokens):
                    results[k] = token
            elif len(chunk) == 1:
                results[chunk[0]] = "x: " + outcome.reason[:200]
            elif running is not None:
                stats["killed_pairs"] = stats.get("killed_pairs", 0) + 1
                results[chunk[running]] = "x: " + outcome.reason[:200]
                retry += [part for part in (chunk[:running], chunk[running + 1 :]) if part]
            else:
                stats["split_jobs"] = stats.get("split_jobs", 0) + 1
                retry += [chunk[: len(chunk) // 2], chunk[len(chunk) // 2 :]]
        pending = retry
    return [token or "x: no result" for token in results]


def _outcome(token: str, problem: ProblemTests) -> tuple[str, int]:
    """(outcome, tests passed) of one pair's token."""
    if token == "n":
        return "no function", 0
    if token == "c":
        return "exercise or reference raised", 0
    if token == "t":
        return "timeout", 0
    if token.startswith("x:"):
        return "sandbox " + token[3:], 0
    passed, failed, _ = (int(part) for part in token.split("."))
    return ("passed" if not failed and passed == problem.n_tests else "failed"), passed


def best_matches(
    candidates: Sequence[Sequence[int]], tokens_by_pair: dict[tuple[int, int], str], tests: Sequence[ProblemTests | None],
) -> list[FunctionalMatch]:
    """Per exercise, the candidate that passed all its tests, else the one with the
    highest share of tests passed."""
    matches = []
    for exercise, positions in enumerate(candidates):
        best: FunctionalMatch | None = None
        best_key: tuple = ()
        for position in positions:
            problem = tests[position]
            assert problem is not None
            outcome, passed = _outcome(tokens_by_pair[(exercise, position)], problem)
            key = (outcome == "passed", passed / max(problem.n_tests, 1))
            if best is None or key > best_key:
                best = FunctionalMatch(problem.task_id, passed, problem.n_tests, len(positions), outcome)
                best_key = key
        matches.append(best or FunctionalMatch())
    return matches


class FunctionalIndex:
    """The benchmark's runnable tests and signatures, built once."""

    def __init__(self, problems: Sequence[BenchmarkProblem], config: FunctionalConfig = FunctionalConfig()):
        self.config = config
        self.problems = list(problems)
        self.task_ids = [problem.task_id for problem in problems]
        self.tests = [problem_tests(problem) for problem in problems]
        self.signatures = SignatureIndex(problems)
        self.budgets: list[float] | None = None
        self.unusable: dict[str, str] = {}  # task id -> why its tests are not used

    def calibrate(self) -> None:
        """Run every problem's reference solution against its own tests in the sandbox
        (once): a problem whose reference fails them is dropped (`unusable`, its tests are
        wrong for this interpreter), the others get a per-pair wall clock of
        `pair_timeout_factor` x the reference's time."""
        if self.budgets is not None:
            return
        config = self.config
        positions = [j for j, test in enumerate(self.tests) if test is not None]
        sources = [problem.source for problem in self.problems]
        functions = [problem.entry_point or "" for problem in self.problems]
        tokens = run_pairs([(j, j) for j in positions], sources, functions, self.tests, config)
        budgets = [config.pair_timeout_s] * len(self.tests)
        for j, token in zip(positions, tokens):
            outcome, _ = _outcome(token, self.tests[j])
            if outcome != "passed":
                self.unusable[self.task_ids[j]] = f"reference solution {outcome} on its own tests"
                self.tests[j] = None
                continue
            seconds = int(token.split(".")[2]) / 1000
            budgets[j] = min(max(config.pair_timeout_factor * seconds, config.pair_timeout_min_s), config.pair_timeout_s)
        if positions and len(self.unusable) == len(positions):
            raise RuntimeError(f"functional signal: no reference solution passes its own tests in the sandbox ({next(iter(self.unusable.values()))})")
        self.budgets = budgets

    @property
    def n_with_tests(self) -> int:
        return sum(test is not None for test in self.tests)

    def candidates(self, nearest: Sequence[int], signature: Signature | None) -> list[int]:
        return candidate_tasks(nearest, signature, self.signatures, self.tests, self.config)

    def run(
        self, sources: Sequence[str], functions: Sequence[str | None], candidates: Sequence[Sequence[int]],
        timings: dict[str, float] | None = None,
    ) -> list[FunctionalMatch]:
        """Run every exercise against its candidates; one match per exercise."""
        timings = timings if timings is not None else {}
        started = time.perf_counter()
        pairs = [(exercise, position) for exercise, positions in enumerate(candidates) for position in positions]
        tokens: list[str] = []
        stats: dict[str, float] = {}
        if pairs:
            self.calibrate()
            candidates = [[j for j in positions if self.tests[j] is not None] for positions in candidates]
            pairs = [(exercise, position) for exercise, positions in enumerate(candidates) for position in positions]
            names = [name or "" for name in functions]
            tokens = run_pairs(pairs, sources, names, self.tests, self.config, stats, self.budgets)
        timings["functional"] = timings.get("functional", 0.0) + time.perf_counter() - started
        timings["functional_pairs"] = timings.get("functional_pairs", 0) + len(pairs)
        timings["functional_jobs"] = timings.get("functional_jobs", 0) + stats.get("jobs", 0)
        for stat in ("split_jobs", "killed_pairs"):
            timings[f"functional_{stat}"] = timings.get(f"functional_{stat}", 0) + stats.get(stat, 0)
        return best_matches(candidates, dict(zip(pairs, tokens)), self.tests)
