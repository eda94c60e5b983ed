"""Every contamination signal over one benchmark, and the verdict.

`BenchmarkIndex` builds the four signal indexes (`synth_assets.decontamination.signals`)
once over a benchmark (164 HumanEval problems), splits each exercise into docstring and
code once, and scores a batch: the n-gram, MinHash and AST signals in worker processes
(fork) over chunks of exercises while the embedding requests run in the calling process.
`verdict` turns one exercise's `SignalScores` into `clean` / `contaminated` with a reason,
given the `Thresholds`. `contamination_report` wires this into the asset and
`bench/decontaminate.py` times it.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from synth_assets.decontamination.signals.ast import AstConfig, AstIndex
from synth_assets.decontamination.signals.code_document import CodeDocument
from synth_assets.decontamination.signals.embedding import nearest_by_embedding
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
    notes: list[str] = field(default_factory=list)


SIGNALS = ("ngram", "minhash", "embedding", "ast")


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
    return "clean", "below every threshold (" + ", ".join(parts) + ")" + notes, []


@dataclass(frozen=True)
class SimilarityConfig:
    ngram: NgramConfig = NgramConfig()
    minhash: MinhashConfig = MinhashConfig()
    ast: AstConfig = AstConfig()


# (n-gram task, overlap, longest run, MinHash task, Jaccard, AST task, AST rate)
ChunkScores = tuple[str | None, float, int, str | None, float, str | None, float | None]

# The index a forked worker scores with: set in the parent just before the pool forks, so
# workers inherit it (and the parent's string-hash salt, which the AST hashes rely on)
# instead of unpickling it.
_FORKED_INDEX: BenchmarkIndex | None = None


def _score_in_forked_worker(sources: list[str]) -> tuple[list[ChunkScores], dict[str, float]]:
    assert _FORKED_INDEX is not None, "worker started without a benchmark index"
    return _FORKED_INDEX.score_sources(sources)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class BenchmarkIndex:
    """Every per-signal index over one benchmark, built once."""

    # Below this many exercises a process pool costs more than it saves.
    parallel_min_exercises = 1000

    def __init__(self, task_ids: Sequence[str], sources: Sequence[str], config: SimilarityConfig = SimilarityConfig()):
        self.config = config
        self.task_ids = list(task_ids)
        self.sources = list(sources)
        docs = [CodeDocument.from_source(task_id, source) for task_id, source in zip(task_ids, sources)]
        self.ngrams = NgramIndex(task_ids, docs, config.ngram)
        self.minhash = MinhashIndex(task_ids, docs, config.minhash)
        self.ast = AstIndex(task_ids, sources, config.ast)
        self.problem_vectors: np.ndarray | None = None

    def score_sources(self, sources: Sequence[str]) -> tuple[list[ChunkScores], dict[str, float]]:
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
        minhash_matches = self.minhash.query_batch(docs)
        timings["minhash"] = time.process_time() - started

        started = time.process_time()
        ast_matches = [self.ast.query(source) for source in sources]
        timings["ast"] = time.process_time() - started
        rows = [
            (n.task_id, n.overlap, n.longest_shared, m.task_id, m.jaccard, a.task_id, a.match_rate)
            for n, m, a in zip(ngram_matches, minhash_matches, ast_matches)
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
    ) -> list[SignalScores]:
        """Scores of every exercise against every problem. `embed` (texts -> (n, d)
        vectors, NaN rows = failed) enables the embedding signal; `timings` collects
        seconds per stage: CPU seconds for split/ngram/minhash/ast (summed over
        workers), wall seconds for `embedding` and for `signals_wall` (the whole
        token/AST phase).

        `workers` (default: the usable cores) processes forked from this one score
        chunks of exercises in parallel once there are `parallel_min_exercises`; the
        embedding requests run in this process meanwhile."""
        timings = timings if timings is not None else {}
        sources = list(sources)
        workers = available_cores() if workers is None else max(int(workers), 1)
        if len(sources) < self.parallel_min_exercises or "fork" not in multiprocessing.get_all_start_methods():
            workers = 1
        size = chunk_size or max(250, min(2000, -(-len(sources) // (workers * 8))))
        chunks = [sources[start : start + size] for start in range(0, len(sources), size)]

        global _FORKED_INDEX
        started = time.perf_counter()
        exercise_vectors = problem_vectors = None
        if workers > 1 and len(chunks) > 1:
            _FORKED_INDEX = self
            try:
                with multiprocessing.get_context("fork").Pool(min(workers, len(chunks))) as pool:
                    pending = pool.map_async(_score_in_forked_worker, chunks, chunksize=1)
                    if embed is not None:  # HTTP / embedding work overlaps the workers
                        problem_vectors, exercise_vectors = self._embed(embed, sources, timings)
                    results = pending.get()
            finally:
                _FORKED_INDEX = None
        else:
            results = [self.score_sources(chunk) for chunk in chunks]
        timings["signals_wall"] = timings.get("signals_wall", 0.0) + time.perf_counter() - started
        for _, chunk_timings in results:
            for stage, seconds in chunk_timings.items():
                timings[stage] = timings.get(stage, 0.0) + seconds

        rows = [SignalScores(exercise_id=exercise_id) for exercise_id in exercise_ids]
        chunk_rows = (scores for chunk_scores, _ in results for scores in chunk_scores)
        for row, (ngram_task, overlap, longest, minhash_task, jaccard, ast_task, ast_rate) in zip(rows, chunk_rows):
            row.ngram_task_id, row.max_ngram_overlap, row.longest_shared_ngram = ngram_task, overlap, longest
            row.minhash_task_id, row.minhash_jaccard = minhash_task, jaccard
            row.ast_task_id, row.ast_match_rate = ast_task, ast_rate
            if ast_rate is None:
                row.notes.append("ast: solution does not parse, AST signal skipped")

        if embed is not None:
            if exercise_vectors is None:
                problem_vectors, exercise_vectors = self._embed(embed, sources, timings)
            started = time.perf_counter()
            for row, match in zip(rows, nearest_by_embedding(exercise_vectors, problem_vectors, self.task_ids)):
                row.embedding_task_id, row.embedding_cosine, row.embedding_l2 = match.task_id, match.cosine, match.l2
                if match.cosine is None:
                    row.notes.append("embedding: vector unavailable, embedding signal skipped")
            timings["embedding"] = timings.get("embedding", 0.0) + time.perf_counter() - started
        return rows

    def _embed(
        self, embed: Callable[[list[str]], np.ndarray], sources: list[str], timings: dict[str, float]
    ) -> tuple[np.ndarray, np.ndarray]:
        started = time.perf_counter()
        if self.problem_vectors is None:  # the benchmark is embedded once per index
            self.problem_vectors = np.asarray(embed(list(self.sources)), dtype=np.float32)
        exercise_vectors = np.asarray(embed(sources), dtype=np.float32)
        timings["embedding"] = timings.get("embedding", 0.0) + time.perf_counter() - started
        return self.problem_vectors, exercise_vectors
