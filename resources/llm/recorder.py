"""Every answer into `llm_cache`, every request into `llm_calls`, and the session's totals.

Rows are buffered and written in groups (every second or 512 rows) on a worker thread,
so the event loop keeps streaming requests; `session_connection()` drains the buffer
before a `complete()` / `embed()` call returns, so every answer a caller holds is in
`llm_cache` and a hard kill loses at most the last second of answers. The cache row is
always written before its ledger row: a ledger row never points at an answer that is
not stored.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import duckdb

from resources.llm import store
from resources.llm.endpoint import Endpoint
from resources.llm.types import ChatResult
from resources.warehouse import Lake

# Flush thresholds: a group this large, or this old, goes to DuckDB.
FLUSH_ROWS = 512
FLUSH_INTERVAL_S = 1.0


@dataclass
class Totals:
    """Running sums over the session's `llm_calls` rows (what `metadata()` reports)."""

    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0
    saved_usd: float = 0.0
    failed: int = 0
    budget_exceeded: int = 0
    unknown_cost_calls: int = 0
    attempts: int = 0
    retries: int = 0
    latency_s: float = 0.0


class Recorder:
    def __init__(self, conn: duckdb.DuckDBPyConnection, lake: Lake, endpoint: Endpoint, context: Any) -> None:
        self._conn = conn  # reads (cache lookups); writes go through `lake` transactions
        self._lake = lake
        self._endpoint = endpoint
        self._host = endpoint.host  # parsed once: the ledger stamps it on every row
        self.run_id, self.asset_key, self.partition = context_ids(context)
        self.totals = Totals()
        self._cache_rows: list[dict] = []
        self._ledger_rows: list[dict] = []
        self._last_flush = time.monotonic()
        self._flush_task: asyncio.Future | None = None

    def ledger(self, **row: Any) -> None:
        """One `llm_calls` row (the run, asset, partition and host are stamped here)."""
        row.setdefault("call_id", uuid.uuid4().hex)
        row.update(
            run_id=self.run_id,
            asset_key=self.asset_key,
            partition=self.partition,
            endpoint_host=self._host,
            created_at=store.now(),
        )
        self._ledger_rows.append(row)
        t = self.totals
        t.calls += 1
        t.cache_hits += bool(row.get("cache_hit"))
        t.prompt_tokens += row.get("prompt_tokens") or 0
        t.completion_tokens += row.get("completion_tokens") or 0
        t.cached_tokens += row.get("cached_tokens") or 0
        t.saved_usd += row.get("saved_usd") or 0.0
        t.attempts += row.get("attempts") or 0
        t.retries += max(0, (row.get("attempts") or 0) - 1)
        if row.get("status") == "error":
            t.failed += 1
        elif row.get("status") == "budget_exceeded":
            t.budget_exceeded += 1
        if row.get("status") == "ok" and not row.get("cache_hit") and row.get("cost_usd") is None:
            t.unknown_cost_calls += 1

    def not_sent(self, model: str, kind: str, key: str, mode: str) -> None:
        """The ledger row of a request the budget stopped before it was sent."""
        self.ledger(
            model=model, kind=kind, prompt_tokens=0, completion_tokens=0, cached_tokens=0, cost_usd=0.0,
            saved_usd=0.0, latency_s=0.0, attempts=0, cache_hit=False, mode=mode,
            status="budget_exceeded", error_class=None, cache_key=key,
        )  # fmt: skip

    def failure(self, key: str, kind: str, model: str, error: BaseException, attempts: int, latency: float, mode: str) -> ChatResult:
        """Record a failed request; its result carries the error with the api key masked."""
        error_class = type(error).__name__
        message = self._endpoint.redact(f"{error_class}: {error}")[:1000]
        self.ledger(
            model=model, kind=kind, prompt_tokens=0, completion_tokens=0, cached_tokens=0, cost_usd=0.0,
            saved_usd=0.0, latency_s=latency, attempts=attempts, cache_hit=False, mode=mode,
            status="error", error_class=error_class, cache_key=key,
        )  # fmt: skip
        return ChatResult(text=None, cache_key=key, status="error", error=message, latency_s=latency, attempts=attempts)

    def remember(self, key: str, model: str, kind: str, request: dict, text: str, usage: dict) -> None:
        """One `llm_cache` row: the answer to `request` (an embedding as a JSON list)."""
        self._cache_rows.append(
            {
                "cache_key": key,
                "model": model,
                "kind": kind,
                "request_json": store.canonical_json(request),
                "response_text": text,
                "usage": json.dumps(usage),
                "created_at": store.now(),
            }
        )

    def maybe_flush(self) -> None:
        """Start a background write if enough rows (or time) have piled up."""
        pending = len(self._cache_rows) + len(self._ledger_rows)
        if not pending or (pending < FLUSH_ROWS and time.monotonic() - self._last_flush < FLUSH_INTERVAL_S):
            return
        if self._flush_task is not None and not self._flush_task.done():
            return
        cache_rows, self._cache_rows = self._cache_rows, []
        ledger_rows, self._ledger_rows = self._ledger_rows, []
        self._last_flush = time.monotonic()
        self._flush_task = asyncio.ensure_future(asyncio.to_thread(self._write_rows, cache_rows, ledger_rows, True))

    def _write_rows(self, cache_rows: list[dict], ledger_rows: list[dict], own_cursor: bool = False) -> None:
        """One transaction for both: the answers and their ledger rows land together (a
        ledger row never points at an answer that is not stored), retried on conflict.
        Each call opens its own cursor, so the flush thread and the loop never share one."""
        if not cache_rows and not ledger_rows:
            return

        def write(conn: duckdb.DuckDBPyConnection) -> None:
            store.insert_rows(conn, store.CACHE_TABLE, store.CACHE_SCHEMA, cache_rows, key="cache_key")
            store.insert_rows(conn, store.CALLS_TABLE, store.CALLS_SCHEMA, ledger_rows)

        self._lake.transaction(write)

    async def _drain(self) -> None:
        """Wait for the background write, then write what is left, on this thread."""
        if self._flush_task is not None:
            task, self._flush_task = self._flush_task, None
            await task
        cache_rows, self._cache_rows = self._cache_rows, []
        ledger_rows, self._ledger_rows = self._ledger_rows, []
        self._write_rows(cache_rows, ledger_rows)
        self._last_flush = time.monotonic()

    @asynccontextmanager
    async def session_connection(self):
        """The session's DuckDB connection for one complete()/embed() call; every answer
        (and its ledger row) is written before the call returns, even when it fails."""
        try:
            yield self._conn
        finally:
            await self._drain()


def context_ids(context: Any) -> tuple[str | None, str | None, str | None]:
    """(run_id, asset_key, partition) of the Dagster context, for the ledger; None outside one."""
    if context is None:
        return None, None, None
    run_id = getattr(context, "run_id", None)
    asset_key = None
    try:
        asset_key = context.asset_key.to_user_string()
    except Exception:  # noqa: BLE001 -- ops and multi-assets have no single asset key
        pass
    partition = None
    try:
        if context.has_partition_key:
            partition = context.partition_key
    except Exception:  # noqa: BLE001
        pass
    return run_id, asset_key, partition
