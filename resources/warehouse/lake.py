"""One schema of the attached DuckLake, and the writes on it.

A process keeps one in-memory DuckDB database per lake location with the lake attached
(opening one costs ~0.3 s: extensions and the catalog); every `connect()` is a cursor on
it (~7 ms). Nothing holds a file lock between calls, so any number of processes and runs
read and write the same lake at once.

Every write is a DuckLake transaction. Two writers that touch the same catalog at once can
fail at commit ("database is locked" on a SQLite catalog, a conflict on PostgreSQL); the
transaction is then rolled back whole and retried with jittered backoff, so a row is
neither lost nor written twice.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import polars as pl
import pyarrow as pa

from resources.warehouse.extensions import OFFLINE_CONFIG, load_extensions
from resources.warehouse.location import LakeLocation, object_storage_secret_sql

LAKE = "lake"
MAIN = "main"
T = TypeVar("T")

_databases: dict[tuple, duckdb.DuckDBPyConnection] = {}
_databases_lock = threading.Lock()
# DuckDB's buffer pool limit for this process (e.g. "2GB"); beyond it sorts, joins and
# aggregates spill to its temp directory. Unset: DuckDB's default, 80% of physical memory.
MEMORY_LIMIT_ENV_VAR = "SYNTH_ASSETS_DUCKDB_MEMORY_LIMIT"
# DuckDB threads of this process (default: every core). A Ray task sets it to the CPUs it
# reserved (resources/compute.py), so two 1-CPU tasks on a 2-core worker do not each run 2.
THREADS_ENV_VAR = "SYNTH_ASSETS_DUCKDB_THREADS"

# What a failed commit between concurrent writers looks like; anything else is a real error.
# "does not have any columns": a commit that reloads the catalog while another process's
# CREATE TABLE is half-visible in it (measured: Ray tasks creating shard tables at once on
# a SQLite catalog); the retry reloads a consistent catalog.
# "ducklake_inlined_data_...does not exist": a read in a transaction that began while another
# process's first rows into a new table were being committed (two processes starting LLM
# sessions on a fresh lake); the retry sees the committed catalog.
_RETRYABLE = ("database is locked", "conflict", "busy", "could not serialize", "deadlock",
              "does not have any columns", "ducklake_inlined_data")


class WarehouseMissing(FileNotFoundError):
    """A reader asked for a lake that was never created."""


def is_retryable(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, duckdb.Error) and any(marker in text for marker in _RETRYABLE)


def database(location: LakeLocation, read_only: bool, snapshot: int | None = None) -> duckdb.DuckDBPyConnection:
    """This process's DuckDB database with the lake attached as `lake` (read-only at
    `snapshot` when one is given: every query then sees the lake as of that commit)."""
    read_only = read_only or snapshot is not None
    key = (os.getpid(), location, read_only, snapshot)
    with _databases_lock:
        db = _databases.get(key)
        if db is None:
            if read_only and not location.exists():
                raise WarehouseMissing(f"no warehouse at {location.describe()} (materialize the pipeline first)")
            if not read_only:
                _warn_about_legacy_file(location)
                location.prepare_local()
            db = duckdb.connect(config=OFFLINE_CONFIG)
            if memory_limit := os.environ.get(MEMORY_LIMIT_ENV_VAR, "").strip():
                db.execute(f"SET memory_limit = '{memory_limit.replace(chr(39), '')}'")
            if threads := os.environ.get(THREADS_ENV_VAR, "").strip():
                db.execute(f"SET threads = {max(1, int(threads))}")
            load_extensions(db, location.extensions)
            if location.is_remote_data and (secret := object_storage_secret_sql()):
                db.execute(secret)
            _attach(db, location.attach_sql(LAKE, read_only, snapshot))
            _databases[key] = db
        return db


# Two processes attaching a lake that does not exist yet both try to create its catalog
# tables; the loser fails ("already exists" / a duplicate key) and, retried, finds them made.
# "failed to probe ducklake metadata" / "transaction is aborted": the probe ran while the
# other process was creating those tables (measured with two Ray tasks on a fresh lake).
_ATTACH_RACE = ("already exists", "duplicate key", "database is locked", "failed to initialize ducklake",
                "failed to probe ducklake metadata", "transaction is aborted")
ATTACH_ATTEMPTS = 8


def _attach(db: duckdb.DuckDBPyConnection, attach_sql: str) -> None:
    for attempt in range(ATTACH_ATTEMPTS):
        try:
            db.execute(attach_sql)
            return
        except duckdb.Error as exc:
            if attempt == ATTACH_ATTEMPTS - 1 or not any(marker in str(exc).lower() for marker in _ATTACH_RACE):
                raise
            try:
                db.execute(f"DETACH DATABASE IF EXISTS {LAKE}")
            except duckdb.Error:
                pass
            time.sleep(0.05 * (2**attempt) * (0.5 + random.random()))


def _warn_about_legacy_file(location: LakeLocation) -> None:
    """A new lake beside the previous version's single DuckDB file: say how to carry it over."""
    if location.catalog_type != "sqlite" or Path(location.catalog).exists():
        return
    legacy = Path(location.catalog).parent.parent / "warehouse.duckdb"
    if legacy.exists():
        logging.getLogger("synth_assets.warehouse").warning(
            f"{legacy} holds a warehouse of the previous version; this run starts a new DuckLake. "
            f"Carry it over with `python -m resources.warehouse.migrate {legacy}` (add `--only llm_cache llm_calls` "
            "to keep just the paid LLM answers and the ledger), or re-materialize (the LLM calls are paid again "
            "unless llm_cache is carried over)."
        )


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class Lake:
    """Tables in one schema of the lake: `main` (the live tables) or a run's staging schema
    (or, for a partition, a local file attached beside the lake: staging.PartitionStage).

    In a staging schema, unqualified names resolve to the staged table first and to the live
    table otherwise, so an asset reads its inputs and its own partial output alike."""

    # The attached database `schema` is in: the lake, or a partition's local staging file.
    catalog: str = LAKE

    def __init__(
        self,
        location: LakeLocation,
        schema: str = MAIN,
        read_only: bool = False,
        retry_timeout_s: float = 120.0,
        as_of_snapshot: int | None = None,
    ) -> None:
        self.location = location
        self.schema = schema
        self.read_only = read_only
        self.retry_timeout_s = retry_timeout_s
        self.as_of_snapshot = as_of_snapshot

    # ------------------------------------------------------------------ connections

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        cursor = database(self.location, self.read_only, self.as_of_snapshot).cursor()
        try:
            cursor.execute(f"USE {quote(self.catalog)}.{quote(self.schema)}")
            if (self.catalog, self.schema) != (LAKE, MAIN):
                cursor.execute(f"SET search_path = '{self.catalog}.{self.schema},{LAKE}.{MAIN}'")
            yield cursor
        finally:
            cursor.close()

    def transaction(self, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run `work(conn)` in one transaction; on a commit conflict roll back and run it
        again (so `work` must only read and write the lake, never have other effects)."""
        deadline = time.monotonic() + self.retry_timeout_s
        delay = 0.02
        while True:
            with self.connect() as conn:
                try:
                    conn.execute("BEGIN TRANSACTION")
                    result = work(conn)
                    conn.execute("COMMIT")
                    return result
                except duckdb.Error as exc:
                    try:
                        conn.execute("ROLLBACK")
                    except duckdb.Error:
                        pass  # the failed commit already ended the transaction
                    if not is_retryable(exc) or time.monotonic() + delay > deadline:
                        raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)

    @contextmanager
    def _catalog_cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor for information_schema queries that works before this schema exists."""
        cursor = database(self.location, self.read_only, self.as_of_snapshot).cursor()
        try:
            yield cursor
        finally:
            cursor.close()

    def qualified(self, name: str) -> str:
        """`name` in this schema, never the live table of the same name."""
        return f"{quote(self.catalog)}.{quote(self.schema)}.{quote(name)}"

    # ------------------------------------------------------------------ writes

    def write_table(self, name: str, frame: pl.DataFrame | pa.Table) -> None:
        """`CREATE OR REPLACE TABLE name` from a Polars frame or Arrow table, atomically."""
        arrow = frame.to_arrow() if isinstance(frame, pl.DataFrame) else frame

        def write(conn: duckdb.DuckDBPyConnection) -> None:
            conn.register("_incoming", arrow)
            conn.execute(f"CREATE OR REPLACE TABLE {quote(name)} AS SELECT * FROM _incoming")
            conn.unregister("_incoming")

        self.transaction(write)

    def append_table(self, name: str, frame: pl.DataFrame | pa.Table) -> None:
        """Append a batch, creating the table from the batch's schema if needed."""
        arrow = frame.to_arrow() if isinstance(frame, pl.DataFrame) else frame

        def append(conn: duckdb.DuckDBPyConnection) -> None:
            conn.register("_incoming", arrow)
            if not self._exists_here(conn, name):
                conn.execute(f"CREATE TABLE {quote(name)} AS SELECT * FROM _incoming LIMIT 0")
            conn.execute(f"INSERT INTO {quote(name)} BY NAME SELECT * FROM _incoming")
            conn.unregister("_incoming")

        self.transaction(append)

    @contextmanager
    def appender(self, name: str, flush_rows: int = 100_000) -> Iterator[Callable[[pl.DataFrame | pa.Table], None]]:
        """Append batches to `name`, committing every `flush_rows` rows and at the end.

        A commit costs a catalog transaction (~10-50 ms, and other writers wait for the
        catalog lock meanwhile), so many small batches are gathered into few commits;
        memory stays bounded by `flush_rows`. Rows not yet flushed when the block raises
        are dropped with it, never half-written."""
        pending: list[pa.Table] = []
        held = 0

        def flush() -> None:
            nonlocal held
            if pending:
                self.append_table(name, pa.concat_tables(pending, promote_options="default"))
                pending.clear()
                held = 0

        def add(frame: pl.DataFrame | pa.Table) -> None:
            nonlocal held
            table = frame.to_arrow() if isinstance(frame, pl.DataFrame) else frame
            pending.append(table)
            held += table.num_rows
            if held >= flush_rows:
                flush()

        yield add
        flush()

    def execute(self, sql: str, params: list | None = None) -> None:
        def run(conn: duckdb.DuckDBPyConnection) -> None:
            conn.execute(sql, params or [])

        self.transaction(run)

    # ------------------------------------------------------------------ reads

    def query(self, sql: str, params: list | None = None) -> pl.DataFrame:
        with self.connect() as conn:
            return conn.execute(sql, params or []).pl()

    def table_exists(self, name: str) -> bool:
        return self.resolve(name) is not None

    def resolve(self, name: str) -> tuple[str, str] | None:
        """(catalog, schema) an unqualified `name` resolves to here (staged first), or None."""
        with self._catalog_cursor() as conn:
            found = set(
                conn.execute(
                    "SELECT table_catalog, table_schema FROM information_schema.tables WHERE table_name = ?", [name]
                ).fetchall()
            )
        for place in ((self.catalog, self.schema), (LAKE, MAIN)):
            if place in found:
                return place
        return None

    def owns(self, name: str) -> bool:
        """`name` is a table of this schema (staged here, or live when this is `main`)."""
        return self.resolve(name) == (self.catalog, self.schema)

    def columns(self, name: str) -> list[tuple[str, str]]:
        """(column, type) of the table `name` resolves to, in order."""
        place = self.resolve(name)
        if place is None:
            return []
        with self.connect() as conn:
            return conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_catalog = ? AND table_schema = ? AND table_name = ? ORDER BY ordinal_position",
                [*place, name],
            ).fetchall()

    def tables(self, schema: str | None = None) -> list[str]:
        """Base tables of this schema, or of the lake's `schema`; [] when it does not exist."""
        with self._catalog_cursor() as conn:
            return [
                row[0]
                for row in conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_catalog = ? "
                    "AND table_schema = ? AND table_type = 'BASE TABLE' ORDER BY table_name",
                    [self.catalog if schema is None else LAKE, schema or self.schema],
                ).fetchall()
            ]

    def snapshot_id(self) -> int:
        """The lake's newest snapshot id (every commit makes one)."""
        with self.connect() as conn:
            return int(conn.execute(f"SELECT * FROM ducklake_current_snapshot('{LAKE}')").fetchone()[0])

    def _exists_here(self, conn: duckdb.DuckDBPyConnection, name: str) -> bool:
        found = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_catalog = ? AND table_schema = ? AND table_name = ?",
            [self.catalog, self.schema, name],
        ).fetchone()
        return bool(found and found[0])

    def describe(self) -> dict[str, Any]:
        return {"lake/location": self.location.describe(), "lake/schema": self.schema}
