"""A materialization's own staging schema, published atomically when it succeeds.

    with warehouse.materialization(context) as lake:   # schema stage_<asset>_<run id>
        lake.write_table("my_table", frame)             # lands in the staging schema
        lake.query('SELECT ... FROM "my_table"')        # staged first, live otherwise
    lake.snapshot_id                                    # the snapshot that published it

On success every staged table replaces its live table in ONE DuckLake transaction, so a
reader sees all of the materialization's tables or none of them, and the staging schema is
dropped. A partition's materialization (`rows_of=(column, keys)`) replaces only the live rows
whose `column` is one of its keys, in the same single transaction, so partitions of one table
are written by many runs at once (DuckLake retries their conflicting commits). On failure nothing is published: the live tables stay at the last good snapshot,
and the partial rows stay in the staging schema for inspection until the maintenance job
removes stale staging schemas.
"""

from __future__ import annotations

import re
import uuid

import duckdb

from resources.warehouse.lake import LAKE, MAIN, Lake, quote

STAGE_PREFIX = "stage_"


def stage_name(asset: str, run_id: str | None) -> str:
    """`stage_<asset>_<first 8 of the run id>`: one per run and asset, readable in SQL."""
    run = re.sub(r"[^0-9a-z]", "", (run_id or uuid.uuid4().hex).lower())[:8]
    return f"{STAGE_PREFIX}{re.sub(r'[^0-9a-z_]', '_', asset.lower())}_{run}"


class StagedLake(Lake):
    """A Lake whose writes go to a staging schema until `publish()`."""

    snapshot_id_published: int | None = None
    # (column, keys): publish replaces only the live rows of these partition keys.
    rows_of: tuple[str, tuple[str, ...]] | None = None

    def create(self) -> list[str]:
        """Create the staging schema, emptying one a failed earlier attempt left behind.
        Returns the tables that attempt had staged (they are dropped)."""
        leftover = self.tables()

        def reset(conn: duckdb.DuckDBPyConnection) -> None:
            conn.execute(f"DROP SCHEMA IF EXISTS {LAKE}.{quote(self.schema)} CASCADE")
            conn.execute(f"CREATE SCHEMA {LAKE}.{quote(self.schema)}")

        Lake(self.location, MAIN, retry_timeout_s=self.retry_timeout_s).transaction(reset)
        return leftover

    def publish(self) -> int:
        """Replace every live table with its staged version in one transaction, drop the
        staging schema, and return the snapshot id of that commit."""
        staged = self.tables()
        live = Lake(self.location, MAIN, retry_timeout_s=self.retry_timeout_s)

        message = f"publish {self.schema}"

        def swap(conn: duckdb.DuckDBPyConnection) -> int:
            # The commit message finds this commit's snapshot id afterwards, whatever other
            # processes commit in between.
            conn.execute(f"CALL ducklake_set_commit_message('{LAKE}', 'synth-assets', ?)", [message])
            for table in staged:
                self._replace_live(conn, table)
                conn.execute(f"DROP TABLE {LAKE}.{quote(self.schema)}.{quote(table)}")
            conn.execute(f"DROP SCHEMA IF EXISTS {LAKE}.{quote(self.schema)}")
            return len(staged)

        live.transaction(swap)
        with live.connect() as conn:
            snapshot = conn.execute(
                f"SELECT max(snapshot_id) FROM ducklake_snapshots('{LAKE}') WHERE commit_message = ?", [message]
            ).fetchone()
        self.snapshot_id_published = int(snapshot[0])
        return self.snapshot_id_published

    def _replace_live(self, conn: duckdb.DuckDBPyConnection, table: str) -> None:
        live = f"{LAKE}.{MAIN}.{quote(table)}"
        staged = f"{LAKE}.{quote(self.schema)}.{quote(table)}"
        exists = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_catalog = ? AND table_schema = ? "
            "AND table_name = ?",
            [LAKE, MAIN, table],
        ).fetchone()[0]
        if self.rows_of is None or not exists:
            conn.execute(f"CREATE OR REPLACE TABLE {live} AS SELECT * FROM {staged}")
            return
        column, keys = self.rows_of
        conn.execute(f"DELETE FROM {live} WHERE {quote(column)} IN (SELECT unnest(?::VARCHAR[]))", [list(keys)])
        conn.execute(f"INSERT INTO {live} BY NAME SELECT * FROM {staged}")
