"""When a failed HTTP attempt is worth repeating, and how long to wait first.

429, 5xx, timeouts, connection errors and a 200 whose body is not JSON (a proxy hiccup)
are retried with exponential backoff and full jitter, honouring the server's
Retry-After. The openai SDK's own retries are switched off (`transport.py`) so every
attempt is counted here and lands in `llm_calls.attempts`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import openai

from resources.llm.ratelimit import RateLimiter

logger = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int
    base_delay_s: float
    max_delay_s: float

    async def run(
        self, call: Callable[[], Awaitable[Any]], limiter: RateLimiter | None, est_tokens: int
    ) -> tuple[Any, int, BaseException | None]:
        """(response, attempts, None) or (None, attempts, last error); never raises for a
        failed call, so the caller can record it."""
        attempt = 0
        while True:
            attempt += 1
            if limiter is not None:
                await limiter.acquire(est_tokens)
            try:
                return await call(), attempt, None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 -- every failure becomes a recorded row
                if not is_retryable(exc) or attempt > self.max_retries:
                    return None, attempt, exc
                delay = retry_after_s(exc)
                if delay is None:
                    delay = backoff_delay(attempt, self.base_delay_s, self.max_delay_s)
                logger.debug("retrying after %s (attempt %d, %.2fs)", type(exc).__name__, attempt, delay)
                await asyncio.sleep(min(delay, self.max_delay_s))
