"""Checks of the reports folder: `cost_report` and `training_data_release`.

Table names are read from the report modules when the checks are built, never copied.
"""

from __future__ import annotations

from quality_checks.gx_runner import import_gx
from quality_checks.rules import CheckSpec, QualityBounds, SqlRowRule, asset_name, integrity_check, new_suite, unique_non_null_rules
from synth_assets.reports import cost_report, training_data_release

# cost_report columns that can never be negative.
MONEY_COLUMNS = ("cost_usd", "saved_usd", "no_cache_cost_usd")
COUNT_COLUMNS = ("calls", "cache_hits", "failed_calls", "prompt_tokens", "completion_tokens", "unknown_price_calls")


def cost_report_checks(b: QualityBounds) -> list[CheckSpec]:
    table = cost_report.COST_REPORT_TABLE

    def suite():
        e = import_gx().expectations
        return new_suite(
            table,
            [e.ExpectColumnValuesToNotBeNull(column="asset_key")]
            + [e.ExpectColumnValuesToBeBetween(column=c, min_value=0) for c in (*MONEY_COLUMNS, *COUNT_COLUMNS)],
        )

    return [
        integrity_check(
            asset=asset_name(cost_report.cost_report),
            table=table,
            description="One row per asset_key; money and counts non-negative; cache hits never exceed calls.",
            id_column="asset_key",
            rules=(
                *unique_non_null_rules("asset_key"),
                SqlRowRule(
                    "cache_hits_within_calls",
                    "SELECT asset_key, calls, cache_hits, failed_calls FROM {table} "
                    "WHERE cache_hits > calls OR failed_calls > calls",
                ),
            ),
            gx_suite=suite,
        )
    ]


def training_data_release_checks(b: QualityBounds) -> list[CheckSpec]:
    table = training_data_release.RELEASE_TABLE

    def suite():
        e = import_gx().expectations
        return new_suite(
            table,
            [
                e.ExpectColumnValuesToNotBeNull(column="config_name"),
                e.ExpectColumnValuesToMatchRegex(column="parquet_sha256", regex=r"^[0-9a-f]{64}$"),
                e.ExpectColumnValuesToBeBetween(column="rows", min_value=0),
                e.ExpectColumnValuesToBeBetween(column="rows_left_out", min_value=0),
            ],
        )

    return [
        integrity_check(
            asset=asset_name(training_data_release.training_data_release),
            table=table,
            description="One manifest row per config with a sha256 checksum; rows left out always say why.",
            id_column="config_name",
            rules=(
                *unique_non_null_rules("config_name"),
                SqlRowRule(
                    "rows_left_out_have_reason",
                    "SELECT config_name, rows_left_out FROM {table} "
                    "WHERE rows_left_out > 0 AND (left_out_reason IS NULL OR length(trim(left_out_reason)) = 0)",
                ),
            ),
            gx_suite=suite,
        )
    ]


def check_specs(b: QualityBounds) -> list[CheckSpec]:
    """The reports folder's checks, in DAG order."""
    return [*cost_report_checks(b), *training_data_release_checks(b)]
