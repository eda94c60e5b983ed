"""The LLM layer: one Dagster resource that owns every call to a language model.

    from resources.llm import LLMResource, ChatRequest, ChatResult, StructuredResult

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
  session (`endpoint.py`, `local_model.py`).
- **Cache before use.** Each request is keyed by a sha256 of (endpoint without
  credentials, model, messages, sampling params incl. response_format, sample_index).
  An answer is appended to a local journal (flushed to the OS) the moment it arrives,
  before the caller sees it, and reaches `llm_cache` within half a second by a flusher
  thread of its own, whatever other requests are doing; a failed write is retried, never
  dropped, and a session's end (an error, a Dagster run termination) drains the buffer.
  A SIGKILLed run's journal is replayed by the next session on the lake, so only the
  requests in flight are paid again. Cache hits for a whole batch are fetched with one
  query and cost $0 (`store.py`, `journal.py`, `recorder.py`).
- **Ledger.** Every request is one row in `llm_calls` (tokens, dollars from genai-prices,
  latency, retries, cache hit, status), for the cost report (`recorder.py`, `pricing.py`).
- **Throughput.** A pool of `max_concurrency` workers streams through the requests (no
  fixed batches), an RPM/TPM limiter paces them, and 429 / 5xx / timeouts / connection
  errors back off exponentially with jitter, honouring Retry-After. The SDK's own retries
  are off so every attempt is counted here (`workers.py`, `ratelimit.py`, `retries.py`,
  `transport.py`).
- **Budget.** `max_cost_usd` per session (one materialization). Each request reserves its
  most expensive outcome (max_tokens at the output rate) before it is sent; when spent, no
  new call is issued; the remaining results come back with status `budget_exceeded`, and
  leaving the `with` block raises `dg.Failure` after the caller has written what was done.
  With a remote endpoint, a model without a price (genai-prices or the resource's
  `price_overrides`) is a configuration error before any call. Re-running resumes from
  the cache (`budget.py`).
- **Structured output.** `complete_json` constrains answers to a pydantic schema and
  retries a malformed one once (`structured.py`).
- **Batch API.** With `batch_mode=True` uncached chat and embedding requests go through
  OpenAI's Batch API at half price (embeddings: one batch line per chunk of texts). The
  intent is recorded in `llm_batches` before the batch is created and the batch carries
  its key in provider metadata (found again after a kill); `llm_batch_requests` maps each
  request to its batch, so a changed set resumes open batches and submits only the rest;
  output and error files are read for every terminal status (`batch.py`).

The api key is configured only as a reference (`env:NAME` / `dg.EnvVar`), and never
logged, printed or stored; any 4+ character piece of it is masked in error text.

Modules, from the bottom up; each imports only modules before it in this list (session
names LLMResource in annotations only, under TYPE_CHECKING):
errors, types, pricing, ratelimit, local_model, endpoint, store, journal, recorder, budget,
retries, transport, workers, batch, chat, embeddings, structured, session, resource.
"""

from resources.llm.pricing import estimate_tokens
from resources.llm.resource import LLMResource
from resources.llm.types import ChatRequest, ChatResult, StructuredResult

__all__ = ["LLMResource", "ChatRequest", "ChatResult", "StructuredResult", "estimate_tokens"]
