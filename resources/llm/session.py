"""`LLMSession`: what `llm.session(context, warehouse)` yields, one per asset step.

It is the only object pipeline code calls, with plain synchronous methods
(`complete`, `complete_json`, `embed`, `log_estimate`, `metadata`). Inside, an asyncio
event loop runs on a background thread, so hundreds of requests are in flight while the
asset's code stays ordinary Python. The session wires the parts together, each in its
own module:

    recorder.py     llm_cache / llm_calls rows, running totals
    budget.py       max_cost_usd
    transport.py    the AsyncOpenAI client, rate limiter, retries
    relay.py        in a Ray task: chat requests through the endpoint's relay actor
    chat.py         complete()                  structured.py   complete_json()
    embeddings.py   embed()                     batch.py        the Batch API mode
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import threading
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import numpy as np
import pydantic

from resources.compute import TaskContext
from resources.llm import store
from resources.llm.batch import BatchJobs
from resources.llm.budget import Budget, ClusterBudget
from resources.llm.chat import ChatCompletions
from resources.llm.embeddings import Embeddings
from resources.llm.endpoint import Endpoint
from resources.llm.errors import LLMConfigError, LLMError
from resources.llm.pricing import ModelPrice, price_known, price_usd
from resources.llm.journal import Journal, journal_dir, replay_orphans
from resources.llm.recorder import Recorder, Totals, write_rows
from resources.llm.relay import Relay
from resources.llm.retries import RetryPolicy
from resources.llm.structured import complete_json, resolve_mode
from resources.llm.transport import Transport, on_ray_cluster
from resources.llm.types import ChatRequest, ChatResult, StructuredResult
from resources.warehouse import MAIN, Lake, Warehouse

if TYPE_CHECKING:
    from resources.llm.resource import LLMResource

logger = logging.getLogger(__name__)

# The bundled server (llama-cpp-python) serves requests one at a time: keep one in
# flight and one waiting, send embeddings in small batches, and wait long for answers.
LOCAL_MAX_CONCURRENCY = 2
LOCAL_EMBED_BATCH_SIZE = 8
LOCAL_TIMEOUT_S = 900.0


def budget_for(max_cost_usd: float | None, recorder: Recorder, log: Any) -> Budget:
    """This process's budget, or, in a process connected to a Ray cluster spending for a
    materialization, that materialization's one budget across the cluster."""
    if max_cost_usd is not None and recorder.run_id and on_ray_cluster():
        scope = "/".join(part or "-" for part in (recorder.run_id, recorder.asset_key, recorder.partition))
        worker = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        return ClusterBudget(max_cost_usd, recorder.totals, log, scope, worker)
    return Budget(max_cost_usd, recorder.totals, log)


class LLMSession:
    """What `LLMResource.session()` yields. Sync methods; an event loop runs inside."""

    def __init__(self, resource: LLMResource, context: Any, warehouse: Warehouse, endpoint: Endpoint) -> None:
        self.resource = resource
        self.context = context
        self.warehouse = warehouse
        self.endpoint = endpoint
        self.model = endpoint.chat_model
        self.embedding_model = endpoint.embedding_model
        self.price_overrides = {
            name.lower(): ModelPrice(p.input_usd_per_mtok, p.output_usd_per_mtok, p.cached_input_usd_per_mtok, p.batch_discount)
            for name, p in resource.price_overrides.items()
        }
        self.price = functools.partial(price_usd, overrides=self.price_overrides)
        require_prices(endpoint, resource.max_cost_usd, self.price_overrides)
        # The bundled llama.cpp server answers one request at a time: more in flight only
        # queue inside it and time out (then get resent) while it is still busy, so the
        # local endpoint gets few workers, small embedding batches and a long timeout.
        if endpoint.is_local:
            self.max_concurrency = min(resource.max_concurrency, LOCAL_MAX_CONCURRENCY)
            self.embed_batch_size = min(resource.embed_batch_size, LOCAL_EMBED_BATCH_SIZE)
            self.timeout_s = max(resource.timeout_s, LOCAL_TIMEOUT_S)
        else:
            self.max_concurrency = resource.max_concurrency
            self.embed_batch_size = resource.embed_batch_size
            self.timeout_s = resource.timeout_s
        self.log = getattr(context, "log", None) or logger
        self.structured_output_mode = resolve_mode(resource.structured_output_mode, endpoint.is_local)
        self._closed = False
        relay = None  # made before any thread or connection, so a failure here leaks nothing
        if isinstance(context, TaskContext) and on_ray_cluster() and not endpoint.is_local and not resource.batch_mode:
            # a Ray task: a request in flight when this process dies is answered to the relay,
            # which hands the answer to the retry instead of the endpoint answering twice
            relay = Relay(endpoint, resource.api_key, self.timeout_s, resource.max_concurrency)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="llm-session-loop", daemon=True)
        self._thread.start()
        # One cursor for the session's reads (cache lookups); every write is its own DuckLake
        # transaction on the live tables, never the asset's staging schema: a paid answer is
        # durable and shared with every other process as soon as its group commits. Nothing
        # holds a lock between calls, so other writers are never blocked by a long session.
        lake = live_lake(warehouse)
        self._db_stack = ExitStack()
        try:
            store.ensure_tables(lake)
            # Answers a killed session left in its journal go to the lake before any lookup,
            # so none of them is asked (and paid) for again.
            journal_folder = session_journal_dir(resource.journal_dir, lake)
            replay_orphans(journal_folder, lambda cache, ledger: write_rows(lake, cache, ledger, dedup_ledger=True))
            journal = Journal(journal_folder)
            conn = self._db_stack.enter_context(lake.connect())
        except BaseException:
            self._db_stack.close()
            self._loop.call_soon_threadsafe(self._loop.stop)
            raise
        self.recorder = Recorder(conn, lake, endpoint, context, journal)
        self.budget = budget_for(resource.max_cost_usd, self.recorder, self.log)
        self.transport = Transport(
            endpoint,
            self.timeout_s,
            resource.max_concurrency,
            resource.requests_per_minute,
            resource.tokens_per_minute,
            RetryPolicy(resource.max_retries, resource.retry_base_delay_s, resource.retry_max_delay_s),
        )
        batches = BatchJobs(
            conn, lake, self.log, endpoint.host, resource.batch_poll_interval_s, resource.batch_timeout_s,
            resource.progress_interval_s, journal_folder / "batch_leases",
        )  # fmt: skip
        shared = dict(
            endpoint_id=endpoint.endpoint_id,
            batch_mode=resource.batch_mode,
            max_concurrency=self.max_concurrency,
            progress_interval_s=resource.progress_interval_s,
            recorder=self.recorder,
            budget=self.budget,
            transport=self.transport,
            batches=batches,
            price=self.price,
            log=self.log,
        )
        self.chat = ChatCompletions(
            model=self.model, temperature=resource.temperature, max_tokens=resource.max_tokens, seed=resource.seed, **shared
        )
        self.embeddings = Embeddings(model=self.embedding_model, batch_size=self.embed_batch_size, **shared)
        self.chat.relay = relay

    def complete(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        """Chat completions, in request order. Never raises for a failed request: its
        result has status `error` (or `budget_exceeded`) and the reason in `error`."""
        return self._run(self.chat.complete(list(requests), response_format=None, label="complete"))

    def complete_json(self, requests: Sequence[ChatRequest], schema: type[pydantic.BaseModel]) -> list[StructuredResult]:
        """Chat completions constrained to `schema` and validated with pydantic. A
        malformed answer is retried once (as a new sample); if that fails too the result
        has status `error`, `parsed=None` and the answer in `raw_text`."""
        return self._run(complete_json(self.chat, list(requests), schema, self.structured_output_mode, self.log))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(n, d) float32 embeddings, one mean-pooled vector per text; a NaN row marks a
        text that failed (see the ledger for why)."""
        return self._run(self.embeddings.embed(list(texts)))

    def estimate_cost(self, n_calls: int, prompt_tokens_each: int, completion_tokens_each: int) -> float | None:
        each = self.price(self.model, prompt_tokens_each, completion_tokens_each, batch=self.resource.batch_mode)
        return None if each is None else each * n_calls

    def log_estimate(self, n_calls: int, prompt_tokens_each: int, completion_tokens_each: int) -> float | None:
        """Log calls x tokens x price before the first call; returns the dollars (None = unknown)."""
        estimate = self.estimate_cost(n_calls, prompt_tokens_each, completion_tokens_each)
        budget = self.resource.max_cost_usd
        cost_text = "unknown (no price for this model)" if estimate is None else f"${estimate:,.4f}"
        mode = "batch" if self.resource.batch_mode else "online"
        message = (
            f"LLM estimate: {n_calls} calls x ({prompt_tokens_each} prompt + {completion_tokens_each} completion tokens) "
            f"on {self.model} ({mode}) = {cost_text} before cache hits; budget "
            + ("none" if budget is None else f"${budget:,.2f}")
        )
        if estimate is not None and budget is not None and estimate > budget:
            self.log.warning(message + " -- the estimate exceeds the budget; calls stop when it is spent.")
        else:
            self.log.info(message)
        return estimate

    def metadata(self) -> dict[str, Any]:
        """The `llm/*` block for the asset's MaterializeResult."""
        t = self.totals
        return {
            "llm/calls": t.calls,
            "llm/cache_hits": t.cache_hits,
            "llm/prompt_tokens": t.prompt_tokens,
            "llm/completion_tokens": t.completion_tokens,
            "llm/cost_usd": round(t.cost_usd, 8),
            "llm/saved_usd": round(t.saved_usd, 8),
            "llm/model": self.model,
            "llm/failed": t.failed,
            "llm/budget_exceeded": t.budget_exceeded,
            "llm/retries": t.retries,
            "llm/cost_known": t.unknown_cost_calls == 0,
            "llm/mode": "batch" if self.resource.batch_mode else "online",
        }

    @property
    def totals(self) -> Totals:
        return self.recorder.totals

    @property
    def budget_stopped(self) -> bool:
        return self.budget.stopped

    def close(self) -> None:
        """Stop what is in flight and write every answer received (the recorder's drain);
        runs however the session ends: normally, on an asset error, or on a Dagster run
        termination (whose exception is not a KeyboardInterrupt)."""
        if self._closed:
            return
        self._closed = True
        try:
            try:
                asyncio.run_coroutine_threadsafe(self._stop_tasks(), self._loop).result(timeout=30)
            except Exception:  # closing a broken transport must not hide the real error
                logger.debug("stopping the LLM session's requests failed", exc_info=True)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
            if not self._loop.is_running():
                self._loop.close()
        finally:
            try:
                self.recorder.close()
            finally:
                self._db_stack.close()
                if isinstance(self.budget, ClusterBudget):
                    self.budget.settle()
                    if not isinstance(self.context, TaskContext):
                        # the step's own session, connected to the cluster for the whole step
                        # (a dagster-ray ray_cluster): the workers' sessions are done, and so
                        # is the materialization's spending
                        self.budget.release()

    async def _stop_tasks(self) -> None:
        """Cancel the requests still in flight (their answers are not received, so not
        paid for here), let them unwind, then close the HTTP client."""
        current = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=20)
        if self.transport.started:
            await self.transport.close()

    def raise_if_budget_stopped(self) -> None:
        if not self.budget_stopped:
            return
        t = self.totals
        raise dg.Failure(
            description=(
                f"LLM budget reached: max_cost_usd=${self.resource.max_cost_usd:,.2f}, spent ${t.cost_usd:,.4f} on "
                f"{t.calls - t.cache_hits - t.budget_exceeded} paid calls; {t.budget_exceeded} requests were not sent. "
                "Everything answered is cached in llm_cache: re-run this materialization to resume (cached answers "
                "cost nothing), after raising max_cost_usd on the llm resource if needed."
            ),
            metadata=self.metadata(),
        )

    def _run(self, coro):
        """Run one coroutine on the session's loop and wait for it (Ctrl-C cancels it)."""
        if self._closed:
            coro.close()
            raise LLMError("the LLM session is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            # Ctrl-C, a Dagster run termination (DagsterExecutionInterruptedError), ...:
            # stop the call; close() then drains what was received.
            future.cancel()
            raise


def require_prices(endpoint: Endpoint, max_cost_usd: float | None, overrides: dict[str, ModelPrice]) -> None:
    """A budget binds only if every call can be priced: on a remote endpoint with
    `max_cost_usd` set, a model without a price is a configuration error, raised before
    any call (the bundled local model is free)."""
    if endpoint.is_local or max_cost_usd is None:
        return
    unpriced = [model for model in dict.fromkeys((endpoint.chat_model, endpoint.embedding_model)) if not price_known(model, overrides)]
    if unpriced:
        names = " and ".join(repr(model) for model in unpriced)
        raise LLMConfigError(
            f"no price is known for {names} (not in genai-prices), so max_cost_usd=${max_cost_usd:,.2f} cannot be "
            f"enforced. Give its price on the llm resource: price_overrides={{{unpriced[0]!r}: "
            "{input_usd_per_mtok: ..., output_usd_per_mtok: ...}}, or set max_cost_usd to None to run without a budget."
        )


def session_journal_dir(setting: str | None, lake: Lake) -> Path:
    """The journal folder of this lake: beside an embedded catalog by default."""
    location = lake.location
    default_root = Path(location.catalog).parent / "llm_journal" if location.catalog_type != "postgres" else Path("data/llm_journal")
    return journal_dir(setting, f"{location.catalog_type}|{location.catalog}|{location.data_path}", default_root)


def live_lake(warehouse: Warehouse | Lake) -> Lake:
    """The lake's live schema, whether given the resource or a materialization's staging
    lake: the cache and the ledger are never staged (money spent is never unpublished)."""
    if isinstance(warehouse, Lake):
        return Lake(warehouse.location, MAIN, retry_timeout_s=warehouse.retry_timeout_s)
    return warehouse.lake()
