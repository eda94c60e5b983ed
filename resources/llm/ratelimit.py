"""Client-side request and token rate limits (the provider's RPM / TPM), as token buckets.

Each bucket holds ten seconds' worth of allowance, so a burst at start-up cannot spend a
whole minute's quota in one go and trip the provider's own limiter.
"""

from __future__ import annotations

import asyncio
import time

BURST_SECONDS = 10.0


class TokenBucket:
    def __init__(self, per_minute: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * BURST_SECONDS)
        self.level = self.capacity
        self.stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_time(self, amount: float) -> float:
        """Seconds until `amount` is available (amounts above capacity wait for a full bucket)."""
        self._refill()
        needed = min(amount, self.capacity)
        if self.level >= needed:
            return 0.0
        return (needed - self.level) / self.rate

    def take(self, amount: float) -> None:
        self.level -= amount


class RateLimiter:
    """`await limiter.acquire(tokens)` before each request; None limits mean unlimited."""

    def __init__(self, requests_per_minute: float | None, tokens_per_minute: float | None) -> None:
        self.requests = TokenBucket(requests_per_minute) if requests_per_minute else None
        self.tokens = TokenBucket(tokens_per_minute) if tokens_per_minute else None
        self._lock = asyncio.Lock()

    @property
    def unlimited(self) -> bool:
        return self.requests is None and self.tokens is None

    async def acquire(self, tokens: int = 0) -> None:
        if self.unlimited:
            return
        async with self._lock:  # first come, first served
            while True:
                waits = [0.0]
                if self.requests:
                    waits.append(self.requests.wait_time(1))
                if self.tokens:
                    waits.append(self.tokens.wait_time(tokens))
                wait = max(waits)
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            if self.requests:
                self.requests.take(1)
            if self.tokens:
                self.tokens.take(tokens)
