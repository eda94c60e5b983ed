"""The asset checks: every `CheckSpec` of the group modules (`quality_checks.ingest`,
`filtering`, `synthesis`, `instructions`, `decontamination`, `reports`), assembled here in DAG order, as
a Dagster `@asset_check` that reads the asset's table through the `warehouse` resource.

A check runs its SQL rules on the full table in DuckDB, then its GX suite on the table
(or on a seeded reservoir sample when the table is large), and returns one
`AssetCheckResult`: `passed`, severity ERROR for blocking checks and WARN otherwise,
and metadata naming the failing rules with their observed values, a few offending
rows, and how many rows were validated or sampled.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
import duckdb
import polars as pl

from quality_checks import decontamination, filtering, ingest, instructions, reports, synthesis
from quality_checks.gx_runner import RuleOutcome, validate_frame
from quality_checks.rules import (
    DEFAULT_BOUNDS,
    CheckSpec,
    FrameRule,
    QualityBounds,
    Rule,
    SqlMetricRule,
    SqlRowRule,
)
from resources.warehouse import Warehouse
from synth_assets.common.tables import markdown_table

OFFENDING_ROWS_SHOWN = 5


def all_check_specs(bounds: QualityBounds = DEFAULT_BOUNDS) -> list[CheckSpec]:
    """Every check, in DAG order, group by group. Built on each call, so the values each
    group reads from its asset modules are the current ones."""
    return [
        *ingest.check_specs(bounds),
        *filtering.check_specs(bounds),
        *synthesis.check_specs(bounds),
        *instructions.check_specs(bounds),
        *decontamination.check_specs(bounds),
        *reports.check_specs(bounds),
    ]


def run_rule(conn: duckdb.DuckDBPyConnection, rule: Rule, table: str) -> RuleOutcome:
    """Evaluate one SQL/Python rule against `table` on an open warehouse connection. A
    rule that cannot run (missing column or table, bad JSON...) is a failed outcome
    carrying the error text."""
    sql = rule.sql.format(table=f'"{table}"')
    try:
        if isinstance(rule, SqlRowRule):
            count = conn.execute(f"SELECT count(*) FROM ({sql}) AS offending").fetchone()[0]
            rows = conn.execute(f"SELECT * FROM ({sql}) AS offending LIMIT {OFFENDING_ROWS_SHOWN}").pl()
            return RuleOutcome(
                rule.name, "sql", count == 0, f"{count} offending rows", None, int(count), _jsonable_rows(rows)
            )
        if isinstance(rule, SqlMetricRule):
            value = conn.execute(sql).fetchone()[0]
            ok = _within(value, rule.min_value, rule.max_value, rule.null_passes)
            bounds = _bounds_text(rule.min_value, rule.max_value)
            shown = "NULL" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))
            return RuleOutcome(rule.name, "sql", ok, f"{shown} (expected {bounds})")
        if isinstance(rule, FrameRule):
            return rule.evaluate(rule.name, conn.execute(sql).pl())
    except Exception as exc:  # reported as a failed rule, never a crashed check
        message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return RuleOutcome(rule.name, "sql", False, f"error: {message}", error=message)
    raise TypeError(f"unknown rule type {type(rule).__name__}")


def _within(value: Any, lo: float | None, hi: float | None, null_passes: bool) -> bool:
    if value is None:
        return null_passes
    return (lo is None or value >= lo) and (hi is None or value <= hi)


def _bounds_text(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"{lo:g}..{hi:g}"
    return f">= {lo:g}" if lo is not None else f"<= {hi:g}"


def _jsonable_rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    return [{k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v)) for k, v in row.items()}
            for row in frame.iter_rows(named=True)]


def suite_columns(suite: Any) -> list[str]:
    """Columns a GX suite reads (so a sample loads only those)."""
    columns: list[str] = []
    for expectation in suite.expectations:
        column = getattr(expectation, "column", None)
        if column and column not in columns:
            columns.append(column)
    return columns


def load_gx_frame(
    conn: duckdb.DuckDBPyConnection, spec: CheckSpec, suite: Any, row_count: int, bounds: QualityBounds
) -> tuple[pl.DataFrame, bool]:
    """The frame GX validates: the suite's columns (plus the id column) of the whole
    table, or of a seeded reservoir sample when the table exceeds the threshold.
    Columns the table lacks are left out so GX reports them as failed expectations."""
    existing = {
        name
        for (name,) in conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_catalog = 'lake' AND table_schema = 'main' AND table_name = ?",
            [spec.table],
        ).fetchall()
    }
    wanted = ([spec.id_column] if spec.id_column else []) + suite_columns(suite)
    columns = [c for c in dict.fromkeys(wanted) if c in existing] or sorted(existing)[:1]
    select = ", ".join(f'"{c}"' for c in columns)
    sampled = row_count > bounds.gx_sample_threshold_rows
    sample = (
        f" USING SAMPLE reservoir({bounds.gx_sample_rows} ROWS) REPEATABLE ({bounds.sample_seed})" if sampled else ""
    )
    return conn.execute(f'SELECT {select} FROM "{spec.table}"{sample}').pl(), sampled


def evaluate_spec(warehouse: Warehouse, spec: CheckSpec, bounds: QualityBounds = DEFAULT_BOUNDS) -> dg.AssetCheckResult:
    """Run one check's SQL rules and GX suite; the plain function behind every asset check."""
    severity = dg.AssetCheckSeverity.ERROR if spec.blocking else dg.AssetCheckSeverity.WARN
    if not warehouse.table_exists(spec.table):
        return dg.AssetCheckResult(
            passed=False,
            severity=severity,
            metadata={"table": spec.table, "error": f"table {spec.table!r} does not exist in the warehouse"},
        )
    suite = spec.gx_suite() if spec.gx_suite is not None else None
    # One connection for the SQL side; it is closed before GX runs so the file lock is
    # held only while DuckDB works.
    with warehouse.connect() as conn:
        row_count = int(conn.execute(f'SELECT count(*) FROM "{spec.table}"').fetchone()[0])
        outcomes = [run_rule(conn, rule, spec.table) for rule in spec.rules]
        if suite is not None:
            frame, sampled = load_gx_frame(conn, spec, suite, row_count, bounds)

    metadata: dict[str, Any] = {"table": spec.table, "rows_in_table": dg.MetadataValue.int(row_count)}
    if suite is not None:
        metadata["gx_suite"] = suite.name
        try:
            outcomes.extend(validate_frame(frame, suite, spec.id_column, OFFENDING_ROWS_SHOWN).outcomes)
        except Exception as exc:  # GX itself failed: a failed rule with the reason, not a crash
            message = f"{type(exc).__name__}: {exc}"
            outcomes.append(RuleOutcome(f"gx_suite({suite.name})", "gx", False, f"error: {message}", error=message))
        metadata["gx_rows_validated"] = dg.MetadataValue.int(frame.height)
        metadata["gx_sampled"] = dg.MetadataValue.bool(sampled)
        if sampled:
            metadata["gx_sample"] = f"reservoir({bounds.gx_sample_rows} rows), seed {bounds.sample_seed}"
    return check_result(outcomes, severity, metadata)


def check_result(outcomes: list[RuleOutcome], severity: dg.AssetCheckSeverity, metadata: dict[str, Any]) -> dg.AssetCheckResult:
    """Fold rule outcomes into an `AssetCheckResult` with the failures spelled out."""
    failures = [o for o in outcomes if not o.success]
    metadata = {
        **metadata,
        "rules_evaluated": dg.MetadataValue.int(len(outcomes)),
        "rules_failed": dg.MetadataValue.int(len(failures)),
        "observed": dg.MetadataValue.json({o.name: o.observed for o in outcomes}),
    }
    if failures:
        metadata["failing_expectations"] = dg.MetadataValue.md(
            markdown_table(
                [(o.name, o.engine, o.observed, o.unexpected_count) for o in failures],
                ["expectation", "engine", "observed", "unexpected"],
            )
        )
        metadata["failing_expectation_names"] = dg.MetadataValue.json([o.name for o in failures])
        metadata["offending_rows"] = dg.MetadataValue.md(offending_rows_markdown(failures))
    return dg.AssetCheckResult(passed=not failures, severity=severity, metadata=metadata)


def offending_rows_markdown(failures: list[RuleOutcome]) -> str:
    """One small markdown table per failing rule that has rows to show."""
    parts = []
    for outcome in failures:
        rows = outcome.offending_rows[:OFFENDING_ROWS_SHOWN]
        if not rows:
            continue
        columns = list(dict.fromkeys(key for row in rows for key in row))
        table = markdown_table([tuple(row.get(c) for c in columns) for row in rows], columns)
        parts.append(f"**{outcome.name}**\n\n{table}")
    return "\n\n".join(parts) or "(no row-level offenders; see failing_expectations)"


def build_asset_check(spec: CheckSpec, bounds: QualityBounds = DEFAULT_BOUNDS) -> dg.AssetChecksDefinition:
    """The `@asset_check` for one spec."""

    @dg.asset_check(
        asset=dg.AssetKey(spec.asset),
        name=spec.name,
        blocking=spec.blocking,
        additional_deps=[dg.AssetKey(key) for key in spec.additional_deps],
        description=f"{spec.description} (table `{spec.table}`; "
        f"{'blocking, ERROR' if spec.blocking else 'non-blocking, WARN'})",
    )
    def _check(warehouse: Warehouse) -> dg.AssetCheckResult:
        # Checks only read: a read-only attachment, which no writer waits for.
        return evaluate_spec(warehouse.read_only(), spec, bounds)

    return _check


def build_asset_checks(
    bounds: QualityBounds = DEFAULT_BOUNDS, assets: set[str] | None = None
) -> list[dg.AssetChecksDefinition]:
    """Every check, optionally limited to the given asset keys (for tests or partial
    code locations)."""
    return [build_asset_check(spec, bounds) for spec in all_check_specs(bounds) if assets is None or spec.asset in assets]


all_asset_checks = build_asset_checks()

__all__ = ["all_asset_checks", "all_check_specs", "build_asset_checks", "evaluate_spec"]
