"""The HTTP side of a session: one `AsyncOpenAI` client, paced and retried.

The official `openai` client over the aiohttp transport talks to any OpenAI-compatible
endpoint. It is created on first use, on the session's event loop, with the SDK's own
retries off (`retries.py` owns them, so every attempt is counted) and a connection pool
large enough to keep one warm connection per worker. Every call waits for the RPM/TPM
limiter before each attempt: this process's own (`ratelimit.py`), or, in a process
connected to a Ray cluster (a Ray worker, or a driver after `ray.init`), the cluster's
one schedule for the endpoint (`cluster_limits.py`), so the limit holds for the whole
cluster however many processes send.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import openai

try:  # openai>=3 ships on httpx2; older releases on httpx
    import httpx2 as _httpx
except ImportError:  # pragma: no cover
    import httpx as _httpx

import sys

from resources.llm.endpoint import Endpoint
from resources.llm.ratelimit import RateLimiter
from resources.llm.retries import RetryPolicy


def on_ray_cluster() -> bool:
    """Whether this process is connected to a Ray cluster (never imports Ray itself)."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def limiter_for(endpoint: Endpoint, requests_per_minute: int | None, tokens_per_minute: int | None) -> Any:
    if (requests_per_minute or tokens_per_minute) and on_ray_cluster():
        from resources.llm.cluster_limits import ClusterRateLimiter

        return ClusterRateLimiter(endpoint.endpoint_id, requests_per_minute, tokens_per_minute, burst_seconds=0)
    return RateLimiter(requests_per_minute, tokens_per_minute)


class Transport:
    def __init__(
        self,
        endpoint: Endpoint,
        timeout_s: float,
        pool_size: int,
        requests_per_minute: int | None,
        tokens_per_minute: int | None,
        retry_policy: RetryPolicy,
    ) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.pool_size = pool_size
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self.retry_policy = retry_policy
        self._client: openai.AsyncOpenAI | None = None
        self._limiter: RateLimiter | None = None

    @property
    def started(self) -> bool:
        return self._client is not None

    async def client(self) -> openai.AsyncOpenAI:
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
                        max_connections=max(100, self.pool_size),
                        max_keepalive_connections=max(20, self.pool_size),
                    ),
                ),
            )
            self._limiter = limiter_for(self.endpoint, self.requests_per_minute, self.tokens_per_minute)
        return self._client

    async def send(self, call: Callable[[], Awaitable[Any]], est_tokens: int) -> tuple[Any, int, BaseException | None]:
        """(response, attempts, None) or (None, attempts, last error), paced and retried."""
        return await self.retry_policy.run(call, self._limiter, est_tokens)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
