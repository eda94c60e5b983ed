"""The LLM layer's three DuckDB tables.

- `llm_cache`: every answer, keyed by the request's content hash, written before it is
  returned, so a crash, a budget stop or a re-materialization never pays twice.
- `llm_calls`: the cost ledger, one row per request (cache hits included, at $0).
- `llm_batches`: OpenAI Batch API jobs keyed by a hash of the request set, so a re-run
  picks up a batch already submitted instead of submitting (and paying) again.

Rows go in through Arrow in small groups (`INSERT OR IGNORE ... SELECT`), not row by row:
DuckDB inserts are cheap per statement, expensive per row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import duckdb
import pyarrow as pa

CACHE_TABLE = "llm_cache"
CALLS_TABLE = "llm_calls"
BATCHES_TABLE = "llm_batches"

DDL = [
    f"""CREATE TABLE IF NOT EXISTS {CACHE_TABLE} (
        cache_key VARCHAR PRIMARY KEY,
        model VARCHAR,
        kind VARCHAR,              -- chat / embedding
        request_json VARCHAR,      -- the request as keyed (no credentials)
        response_text VARCHAR,     -- assistant text, or the embedding as a JSON list
        usage VARCHAR,             -- provider usage JSON: prompt/completion/cached tokens
        created_at TIMESTAMP
    )""",
    f"""CREATE TABLE IF NOT EXISTS {CALLS_TABLE} (
        call_id VARCHAR PRIMARY KEY,
        run_id VARCHAR,
        asset_key VARCHAR,
        partition VARCHAR,
        model VARCHAR,
        endpoint_host VARCHAR,     -- host[:port] only, never credentials or query strings
        kind VARCHAR,
        prompt_tokens BIGINT,
        completion_tokens BIGINT,
        cached_tokens BIGINT,
        cost_usd DOUBLE,           -- NULL = price unknown (never a silent zero)
        saved_usd DOUBLE,          -- cache hits: what the call would have cost
        latency_s DOUBLE,
        attempts INTEGER,          -- HTTP attempts including retries (0 for hits)
        cache_hit BOOLEAN,
        mode VARCHAR,              -- online / batch
        status VARCHAR,            -- ok / error / budget_exceeded
        error_class VARCHAR,
        cache_key VARCHAR,
        created_at TIMESTAMP
    )""",
    f"""CREATE TABLE IF NOT EXISTS {BATCHES_TABLE} (
        batch_key VARCHAR PRIMARY KEY,   -- sha256 of the sorted cache keys in the batch
        batch_id VARCHAR,
        input_file_id VARCHAR,
        model VARCHAR,
        endpoint_host VARCHAR,
        n_requests INTEGER,
        status VARCHAR,
        output_file_id VARCHAR,
        created_at TIMESTAMP,
        updated_at TIMESTAMP
    )""",
]

CACHE_SCHEMA = pa.schema(
    [
        ("cache_key", pa.string()),
        ("model", pa.string()),
        ("kind", pa.string()),
        ("request_json", pa.string()),
        ("response_text", pa.string()),
        ("usage", pa.string()),
        ("created_at", pa.timestamp("us")),
    ]
)

CALLS_SCHEMA = pa.schema(
    [
        ("call_id", pa.string()),
        ("run_id", pa.string()),
        ("asset_key", pa.string()),
        ("partition", pa.string()),
        ("model", pa.string()),
        ("endpoint_host", pa.string()),
        ("kind", pa.string()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("cached_tokens", pa.int64()),
        ("cost_usd", pa.float64()),
        ("saved_usd", pa.float64()),
        ("latency_s", pa.float64()),
        ("attempts", pa.int32()),
        ("cache_hit", pa.bool_()),
        ("mode", pa.string()),
        ("status", pa.string()),
        ("error_class", pa.string()),
        ("cache_key", pa.string()),
        ("created_at", pa.timestamp("us")),
    ]
)


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def ensure_tables(conn: duckdb.DuckDBPyConnection) -> None:
    for statement in DDL:
        conn.execute(statement)


def fetch_cached(conn: duckdb.DuckDBPyConnection, keys: Sequence[str]) -> dict[str, tuple[str, str]]:
    """`{cache_key: (response_text, usage_json)}` for the keys already answered; one query."""
    if not keys:
        return {}
    conn.register("_wanted_keys", pa.table({"cache_key": pa.array(list(set(keys)), pa.string())}))
    try:
        rows = conn.execute(
            f"SELECT c.cache_key, c.response_text, c.usage FROM {CACHE_TABLE} c "
            "JOIN _wanted_keys w USING (cache_key)"
        ).fetchall()
    finally:
        conn.unregister("_wanted_keys")
    return {key: (text, usage) for key, text, usage in rows}


def insert_rows(
    conn: duckdb.DuckDBPyConnection, table: str, schema: pa.Schema, rows: list[dict], ignore_existing: bool = True
) -> None:
    """Insert dict rows (missing keys = NULL); rows whose key exists are left alone.
    `ignore_existing=False` is for rows whose keys are fresh by construction (the ledger's
    uuid4 call ids): a plain INSERT skips the conflict check, about half the cost."""
    if not rows:
        return
    arrow = pa.Table.from_pylist(rows, schema=schema)
    verb = "INSERT OR IGNORE" if ignore_existing else "INSERT"
    conn.register("_incoming_llm_rows", arrow)
    try:
        conn.execute(f"{verb} INTO {table} BY NAME SELECT * FROM _incoming_llm_rows")
    finally:
        conn.unregister("_incoming_llm_rows")


def get_batch(conn: duckdb.DuckDBPyConnection, batch_key: str) -> dict | None:
    found = conn.execute(
        f"SELECT batch_id, input_file_id, status, output_file_id FROM {BATCHES_TABLE} WHERE batch_key = ?",
        [batch_key],
    ).fetchone()
    if not found:
        return None
    return dict(zip(["batch_id", "input_file_id", "status", "output_file_id"], found))


def put_batch(
    conn: duckdb.DuckDBPyConnection,
    batch_key: str,
    batch_id: str,
    input_file_id: str,
    model: str,
    endpoint_host: str,
    n_requests: int,
    status: str,
    output_file_id: str | None = None,
) -> None:
    stamp = now()
    conn.execute(
        f"""INSERT INTO {BATCHES_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (batch_key) DO UPDATE SET batch_id = excluded.batch_id,
            input_file_id = excluded.input_file_id, status = excluded.status,
            output_file_id = excluded.output_file_id, updated_at = excluded.updated_at""",
        [batch_key, batch_id, input_file_id, model, endpoint_host, n_requests, status, output_file_id, stamp, stamp],
    )
