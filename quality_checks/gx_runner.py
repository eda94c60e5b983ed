"""Run a Great Expectations 1.x suite on a DataFrame, offline, and describe the outcome
as plain data.

Why not `dagster-ge`: it pins GX < 1.0. GX 1.x is small enough to drive directly: an
ephemeral (in-memory) data context, a pandas data source with one DataFrame asset, one
whole-frame batch, `batch.validate(suite)`.

Telemetry: GX reads `GX_ANALYTICS_ENABLED` when it is imported and the context carries
its own `analytics_enabled` flag; both are switched off here before GX is imported, so a
check never tries to reach the network (`tests/test_quality_checks.py` asserts it with a
socket guard). GX is imported lazily so that loading the code location stays fast.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import polars as pl

if TYPE_CHECKING:
    import great_expectations as gx_module

# Set before any import of great_expectations (here or elsewhere in the process).
os.environ["GX_ANALYTICS_ENABLED"] = "false"

# How many offending rows a failed expectation reports (GX `partial_unexpected_count`).
OFFENDING_ROWS_PER_RULE = 5


@dataclass(frozen=True)
class RuleOutcome:
    """One expectation or SQL rule, evaluated.

    `observed` is a short human-readable figure (the observed value for aggregate
    expectations, `N unexpected of M` for row-level ones); `offending_rows` holds a
    few of the rows that broke the rule (the id column plus the tested column)."""

    name: str
    engine: str  # "gx", "sql" or "python"
    success: bool
    observed: str
    column: str | None = None
    unexpected_count: int | None = None
    offending_rows: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class SuiteResult:
    """A validated suite: overall success, rows validated, and one outcome per rule."""

    suite_name: str
    success: bool
    rows_validated: int
    outcomes: list[RuleOutcome]

    @property
    def failures(self) -> list[RuleOutcome]:
        return [outcome for outcome in self.outcomes if not outcome.success]


def import_gx() -> gx_module:
    """`great_expectations`, imported with analytics switched off."""
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    import great_expectations as gx

    return gx


@lru_cache(maxsize=1)
def _context_config():
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    return DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        # tqdm bars would flood the Dagster compute logs.
        progress_bars=ProgressBarsConfig(globally=False),
    )


def ephemeral_context():
    """A fresh in-memory GX context: nothing on disk, no cloud, analytics off."""
    gx = import_gx()
    context = gx.get_context(mode="ephemeral", project_config=_context_config())
    if context.config.analytics_enabled:  # defensive: never validate with telemetry on
        raise RuntimeError("GX analytics must be disabled")
    return context


def validate_frame(
    frame: pl.DataFrame,
    suite: Any,
    id_column: str | None = None,
    max_offending_rows: int = OFFENDING_ROWS_PER_RULE,
) -> SuiteResult:
    """Validate `frame` (Polars) against a GX `ExpectationSuite`.

    GX 1.x has no Polars data source, so the frame goes through pandas (Arrow-backed
    conversion). `id_column` is reported with every offending row so a failure points at
    a record. An expectation that raises inside GX (e.g. a missing column) is a failed
    outcome carrying the error message, never an exception out of here."""
    context = ephemeral_context()
    source = context.data_sources.add_pandas("warehouse_frame")
    asset = source.add_dataframe_asset(suite.name)
    batch_definition = asset.add_batch_definition_whole_dataframe("whole_frame")
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame.to_pandas()})
    result_format: dict[str, Any] = {
        "result_format": "COMPLETE",
        "partial_unexpected_count": max_offending_rows,
    }
    if id_column and id_column in frame.columns:
        result_format["unexpected_index_column_names"] = [id_column]
    validation = batch.validate(suite, result_format=result_format)
    outcomes = [_outcome(result, max_offending_rows, id_column) for result in validation.results]
    return SuiteResult(
        suite_name=suite.name,
        success=bool(validation.success),
        rows_validated=frame.height,
        outcomes=outcomes,
    )


def _outcome(result: Any, max_offending_rows: int, id_column: str | None = None) -> RuleOutcome:
    config = result.expectation_config
    kwargs = {key: value for key, value in config.kwargs.items() if key != "batch_id"}
    column = kwargs.get("column")
    name = _rule_name(config.type, kwargs)
    details = result.result or {}
    exception = result.exception_info or {}
    if exception.get("raised_exception"):
        message = str(exception.get("exception_message") or "expectation raised")
        return RuleOutcome(name, "gx", False, f"error: {message}", column, error=message)
    unexpected = details.get("unexpected_count")
    if "observed_value" in details:
        observed = _plain(details["observed_value"])
    elif unexpected is not None:
        observed = f"{unexpected} unexpected of {details.get('element_count')}"
    else:
        observed = "" if result.success else "failed"
    rows = [
        # id column first, so the offending record is the first thing a reader sees
        {key: _plain(row[key]) for key in sorted(row, key=lambda k: k != id_column)}
        for row in (details.get("unexpected_index_list") or [])[:max_offending_rows]
    ]
    if not rows and details.get("partial_unexpected_list"):
        rows = [
            {column or "value": _plain(value)}
            for value in details["partial_unexpected_list"][:max_offending_rows]
        ]
    return RuleOutcome(
        name=name,
        engine="gx",
        success=bool(result.success),
        observed=str(observed),
        column=column,
        unexpected_count=int(unexpected) if unexpected is not None else None,
        offending_rows=rows,
    )


def _rule_name(expectation_type: str, kwargs: dict[str, Any]) -> str:
    """`expect_column_values_to_be_between(educational_score, min_value=0, max_value=5)`."""
    column = kwargs.get("column")
    shown = ", ".join(
        f"{key}={_plain(value)}"
        for key, value in sorted(kwargs.items())
        if key not in {"column", "result_format", "meta", "notes"} and value is not None
    )
    inside = ", ".join(part for part in (column, shown) if part)
    return f"{expectation_type}({inside})"


def _plain(value: Any) -> Any:
    """numpy scalars, NaN and containers as JSON-friendly Python values."""
    if hasattr(value, "item") and not isinstance(value, (list, tuple, dict, str)):
        try:
            value = value.item()
        except (ValueError, AttributeError):
            value = str(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value
