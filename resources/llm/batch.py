"""OpenAI Batch API mode (`batch_mode=True`): uncached requests at half price, never paid twice.

A batch is paid as a whole and may take 24 hours, so every step that can be interrupted
is recorded before it is taken:

1. **Intent first.** The batch's row in `llm_batches` (status `intent`) and one row per
   request it will carry (`llm_batch_requests`) are committed before the input file is
   uploaded. The batch is created with that key in its provider metadata
   (`synth_assets_batch_key`), then its id is recorded.
2. **One claim per key.** Two runs that reach the same batch key at once both try to
   record its intent; the claim is one DuckLake transaction that conflicts with any other
   claim (`store.record_batch_intent`), so exactly one run records it and creates the
   batch. The other waits for that batch and reads it like its own.
3. **Found again.** A run killed between creating the batch and recording its id leaves
   an intent without an id. An intent whose run is alive is waited for; the run holds an
   flock'ed lease file from the claim until the id is recorded (on another machine, where
   the lease cannot be seen, the intent counts as alive for `INTENT_LEASE_S`). Once its
   run is gone, the provider's batches are listed: the one tagged with the key is resumed;
   if none carries it, the provider never got it and the intent is marked abandoned
   (nothing was paid). Its owner looks once more just before creating the batch and
   stops if its intent was abandoned meanwhile.
4. **Request by request.** Before submitting, each uncached request is looked up in the
   batches not yet harvested: those it is in are resumed (waited for and read), and only
   the requests in none of them go in a new batch. A run whose set of requests changed
   pays only for the new ones.
5. **Every terminal status is read.** completed, expired, cancelled or failed: the
   output and error files are read whatever the status, every answered line is stored
   (even for requests the current run no longer asks for: they are paid), and the batch is
   marked harvested. Requests without an answer fail now and go in a new batch next run.

Requests are admitted to a new batch while their estimate fits the budget
(`admit_within_budget`); the rest are refused as `budget_exceeded` before anything is sent.
This module speaks the Batch API (upload, create, list, poll, read the output and error
files); `chat.py` and `embeddings.py` turn the output lines into answers.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import io
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import openai

from resources.llm import store
from resources.llm.budget import Budget
from resources.llm.errors import BatchRequestError
from resources.llm.workers import Progress
from resources.warehouse import Lake

Item = TypeVar("Item")

METADATA_KEY = "synth_assets_batch_key"
FINAL_STATUSES = ("completed", "failed", "expired", "cancelled")
# How far before an intent was recorded a batch carrying its key may have been created
# (clock skew between this machine and the provider).
LIST_SLACK_S = 3600
# How long an intent recorded on another machine counts as alive (its lease file is not
# visible from here): uploading the input file and creating the batch take seconds to minutes.
INTENT_LEASE_S = 900


@dataclass
class BatchLine:
    """One line of a batch file: its request body and the cached requests it answers,
    as (cache_key, request as cached) in the order of the answer (embeddings: inputs)."""

    custom_id: str
    body: dict
    members: list[tuple[str, dict]]


@dataclass
class Harvest:
    """What one terminal batch returned: output or error record per custom id, and the
    requests behind every line (from `llm_batch_requests`)."""

    batch_key: str
    batch_id: str
    status: str
    records: dict[str, dict]
    members: dict[str, list[tuple[str, dict]]]
    # Requests stored already (an earlier harvest died before marking the batch, or another
    # run waiting on the same batch read it first): {cache_key: (text, usage_json)}. Their
    # answers are served from the cache, not stored or accounted again.
    already_cached: dict[str, tuple[str, str]]


def batch_key_for(kind: str, custom_ids: Sequence[str]) -> str:
    return hashlib.sha256((kind + "\n" + "\n".join(sorted(custom_ids))).encode()).hexdigest()


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


def output_body(line: dict | None, status: str = "completed") -> tuple[dict | None, BatchRequestError | None]:
    """(response body, None) for a request the batch answered, else (None, why not)."""
    response = (line or {}).get("response") or {}
    if line and response.get("status_code") == 200 and isinstance(response.get("body"), dict):
        return response["body"], None
    why = (line or {}).get("error") or response.get("body") or f"not answered (the batch ended {status})"
    return None, BatchRequestError(str(why)[:500])


@contextmanager
def intent_lease(lease_dir: Path) -> Iterator[str]:
    """Hold a lease while an intent is being turned into a batch; yields the `claimed_by`
    text that names it. The lease is a file locked (flock) by this process: the lock goes
    with the process, however it ends, so another run on this machine can tell a live
    claim from a dead one."""
    lease_dir.mkdir(parents=True, exist_ok=True)
    path = lease_dir / f"{uuid.uuid4().hex}.lease"
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "lease": str(path)}, sort_keys=True)
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def claim_is_alive(claimed_by: str | None, created_at: Any) -> bool:
    """Whether the run that recorded an intent may still create its batch: on this machine,
    while its lease file is locked; on another machine, for INTENT_LEASE_S after the intent
    was recorded. An intent without a claim (recorded by an older version) is not."""
    try:
        claim = json.loads(claimed_by or "")
    except json.JSONDecodeError:
        return False
    if claim.get("host") != socket.gethostname():
        if created_at is None:
            return False
        return (store.now() - created_at.replace(tzinfo=None)).total_seconds() < INTENT_LEASE_S
    try:
        fd = os.open(claim["lease"], os.O_RDWR)
    except (FileNotFoundError, KeyError, TypeError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    Path(claim["lease"]).unlink(missing_ok=True)  # left by a killed process
    return False


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
        lease_dir: Path,
    ) -> None:
        self._conn = conn
        self.lease_dir = lease_dir
        self._lake = lake
        self.log = log
        self.endpoint_host = endpoint_host
        self.poll_interval_s = poll_interval_s
        self.timeout_s = timeout_s
        self.progress_interval_s = progress_interval_s

    async def open_batches(self, client: openai.AsyncOpenAI, keys: Sequence[str]) -> dict[str, str]:
        """`{cache_key: batch_key}` for the requests already carried by a batch that is not
        harvested yet (those must not be submitted again). Intents left by a killed run
        are settled first: found at the provider by their metadata key, or abandoned."""
        found = store.open_batches_for(self._conn, keys)
        intents = {row["batch_key"] for row in found.values() if row["status"] == store.INTENT}
        for batch_key in sorted(intents):
            await self._await_intent(client, batch_key)
        if intents:
            found = store.open_batches_for(self._conn, keys)
        return {key: row["batch_key"] for key, row in found.items()}

    async def _await_intent(self, client: openai.AsyncOpenAI, batch_key: str) -> dict | None:
        """The row of an intent once it is settled: its batch created and recorded by the
        run that claimed it (waited for while that run is alive), found at the provider,
        or abandoned."""
        deadline = time.monotonic() + self.timeout_s
        logged = False
        while True:
            row = store.get_batch(self._conn, batch_key)
            if row is None or row["status"] != store.INTENT:
                return row
            if not claim_is_alive(row["claimed_by"], row["created_at"]):
                await self._settle_intent(client, batch_key, row)
                continue
            if time.monotonic() > deadline:
                raise BatchRequestError(f"batch intent {batch_key[:12]} of another run is still unsettled; re-run later")
            if not logged:
                self.log.info(f"waiting for the batch another run is submitting for the same requests (key {batch_key[:12]})")
                logged = True
            await asyncio.sleep(self.poll_interval_s)

    async def _settle_intent(self, client: openai.AsyncOpenAI, batch_key: str, row: dict) -> None:
        since = row["created_at"].timestamp() - LIST_SLACK_S if row.get("created_at") else 0.0
        async for batch in client.batches.list(limit=100):
            if (getattr(batch, "metadata", None) or {}).get(METADATA_KEY) == batch_key:
                self.log.info(f"found OpenAI batch {batch.id} created by an interrupted run (key {batch_key[:12]})")
                store.update_batch(self._lake, batch_key, batch_id=batch.id, input_file_id=batch.input_file_id, status=batch.status)
                return
            if batch.created_at < since:
                break
        self.log.info(f"batch intent {batch_key[:12]} never reached the provider: its requests are submitted again")
        store.update_batch(self._lake, batch_key, status=store.ABANDONED)

    async def run(
        self,
        client: openai.AsyncOpenAI,
        kind: str,
        url: str,
        model: str,
        new_lines: list[BatchLine],
        resume: set[str],
        progress: Progress,
    ) -> list[Harvest]:
        """Submit `new_lines` as one new batch (if any), wait for it and for the batches in
        `resume`, and return what each returned. Raises if waiting times out (the batches
        stay recorded: a re-run resumes them)."""
        batch_keys = sorted(resume)
        resume = set(resume)
        if new_lines:
            batch_key, joined = await self._submit_or_join(client, kind, url, model, new_lines)
            batch_keys.append(batch_key)
            if joined:
                resume.add(batch_key)
        harvests = []
        for batch_key in batch_keys:
            row = store.get_batch(self._conn, batch_key)
            if row is None or not row["batch_id"]:
                raise BatchRequestError(f"batch {batch_key[:12]} has no provider id; re-run to settle it")
            if batch_key in resume:
                self.log.info(f"resuming OpenAI batch {row['batch_id']} (status {row['status']})")
            batch = await self._wait(client, batch_key, row["batch_id"], progress)
            harvests.append(await self._read(client, batch_key, batch))
        return harvests

    async def _submit_or_join(
        self, client: openai.AsyncOpenAI, kind: str, url: str, model: str, lines: list[BatchLine]
    ) -> tuple[str, bool]:
        """(batch key, joined): the batch for `lines`, created here, or created by another
        run that claimed the same key first (joined: waited for, not paid again)."""
        batch_key = batch_key_for(kind, [line.custom_id for line in lines])
        while True:
            if await self._submit(client, batch_key, url, model, lines):
                return batch_key, False
            self.log.info(f"another run claimed batch {batch_key[:12]} for the same requests first: waiting for its batch")
            row = await self._await_intent(client, batch_key)
            if row is not None and row["batch_id"] and row["status"] != store.ABANDONED:
                return batch_key, True
            # its run died before the provider got the batch: claim the key again

    async def _submit(self, client: openai.AsyncOpenAI, batch_key: str, url: str, model: str, lines: list[BatchLine]) -> bool:
        """Claim the key, upload and create the batch; False if another run holds the claim."""
        with intent_lease(self.lease_dir) as claimed_by:
            holder = store.record_batch_intent(
                self._lake, batch_key, model, self.endpoint_host,
                [(line.custom_id, [(key, store.canonical_json(request)) for key, request in line.members]) for line in lines],
                claimed_by,
            )  # fmt: skip
            if holder is not None:
                return False
            payload = "".join(
                store.canonical_json({"custom_id": line.custom_id, "method": "POST", "url": url, "body": line.body}) + "\n"
                for line in lines
            ).encode()
            uploaded = await client.files.create(file=("requests.jsonl", io.BytesIO(payload)), purpose="batch")
            # A run on another machine abandons an intent older than INTENT_LEASE_S that the
            # provider does not know: look once more before paying.
            row = store.get_batch(self._conn, batch_key)
            if row is None or row["claimed_by"] != claimed_by or row["status"] != store.INTENT:
                raise BatchRequestError(f"batch intent {batch_key[:12]} was settled by another run while uploading; re-run")
            batch = await client.batches.create(
                input_file_id=uploaded.id, endpoint=url, completion_window="24h", metadata={METADATA_KEY: batch_key}
            )
            self._record_created(batch_key, batch)
        self.log.info(f"submitted OpenAI batch {batch.id} to {url} with {len(lines)} requests ({len(payload):,} bytes)")
        return True

    def _record_created(self, batch_key: str, batch: Any) -> None:
        store.update_batch(self._lake, batch_key, batch_id=batch.id, input_file_id=batch.input_file_id, status=batch.status)

    async def _wait(self, client: openai.AsyncOpenAI, batch_key: str, batch_id: str, progress: Progress):
        batch = await client.batches.retrieve(batch_id)
        deadline = time.monotonic() + self.timeout_s
        last_log = 0.0
        while batch.status not in FINAL_STATUSES:
            if time.monotonic() > deadline:
                store.update_batch(self._lake, batch_key, status=batch.status)
                raise TimeoutError(f"batch {batch.id} still {batch.status} after {self.timeout_s:.0f}s; re-run to resume it")
            if time.monotonic() - last_log >= self.progress_interval_s:
                counts = getattr(batch, "request_counts", None)
                done = getattr(counts, "completed", 0) if counts else 0
                self.log.info(f"batch {batch.id}: {batch.status}, {done}/{progress.total} done")
                last_log = time.monotonic()
            await asyncio.sleep(self.poll_interval_s)
            batch = await client.batches.retrieve(batch.id)
        store.update_batch(self._lake, batch_key, status=batch.status, output_file_id=batch.output_file_id)
        if batch.status != "completed":
            self.log.warning(f"batch {batch.id} ended {batch.status}: reading what it answered; the rest is submitted again next run")
        return batch

    async def _read(self, client: openai.AsyncOpenAI, batch_key: str, batch: Any) -> Harvest:
        """The output and error files, whatever the terminal status."""
        records: dict[str, dict] = {}
        for file_id in (batch.output_file_id, getattr(batch, "error_file_id", None)):
            if not file_id:
                continue
            content = await client.files.content(file_id)
            for line in content.text.splitlines():
                if line.strip():
                    record = json.loads(line)
                    records.setdefault(record.get("custom_id"), record)
        lines = store.batch_members(self._conn, batch_key)
        members = {custom_id: [(key, json.loads(request_json)) for key, request_json in line] for custom_id, line in lines.items()}
        cached = store.fetch_cached(self._conn, [key for line in lines.values() for key, _ in line])
        return Harvest(batch_key, batch.id, batch.status, records, members, cached)

    def harvested(self, harvest: Harvest) -> None:
        """Every answer of the batch is recorded (journaled): never read it again."""
        store.update_batch(self._lake, harvest.batch_key, harvested_at=store.now())
