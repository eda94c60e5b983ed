"""`lake_maintenance_job`: compacts the lake's small files and expires old snapshots, nightly."""

import dagster as dg

from resources.warehouse import Warehouse


@dg.op(
    tags={"kind": "ducklake"},
    description="Flush inlined rows, merge small files, expire snapshots older than the warehouse's "
    "`snapshot_retention_days`, delete files nothing needs, drop stale staging schemas.",
)
def maintain_lake(context: dg.OpExecutionContext, warehouse: Warehouse) -> dg.Output:
    report = warehouse.maintain()
    context.log.info(
        f"merged {report.files_merged} files, expired {report.snapshots_expired} snapshots, "
        f"deleted {report.files_deleted} + {report.orphans_deleted} orphaned files, "
        f"dropped stale stages {report.stale_stages_dropped or 'none'}"
    )
    return dg.Output(
        None,
        metadata={
            "files_merged": report.files_merged,
            "snapshots_expired": report.snapshots_expired,
            "files_deleted": report.files_deleted,
            "orphaned_files_deleted": report.orphans_deleted,
            "stale_stages_dropped": len(report.stale_stages_dropped),
            "lake/snapshot_id": report.snapshot_after,
            "retention_days": warehouse.snapshot_retention_days,
        },
    )


@dg.job(description="DuckLake upkeep: compaction, snapshot expiry, orphan cleanup. Reads and writes no table's rows.")
def lake_maintenance_job():
    maintain_lake()


nightly_lake_maintenance_schedule = dg.ScheduleDefinition(
    name="nightly_lake_maintenance_schedule",
    job=lake_maintenance_job,
    cron_schedule="30 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every night at 03:30 UTC: lake_maintenance_job.",
)
