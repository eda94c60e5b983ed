"""Where the DuckLake lives: its catalog database and its data files.

- Embedded default, nothing to configure: the catalog is a SQLite file and the Parquet
  data files sit beside it, both under one folder (`data/lake/`).
- At scale: the catalog in PostgreSQL (`postgres:dbname=lake host=db user=...`) and the
  data files on object storage (`s3://bucket/prefix/`, `gs://...`, through httpfs).

Each is one setting on the warehouse resource or one environment variable:

| setting     | env                          | default                     |
|-------------|------------------------------|-----------------------------|
| `path`      | `SYNTH_ASSETS_WAREHOUSE`     | `data/lake`                 |
| `catalog`   | `SYNTH_ASSETS_CATALOG`       | `sqlite:<path>/catalog.sqlite` |
| `data_path` | `SYNTH_ASSETS_DATA_PATH`     | `<path>/data/`              |
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_WAREHOUSE_PATH = "data/lake"
WAREHOUSE_ENV_VAR = "SYNTH_ASSETS_WAREHOUSE"
CATALOG_ENV_VAR = "SYNTH_ASSETS_CATALOG"
DATA_PATH_ENV_VAR = "SYNTH_ASSETS_DATA_PATH"
CATALOG_TYPES = ("sqlite", "postgres", "duckdb")
REMOTE_PREFIXES = ("s3://", "s3a://", "gs://", "gcs://", "r2://", "https://", "http://")
# SQLite waits this long for another process's catalog write lock before DuckLake retries.
SQLITE_BUSY_TIMEOUT_MS = 5000


def default_warehouse_path() -> str:
    return os.environ.get(WAREHOUSE_ENV_VAR) or DEFAULT_WAREHOUSE_PATH


def default_catalog() -> str | None:
    return os.environ.get(CATALOG_ENV_VAR) or None


def default_data_path() -> str | None:
    return os.environ.get(DATA_PATH_ENV_VAR) or None


@dataclass(frozen=True)
class LakeLocation:
    catalog_type: str  # sqlite / postgres / duckdb
    catalog: str  # the file path, or the libpq connection string
    data_path: str  # a folder or an object-storage prefix, ending in '/'

    @classmethod
    def resolve(cls, path: str, catalog: str | None, data_path: str | None) -> LakeLocation:
        root = Path(path)
        if catalog:
            kind, sep, target = catalog.partition(":")
            if not sep or kind not in CATALOG_TYPES:
                raise ValueError(
                    f"catalog must look like 'sqlite:<file>', 'postgres:<libpq string>' or 'duckdb:<file>' "
                    f"(got a value starting {catalog.split(':', 1)[0]!r})"
                )
        else:
            kind, target = "sqlite", str(root / "catalog.sqlite")
        if kind != "postgres":
            target = str(Path(target).absolute())
        data = data_path or str(root / "data")
        if not data.startswith(REMOTE_PREFIXES):
            data = str(Path(data).absolute())
        return cls(kind, target, data.rstrip("/") + "/")

    @property
    def is_remote_data(self) -> bool:
        return self.data_path.startswith(REMOTE_PREFIXES)

    @property
    def extensions(self) -> list[str]:
        needed = {"sqlite": ["sqlite"], "postgres": ["postgres"], "duckdb": []}[self.catalog_type]
        return needed + (["httpfs"] if self.is_remote_data else []) + ["ducklake"]

    def prepare_local(self) -> None:
        """Create the local folders the catalog and data files go in."""
        if self.catalog_type != "postgres":
            Path(self.catalog).parent.mkdir(parents=True, exist_ok=True)
        if not self.is_remote_data:
            Path(self.data_path).mkdir(parents=True, exist_ok=True)

    def exists(self) -> bool:
        """Whether a local catalog file is there (always True for PostgreSQL)."""
        return self.catalog_type == "postgres" or Path(self.catalog).exists()

    def attach_sql(self, alias: str, read_only: bool, snapshot: int | None = None) -> str:
        options = [f"DATA_PATH {_literal(self.data_path)}"]
        if self.catalog_type == "sqlite":
            # WAL lets readers and one writer work at once; the busy timeout makes a writer
            # wait for the lock instead of failing at once (duckdb/ducklake#128).
            options += ["META_JOURNAL_MODE 'WAL'", f"META_BUSY_TIMEOUT {SQLITE_BUSY_TIMEOUT_MS}"]
        if read_only or snapshot is not None:
            options.append("READ_ONLY")
        if snapshot is not None:
            options.append(f"SNAPSHOT_VERSION {int(snapshot)}")
        return f"ATTACH {_literal(f'ducklake:{self.catalog_type}:{self.catalog}')} AS {alias} ({', '.join(options)})"

    def describe(self) -> str:
        """For logs and metadata: never the PostgreSQL password."""
        catalog = self.catalog
        if self.catalog_type == "postgres":
            catalog = " ".join(p for p in catalog.split() if not p.lower().startswith("password="))
        return f"{self.catalog_type}:{catalog} data={self.data_path}"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def object_storage_secret_sql() -> str | None:
    """A DuckDB secret for s3-compatible storage from the usual AWS_* variables, if set.
    The statement holds the key, so it is executed, never logged."""
    key_id, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not (key_id and secret):
        return None
    parts = [f"KEY_ID {_literal(key_id)}", f"SECRET {_literal(secret)}"]
    if region := os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"):
        parts.append(f"REGION {_literal(region)}")
    if endpoint := os.environ.get("AWS_ENDPOINT_URL"):
        scheme, _, host = endpoint.partition("://")
        parts.append(f"ENDPOINT {_literal(host or scheme)}")
        parts.append("URL_STYLE 'path'")
        if scheme == "http":
            parts.append("USE_SSL false")
    return f"CREATE OR REPLACE SECRET synth_assets_storage (TYPE s3, {', '.join(parts)})"
