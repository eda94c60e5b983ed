"""A real HTTP server on 127.0.0.1 that speaks enough of the OpenAI API for tests:
chat completions, embeddings, files, batches and models.

    with OpenAIDouble(chat=lambda body: "reply text") as server:
        llm = LLMResource(base_url=server.base_url, api_key=TEST_KEY_REF, model="gpt-4o-mini",
                          embedding_model="text-embedding-3-small")
        ...
        assert len(server.chat_requests) == 3

- `chat(body) -> str`: gets the request body (a dict) and returns the assistant content.
  Default: a minimal VALID instance of the JSON schema in `response_format` (OpenAI
  `json_schema` or llama.cpp `json_object` + `schema`), else `"echo: <last user message>"`.
- `embed(text) -> list[float]`: default a deterministic hashed bag of words (64 dims,
  L2-normalised), so texts sharing words are similar.
- `latency_s`: added to every chat/embeddings answer (settable while running).
- `server.requests`: every chat/embeddings body that arrived, failed attempts included
  (`chat_requests`, `embedding_requests` filter them); `server.paths`: every (method, path);
  `server.answered`: every chat/embeddings body answered with a 200 (in the order answered).
- Failure injection, consumed in order by the next chat/embeddings requests
  (`endpoint="chat"` / `"embeddings"` restricts one to that route):
  `fail_next(status=429, count=2, retry_after=0.1)`, `fail_next(status=500)`,
  `hang_next(seconds=30)` (no answer before the client's timeout), `malformed_next()`
  (a 200 whose body is not JSON), `slow_next(seconds=0.5)`.
- Usage is provider style: prompt_tokens = words in the messages + 3 per message,
  completion_tokens = words in the answer (at least 1). `omit_usage=True`: chat answers
  carry no `usage` (as some self-hosted servers answer).
- Batch API: `/v1/files` (multipart upload), `/v1/files/{id}/content`, `/v1/batches`
  (create; GET lists newest first, paginated with `limit` / `after`), `/v1/batches/{id}`;
  a batch keeps its `metadata` and completes `batch_delay_s` after creation, answered by
  the same `chat` / `embed` responders (by each line's `url`). `server.batches_created`
  counts submissions. `end_next_batch("expired", answered=2)` makes the next batch to
  finish end with that status after answering only its first 2 lines; the rest go to its
  error file (as OpenAI does for expired and cancelled batches).

Run it as a separate process (for benchmarks): `python -m tests.openai_double --latency 0.05`
prints its base url on the first line of stdout and serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web

# The key tests give the LLM resource: a reference to an environment variable, as every
# user must give it (a literal key is refused, loopback endpoints included). The double
# accepts any key, so the value is a placeholder that the secrets tests look for in output.
TEST_KEY_ENV = "SYNTH_TEST_DOUBLE_KEY"
TEST_KEY = "sk-test-secret"
TEST_KEY_REF = f"env:{TEST_KEY_ENV}"
os.environ.setdefault(TEST_KEY_ENV, TEST_KEY)

EMBED_DIM = 64
_WORD = re.compile(r"\w+")


# --------------------------------------------------------------------------- default responders


def hashed_bag_of_words(text: str, dim: int = EMBED_DIM) -> list[float]:
    """Deterministic: each word adds +-1 to a hashed coordinate; L2-normalised."""
    vector = [0.0] * dim
    for word in _WORD.findall(text.lower()):
        digest = hashlib.md5(word.encode()).digest()
        index = int.from_bytes(digest[:4], "little") % dim
        vector[index] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(x * x for x in vector))
    if norm == 0:
        vector[0] = 1.0
        return vector
    return [x / norm for x in vector]


def schema_from_response_format(response_format: dict | None) -> dict | None:
    if not isinstance(response_format, dict):
        return None
    if response_format.get("type") == "json_schema":
        return (response_format.get("json_schema") or {}).get("schema")
    if response_format.get("type") == "json_object":
        return response_format.get("schema") or {"type": "object"}
    return None


def schema_instance(schema: dict, root: dict | None = None) -> Any:
    """A minimal value valid for `schema` (objects, arrays, strings, numbers, enums, refs)."""
    root = root if root is not None else schema
    if "$ref" in schema:
        ref = schema["$ref"]
        target: Any = root
        for part in ref.lstrip("#/").split("/"):
            target = target[part]
        return schema_instance(target, root)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for combinator in ("anyOf", "oneOf"):
        if combinator in schema:
            options = schema[combinator]
            non_null = [o for o in options if o.get("type") != "null"]
            return schema_instance((non_null or options)[0], root)
    if "allOf" in schema:
        merged: dict = {}
        for part in schema["allOf"]:
            merged.update(part)
        return schema_instance(merged, root)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        properties = schema.get("properties", {})
        return {name: schema_instance(sub, root) for name, sub in properties.items()}
    if kind == "array":
        count = max(schema.get("minItems", 1), 1)
        if "maxItems" in schema:
            count = min(count, schema["maxItems"])
        items = schema.get("items", {"type": "string"})
        return [schema_instance(items, root) for _ in range(count)]
    if kind == "string":
        value = "example"
        if schema.get("format") == "date-time":
            value = "2024-01-01T00:00:00Z"
        elif schema.get("format") == "date":
            value = "2024-01-01"
        if "minLength" in schema and len(value) < schema["minLength"]:
            value = value + "x" * (schema["minLength"] - len(value))
        if "maxLength" in schema:
            value = value[: schema["maxLength"]]
        return value
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        if low is None and high is None:
            value: float = 0
        elif low is None:
            value = high - 1 if "exclusiveMaximum" in schema else high
        else:
            value = low + 1 if "exclusiveMinimum" in schema else low
            if high is not None and value > high:
                value = (low + high) / 2
        return int(math.ceil(value)) if kind == "integer" else float(value)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "example"


def default_chat(body: dict) -> str:
    schema = schema_from_response_format(body.get("response_format"))
    if schema is not None:
        return json.dumps(schema_instance(schema))
    user = [m for m in body.get("messages", []) if m.get("role") == "user"]
    content = user[-1].get("content", "") if user else ""
    if isinstance(content, list):  # content parts
        content = " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return f"echo: {content}"


def count_words(text: str) -> int:
    return len(_WORD.findall(text or ""))


def chat_usage(body: dict, answer: str) -> dict:
    prompt = sum(count_words(str(m.get("content", ""))) + 3 for m in body.get("messages", []))
    completion = max(1, count_words(answer))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def chat_response(body: dict, answer: str) -> dict:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "unknown"),
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop", "logprobs": None}
        ],
        "usage": chat_usage(body, answer),
    }


# --------------------------------------------------------------------------- the server


class OpenAIDouble:
    """See the module docstring. A context manager; also `start()` / `stop()`."""

    def __init__(
        self,
        chat: Callable[[dict], str] | None = None,
        embed: Callable[[str], list[float]] | None = None,
        latency_s: float = 0.0,
        batch_delay_s: float = 0.0,
        record: bool = True,
        omit_usage: bool = False,
    ) -> None:
        self.omit_usage = omit_usage
        self.chat = chat or default_chat
        self.embed = embed or hashed_bag_of_words
        self.latency_s = latency_s
        self.batch_delay_s = batch_delay_s
        self.record = record
        self.requests: list[dict] = []
        self.answered: list[dict] = []
        self.paths: list[tuple[str, str]] = []
        self.files: dict[str, dict] = {}
        self.batches: dict[str, dict] = {}
        self.batches_created = 0
        self._batch_endings: list[tuple[str, int]] = []
        self._faults: list[dict] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    # ------------------------------------------------------------------ public helpers

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def chat_requests(self) -> list[dict]:
        return [b for b in self.requests if "messages" in b]

    @property
    def embedding_requests(self) -> list[dict]:
        return [b for b in self.requests if "input" in b]

    def fail_next(
        self, status: int = 500, count: int = 1, retry_after: float | None = None, endpoint: str | None = None, message: str = "injected failure"
    ) -> None:
        self._add_fault({"kind": "status", "status": status, "retry_after": retry_after, "message": message}, count, endpoint)

    def hang_next(self, seconds: float = 30.0, count: int = 1, endpoint: str | None = None) -> None:
        self._add_fault({"kind": "hang", "seconds": seconds}, count, endpoint)

    def malformed_next(self, count: int = 1, endpoint: str | None = None) -> None:
        self._add_fault({"kind": "malformed"}, count, endpoint)

    def slow_next(self, seconds: float, count: int = 1, endpoint: str | None = None) -> None:
        self._add_fault({"kind": "slow", "seconds": seconds}, count, endpoint)

    def end_next_batch(self, status: str = "expired", answered: int = 0) -> None:
        with self._lock:
            self._batch_endings.append((status, answered))

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.answered.clear()
            self.paths.clear()
            self._faults.clear()

    def _add_fault(self, fault: dict, count: int, endpoint: str | None) -> None:
        with self._lock:
            self._faults.append({**fault, "remaining": count, "endpoint": endpoint})

    def _take_fault(self, endpoint: str) -> dict | None:
        with self._lock:
            for fault in self._faults:
                if fault["endpoint"] in (None, endpoint) and fault["remaining"] > 0:
                    fault["remaining"] -= 1
                    if fault["remaining"] == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # ------------------------------------------------------------------ lifecycle

    def start(self, port: int = 0) -> OpenAIDouble:
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start_site(port))
            except BaseException as exc:  # noqa: BLE001 -- reported to start()
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name="openai-double", daemon=True)
        self._thread.start()
        ready.wait(timeout=30)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop = None

    def __enter__(self) -> OpenAIDouble:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    async def _start_site(self, port: int) -> None:
        app = self.make_app()
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # the free port picked by the OS

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/files", self._file_upload)
        app.router.add_get("/v1/files/{file_id}/content", self._file_content)
        app.router.add_get("/v1/files/{file_id}", self._file_get)
        app.router.add_post("/v1/batches", self._batch_create)
        app.router.add_get("/v1/batches", self._batch_list)
        app.router.add_get("/v1/batches/{batch_id}", self._batch_get)
        return app

    # ------------------------------------------------------------------ handlers

    async def _faulted(self, endpoint: str) -> web.Response | None:
        fault = self._take_fault(endpoint)
        if fault is None:
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            return None
        if fault["kind"] == "status":
            headers = {}
            if fault["retry_after"] is not None:
                headers["retry-after"] = str(fault["retry_after"])
            error = {"error": {"message": fault["message"], "type": "injected", "code": str(fault["status"])}}
            return web.json_response(error, status=fault["status"], headers=headers)
        if fault["kind"] == "hang":
            await asyncio.sleep(fault["seconds"])
            return web.json_response({"error": {"message": "hung"}}, status=504)
        if fault["kind"] == "malformed":
            return web.Response(text='{"id": "chatcmpl-broken", "choices": [', content_type="application/json")
        if fault["kind"] == "slow":
            await asyncio.sleep(fault["seconds"])
            return None
        return None

    def _note(self, request: web.Request, body: dict | None = None) -> None:
        if self.record:
            with self._lock:
                self.paths.append((request.method, request.path))
                if body is not None:
                    self.requests.append(body)

    def _answered(self, body: dict) -> None:
        if self.record:
            with self._lock:
                self.answered.append(body)

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self._note(request, body)
        faulted = await self._faulted("chat")
        if faulted is not None:
            return faulted
        try:
            answer = self.chat(body)
        except Exception as exc:  # noqa: BLE001 -- a responder bug shows as a 500 with its message
            return web.json_response({"error": {"message": f"chat responder raised {exc!r}"}}, status=500)
        self._answered(body)
        response = chat_response(body, answer)
        if self.omit_usage:
            del response["usage"]
        return web.json_response(response)

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        self._note(request, body)
        faulted = await self._faulted("embeddings")
        if faulted is not None:
            return faulted
        self._answered(body)
        return web.json_response(self.embeddings_response(body))

    def embeddings_response(self, body: dict) -> dict:
        inputs = body.get("input")
        inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
        data = [{"object": "embedding", "index": i, "embedding": list(self.embed(text))} for i, text in enumerate(inputs)]
        tokens = sum(count_words(text) for text in inputs)
        return {
            "object": "list",
            "data": data,
            "model": body.get("model", "unknown"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    async def _models(self, request: web.Request) -> web.Response:
        self._note(request)
        return web.json_response(
            {"object": "list", "data": [{"id": "double", "object": "model", "created": 0, "owned_by": "tests"}]}
        )

    async def _file_upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        self._note(request)
        upload = form["file"]
        content = upload.file.read() if hasattr(upload, "file") else str(upload).encode()
        file_id = f"file-{uuid.uuid4().hex[:16]}"
        self.files[file_id] = {"content": content, "filename": getattr(upload, "filename", "upload"), "purpose": form.get("purpose", "")}
        return web.json_response(self._file_object(file_id))

    def _file_object(self, file_id: str) -> dict:
        record = self.files[file_id]
        return {
            "id": file_id,
            "object": "file",
            "bytes": len(record["content"]),
            "created_at": int(time.time()),
            "filename": record["filename"],
            "purpose": record["purpose"],
            "status": "processed",
        }

    async def _file_get(self, request: web.Request) -> web.Response:
        self._note(request)
        file_id = request.match_info["file_id"]
        if file_id not in self.files:
            return web.json_response({"error": {"message": "no such file"}}, status=404)
        return web.json_response(self._file_object(file_id))

    async def _file_content(self, request: web.Request) -> web.Response:
        self._note(request)
        file_id = request.match_info["file_id"]
        if file_id not in self.files:
            return web.json_response({"error": {"message": "no such file"}}, status=404)
        return web.Response(body=self.files[file_id]["content"], content_type="application/octet-stream")

    async def _batch_create(self, request: web.Request) -> web.Response:
        body = await request.json()
        self._note(request)
        if body.get("input_file_id") not in self.files:
            return web.json_response({"error": {"message": "unknown input_file_id"}}, status=400)
        batch_id = f"batch_{uuid.uuid4().hex[:16]}"
        self.batches_created += 1
        n_lines = sum(1 for line in self.files[body["input_file_id"]]["content"].splitlines() if line.strip())
        self.batches[batch_id] = {
            "id": batch_id,
            "object": "batch",
            "endpoint": body.get("endpoint"),
            "input_file_id": body["input_file_id"],
            "completion_window": body.get("completion_window", "24h"),
            "status": "validating",
            "created_at": int(time.time()),
            "output_file_id": None,
            "error_file_id": None,
            "request_counts": {"total": n_lines, "completed": 0, "failed": 0},
            "metadata": body.get("metadata"),
            "_created": time.monotonic(),
        }
        return web.json_response(self._public_batch(batch_id))

    async def _batch_list(self, request: web.Request) -> web.Response:
        self._note(request)
        limit = int(request.query.get("limit", 20))
        after = request.query.get("after")
        newest_first = sorted(self.batches.values(), key=lambda b: b["_created"], reverse=True)
        if after:
            ids = [b["id"] for b in newest_first]
            newest_first = newest_first[ids.index(after) + 1 :] if after in ids else []
        page = newest_first[:limit]
        data = [self._public_batch(b["id"]) for b in page]
        return web.json_response({
            "object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": len(newest_first) > limit,
        })  # fmt: skip

    async def _batch_get(self, request: web.Request) -> web.Response:
        self._note(request)
        batch_id = request.match_info["batch_id"]
        batch = self.batches.get(batch_id)
        if batch is None:
            return web.json_response({"error": {"message": "no such batch"}}, status=404)
        if batch["status"] not in ("completed", "expired", "cancelled", "failed") and time.monotonic() - batch["_created"] >= self.batch_delay_s:
            self._run_batch(batch)
        elif batch["status"] == "validating":
            batch["status"] = "in_progress"
        return web.json_response(self._public_batch(batch_id))

    def _run_batch(self, batch: dict) -> None:
        with self._lock:
            status, answer_limit = self._batch_endings.pop(0) if self._batch_endings else ("completed", None)
        lines = []
        errors = []
        for raw in self.files[batch["input_file_id"]]["content"].decode().splitlines():
            if not raw.strip():
                continue
            item = json.loads(raw)
            if answer_limit is not None and len(lines) >= answer_limit:
                errors.append(json.dumps({
                    "id": f"batch_req_{uuid.uuid4().hex[:12]}", "custom_id": item["custom_id"], "response": None,
                    "error": {"code": f"batch_{status}", "message": f"This request could not be executed before the batch was {status}."},
                }))  # fmt: skip
                continue
            body = item["body"]
            with self._lock:
                self.requests.append(body)
            if item.get("url") == "/v1/embeddings":
                answer_body = self.embeddings_response(body)
            else:
                answer_body = chat_response(body, self.chat(body))
            lines.append(
                json.dumps(
                    {
                        "id": f"batch_req_{uuid.uuid4().hex[:12]}",
                        "custom_id": item["custom_id"],
                        "response": {"status_code": 200, "request_id": uuid.uuid4().hex, "body": answer_body},
                        "error": None,
                    }
                )
            )
        output_id = f"file-{uuid.uuid4().hex[:16]}"
        self.files[output_id] = {"content": ("\n".join(lines) + "\n").encode(), "filename": "output.jsonl", "purpose": "batch_output"}
        error_id = None
        if errors:
            error_id = f"file-{uuid.uuid4().hex[:16]}"
            self.files[error_id] = {"content": ("\n".join(errors) + "\n").encode(), "filename": "errors.jsonl", "purpose": "batch_output"}
        batch.update(status=status, output_file_id=output_id, error_file_id=error_id, completed_at=int(time.time()))
        batch["request_counts"].update(completed=len(lines), failed=len(errors))

    def _public_batch(self, batch_id: str) -> dict:
        return {k: v for k, v in self.batches[batch_id].items() if not k.startswith("_")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the OpenAI test double (default responders).")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to each answer")
    args = parser.parse_args(argv)
    double = OpenAIDouble(latency_s=args.latency, record=False)
    double.start(args.port)
    print(double.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        double.stop()


if __name__ == "__main__":
    sys.exit(main())
