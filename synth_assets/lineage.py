"""Row lineage: where an output row came from and what it cost.

Every pipeline table carries the ids of its inputs (doc_id, classifier_version, prompt_id,
cache_key, exercise_id), so lineage is a chain of joins:

- document:  raw_stack_plus -> dedup_removed? -> annotated_sample -> quality_classifier_versions
             -> textbook_scores -> filtered_textbook
- section:   textbook_prompts (the prompt plan) -> synthetic_textbook (or its rejects) -> LLM calls
- exercise:  raw_stack_plus (inspiration_doc_id) -> code_exercises (plan slots, model,
             prompt_version) -> its LLM calls -> sandbox
             result -> contamination_report (scores, verdict) -> decontaminated_exercises

`create_lineage_views` turns those joins into SQL views for people who explore in DuckDB;
`trace` / the command answer for a single id:

    python -m synth_assets.lineage <exercise_id | section_id | doc_id | prompt_id> [--warehouse PATH]

An id prefix is enough when it is unique.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from resources.warehouse import Warehouse, default_warehouse_path

CALLS_BY_KEY_VIEW = "lineage_llm_calls_by_key"

# What a call costs, aggregated per cache_key (one generated row = one cache_key; a key has
# several ledger rows when it was re-requested: the first miss, then cache hits).
CALLS_BY_KEY_SQL = f"""
CREATE OR REPLACE VIEW {CALLS_BY_KEY_VIEW} AS
SELECT
    cache_key,
    count(*) AS llm_calls,
    count(*) FILTER (WHERE cache_hit) AS llm_cache_hits,
    coalesce(sum(cost_usd), 0) AS llm_cost_usd,
    coalesce(sum(saved_usd), 0) AS llm_saved_usd,
    coalesce(sum(prompt_tokens), 0) AS llm_prompt_tokens,
    coalesce(sum(completion_tokens), 0) AS llm_completion_tokens,
    count(*) FILTER (WHERE CASE WHEN cache_hit THEN saved_usd ELSE cost_usd END IS NULL
                       AND (status = 'ok' OR coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0) > 0))
        AS llm_unknown_price_calls,
    string_agg(DISTINCT model, ', ' ORDER BY model) AS llm_models,
    string_agg(DISTINCT run_id, ', ' ORDER BY run_id) AS llm_run_ids,
    min(created_at) AS llm_first_call_at
FROM llm_calls
WHERE cache_key IS NOT NULL
GROUP BY cache_key
"""
LEDGER_COLUMNS_FOR_VIEW = (
    "cache_key", "cache_hit", "cost_usd", "saved_usd", "prompt_tokens",
    "completion_tokens", "status", "model", "run_id", "created_at",
)


@dataclass(frozen=True)
class Join:
    """LEFT JOIN `table` ON <base expression> = table.<column>; its columns get `prefix`."""

    table: str
    base_column: str
    column: str
    prefix: str
    via: str = "base"  # the alias holding base_column ("base" or an earlier join's alias)
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class ViewSpec:
    name: str
    base: str
    joins: tuple[Join, ...]
    calls_on: tuple[str, str] | None = None  # (alias, column) holding the cache_key
    membership: tuple[str, str] | None = None  # (table, key): adds in_<table> boolean


VIEWS = (
    ViewSpec(
        name="lineage_exercises",
        base="code_exercises",
        joins=(Join("contamination_report", "exercise_id", "exercise_id", "contamination_"),),
        calls_on=("base", "cache_key"),
        membership=("decontaminated_exercises", "exercise_id"),
    ),
    ViewSpec(
        name="lineage_textbook",
        base="synthetic_textbook",
        joins=(Join("textbook_prompts", "prompt_id", "prompt_id", "prompt_"),),
        calls_on=("base", "cache_key"),
    ),
    ViewSpec(
        name="lineage_filtered",
        base="filtered_textbook",
        joins=(
            Join("raw_stack_plus", "doc_id", "doc_id", "raw_", exclude=("content",)),
            Join("annotated_sample", "doc_id", "doc_id", "annotation_"),
            Join("quality_classifier_versions", "classifier_version", "classifier_version", "classifier_"),
        ),
        calls_on=("annotated_sample", "cache_key"),
    ),
)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _query(conn: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> pl.DataFrame:
    return conn.execute(sql, params or []).pl()


def _table_columns(conn: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    """Every base table and view in the main schema with its columns, in order."""
    frame = _query(
        conn,
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = 'main' ORDER BY table_name, ordinal_position",
    )
    columns: dict[str, list[str]] = {}
    for table, column in frame.iter_rows():
        columns.setdefault(table, []).append(column)
    return columns


def view_sql(spec: ViewSpec, columns: dict[str, list[str]]) -> tuple[str, list[str]]:
    """The CREATE OR REPLACE VIEW statement for the tables that exist, and notes about the
    joins left out because their table (or key column) does not exist yet."""
    notes: list[str] = []
    selected = [f"base.{_quote(c)}" for c in columns[spec.base]]
    names = set(columns[spec.base])
    joins_sql: list[str] = []
    aliases = {"base": spec.base}
    for join in spec.joins:
        holder = aliases.get(join.via)
        if join.table not in columns:
            notes.append(f"without {join.table} (table missing)")
            continue
        if holder is None or join.base_column not in columns[holder] or join.column not in columns[join.table]:
            notes.append(f"without {join.table} (no {join.base_column} to join on)")
            continue
        alias = join.table
        aliases[alias] = join.table
        joins_sql.append(
            f"LEFT JOIN {_quote(join.table)} AS {_quote(alias)} "
            # ids compared as text: a table that stored an id with another type still joins
            f"ON CAST({_quote(join.via)}.{_quote(join.base_column)} AS VARCHAR) "
            f"= CAST({_quote(alias)}.{_quote(join.column)} AS VARCHAR)"
        )
        for column in columns[join.table]:
            if column == join.column or column in join.exclude:
                continue
            name = column if column.startswith(join.prefix) else join.prefix + column
            while name in names:
                name += "_2"
            names.add(name)
            selected.append(f"{_quote(alias)}.{_quote(column)} AS {_quote(name)}")
    if spec.calls_on is not None:
        alias, column = spec.calls_on
        holder = aliases.get(alias)
        if CALLS_BY_KEY_VIEW not in columns:
            notes.append("without LLM costs (llm_calls missing)")
        elif holder is None or column not in columns[holder]:
            notes.append(f"without LLM costs (no {column} in {alias})")
        else:
            joins_sql.append(
                f"LEFT JOIN {CALLS_BY_KEY_VIEW} AS calls ON {_quote(alias)}.{_quote(column)} = calls.cache_key"
            )
            selected += [f"calls.{_quote(c)}" for c in columns[CALLS_BY_KEY_VIEW] if c != "cache_key"]
    if spec.membership is not None:
        table, key = spec.membership
        if table in columns and key in columns[table] and key in columns[spec.base]:
            selected.append(
                f"EXISTS (SELECT 1 FROM {_quote(table)} AS m WHERE m.{_quote(key)} = base.{_quote(key)}) "
                f"AS {_quote('in_' + table)}"
            )
        else:
            notes.append(f"without in_{table} ({table} missing)")
    sql = (
        f"CREATE OR REPLACE VIEW {_quote(spec.name)} AS\nSELECT\n    "
        + ",\n    ".join(selected)
        + f"\nFROM {_quote(spec.base)} AS base\n"
        + "\n".join(joins_sql)
    )
    return sql, notes


def create_lineage_views(warehouse: Warehouse) -> dict[str, str]:
    """(Re)create every lineage view whose base table exists; idempotent.

    Returns view name -> status ("created", "created without ...", "skipped: ..." or
    "failed: <error>" when DuckDB rejects a view, e.g. join keys of incompatible types).
    Optional joins whose table does not exist yet are left out and named in the status;
    re-running after those tables appear adds them."""
    with warehouse.connect() as conn:
        return _create_lineage_views(conn)


def _create_lineage_views(conn: duckdb.DuckDBPyConnection) -> dict[str, str]:
    status: dict[str, str] = {}
    columns = _table_columns(conn)
    ledger = columns.get("llm_calls")
    if ledger is None:
        status[CALLS_BY_KEY_VIEW] = "skipped: table llm_calls does not exist"
    elif missing := [c for c in LEDGER_COLUMNS_FOR_VIEW if c not in ledger]:
        status[CALLS_BY_KEY_VIEW] = f"skipped: llm_calls lacks {', '.join(missing)}"
    else:
        conn.execute(CALLS_BY_KEY_SQL)
        status[CALLS_BY_KEY_VIEW] = "created"
        columns = _table_columns(conn)
    for spec in VIEWS:
        if spec.base not in columns:
            status[spec.name] = f"skipped: table {spec.base} does not exist"
            continue
        sql, notes = view_sql(spec, columns)
        try:
            conn.execute(sql)
        except duckdb.Error as exc:  # an unexpected schema must not fail the cost report
            status[spec.name] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            continue
        status[spec.name] = "created" + (" " + "; ".join(notes) if notes else "")
    return status


# ---------------------------------------------------------------- tracing one id


@dataclass(frozen=True)
class Step:
    """One link of a chain: the rows of `table` whose `column` equals the traced value."""

    label: str
    table: str
    column: str
    presence_only: bool = False  # say "yes/no" instead of repeating the row


ID_KINDS: dict[str, tuple[Step, ...]] = {
    "exercise_id": (
        Step("exercise (plan slots, model, sandbox result)", "code_exercises", "exercise_id"),
        Step("rejected by synthesis", "code_exercise_rejects", "exercise_id"),
        Step("contamination verdict", "contamination_report", "exercise_id"),
        Step("released in decontaminated_exercises", "decontaminated_exercises", "exercise_id", presence_only=True),
    ),
    "section_id": (
        Step("textbook section", "synthetic_textbook", "section_id"),
        Step("rejected by synthesis", "synthetic_textbook_rejects", "section_id"),
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
        from synth_assets.reports import build_cost_report

        return build_cost_report(self.calls).totals


class LineageError(LookupError):
    """The id is unknown or ambiguous; the message says which and lists candidates."""


def resolve_id(warehouse: Warehouse, text: str) -> tuple[str, str]:
    """(kind, full id) for an id or a unique id prefix, searched in every table that holds
    that kind of id."""
    with warehouse.connect() as conn:
        return _resolve_id(conn, text)


def _resolve_id(conn: duckdb.DuckDBPyConnection, text: str) -> tuple[str, str]:
    columns = _table_columns(conn)
    matches: set[tuple[str, str]] = set()
    for kind, steps in ID_KINDS.items():
        for step in steps:
            if step.column in columns.get(step.table, []):
                found = _query(
                    conn,
                    f"SELECT DISTINCT CAST({_quote(step.column)} AS VARCHAR) AS id FROM {_quote(step.table)} "
                    f"WHERE starts_with(CAST({_quote(step.column)} AS VARCHAR), ?) LIMIT 20",
                    [text],
                )
                matches.update((kind, value) for value in found["id"].to_list())
    exact = {(k, v) for k, v in matches if v == text}
    if len(exact) == 1:
        return exact.pop()
    if len(exact) > 1:
        matches = exact
    if not matches:
        raise LineageError(f"no exercise_id, section_id, prompt_id or doc_id starts with {text!r}")
    if len(matches) > 1:
        listed = ", ".join(f"{k}={v}" for k, v in sorted(matches)[:10])
        raise LineageError(f"{text!r} is ambiguous: {listed}")
    return matches.pop()


def _rows(conn: duckdb.DuckDBPyConnection, columns: dict[str, list[str]], step: Step, value: Any) -> list[dict[str, Any]]:
    if step.column not in columns.get(step.table, []):
        return []
    frame = _query(
        conn,
        f"SELECT * FROM {_quote(step.table)} WHERE CAST({_quote(step.column)} AS VARCHAR) = ?", [str(value)]
    )
    return frame.to_dicts()


def trace(warehouse: Warehouse, text: str) -> Trace:
    """The chain of rows behind one id and the LLM calls (by cache_key) that produced them."""
    with warehouse.connect() as conn:
        return _trace(conn, text)


def _trace(conn: duckdb.DuckDBPyConnection, text: str) -> Trace:
    kind, row_id = _resolve_id(conn, text)
    columns = _table_columns(conn)
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
        result.steps.append((step, rows))
    cache_keys = sorted(
        {str(row["cache_key"]) for _, rows in result.steps for row in rows if row.get("cache_key")}
    )
    if cache_keys and "llm_calls" in columns:
        placeholders = ", ".join("?" for _ in cache_keys)
        result.calls = _query(
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
        "Give an exercise_id, section_id, prompt_id or doc_id (a unique prefix is enough).",
    )
    parser.add_argument("row_id")
    parser.add_argument("--warehouse", default=None, help="DuckDB file (default: $SYNTH_ASSETS_WAREHOUSE or data/warehouse.duckdb)")
    args = parser.parse_args(argv)
    path = args.warehouse or default_warehouse_path()
    if not Path(path).exists():
        print(f"lineage: no warehouse at {path} (materialize the pipeline first, or pass --warehouse)", file=sys.stderr)
        return 1
    warehouse = Warehouse(path=path)
    try:
        create_lineage_views(warehouse)
        print(format_trace(trace(warehouse, args.row_id)))
    except LineageError as exc:
        print(f"lineage: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
