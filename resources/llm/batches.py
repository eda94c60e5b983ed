"""Grading and generation requests as batches on a Ray cluster, with the driver's session.

    with llm.session(context, warehouse) as session:
        results = complete_json_in_batches(session, requests, Grade, Compute(), batch_size=256)
        ...                                  # write the rows
        metadata = session.metadata()        # the whole materialization's calls, workers' included
    # leaving the block raises dg.Failure if the budget stopped calls, on any worker

    # a generation step with several rounds of calls passes a session whose calls go out
    # as batches (summaries, then sentences, then sections: each round spread in turn)
    with llm.session(context, warehouse) as driver, on_cluster(driver, Compute()) as session:
        steps, results = generate_sections(session, plans, ...)

Without a cluster (`compute.distributed` false) this is `session.complete_json(requests,
schema)` (or `session.complete(requests)`), nothing else. With one, the requests are cut
into batches of `batch_size`, each batch a Ray task (`compute.engine().map`) that opens `llm.session(task_context,
warehouse)` on its worker and returns the batch's results in request order; the driver
puts the batches back in request order. What makes that safe needs nothing new:

- the cache and the ledger are the lake: an answer one worker paid for is a cache hit for
  every other, and a task retried after its worker died gets the dead attempt's answers
  from the cache (and its journal, on the same machine);
- `TaskContext.of(context)` stamps every worker's ledger row with the step's run id,
  asset and partition, and scopes the materialization's one cluster-wide budget;
- a worker's session paces itself with the cluster's RPM/TPM limiter actor
  (`cluster_limits.py`), so the limits hold for the whole cluster;
- equal requests of one call go to the same batch (`plan_batches`), where one session
  answers them once, so two workers never race to pay for the same request.

After the batches, the driver session's totals are set from the ledger rows of this run,
asset and partition (every worker's calls, a killed attempt's included), so
`session.metadata()` and the budget's `dg.Failure` report the whole materialization; if a
worker's budget stopped calls, the driver session is marked stopped too and raises when
the caller leaves it, after the rows are written, as in-process.

What stays on the driver's session even with a cluster: the bundled local model (a
llama.cpp server per task would load the model again for every batch and compete for the
same cores) and Batch API mode (the provider runs the batch; nothing to spread).

Workers resolve the api key themselves: the task carries the key's reference
(`env:NAME`, or OPENAI_API_KEY when unset), never the key, so the variable must be set in
the workers' environment (a task that finds it missing fails with a clear error). The
endpoint url and models are pinned to what the driver resolved, so every worker asks the
same endpoint under the same cache keys whatever its own environment says.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any

import dagster as dg
import pydantic

from resources.compute import Compute, RayEngine, TaskContext
from resources.llm.budget import ClusterBudget
from resources.llm.cluster_limits import BUDGET_PREFIX, NAMESPACE
from resources.llm.endpoint import OPENAI_API_KEY_ENV, PLACEHOLDER_KEYS, resolve_api_key
from resources.llm.errors import LLMConfigError
from resources.llm.recorder import Totals
from resources.llm.session import LLMSession, live_lake
from resources.llm.store import CALLS_TABLE, canonical_json
from resources.llm.types import ChatRequest, ChatResult, StructuredResult
from resources.warehouse import Lake, Warehouse

logger = logging.getLogger(__name__)

# A batch is one worker session: opening one costs a few lake round trips, so a batch
# should be long enough to keep the session's `max_concurrency` requests in flight for a
# while, and short enough that a retried task redoes little and results stream back.
DEFAULT_BATCH_SIZE = 256
WAREHOUSE_SETTINGS = ("path", "catalog", "data_path", "retry_timeout_s")


@dataclass
class CallBatch:
    """One Ray task's work: plain, picklable data (the resources are rebuilt on the worker).
    With a `schema` the batch is `complete_json`, without one `complete` (text)."""

    index: int
    llm_settings: dict[str, Any]
    warehouse_settings: dict[str, Any]
    task_context: TaskContext
    requests: list[ChatRequest]
    schema: type[pydantic.BaseModel] | None
    needs_api_key: bool


@dataclass
class BatchOutcome:
    index: int
    results: list[ChatResult] | list[StructuredResult]
    totals: Totals
    budget_stopped: bool
    worker: str  # host:pid of the process that ran it


def runs_on_cluster(session: LLMSession, compute: Compute) -> bool:
    """Whether `complete_json_in_batches` sends this session's requests to the cluster."""
    return (
        compute.distributed
        and not session.endpoint.is_local
        and not session.resource.batch_mode
        and isinstance(session.warehouse, Warehouse)  # workers rebuild it from its settings
    )


def engine_name(session: LLMSession, compute: Compute) -> str:
    """`ray` or `in-process`: where the calls ran, for the asset's `compute` metadata."""
    return "ray" if runs_on_cluster(session, compute) else "in-process"


def complete_json_in_batches(
    session: LLMSession,
    requests: Sequence[ChatRequest],
    schema: type[pydantic.BaseModel],
    compute: Compute,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[StructuredResult]:
    """`session.complete_json(requests, schema)`, run as batches of `batch_size` requests
    on the Ray cluster when `compute` names one. Results in request order, one per request.
    The driver holds the results and at most `max_in_flight` batches of requests in the
    object store at once (batches are cut as tasks are submitted)."""
    with on_cluster(session, compute, batch_size) as calls:
        return calls.complete_json(requests, schema=schema)


class BatchedSession:
    """An `LLMSession` whose `complete` and `complete_json` run as batches on the Ray
    cluster when `ray_engine` is the step's connection to one (in the session itself otherwise); everything else
    (`model`, `endpoint`, `embed`, `metadata`, `log_estimate`, ...) is the session's own.
    A generation step passes it wherever it passed the session: several rounds of calls
    (summaries, then sentences, then sections) each go out as batches, and all of them
    spend from the materialization's one cluster-wide budget. Made by `on_cluster`."""

    def __init__(self, session: LLMSession, batch_size: int | None = None, ray_engine: RayEngine | None = None) -> None:
        batch_size = session.resource.cluster_batch_size if batch_size is None else batch_size
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.session = session
        self.batch_size = batch_size
        self.ray_engine = ray_engine  # the step's connection to the cluster, open across rounds
        self.engine = "ray" if ray_engine is not None else "in-process"  # for the asset's `compute` metadata

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)

    def complete(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        return self._calls(list(requests), None)

    def complete_json(self, requests: Sequence[ChatRequest], schema: type[pydantic.BaseModel]) -> list[StructuredResult]:
        return self._calls(list(requests), schema)

    def _calls(self, requests: list[ChatRequest], schema: type[pydantic.BaseModel] | None) -> list:
        session = self.session
        if self.engine != "ray" or not requests or session.budget.stopped:
            # in-process; or the budget already stopped calls: the session answers
            # budget_exceeded at once, as it would in-process
            if schema is None:
                return session.complete(requests)
            return session.complete_json(requests, schema=schema)
        return run_in_batches(session, requests, schema, self.ray_engine, self.batch_size)

    def close(self) -> None:
        if self.ray_engine is not None:  # still connected: the actor is on the cluster
            drop_budget_actor(self.session, task_context_of(self.session.context))


@contextmanager
def on_cluster(session: LLMSession, compute: Compute, batch_size: int | None = None) -> Iterator[BatchedSession]:
    """`with llm.session(context, warehouse) as driver, on_cluster(driver, Compute()) as session:`
    the session, its calls spread over the Ray cluster when one is named, in batches of
    `batch_size` requests (default: the llm resource's `cluster_batch_size`). Leaving the block
    drops the materialization's cluster budget actor (kept between rounds of calls, so the
    budget holds over all of them). The step connects to the cluster once, for every round."""
    if not runs_on_cluster(session, compute):
        yield BatchedSession(session, batch_size)
        return
    with compute.engine() as engine:
        batched = BatchedSession(session, batch_size, engine)
        try:
            yield batched
        finally:
            batched.close()


def run_in_batches(
    session: LLMSession,
    requests: list[ChatRequest],
    schema: type[pydantic.BaseModel] | None,
    engine: RayEngine,
    batch_size: int,
) -> list:
    """One round of calls as Ray tasks of `batch_size` requests: `complete_json` with a
    schema, `complete` (text) without. Results in request order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    llm_settings = pinned_settings(session)
    warehouse_settings = {name: getattr(session.warehouse, name) for name in WAREHOUSE_SETTINGS}
    task_context = task_context_of(session.context)
    needs_api_key = session.endpoint.api_key not in PLACEHOLDER_KEYS
    plan = plan_batches(requests, batch_size)
    n_batches = len(plan)

    def batches() -> Iterator[CallBatch]:
        for index, positions in enumerate(plan):
            chunk = [requests[p] for p in positions]
            yield CallBatch(index, llm_settings, warehouse_settings, task_context, chunk, schema, needs_api_key)

    outcomes: dict[int, BatchOutcome] = {}
    started = last_log = time.monotonic()
    try:
        session.log.info(
            f"LLM: {len(requests)} requests in {n_batches} batches of up to {batch_size} on {engine.name} "
            f"({engine.workers} workers)"
        )
        for outcome in engine.map(run_batch, batches()):
            outcomes[outcome.index] = outcome
            if time.monotonic() - last_log >= session.resource.progress_interval_s or len(outcomes) == n_batches:
                last_log = time.monotonic()
                done = sum(len(o.results) for o in outcomes.values())
                session.log.info(
                    f"LLM batches: {len(outcomes)}/{n_batches} done, {done}/{len(requests)} requests, "
                    f"{time.monotonic() - started:.1f}s"
                )
        workers = sorted({o.worker for o in outcomes.values()})
        session.log.info(f"LLM: {n_batches} batches ran in {len(workers)} worker processes: {', '.join(workers)}")
    finally:
        # whatever happened, the driver's report counts what the workers did spend
        absorb_worker_calls(session, [o.totals for o in outcomes.values()])
    results: list[Any] = [None] * len(requests)
    for index, positions in enumerate(plan):
        batch_results = outcomes[index].results
        if len(batch_results) != len(positions):
            raise RuntimeError(f"batch {index} returned {len(batch_results)} results for {len(positions)} requests")
        for position, result in zip(positions, batch_results):
            results[position] = result
    if any(o.budget_stopped for o in outcomes.values()):
        session.budget.stopped = True  # the caller's `with` block raises after it writes its rows
    return results


def plan_batches(requests: Sequence[ChatRequest], batch_size: int) -> list[list[int]]:
    """The request positions of each batch, in request order, about `batch_size` each. Equal
    requests (same messages and sampling, whatever their `row_id`) go to the same batch, the
    one of their first occurrence: one session answers them once and counts the others as
    cache hits, as in-process; in different batches two workers could both miss the cache
    at the same moment and both pay."""
    groups: dict[str, list[int]] = {}
    for position, request in enumerate(requests):
        key = hashlib.sha256(
            canonical_json([request.messages, request.temperature, request.max_tokens, request.sample_index]).encode()
        ).hexdigest()
        groups.setdefault(key, []).append(position)
    plan: list[list[int]] = []
    batch: list[int] = []
    for positions in groups.values():  # in order of first occurrence
        if batch and len(batch) + len(positions) > batch_size:
            plan.append(sorted(batch))
            batch = []
        batch.extend(positions)
    if batch:
        plan.append(sorted(batch))
    return plan


def run_batch(batch: CallBatch) -> BatchOutcome:
    """The Ray task: one worker session, one `complete_json` (or `complete`) call. A budget
    stop is returned (the driver raises after the caller wrote its rows), never raised here."""
    from resources.llm.resource import LLMResource

    llm = LLMResource(**batch.llm_settings)
    if batch.needs_api_key and resolve_api_key(llm.api_key, llm.base_url) is None:
        raise LLMConfigError(
            f"Ray worker {socket.gethostname()} has no api key: the driver's endpoint needs one, and "
            f"{OPENAI_API_KEY_ENV} is not set in this worker's environment. Set it (or the variable the llm "
            "resource's api_key names) on every worker; the key itself is never sent with the task."
        )
    results: list | None = None
    stopped = False
    totals = Totals()
    try:
        with llm.session(batch.task_context, Warehouse(**batch.warehouse_settings)) as session:
            if batch.schema is None:
                results = session.complete(batch.requests)
            else:
                results = session.complete_json(batch.requests, schema=batch.schema)
            stopped = session.budget_stopped
            totals = session.totals
    except dg.Failure:
        if results is None or not stopped:
            raise
    return BatchOutcome(batch.index, results, totals, stopped, f"{socket.gethostname()}:{os.getpid()}")


def pinned_settings(session: LLMSession) -> dict[str, Any]:
    """The driver's llm resource settings, with the endpoint url and models it resolved
    (so workers ask the same server under the same cache keys). The api key stays a
    reference, resolved on each worker."""
    settings = session.resource.model_dump()
    settings.update(
        base_url=session.endpoint.base_url,
        model=session.endpoint.chat_model,
        embedding_model=session.endpoint.embedding_model,
    )
    return settings


def task_context_of(context: Any) -> TaskContext:
    if context is None:
        return TaskContext(None, None)
    if isinstance(context, TaskContext):
        return context
    return TaskContext.of(context)


def ledger_totals(lake: Lake, run_id: str, asset_key: str | None, partition: str | None) -> Totals:
    """The `Totals` of every `llm_calls` row of one materialization (run, asset, partition),
    summed as the recorder sums a session's rows."""
    frame = lake.query(
        f"""
        SELECT count(*) AS calls,
               count(*) FILTER (WHERE cache_hit) AS cache_hits,
               coalesce(sum(prompt_tokens), 0) AS prompt_tokens,
               coalesce(sum(completion_tokens), 0) AS completion_tokens,
               coalesce(sum(cached_tokens), 0) AS cached_tokens,
               coalesce(sum(cost_usd), 0) AS cost_usd,
               coalesce(sum(saved_usd), 0) AS saved_usd,
               count(*) FILTER (WHERE status = 'error') AS failed,
               count(*) FILTER (WHERE status = 'budget_exceeded') AS budget_exceeded,
               count(*) FILTER (WHERE status = 'ok' AND NOT cache_hit AND cost_usd IS NULL) AS unknown_cost_calls,
               coalesce(sum(attempts), 0) AS attempts,
               coalesce(sum(greatest(coalesce(attempts, 0) - 1, 0)), 0) AS retries,
               coalesce(sum(latency_s), 0) AS latency_s
        FROM {CALLS_TABLE}
        WHERE run_id = ? AND asset_key IS NOT DISTINCT FROM ? AND "partition" IS NOT DISTINCT FROM ?
        """,
        [run_id, asset_key, partition],
    )
    row = frame.row(0, named=True)
    return Totals(**{f.name: (float if f.type == "float" else int)(row[f.name]) for f in fields(Totals)})


def absorb_worker_calls(session: LLMSession, worker_totals: list[Totals]) -> None:
    """Make the driver session's totals those of the whole materialization: the ledger's
    rows for its run, asset and partition (the driver's own calls, every worker's, and a
    killed attempt's, which no returned total holds). Without a run id (no Dagster context),
    or should the ledger somehow hold fewer calls than the workers reported, the driver's own
    totals plus the workers' are used instead: the report never counts less than was seen."""
    totals = session.totals
    merged = Totals(
        **{f.name: getattr(totals, f.name) + sum(getattr(t, f.name) for t in worker_totals) for f in fields(Totals)}
    )
    recorder = session.recorder
    chosen = merged
    if recorder.run_id:
        try:
            recorder.flush()  # the driver's own rows, if it made calls
            lake = live_lake(session.warehouse)
            from_ledger = ledger_totals(lake, recorder.run_id, recorder.asset_key, recorder.partition)
        except Exception as exc:  # noqa: BLE001 -- the report falls back to what the workers said
            session.log.warning(f"reading this materialization's LLM calls from the ledger failed ({exc!r}); "
                                "the cost report sums the workers' own totals")
        else:
            if from_ledger.calls >= merged.calls:
                chosen = from_ledger
            else:
                session.log.warning(
                    f"the ledger holds {from_ledger.calls} LLM calls for this materialization, the sessions counted "
                    f"{merged.calls}: reporting the sessions' figures (some rows may still be in a worker's journal)"
                )
    for f in fields(Totals):
        setattr(totals, f.name, getattr(chosen, f.name))  # in place: the driver's budget reads this object


def drop_budget_actor(session: LLMSession, task_context: TaskContext) -> None:
    """The workers' sessions shared one detached budget actor for this materialization
    (`session.budget_for`); it would outlive the run, a process on the cluster each, so it
    goes when the step leaves `on_cluster`, after its last round of batches. Left alone if the driver's own session uses it
    (the step's process was on the cluster all along: a dagster-ray `ray_cluster`): that session
    removes it when it closes (`ClusterBudget.release`)."""
    if session.resource.max_cost_usd is None or not task_context.run_id or isinstance(session.budget, ClusterBudget):
        return
    asset = task_context.asset_key.to_user_string() if task_context.asset_key is not None else None
    # the scope as session.budget_for spells it
    scope = "/".join(part or "-" for part in (task_context.run_id, asset, task_context.partition_key))
    try:
        import ray

        ray.kill(ray.get_actor(f"{BUDGET_PREFIX}{scope}", namespace=NAMESPACE))
    except Exception:  # noqa: BLE001 -- best effort: no actor (no priced call was admitted) or gone already
        logger.debug("no budget actor to drop for %s", scope, exc_info=True)
