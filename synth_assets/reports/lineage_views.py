"""`lineage_views`: the row-lineage joins as SQL views, for people who explore in DuckDB.

Every pipeline table carries the ids of its inputs (doc_id, classifier_version, prompt_id,
cache_key, exercise_id), so lineage is a chain of joins:

- document:  raw_stack_plus -> annotated_sample -> quality_classifier_versions -> filtered_textbook
- section:   textbook_prompts (the prompt plan) -> synthetic_textbook -> LLM calls
- exercise:  code_exercises -> its LLM calls -> contamination_report -> decontaminated_exercises
- instruction: self_instruct / alpaca_instructions / self_qa / evol_instruct -> its LLM calls
             -> instructions_contamination_report -> llm_judge (score, rationale, kept)

Every generated row (sections, exercises, instructions) also joins `llm_judge` on
`judged_id` (the judge's id column; `row_id` is reserved by DuckLake), as `judge_*`.

`python -m synth_assets.lineage <id>` (synth_assets/reports/lineage.py) answers for one id.
"""


from dataclasses import dataclass, field
from typing import Any

import duckdb
import polars as pl

import dagster as dg

from resources.warehouse import Warehouse
from synth_assets.automation import on_upstream_change
from synth_assets.common.tables import markdown_table

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


JUDGE_TABLE = "llm_judge"
INSTRUCTION_TABLES = ("self_instruct", "alpaca_instructions", "self_qa", "evol_instruct")
INSTRUCTIONS_REPORT = "instructions_contamination_report"

VIEWS = (
    ViewSpec(
        name="lineage_exercises",
        base="code_exercises",
        joins=(Join("contamination_report", "exercise_id", "exercise_id", "contamination_"),
               Join(JUDGE_TABLE, "exercise_id", "judged_id", "judge_")),
        calls_on=("base", "cache_key"),
        membership=("decontaminated_exercises", "exercise_id"),
    ),
    ViewSpec(
        name="lineage_textbook",
        base="synthetic_textbook",
        joins=(Join("textbook_prompts", "prompt_id", "prompt_id", "prompt_"),
               Join(JUDGE_TABLE, "section_id", "judged_id", "judge_")),
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
    *(
        ViewSpec(
            name=f"lineage_{table}",
            base=table,
            # instruction_ids are content hashes of the method and the row: unique across tables
            joins=(Join(INSTRUCTIONS_REPORT, "instruction_id", "instruction_id", "contamination_"),
                   Join(JUDGE_TABLE, "instruction_id", "judged_id", "judge_")),
            calls_on=("base", "cache_key"),
        )
        for table in INSTRUCTION_TABLES
    ),
)


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def query_frame(conn: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> pl.DataFrame:
    return conn.execute(sql, params or []).pl()


def table_columns(conn: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    """Every base table and view in the main schema with its columns, in order."""
    frame = query_frame(
        conn,
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_catalog = 'lake' AND table_schema = 'main' ORDER BY table_name, ordinal_position",
    )
    columns: dict[str, list[str]] = {}
    for table, column in frame.iter_rows():
        columns.setdefault(table, []).append(column)
    return columns


def view_sql(spec: ViewSpec, columns: dict[str, list[str]]) -> tuple[str, list[str]]:
    """The CREATE OR REPLACE VIEW statement for the tables that exist, and notes about the
    joins left out because their table (or key column) does not exist yet."""
    notes: list[str] = []
    selected = [f"base.{quote_identifier(c)}" for c in columns[spec.base]]
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
            f"LEFT JOIN {quote_identifier(join.table)} AS {quote_identifier(alias)} "
            # ids compared as text: a table that stored an id with another type still joins
            f"ON CAST({quote_identifier(join.via)}.{quote_identifier(join.base_column)} AS VARCHAR) "
            f"= CAST({quote_identifier(alias)}.{quote_identifier(join.column)} AS VARCHAR)"
        )
        for column in columns[join.table]:
            if column == join.column or column in join.exclude:
                continue
            name = column if column.startswith(join.prefix) else join.prefix + column
            while name in names:
                name += "_2"
            names.add(name)
            selected.append(f"{quote_identifier(alias)}.{quote_identifier(column)} AS {quote_identifier(name)}")
    if spec.calls_on is not None:
        alias, column = spec.calls_on
        holder = aliases.get(alias)
        if CALLS_BY_KEY_VIEW not in columns:
            notes.append("without LLM costs (llm_calls missing)")
        elif holder is None or column not in columns[holder]:
            notes.append(f"without LLM costs (no {column} in {alias})")
        else:
            joins_sql.append(
                f"LEFT JOIN {CALLS_BY_KEY_VIEW} AS calls ON {quote_identifier(alias)}.{quote_identifier(column)} = calls.cache_key"
            )
            selected += [f"calls.{quote_identifier(c)}" for c in columns[CALLS_BY_KEY_VIEW] if c != "cache_key"]
    if spec.membership is not None:
        table, key = spec.membership
        if table in columns and key in columns[table] and key in columns[spec.base]:
            selected.append(
                f"EXISTS (SELECT 1 FROM {quote_identifier(table)} AS m WHERE m.{quote_identifier(key)} = base.{quote_identifier(key)}) "
                f"AS {quote_identifier('in_' + table)}"
            )
        else:
            notes.append(f"without in_{table} ({table} missing)")
    sql = (
        f"CREATE OR REPLACE VIEW {quote_identifier(spec.name)} AS\nSELECT\n    "
        + ",\n    ".join(selected)
        + f"\nFROM {quote_identifier(spec.base)} AS base\n"
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
    columns = table_columns(conn)
    ledger = columns.get("llm_calls")
    if ledger is None:
        status[CALLS_BY_KEY_VIEW] = "skipped: table llm_calls does not exist"
    elif missing := [c for c in LEDGER_COLUMNS_FOR_VIEW if c not in ledger]:
        status[CALLS_BY_KEY_VIEW] = f"skipped: llm_calls lacks {', '.join(missing)}"
    else:
        conn.execute(CALLS_BY_KEY_SQL)
        status[CALLS_BY_KEY_VIEW] = "created"
        columns = table_columns(conn)
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

# The assets whose tables the views read (quality_classifier writes quality_classifier_versions).
VIEW_SOURCE_ASSETS = (
    "code_exercises", "contamination_report", "decontaminated_exercises", "synthetic_textbook",
    "textbook_prompts", "filtered_textbook", "raw_stack_plus", "annotated_sample", "quality_classifier",
    *INSTRUCTION_TABLES, INSTRUCTIONS_REPORT, JUDGE_TABLE,
)


@dg.asset(
    group_name="reports",
    kinds={"duckdb", "sql"},
    owners=["team:synth-assets"],
    code_version="lineage_views-2",
    deps=sorted({dg.AssetKey(key) for key in VIEW_SOURCE_ASSETS}),
    automation_condition=on_upstream_change(),
)
def lineage_views(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    """SQL views that join every generated row to where it came from and what it cost:
    `lineage_exercises` (code_exercises + contamination verdict + in_decontaminated_exercises
    + LLM cost), `lineage_textbook` (sections + their prompt plan + LLM cost),
    `lineage_filtered` (kept documents + raw row, annotation, classifier version),
    `lineage_<instruction table>` (each instruction row + HumanEval verdict + judge score,
    rationale and kept + LLM cost; sections and exercises carry `judge_*` too) and
    `lineage_llm_calls_by_key` (the ledger aggregated per cache_key). Created for the tables
    that exist; a join whose table is missing is left out and named in the status. Views
    read the live tables, so they never go stale; this asset re-runs only to add joins."""
    views = create_lineage_views(warehouse)
    for name, status in sorted(views.items()):
        context.log.info(f"{name}: {status}")
    return dg.MaterializeResult(
        metadata={
            "lineage_views": dg.MetadataValue.md(
                markdown_table(sorted(views.items()), ["view", "status"]) if views else "_none_"
            ),
            "created": sum(1 for status in views.values() if status.startswith("created")),
        }
    )
