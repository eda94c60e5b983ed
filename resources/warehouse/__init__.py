"""The warehouse: a DuckLake (Parquet data files + a catalog database), reached only here.

    warehouse.write_table(name, frame)       # one atomic commit, retried on conflict
    with warehouse.materialization(context) as lake:
        ...                                  # writes staged per run, published atomically
    warehouse.read_only()                    # for readers: lineage, reports, the UI test

Embedded default: `data/lake/catalog.sqlite` + `data/lake/data/`. At scale: the catalog in
PostgreSQL and the data on object storage (see location.py for the settings). Many
processes and runs read and write at once; nothing needs a Dagster concurrency pool.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import dagster as dg
import duckdb
import polars as pl
import pyarrow as pa
from pydantic import Field

from resources.warehouse.lake import LAKE, MAIN, Lake, WarehouseMissing
from resources.warehouse.location import (
    CATALOG_ENV_VAR,
    DATA_PATH_ENV_VAR,
    DEFAULT_WAREHOUSE_PATH,
    WAREHOUSE_ENV_VAR,
    LakeLocation,
    default_catalog,
    default_data_path,
    default_warehouse_path,
)
from resources.warehouse.maintenance import DEFAULT_RETENTION_DAYS, MaintenanceReport, maintain
from resources.warehouse.staging import PartitionStage, StagedLake, stage_name

__all__ = ["Warehouse", "Lake", "StagedLake", "PartitionStage", "WarehouseMissing", "default_warehouse_path", "LAKE", "MAIN"]


class Warehouse(dg.ConfigurableResource):
    """The project's DuckLake. Tables are written whole, atomically and idempotently."""

    path: str = Field(
        default_factory=default_warehouse_path,
        description=f"Folder of the embedded lake: catalog.sqlite + data/ (env {WAREHOUSE_ENV_VAR}, "
        f"default {DEFAULT_WAREHOUSE_PATH}).",
    )
    catalog: str | None = Field(
        default_factory=default_catalog,
        description=f"Catalog database instead of <path>/catalog.sqlite: 'postgres:dbname=lake host=... user=...' "
        f"(password from PGPASSWORD or ~/.pgpass), 'sqlite:<file>' or 'duckdb:<file>' (env {CATALOG_ENV_VAR}).",
    )
    data_path: str | None = Field(
        default_factory=default_data_path,
        description=f"Where the Parquet data files go instead of <path>/data/: a folder or 's3://bucket/prefix/' "
        f"(credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_ENDPOINT_URL) (env {DATA_PATH_ENV_VAR}).",
    )
    retry_timeout_s: float = Field(
        default=120.0, description="How long a write keeps retrying commit conflicts with other writers."
    )
    read_only_access: bool = Field(default=False, description="Attach the lake read-only (readers).")
    snapshot_retention_days: float = Field(
        default=DEFAULT_RETENTION_DAYS,
        description="The maintenance job expires snapshots (and deletes files only they need) older than this; "
        "it is how far back `python -m synth_assets.lineage --snapshot` can read.",
    )

    # ------------------------------------------------------------------ the lake

    def location(self) -> LakeLocation:
        return LakeLocation.resolve(self.path, self.catalog, self.data_path)

    def lake(self, as_of_snapshot: int | None = None) -> Lake:
        """The live tables (schema `main`)."""
        return Lake(self.location(), MAIN, self.read_only_access, self.retry_timeout_s, as_of_snapshot)

    def read_only(self) -> Warehouse:
        """The same lake, attached read-only: for the lineage command, reports and tests."""
        return self.model_copy(update={"read_only_access": True})

    @contextmanager
    def materialization(
        self,
        context: Any = None,
        name: str | None = None,
        rows_of: tuple[str, Sequence[str]] | None = None,
        run_id: str | None = None,
    ) -> Iterator[StagedLake | PartitionStage]:
        """Stage a materialization's writes; publish them in one transaction when the block
        succeeds, publish nothing when it fails (staging.py).
        `rows_of=(column, keys)`: a partition's materialization, which replaces only the
        live rows whose `column` is one of `keys` (the other partitions' rows stay); it
        stages in a local file, so its publish is its only catalog commit."""
        asset = name or _asset_name(context)
        run_id = run_id or getattr(context, "run_id", None)
        stage = stage_name(asset, run_id)
        if rows_of is None:
            staged = StagedLake(self.location(), stage, retry_timeout_s=self.retry_timeout_s)
        else:
            keys = (rows_of[0], tuple(rows_of[1]))
            staged = PartitionStage(self.location(), stage, keys, retry_timeout_s=self.retry_timeout_s)
        leftover = staged.create()
        log = getattr(context, "log", None)
        if leftover and log is not None:
            log.warning(f"dropped {len(leftover)} table(s) an earlier attempt left in {staged.schema}")
        try:
            yield staged
        except BaseException:
            what = staged.abandon()
            if log is not None:
                log.warning(what)
            raise
        snapshot = staged.publish()
        if log is not None:
            log.info(f"published {stage} as lake snapshot {snapshot}")

    # ------------------------------------------------------------------ the live tables

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self.lake().connect() as conn:
            yield conn

    def transaction(self, work):
        return self.lake().transaction(work)

    def write_table(self, name: str, frame: pl.DataFrame | pa.Table) -> None:
        self.lake().write_table(name, frame)

    def append_table(self, name: str, frame: pl.DataFrame | pa.Table) -> None:
        self.lake().append_table(name, frame)

    def query(self, sql: str, params: list | None = None) -> pl.DataFrame:
        return self.lake().query(sql, params)

    def execute(self, sql: str, params: list | None = None) -> None:
        self.lake().execute(sql, params)

    def table_exists(self, name: str) -> bool:
        return self.lake().table_exists(name)

    def columns(self, name: str) -> list[tuple[str, str]]:
        return self.lake().columns(name)

    def snapshot_id(self) -> int:
        return self.lake().snapshot_id()

    def maintain(self) -> MaintenanceReport:
        """Compact small files and expire snapshots older than the retention."""
        return maintain(self.lake(), self.snapshot_retention_days)


def _asset_name(context: Any) -> str:
    try:
        return context.asset_key.to_user_string()
    except Exception:  # no single asset (a multi-asset, or a plain function call in a test)
        return getattr(context, "op_def", None) and context.op_def.name or "adhoc"
