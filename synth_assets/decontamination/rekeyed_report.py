"""The shared part of the contamination reports whose rows are not exercises
(`textbook_contamination_report`, `synthesis_contamination_report`,
`instructions_contamination_report`): each scores its rows exactly as
`contamination_report` scores an exercise, then keys the exercise-shaped report by its
own id columns.

- `SCORE_SCHEMA`: the report columns after the exercise's keys (the scores,
  `fired_signals`, `verdict`, `reason`); a report's schema is its own key columns
  followed by these.
- `score_and_write`: the run each of those assets makes: load the benchmarks, score the
  rows (through an LLM session when embeddings or the judge are on), write the re-keyed
  report, and return it with the metadata the asset then adds its own counts to.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dagster as dg
import polars as pl

from resources.llm import LLMResource
from resources.warehouse import Lake, Warehouse
from synth_assets.decontamination.benchmark_index import BenchmarkIndex
from synth_assets.decontamination.benchmarks import load_benchmarks
from synth_assets.decontamination.contamination_report import (
    REPORT_SCHEMA,
    DecontaminationConfig,
    needs_session,
    report_rows,
    run_metadata,
    score_rows,
)

EXERCISE_KEYS = ("exercise_id", "function_name")
SCORE_SCHEMA = {name: dtype for name, dtype in REPORT_SCHEMA.items() if name not in EXERCISE_KEYS}


@dataclass(frozen=True)
class ScoredReport:
    """The re-keyed report as written, `run_metadata` of the run (counts, removals per
    signal, thresholds, seconds per stage), the LLM session's usage and cost (empty
    without a session), and how the embeddings went (`error` when they failed)."""

    table: pl.DataFrame
    metadata: dict[str, Any]
    llm_metadata: dict[str, Any]
    embedding_status: dict[str, Any]


def score_and_write(
    context: dg.AssetExecutionContext, config: DecontaminationConfig, warehouse: Warehouse, llm: LLMResource,
    lake: Lake, table_name: str, ids: list[str], sources: list[str],
    rekey: Callable[[pl.DataFrame], pl.DataFrame], names: list[str | None] | None = None,
) -> ScoredReport:
    """Score `sources` (one per id; `names`, when given, the function each defines, for
    the functional signal) against the configured benchmarks with the signals and
    thresholds of `contamination_report`, write `rekey(report)` (the exercise-shaped
    report, in the order of `ids`) to `table_name` in `lake`, and return it with the
    run's metadata."""
    names = names if names is not None else [None] * len(ids)
    problems = load_benchmarks(config.include_humaneval, config.extra_benchmark_paths)
    index = BenchmarkIndex.from_problems(problems, config.similarity(), functional=config.use_functional)
    timings: dict[str, float] = {}
    embedding_status: dict[str, Any] = {}
    with needs_session(config, llm, context, warehouse, bool(ids)) as session:
        scores = score_rows(index, problems, ids, sources, names, config, session, timings, embedding_status)
        report = report_rows(scores, names, config.thresholds())
        table = rekey(report)
        lake.write_table(table_name, table)
        llm_metadata = session.metadata() if session is not None else {}
    metadata = run_metadata(report, config, problems, index, timings, embedding_status)
    return ScoredReport(table, metadata, llm_metadata, embedding_status)
