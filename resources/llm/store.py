"""The LLM layer's tables, and the key that addresses an answer in them.

- `llm_cache`: every answer, keyed by `cache_key` (a content hash of the request), written
  before it is returned, so a crash, a budget stop or a re-materialization never pays twice.
- `llm_calls`: the cost ledger, one row per request (cache hits included, at $0).
- `llm_batches`: OpenAI Batch API jobs, one row each, recorded as an intent before the
  batch is created (`status = 'intent'`) and tagged with the same key in the provider's
  metadata, so a batch created by a run killed right after is found again.
- `llm_batch_requests`: which requests (cache keys) each batch carries, one row per
  request, so a re-run with a changed set of requests resumes the batches that hold any
  of them and submits only the rest.
- `llm_batch_lock`: one row that every batch claim updates, so two claims of the same
  batch key in two processes conflict at commit and the later one, retried, sees the first
  (`record_batch_intent`).

The tables live in the DuckLake beside the pipeline's tables, shared by every process
and worker. Rows go in through Arrow in small groups, each group one DuckLake transaction
(retried on a commit conflict), not row by row. DuckLake has no primary keys, so an
answer is inserted only when its key is not stored yet (an anti-join in the same
transaction); two processes that answer the same request in the same second may both
store it, and readers take either (the answers are interchangeable). What is buffered and
when it is written is `recorder.py`'s business; this module only knows the tables.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from typing import Any

import duckdb
import pyarrow as pa

from resources.warehouse import Lake

CACHE_TABLE = "llm_cache"
CALLS_TABLE = "llm_calls"
BATCHES_TABLE = "llm_batches"
BATCH_REQUESTS_TABLE = "llm_batch_requests"
BATCH_LOCK_TABLE = "llm_batch_lock"
# Our own states of a batch row besides the provider's (validating ... completed/expired):
INTENT = "intent"  # recorded, maybe not created at the provider yet
ABANDONED = "abandoned"  # an intent the provider never received: its requests go in a new batch

DDL = [
    f"""CREATE TABLE IF NOT EXISTS {CACHE_TABLE} (
        cache_key VARCHAR,         -- unique by construction (see insert_rows)
        model VARCHAR,
        kind VARCHAR,              -- chat / embedding
        request_json VARCHAR,      -- the request as keyed (no credentials)
        response_text VARCHAR,     -- assistant text, or the embedding as a JSON list
        usage VARCHAR,             -- provider usage JSON: prompt/completion/cached tokens
        created_at TIMESTAMP
    )""",
    f"""CREATE TABLE IF NOT EXISTS {CALLS_TABLE} (
        call_id VARCHAR,           -- uuid4 per request
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
        batch_key VARCHAR,         -- sha256 of the batch's custom ids; also in the provider's metadata
        batch_id VARCHAR,          -- NULL while status = 'intent' 
        input_file_id VARCHAR,
        model VARCHAR,
        endpoint_host VARCHAR,
        n_requests INTEGER,
        status VARCHAR,
        output_file_id VARCHAR,
        created_at TIMESTAMP,
        updated_at TIMESTAMP,
        harvested_at TIMESTAMP,    -- its output and error files were read and every answer stored
        claimed_by VARCHAR         -- JSON (host, pid, lease file): the run that recorded the intent (batch.py)
    )""",
    f"""CREATE TABLE IF NOT EXISTS {BATCH_REQUESTS_TABLE} (
        batch_key VARCHAR,
        custom_id VARCHAR,         -- the batch line (chat: the cache key; embeddings: a chunk)
        position INTEGER,          -- the request's place in its line (embeddings: input index)
        cache_key VARCHAR,
        request_json VARCHAR,      -- the request as cached, so any answered line can be stored
        created_at TIMESTAMP
    )""",
    # Not a counter anyone reads: updating its one row makes concurrent claims conflict.
    f"""CREATE TABLE IF NOT EXISTS {BATCH_LOCK_TABLE} (claims BIGINT)""",
]
# Columns added after a table was first created: (table, column, type).
ADDED_COLUMNS = [(BATCHES_TABLE, "harvested_at", "TIMESTAMP"), (BATCHES_TABLE, "claimed_by", "VARCHAR")]

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


def canonical_json(value: Any) -> str:
    """One spelling per value (sorted keys, no spaces), so equal requests hash equally."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def cache_key(endpoint_id: str, kind: str, body: dict, sample_index: int = 0) -> str:
    """sha256 over what determines the answer: endpoint (no credentials), the request body
    (model, messages, sampling params, response_format) and the sample index."""
    payload = {"endpoint": endpoint_id, "kind": kind, "body": body, "sample_index": sample_index}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def ensure_tables(lake: Lake) -> None:
    """Create the tables if missing (concurrent creators retry, then find them there)."""

    def create(conn: duckdb.DuckDBPyConnection) -> None:
        for statement in DDL:
            conn.execute(statement)
        for table, column, kind in ADDED_COLUMNS:
            if column not in {row[0] for row in conn.execute(f"DESCRIBE {table}").fetchall()}:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {kind}")
        if not conn.execute(f"SELECT count(*) FROM {BATCH_LOCK_TABLE}").fetchone()[0]:
            conn.execute(f"INSERT INTO {BATCH_LOCK_TABLE} VALUES (0)")

    lake.transaction(create)


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
    conn: duckdb.DuckDBPyConnection, table: str, schema: pa.Schema, rows: list[dict], key: str | None = None
) -> None:
    """Insert dict rows (missing keys = NULL). With `key`, a row whose key repeats an earlier
    one in `rows` is left out. Run inside a transaction; rows already stored are left out
    BEFORE it (`without_stored`): an INSERT ... WHERE NOT EXISTS over the same DuckLake
    table, committed while other processes append to it, lost rows here (measured: 1-3 of
    20,000 answers from 4 processes), so the write itself never reads its target table."""
    if not rows:
        return
    arrow = pa.Table.from_pylist(rows, schema=schema)
    conn.register("_incoming_llm_rows", arrow)
    try:
        if key is None:
            conn.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _incoming_llm_rows")
        else:
            conn.execute(
                f"""INSERT INTO {table} BY NAME
                SELECT * FROM _incoming_llm_rows i
                QUALIFY row_number() OVER (PARTITION BY i.{key}) = 1"""
            )
    finally:
        conn.unregister("_incoming_llm_rows")


def without_stored(lake: Lake, table: str, key: str, rows: list[dict]) -> list[dict]:
    """`rows` less those whose `key` is already in `table` (read in its own statement). A row
    another process stores between this read and the write is stored twice, never lost;
    readers take either copy (the answers are interchangeable)."""
    if not rows:
        return rows
    wanted = pa.table({key: pa.array(list({row[key] for row in rows}), pa.string())})
    with lake.connect() as conn:
        exists = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_catalog = 'lake' AND table_name = ?", [table]
        ).fetchone()[0]
        if not exists:
            return rows
        conn.register("_wanted_llm_keys", wanted)
        try:
            stored = {value for (value,) in conn.execute(f"SELECT {key} FROM {table} SEMI JOIN _wanted_llm_keys USING ({key})").fetchall()}
        finally:
            conn.unregister("_wanted_llm_keys")
    return [row for row in rows if row[key] not in stored]


BATCH_COLUMNS = ["batch_key", "batch_id", "input_file_id", "model", "endpoint_host", "n_requests", "status",
                 "output_file_id", "created_at", "updated_at", "harvested_at", "claimed_by"]  # fmt: skip


def get_batch(conn: duckdb.DuckDBPyConnection, batch_key: str) -> dict | None:
    found = conn.execute(f"SELECT {', '.join(BATCH_COLUMNS)} FROM {BATCHES_TABLE} WHERE batch_key = ?", [batch_key]).fetchone()
    return dict(zip(BATCH_COLUMNS, found)) if found else None


def open_batches_for(conn: duckdb.DuckDBPyConnection, keys: Sequence[str]) -> dict[str, dict]:
    """`{cache_key: batch row}` for the keys carried by a batch not yet harvested or
    abandoned (one query)."""
    if not keys:
        return {}
    conn.register("_wanted_keys", pa.table({"cache_key": pa.array(list(set(keys)), pa.string())}))
    try:
        rows = conn.execute(
            f"SELECT r.cache_key, {', '.join('b.' + c for c in BATCH_COLUMNS)} FROM {BATCH_REQUESTS_TABLE} r "
            f"JOIN _wanted_keys w USING (cache_key) JOIN {BATCHES_TABLE} b USING (batch_key) "
            f"WHERE b.harvested_at IS NULL AND b.status <> '{ABANDONED}' ORDER BY b.created_at"
        ).fetchall()
    finally:
        conn.unregister("_wanted_keys")
    return {row[0]: dict(zip(BATCH_COLUMNS, row[1:])) for row in rows}


def batch_members(conn: duckdb.DuckDBPyConnection, batch_key: str) -> dict[str, list[tuple[str, str]]]:
    """`{custom_id: [(cache_key, request_json), ...]}` of one batch, each line in order."""
    rows = conn.execute(
        f"SELECT custom_id, cache_key, request_json FROM {BATCH_REQUESTS_TABLE} WHERE batch_key = ? "
        "ORDER BY custom_id, position",
        [batch_key],
    ).fetchall()
    members: dict[str, list[tuple[str, str]]] = {}
    for custom_id, key, request_json in rows:
        members.setdefault(custom_id, []).append((key, request_json))
    return members


def is_claimable(row: dict | None) -> bool:
    """A batch key may be claimed for a new batch when no row holds it, or its row's batch
    is over: abandoned (never reached the provider) or harvested (read whole)."""
    return row is None or row["status"] == ABANDONED or row["harvested_at"] is not None


def record_batch_intent(
    lake: Lake,
    batch_key: str,
    model: str,
    endpoint_host: str,
    lines: Sequence[tuple[str, Sequence[tuple[str, str]]]],
    claimed_by: str,
) -> dict | None:
    """Claim `batch_key` before a batch is created: its row (status 'intent', `claimed_by`)
    and one row per request it will carry, in one transaction. `lines` is
    [(custom_id, [(cache_key, request_json), ...])].

    Returns None when this caller holds the claim, else the row of the run that claimed
    the key first (its batch is to be waited for, not created again). The transaction
    reads the key's row and updates `llm_batch_lock`, so of two concurrent claims the one
    that commits second conflicts, is retried, and reads the first one's row. (An INSERT
    that only checks for an existing row does not conflict under a PostgreSQL catalog:
    both would commit.) The row is read again after the commit to confirm."""
    stamp = now()
    members = [
        {"batch_key": batch_key, "custom_id": custom_id, "position": position, "cache_key": key,
         "request_json": request_json, "created_at": stamp}
        for custom_id, line in lines for position, (key, request_json) in enumerate(line)
    ]  # fmt: skip
    schema = pa.schema([("batch_key", pa.string()), ("custom_id", pa.string()), ("position", pa.int32()),
                        ("cache_key", pa.string()), ("request_json", pa.string()), ("created_at", pa.timestamp("us"))])  # fmt: skip

    def claim(conn: duckdb.DuckDBPyConnection) -> dict | None:
        conn.execute(f"UPDATE {BATCH_LOCK_TABLE} SET claims = claims + 1")
        existing = get_batch(conn, batch_key)
        if not is_claimable(existing):
            return existing
        conn.execute(f"DELETE FROM {BATCHES_TABLE} WHERE batch_key = ?", [batch_key])
        conn.execute(f"DELETE FROM {BATCH_REQUESTS_TABLE} WHERE batch_key = ?", [batch_key])
        conn.execute(
            f"INSERT INTO {BATCHES_TABLE} (batch_key, model, endpoint_host, n_requests, status, created_at, updated_at, "
            "claimed_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [batch_key, model, endpoint_host, len(lines), INTENT, stamp, stamp, claimed_by],
        )
        insert_rows(conn, BATCH_REQUESTS_TABLE, schema, members)
        return None

    holder = lake.transaction(claim)
    if holder is not None:
        return holder
    with lake.connect() as conn:
        row = get_batch(conn, batch_key)
    return None if row is not None and row["claimed_by"] == claimed_by else row


def update_batch(lake: Lake, batch_key: str, **changes: Any) -> None:
    """Set columns of a batch's row (batch_id, status, output_file_id, harvested_at, ...)."""
    changes["updated_at"] = now()
    assignments = ", ".join(f"{column} = ?" for column in changes)

    def write(conn: duckdb.DuckDBPyConnection) -> None:
        conn.execute(f"UPDATE {BATCHES_TABLE} SET {assignments} WHERE batch_key = ?", [*changes.values(), batch_key])

    lake.transaction(write)
