"""Every contamination signal over one benchmark, and the verdict.

`BenchmarkIndex` builds the signal indexes (`synth_assets.decontamination.signals`)
once over a benchmark (164 HumanEval problems), splits each exercise into docstring and
code once, and scores a batch: the n-gram, MinHash and AST signals in worker processes
(fork) over chunks of exercises while the embedding requests run in the calling process.
Built from `BenchmarkProblem`s with tests (`from_problems`), it then runs the functional
signal: each exercise against its candidates' official tests in the sandbox, the
candidates being the top-k nearest by AST, MinHash and embedding plus every problem of
the same signature.
`verdict` turns one exercise's `SignalScores` into `clean` / `contaminated` with a reason,
given the `Thresholds`. `contamination_report` wires this into the asset and
`bench/decontaminate.py` times it.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from synth_assets.decontamination.benchmarks import BenchmarkProblem
from synth_assets.decontamination.signals.ast import AstConfig, AstIndex, parse_source
from synth_assets.decontamination.signals.code_document import CodeDocument
from synth_assets.decontamination.signals.embedding import nearest_by_embedding
from synth_assets.decontamination.signals.judge import SAME as JUDGE_SAME
from synth_assets.decontamination.signals.functional import (
    FunctionalConfig,
    FunctionalIndex,
    Signature,
    exercise_signature,
)
from synth_assets.decontamination.signals.minhash import MinhashConfig, MinhashIndex
from synth_assets.decontamination.signals.ngram import NgramConfig, NgramIndex


def exercise_source(exercise: str | None, solution: str | None, code: str | None = None) -> str:
    """The full function of a `code_exercises` row.

    A `code` column wins when present. A `solution` that is a whole function (`def ...`)
    is used as is; a bare body is appended to the `exercise` (signature + docstring)."""
    if code and code.strip():
        return code
    exercise = exercise or ""
    solution = solution or ""
    if re.search(r"^(async\s+)?def\s", solution, flags=re.MULTILINE):
        # The solution repeats the signature; keep imports/helpers from the exercise text
        # only if the solution does not already contain them.
        return solution if exercise.strip() in solution or not exercise.strip() else _merge(exercise, solution)
    return exercise.rstrip("\n") + "\n" + solution


def _merge(exercise: str, solution: str) -> str:
    lines = [line for line in exercise.splitlines() if line.startswith(("import ", "from "))]
    return "\n".join(lines + [solution]) if lines else solution


@dataclass(frozen=True)
class Thresholds:
    """A signal fires when its score reaches its threshold; any firing signal makes the
    exercise contaminated. Defaults come from the sweep in README_decontamination.md."""

    # phi-1 section 5.1: any shared 13-gram counts (overlap > 0 fires at 0.0).
    max_ngram_overlap: float = 0.0
    longest_shared_ngram: int = 13
    minhash_jaccard: float = 0.5
    # phi-1 section 5.2 sweeps the AST match rate; 0.8 is our sweep's choice.
    ast_match_rate: float = 0.8
    embedding_cosine: float = 0.95
    use_embedding: bool = True
    # Issue 17: passing every official test of a benchmark problem (share 1.0) makes
    # an exercise a functional copy of it, however it is worded.
    functional_pass_rate: float = 1.0
    use_functional: bool = True


@dataclass
class SignalScores:
    """Nearest benchmark problem and score per signal for one exercise (a report row)."""

    exercise_id: str
    ngram_task_id: str | None = None
    max_ngram_overlap: float = 0.0
    longest_shared_ngram: int = 0
    minhash_task_id: str | None = None
    minhash_jaccard: float = 0.0
    embedding_task_id: str | None = None
    embedding_cosine: float | None = None
    embedding_l2: float | None = None
    ast_task_id: str | None = None
    ast_match_rate: float | None = None
    # functional signal: the best candidate by tests passed (None = not run / no candidate)
    functional_task_id: str | None = None
    functional_tests_passed: int | None = None
    functional_tests_total: int | None = None
    functional_candidates: int = 0
    functional_outcome: str | None = None
    # LLM judge for the doubtful band (None = not asked)
    judge_task_id: str | None = None
    judge_verdict: str | None = None
    judge_rationale: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def functional_pass_rate(self) -> float | None:
        if self.functional_task_id is None or not self.functional_tests_total:
            return None
        return (self.functional_tests_passed or 0) / self.functional_tests_total


SIGNALS = ("ngram", "minhash", "embedding", "ast", "functional", "judge")


def fired_signals(scores: SignalScores, thresholds: Thresholds) -> list[tuple[str, str]]:
    """(signal, explanation) for every signal at or above its threshold."""
    fired: list[tuple[str, str]] = []
    if scores.ngram_task_id and scores.max_ngram_overlap >= thresholds.max_ngram_overlap:
        fired.append(("ngram", f"max_ngram_overlap {scores.max_ngram_overlap:.2f} >= {thresholds.max_ngram_overlap} vs {scores.ngram_task_id}"))
    elif scores.ngram_task_id and scores.longest_shared_ngram >= thresholds.longest_shared_ngram:
        fired.append(("ngram", f"longest_shared_ngram {scores.longest_shared_ngram} >= {thresholds.longest_shared_ngram} tokens vs {scores.ngram_task_id}"))
    if scores.minhash_task_id and scores.minhash_jaccard >= thresholds.minhash_jaccard:
        fired.append(("minhash", f"minhash_jaccard {scores.minhash_jaccard:.2f} >= {thresholds.minhash_jaccard} vs {scores.minhash_task_id}"))
    if scores.ast_match_rate is not None and scores.ast_task_id and scores.ast_match_rate >= thresholds.ast_match_rate:
        fired.append(("ast", f"ast_match_rate {scores.ast_match_rate:.2f} >= {thresholds.ast_match_rate} vs {scores.ast_task_id}"))
    if (
        thresholds.use_embedding
        and scores.embedding_cosine is not None
        and scores.embedding_cosine >= thresholds.embedding_cosine
    ):
        fired.append(("embedding", f"embedding_cosine {scores.embedding_cosine:.3f} >= {thresholds.embedding_cosine} vs {scores.embedding_task_id}"))
    rate = scores.functional_pass_rate
    if thresholds.use_functional and rate is not None and rate >= thresholds.functional_pass_rate:
        fired.append(("functional", f"functional: passes {scores.functional_tests_passed}/{scores.functional_tests_total} "
                      f"official tests of {scores.functional_task_id}"))
    if scores.judge_verdict == JUDGE_SAME:
        fired.append(("judge", f"judge: same problem as {scores.judge_task_id} ({(scores.judge_rationale or '')[:160]})"))
    return fired


def verdict(scores: SignalScores, thresholds: Thresholds) -> tuple[str, str, list[str]]:
    """("contaminated" | "clean", reason, fired signal names). The reason names every
    signal that fired with its score, threshold and benchmark task; a clean reason lists
    the highest score of each signal so an auditor sees how close it came."""
    fired = fired_signals(scores, thresholds)
    notes = ("; " + "; ".join(scores.notes)) if scores.notes else ""
    if fired:
        return "contaminated", "; ".join(text for _, text in fired) + notes, [name for name, _ in fired]
    parts = [
        f"ngram {scores.max_ngram_overlap:.2f}/{scores.longest_shared_ngram}tok",
        f"minhash {scores.minhash_jaccard:.2f}",
        "ast n/a" if scores.ast_match_rate is None else f"ast {scores.ast_match_rate:.2f}",
    ]
    if thresholds.use_embedding:
        parts.append("embedding n/a" if scores.embedding_cosine is None else f"embedding {scores.embedding_cosine:.3f}")
    if thresholds.use_functional and scores.functional_outcome is not None:
        parts.append(
            f"functional {scores.functional_tests_passed}/{scores.functional_tests_total} vs {scores.functional_task_id}"
            if scores.functional_task_id else f"functional: {scores.functional_outcome}"
        )
    if scores.judge_verdict is not None:
        parts.append(f"judge {scores.judge_verdict} vs {scores.judge_task_id}")
    return "clean", "below every threshold (" + ", ".join(parts) + ")" + notes, []


@dataclass(frozen=True)
class SimilarityConfig:
    ngram: NgramConfig = NgramConfig()
    minhash: MinhashConfig = MinhashConfig()
    ast: AstConfig = AstConfig()
    functional: FunctionalConfig = FunctionalConfig()


# (n-gram task, overlap, longest run, MinHash task, Jaccard, AST task, AST rate,
#  nearest problem positions by AST and MinHash, (function name, signature) or None)
ChunkScores = tuple[
    str | None, float, int, str | None, float, str | None, float | None, tuple[int, ...], tuple[str, Signature] | None
]

# How long forked workers may take (plus 10 ms per exercise) before the parent scores alone.
FORKED_WORKERS_TIMEOUT_S = 120.0

# The index a forked worker scores with: set in the parent just before the pool forks, so
# workers inherit it (and the parent's string-hash salt, which the AST hashes rely on)
# instead of unpickling it.
_FORKED_INDEX: BenchmarkIndex | None = None


def _score_in_forked_worker(chunk: tuple[list[str], list[str | None]]) -> tuple[list[ChunkScores], dict[str, float]]:
    assert _FORKED_INDEX is not None, "worker started without a benchmark index"
    return _FORKED_INDEX.score_sources(*chunk)


def _default_signal_handlers() -> None:
    """A forked worker dies on SIGTERM, whatever handler its parent installed (Ray's driver
    installs one): a Python handler needs the child's main thread, which a lock inherited
    from another thread of the parent can hold forever, and the pool's terminate() would
    then wait for that child without end (seen in CI after the Ray tests)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class BenchmarkIndex:
    """Every per-signal index over one benchmark, built once."""

    # Below this many exercises a process pool costs more than it saves.
    parallel_min_exercises = 1000

    def __init__(
        self, task_ids: Sequence[str], sources: Sequence[str], config: SimilarityConfig = SimilarityConfig(),
        functional: FunctionalIndex | None = None,
    ):
        self.config = config
        self.task_ids = list(task_ids)
        self.sources = list(sources)
        docs = [CodeDocument.from_source(task_id, source) for task_id, source in zip(task_ids, sources)]
        self.ngrams = NgramIndex(task_ids, docs, config.ngram)
        self.minhash = MinhashIndex(task_ids, docs, config.minhash)
        self.ast = AstIndex(task_ids, sources, config.ast)
        self.functional = functional
        self.top_k = config.functional.top_k if functional is not None else 0
        self.problem_vectors: np.ndarray | None = None

    @classmethod
    def from_problems(
        cls, problems: Sequence[BenchmarkProblem], config: SimilarityConfig = SimilarityConfig(), functional: bool = True
    ) -> BenchmarkIndex:
        """The index over benchmark problems; with `functional`, problems that carry
        tests also get the functional signal (the sandbox is needed at scoring time)."""
        functional_index = FunctionalIndex(problems, config.functional) if functional else None
        if functional_index is not None and not functional_index.n_with_tests:
            functional_index = None
        return cls([p.task_id for p in problems], [p.source for p in problems], config, functional_index)

    def score_sources(self, sources: Sequence[str], function_names: Sequence[str | None] | None = None) -> tuple[list[ChunkScores], dict[str, float]]:
        """The n-gram, MinHash and AST signals for a chunk of exercise sources (what a
        worker process runs). Each source is split into docstring and code once; the
        n-gram signal tokenises the whole chunk in numpy, MinHash tokenises per source
        with the regex tokenizer (it needs each token's kind to normalise it). Returns
        one tuple per source and the CPU seconds spent per stage."""
        timings: dict[str, float] = {}
        started = time.process_time()
        docs = [CodeDocument.from_source("", source) for source in sources]
        timings["split"] = time.process_time() - started

        started = time.process_time()
        ngram_matches = self.ngrams.query_batch(docs)
        timings["ngram"] = time.process_time() - started

        started = time.process_time()
        minhash_matches = self.minhash.query_batch(docs, top_k=self.top_k)
        timings["minhash"] = time.process_time() - started

        started = time.process_time()
        names = function_names if function_names is not None else [None] * len(sources)
        trees = [parse_source(source) for source in sources]
        # the signature before the AST signal rewrites the tree in place
        signatures = (
            [exercise_signature(source, name, tree) if tree is not None else None for source, name, tree in zip(sources, names, trees)]
            if self.functional is not None else [None] * len(sources)
        )
        ast_matches = [self.ast.query(tree, self.top_k) for tree in trees]
        timings["ast"] = time.process_time() - started
        rows = [
            (n.task_id, n.overlap, n.longest_shared, m.task_id, m.jaccard, a.task_id, a.match_rate, a.nearest + m.nearest, signature)
            for n, m, a, signature in zip(ngram_matches, minhash_matches, ast_matches, signatures)
        ]
        return rows, timings

    def score(
        self,
        exercise_ids: Sequence[str],
        sources: Sequence[str],
        embed: Callable[[list[str]], np.ndarray] | None = None,
        timings: dict[str, float] | None = None,
        workers: int | None = None,
        chunk_size: int | None = None,
        function_names: Sequence[str | None] | None = None,
        functional: bool = True,
        functional_skip: Thresholds | None = None,
    ) -> list[SignalScores]:
        """Scores of every exercise against every problem. `embed` (texts -> (n, d)
        vectors, NaN rows = failed) enables the embedding signal; `timings` collects
        seconds per stage: CPU seconds for split/ngram/minhash/ast (summed over
        workers), wall seconds for `embedding` and for `signals_wall` (the whole
        token/AST phase).

        `workers` (default: the usable cores) processes forked from this one score
        chunks of exercises in parallel once there are `parallel_min_exercises`; the
        embedding requests run in this process meanwhile.

        The functional signal then runs (when the index has one and `functional`):
        `function_names` name each exercise's function (default: its last top-level def);
        with `functional_skip`, exercises another signal already flags at those thresholds
        are not run (they are removed anyway). `timings["functional"]` is its wall time. Raises SandboxUnavailable when this
        machine cannot isolate the exercises' code."""
        timings = timings if timings is not None else {}
        sources = list(sources)
        workers = available_cores() if workers is None else max(int(workers), 1)
        if len(sources) < self.parallel_min_exercises or "fork" not in multiprocessing.get_all_start_methods():
            workers = 1
        size = chunk_size or max(250, min(2000, -(-len(sources) // (workers * 8))))
        names = list(function_names) if function_names is not None else [None] * len(sources)
        chunks = [(sources[start : start + size], names[start : start + size]) for start in range(0, len(sources), size)]

        global _FORKED_INDEX
        started = time.perf_counter()
        exercise_vectors = problem_vectors = None
        if workers > 1 and len(chunks) > 1:
            _FORKED_INDEX = self
            try:
                context = multiprocessing.get_context("fork")
                with context.Pool(min(workers, len(chunks)), initializer=_default_signal_handlers) as pool:
                    pending = pool.map_async(_score_in_forked_worker, chunks, chunksize=1)
                    if embed is not None:  # HTTP / embedding work overlaps the workers
                        problem_vectors, exercise_vectors = self._embed(embed, sources, timings)
                    try:
                        results = pending.get(timeout=FORKED_WORKERS_TIMEOUT_S + 0.01 * len(sources))
                    except multiprocessing.TimeoutError:
                        # A child forked from a many-threaded parent can inherit a lock some
                        # other thread held (seen once under pytest): score here instead.
                        # SIGKILL first: a child stuck before its initializer ran would
                        # still run the parent's SIGTERM handler, i.e. never exit.
                        for process in pool._pool:  # the pool's worker processes
                            process.kill()
                        pool.terminate()
                        timings["forked_workers_timed_out"] = 1.0
                        results = [self.score_sources(*chunk) for chunk in chunks]
            finally:
                _FORKED_INDEX = None
        else:
            results = [self.score_sources(*chunk) for chunk in chunks]
        timings["signals_wall"] = timings.get("signals_wall", 0.0) + time.perf_counter() - started
        for _, chunk_timings in results:
            for stage, seconds in chunk_timings.items():
                timings[stage] = timings.get(stage, 0.0) + seconds

        rows = [SignalScores(exercise_id=exercise_id) for exercise_id in exercise_ids]
        chunk_rows = [scores for chunk_scores, _ in results for scores in chunk_scores]
        for row, (ngram_task, overlap, longest, minhash_task, jaccard, ast_task, ast_rate, _, _) in zip(rows, chunk_rows):
            row.ngram_task_id, row.max_ngram_overlap, row.longest_shared_ngram = ngram_task, overlap, longest
            row.minhash_task_id, row.minhash_jaccard = minhash_task, jaccard
            row.ast_task_id, row.ast_match_rate = ast_task, ast_rate
            if ast_rate is None:
                row.notes.append("ast: solution does not parse, AST signal skipped")

        nearest = [chunk_row[7] for chunk_row in chunk_rows]
        if embed is not None:
            if exercise_vectors is None:
                problem_vectors, exercise_vectors = self._embed(embed, sources, timings)
            started = time.perf_counter()
            matches = nearest_by_embedding(exercise_vectors, problem_vectors, self.task_ids, top_k=self.top_k)
            for position, (row, match) in enumerate(zip(rows, matches)):
                row.embedding_task_id, row.embedding_cosine, row.embedding_l2 = match.task_id, match.cosine, match.l2
                nearest[position] = nearest[position] + match.nearest
                if match.cosine is None:
                    row.notes.append("embedding: vector unavailable, embedding signal skipped")
            timings["embedding"] = timings.get("embedding", 0.0) + time.perf_counter() - started
        if self.functional is not None and functional:
            signatures = [chunk_row[8] for chunk_row in chunk_rows]
            flagged = [bool(functional_skip and fired_signals(row, functional_skip)) for row in rows]
            todo = [k for k, skip in enumerate(flagged) if not skip]
            self._run_functional(
                [rows[k] for k in todo], [sources[k] for k in todo], [signatures[k] for k in todo],
                [nearest[k] for k in todo], timings,
            )
            for row, skip in zip(rows, flagged):
                if skip:
                    row.functional_outcome = "not run: another signal already flags it"
        return rows

    def _run_functional(
        self, rows: list[SignalScores], sources: list[str], signatures: list[tuple[str, Signature] | None],
        nearest: list[tuple[int, ...]], timings: dict[str, float],
    ) -> None:
        assert self.functional is not None
        candidates = [
            self.functional.candidates(near, found[1] if found else None) for near, found in zip(nearest, signatures)
        ]
        names = [found[0] if found else None for found in signatures]
        matches = self.functional.run(sources, names, candidates, timings)
        for row, match, found in zip(rows, matches, signatures):
            row.functional_candidates = match.candidates_run
            row.functional_outcome = match.outcome if found else "no function to call"
            if match.task_id is not None:
                row.functional_task_id = match.task_id
                row.functional_tests_passed, row.functional_tests_total = match.tests_passed, match.tests_total

    def _embed(
        self, embed: Callable[[list[str]], np.ndarray], sources: list[str], timings: dict[str, float]
    ) -> tuple[np.ndarray, np.ndarray]:
        started = time.perf_counter()
        if self.problem_vectors is None:  # the benchmark is embedded once per index
            self.problem_vectors = np.asarray(embed(list(self.sources)), dtype=np.float32)
        exercise_vectors = np.asarray(embed(sources), dtype=np.float32)
        timings["embedding"] = timings.get("embedding", 0.0) + time.perf_counter() - started
        return self.problem_vectors, exercise_vectors
