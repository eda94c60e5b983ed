"""Lake upkeep with DuckLake's own functions: fewer small files, bounded history.

Every commit is a snapshot and small commits (the LLM cache's per-second flushes, appends
in batches) leave small files. `maintain()`:
1. flushes rows DuckLake inlined into the catalog into Parquet files;
2. merges adjacent small files (`ducklake_merge_adjacent_files`);
3. expires snapshots older than the retention (`ducklake_expire_snapshots`), which is how
   far back `--snapshot` reads can go;
4. deletes the files no remaining snapshot needs (`ducklake_cleanup_old_files`) and files
   no snapshot ever referenced, e.g. from a writer killed mid-commit
   (`ducklake_delete_orphaned_files`), both older than the retention;
5. drops staging schemas of failed materializations created before the retention.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from resources.warehouse.lake import LAKE, Lake, quote
from resources.warehouse.staging import STAGE_PREFIX

DEFAULT_RETENTION_DAYS = 7.0


@dataclass
class MaintenanceReport:
    files_merged: int = 0
    snapshots_expired: int = 0
    files_deleted: int = 0
    orphans_deleted: int = 0
    stale_stages_dropped: list[str] = field(default_factory=list)
    snapshot_after: int | None = None


def maintain(lake: Lake, retention_days: float = DEFAULT_RETENTION_DAYS) -> MaintenanceReport:
    report = MaintenanceReport()
    older_than = f"now() - INTERVAL '{float(retention_days) * 86400:.0f} seconds'"
    with lake.connect() as conn:
        conn.execute(f"CALL ducklake_flush_inlined_data('{LAKE}')")
        merged = conn.execute(f"CALL ducklake_merge_adjacent_files('{LAKE}')").fetchall()
        report.files_merged = sum(int(row[2]) for row in merged if len(row) > 2 and row[2] is not None)
        report.stale_stages_dropped = _drop_stale_stages(conn, older_than)
        expired = conn.execute(f"CALL ducklake_expire_snapshots('{LAKE}', older_than => {older_than})").fetchall()
        report.snapshots_expired = len(expired)
        deleted = conn.execute(f"CALL ducklake_cleanup_old_files('{LAKE}', older_than => {older_than})").fetchall()
        report.files_deleted = len(deleted)
        orphans = conn.execute(f"CALL ducklake_delete_orphaned_files('{LAKE}', older_than => {older_than})").fetchall()
        report.orphans_deleted = len(orphans)
    report.snapshot_after = lake.snapshot_id()
    return report


def _drop_stale_stages(conn, older_than: str) -> list[str]:
    """Staging schemas whose creating snapshot is older than the retention, or already
    expired (so older still)."""
    stages = [
        row[0]
        for row in conn.execute(
            "SELECT schema_name FROM information_schema.schemata WHERE catalog_name = ? AND starts_with(schema_name, ?)",
            [LAKE, STAGE_PREFIX],
        ).fetchall()
    ]
    dropped = []
    for stage in stages:
        created = conn.execute(
            f"SELECT max(snapshot_time) > {older_than} FROM ducklake_snapshots('{LAKE}') "
            "WHERE list_contains(changes['schemas_created'], ?)",
            [stage],
        ).fetchone()
        recent = bool(created and created[0])
        if not recent:
            conn.execute(f"DROP SCHEMA IF EXISTS {LAKE}.{quote(stage)} CASCADE")
            dropped.append(stage)
    return dropped
