"""Automation: when assets re-run by themselves, and the sensors and schedules behind it."""

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
