"""OpenAI Batch API mode (`batch_mode=True`): uncached requests at half price, resumable.

Chat requests go in as one batch file, embeddings as one batch line per chunk of texts.
A batch is paid as a whole, so requests are admitted while their estimate fits the
budget (`admit_within_budget`); the rest are refused as `budget_exceeded` before
anything is sent. The batch is keyed by a hash of the requests it carries and its id is
stored in `llm_batches` right after submission, so a run that dies while OpenAI works
(batches take up to 24 h) picks the same batch up on re-run instead of paying again.

This module speaks the Batch API (upload, create, poll, read the output and error
files); `chat.py` and `embeddings.py` turn the output lines into answers.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import duckdb
import openai

from resources.llm import store
from resources.warehouse import Lake
from resources.llm.budget import Budget
from resources.llm.errors import BatchRequestError
from resources.llm.workers import Progress

Item = TypeVar("Item")

# A stored batch in one of these states cannot be resumed: submit a new one.
DEAD_STATUSES = ("failed", "expired", "cancelled", "cancelling")
FINAL_STATUSES = ("completed", "failed", "expired", "cancelled")


def admit_within_budget(
    budget: Budget, items: Sequence[Item], price_each: Callable[[Item], float]
) -> tuple[list[Item], list[Item]]:
    """(admitted, refused): items in order while the running total of their estimated
    prices fits the budget."""
    admitted: list[Item] = []
    refused: list[Item] = []
    running = 0.0
    for item in items:
        each = price_each(item)
        if budget.allows(running + each):
            admitted.append(item)
            running += each
        else:
            refused.append(item)
    return admitted, refused


def output_body(line: dict | None) -> tuple[dict | None, BatchRequestError | None]:
    """(response body, None) for a request the batch answered, else (None, why not)."""
    response = (line or {}).get("response") or {}
    if line and response.get("status_code") == 200 and isinstance(response.get("body"), dict):
        return response["body"], None
    why = (line or {}).get("error") or response.get("body") or "missing from the batch output"
    return None, BatchRequestError(str(why)[:500])


class BatchJobs:
    def __init__(
        self,
        conn: duckdb.DuckDBPyConnection,
        lake: Lake,
        log: Any,
        endpoint_host: str,
        poll_interval_s: float,
        timeout_s: float,
        progress_interval_s: float,
    ) -> None:
        self._conn = conn
        self._lake = lake
        self.log = log
        self.endpoint_host = endpoint_host
        self.poll_interval_s = poll_interval_s
        self.timeout_s = timeout_s
        self.progress_interval_s = progress_interval_s

    async def run(
        self,
        client: openai.AsyncOpenAI,
        batch_key: str,
        items: list[tuple[str, dict]],
        url: str,
        model: str,
        progress: Progress,
    ) -> dict[str, dict]:
        """Submit (custom_id, body) requests (or resume their batch), wait for it, and
        return its output lines by custom_id. Raises if the batch as a whole fails."""
        batch = await self._submit_or_resume(client, batch_key, items, url, model)
        batch = await self._wait(client, batch_key, batch, progress, model)
        return await self._read_outputs(client, batch)

    async def _submit_or_resume(
        self, client: openai.AsyncOpenAI, batch_key: str, items: list[tuple[str, dict]], url: str, model: str
    ):
        existing = store.get_batch(self._conn, batch_key)
        if existing and existing["status"] not in DEAD_STATUSES:
            self.log.info(f"resuming OpenAI batch {existing['batch_id']} ({len(items)} requests, status {existing['status']})")
            return await client.batches.retrieve(existing["batch_id"])
        lines = [store.canonical_json({"custom_id": custom_id, "method": "POST", "url": url, "body": body}) for custom_id, body in items]
        payload = ("\n".join(lines) + "\n").encode()
        uploaded = await client.files.create(file=("requests.jsonl", io.BytesIO(payload)), purpose="batch")
        batch = await client.batches.create(input_file_id=uploaded.id, endpoint=url, completion_window="24h")
        store.put_batch(self._lake, batch_key, batch.id, uploaded.id, model, self.endpoint_host, len(items), batch.status)
        self.log.info(f"submitted OpenAI batch {batch.id} to {url} with {len(items)} requests ({len(payload):,} bytes)")
        return batch

    async def _wait(self, client: openai.AsyncOpenAI, batch_key: str, batch, progress: Progress, model: str):
        deadline = time.monotonic() + self.timeout_s
        last_log = 0.0
        while batch.status not in FINAL_STATUSES:
            if time.monotonic() > deadline:
                raise TimeoutError(f"batch {batch.id} still {batch.status} after {self.timeout_s:.0f}s; re-run to resume it")
            if time.monotonic() - last_log >= self.progress_interval_s:
                counts = getattr(batch, "request_counts", None)
                done = getattr(counts, "completed", 0) if counts else 0
                self.log.info(f"batch {batch.id}: {batch.status}, {done}/{progress.total} done")
                last_log = time.monotonic()
            await asyncio.sleep(self.poll_interval_s)
            batch = await client.batches.retrieve(batch.id)
        store.put_batch(
            self._lake, batch_key, batch.id, batch.input_file_id, model, self.endpoint_host,
            getattr(getattr(batch, "request_counts", None), "total", 0) or 0, batch.status, batch.output_file_id,
        )  # fmt: skip
        if batch.status != "completed":
            raise BatchRequestError(f"batch {batch.id} ended {batch.status}; re-run to submit a new one")
        return batch

    async def _read_outputs(self, client: openai.AsyncOpenAI, batch) -> dict[str, dict]:
        outputs: dict[str, dict] = {}
        for file_id in (batch.output_file_id, getattr(batch, "error_file_id", None)):
            if not file_id:
                continue
            content = await client.files.content(file_id)
            for line in content.text.splitlines():
                if line.strip():
                    record = json.loads(line)
                    outputs.setdefault(record.get("custom_id"), record)
        return outputs
