"""`contamination_report` and `decontaminated_exercises`: phi-1 section 5 decontamination
of the generated code exercises against HumanEval (and any extra benchmark JSONL).

Signals per exercise (synth_assets/decontamination/signals/): 13-gram overlap, MinHash Jaccard
of normalised code shingles, embedding cosine/L2 through the LLM layer, the AST match
rate of structure/identifier/literal/order-normalised syntax trees, the functional signal
(the exercise passes a benchmark problem's official tests in the sandbox), and an
optional LLM judge for the doubtful band. Any signal at or above its threshold marks the
exercise contaminated; the reason names signal, score, threshold and benchmark task.
Threshold defaults come from the sweep in README_decontamination.md.
"""


from collections import Counter
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from resources.llm import LLMResource
from resources.warehouse import Warehouse
from synth_assets.automation import on_upstream_change
from synth_assets.decontamination.benchmarks import BenchmarkProblem, load_benchmarks
from synth_assets.decontamination.benchmark_index import (
    SIGNALS,
    BenchmarkIndex,
    SignalScores,
    SimilarityConfig,
    Thresholds,
    exercise_source,
    verdict,
)
from synth_assets.common.sandbox import SandboxUnavailable
from synth_assets.common.tables import markdown_table, table_result
from synth_assets.decontamination.signals.ast import AstConfig
from synth_assets.decontamination.signals.functional import FunctionalConfig
from synth_assets.decontamination.signals.judge import JUDGE_PROMPT_VERSION, JudgeConfig, judge_doubtful
from synth_assets.decontamination.signals.judge import SAME as JUDGE_SAME
from synth_assets.decontamination.signals.minhash import MinhashConfig
from synth_assets.decontamination.signals.ngram import NgramConfig

CODE_VERSION = "decontaminate-2"
EXERCISES_TABLE = "code_exercises"
REPORT_TABLE = "contamination_report"
CLEAN = "clean"
CONTAMINATED = "contaminated"
# The published thresholds (Thresholds' defaults: the README_decontamination.md sweep):
# the config defaults below, and what quality_checks holds every kept exercise to.
DEFAULT_THRESHOLDS = Thresholds()

REPORT_SCHEMA = {
    "exercise_id": pl.Utf8,
    "function_name": pl.Utf8,
    "ngram_task_id": pl.Utf8,
    "max_ngram_overlap": pl.Float64,
    "longest_shared_ngram": pl.Int64,
    "minhash_task_id": pl.Utf8,
    "minhash_jaccard": pl.Float64,
    "embedding_task_id": pl.Utf8,
    "embedding_cosine": pl.Float64,
    "embedding_l2": pl.Float64,
    "ast_task_id": pl.Utf8,
    "ast_match_rate": pl.Float64,
    "functional_task_id": pl.Utf8,
    "functional_tests_passed": pl.Int64,
    "functional_tests_total": pl.Int64,
    "functional_pass_rate": pl.Float64,
    "functional_candidates": pl.Int64,
    "functional_outcome": pl.Utf8,
    "judge_task_id": pl.Utf8,
    "judge_verdict": pl.Utf8,
    "judge_rationale": pl.Utf8,
    "fired_signals": pl.List(pl.Utf8),
    "verdict": pl.Utf8,
    "reason": pl.Utf8,
}


class DecontaminationConfig(dg.Config):
    """Benchmarks, signal parameters and thresholds. A signal fires at score >= threshold."""

    include_humaneval: bool = Field(default=True, description="Check against the 164 HumanEval problems.")
    extra_benchmark_paths: list[str] = Field(
        default_factory=list,
        description="Extra benchmark JSONL files of {task_id, prompt, canonical_solution}; a missing file fails the run.",
    )
    # phi-1 section 5.1: 13-gram overlap.
    ngram_size: int = Field(default=13, description="n of the n-grams (phi-1: 13).")
    ngram_normalise_identifiers: bool = Field(
        default=False, description="Map user identifiers to one token before taking n-grams."
    )
    # phi-1 counts *any* shared 13-gram of the docstring as contamination; 0.0 does the same
    # (no clean library function shared a single 13-gram in the sweep).
    max_ngram_overlap: float = Field(
        default=DEFAULT_THRESHOLDS.max_ngram_overlap,
        description="Fire when the share of a problem's docstring or code 13-grams found in the exercise "
        "is >= this; 0.0 = any shared n-gram (phi-1).",
    )
    longest_shared_ngram: int = Field(
        default=DEFAULT_THRESHOLDS.longest_shared_ngram,
        description="Also fire when the longest common token run with a problem is >= this many tokens.",
    )
    minhash_num_perm: int = Field(default=128, description="MinHash permutations (datasketch default).")
    minhash_shingle_size: int = Field(default=5, description="Tokens per code shingle.")
    minhash_jaccard: float = Field(
        default=DEFAULT_THRESHOLDS.minhash_jaccard,
        description="Fire when estimated Jaccard of normalised code shingles >= this.",
    )
    ast_min_subtree_nodes: int = Field(default=3, description="Smallest normalised subtree counted by the AST signal.")
    # phi-1 section 5.2 sweeps the AST match rate; see README_decontamination.md for ours.
    ast_match_rate: float = Field(
        default=DEFAULT_THRESHOLDS.ast_match_rate, description="Fire when the normalised-AST match rate >= this."
    )
    use_embedding: bool = Field(
        default=True, description="Embed exercises and problems through the LLM layer (off = three signals)."
    )
    embedding_cosine: float = Field(
        default=DEFAULT_THRESHOLDS.embedding_cosine, description="Fire when embedding cosine similarity >= this."
    )
    embedding_max_chars: int = Field(
        # The signature and docstring come first and carry what the function is about;
        # 600 characters keep the bundled model's embedding of 164 problems to ~2 minutes.
        default=600,
        description="Embed only the first N characters of each problem and exercise (0 = whole text).",
    )
    ast_canonical: bool = Field(
        default=True,
        description="Rewrite loops (for-range/while), comprehensions vs explicit loops, augmented assignment "
        "and negated if/else into one form before the AST match (issue 17).",
    )
    use_functional: bool = Field(
        default=True,
        description="Run each exercise against the official tests of its candidate benchmark problems in the "
        "sandbox (needs bubblewrap or user namespaces; the run fails if the sandbox cannot isolate). No LLM call.",
    )
    functional_pass_rate: float = Field(
        default=DEFAULT_THRESHOLDS.functional_pass_rate,
        description="Fire when the share of a problem's official tests the exercise passes is >= this (1.0 = all).",
    )
    functional_on_flagged: bool = Field(
        default=False,
        description="Also run the functional signal on exercises another signal already flags (slower; for audits "
        "and sweeps). Off: those rows say `not run` in functional_outcome.",
    )
    functional_top_k: int = Field(
        default=FunctionalConfig().top_k,
        description="Candidates per similarity signal (AST, MinHash, embedding), plus every same-signature problem.",
    )
    use_llm_judge: bool = Field(
        default=False,
        description="Ask the LLM whether doubtful pairs (signals just below their thresholds) are the same problem, "
        "possibly rephrased or translated. OFF by default: the bundled local model (SmolLM2-135M) cannot judge "
        "this reliably; turn it on with a capable endpoint model. Cached and priced like every call.",
    )
    judge_max_pairs: int = Field(default=JudgeConfig().max_pairs, description="At most this many pairs judged per run (closest first).")
    audit_top_n: int = Field(default=20, description="Rows in the closest-kept-exercise audit table.")

    def thresholds(self) -> Thresholds:
        return Thresholds(
            max_ngram_overlap=self.max_ngram_overlap,
            longest_shared_ngram=self.longest_shared_ngram,
            minhash_jaccard=self.minhash_jaccard,
            ast_match_rate=self.ast_match_rate,
            embedding_cosine=self.embedding_cosine,
            use_embedding=self.use_embedding,
            functional_pass_rate=self.functional_pass_rate,
            use_functional=self.use_functional,
        )

    def similarity(self) -> SimilarityConfig:
        return SimilarityConfig(
            ngram=NgramConfig(n=self.ngram_size, normalise_identifiers=self.ngram_normalise_identifiers),
            minhash=MinhashConfig(num_perm=self.minhash_num_perm, shingle_size=self.minhash_shingle_size),
            ast=AstConfig(min_subtree_nodes=self.ast_min_subtree_nodes, canonical=self.ast_canonical),
            functional=FunctionalConfig(top_k=self.functional_top_k),
        )


# ----------------------------------------------------------------------------- plain functions


def exercise_sources(exercises: pl.DataFrame) -> list[str]:
    """Full function source per `code_exercises` row: `code` column if present, else the
    `source` column (the exercises asset's assembled function), else exercise + solution."""
    columns = set(exercises.columns)
    codes = exercises["code"].to_list() if "code" in columns else [None] * exercises.height
    if "source" in columns and "code" not in columns:
        codes = exercises["source"].to_list()
    ex = exercises["exercise"].to_list() if "exercise" in columns else [None] * exercises.height
    sol = exercises["solution"].to_list() if "solution" in columns else [None] * exercises.height
    return [exercise_source(e, s, c) for e, s, c in zip(ex, sol, codes)]


def guarded_embedder(
    embed: Callable[[list[str]], np.ndarray], status: dict[str, Any], max_chars: int | None = None
) -> Callable[[list[str]], np.ndarray]:
    """`embed` that never raises: a failure becomes NaN rows (the signal is skipped for
    them) and the error class is recorded in `status` for the run's metadata. Texts are
    cut to their first `max_chars` characters (benchmark problems and exercises alike)."""

    def run(texts: list[str]) -> np.ndarray:
        if max_chars:
            texts = [text[:max_chars] for text in texts]
        try:
            vectors = np.asarray(embed(texts), dtype=np.float32)
            if vectors.ndim != 2 or vectors.shape[0] != len(texts):
                raise ValueError(f"embedder returned shape {vectors.shape} for {len(texts)} texts")
        except Exception as exc:  # degrade to three signals, but say so
            status["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
            return np.full((len(texts), 1), np.nan, dtype=np.float32)
        status["failed_rows"] = status.get("failed_rows", 0) + int((~np.isfinite(vectors).all(axis=1)).sum())
        return vectors

    return run


def report_rows(scores: list[SignalScores], function_names: list[str | None], thresholds: Thresholds) -> pl.DataFrame:
    """One report row per exercise with its verdict and reason."""
    rows = []
    for score, function_name in zip(scores, function_names):
        decision, reason, fired = verdict(score, thresholds)
        rows.append(
            {
                "exercise_id": score.exercise_id,
                "function_name": function_name,
                "ngram_task_id": score.ngram_task_id,
                "max_ngram_overlap": score.max_ngram_overlap,
                "longest_shared_ngram": score.longest_shared_ngram,
                "minhash_task_id": score.minhash_task_id,
                "minhash_jaccard": score.minhash_jaccard,
                "embedding_task_id": score.embedding_task_id,
                "embedding_cosine": score.embedding_cosine,
                "embedding_l2": score.embedding_l2,
                "ast_task_id": score.ast_task_id,
                "ast_match_rate": score.ast_match_rate,
                "functional_task_id": score.functional_task_id,
                "functional_tests_passed": score.functional_tests_passed,
                "functional_tests_total": score.functional_tests_total,
                "functional_pass_rate": score.functional_pass_rate,
                "functional_candidates": score.functional_candidates,
                "functional_outcome": score.functional_outcome,
                "judge_task_id": score.judge_task_id,
                "judge_verdict": score.judge_verdict,
                "judge_rationale": score.judge_rationale,
                "fired_signals": fired,
                "verdict": decision,
                "reason": reason,
            }
        )
    return pl.DataFrame(rows, schema=REPORT_SCHEMA)


def needs_session(config: DecontaminationConfig, llm: LLMResource, context: Any, warehouse: Warehouse, has_rows: bool):
    """The LLM session when embeddings or the judge are on (and there is work), else a
    context that yields None."""
    if (config.use_embedding or config.use_llm_judge) and has_rows:
        return llm.session(context, warehouse)
    return nullcontext(None)


def score_rows(
    index: BenchmarkIndex, problems: list[BenchmarkProblem], ids: list[str], sources: list[str], names: list[str | None],
    config: DecontaminationConfig, session: Any, timings: dict[str, float], embedding_status: dict[str, Any],
) -> list[SignalScores]:
    """Every signal for every row (embeddings and the judge through `session` when on);
    the functional signal skips rows another signal already flags unless
    `functional_on_flagged`. A sandbox that cannot isolate fails the run, saying how to
    run without the functional signal."""
    thresholds = config.thresholds()
    embed = (
        guarded_embedder(session.embed, embedding_status, config.embedding_max_chars)
        if session is not None and config.use_embedding else None
    )
    try:
        scores = index.score(ids, sources, embed=embed, timings=timings, function_names=names,
                             functional_skip=None if config.functional_on_flagged else thresholds)
    except SandboxUnavailable as exc:
        raise dg.Failure(f"the functional signal needs an isolating sandbox: {exc}. Launch with use_functional=False "
                         "to decontaminate without it (recall on paraphrased copies drops).") from exc
    if session is not None and config.use_llm_judge:
        problem_sources = {p.task_id: p.source for p in problems}
        timings["judge_pairs"] = judge_doubtful(
            scores, sources, problem_sources, thresholds, session.complete_json, JudgeConfig(max_pairs=config.judge_max_pairs)
        )
    return scores


def run_metadata(
    report: pl.DataFrame, config: DecontaminationConfig, problems: list[BenchmarkProblem], index: BenchmarkIndex,
    timings: dict[str, float], embedding_status: dict[str, Any],
) -> dict[str, Any]:
    """`report_metadata` plus how the run went: embedding status, seconds per stage,
    functional pairs / jobs, judge on or off, benchmark tasks whose tests were unusable."""
    metadata = report_metadata(report, config.thresholds(), problems, config.audit_top_n)
    metadata["embedding_status"] = (
        "disabled" if not config.use_embedding
        else embedding_status.get("error") and f"failed: {embedding_status['error']}"
        or f"ok ({embedding_status.get('failed_rows', 0)} failed rows)"
    )
    counters = ("functional_", "judge_")
    metadata.update({f"seconds/{name}": round(value, 3) for name, value in timings.items() if not name.startswith(counters)})
    metadata.update({name.replace("_", "/", 1): int(value) for name, value in timings.items() if name.startswith(counters)})
    metadata["judge"] = f"on ({JUDGE_PROMPT_VERSION})" if config.use_llm_judge else "off"
    if index.functional is not None and index.functional.unusable:
        metadata["functional/unusable_tasks"] = "; ".join(f"{task}: {why}" for task, why in index.functional.unusable.items())
    return metadata


SWEEP = {
    "max_ngram_overlap": [0.0, 0.1, 0.3, 0.5],
    "minhash_jaccard": [0.4, 0.5, 0.6, 0.7, 0.8],
    "ast_match_rate": [0.7, 0.8, 0.85, 0.9, 0.95],
    "embedding_cosine": [0.9, 0.95, 0.97, 0.99],
    "functional_pass_rate": [0.5, 0.8, 1.0],
}
_SCORE_TASK = {
    "max_ngram_overlap": "ngram_task_id",
    "minhash_jaccard": "minhash_task_id",
    "ast_match_rate": "ast_task_id",
    "embedding_cosine": "embedding_task_id",
    "functional_pass_rate": "functional_task_id",
}


def threshold_table(report: pl.DataFrame, thresholds: Thresholds) -> str:
    """Markdown: for each signal and candidate threshold, how many exercises this run's
    scores would put at or above it (the one in use is marked)."""
    rows = []
    for column, candidates in SWEEP.items():
        in_use = getattr(thresholds, column)
        scores = report.filter(pl.col(_SCORE_TASK[column]).is_not_null())[column].drop_nulls()
        for candidate in sorted(set(candidates) | {in_use}):
            rows.append((column, candidate, int((scores >= candidate).sum()), "yes" if candidate == in_use else ""))
    return markdown_table(rows, ["signal", "threshold", "exercises at or above", "in use"])


def closest_kept(report: pl.DataFrame, top_n: int) -> str:
    """Markdown: per benchmark task, the kept exercise that came closest (by its highest
    score relative to that signal's scale), the top N tasks first."""
    kept = report.filter(pl.col("verdict") == CLEAN)
    candidates = []
    for column, task_column in _SCORE_TASK.items():
        part = kept.filter(pl.col(task_column).is_not_null() & pl.col(column).is_not_null()).select(
            pl.col(task_column).alias("task_id"),
            "exercise_id",
            pl.lit(column).alias("signal"),
            pl.col(column).cast(pl.Float64).alias("score"),
        )
        candidates.append(part)
    if not candidates:
        return markdown_table([], ["task_id", "exercise_id", "signal", "score"])
    merged = pl.concat(candidates).sort("score", descending=True).unique("task_id", keep="first", maintain_order=True)
    top = merged.head(top_n)
    return markdown_table(
        [(r["task_id"], r["exercise_id"], r["signal"], round(r["score"], 3)) for r in top.iter_rows(named=True)],
        ["task_id", "closest kept exercise", "signal", "score"],
    )


def report_metadata(report: pl.DataFrame, thresholds: Thresholds, problems: list[BenchmarkProblem], audit_top_n: int) -> dict[str, Any]:
    fired = Counter(signal for signals in report["fired_signals"].to_list() for signal in signals)
    only = Counter(signals[0] for signals in report["fired_signals"].to_list() if len(signals) == 1)
    contaminated = int((report["verdict"] == CONTAMINATED).sum())
    benchmarks = Counter(problem.benchmark for problem in problems)
    return {
        "exercises": report.height,
        "contaminated": contaminated,
        "clean": report.height - contaminated,
        "benchmarks": ", ".join(f"{name} ({count})" for name, count in sorted(benchmarks.items())),
        **{f"removed_by/{signal}": fired.get(signal, 0) for signal in SIGNALS},
        **{f"removed_only_by/{signal}": only.get(signal, 0) for signal in SIGNALS},
        "ast_unparseable": int(report["ast_match_rate"].is_null().sum()),
        "functional_run": int((report["functional_candidates"] > 0).sum()),
        "judge_asked": int(report["judge_verdict"].is_not_null().sum()),
        "thresholds": dg.MetadataValue.md(threshold_table(report, thresholds)),
        "closest_kept_per_task": dg.MetadataValue.md(closest_kept(report, audit_top_n)),
    }


# ----------------------------------------------------------------------------- assets


@dg.asset(
    name=REPORT_TABLE,
    deps=[dg.AssetKey(EXERCISES_TABLE)],
    group_name="decontamination",
    kinds={"duckdb", "python", "openai"},
    owners=["team:synth-assets"],
    code_version=CODE_VERSION,
    automation_condition=on_upstream_change(),
)
def contamination_report(
    context: dg.AssetExecutionContext, config: DecontaminationConfig, warehouse: Warehouse, llm: LLMResource
) -> dg.MaterializeResult:
    """Every code exercise scored against every benchmark problem (HumanEval by default),
    phi-1 section 5 style, with a verdict and a reason.

    Per exercise and signal: the nearest benchmark task and its score. Signals: 13-gram
    overlap of docstring/code (`max_ngram_overlap`, `longest_shared_ngram` in tokens),
    MinHash Jaccard of identifier/literal-normalised code shingles (`minhash_jaccard`),
    embedding cosine and L2 distance through the LLM layer (`embedding_*`; null if
    embeddings are off or failed), the AST match rate of normalised syntax trees
    (`ast_match_rate`; null if the code does not parse; loops, comprehensions, augmented
    assignment and negated if/else are rewritten into one form first), and the
    functional signal: the exercise's function run in the sandbox against the official
    tests of its candidate problems (top-k by AST/MinHash/embedding plus same-signature
    problems); `functional_task_id` / `functional_tests_passed` / `functional_tests_total`
    is the best candidate, `functional_outcome` why it stopped. With `use_llm_judge`,
    rows just below the thresholds get an LLM verdict (`judge_*`). `verdict` is
    `contaminated` when any signal reaches its threshold, and `reason` says which, e.g.
    `ast_match_rate 0.93 >= 0.8 vs HumanEval/12` or `functional: passes 7/7 official
    tests of HumanEval/0`. Metadata: removals per signal, a threshold table, the closest
    *kept* exercise per task (audit) and the LLM cost."""
    with warehouse.materialization(context) as lake:
        if not lake.table_exists(EXERCISES_TABLE):
            raise dg.Failure(f"{EXERCISES_TABLE} does not exist yet; materialize code_exercises first")
        exercises = lake.query(f'SELECT * FROM "{EXERCISES_TABLE}" ORDER BY exercise_id')
        problems = load_benchmarks(config.include_humaneval, config.extra_benchmark_paths)
        thresholds = config.thresholds()
        index = BenchmarkIndex.from_problems(problems, config.similarity(), functional=config.use_functional)
        ids = exercises["exercise_id"].to_list()
        sources = exercise_sources(exercises)
        names = exercises["function_name"].to_list() if "function_name" in exercises.columns else [None] * len(ids)
        timings: dict[str, float] = {}
        embedding_status: dict[str, Any] = {}
        llm_metadata: dict[str, Any] = {}
        with needs_session(config, llm, context, warehouse, bool(ids)) as session:
            scores = score_rows(index, problems, ids, sources, names, config, session, timings, embedding_status)
            report = report_rows(scores, names, thresholds)
            lake.write_table(REPORT_TABLE, report)
            llm_metadata = session.metadata() if session is not None else {}
        if embedding_status.get("error"):
            context.log.warning(f"embeddings failed, embedding signal skipped: {embedding_status['error']}")
        metadata = run_metadata(report, config, problems, index, timings, embedding_status)
        context.log.info(
            f"{REPORT_TABLE}: {metadata['contaminated']} of {report.height} exercises contaminated "
            f"(n-gram {metadata['removed_by/ngram']}, minhash {metadata['removed_by/minhash']}, "
            f"ast {metadata['removed_by/ast']}, embedding {metadata['removed_by/embedding']}, "
            f"functional {metadata['removed_by/functional']}, judge {metadata['removed_by/judge']})"
        )
    return table_result(warehouse, REPORT_TABLE, {**metadata, **llm_metadata}, snapshot_id=lake.snapshot_id_published)
