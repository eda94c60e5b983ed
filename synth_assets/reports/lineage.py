"""Row lineage for one id: where an output row came from and what it cost.

    python -m synth_assets.lineage <exercise_id | section_id | doc_id | prompt_id | instruction_id> [--warehouse PATH]

An id prefix is enough when it is unique. The chains are the joins described in
synth_assets/reports/lineage_views.py; the cost figures are computed exactly as the cost
report computes them.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from resources.warehouse import Lake, Warehouse, WarehouseMissing, default_warehouse_path
from synth_assets.reports.cost_report import build_cost_report
from synth_assets.reports.lineage_views import query_frame, quote_identifier, table_columns


# ---------------------------------------------------------------- tracing one id


@dataclass(frozen=True)
class Step:
    """One link of a chain: the rows of `table` whose `column` equals the traced value."""

    label: str
    table: str
    column: str
    presence_only: bool = False  # say "yes/no" instead of repeating the row
    # False: the step is shown but not searched when resolving an id (`llm_judge.judged_id`
    # holds section, exercise and instruction ids alike: searching it would make every
    # judged id ambiguous).
    resolves: bool = True
    # True: leave the step out when it has no row (one id lives in one of several tables)
    only_if_found: bool = False


# The judge's row for a traced id (score, rationale, threshold, kept, reason); its
# cache_key adds the judging call to the cost. `row_id` is reserved by DuckLake, hence `judged_id`.
JUDGE_STEP = Step("LLM judge (score, rationale, kept or why not)", "llm_judge", "judged_id", resolves=False)
INSTRUCTION_TABLES = ("self_instruct", "alpaca_instructions", "self_qa", "evol_instruct")


ID_KINDS: dict[str, tuple[Step, ...]] = {
    "exercise_id": (
        Step("exercise (plan slots, model, sandbox result)", "code_exercises", "exercise_id"),
        Step("rejected by synthesis", "code_exercise_rejects", "exercise_id"),
        Step("contamination verdict", "contamination_report", "exercise_id"),
        Step("released in decontaminated_exercises", "decontaminated_exercises", "exercise_id", presence_only=True),
        JUDGE_STEP,
    ),
    "section_id": (
        Step("textbook section", "synthetic_textbook", "section_id"),
        Step("rejected by synthesis", "synthetic_textbook_rejects", "section_id"),
        JUDGE_STEP,
    ),
    "instruction_id": (
        *(Step(f"instruction row ({table})", table, "instruction_id", only_if_found=True) for table in INSTRUCTION_TABLES),
        Step("HumanEval contamination verdict", "instructions_contamination_report", "instruction_id"),
        JUDGE_STEP,
    ),
    "prompt_id": (
        Step("prompt plan", "textbook_prompts", "prompt_id"),
        Step("textbook sections from this plan", "synthetic_textbook", "prompt_id"),
    ),
    "doc_id": (
        Step("document", "raw_stack_plus", "doc_id"),
        # exact duplicates share the doc_id (a content hash): this row may be a removed copy
        Step("removed in dedup (this document or an exact copy)", "dedup_removed", "doc_id"),
        Step("near duplicates removed in favour of it", "dedup_removed", "near_duplicate_of"),
        Step("annotation (LLM educational score)", "annotated_sample", "doc_id"),
        Step("classifier score", "textbook_scores", "doc_id"),
        Step("kept in filtered_textbook", "filtered_textbook", "doc_id"),
    ),
}
# Ids a row points at, followed one hop: (column in a traced row, step to add before it).
UPSTREAM = {
    "prompt_id": Step("prompt plan", "textbook_prompts", "prompt_id"),
    "classifier_version": Step("classifier version", "quality_classifier_versions", "classifier_version"),
    "inspiration_doc_id": Step("inspiring corpus document", "raw_stack_plus", "doc_id"),
    "source_doc_id": Step("source document (Self-QA)", "filtered_textbook", "doc_id"),
}
LONG_TEXT = 100


@dataclass
class Trace:
    row_id: str
    kind: str
    steps: list[tuple[Step, list[dict[str, Any]]]] = field(default_factory=list)
    calls: pl.DataFrame = field(default_factory=pl.DataFrame)

    @property
    def totals(self) -> dict[str, Any]:
        """Cost figures for these calls, computed exactly as the cost report computes them."""
        return build_cost_report(self.calls).totals


class LineageError(LookupError):
    """The id is unknown or ambiguous; the message says which and lists candidates."""


def resolve_id(warehouse: Warehouse | Lake, text: str) -> tuple[str, str]:
    """(kind, full id) for an id or a unique id prefix, searched in every table that holds
    that kind of id."""
    with warehouse.connect() as conn:
        return _resolve_id(conn, text)


def _resolve_id(conn: duckdb.DuckDBPyConnection, text: str) -> tuple[str, str]:
    columns = table_columns(conn)
    matches: set[tuple[str, str]] = set()
    for kind, steps in ID_KINDS.items():
        for step in steps:
            if step.resolves and step.column in columns.get(step.table, []):
                found = query_frame(
                    conn,
                    f"SELECT DISTINCT CAST({quote_identifier(step.column)} AS VARCHAR) AS id FROM {quote_identifier(step.table)} "
                    f"WHERE starts_with(CAST({quote_identifier(step.column)} AS VARCHAR), ?) LIMIT 20",
                    [text],
                )
                matches.update((kind, value) for value in found["id"].to_list())
    exact = {(k, v) for k, v in matches if v == text}
    if len(exact) == 1:
        return exact.pop()
    if len(exact) > 1:
        matches = exact
    if not matches:
        raise LineageError(f"no exercise_id, section_id, prompt_id, doc_id or instruction_id starts with {text!r}")
    if len(matches) > 1:
        listed = ", ".join(f"{k}={v}" for k, v in sorted(matches)[:10])
        raise LineageError(f"{text!r} is ambiguous: {listed}")
    return matches.pop()


def _rows(conn: duckdb.DuckDBPyConnection, columns: dict[str, list[str]], step: Step, value: Any) -> list[dict[str, Any]]:
    if step.column not in columns.get(step.table, []):
        return []
    frame = query_frame(
        conn,
        f"SELECT * FROM {quote_identifier(step.table)} WHERE CAST({quote_identifier(step.column)} AS VARCHAR) = ?", [str(value)]
    )
    return frame.to_dicts()


def trace(warehouse: Warehouse | Lake, text: str) -> Trace:
    """The chain of rows behind one id and the LLM calls (by cache_key) that produced them."""
    with warehouse.connect() as conn:
        return _trace(conn, text)


def _trace(conn: duckdb.DuckDBPyConnection, text: str) -> Trace:
    kind, row_id = _resolve_id(conn, text)
    columns = table_columns(conn)
    result = Trace(row_id=row_id, kind=kind)
    seen_steps: set[tuple[str, str, str]] = set()
    for step in ID_KINDS[kind]:
        rows = _rows(conn, columns, step, row_id)
        # Follow ids pointing upstream (prompt plan, classifier version) before this step.
        for row in rows:
            for column, upstream in UPSTREAM.items():
                if column in row and row[column] is not None and upstream.table != step.table:
                    marker = (upstream.table, upstream.column, str(row[column]))
                    if marker not in seen_steps:
                        seen_steps.add(marker)
                        result.steps.append((upstream, _rows(conn, columns, upstream, row[column])))
        if rows or not step.only_if_found:
            result.steps.append((step, rows))
    cache_keys = sorted(
        {str(row["cache_key"]) for _, rows in result.steps for row in rows if row.get("cache_key")}
    )
    if cache_keys and "llm_calls" in columns:
        placeholders = ", ".join("?" for _ in cache_keys)
        result.calls = query_frame(
            conn, f"SELECT * FROM llm_calls WHERE cache_key IN ({placeholders}) ORDER BY created_at", cache_keys
        )
    return result


def _short(value: Any) -> str:
    text = str(value).replace("\n", "\\n")
    return text if len(text) <= LONG_TEXT else text[: LONG_TEXT - 1] + "…"


CALL_COLUMNS = ("created_at", "run_id", "asset_key", "model", "prompt_tokens", "completion_tokens",
                "cost_usd", "saved_usd", "cache_hit", "status", "cache_key")


def format_trace(result: Trace) -> str:
    """The chain as text: each step's table and fields (repeated values shown once), then
    the LLM calls and the total cost."""
    lines = [f"{result.kind} {result.row_id}", ""]
    shown: dict[str, Any] = {}
    for number, (step, rows) in enumerate(result.steps, start=1):
        lines.append(f"{number}. {step.label}  [{step.table}]")
        if step.presence_only:
            lines.append(f"   {'yes' if rows else 'no'}")
        elif not rows:
            lines.append("   (no row)")
        for index, row in enumerate([] if step.presence_only else rows):
            row_lines = []
            for column, value in row.items():
                if value is None or shown.get(column) == value:
                    continue
                shown[column] = value
                row_lines.append(f"   {column}: {_short(value)}")
            if index:
                lines.append("   --")
            lines.extend(row_lines or ["   (same values as above)"])
    lines.append("")
    if result.calls.height == 0:
        lines.append("LLM calls: none recorded for these rows")
    else:
        lines.append(f"LLM calls ({result.calls.height}):")
        for call in result.calls.to_dicts():
            lines.append("   " + "  ".join(f"{c}={_short(call.get(c))}" for c in CALL_COLUMNS if c in call))
    totals = result.totals
    unknown = totals["unknown_price_calls"]
    lines.append(
        f"cost: ${totals['cost_usd']:.6f} spent, ${totals['saved_usd']:.6f} saved by the cache"
        + (f", {unknown} call(s) with unknown price (not included)" if unknown else "")
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m synth_assets.lineage",
        description="Where did this row come from and what did it cost? "
        "Give an exercise_id, section_id, prompt_id, doc_id or instruction_id (a unique prefix is enough).",
    )
    parser.add_argument("row_id")
    parser.add_argument(
        "--warehouse", default=None,
        help="the lake's folder (default: $SYNTH_ASSETS_WAREHOUSE or data/lake; $SYNTH_ASSETS_CATALOG for PostgreSQL)",
    )  # fmt: skip
    parser.add_argument(
        "--snapshot", type=int, default=None,
        help="read the lake as of this DuckLake snapshot id (a materialization's `lake/snapshot_id`)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    warehouse = Warehouse(path=args.warehouse or default_warehouse_path()).read_only()
    reader = warehouse.lake(as_of_snapshot=args.snapshot)
    try:
        print(format_trace(trace(reader, args.row_id)))
    except WarehouseMissing as exc:
        print(f"lineage: {exc}; or pass --warehouse", file=sys.stderr)
        return 1
    except duckdb.Error as exc:
        if args.snapshot is None:
            raise
        print(f"lineage: cannot read snapshot {args.snapshot}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    except LineageError as exc:
        print(f"lineage: {exc}", file=sys.stderr)
        return 1
    if args.snapshot is not None:
        print(f"(as of lake snapshot {args.snapshot})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
