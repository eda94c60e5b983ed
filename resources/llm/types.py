"""What pipeline code hands the LLM layer and what it gets back.

A request is plain data; a result always comes back, one per request and in request
order, whether the call worked or not: `status` says which (`ok`, `error`, or
`budget_exceeded` when the session's budget stopped it before it was sent).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import pydantic

Status = Literal["ok", "error", "budget_exceeded"]


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
    """A `complete_json` result: `parsed` is the validated pydantic object (None if the
    answer stayed malformed after one retry), `raw_text` the answer as received."""

    parsed: pydantic.BaseModel | None = None
    raw_text: str | None = None
