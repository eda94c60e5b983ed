"""Chat completions: cache lookup, one call per distinct request, answers recorded.

For a list of requests: build each request body (the resource's sampling defaults filled
in, `seed + sample_index` so each sample is reproducible), key it (`store.cache_key`),
answer every cached key with one query at $0, send each distinct uncached body once
(a request repeated in the same call is answered by the first one's response), online
through the worker pool or through the Batch API, and return results in request order.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import openai

from resources.llm import store
from resources.llm.batch import BatchJobs, BatchLine, admit_within_budget, output_body
from resources.llm.budget import Budget
from resources.llm.errors import BatchRequestError, UnexpectedResponse
from resources.llm.pricing import Pricer, estimate_tokens
from resources.llm.recorder import Recorder
from resources.llm.relay import Relay
from resources.llm.transport import Transport
from resources.llm.types import ChatRequest, ChatResult, Status
from resources.llm.workers import Progress, stream

# Completion tokens reserved against the budget when a request sets no max_tokens.
DEFAULT_COMPLETION_ESTIMATE = 256


@dataclass
class _Pending:
    """One uncached request on its way to the endpoint."""

    index: int
    key: str
    body: dict
    prompt_tokens: int  # estimated
    completion_tokens: int  # max_tokens: the most the answer can cost

    @property
    def est_tokens(self) -> int:
        """What the TPM limiter counts."""
        return self.prompt_tokens + self.completion_tokens


class ChatCompletions:
    def __init__(
        self,
        *,
        model: str,
        endpoint_id: str,
        temperature: float | None,
        max_tokens: int | None,
        seed: int | None,
        batch_mode: bool,
        max_concurrency: int,
        progress_interval_s: float,
        recorder: Recorder,
        budget: Budget,
        transport: Transport,
        batches: BatchJobs,
        price: Pricer,
        log: Any,
    ) -> None:
        self.price = price
        self.model = model
        self.endpoint_id = endpoint_id
        self.relay: Relay | None = None  # set by the session in a Ray task
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.seed = seed
        self.batch_mode = batch_mode
        self.max_concurrency = max_concurrency
        self.progress_interval_s = progress_interval_s
        self.recorder = recorder
        self.budget = budget
        self.transport = transport
        self.batches = batches
        self.log = log

    def body(self, request: ChatRequest, response_format: dict | None, sample_offset: int = 0) -> tuple[dict, int]:
        """The API request body for `request`, and the sample index it is keyed under."""
        sample_index = request.sample_index + sample_offset
        body: dict[str, Any] = {"model": self.model, "messages": request.messages}
        temperature = request.temperature if request.temperature is not None else self.temperature
        max_tokens = request.max_tokens if request.max_tokens is not None else self.max_tokens
        if temperature is not None:
            body["temperature"] = temperature
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if self.seed is not None:
            body["seed"] = self.seed + sample_index
        if response_format is not None:
            body["response_format"] = response_format
        return body, sample_index

    async def complete(
        self, requests: list[ChatRequest], response_format: dict | None, label: str, sample_offset: int = 0
    ) -> list[ChatResult]:
        """One result per request, in order; never raises for a failed request."""
        bodies = []
        keys = []
        for request in requests:
            body, sample_index = self.body(request, response_format, sample_offset)
            bodies.append(body)
            keys.append(store.cache_key(self.endpoint_id, "chat", body, sample_index))
        results: list[ChatResult | None] = [None] * len(requests)
        async with self.recorder.session_connection() as conn:
            cached = store.fetch_cached(conn, keys)
            pending: dict[str, _Pending] = {}
            followers: dict[str, list[int]] = {}
            for index, (request, key, body) in enumerate(zip(requests, keys, bodies)):
                if key in cached:
                    text, usage_json = cached[key]
                    results[index] = self._cached_result(key, text, usage_json, request.row_id)
                elif key in pending:
                    followers.setdefault(key, []).append(index)  # same request twice: one call
                else:
                    completion = body.get("max_tokens") or DEFAULT_COMPLETION_ESTIMATE
                    pending[key] = _Pending(index, key, body, estimate_tokens(request.messages), completion)
            if pending:
                done = len(requests) - len(pending) - sum(map(len, followers.values()))
                progress = Progress(label, len(requests), self.recorder.totals, self.log, self.progress_interval_s, done=done)
                if self.batch_mode:
                    answered = await self._batch_api(list(pending.values()), progress)
                else:
                    answered = await self._online(list(pending.values()), progress)
                progress.finish()
                for key, result in answered.items():
                    job = pending[key]
                    result.row_id = requests[job.index].row_id
                    results[job.index] = result
                    for follower in followers.get(key, []):
                        copy = ChatResult(**vars(result))
                        copy.row_id = requests[follower].row_id
                        results[follower] = self._duplicate_result(copy)
        return results  # type: ignore[return-value]

    def _cached_result(self, key: str, text: str, usage_json: str | None, row_id: str | None) -> ChatResult:
        usage = json.loads(usage_json) if usage_json else {}
        prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
        saved = self.price(self.model, prompt, completion, usage.get("cached_tokens", 0))
        status: Status = "ok" if text else "error"
        self.recorder.ledger(
            model=self.model, kind="chat", prompt_tokens=0, completion_tokens=0, cached_tokens=0,
            cost_usd=0.0, saved_usd=saved, latency_s=0.0, attempts=0, cache_hit=True, mode="cache",
            status=status, error_class=None if text else "EmptyCompletion", cache_key=key,
        )  # fmt: skip
        return ChatResult(
            text=text, cache_key=key, status=status, error=None if text else "empty completion (cached)",
            prompt_tokens=prompt, completion_tokens=completion, cost_usd=0.0, cache_hit=True, row_id=row_id,
        )  # fmt: skip

    def _duplicate_result(self, result: ChatResult) -> ChatResult:
        """A request repeated within one call: answered by the first one's response."""
        saved = result.cost_usd if result.status == "ok" else 0.0
        self.recorder.ledger(
            model=self.model, kind="chat", prompt_tokens=0, completion_tokens=0, cached_tokens=0, cost_usd=0.0,
            saved_usd=saved, latency_s=0.0, attempts=0, cache_hit=True, mode="cache",
            status=result.status, error_class=None, cache_key=result.cache_key,
        )  # fmt: skip
        result.cache_hit, result.cost_usd = True, 0.0
        return result

    async def _online(self, jobs: list[_Pending], progress: Progress) -> dict[str, ChatResult]:
        client = await self.transport.client()
        answered: dict[str, ChatResult] = {}

        async def handle(job: _Pending) -> None:
            answered[job.key] = await self._one(client, job)
            progress.tick()

        await stream(jobs, handle, self.max_concurrency, progress, self.recorder.maybe_flush)
        return answered

    async def _one(self, client: openai.AsyncOpenAI, job: _Pending) -> ChatResult:
        # The reservation prices max_tokens at the output rate: the most this answer can cost.
        reserve = self.price(self.model, job.prompt_tokens, job.completion_tokens) or 0.0
        if not self.budget.allows(reserve):
            self.recorder.not_sent(self.model, "chat", job.key, "online")
            return ChatResult(text=None, cache_key=job.key, status="budget_exceeded", error="budget reached (max_cost_usd)")
        started = time.perf_counter()
        with self.budget.reserve(reserve):
            if self.relay is not None:  # a Ray task: through the endpoint's relay actor (relay.py)
                post = lambda: self.relay.post(client, job.key, "/chat/completions", job.body)  # noqa: E731
            else:
                # The raw POST skips the SDK's per-request TypedDict transform and response
                # model construction (~5 ms CPU a call); the body is already API-shaped.
                post = lambda: client.post("/chat/completions", body=job.body, cast_to=object)  # noqa: E731
            response, attempts, error = await self.transport.send(post, job.est_tokens)
        latency = time.perf_counter() - started
        if error is not None:
            return self.recorder.failure(job.key, "chat", self.model, error, attempts, latency, "online")
        result = self._answer(job.key, job.body, response, attempts, latency, "online")
        if self.relay is not None:
            self.relay.ack(job.key)  # journalled by _answer: the relay may let it go
        if result.cost_usd is None:
            self.budget.charge_unpriced(reserve)  # no usage reported: count the most it can cost
        return result

    def _answer(self, key: str, body: dict, response: Any, attempts: int, latency: float, mode: str) -> ChatResult:
        """Cache and account one chat response (an SDK object or a batch output dict)."""
        if isinstance(response, str | bytes):  # a non-JSON content type
            return self.recorder.failure(key, "chat", self.model, UnexpectedResponse(str(response)[:200]), attempts, latency, mode)
        if isinstance(response, dict):
            choice = (response.get("choices") or [{}])[0]
            text = (choice.get("message") or {}).get("content")
            finish = choice.get("finish_reason")
            usage_obj = response.get("usage") or {}
            prompt = usage_obj.get("prompt_tokens")
            completion = usage_obj.get("completion_tokens")
            cached_tok = ((usage_obj.get("prompt_tokens_details") or {}).get("cached_tokens")) or 0
        else:
            choice = response.choices[0] if response.choices else None
            text = choice.message.content if choice is not None else None
            finish = choice.finish_reason if choice is not None else None
            usage_obj = response.usage
            prompt = getattr(usage_obj, "prompt_tokens", None)
            completion = getattr(usage_obj, "completion_tokens", None)
            details = getattr(usage_obj, "prompt_tokens_details", None)
            cached_tok = (getattr(details, "cached_tokens", None) if details is not None else None) or 0
        usage_known = prompt is not None and completion is not None
        prompt, completion = int(prompt or 0), int(completion or 0)
        # No usage from the endpoint means an unknown cost, not a free call.
        cost = self.price(self.model, prompt, completion, cached_tok, batch=mode == "batch") if usage_known else None
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "cached_tokens": cached_tok, "finish_reason": finish}
        text = text or ""
        self.recorder.remember(key, self.model, "chat", body, text, usage)
        if cost is not None:
            self.recorder.totals.cost_usd += cost
        status: Status = "ok" if text else "error"
        self.recorder.ledger(
            model=self.model, kind="chat", prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached_tok,
            cost_usd=cost, saved_usd=0.0, latency_s=latency, attempts=attempts, cache_hit=False, mode=mode,
            status=status, error_class=None if text else "EmptyCompletion", cache_key=key,
        )  # fmt: skip
        return ChatResult(
            text=text, cache_key=key, status=status,
            error=None if text else f"empty completion (finish_reason={finish})",
            prompt_tokens=prompt, completion_tokens=completion, cost_usd=cost, cache_hit=False,
            cached_tokens=cached_tok, latency_s=latency, attempts=attempts,
        )  # fmt: skip

    async def _batch_api(self, jobs: list[_Pending], progress: Progress) -> dict[str, ChatResult]:
        """Requests already in an open batch are resumed there; the rest go in one new batch
        (as far as the budget admits them). Every answer the batches return is stored."""
        client = await self.transport.client()
        answered: dict[str, ChatResult] = {}
        in_batches = await self.batches.open_batches(client, [job.key for job in jobs])
        fresh = [job for job in jobs if job.key not in in_batches]
        admitted, refused = admit_within_budget(
            self.budget, fresh, lambda job: self.price(self.model, job.prompt_tokens, job.completion_tokens, batch=True) or 0.0
        )
        for job in refused:
            self.recorder.not_sent(self.model, "chat", job.key, "batch")
            answered[job.key] = ChatResult(text=None, cache_key=job.key, status="budget_exceeded", error="budget reached (max_cost_usd)")
        wanted = {job.key for job in jobs if job.key in in_batches} | {job.key for job in admitted}
        if not wanted:
            return answered
        lines = [BatchLine(job.key, job.body, [(job.key, job.body)]) for job in admitted]
        started = time.perf_counter()
        try:
            harvests = await self.batches.run(
                client, "chat", "/v1/chat/completions", self.model, lines, set(in_batches.values()), progress
            )
        except Exception as exc:  # noqa: BLE001 -- recorded per request below
            latency = time.perf_counter() - started
            for key in wanted:
                answered[key] = self.recorder.failure(key, "chat", self.model, exc, 1, latency, "batch")
            return answered
        latency = time.perf_counter() - started
        for harvest in harvests:
            for custom_id, members in harvest.members.items():
                body, error = output_body(harvest.records.get(custom_id), harvest.status)
                for key, request in members:
                    if key in harvest.already_cached:  # stored by an earlier harvest (or another run's)
                        if key in wanted:
                            answered[key] = self._cached_result(key, *harvest.already_cached[key], None)
                        continue
                    if body is not None:  # paid: stored even if this run no longer asks for it
                        result = self._answer(key, request, body, 1, latency, "batch")
                    elif key in wanted:
                        result = self.recorder.failure(key, "chat", self.model, error, 1, latency, "batch")
                    else:
                        continue
                    if key in wanted:
                        answered[key] = result
            self.batches.harvested(harvest)
        for key in wanted - answered.keys():
            missing = BatchRequestError("not found in any batch output")
            answered[key] = self.recorder.failure(key, "chat", self.model, missing, 1, latency, "batch")
        return answered
