"""Embeddings: one mean-pooled float32 vector per text, cached like chat answers.

Each text is keyed on its own (`store.cache_key` of model + text), so a corpus embedded
once is free the next time whatever batches it arrives in. Uncached texts go out in
chunks of `embed_batch_size` per request (online through the worker pool, or one Batch
API line per chunk); the request's token usage is shared among its texts by length.
A text that failed (or was empty) is a NaN row in the returned matrix, and a row in
`llm_calls` says why.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import numpy as np
import openai

from resources.llm import store
from resources.llm.batch import BatchJobs, BatchLine, admit_within_budget, output_body
from resources.llm.budget import Budget
from resources.llm.errors import BatchRequestError, EmbeddingShapeError
from resources.llm.pricing import Pricer, estimate_tokens
from resources.llm.recorder import Recorder
from resources.llm.transport import Transport
from resources.llm.workers import Progress, stream


def mean_pool(embedding: Any) -> np.ndarray:
    """One vector per text: llama.cpp's server may return one vector per token."""
    array = np.asarray(embedding, dtype=np.float32)
    if array.ndim == 2:
        return array.mean(axis=0)
    return array.reshape(-1)


class Embeddings:
    def __init__(
        self,
        *,
        model: str,
        endpoint_id: str,
        batch_size: int,
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
        self.batch_size = batch_size
        self.batch_mode = batch_mode
        self.max_concurrency = max_concurrency
        self.progress_interval_s = progress_interval_s
        self.recorder = recorder
        self.budget = budget
        self.transport = transport
        self.batches = batches
        self.log = log

    async def embed(self, texts: list[str]) -> np.ndarray:
        """(n, d) float32, NaN rows for texts that failed."""
        model = self.model
        keys = [store.cache_key(self.endpoint_id, "embedding", {"model": model, "input": text}) for text in texts]
        vectors: list[np.ndarray | None] = [None] * len(texts)
        async with self.recorder.session_connection() as conn:
            cached = store.fetch_cached(conn, keys)
            todo: dict[str, list[int]] = {}
            for index, (text, key) in enumerate(zip(texts, keys)):
                if key in cached:
                    vector_json, usage_json = cached[key]
                    vectors[index] = np.asarray(json.loads(vector_json), dtype=np.float32)
                    usage = json.loads(usage_json) if usage_json else {}
                    self.recorder.ledger(
                        model=model, kind="embedding", prompt_tokens=0, completion_tokens=0, cached_tokens=0,
                        cost_usd=0.0, saved_usd=self.price(model, usage.get("prompt_tokens", 0), 0), latency_s=0.0,
                        attempts=0, cache_hit=True, mode="cache", status="ok", error_class=None, cache_key=key,
                    )  # fmt: skip
                elif not text or not text.strip():
                    self.recorder.failure(key, "embedding", model, ValueError("empty text cannot be embedded"), 0, 0.0, "online")
                elif key in todo:
                    todo[key].append(index)
                else:
                    todo[key] = [index]
            if todo:
                client = await self.transport.client()
                unique = list(todo)
                size = self.batch_size
                chunks = [unique[i : i + size] for i in range(0, len(unique), size)]
                progress = Progress(
                    "embed", len(texts), self.recorder.totals, self.log, self.progress_interval_s, done=len(texts) - len(unique)
                )

                def store_vectors(found: dict[str, np.ndarray]) -> None:
                    for key, vector in found.items():
                        for index in todo[key]:
                            vectors[index] = vector

                if self.batch_mode:
                    store_vectors(await self._batch_api(client, unique, {key: texts[todo[key][0]] for key in unique}))
                    progress.done = len(texts)
                else:

                    async def handle(chunk: list[str]) -> None:
                        store_vectors(await self._chunk(client, chunk, [texts[todo[k][0]] for k in chunk]))
                        progress.done += len(chunk)

                    await stream(chunks, handle, self.max_concurrency, progress, self.recorder.maybe_flush)
                progress.finish()
        dim = next((len(v) for v in vectors if v is not None), 1)
        out = np.full((len(texts), dim), np.nan, dtype=np.float32)
        for index, vector in enumerate(vectors):
            if vector is not None and len(vector) == dim:
                out[index] = vector
        return out

    async def _chunk(self, client: openai.AsyncOpenAI, keys: list[str], inputs: list[str]) -> dict[str, np.ndarray]:
        """One embeddings request for a chunk of texts, online."""
        model = self.model
        est = sum(estimate_tokens(text) for text in inputs)
        reserve = self.price(model, est, 0) or 0.0
        if not self.budget.allows(reserve):
            for key in keys:
                self.recorder.not_sent(model, "embedding", key, "online")
            return {}
        started = time.perf_counter()
        with self.budget.reserve(reserve):
            response, attempts, error = await self.transport.send(
                lambda: client.embeddings.create(model=model, input=inputs, encoding_format="float"), est
            )
        latency = time.perf_counter() - started
        if error is not None:
            for key in keys:
                self.recorder.failure(key, "embedding", model, error, attempts, latency, "online")
            return {}
        return self._answer(keys, inputs, response, attempts, latency, "online")

    def _answer(
        self, keys: list[str], inputs: list[str], response: Any, attempts: int, latency: float, mode: str,
        skip: set[str] = frozenset(),
    ) -> dict[str, np.ndarray]:
        """Cache and account one embeddings response (an SDK object or a batch output dict):
        one vector per input, mean-pooled, the request's token usage shared by length.
        Keys in `skip` are stored and accounted already (their vectors are still returned)."""
        model = self.model
        if isinstance(response, dict):
            data = [(item.get("index", 0), item.get("embedding")) for item in response.get("data") or []]
            total_prompt = (response.get("usage") or {}).get("prompt_tokens")
        else:
            data = [(item.index, item.embedding) for item in (response.data if response is not None else [])]
            total_prompt = getattr(getattr(response, "usage", None), "prompt_tokens", None)
        if len(data) != len(inputs):
            error = EmbeddingShapeError(f"asked for {len(inputs)} embeddings, got {len(data)}")
            for key in keys:
                self.recorder.failure(key, "embedding", model, error, attempts, latency, mode)
            return {}
        total_chars = sum(max(1, len(text)) for text in inputs)
        found: dict[str, np.ndarray] = {}
        for key, text, (_, embedding) in zip(keys, inputs, sorted(data, key=lambda item: item[0])):
            vector = mean_pool(embedding)
            # Token usage is per request; each text gets its share by length.
            if key in skip:
                found[key] = vector
                continue
            tokens = None if total_prompt is None else round(total_prompt * max(1, len(text)) / total_chars)
            cost = None if tokens is None else self.price(model, tokens, 0, batch=mode == "batch")
            if cost is not None:
                self.recorder.totals.cost_usd += cost
            self.recorder.remember(
                key, model, "embedding", {"model": model, "input": text},
                json.dumps([round(float(x), 7) for x in vector]), {"prompt_tokens": tokens or 0},
            )  # fmt: skip
            self.recorder.ledger(
                model=model, kind="embedding", prompt_tokens=tokens or 0, completion_tokens=0, cached_tokens=0,
                cost_usd=cost, saved_usd=0.0, latency_s=latency, attempts=attempts, cache_hit=False, mode=mode,
                status="ok", error_class=None, cache_key=key,
            )  # fmt: skip
            found[key] = vector
        return found

    async def _batch_api(self, client: openai.AsyncOpenAI, keys: list[str], text_of: dict[str, str]) -> dict[str, np.ndarray]:
        """Embedding requests through the Batch API at the batch rate. Texts already in an
        open batch are resumed there; the rest go in a new batch, one line per chunk of
        `embed_batch_size` texts, admitted while they fit the budget."""
        model = self.model
        in_batches = await self.batches.open_batches(client, keys)
        fresh = [key for key in keys if key not in in_batches]
        chunks = [fresh[i : i + self.batch_size] for i in range(0, len(fresh), self.batch_size)]

        def batch_price(chunk: list[str]) -> float:
            return self.price(model, sum(estimate_tokens(text_of[key]) for key in chunk), 0, batch=True) or 0.0

        admitted, refused = admit_within_budget(self.budget, chunks, batch_price)
        for chunk in refused:
            for key in chunk:
                self.recorder.not_sent(model, "embedding", key, "batch")
        wanted = {key for key in keys if key in in_batches} | {key for chunk in admitted for key in chunk}
        if not wanted:
            return {}
        lines = [
            BatchLine(
                "emb-" + hashlib.sha256("\n".join(chunk).encode()).hexdigest()[:32],
                {"model": model, "input": [text_of[key] for key in chunk], "encoding_format": "float"},
                [(key, {"model": model, "input": text_of[key]}) for key in chunk],
            )
            for chunk in admitted
        ]
        started = time.perf_counter()
        try:
            progress = Progress("embed", len(lines), self.recorder.totals, self.log, self.progress_interval_s)
            harvests = await self.batches.run(
                client, "embeddings", "/v1/embeddings", model, lines, set(in_batches.values()), progress
            )
        except Exception as exc:  # noqa: BLE001 -- recorded per text below
            latency = time.perf_counter() - started
            for key in wanted:
                self.recorder.failure(key, "embedding", model, exc, 1, latency, "batch")
            return {}
        latency = time.perf_counter() - started
        found: dict[str, np.ndarray] = {}
        for harvest in harvests:
            for custom_id, members in harvest.members.items():
                body, error = output_body(harvest.records.get(custom_id), harvest.status)
                line_keys = [key for key, _ in members]
                if body is not None:  # paid: stored even for texts this run no longer asks for
                    inputs = [request["input"] for _, request in members]
                    found.update(self._answer(line_keys, inputs, body, 1, latency, "batch", skip=harvest.already_cached))
                else:
                    for key in line_keys:
                        if key in wanted:
                            self.recorder.failure(key, "embedding", model, error, 1, latency, "batch")
            self.batches.harvested(harvest)
        for key in wanted - found.keys() - {k for h in harvests for m in h.members.values() for k, _ in m}:
            self.recorder.failure(key, "embedding", model, BatchRequestError("not found in any batch output"), 1, latency, "batch")
        return {key: vector for key, vector in found.items() if key in wanted}
