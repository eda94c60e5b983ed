"""`LLMResource`: the Dagster resource (key `llm`) every LLM-calling asset asks for.

Its fields are the settings that last (endpoint, models, concurrency, retries, budget,
batch mode); an asset opens one session per step with `llm.session(context, warehouse)`
and makes all its calls through it (`session.py`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import dagster as dg
from pydantic import Field

from resources.llm.endpoint import (
    CHAT_MODEL_ENV,
    DEFAULT_REMOTE_CHAT_MODEL,
    DEFAULT_REMOTE_EMBEDDING_MODEL,
    EMBEDDING_MODEL_ENV,
    ENV_REFERENCE_PREFIX,
    OPENAI_API_KEY_ENV,
    OPENAI_BASE_URL_ENV,
    resolve_endpoint,
)
from resources.llm.errors import LLMConfigError
from resources.llm.session import LLMSession
from resources.warehouse import Warehouse


class ModelPriceSetting(dg.Config):
    """What one model costs, in US dollars per million tokens."""

    input_usd_per_mtok: float = Field(description="Prompt tokens.")
    output_usd_per_mtok: float = Field(description="Completion tokens.")
    cached_input_usd_per_mtok: float | None = Field(default=None, description="Prompt-cache reads (None = input rate).")
    batch_discount: float = Field(default=0.5, description="Share of the price paid through the Batch API.")


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
        description=f"The environment variable holding the API key, as 'env:NAME' (in code also "
        f"dg.EnvVar('NAME')); unset = env {OPENAI_API_KEY_ENV}. A literal key is refused, for every endpoint "
        "(it would be stored with the run).",
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
    max_cost_usd: float | None = Field(
        default=10.0,
        description="Budget per materialization in USD (None = none). With a remote endpoint, every model used must "
        "have a price (genai-prices or price_overrides), else the session refuses to start.",
    )
    price_overrides: dict[str, ModelPriceSetting] = Field(
        default={},
        description="Prices by model name (fine-tuned, self-hosted or unlisted models); they win over genai-prices.",
    )
    batch_mode: bool = Field(default=False, description="Send uncached chat and embedding requests through the OpenAI Batch API (50% price).")
    batch_poll_interval_s: float = Field(default=30.0, description="Batch API polling interval.")
    batch_timeout_s: float = Field(default=26 * 3600.0, description="Give up waiting for a batch after this long.")
    structured_output_mode: str = Field(
        default="auto",
        description="auto | json_schema (OpenAI strict) | json_object_schema (llama.cpp) | json_object.",
    )
    embed_batch_size: int = Field(default=64, ge=1, description="Texts per embeddings request.")
    cluster_batch_size: int = Field(
        default=256, ge=1,
        description="Requests per Ray task when a generation step's calls run on a Ray cluster (RAY_ADDRESS); "
        "unused in-process and for the bundled local model.",
    )
    cache_namespace: str | None = Field(
        default=None, description="Replaces the endpoint URL in cache keys (e.g. a server that moved)."
    )
    progress_interval_s: float = Field(default=5.0, description="Seconds between progress lines in the run log.")
    local_model_log_dir: str = Field(default="data/logs", description="Where the local llama.cpp server logs.")
    journal_dir: str | None = Field(
        default=None,
        description="Where answers are logged locally the moment they arrive, until they are in the lake "
        "(env SYNTH_ASSETS_LLM_JOURNAL_DIR; default: llm_journal/ beside the lake's catalog). A killed run's log "
        "is replayed by the next session on the same machine, so no received answer is paid for twice.",
    )
    local_startup_timeout_s: float = Field(default=120.0, description="How long to wait for the local server.")

    def __init__(self, **settings: Any) -> None:
        # dg.EnvVar('NAME') becomes the reference 'env:NAME', resolved when a session starts,
        # so Dagster stores the variable's name in the run's config, never the key itself.
        api_key = settings.get("api_key")
        if isinstance(api_key, dg.EnvVar):
            settings["api_key"] = f"{ENV_REFERENCE_PREFIX}{api_key.env_var_name}"
        super().__init__(**settings)

    @contextmanager
    def session(self, context: Any = None, warehouse: Warehouse | None = None) -> Iterator[LLMSession]:
        """One session per asset step: starts the local model if needed, owns the HTTP
        client and event loop, and raises dg.Failure on exit if the budget stopped calls."""
        if warehouse is None:
            raise LLMConfigError("llm.session(context, warehouse) needs the warehouse resource for its cache and ledger")
        with ExitStack() as stack:
            endpoint = resolve_endpoint(
                base_url=self.base_url,
                api_key=self.api_key,
                model=self.model,
                embedding_model=self.embedding_model,
                cache_namespace=self.cache_namespace,
                local_model_log_dir=self.local_model_log_dir,
                local_startup_timeout_s=self.local_startup_timeout_s,
                stack=stack,
            )
            session = LLMSession(self, context, warehouse, endpoint)
            stack.callback(session.close)
            yield session
            session.close()
            session.raise_if_budget_stopped()
