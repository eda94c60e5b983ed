"""The rule types every group's checks are built from, the floors the checks own, and the
small helpers they share.

Each asset gets up to two checks (assembled in `quality_checks.checks`):

- `<table>_integrity` (`integrity_check`), blocking (ERROR): failures that would poison
  downstream assets -- ids unique and non-null, scores in range, exercises that parse,
  nothing contaminated. Automation waits for these (`all_deps_blocking_checks_passed`).
- `<table>_quality_floors` (`quality_floors_check`), non-blocking (WARN): diversity
  floors, length bounds, known source names: figures a human should look at but that do
  not stop the pipeline.

Rules come in three kinds, all reported the same way (`gx_runner.RuleOutcome`):

- GX expectations (row-level: nulls, ranges, sets, regexes, lengths), validated on the
  whole table or, above `QualityBounds.gx_sample_threshold_rows`, on a seeded reservoir
  sample (only the columns the suite names are loaded);
- `SqlRowRule`: a query that selects offending rows, run on the full table in DuckDB
  (uniqueness, references between tables, anti-joins); zero rows is a pass;
- `SqlMetricRule` / `FrameRule`: one figure computed in SQL or Python (distinct ratios,
  distinct-2, "every function parses") compared with a floor.

SQL text uses `{table}` for the asset's table; column names are those of ARCHITECTURE.md
and the producing modules (a rule on a missing column fails with DuckDB's binder error,
which is what a broken contract should do).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dagster as dg
import polars as pl

from quality_checks.gx_runner import RuleOutcome, import_gx


@dataclass(frozen=True)
class QualityBounds:
    """The floors the checks themselves define, and how GX samples. Values an asset
    defines (table names, verdict labels, score ranges, decontamination thresholds,
    source kinds) are not here: each group's check module reads them from the asset
    module when the checks are built. Pass a custom instance to `build_asset_checks`."""

    # Sampling: GX row-level suites run on the whole table up to this size, above it on
    # a seeded `USING SAMPLE reservoir(gx_sample_rows ROWS) REPEATABLE (sample_seed)`.
    # SQL rules always see the full table.
    gx_sample_threshold_rows: int = 50_000
    gx_sample_rows: int = 50_000
    sample_seed: int = 20230620  # the phi-1 paper's arXiv date; any fixed seed will do

    # synthetic_textbook: section length bounds in characters (warning only). phi-1's
    # textbook sections are short lessons: ~100 tokens (~400 chars) is the least that
    # holds an explanation plus a snippet; the asset caps a section's completion tokens
    # (SyntheticTextbookConfig.max_tokens, ~4 chars a token), so 12_000 leaves room for a
    # raised cap and flags runaway output.
    textbook_min_chars: int = 400
    textbook_max_chars: int = 12_000
    # Corpus-level distinct-2 (unique word bigrams / all bigrams, Li et al. 2016) over
    # the sections; phi-1 section 2.2 stresses diversity. Below 0.35 the sections repeat
    # each other heavily.
    textbook_distinct2_floor: float = 0.35
    # Share of sections whose fenced code all parses (synthetic_textbook's
    # `code_blocks_parse`; phi-1 textbooks interleave prose with runnable snippets).
    # Sections without parseable code are kept by design, so this is a floor on the mix,
    # not a per-row rule.
    textbook_code_parse_floor: float = 0.5
    # textbook_prompts: share of distinct (topic, subtopic, audience) slots among prompts.
    prompt_slot_distinct_floor: float = 0.5

    # code_exercises: distinct function names / exercises (phi-1 CodeExercises are
    # docstring-completion tasks; repeated names mean repeated tasks).
    exercise_function_name_distinct_floor: float = 0.6


DEFAULT_BOUNDS = QualityBounds()


@dataclass(frozen=True)
class SqlRowRule:
    """`sql` selects the offending rows (put the id column first); none is a pass."""

    name: str
    sql: str


@dataclass(frozen=True)
class SqlMetricRule:
    """`sql` returns one number; it must lie within [min_value, max_value]. A NULL (empty
    table) passes only if `null_passes`."""

    name: str
    sql: str
    min_value: float | None = None
    max_value: float | None = None
    null_passes: bool = False


@dataclass(frozen=True)
class FrameRule:
    """`sql` loads a frame; `evaluate(frame)` returns the outcome (Python-side logic such
    as `ast.parse` or distinct-n)."""

    name: str
    sql: str
    evaluate: Callable[[str, pl.DataFrame], RuleOutcome]


Rule = SqlRowRule | SqlMetricRule | FrameRule


@dataclass(frozen=True)
class CheckSpec:
    """One asset check: the asset it guards, its table, whether it blocks, its rules and
    (optionally) a GX suite factory."""

    asset: str
    table: str
    name: str
    blocking: bool
    description: str
    id_column: str | None
    rules: tuple[Rule, ...] = ()
    gx_suite: Callable[[], Any] | None = None
    additional_deps: tuple[str, ...] = ()


def integrity_check(*, table: str, named_after: str | None = None, **fields: Any) -> CheckSpec:
    """`<table>_integrity`, blocking (ERROR); `fields` are the rest of `CheckSpec`'s.
    `named_after` takes the table's place in the name (quality_classifier's checks are
    named after the asset, not its versions table)."""
    return CheckSpec(table=table, name=f"{named_after or table}_integrity", blocking=True, **fields)


def quality_floors_check(*, table: str, named_after: str | None = None, **fields: Any) -> CheckSpec:
    """`<table>_quality_floors`, non-blocking (WARN); as `integrity_check`."""
    return CheckSpec(table=table, name=f"{named_after or table}_quality_floors", blocking=False, **fields)


def asset_name(asset: dg.AssetsDefinition) -> str:
    """The key a check attaches to, taken from the asset definition itself."""
    return asset.key.to_user_string()


def unique_non_null_rules(column: str) -> tuple[SqlRowRule, SqlRowRule]:
    """Full-table uniqueness and non-null for an id column."""
    return (
        SqlRowRule(
            f"{column}_unique",
            f"SELECT {column}, count(*) AS copies FROM {{table}} WHERE {column} IS NOT NULL "
            f"GROUP BY {column} HAVING count(*) > 1 ORDER BY copies DESC, {column}",
        ),
        SqlRowRule(f"{column}_not_null", f"SELECT * FROM {{table}} WHERE {column} IS NULL"),
    )


def composite_key_rules(
    group_column: str, id_column: str, unique_name: str, not_null_name: str = "ids_not_null"
) -> tuple[SqlRowRule, SqlRowRule]:
    """Full-table uniqueness and non-null for a two-column key such as (dataset,
    instruction_id), where the id repeats across groups. The rule names are the
    caller's: each check keeps the names its results have always carried."""
    return (
        SqlRowRule(
            unique_name,
            f"SELECT {group_column}, {id_column}, count(*) AS copies FROM {{table}} GROUP BY ALL HAVING count(*) > 1",
        ),
        SqlRowRule(not_null_name, f"SELECT * FROM {{table}} WHERE {id_column} IS NULL OR {group_column} IS NULL"),
    )


def verdict_with_reason_rule(group_column: str, id_column: str, verdicts: tuple[str, ...]) -> SqlRowRule:
    """Every row of a report keyed by (group_column, id_column) has a verdict from
    `verdicts` and a non-empty reason."""
    return SqlRowRule(
        "verdict_known_with_reason",
        f"SELECT {group_column}, {id_column}, verdict FROM {{table}} WHERE verdict IS NULL "
        f"OR verdict NOT IN ({sql_list(verdicts)}) OR coalesce(trim(reason), '') = ''",
    )


def new_suite(name: str, expectations: list[Any]) -> Any:
    gx = import_gx()
    return gx.ExpectationSuite(name=name, expectations=expectations)


def sql_list(values: tuple[str, ...] | list[str]) -> str:
    """`'a', 'b'`: string literals for an SQL `IN (...)`."""
    return ", ".join(sql_string(value) for value in values)


def sql_string(value: str) -> str:
    """One SQL string literal, quotes escaped."""
    return "'" + value.replace("'", "''") + "'"
