"""Every answer into `llm_cache`, every request into `llm_calls`, and the session's totals.

An answer is safe before anyone uses it: `remember()` / `ledger()` append the row to the
session's local journal (`journal.py`, flushed to the OS, so it survives the process
being killed) and to an in-memory buffer. A flusher thread of its own writes the buffer to
the lake every `FLUSH_INTERVAL_S` (sooner at `FLUSH_ROWS` rows), whatever the workers are
doing, so a request retrying for minutes never holds other answers back. A write that
fails keeps its rows (and their journal segment) and is tried again on the next tick;
nothing is dropped. `session_connection()` flushes before a `complete()` / `embed()` call
returns, and `close()` drains the buffer when the session ends for any reason (an asset
error, a Dagster run termination); what it still cannot write stays in the journal and is
replayed by the next session on the same lake. The cache row is always written in the
same transaction as its ledger row.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import duckdb

from resources.llm import store
from resources.llm.endpoint import Endpoint
from resources.llm.journal import CACHE, LEDGER, Journal
from resources.llm.types import ChatResult
from resources.warehouse import Lake

logger = logging.getLogger(__name__)

# Write the buffer at least this often (an answer reaches the lake within about this
# long of arriving), or as soon as this many rows wait.
FLUSH_ROWS = 512
FLUSH_INTERVAL_S = 0.5
# When the session closes: how long to keep retrying a failing write before leaving the
# rows to the journal's replay.
CLOSE_RETRY_S = 10.0


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


def write_rows(lake: Lake, cache_rows: list[dict], ledger_rows: list[dict], dedup_ledger: bool = False) -> None:
    """One transaction for both: the answers and their ledger rows land together (a
    ledger row never points at an answer that is not stored), retried on conflict.
    `dedup_ledger` leaves out ledger rows already stored (a replay, or a retry after a
    write whose outcome is unknown)."""
    if not cache_rows and not ledger_rows:
        return
    cache_rows = store.without_stored(lake, store.CACHE_TABLE, "cache_key", cache_rows)
    if dedup_ledger:
        ledger_rows = store.without_stored(lake, store.CALLS_TABLE, "call_id", ledger_rows)

    def write(conn: duckdb.DuckDBPyConnection) -> None:
        store.insert_rows(conn, store.CACHE_TABLE, store.CACHE_SCHEMA, cache_rows, key="cache_key")
        store.insert_rows(conn, store.CALLS_TABLE, store.CALLS_SCHEMA, ledger_rows, key="call_id" if dedup_ledger else None)

    lake.transaction(write)


class Recorder:
    def __init__(self, conn: duckdb.DuckDBPyConnection, lake: Lake, endpoint: Endpoint, context: Any, journal: Journal) -> None:
        self._conn = conn  # reads (cache lookups); writes go through `lake` transactions
        self._lake = lake
        self._journal = journal
        self._endpoint = endpoint
        self._host = endpoint.host  # parsed once: the ledger stamps it on every row
        self.run_id, self.asset_key, self.partition = context_ids(context)
        self.totals = Totals()
        self._cache_rows: list[dict] = []
        self._ledger_rows: list[dict] = []
        self._rows_lock = threading.Lock()  # the buffers and the journal's open segment
        self._write_lock = threading.Lock()  # one lake write at a time, in row order
        self._retry_dedup = False  # the last write failed: its outcome is unknown
        self.write_failures = 0
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, name="llm-recorder-flush", daemon=True)
        self._flusher.start()

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
        self._keep(LEDGER, row, self._ledger_rows)
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
        """One `llm_cache` row: the answer to `request` (an embedding as a JSON list).
        In the journal when this returns, in the lake within FLUSH_INTERVAL_S."""
        row = {
            "cache_key": key,
            "model": model,
            "kind": kind,
            "request_json": store.canonical_json(request),
            "response_text": text,
            "usage": json.dumps(usage),
            "created_at": store.now(),
        }
        self._keep(CACHE, row, self._cache_rows)

    def _keep(self, table: str, row: dict, buffer: list[dict]) -> None:
        with self._rows_lock:
            self._journal.append(table, row)
            buffer.append(row)
            pending = len(self._cache_rows) + len(self._ledger_rows)
        if pending >= FLUSH_ROWS:
            self._wake.set()

    @property
    def pending_rows(self) -> int:
        with self._rows_lock:
            return len(self._cache_rows) + len(self._ledger_rows)

    def maybe_flush(self) -> None:
        """Kept for the worker pool's after-each hook: the flusher thread writes on its own
        clock; this only wakes it early when a large group is waiting."""
        if self.pending_rows >= FLUSH_ROWS:
            self._wake.set()

    def flush(self) -> bool:
        """Write what is buffered now; True when it is all in the lake. A failed write
        puts its rows back (ahead of newer ones) for the next attempt."""
        with self._write_lock:
            with self._rows_lock:
                cache_rows, self._cache_rows = self._cache_rows, []
                ledger_rows, self._ledger_rows = self._ledger_rows, []
                if not cache_rows and not ledger_rows:
                    return True
                segment = self._journal.rotate()
            try:
                write_rows(self._lake, cache_rows, ledger_rows, dedup_ledger=self._retry_dedup)
            except Exception as exc:  # noqa: BLE001 -- kept and retried, never dropped
                with self._rows_lock:
                    self._cache_rows[:0] = cache_rows
                    self._ledger_rows[:0] = ledger_rows
                self._retry_dedup = True
                self.write_failures += 1
                logger.warning(
                    "writing %d LLM answers and %d ledger rows to the lake failed (%s: %s); they are kept in the "
                    "journal and retried", len(cache_rows), len(ledger_rows), type(exc).__name__, str(exc)[:300],
                )  # fmt: skip
                return False
            self._retry_dedup = False
            self._journal.discard_through(segment)
            return True

    def _flush_loop(self) -> None:
        while not self._closing.is_set():
            self._wake.wait(FLUSH_INTERVAL_S)
            self._wake.clear()
            if self._closing.is_set():
                return
            self.flush()

    async def _flush_now(self) -> None:
        await asyncio.to_thread(self.flush)

    @asynccontextmanager
    async def session_connection(self):
        """The session's DuckDB connection for one complete()/embed() call; the call's
        answers and ledger rows are written before it returns, even when it fails (if the
        lake refuses, they are in the journal and the flusher keeps trying)."""
        try:
            yield self._conn
        finally:
            await self._flush_now()

    def close(self) -> None:
        """Stop the flusher and drain the buffer, retrying for up to CLOSE_RETRY_S. What
        still cannot be written stays in the journal for the next session to replay."""
        self._closing.set()
        self._wake.set()
        self._flusher.join(timeout=CLOSE_RETRY_S + 60)
        deadline = time.monotonic() + CLOSE_RETRY_S
        delay = 0.1
        committed = self.flush()
        while not committed and time.monotonic() < deadline:
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
            committed = self.flush()
        if not committed:
            logger.error(
                "%d LLM rows could not be written to the lake; they stay in %s and are written by the next "
                "session on this lake", self.pending_rows, self._journal.directory,
            )  # fmt: skip
        self._journal.close(committed=committed)


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
