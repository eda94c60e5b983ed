"""Rate limits that hold for a whole Ray cluster, not per process.

A provider's RPM/TPM limit belongs to the account, so N worker processes each pacing
themselves to the limit would send N times too much. On a cluster, one named Ray actor
per endpoint (`synth_assets.rate:<endpoint_id>`, detached, so every job on the cluster
shares it) keeps the schedule, and each process asks it for a slot:

    limiter = ClusterRateLimiter(endpoint_id, requests_per_minute=500, tokens_per_minute=200_000)
    await limiter.acquire(tokens=1200)     # same interface as ratelimit.RateLimiter

The actor never blocks: `reserve` books the earliest start at which both the request and
the token schedule allow the call (a virtual-clock scheduler, GCRA-style; the transport
asks for no burst, so the cluster sends at the limit's pace from the first request and
never above it, where one process's limiter allows a ten-second burst), and returns how long the caller must sleep
before sending. Sleeping happens in the caller, so one actor serves thousands of
waiting requests. Reservations are booked in arrival order, so the observed rate never
exceeds the limit by more than the burst, however many processes ask.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from resources.llm.ratelimit import BURST_SECONDS

ACTOR_PREFIX = "synth_assets.rate:"
# The cluster is scheduled at 99% of the configured limit: requests cross the network to
# the provider with a few milliseconds of jitter, and a schedule exactly at the limit is
# then measured just above it (+0.1% over 64 requests, measured with bench/ray.py).
HEADROOM = 0.99
NAMESPACE = "synth_assets"


class RateSchedule:
    """The schedule itself, plain Python (the actor wraps one; tests use it directly).

    Each limit is a bucket of `burst` seconds of credit, full at start, refilled at the
    limit's rate. `paid_off[kind]` is the virtual time at which everything booked so far
    is paid off (the bucket is full again). A call costing `cost` seconds of credit
    (one request = 60/rpm s, n tokens = 60*n/tpm s) may start at the earliest time `s`
    at which the debt, paid_off - s + cost, fits in the bucket; it then moves paid_off
    on by its cost. A call dearer than the whole bucket waits for a full one."""

    def __init__(self, requests_per_minute: float | None, tokens_per_minute: float | None,
                 burst_seconds: float = BURST_SECONDS) -> None:
        self.unit_s = {"requests": 60.0 / requests_per_minute if requests_per_minute else 0.0,
                       "tokens": 60.0 / tokens_per_minute if tokens_per_minute else 0.0}
        self.bucket_s = {kind: max(unit, burst_seconds) for kind, unit in self.unit_s.items()}
        self.paid_off = {"requests": 0.0, "tokens": 0.0}

    def reserve(self, tokens: int, now: float) -> float:
        """Book one request of `tokens`; seconds the caller waits before sending it."""
        costs = {"requests": self.unit_s["requests"], "tokens": tokens * self.unit_s["tokens"]}
        start = now
        for kind, cost in costs.items():
            if cost:
                start = max(start, self.paid_off[kind] + min(cost, self.bucket_s[kind]) - self.bucket_s[kind])
        for kind, cost in costs.items():
            if cost:
                self.paid_off[kind] = max(self.paid_off[kind], start) + cost
        return start - now


def _actor_class() -> Any:
    import ray

    @ray.remote(num_cpus=0, max_restarts=-1)
    class RateActor:
        def __init__(self, requests_per_minute: float | None, tokens_per_minute: float | None,
                     burst_seconds: float) -> None:
            self.schedule = RateSchedule(requests_per_minute, tokens_per_minute, burst_seconds)

        def reserve(self, tokens: int) -> float:
            return self.schedule.reserve(tokens, time.time())

    return RateActor


def rate_actor(endpoint_id: str, requests_per_minute: float | None, tokens_per_minute: float | None,
               burst_seconds: float = BURST_SECONDS) -> Any:
    """The cluster's one limiter actor for this endpoint, created by whoever asks first."""
    return _actor_class().options(
        name=f"{ACTOR_PREFIX}{endpoint_id}", namespace=NAMESPACE, lifetime="detached", get_if_exists=True
    ).remote(requests_per_minute, tokens_per_minute, burst_seconds)


class ClusterRateLimiter:
    """`await limiter.acquire(tokens)` before each request, paced for the whole cluster."""

    def __init__(self, endpoint_id: str, requests_per_minute: float | None, tokens_per_minute: float | None,
                 burst_seconds: float = BURST_SECONDS) -> None:
        self.unlimited = not requests_per_minute and not tokens_per_minute
        self._actor = None if self.unlimited else rate_actor(
            endpoint_id,
            requests_per_minute * HEADROOM if requests_per_minute else None,
            tokens_per_minute * HEADROOM if tokens_per_minute else None,
            burst_seconds,
        )

    async def acquire(self, tokens: int = 0) -> None:
        if self._actor is None:
            return
        delay = await self._actor.reserve.remote(tokens)
        if delay > 0:
            await asyncio.sleep(delay)


# --------------------------------------------------------------------------- the budget
BUDGET_PREFIX = "synth_assets.budget:"


class BudgetLedger:
    """A materialization's dollar budget across every process that spends for it, plain
    Python (the actor wraps one). Each process reports its own absolute spent and reserved
    dollars with every admission request, so a report lost to a crash never drifts the sum,
    and an admitted reservation counts at once, before the process reports it back."""

    def __init__(self, max_cost_usd: float) -> None:
        self.max_cost_usd = max_cost_usd
        self.spent: dict[str, float] = {}
        self.reserved: dict[str, float] = {}

    def admit(self, worker: str, spent_usd: float, reserved_usd: float, reserve_usd: float) -> bool:
        self.spent[worker], self.reserved[worker] = spent_usd, reserved_usd
        committed = sum(self.spent.values()) + sum(self.reserved.values())
        # as Budget.allows: one request dearer than the whole budget may go first
        if committed + reserve_usd > self.max_cost_usd and (committed > 0 or reserve_usd > self.max_cost_usd):
            return False
        self.reserved[worker] = reserved_usd + reserve_usd
        return True

    def settle(self, worker: str, spent_usd: float) -> float:
        """A process is done: its spending is final and it holds no reservation. Returns the
        materialization's spending so far."""
        self.spent[worker], self.reserved[worker] = spent_usd, 0.0
        return sum(self.spent.values())


def _budget_actor_class() -> Any:
    import ray

    @ray.remote(num_cpus=0)
    class BudgetActor:
        def __init__(self, max_cost_usd: float) -> None:
            self.ledger = BudgetLedger(max_cost_usd)

        def admit(self, worker: str, spent_usd: float, reserved_usd: float, reserve_usd: float) -> bool:
            return self.ledger.admit(worker, spent_usd, reserved_usd, reserve_usd)

        def settle(self, worker: str, spent_usd: float) -> float:
            return self.ledger.settle(worker, spent_usd)

    return BudgetActor


def budget_actor(scope: str, max_cost_usd: float) -> Any:
    """The one budget actor of a materialization (`scope`: run id, asset, partition).
    Detached, so it outlives the process that happened to create it; it holds a few
    floats per worker."""
    return _budget_actor_class().options(
        name=f"{BUDGET_PREFIX}{scope}", namespace=NAMESPACE, lifetime="detached", get_if_exists=True
    ).remote(max_cost_usd)
