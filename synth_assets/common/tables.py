"""What every asset reports about the table it wrote: row count, schema, content
version and a short preview. One helper so all assets describe tables the same way."""

from __future__ import annotations

from typing import Any

import dagster as dg

from resources.warehouse import Lake, Warehouse

PREVIEW_ROWS = 5
PREVIEW_CHARS = 80


def table_metadata(warehouse: Warehouse | Lake, table: str) -> dict[str, Any]:
    """`dagster/row_count`, `dagster/column_schema`, `preview` and `data_version`
    for a table in the warehouse (or in a materialization's staging schema)."""
    columns = warehouse.columns(table)
    with warehouse.connect() as conn:
        row_count = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
        # Order-independent content hash: the same rows give the same version.
        content_hash = conn.execute(f'SELECT coalesce(bit_xor(hash(t)), 0) FROM "{table}" AS t').fetchone()[0]
        preview = conn.execute(f'SELECT * FROM "{table}" LIMIT {PREVIEW_ROWS}').pl()
    data_version = f"{content_hash:016x}-{row_count}"
    return {
        "dagster/row_count": dg.MetadataValue.int(row_count),
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(name, dtype) for name, dtype in columns]
        ),
        "data_version": data_version,
        "preview": dg.MetadataValue.md(markdown_table(preview.rows(), preview.columns)),
    }


def table_result(
    warehouse: Warehouse | Lake,
    table: str,
    metadata: dict[str, Any] | None = None,
    check_results: list[dg.AssetCheckResult] | None = None,
    asset_key: dg.AssetKey | str | None = None,
    snapshot_id: int | None = None,
) -> dg.MaterializeResult:
    """The `MaterializeResult` for an asset whose output is `table`.

    With `snapshot_id` (the DuckLake snapshot that published the table) the table is read
    as of that snapshot, and the id is recorded as `lake/snapshot_id`: the exact version
    of the lake this materialization made, readable with `python -m synth_assets.lineage
    --snapshot`. `data_version` stays a content hash, so an unchanged table does not make
    downstream assets stale."""
    if snapshot_id is not None and isinstance(warehouse, Warehouse):
        warehouse = warehouse.read_only().lake(as_of_snapshot=snapshot_id)
    described = table_metadata(warehouse, table)
    data_version = described.pop("data_version")
    lake_metadata = {"lake/snapshot_id": dg.MetadataValue.int(snapshot_id)} if snapshot_id is not None else {}
    return dg.MaterializeResult(
        asset_key=asset_key,
        metadata={"table": table, "data_version": data_version, **lake_metadata, **described, **(metadata or {})},
        data_version=dg.DataVersion(data_version),
        check_results=check_results,
    )


def markdown_table(rows: list[tuple] | list[list], columns: list[str]) -> str:
    """A small markdown table; long cells are shortened and pipes escaped."""

    def cell(value: Any) -> str:
        text = "" if value is None else str(value)
        text = text.replace("\n", " ").replace("|", "\\|")
        return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"

    header = "| " + " | ".join(columns) + " |"
    rule = "|" + "---|" * len(columns)
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join([header, rule, *body])


def counts_markdown(counts: dict[str, int], key_name: str = "reason", value_name: str = "rows") -> str:
    return markdown_table(sorted(counts.items(), key=lambda kv: -kv[1]), [key_name, value_name])
