"""Carry a warehouse of the previous version (one DuckDB file) over into the DuckLake.

    python -m resources.warehouse.migrate                       # data/warehouse.duckdb -> the lake
    python -m resources.warehouse.migrate OLD.duckdb --only llm_cache llm_calls

Every table is copied in one transaction (all or nothing). Copying everything means nothing
needs re-materializing; copying only `llm_cache` (and the `llm_calls` ledger, for the cost
history) means a re-materialization answers every request it made before from the cache and
pays nothing twice: only the CPU work (ingest, dedup, scoring) is redone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import duckdb

from resources.warehouse import Warehouse
from resources.warehouse.lake import LAKE, MAIN, quote

LEGACY_FILE = "data/warehouse.duckdb"


def legacy_tables(old: Path) -> list[str]:
    with duckdb.connect(str(old), read_only=True) as conn:
        return [
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
                "AND table_type = 'BASE TABLE' ORDER BY table_name"
            ).fetchall()
        ]


def migrate(old: Path, warehouse: Warehouse, only: list[str] | None = None) -> dict[str, int]:
    """Copy tables from the old DuckDB file into the lake; returns table -> rows copied."""
    tables = [t for t in legacy_tables(old) if not only or t in only]
    missing = sorted(set(only or []) - set(tables))
    if missing:
        raise SystemExit(f"not in {old}: {', '.join(missing)}")

    def copy(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
        conn.execute(f"ATTACH {_literal(str(old))} AS legacy (READ_ONLY)")
        counts = {}
        for table in tables:
            conn.execute(f"CREATE OR REPLACE TABLE {LAKE}.{MAIN}.{quote(table)} AS SELECT * FROM legacy.main.{quote(table)}")
            counts[table] = conn.execute(f"SELECT count(*) FROM {LAKE}.{MAIN}.{quote(table)}").fetchone()[0]
        return counts

    try:
        return warehouse.transaction(copy)
    finally:
        with warehouse.connect() as conn:
            conn.execute("DETACH DATABASE IF EXISTS legacy")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m resources.warehouse.migrate", description=__doc__.split("\n\n")[0])
    parser.add_argument("old", nargs="?", default=LEGACY_FILE, help=f"the old DuckDB file (default {LEGACY_FILE})")
    parser.add_argument("--only", nargs="+", help="copy only these tables (e.g. llm_cache llm_calls)")
    args = parser.parse_args(argv)
    old = Path(args.old)
    if not old.exists():
        print(f"migrate: no file at {old}", file=sys.stderr)
        return 1
    warehouse = Warehouse()
    counts = migrate(old, warehouse, args.only)
    for table, rows in counts.items():
        print(f"{table}: {rows} rows")
    print(f"copied {len(counts)} tables into {warehouse.location().describe()} (snapshot {warehouse.snapshot_id()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
