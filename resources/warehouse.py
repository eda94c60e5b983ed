"""The DuckDB warehouse: one file, reached only through this resource."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pyarrow as pa
from pydantic import Field

DEFAULT_WAREHOUSE_PATH = "data/warehouse.duckdb"
WAREHOUSE_ENV_VAR = "SYNTH_ASSETS_WAREHOUSE"

# DuckDB allows one read-write *process* per file; connections inside one process
# share a database instance and may be used from several threads. Across steps the
# `duckdb` concurrency pool (dagster_home/dagster.yaml) keeps writers apart, and
# `connect` waits out a lock held by another process instead of failing at once.


def default_warehouse_path() -> str:
    return os.environ.get(WAREHOUSE_ENV_VAR, DEFAULT_WAREHOUSE_PATH)


class Warehouse(dg.ConfigurableResource):
    """The project's DuckDB file. Tables are written whole and idempotently."""

    path: str = Field(
        default_factory=default_warehouse_path,
        description=f"DuckDB file path (env {WAREHOUSE_ENV_VAR}, default {DEFAULT_WAREHOUSE_PATH}).",
    )
    lock_timeout_s: float = Field(
        default=120.0, description="How long to wait for another process's write lock."
    )

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection; retried while another process holds the file lock."""
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = self._open_with_retry()
        try:
            yield conn
        finally:
            conn.close()

    def _open_with_retry(self) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.05
        while True:
            try:
                return duckdb.connect(self.path)
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def write_table(self, name: str, frame: pl.DataFrame | pa.Table) -> None:
        """`CREATE OR REPLACE TABLE name` from a Polars frame or Arrow table."""
        arrow = frame.to_arrow() if isinstance(frame, pl.DataFrame) else frame
        with self.connect() as conn:
            conn.register("_incoming", arrow)
            conn.execute(f'CREATE OR REPLACE TABLE "{name}" AS SELECT * FROM _incoming')
            conn.unregister("_incoming")

    def append_table(self, name: str, frame: pl.DataFrame | pa.Table) -> None:
        """Append a batch, creating the table from the batch's schema if needed."""
        arrow = frame.to_arrow() if isinstance(frame, pl.DataFrame) else frame
        with self.connect() as conn:
            conn.register("_incoming", arrow)
            conn.execute(f'CREATE TABLE IF NOT EXISTS "{name}" AS SELECT * FROM _incoming LIMIT 0')
            conn.execute(f'INSERT INTO "{name}" BY NAME SELECT * FROM _incoming')
            conn.unregister("_incoming")

    def query(self, sql: str, params: list | None = None) -> pl.DataFrame:
        with self.connect() as conn:
            return conn.execute(sql, params or []).pl()

    def execute(self, sql: str, params: list | None = None) -> None:
        with self.connect() as conn:
            conn.execute(sql, params or [])

    def table_exists(self, name: str) -> bool:
        with self.connect() as conn:
            found = conn.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]
            ).fetchone()
        return bool(found and found[0])
