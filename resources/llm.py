"""The LLM layer: one Dagster resource that owns every call to a language model.

    with llm.session(context, warehouse) as session:
        session.log_estimate(n_calls, prompt_tokens_each, completion_tokens_each)
        results = session.complete([ChatRequest(messages=[...])])
        graded = session.complete_json(requests, schema=MyPydanticModel)
        vectors = session.embed(texts)
        metadata = session.metadata()

What the session does for the caller:

- **Endpoint.** The official `openai` client (`AsyncOpenAI` over the aiohttp transport)
  talks to any OpenAI-compatible endpoint: set `base_url` (or OPENAI_BASE_URL). With no
  api key and no base url it starts the bundled SmolLM2-135M llama.cpp server for the
  session (see resources/local_model.py).
- **Cache before use.** Each request is keyed by a sha256 of (endpoint without
  credentials, model, messages, sampling params incl. response_format, sample_index).
  Answers are INSERTed into `llm_cache` before the call returns them, so a crash, a budget
  stop or a re-materialization never pays twice. Cache hits for a whole batch are
  fetched with one query and cost $0.
- **Ledger.** Every request is one row in `llm_calls` (tokens, dollars from genai-prices,
  latency, retries, cache hit, status), for the cost report.
- **Throughput.** A pool of `max_concurrency` workers streams through the requests (no
  fixed batches), an RPM/TPM limiter paces them, and 429 / 5xx / timeouts / connection
  errors back off exponentially with jitter, honouring Retry-After. The SDK's own retries
  are off so every attempt is counted here.
- **Budget.** `max_cost_usd` per session (one materialization). When spent, no new call is
  issued; the remaining results come back with status `budget_exceeded`, and leaving the
  `with` block raises `dg.Failure` after the caller has written what was done. Re-running
  resumes from the cache.
- **Batch API.** With `batch_mode=True` uncached chat and embedding requests go through
  OpenAI's Batch API at half price (embeddings: one batch line per chunk of texts); the
  batch id is stored in `llm_batches` so a re-run picks it up.

The api key is never logged, printed, stored or put in an error message.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import io
import json
import logging
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import dagster as dg
import numpy as np
import openai
import pydantic
from pydantic import Field

from resources import llm_store

try:  # openai>=3 ships on httpx2; older releases on httpx
    import httpx2 as _httpx
except ImportError:  # pragma: no cover
    import httpx as _httpx
from resources.local_model import (
    CHAT_ALIAS,
    EMBED_ALIAS,
    LOCAL_ENDPOINT_ID,
    LocalModelServer,
    local_model_url_from_env,
)
from resources.pricing import price_usd
from resources.ratelimit import RateLimiter
from resources.warehouse import Warehouse

logger = logging.getLogger(__name__)

OPENAI_BASE_URL_ENV = "OPENAI_BASE_URL"
OPENAI_API_KEY_ENV = "OPENAI_API_KEY"
CHAT_MODEL_ENV = "SYNTH_ASSETS_CHAT_MODEL"
EMBEDDING_MODEL_ENV = "SYNTH_ASSETS_EMBEDDING_MODEL"
DEFAULT_REMOTE_CHAT_MODEL = "gpt-4o-mini"
DEFAULT_REMOTE_EMBEDDING_MODEL = "text-embedding-3-small"
OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"

# The JSON repair retry uses a sample index far from any a caller draws, so it is a new
# cache key (and a new seed) rather than a replay of the malformed answer.
JSON_RETRY_SAMPLE_OFFSET = 1_000_000

Status = Literal["ok", "error", "budget_exceeded"]
StructuredOutputMode = Literal["auto", "json_schema", "json_object_schema", "json_object"]


# --------------------------------------------------------------------------- data types


class LLMError(Exception):
    """Base class for LLM layer errors (configuration, local model start-up)."""


class LLMConfigError(LLMError):
    """The resource's configuration cannot work (e.g. an unknown structured output mode)."""


@dataclass
class ChatRequest:
    """One chat completion. `None` sampling params take the resource defaults.
    `sample_index` draws a distinct cached sample of the same prompt; `row_id` is
    carried through to the result for the caller's bookkeeping."""

    messages: list[dict[str, Any]]
    temperature: float | None = None
    max_tokens: int | None = None
    sample_index: int = 0
    row_id: str | None = None


@dataclass
class ChatResult:
    text: str | None
    cache_key: str
    status: Status = "ok"
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = 0.0  # None = the model's price is unknown
    cache_hit: bool = False
    row_id: str | None = None
    cached_tokens: int = 0
    latency_s: float = 0.0
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class StructuredResult(ChatResult):
    parsed: pydantic.BaseModel | None = None
    raw_text: str | None = None


# --------------------------------------------------------------------------- plain helpers


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def strip_credentials(url: str) -> str:
    """scheme://host[:port]/path with no user:password, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme.lower(), netloc.lower(), parts.path.rstrip("/"), "", ""))


def endpoint_host(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{host}:{parts.port}" if parts.port else host


def cache_key(endpoint_id: str, kind: str, body: dict, sample_index: int = 0) -> str:
    """sha256 over what determines the answer: endpoint (no credentials), the request body
    (model, messages, sampling params, response_format) and the sample index."""
    payload = {"endpoint": endpoint_id, "kind": kind, "body": body, "sample_index": sample_index}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def estimate_tokens(messages: Sequence[dict] | str) -> int:
    """Rough prompt size (4 characters a token) for rate limiting and budget reservations."""
    if isinstance(messages, str):
        return max(1, len(messages) // 4)
    chars = sum(len(str(m.get("content", ""))) for m in messages)
    return max(1, chars // 4 + 4 * len(messages))


def strict_json_schema(schema: dict) -> dict:
    """A pydantic JSON schema made acceptable to OpenAI strict structured outputs:
    every object closed (`additionalProperties: false`) with all properties required,
    and no `default` keywords."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: walk(v) for k, v in node.items() if k != "default"}
            if out.get("type") == "object" or "properties" in out:
                props = out.get("properties", {})
                out["additionalProperties"] = False
                out["required"] = list(props.keys())
            return out
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    return walk(schema)


def grammar_friendly_schema(schema: dict, max_enum: int = 101) -> dict:
    """llama.cpp's schema-to-grammar ignores integer minimum/maximum; a small integer
    range is spelled out as an enum so the grammar itself keeps answers in range."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: walk(v) for k, v in node.items()}
            low, high = out.get("minimum"), out.get("maximum")
            if out.get("type") == "integer" and low is not None and high is not None and 0 <= high - low < max_enum:
                out = {k: v for k, v in out.items() if k not in ("minimum", "maximum")}
                out["enum"] = list(range(int(low), int(high) + 1))
            return out
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    return walk(schema)


def response_format_for(schema: type[pydantic.BaseModel], mode: str) -> dict:
    """The `response_format` asking for JSON matching `schema`, in the endpoint's dialect."""
    json_schema = schema.model_json_schema()
    if mode == "json_schema":  # OpenAI structured outputs
        name = re.sub(r"[^a-zA-Z0-9_-]", "_", schema.__name__)[:64]
        return {
            "type": "json_schema",
            "json_schema": {"name": name, "schema": strict_json_schema(json_schema), "strict": True},
        }
    if mode == "json_object_schema":  # llama.cpp server: grammar-constrained to the schema
        return {"type": "json_object", "schema": grammar_friendly_schema(json_schema)}
    if mode == "json_object":
        return {"type": "json_object"}
    raise LLMConfigError(f"unknown structured_output_mode {mode!r}")


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def parse_structured(text: str | None, schema: type[pydantic.BaseModel]) -> tuple[pydantic.BaseModel | None, str | None]:
    """(parsed, None) or (None, why it failed). Tolerates code fences and prose around
    the JSON object."""
    if not text or not text.strip():
        return None, "empty answer"
    candidates = [text.strip()]
    candidates += [m.strip() for m in _FENCE.findall(text)]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    last_error = "no JSON object found"
    for candidate in candidates:
        try:
            data = json.loads(candidate)
        except json.JSONDecodeError as exc:
            last_error = f"invalid JSON: {exc}"
            continue
        try:
            return schema.model_validate(data), None
        except pydantic.ValidationError as exc:
            last_error = f"schema mismatch: {exc.error_count()} error(s): " + "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5]
            )
    return None, last_error


def mean_pool(embedding: Any) -> np.ndarray:
    """One vector per text: llama.cpp's server may return one vector per token."""
    array = np.asarray(embedding, dtype=np.float32)
    if array.ndim == 2:
        return array.mean(axis=0)
    return array.reshape(-1)


RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError, asyncio.TimeoutError)):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in RETRYABLE_STATUS or exc.status_code >= 500
    # A 200 with a body that is not JSON (a proxy hiccup): try again.
    return isinstance(exc, (json.JSONDecodeError, openai.APIResponseValidationError))


def retry_after_s(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                continue
    return None


def backoff_delay(attempt: int, base_s: float, max_s: float) -> float:
    """Exponential backoff with full jitter (AWS architecture blog's recommendation)."""
    return random.uniform(0, min(max_s, base_s * (2 ** (attempt - 1))))


# --------------------------------------------------------------------------- the resource


# The bundled server (llama-cpp-python) serves requests one at a time: keep one in
# flight and one waiting, send embeddings in small batches, and wait long for answers.
LOCAL_MAX_CONCURRENCY = 2
LOCAL_EMBED_BATCH_SIZE = 8
LOCAL_TIMEOUT_S = 900.0

class LLMResource(dg.ConfigurableResource):
    """An OpenAI-compatible LLM endpoint with caching, a cost ledger, a budget and retries.

    Set `base_url` for any OpenAI-compatible server (vLLM, llama.cpp, Together, ...).
    Leave `api_key` and `base_url` unset (and OPENAI_API_KEY / OPENAI_BASE_URL too) to use
    the bundled local SmolLM2-135M model."""

    base_url: str | None = Field(
        default=None, description=f"OpenAI-compatible endpoint (env {OPENAI_BASE_URL_ENV}); unset + no key = local model."
    )
    api_key: str | None = Field(
        default=None,
        repr=False,
        description=f"API key; pass dg.EnvVar('{OPENAI_API_KEY_ENV}'), never a literal (env {OPENAI_API_KEY_ENV}).",
    )
    model: str | None = Field(
        default=None, description=f"Chat model (env {CHAT_MODEL_ENV}; default {DEFAULT_REMOTE_CHAT_MODEL} or the local alias)."
    )
    embedding_model: str | None = Field(
        default=None,
        description=f"Embedding model (env {EMBEDDING_MODEL_ENV}; default {DEFAULT_REMOTE_EMBEDDING_MODEL} or the local alias).",
    )
    max_concurrency: int = Field(default=16, ge=1, description="Requests in flight at once.")
    requests_per_minute: int | None = Field(default=None, description="Client-side RPM limit (None = none).")
    tokens_per_minute: int | None = Field(default=None, description="Client-side TPM limit (None = none).")
    timeout_s: float = Field(default=120.0, description="Per-attempt HTTP timeout.")
    max_retries: int = Field(default=6, ge=0, description="Retries after the first attempt on 429/5xx/timeouts.")
    retry_base_delay_s: float = Field(default=1.0, description="First backoff delay; doubles per retry, full jitter.")
    retry_max_delay_s: float = Field(default=60.0, description="Longest backoff delay.")
    # phi-1 (Gunasekar et al. 2023) does not publish sampling settings; 0.7 keeps synthetic
    # text diverse without drifting off-topic. Callers override per request.
    temperature: float | None = Field(default=0.7, description="Default sampling temperature.")
    max_tokens: int | None = Field(default=512, description="Default completion length cap.")
    seed: int | None = Field(default=1234, description="Base seed; each sample_index adds to it.")
    max_cost_usd: float | None = Field(default=10.0, description="Budget per materialization in USD (None = none).")
    batch_mode: bool = Field(default=False, description="Send uncached chat and embedding requests through the OpenAI Batch API (50% price).")
    batch_poll_interval_s: float = Field(default=30.0, description="Batch API polling interval.")
    batch_timeout_s: float = Field(default=26 * 3600.0, description="Give up waiting for a batch after this long.")
    structured_output_mode: str = Field(
        default="auto",
        description="auto | json_schema (OpenAI strict) | json_object_schema (llama.cpp) | json_object.",
    )
    embed_batch_size: int = Field(default=64, ge=1, description="Texts per embeddings request.")
    cache_namespace: str | None = Field(
        default=None, description="Replaces the endpoint URL in cache keys (e.g. a server that moved)."
    )
    progress_interval_s: float = Field(default=5.0, description="Seconds between progress lines in the run log.")
    local_model_log_dir: str = Field(default="data/logs", description="Where the local llama.cpp server logs.")
    local_startup_timeout_s: float = Field(default=120.0, description="How long to wait for the local server.")

    @contextmanager
    def session(self, context: Any = None, warehouse: Warehouse | None = None) -> Iterator[LLMSession]:
        """One session per asset step: starts the local model if needed, owns the HTTP
        client and event loop, and raises dg.Failure on exit if the budget stopped calls."""
        if warehouse is None:
            raise LLMConfigError("llm.session(context, warehouse) needs the warehouse resource for its cache and ledger")
        with ExitStack() as stack:
            endpoint = self._resolve_endpoint(stack)
            session = LLMSession(self, context, warehouse, endpoint)
            stack.callback(session.close)
            yield session
            session.close()
            session.raise_if_budget_stopped()

    def _resolve_endpoint(self, stack: ExitStack) -> Endpoint:
        api_key = self.api_key or os.environ.get(OPENAI_API_KEY_ENV) or None
        base_url = self.base_url or os.environ.get(OPENAI_BASE_URL_ENV) or None
        env_chat = os.environ.get(CHAT_MODEL_ENV) or None
        env_embed = os.environ.get(EMBEDDING_MODEL_ENV) or None
        if api_key is None and base_url is None:
            local_url = local_model_url_from_env()
            if local_url is None:
                server = LocalModelServer(self.local_model_log_dir, self.local_startup_timeout_s)
                stack.enter_context(server)
                local_url = server.base_url
                logger.info("started local llama.cpp server at %s in %.1fs (log %s)", local_url, server.startup_s, server.log_path)
            return Endpoint(
                base_url=local_url,
                api_key="local-no-key",
                endpoint_id=self.cache_namespace or LOCAL_ENDPOINT_ID,
                is_local=True,
                chat_model=self.model or env_chat or CHAT_ALIAS,
                embedding_model=self.embedding_model or env_embed or EMBED_ALIAS,
            )
        base_url = (base_url or OPENAI_DEFAULT_BASE_URL).rstrip("/")
        return Endpoint(
            base_url=base_url,
            api_key=api_key or "no-key",
            endpoint_id=self.cache_namespace or strip_credentials(base_url),
            is_local=False,
            chat_model=self.model or env_chat or DEFAULT_REMOTE_CHAT_MODEL,
            embedding_model=self.embedding_model or env_embed or DEFAULT_REMOTE_EMBEDDING_MODEL,
        )


@dataclass
class Endpoint:
    base_url: str
    api_key: str = field(repr=False)
    endpoint_id: str
    is_local: bool
    chat_model: str
    embedding_model: str

    @property
    def host(self) -> str:
        return endpoint_host(self.base_url)


@dataclass
class _Totals:
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


@dataclass
class _Pending:
    """One uncached request on its way to the endpoint."""

    index: int
    key: str
    body: dict
    est_tokens: int


class LLMSession:
    """What `LLMResource.session()` yields. Sync methods; an event loop runs inside."""

    def __init__(self, resource: LLMResource, context: Any, warehouse: Warehouse, endpoint: Endpoint) -> None:
        self.resource = resource
        self.context = context
        self.warehouse = warehouse
        self.endpoint = endpoint
        self.model = endpoint.chat_model
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
        self.embedding_model = endpoint.embedding_model
        self._host = endpoint.host  # parsed once: the ledger stamps it on every row
        self.log = getattr(context, "log", None) or logger
        self.run_id, self.asset_key, self.partition = _context_ids(context)
        self.totals = _Totals()
        self.budget_stopped = False
        self._reserved_usd = 0.0
        self._closed = False
        self._cache_rows: list[dict] = []
        self._ledger_rows: list[dict] = []
        self._last_flush = time.monotonic()
        self._conn = None
        self._flush_task: asyncio.Future | None = None
        mode = resource.structured_output_mode
        if mode == "auto":
            mode = "json_object_schema" if endpoint.is_local else "json_schema"
        if mode not in ("json_schema", "json_object_schema", "json_object"):
            raise LLMConfigError(f"unknown structured_output_mode {resource.structured_output_mode!r}")
        self.structured_output_mode = mode
        self._limiter: RateLimiter | None = None
        self._client: openai.AsyncOpenAI | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="llm-session-loop", daemon=True)
        self._thread.start()
        # One DuckDB connection for the whole session: opening the file costs ~20 ms and
        # closing the last connection (a checkpoint) ~30-60 ms, which made every complete()
        # call pay ~80 ms even when all its answers were cache hits. While it is open the
        # asset's own `warehouse.connect()` calls in this process attach to the same
        # database instance at no cost; the file lock is held by this process anyway for
        # the duration of each call. Committed rows are in DuckDB's WAL, so durable.
        self._db_stack = ExitStack()
        try:
            self._conn = self._db_stack.enter_context(warehouse.connect())
            llm_store.ensure_tables(self._conn)
        except BaseException:
            self._db_stack.close()
            self._loop.call_soon_threadsafe(self._loop.stop)
            raise

    # ------------------------------------------------------------------ public API

    def complete(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        """Chat completions, in request order. Never raises for a failed request: its
        result has status `error` (or `budget_exceeded`) and the reason in `error`."""
        return self._run(self._chat_many(list(requests), response_format=None, label="complete"))

    def complete_json(self, requests: Sequence[ChatRequest], schema: type[pydantic.BaseModel]) -> list[StructuredResult]:
        """Chat completions constrained to `schema` and validated with pydantic. A
        malformed answer is retried once (as a new sample); if that fails too the result
        has status `error`, `parsed=None` and the answer in `raw_text`."""
        return self._run(self._complete_json(list(requests), schema))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(n, d) float32 embeddings, one mean-pooled vector per text; a NaN row marks a
        text that failed (see the ledger for why)."""
        return self._run(self._embed_many(list(texts)))

    def estimate_cost(self, n_calls: int, prompt_tokens_each: int, completion_tokens_each: int) -> float | None:
        each = price_usd(self.model, prompt_tokens_each, completion_tokens_each, batch=self.resource.batch_mode)
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

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._client is not None:
                asyncio.run_coroutine_threadsafe(self._client.close(), self._loop).result(timeout=30)
        except Exception:  # closing a broken transport must not hide the real error
            logger.debug("closing the LLM client failed", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        if not self._loop.is_running():
            self._loop.close()
        self._conn = None
        self._db_stack.close()

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

    # ------------------------------------------------------------------ internals

    def _run(self, coro):
        if self._closed:
            coro.close()
            raise LLMError("the LLM session is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except (KeyboardInterrupt, concurrent.futures.CancelledError):
            future.cancel()
            raise

    def _redact(self, text: str) -> str:
        key = self.endpoint.api_key
        if key and len(key) >= 4:
            text = text.replace(key, "***")
        return text

    async def _ensure_client(self) -> openai.AsyncOpenAI:
        if self._client is None:
            self._client = openai.AsyncOpenAI(
                api_key=self.endpoint.api_key,
                base_url=self.endpoint.base_url,
                timeout=self.timeout_s,
                max_retries=0,  # retries are ours, so every attempt is counted
                http_client=openai.DefaultAioHttpClient(
                    timeout=self.timeout_s,
                    # keep one warm connection per worker (the SDK keeps 100 alive by default)
                    limits=_httpx.Limits(
                        max_connections=max(100, self.resource.max_concurrency),
                        max_keepalive_connections=max(20, self.resource.max_concurrency),
                    ),
                ),
            )
            self._limiter = RateLimiter(self.resource.requests_per_minute, self.resource.tokens_per_minute)
        return self._client

    def _chat_body(self, request: ChatRequest, response_format: dict | None, sample_offset: int = 0) -> tuple[dict, int]:
        r = self.resource
        sample_index = request.sample_index + sample_offset
        body: dict[str, Any] = {"model": self.model, "messages": request.messages}
        temperature = request.temperature if request.temperature is not None else r.temperature
        max_tokens = request.max_tokens if request.max_tokens is not None else r.max_tokens
        if temperature is not None:
            body["temperature"] = temperature
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if r.seed is not None:
            body["seed"] = r.seed + sample_index
        if response_format is not None:
            body["response_format"] = response_format
        return body, sample_index

    # --- cache and ledger writes

    def _ledger(self, **row: Any) -> None:
        row.setdefault("call_id", uuid.uuid4().hex)
        row.update(
            run_id=self.run_id,
            asset_key=self.asset_key,
            partition=self.partition,
            endpoint_host=self._host,
            created_at=llm_store.now(),
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

    def _ledger_not_sent(self, model: str, kind: str, key: str, mode: str) -> None:
        """The ledger row of a request the budget stopped before it was sent."""
        self._ledger(
            model=model, kind=kind, prompt_tokens=0, completion_tokens=0, cached_tokens=0, cost_usd=0.0,
            saved_usd=0.0, latency_s=0.0, attempts=0, cache_hit=False, mode=mode,
            status="budget_exceeded", error_class=None, cache_key=key,
        )  # fmt: skip

    def _remember(self, key: str, model: str, kind: str, request: dict, text: str, usage: dict) -> None:
        self._cache_rows.append(
            {
                "cache_key": key,
                "model": model,
                "kind": kind,
                "request_json": canonical_json(request),
                "response_text": text,
                "usage": json.dumps(usage),
                "created_at": llm_store.now(),
            }
        )

    def _maybe_flush(self) -> None:
        # Answers go to DuckDB in groups (every second or 512 rows) on a worker thread so
        # the event loop keeps streaming; `_session_connection` drains them all before a
        # call returns. A hard kill loses at most the last second of answers.
        pending = len(self._cache_rows) + len(self._ledger_rows)
        if not pending or (pending < 512 and time.monotonic() - self._last_flush < 1.0):
            return
        if self._flush_task is not None and not self._flush_task.done():
            return
        cache_rows, self._cache_rows = self._cache_rows, []
        ledger_rows, self._ledger_rows = self._ledger_rows, []
        self._last_flush = time.monotonic()
        self._flush_task = asyncio.ensure_future(asyncio.to_thread(self._write_rows, cache_rows, ledger_rows, True))

    def _write_rows(self, cache_rows: list[dict], ledger_rows: list[dict], own_cursor: bool = False) -> None:
        conn = self._conn.cursor() if own_cursor else self._conn  # a cursor per thread
        try:
            # cache first: a ledger row never points at an answer that is not stored
            llm_store.insert_rows(conn, llm_store.CACHE_TABLE, llm_store.CACHE_SCHEMA, cache_rows)
            llm_store.insert_rows(conn, llm_store.CALLS_TABLE, llm_store.CALLS_SCHEMA, ledger_rows, ignore_existing=False)
        finally:
            if own_cursor:
                conn.close()

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
    async def _session_connection(self):
        """The session's DuckDB connection for one complete()/embed() call; every answer
        (and its ledger row) is written before the call returns, even when it fails."""
        try:
            yield self._conn
        finally:
            await self._drain()

    # --- budget

    def _budget_allows(self, reserve_usd: float) -> bool:
        budget = self.resource.max_cost_usd
        if budget is None:
            return True
        if self.totals.cost_usd + self._reserved_usd + reserve_usd > budget and (
            self.totals.cost_usd + self._reserved_usd > 0 or reserve_usd > budget
        ):
            if not self.budget_stopped:
                self.log.warning(
                    f"LLM budget max_cost_usd=${budget:,.2f} reached (spent ${self.totals.cost_usd:,.4f}): "
                    "no new calls will be sent in this materialization"
                )
            self.budget_stopped = True
            return False
        return True

    # --- chat

    async def _complete_json(self, requests: list[ChatRequest], schema: type[pydantic.BaseModel]) -> list[StructuredResult]:
        response_format = response_format_for(schema, self.structured_output_mode)
        first = await self._chat_many(requests, response_format, label="complete_json")
        results: list[StructuredResult] = []
        retry_positions: list[int] = []
        for position, result in enumerate(first):
            structured = StructuredResult(**vars(result), raw_text=result.text)
            if result.status == "ok":
                parsed, why = parse_structured(result.text, schema)
                if parsed is not None:
                    structured.parsed = parsed
                else:
                    structured.error = why
                    retry_positions.append(position)
            results.append(structured)
        if retry_positions:
            self.log.info(f"complete_json: {len(retry_positions)} malformed answer(s), retrying each once as a new sample")
            second = await self._chat_many(
                [requests[p] for p in retry_positions],
                response_format,
                label="complete_json retry",
                sample_offset=JSON_RETRY_SAMPLE_OFFSET,
            )
            for position, retry in zip(retry_positions, second):
                before = results[position]
                merged = StructuredResult(**vars(retry), raw_text=retry.text)
                merged.prompt_tokens += before.prompt_tokens
                merged.completion_tokens += before.completion_tokens
                merged.cost_usd = None if (before.cost_usd is None or retry.cost_usd is None) else before.cost_usd + retry.cost_usd
                merged.attempts += before.attempts
                if retry.status == "ok":
                    parsed, why = parse_structured(retry.text, schema)
                    merged.parsed = parsed
                    if parsed is None:
                        merged.status = "error"
                        merged.error = f"malformed structured answer after one retry: {why}"
                results[position] = merged
        return results

    async def _chat_many(
        self,
        requests: list[ChatRequest],
        response_format: dict | None,
        label: str,
        sample_offset: int = 0,
    ) -> list[ChatResult]:
        bodies = []
        keys = []
        for request in requests:
            body, sample_index = self._chat_body(request, response_format, sample_offset)
            bodies.append(body)
            keys.append(cache_key(self.endpoint.endpoint_id, "chat", body, sample_index))
        results: list[ChatResult | None] = [None] * len(requests)
        async with self._session_connection() as conn:
            cached = llm_store.fetch_cached(conn, keys)
            pending: dict[str, _Pending] = {}
            followers: dict[str, list[int]] = {}
            for index, (request, key, body) in enumerate(zip(requests, keys, bodies)):
                if key in cached:
                    text, usage_json = cached[key]
                    results[index] = self._cached_chat_result(key, text, usage_json, request.row_id)
                elif key in pending:
                    followers.setdefault(key, []).append(index)  # same request twice: one call
                else:
                    pending[key] = _Pending(index, key, body, estimate_tokens(request.messages) + (body.get("max_tokens") or 256))
            if pending:
                progress = _Progress(self, label, len(requests), done=len(requests) - len(pending) - sum(map(len, followers.values())))
                if self.resource.batch_mode:
                    answered = await self._chat_batch_api(list(pending.values()), progress)
                else:
                    answered = await self._chat_online(list(pending.values()), progress)
                progress.finish()
                for key, result in answered.items():
                    job = pending[key]
                    result.row_id = requests[job.index].row_id
                    results[job.index] = result
                    for follower in followers.get(key, []):
                        copy = ChatResult(**vars(result))
                        copy.row_id = requests[follower].row_id
                        results[follower] = self._duplicate_result(copy)
        return results  # type: ignore[return-value]

    def _cached_chat_result(self, key: str, text: str, usage_json: str | None, row_id: str | None, model: str | None = None) -> ChatResult:
        usage = json.loads(usage_json) if usage_json else {}
        prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
        saved = price_usd(model or self.model, prompt, completion, usage.get("cached_tokens", 0))
        status: Status = "ok" if text else "error"
        self._ledger(
            model=model or self.model, kind="chat", prompt_tokens=0, completion_tokens=0, cached_tokens=0,
            cost_usd=0.0, saved_usd=saved, latency_s=0.0, attempts=0, cache_hit=True, mode="cache",
            status=status, error_class=None if text else "EmptyCompletion", cache_key=key,
        )  # fmt: skip
        return ChatResult(
            text=text, cache_key=key, status=status, error=None if text else "empty completion (cached)",
            prompt_tokens=prompt, completion_tokens=completion, cost_usd=0.0, cache_hit=True, row_id=row_id,
        )  # fmt: skip

    def _duplicate_result(self, result: ChatResult) -> ChatResult:
        """A request repeated within one call: answered by the first one's response."""
        saved = result.cost_usd if result.status == "ok" else 0.0
        self._ledger(
            model=self.model, kind="chat", prompt_tokens=0, completion_tokens=0, cached_tokens=0, cost_usd=0.0,
            saved_usd=saved, latency_s=0.0, attempts=0, cache_hit=True, mode="cache",
            status=result.status, error_class=None, cache_key=result.cache_key,
        )  # fmt: skip
        result.cache_hit, result.cost_usd = True, 0.0
        return result

    async def _chat_online(self, jobs: list[_Pending], progress: _Progress) -> dict[str, ChatResult]:
        client = await self._ensure_client()
        answered: dict[str, ChatResult] = {}

        async def handle(job: _Pending) -> None:
            answered[job.key] = await self._chat_one(client, job)
            progress.tick(answered[job.key])

        await self._stream(jobs, handle, progress)
        return answered

    async def _stream(self, items: Sequence[Any], handle: Callable[[Any], Awaitable[None]], progress: _Progress) -> None:
        """`max_concurrency` workers share one iterator over `items`: each takes the next item
        as soon as it is free (streaming, no fixed batches), with progress logged meanwhile."""
        queue = iter(items)

        async def worker() -> None:
            for item in queue:
                await handle(item)
                self._maybe_flush()

        workers = [asyncio.create_task(worker()) for _ in range(min(self.max_concurrency, len(items)))]
        ticker = asyncio.create_task(progress.ticker())
        try:
            await asyncio.gather(*workers)
        finally:
            ticker.cancel()
            for task in workers:
                task.cancel()

    async def _chat_one(self, client: openai.AsyncOpenAI, job: _Pending) -> ChatResult:
        reserve = price_usd(self.model, job.est_tokens, 0) or 0.0
        if not self._budget_allows(reserve):
            self._ledger_not_sent(self.model, "chat", job.key, "online")
            return ChatResult(text=None, cache_key=job.key, status="budget_exceeded", error="budget reached (max_cost_usd)")
        self._reserved_usd += reserve
        started = time.perf_counter()
        try:
            response, attempts, error = await self._with_retries(
                # The raw POST skips the SDK's per-request TypedDict transform and response
                # model construction (~5 ms CPU a call); the body is already API-shaped.
                lambda: client.post("/chat/completions", body=job.body, cast_to=object), job.est_tokens
            )
        finally:
            self._reserved_usd -= reserve
        latency = time.perf_counter() - started
        if error is not None:
            return self._failed(job.key, "chat", self.model, error, attempts, latency, "online")
        return self._chat_answer(job.key, job.body, response, attempts, latency, "online")

    def _chat_answer(self, key: str, body: dict, response: Any, attempts: int, latency: float, mode: str) -> ChatResult:
        """Cache and account one chat response (an SDK object or a batch output dict)."""
        if isinstance(response, str | bytes):  # a non-JSON content type
            return self._failed(key, "chat", self.model, UnexpectedResponse(str(response)[:200]), attempts, latency, mode)
        if isinstance(response, dict):
            choice = (response.get("choices") or [{}])[0]
            text = (choice.get("message") or {}).get("content")
            finish = choice.get("finish_reason")
            usage_obj = response.get("usage") or {}
            prompt = usage_obj.get("prompt_tokens")
            completion = usage_obj.get("completion_tokens")
            cached_tok = ((usage_obj.get("prompt_tokens_details") or {}).get("cached_tokens")) or 0
        else:
            choice = response.choices[0] if response.choices else None
            text = choice.message.content if choice is not None else None
            finish = choice.finish_reason if choice is not None else None
            usage_obj = response.usage
            prompt = getattr(usage_obj, "prompt_tokens", None)
            completion = getattr(usage_obj, "completion_tokens", None)
            details = getattr(usage_obj, "prompt_tokens_details", None)
            cached_tok = (getattr(details, "cached_tokens", None) if details is not None else None) or 0
        usage_known = prompt is not None and completion is not None
        prompt, completion = int(prompt or 0), int(completion or 0)
        # No usage from the endpoint means an unknown cost, not a free call.
        cost = price_usd(self.model, prompt, completion, cached_tok, batch=mode == "batch") if usage_known else None
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "cached_tokens": cached_tok, "finish_reason": finish}
        text = text or ""
        self._remember(key, self.model, "chat", body, text, usage)
        if cost is not None:
            self.totals.cost_usd += cost
        status: Status = "ok" if text else "error"
        self._ledger(
            model=self.model, kind="chat", prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached_tok,
            cost_usd=cost, saved_usd=0.0, latency_s=latency, attempts=attempts, cache_hit=False, mode=mode,
            status=status, error_class=None if text else "EmptyCompletion", cache_key=key,
        )  # fmt: skip
        return ChatResult(
            text=text, cache_key=key, status=status,
            error=None if text else f"empty completion (finish_reason={finish})",
            prompt_tokens=prompt, completion_tokens=completion, cost_usd=cost, cache_hit=False,
            cached_tokens=cached_tok, latency_s=latency, attempts=attempts,
        )  # fmt: skip

    def _failed(self, key: str, kind: str, model: str, error: BaseException, attempts: int, latency: float, mode: str) -> ChatResult:
        error_class = type(error).__name__
        message = self._redact(f"{error_class}: {error}")[:1000]
        self._ledger(
            model=model, kind=kind, prompt_tokens=0, completion_tokens=0, cached_tokens=0, cost_usd=0.0,
            saved_usd=0.0, latency_s=latency, attempts=attempts, cache_hit=False, mode=mode,
            status="error", error_class=error_class, cache_key=key,
        )  # fmt: skip
        return ChatResult(text=None, cache_key=key, status="error", error=message, latency_s=latency, attempts=attempts)

    async def _with_retries(self, call, est_tokens: int) -> tuple[Any, int, BaseException | None]:
        """(response, attempts, None) or (None, attempts, last error)."""
        r = self.resource
        attempt = 0
        while True:
            attempt += 1
            if self._limiter is not None:
                await self._limiter.acquire(est_tokens)
            try:
                return await call(), attempt, None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 -- every failure becomes a recorded row
                if not is_retryable(exc) or attempt > r.max_retries:
                    return None, attempt, exc
                delay = retry_after_s(exc)
                if delay is None:
                    delay = backoff_delay(attempt, r.retry_base_delay_s, r.retry_max_delay_s)
                logger.debug("retrying after %s (attempt %d, %.2fs)", type(exc).__name__, attempt, delay)
                await asyncio.sleep(min(delay, r.retry_max_delay_s))

    # --- batch API

    async def _chat_batch_api(self, jobs: list[_Pending], progress: _Progress) -> dict[str, ChatResult]:
        client = await self._ensure_client()
        answered: dict[str, ChatResult] = {}
        # Budget: a batch is paid as a whole, so admit requests while their estimate fits.
        admitted: list[_Pending] = []
        running = 0.0
        for job in jobs:
            each = price_usd(self.model, job.est_tokens, 0, batch=True) or 0.0
            if self._budget_allows(running + each):
                admitted.append(job)
                running += each
            else:
                self._ledger_not_sent(self.model, "chat", job.key, "batch")
                answered[job.key] = ChatResult(text=None, cache_key=job.key, status="budget_exceeded", error="budget reached (max_cost_usd)")
        if not admitted:
            return answered
        by_key = {job.key: job for job in admitted}
        batch_key = hashlib.sha256("\n".join(sorted(by_key)).encode()).hexdigest()
        started = time.perf_counter()
        try:
            batch = await self._submit_or_resume_batch(client, batch_key, [(job.key, job.body) for job in admitted])
            batch = await self._wait_for_batch(client, batch_key, batch, progress)
            outputs = await self._read_batch_outputs(client, batch)
        except Exception as exc:  # noqa: BLE001 -- recorded per request below
            latency = time.perf_counter() - started
            for job in admitted:
                answered[job.key] = self._failed(job.key, "chat", self.model, exc, 1, latency, "batch")
            return answered
        latency = time.perf_counter() - started
        for job in admitted:
            line = outputs.get(job.key)
            response = (line or {}).get("response") or {}
            if line and response.get("status_code") == 200 and isinstance(response.get("body"), dict):
                answered[job.key] = self._chat_answer(job.key, job.body, response["body"], 1, latency, "batch")
            else:
                why = (line or {}).get("error") or response.get("body") or "missing from the batch output"
                answered[job.key] = self._failed(job.key, "chat", self.model, BatchRequestError(str(why)[:500]), 1, latency, "batch")
        return answered

    async def _submit_or_resume_batch(
        self, client: openai.AsyncOpenAI, batch_key: str, items: list[tuple[str, dict]],
        url: str = "/v1/chat/completions", model: str | None = None,
    ):
        """Submit (custom_id, body) requests to `url` as one batch file, or pick up the
        batch already submitted for the same requests (its id is in `llm_batches`)."""
        existing = llm_store.get_batch(self._conn, batch_key)
        if existing and existing["status"] not in ("failed", "expired", "cancelled", "cancelling"):
            self.log.info(f"resuming OpenAI batch {existing['batch_id']} ({len(items)} requests, status {existing['status']})")
            return await client.batches.retrieve(existing["batch_id"])
        lines = [canonical_json({"custom_id": custom_id, "method": "POST", "url": url, "body": body}) for custom_id, body in items]
        payload = ("\n".join(lines) + "\n").encode()
        uploaded = await client.files.create(file=("requests.jsonl", io.BytesIO(payload)), purpose="batch")
        batch = await client.batches.create(input_file_id=uploaded.id, endpoint=url, completion_window="24h")
        llm_store.put_batch(
            self._conn, batch_key, batch.id, uploaded.id, model or self.model, self.endpoint.host, len(items), batch.status
        )
        self.log.info(f"submitted OpenAI batch {batch.id} to {url} with {len(items)} requests ({len(payload):,} bytes)")
        return batch

    async def _wait_for_batch(
        self, client: openai.AsyncOpenAI, batch_key: str, batch, progress: _Progress, model: str | None = None
    ):
        deadline = time.monotonic() + self.resource.batch_timeout_s
        last_log = 0.0
        while batch.status not in ("completed", "failed", "expired", "cancelled"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"batch {batch.id} still {batch.status} after {self.resource.batch_timeout_s:.0f}s; re-run to resume it")
            if time.monotonic() - last_log >= self.resource.progress_interval_s:
                counts = getattr(batch, "request_counts", None)
                done = getattr(counts, "completed", 0) if counts else 0
                self.log.info(f"batch {batch.id}: {batch.status}, {done}/{progress.total} done")
                last_log = time.monotonic()
            await asyncio.sleep(self.resource.batch_poll_interval_s)
            batch = await client.batches.retrieve(batch.id)
        llm_store.put_batch(
            self._conn, batch_key, batch.id, batch.input_file_id, model or self.model, self.endpoint.host,
            getattr(getattr(batch, "request_counts", None), "total", 0) or 0, batch.status, batch.output_file_id,
        )  # fmt: skip
        if batch.status != "completed":
            raise BatchRequestError(f"batch {batch.id} ended {batch.status}; re-run to submit a new one")
        return batch

    async def _read_batch_outputs(self, client: openai.AsyncOpenAI, batch) -> dict[str, dict]:
        outputs: dict[str, dict] = {}
        for file_id in (batch.output_file_id, getattr(batch, "error_file_id", None)):
            if not file_id:
                continue
            content = await client.files.content(file_id)
            for line in content.text.splitlines():
                if line.strip():
                    record = json.loads(line)
                    outputs.setdefault(record.get("custom_id"), record)
        return outputs

    # --- embeddings

    async def _embed_many(self, texts: list[str]) -> np.ndarray:
        model = self.embedding_model
        keys = [cache_key(self.endpoint.endpoint_id, "embedding", {"model": model, "input": text}) for text in texts]
        vectors: list[np.ndarray | None] = [None] * len(texts)
        async with self._session_connection() as conn:
            cached = llm_store.fetch_cached(conn, keys)
            todo: dict[str, list[int]] = {}
            for index, (text, key) in enumerate(zip(texts, keys)):
                if key in cached:
                    vector_json, usage_json = cached[key]
                    vectors[index] = np.asarray(json.loads(vector_json), dtype=np.float32)
                    usage = json.loads(usage_json) if usage_json else {}
                    self._ledger(
                        model=model, kind="embedding", prompt_tokens=0, completion_tokens=0, cached_tokens=0,
                        cost_usd=0.0, saved_usd=price_usd(model, usage.get("prompt_tokens", 0), 0), latency_s=0.0,
                        attempts=0, cache_hit=True, mode="cache", status="ok", error_class=None, cache_key=key,
                    )  # fmt: skip
                elif not text or not text.strip():
                    self._failed(key, "embedding", model, ValueError("empty text cannot be embedded"), 0, 0.0, "online")
                elif key in todo:
                    todo[key].append(index)
                else:
                    todo[key] = [index]
            if todo:
                client = await self._ensure_client()
                unique = list(todo)
                size = self.embed_batch_size
                chunks = [unique[i : i + size] for i in range(0, len(unique), size)]
                progress = _Progress(self, "embed", len(texts), done=len(texts) - len(unique))

                def store(found: dict[str, np.ndarray]) -> None:
                    for key, vector in found.items():
                        for index in todo[key]:
                            vectors[index] = vector

                if self.resource.batch_mode:
                    store(await self._embed_batch_api(client, model, [(chunk, [texts[todo[k][0]] for k in chunk]) for chunk in chunks]))
                    progress.done = len(texts)
                else:

                    async def handle(chunk: list[str]) -> None:
                        store(await self._embed_chunk(client, model, chunk, [texts[todo[k][0]] for k in chunk]))
                        progress.done += len(chunk)

                    await self._stream(chunks, handle, progress)
                progress.finish()
        dim = next((len(v) for v in vectors if v is not None), 1)
        out = np.full((len(texts), dim), np.nan, dtype=np.float32)
        for index, vector in enumerate(vectors):
            if vector is not None and len(vector) == dim:
                out[index] = vector
        return out

    async def _embed_chunk(self, client: openai.AsyncOpenAI, model: str, keys: list[str], inputs: list[str]) -> dict[str, np.ndarray]:
        est = sum(estimate_tokens(text) for text in inputs)
        reserve = price_usd(model, est, 0) or 0.0
        if not self._budget_allows(reserve):
            for key in keys:
                self._ledger_not_sent(model, "embedding", key, "online")
            return {}
        self._reserved_usd += reserve
        started = time.perf_counter()
        try:
            response, attempts, error = await self._with_retries(
                lambda: client.embeddings.create(model=model, input=inputs, encoding_format="float"), est
            )
        finally:
            self._reserved_usd -= reserve
        latency = time.perf_counter() - started
        if error is not None:
            for key in keys:
                self._failed(key, "embedding", model, error, attempts, latency, "online")
            return {}
        return self._embedding_answer(model, keys, inputs, response, attempts, latency, "online")

    def _embedding_answer(
        self, model: str, keys: list[str], inputs: list[str], response: Any, attempts: int, latency: float, mode: str
    ) -> dict[str, np.ndarray]:
        """Cache and account one embeddings response (an SDK object or a batch output dict):
        one vector per input, mean-pooled, the request's token usage shared by length."""
        if isinstance(response, dict):
            data = [(item.get("index", 0), item.get("embedding")) for item in response.get("data") or []]
            total_prompt = (response.get("usage") or {}).get("prompt_tokens")
        else:
            data = [(item.index, item.embedding) for item in (response.data if response is not None else [])]
            total_prompt = getattr(getattr(response, "usage", None), "prompt_tokens", None)
        if len(data) != len(inputs):
            error = EmbeddingShapeError(f"asked for {len(inputs)} embeddings, got {len(data)}")
            for key in keys:
                self._failed(key, "embedding", model, error, attempts, latency, mode)
            return {}
        total_chars = sum(max(1, len(text)) for text in inputs)
        found: dict[str, np.ndarray] = {}
        for key, text, (_, embedding) in zip(keys, inputs, sorted(data, key=lambda item: item[0])):
            vector = mean_pool(embedding)
            # Token usage is per request; each text gets its share by length.
            tokens = None if total_prompt is None else round(total_prompt * max(1, len(text)) / total_chars)
            cost = None if tokens is None else price_usd(model, tokens, 0, batch=mode == "batch")
            if cost is not None:
                self.totals.cost_usd += cost
            self._remember(
                key, model, "embedding", {"model": model, "input": text},
                json.dumps([round(float(x), 7) for x in vector]), {"prompt_tokens": tokens or 0},
            )  # fmt: skip
            self._ledger(
                model=model, kind="embedding", prompt_tokens=tokens or 0, completion_tokens=0, cached_tokens=0,
                cost_usd=cost, saved_usd=0.0, latency_s=latency, attempts=attempts, cache_hit=False, mode=mode,
                status="ok", error_class=None, cache_key=key,
            )  # fmt: skip
            found[key] = vector
        return found

    async def _embed_batch_api(
        self, client: openai.AsyncOpenAI, model: str, chunks: list[tuple[list[str], list[str]]]
    ) -> dict[str, np.ndarray]:
        """Embedding requests (one per chunk of texts) through the Batch API at the batch
        rate; resumable like chat batches. Budget: chunks are admitted while they fit."""
        admitted: list[tuple[str, list[str], list[str]]] = []
        running = 0.0
        for keys, inputs in chunks:
            each = price_usd(model, sum(estimate_tokens(text) for text in inputs), 0, batch=True) or 0.0
            if self._budget_allows(running + each):
                chunk_id = "emb-" + hashlib.sha256("\n".join(keys).encode()).hexdigest()[:32]
                admitted.append((chunk_id, keys, inputs))
                running += each
            else:
                for key in keys:
                    self._ledger_not_sent(model, "embedding", key, "batch")
        if not admitted:
            return {}
        items = [(chunk_id, {"model": model, "input": inputs, "encoding_format": "float"}) for chunk_id, _, inputs in admitted]
        batch_key = hashlib.sha256(("embeddings\n" + "\n".join(sorted(c for c, _ in items))).encode()).hexdigest()
        started = time.perf_counter()
        try:
            batch = await self._submit_or_resume_batch(client, batch_key, items, url="/v1/embeddings", model=model)
            batch = await self._wait_for_batch(client, batch_key, batch, _Progress(self, "embed", len(admitted)), model)
            outputs = await self._read_batch_outputs(client, batch)
        except Exception as exc:  # noqa: BLE001 -- recorded per text below
            latency = time.perf_counter() - started
            for _, keys, _ in admitted:
                for key in keys:
                    self._failed(key, "embedding", model, exc, 1, latency, "batch")
            return {}
        latency = time.perf_counter() - started
        found: dict[str, np.ndarray] = {}
        for chunk_id, keys, inputs in admitted:
            line = outputs.get(chunk_id)
            response = (line or {}).get("response") or {}
            if line and response.get("status_code") == 200 and isinstance(response.get("body"), dict):
                found.update(self._embedding_answer(model, keys, inputs, response["body"], 1, latency, "batch"))
            else:
                why = BatchRequestError(str((line or {}).get("error") or response.get("body") or "missing from the batch output")[:500])
                for key in keys:
                    self._failed(key, "embedding", model, why, 1, latency, "batch")
        return found


class UnexpectedResponse(LLMError):
    """The endpoint answered 200 with something that is not a chat completion."""


class BatchRequestError(LLMError):
    """A request failed inside an OpenAI batch (or the batch itself failed)."""


class EmbeddingShapeError(LLMError):
    """The embeddings endpoint returned a different number of vectors than inputs."""


class _Progress:
    """done/total, rate, ETA and dollars, logged every `progress_interval_s`."""

    def __init__(self, session: LLMSession, label: str, total: int, done: int = 0) -> None:
        self.session = session
        self.label = label
        self.total = total
        self.done = done
        self.start_done = done
        self.started = time.monotonic()

    def tick(self, result: ChatResult) -> None:
        self.done += 1

    def line(self) -> str:
        elapsed = max(1e-9, time.monotonic() - self.started)
        rate = (self.done - self.start_done) / elapsed
        remaining = self.total - self.done
        eta = f"{remaining / rate:,.0f}s" if rate > 0 else "?"
        t = self.session.totals
        return (
            f"llm {self.label}: {self.done}/{self.total} done, {rate:,.1f} req/s, ETA {eta}, "
            f"${t.cost_usd:,.4f} spent, {t.cache_hits} cache hits, {t.failed} failed"
        )

    async def ticker(self) -> None:
        interval = self.session.resource.progress_interval_s
        while True:
            await asyncio.sleep(interval)
            self.session.log.info(self.line())

    def finish(self) -> None:
        if time.monotonic() - self.started >= self.session.resource.progress_interval_s:
            self.session.log.info(self.line())


def _context_ids(context: Any) -> tuple[str | None, str | None, str | None]:
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
