"""The worker pool that streams requests to the endpoint, and the progress line it logs.

`max_concurrency` workers share one iterator over the work: each takes the next item as
soon as it is free, so one slow answer never holds up a fixed batch. Meanwhile a
progress line (done/total, rate, ETA, dollars) goes to the run log every
`progress_interval_s`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from resources.llm.recorder import Totals


class Progress:
    """done/total, rate, ETA and dollars, logged every `interval_s`."""

    def __init__(self, label: str, total: int, totals: Totals, log: Any, interval_s: float, done: int = 0) -> None:
        self.label = label
        self.total = total
        self.done = done
        self.start_done = done
        self.totals = totals
        self.log = log
        self.interval_s = interval_s
        self.started = time.monotonic()

    def tick(self) -> None:
        self.done += 1

    def line(self) -> str:
        elapsed = max(1e-9, time.monotonic() - self.started)
        rate = (self.done - self.start_done) / elapsed
        remaining = self.total - self.done
        eta = f"{remaining / rate:,.0f}s" if rate > 0 else "?"
        t = self.totals
        return (
            f"llm {self.label}: {self.done}/{self.total} done, {rate:,.1f} req/s, ETA {eta}, "
            f"${t.cost_usd:,.4f} spent, {t.cache_hits} cache hits, {t.failed} failed"
        )

    async def ticker(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.log.info(self.line())

    def finish(self) -> None:
        # Short calls log nothing: the line is for calls long enough to watch.
        if time.monotonic() - self.started >= self.interval_s:
            self.log.info(self.line())


async def stream(
    items: Sequence[Any],
    handle: Callable[[Any], Awaitable[None]],
    max_concurrency: int,
    progress: Progress,
    after_each: Callable[[], None],
) -> None:
    """Run `handle` on every item with at most `max_concurrency` in flight; `after_each`
    runs after every item (the recorder's flush check)."""
    queue = iter(items)

    async def worker() -> None:
        for item in queue:
            await handle(item)
            after_each()

    workers = [asyncio.create_task(worker()) for _ in range(min(max_concurrency, len(items)))]
    ticker = asyncio.create_task(progress.ticker())
    try:
        await asyncio.gather(*workers)
    finally:
        ticker.cancel()
        for task in workers:
            task.cancel()
