"""What an LLM call costs, in US dollars.

Prices come from `genai-prices` (pydantic's maintained price table, the same data
Logfire uses); the override table below prices models it does not know: the bundled
SmolLM2 aliases (free, wall time recorded instead) and any self-hosted model you add.
The `llm` resource's `price_overrides` setting (passed here as `overrides`) comes first:
a fine-tuned or unlisted model is priced there. A model with no known price is priced
`None` (unknown) with one clear warning per model, never a silent zero; a session with a
budget on a remote endpoint refuses to start on one (`session.py`).

`estimate_tokens` is the rough prompt size used before a call is made: for the cost
estimate, the budget's reservation and the rate limiter's token bucket.
"""

from __future__ import annotations

import functools
import logging
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

import genai_prices

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelPrice:
    """Dollars per million tokens. `batch_discount` is the share of the price paid
    through a provider's batch API (OpenAI Batch API: 50% off)."""

    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None = None
    batch_discount: float = 0.5


# Project overrides, looked up before genai-prices (exact model names, lower case).
# Local and self-hosted models cost nothing per token; their wall time is in llm_calls.latency_s.
PRICE_OVERRIDES: dict[str, ModelPrice] = {
    "smollm2-135m-instruct": ModelPrice(0.0, 0.0),  # bundled llama.cpp chat alias
    "smollm2-135m-embed": ModelPrice(0.0, 0.0),  # bundled llama.cpp embedding alias
}



class Pricer(Protocol):
    """`price_usd` with a session's overrides bound (what chat and embeddings call)."""

    def __call__(
        self, model: str, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0, batch: bool = False
    ) -> float | None: ...


_warned_unknown: set[str] = set()
_warn_lock = threading.Lock()


def _warn_unknown_once(model: str, why: str) -> None:
    with _warn_lock:
        if model in _warned_unknown:
            return
        _warned_unknown.add(model)
    logger.warning(
        "No price known for model %r (%s): its cost is recorded as unknown (NULL), not $0. "
        "Add it to resources.llm.pricing.PRICE_OVERRIDES to price it.",
        model,
        why,
    )


def price_usd(
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int = 0,
    batch: bool = False,
    overrides: Mapping[str, ModelPrice] | None = None,
) -> float | None:
    """Dollar cost of one call, or None when the model's price is unknown.

    `cached_tokens` (provider prompt-cache reads, part of `prompt_tokens`) are billed at
    the cached-input rate where one exists. `batch=True` prices at the batch-API rate.
    `overrides` (lower-case model name -> price) win over every other source.
    """
    override = (overrides or {}).get(model.lower()) or PRICE_OVERRIDES.get(model.lower())
    if override is not None:
        return _override_price(override, prompt_tokens, completion_tokens, cached_tokens, batch)
    if _is_tiered(model):
        return _exact_price(model, int(prompt_tokens), int(completion_tokens), int(cached_tokens), batch)
    rates = _per_token_rates(model, batch)
    if rates is None:
        return None
    input_rate, output_rate, cached_rate = rates
    cached = min(int(cached_tokens), int(prompt_tokens))
    return (int(prompt_tokens) - cached) * input_rate + cached * cached_rate + int(completion_tokens) * output_rate


# A probe size well inside every provider's first context-length tier.
_PROBE_TOKENS = 1_000


@functools.lru_cache(maxsize=256)
def _per_token_rates(model: str, batch: bool) -> tuple[float, float, float] | None:
    """(input, output, cached input) dollars per token from genai-prices, looked up once
    per model: calc_price matches model names each call (~0.4 ms), too slow per request.
    Valid for models whose price is linear in tokens (`_is_tiered` says which are not)."""
    calculations = [
        _calc(model, {"input_tokens": _PROBE_TOKENS}, batch),
        _calc(model, {"output_tokens": _PROBE_TOKENS}, batch),
        _calc(model, {"input_tokens": _PROBE_TOKENS, "cache_read_tokens": _PROBE_TOKENS}, batch),
    ]
    if any(c is None for c in calculations):
        return None
    input_rate, output_rate, cached_rate = (float(c.total_price) / _PROBE_TOKENS for c in calculations)
    if batch and not _batch_listed(model):
        # genai-prices has no batch variant for this model: apply the usual 50% batch rate.
        input_rate, output_rate, cached_rate = input_rate * 0.5, output_rate * 0.5, cached_rate * 0.5
    return input_rate, output_rate, cached_rate


@functools.lru_cache(maxsize=256)
def _batch_listed(model: str) -> bool:
    """Whether genai-prices has a batch price for the model (else we apply 50%)."""
    probe = {"input_tokens": _PROBE_TOKENS, "output_tokens": _PROBE_TOKENS}
    batch, online = _calc(model, probe, True), _calc(model, probe, False)
    return batch is not None and online is not None and batch.total_price != online.total_price


@functools.lru_cache(maxsize=256)
def _is_tiered(model: str) -> bool:
    """Whether the model's price per token changes with the prompt's length (context-length
    tiers, e.g. Gemini 2.5 Pro and Claude Sonnet 4.5 above 200k prompt tokens): compare the
    per-token price of a small prompt with that of a 1M-token prompt."""
    if PRICE_OVERRIDES.get(model.lower()) is not None:
        return False
    small, large = _calc(model, {"input_tokens": _PROBE_TOKENS}, False), _calc(model, {"input_tokens": 1_000_000}, False)
    if small is None or large is None:
        return False
    return abs(float(small.total_price) * (1_000_000 / _PROBE_TOKENS) - float(large.total_price)) > 1e-9


def _exact_price(model: str, prompt_tokens: int, completion_tokens: int, cached_tokens: int, batch: bool) -> float | None:
    """genai-prices' own calculation for this call's usage (tiers applied), ~0.4 ms."""
    usage = {"input_tokens": prompt_tokens, "output_tokens": completion_tokens}
    if cached_tokens:
        usage["cache_read_tokens"] = min(cached_tokens, prompt_tokens)
    price = _calc(model, usage, batch)
    if price is None:
        return None
    dollars = float(price.total_price)
    return dollars * 0.5 if batch and not _batch_listed(model) else dollars


def _calc(model: str, usage_kwargs: dict, batch: bool):
    """genai-prices' calculation, trying the model name alone and then as an OpenAI model
    (the auto-match misses some OpenAI ids, e.g. text-embedding-3-small)."""
    last_error: Exception | None = None
    for provider_id in (None, "openai"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return genai_prices.calc_price(
                    genai_prices.Usage(**usage_kwargs),
                    model_ref=model,
                    provider_id=provider_id,
                    price_context={"processing": "batch"} if batch else None,
                )
        except LookupError as exc:
            last_error = exc
    _warn_unknown_once(model, str(last_error))
    return None


def _override_price(
    price: ModelPrice, prompt_tokens: int, completion_tokens: int, cached_tokens: int, batch: bool
) -> float:
    cached = min(cached_tokens, prompt_tokens) if price.cached_input_per_mtok is not None else 0
    dollars = (
        Decimal(prompt_tokens - cached) * Decimal(str(price.input_per_mtok))
        + Decimal(cached) * Decimal(str(price.cached_input_per_mtok or 0.0))
        + Decimal(completion_tokens) * Decimal(str(price.output_per_mtok))
    ) / Decimal(1_000_000)
    if batch:
        dollars *= Decimal(str(price.batch_discount))
    return float(dollars)


def estimate_tokens(messages: Sequence[dict] | str) -> int:
    """Rough prompt size (4 characters a token) for rate limiting and budget reservations."""
    if isinstance(messages, str):
        return max(1, len(messages) // 4)
    chars = sum(len(str(m.get("content", ""))) for m in messages)
    return max(1, chars // 4 + 4 * len(messages))


def price_known(model: str, overrides: Mapping[str, ModelPrice] | None = None) -> bool:
    """Whether `price_usd(model, ...)` returns a number (warns once if not)."""
    return price_usd(model, 1, 1, overrides=overrides) is not None
