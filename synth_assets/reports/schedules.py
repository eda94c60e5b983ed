"""`cost_report_job` and `daily_cost_report_schedule`: the cost report every morning."""

import dagster as dg

from synth_assets.reports.cost_report import COST_REPORT_TABLE

cost_report_job = dg.define_asset_job(
    "cost_report_job",
    selection=dg.AssetSelection.assets(dg.AssetKey(COST_REPORT_TABLE)),
    description="Rebuild the LLM cost report from the llm_calls ledger.",
)

daily_cost_report_schedule = dg.ScheduleDefinition(
    name="daily_cost_report_schedule",
    job=cost_report_job,
    cron_schedule="0 6 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every day at 06:00 UTC: the cost report, so yesterday's spend is on the desk "
    "in the morning even when no asset re-ran. Reads only DuckDB; costs nothing.",
)
