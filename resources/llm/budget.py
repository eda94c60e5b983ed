"""The session's spending limit (`max_cost_usd`, one materialization).

Before a request is sent, its most expensive outcome (the prompt estimate at the input
rate plus `max_tokens` at the output rate) is checked against what was spent plus what
requests in flight have reserved. An answer that came back without usage is charged
that reservation, so the limit binds even then; a model with no price at all cannot
reach a session with a budget on a remote endpoint (a configuration error, `session.py`). Once the budget is reached no new request is
sent: the rest come back with status `budget_exceeded`, and the session raises
`dg.Failure` when the caller leaves it (after writing what was done). Re-running resumes
from the cache, where every answer already paid for is stored.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from resources.llm.recorder import Totals


class Budget:
    def __init__(self, max_cost_usd: float | None, totals: Totals, log: Any) -> None:
        self.max_cost_usd = max_cost_usd
        self.totals = totals  # spent so far: the recorder's running sum
        self.log = log
        self.reserved_usd = 0.0
        self.unpriced_usd = 0.0  # reservations charged for answers without usage
        self.stopped = False

    @property
    def spent_usd(self) -> float:
        return self.totals.cost_usd + self.unpriced_usd

    def charge_unpriced(self, reserve_usd: float) -> None:
        """An answer whose cost is unknown (no usage came back): count its reservation."""
        self.unpriced_usd += reserve_usd

    def allows(self, reserve_usd: float) -> bool:
        """Whether a request estimated at `reserve_usd` may be sent. A refusal sets `stopped`
        (the session fails when it ends); the first one logs a warning."""
        budget = self.max_cost_usd
        if budget is None:
            return True
        if self.spent_usd + self.reserved_usd + reserve_usd > budget and (
            self.spent_usd + self.reserved_usd > 0 or reserve_usd > budget
        ):
            if not self.stopped:
                self.log.warning(
                    f"LLM budget max_cost_usd=${budget:,.2f} reached (spent ${self.totals.cost_usd:,.4f}): "
                    "no new calls will be sent in this materialization"
                )
            self.stopped = True
            return False
        return True

    @contextmanager
    def reserve(self, reserve_usd: float) -> Iterator[None]:
        """Hold `reserve_usd` against the budget while a request is in flight."""
        self.reserved_usd += reserve_usd
        try:
            yield
        finally:
            self.reserved_usd -= reserve_usd


class ClusterBudget(Budget):
    """The same limit for a materialization whose requests come from many processes of a Ray
    cluster: every admission is decided by the materialization's one budget actor
    (`cluster_limits.BudgetLedger`), from every process's spent and reserved dollars."""

    def __init__(self, max_cost_usd: float, totals: Totals, log: Any, scope: str, worker: str) -> None:
        super().__init__(max_cost_usd, totals, log)
        from resources.llm.cluster_limits import budget_actor

        self.scope = scope
        self.worker = worker
        self._actor = budget_actor(scope, max_cost_usd)

    def allows(self, reserve_usd: float) -> bool:
        import ray

        if self.stopped:
            return False
        if ray.get(self._actor.admit.remote(self.worker, self.spent_usd, self.reserved_usd, reserve_usd)):
            return True
        self.log.warning(
            f"LLM budget max_cost_usd=${self.max_cost_usd:,.2f} reached across the cluster for {self.scope}: "
            "no new calls will be sent from this process"
        )
        self.stopped = True
        return False

    def settle(self) -> None:
        import ray

        ray.get(self._actor.settle.remote(self.worker, self.spent_usd))

    def release(self) -> None:
        """Remove the materialization's actor (detached: it would outlive the run on a
        cluster that outlives the step). Called by the step's own session when it closes."""
        import ray

        try:
            ray.kill(self._actor)
        except Exception:  # noqa: BLE001 -- best effort: gone with its cluster already
            pass
