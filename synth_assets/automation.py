"""Automation conditions: when assets re-run by themselves. Imports no pipeline stage.

- `on_upstream_change()`: the condition every downstream asset declares.
- `on_code_change()`: the condition of root assets that call the LLM.
- `on_new_shards()`: raw_stack_plus's: after corpus shards were (re-)ingested.
- `automation_sensor`: evaluates those conditions (running by default, every 30 s).

The corpus sensor lives with ingest (synth_assets/ingest/corpus_sensor.py), the cost report
schedule with the reports (synth_assets/reports/schedules.py).
"""

from __future__ import annotations


import dagster as dg



def on_upstream_change() -> dg.AutomationCondition:
    """Re-materialize when an upstream asset has new data or this asset's code version
    changed (prompt and model changes bump `code_version`), but only once every
    upstream blocking check has passed, and never while a run of it is in flight."""
    return (
        dg.AutomationCondition.eager()
        | (
            dg.AutomationCondition.code_version_changed().since_last_handled()
            & ~dg.AutomationCondition.in_progress()
        )
    ) & dg.AutomationCondition.all_deps_blocking_checks_passed()


def on_code_change() -> dg.AutomationCondition:
    """For root assets that call the LLM (plans and exercises have no upstream asset):
    re-materialize when their code version changed (a new prompt or model bumps it),
    never merely because they are missing, so starting the UI does not spend money."""
    return (
        dg.AutomationCondition.code_version_changed().since_last_handled()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("code_version_changed")


def on_new_shards() -> dg.AutomationCondition:
    """For raw_stack_plus: re-deduplicate once shards it depends on were (re-)ingested
    and none is still running, never merely because it is missing (it ingests missing
    shards itself, so a fresh instance does not start the whole graph by itself)."""
    return (
        dg.AutomationCondition.any_deps_updated().since_last_handled()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("corpus_shards_updated")


# How often the daemon may evaluate the automation conditions.
AUTOMATION_SENSOR_INTERVAL_S = 30

automation_sensor = dg.AutomationConditionSensorDefinition(
    "automation_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=AUTOMATION_SENSOR_INTERVAL_S,
    description="Evaluates every asset's automation condition (on_upstream_change) and launches "
    "the runs it asks for. Running by default.",
)
