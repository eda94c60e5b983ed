"""A materialization's own staging area, published atomically when it succeeds.

    with warehouse.materialization(context) as lake:   # schema stage_<asset>_<run id>
        lake.write_table("my_table", frame)             # lands in the staging schema
        lake.query('SELECT ... FROM "my_table"')        # staged first, live otherwise
    lake.snapshot_id_published                          # the snapshot that published it

A whole-table materialization (`StagedLake`) stages in a schema of the lake. On success
every staged table replaces its live table in ONE DuckLake transaction, so a reader sees
all of the materialization's tables or none of them, and the staging schema is dropped. On
failure nothing is published: the live tables stay at the last good snapshot, and the
partial rows stay in the staging schema for inspection until the maintenance job removes
stale staging schemas.

A partition's materialization (`PartitionStage`, `rows_of=(column, keys)`) stages in a
local DuckDB file attached beside the lake, and its publish replaces only the live rows
whose `column` is one of its keys, in ONE transaction: the only catalog commit of the
partition. Thousands of shards are published by many workers at once, and on a SQLite
catalog every commit takes the catalog's file lock, so a shard that staged in the lake
(create the schema, one commit per batch, publish) queued 4-7 times per shard behind the
other workers. A failed partition publishes nothing and leaves nothing behind (its local
file is deleted); its task is re-run whole.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import duckdb

from resources.warehouse.lake import LAKE, MAIN, Lake, quote

STAGE_PREFIX = "stage_"


def stage_name(asset: str, run_id: str | None) -> str:
    """`stage_<asset>_<first 8 of the run id>`: one per run and asset, readable in SQL."""
    run = re.sub(r"[^0-9a-z]", "", (run_id or uuid.uuid4().hex).lower())[:8]
    return f"{STAGE_PREFIX}{re.sub(r'[^0-9a-z_]', '_', asset.lower())}_{run}"


def commit_published(live: Lake, message: str, work: Callable[[duckdb.DuckDBPyConnection], object]) -> int:
    """Run `work` in one live transaction tagged `message` and return that commit's
    snapshot id (found by its message, whatever other processes commit in between)."""

    def tagged(conn: duckdb.DuckDBPyConnection) -> None:
        conn.execute(f"CALL ducklake_set_commit_message('{LAKE}', 'synth-assets', ?)", [message])
        work(conn)

    live.transaction(tagged)
    with live.connect() as conn:
        snapshot = conn.execute(
            f"SELECT max(snapshot_id) FROM ducklake_snapshots('{LAKE}') WHERE commit_message = ?", [message]
        ).fetchone()
    return int(snapshot[0])


def live_table_exists(conn: duckdb.DuckDBPyConnection, table: str) -> bool:
    return bool(
        conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_catalog = ? AND table_schema = ? "
            "AND table_name = ?",
            [LAKE, MAIN, table],
        ).fetchone()[0]
    )


class StagedLake(Lake):
    """A Lake whose writes go to a staging schema of the lake until `publish()`."""

    snapshot_id_published: int | None = None

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

        def swap(conn: duckdb.DuckDBPyConnection) -> None:
            for table in staged:
                conn.execute(f"CREATE OR REPLACE TABLE {LAKE}.{MAIN}.{quote(table)} AS SELECT * FROM {self.qualified(table)}")
                conn.execute(f"DROP TABLE {self.qualified(table)}")
            conn.execute(f"DROP SCHEMA IF EXISTS {LAKE}.{quote(self.schema)}")

        live = Lake(self.location, MAIN, retry_timeout_s=self.retry_timeout_s)
        self.snapshot_id_published = commit_published(live, f"publish {self.schema}", swap)
        return self.snapshot_id_published

    def abandon(self) -> str:
        """What a failure leaves (nothing is removed: the partial rows are for inspection)."""
        return f"not published: partial tables stay in schema {LAKE}.{self.schema} for inspection"


class PartitionStage(Lake):
    """A partition's writes, staged in a local DuckDB file attached beside the lake until
    `publish()` replaces the live rows of its keys (`rows_of`), and only those."""

    snapshot_id_published: int | None = None

    def __init__(self, location, name: str, rows_of: tuple[str, tuple[str, ...]], retry_timeout_s: float = 120.0):
        super().__init__(location, MAIN, retry_timeout_s=retry_timeout_s)
        # unique per attempt: a retried task in the same process attaches a new file
        self.catalog = f"{name}_{uuid.uuid4().hex[:8]}"
        self.rows_of = rows_of
        self.folder: Path | None = None

    def create(self) -> list[str]:
        """Attach a new, empty local file (tempfile's folder: TMPDIR). Nothing is left over
        from a failed attempt: its file was deleted with it."""
        self.folder = Path(tempfile.mkdtemp(prefix=f"synth-assets-{self.catalog}-"))
        with self._catalog_cursor() as conn:
            conn.execute(f"ATTACH '{self.folder / 'stage.duckdb'}' AS {quote(self.catalog)}")
        return []

    def publish(self) -> int:
        """In one lake transaction, delete the live rows of the partition's keys and insert
        the staged rows (creating a live table the lake does not have yet); then delete the
        local file. Returns the snapshot id of that commit."""
        column, keys = self.rows_of
        staged = self.tables()

        def replace_rows(conn: duckdb.DuckDBPyConnection) -> None:
            for table in staged:
                live = f"{LAKE}.{MAIN}.{quote(table)}"
                if not live_table_exists(conn, table):
                    conn.execute(f"CREATE TABLE {live} AS SELECT * FROM {self.qualified(table)}")
                    continue
                conn.execute(f"DELETE FROM {live} WHERE {quote(column)} IN (SELECT unnest(?::VARCHAR[]))", [list(keys)])
                conn.execute(f"INSERT INTO {live} BY NAME SELECT * FROM {self.qualified(table)}")

        try:
            live = Lake(self.location, MAIN, retry_timeout_s=self.retry_timeout_s)
            self.snapshot_id_published = commit_published(live, f"publish {self.catalog}", replace_rows)
        finally:
            self.discard()
        return self.snapshot_id_published

    def abandon(self) -> str:
        self.discard()
        return f"not published: the partition's staged rows ({', '.join(self.rows_of[1])}) were discarded"

    def discard(self) -> None:
        """Detach and delete the local file."""
        if self.folder is None:
            return
        with self._catalog_cursor() as conn:
            conn.execute(f"DETACH DATABASE IF EXISTS {quote(self.catalog)}")
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = None
