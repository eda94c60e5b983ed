"""On a Ray cluster, the chat requests of tasks go out through one relay actor per endpoint,
so a task killed mid-request does not lose what it was waiting for.

A request's answer exists once the endpoint sends it, and the endpoint bills it then. A
task that sent the request itself and died before reading the answer loses it: the
retried task asks (and pays) again. So tasks hand their requests to the relay
(`synth_assets.relay:<endpoint_id>:<settings hash>`, a detached async actor with the
endpoint's HTTP client; the hash covers the url, the key's reference and the timeout, so a
resource with other settings gets its own relay), which keeps every answer under its cache
key until the asking task says it has it durably (journalled: `ack`). A retried task that
asks for a key the relay holds, or is still waiting for, gets that answer: the endpoint
answers each request once however many task processes die around it. An answer whose
asker died and whose retry found it elsewhere (the dead task's journal) is never acked;
it is dropped after `UNCLAIMED_TTL_S`.

If the relay's own process dies, what it had in flight is lost: Ray restarts it and
re-sends the calls that were waiting on it (`max_task_retries`), and a task that still
sees it dead gets a retryable connection error, so its own retries apply. Two tasks asking
the same key at the same moment share one HTTP call, but each records it as paid (the
ledger then counts that cost twice, the safe direction for a budget); the batches keep
equal requests in one task, so within a materialization this does not happen.

The relay resolves the api key from its own environment, as workers do (it is given the
`env:NAME` reference, never the key). Errors travel back as plain data and are raised
in the task as the `openai` exceptions they were, so pacing and retries work as before.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any

from resources.llm.endpoint import Endpoint

RELAY_PREFIX = "synth_assets.relay:"
UNCLAIMED_TTL_S = 6 * 3600.0


def _relay_class() -> Any:
    import ray

    @ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1, max_concurrency=10_000)
    class CallRelay:
        def __init__(self, base_url: str, api_key_setting: str | None, timeout_s: float, pool_size: int) -> None:
            self.base_url, self.api_key_setting = base_url, api_key_setting
            self.timeout_s, self.pool_size = timeout_s, pool_size
            self.transport = None
            self.calls: dict[str, asyncio.Task] = {}  # cache key -> the one HTTP call for it
            self.started: dict[str, float] = {}
            self.posts = 0

        async def post(self, key: str, path: str, body: dict) -> tuple[str, Any]:
            """("ok", response) or ("error", what went wrong), for the request under `key`:
            the answer the relay already holds or awaits for it, else a new call."""
            self._drop_unclaimed()
            call = self.calls.get(key)
            if call is None:
                call = asyncio.get_running_loop().create_task(self._post(path, body))
                self.calls[key], self.started[key] = call, time.time()
            outcome = await asyncio.shield(call)  # the call goes on if this asker goes
            if outcome[0] == "error" and self.calls.get(key) is call:  # nothing to keep: a new ask is a new attempt
                self.calls.pop(key)
                self.started.pop(key, None)
            return outcome

        def ack(self, key: str) -> None:
            """The asker journalled the answer: the relay need not keep it."""
            self.calls.pop(key, None)
            self.started.pop(key, None)

        async def warm(self) -> None:
            """Make the HTTP client now, so the first request is not slower than the rest
            (the limiter paced it already: a late first arrival bunches the ones after it)."""
            try:
                await self._client()
            except Exception:  # noqa: BLE001 -- the requests will say what is wrong
                pass

        def stats(self) -> dict:
            return {"posts": self.posts, "held": len(self.calls)}

        def _drop_unclaimed(self) -> None:
            cutoff = time.time() - UNCLAIMED_TTL_S
            for key in [k for k, t in self.started.items() if t < cutoff and self.calls[k].done()]:
                self.calls.pop(key, None)
                self.started.pop(key, None)

        async def _post(self, path: str, body: dict) -> tuple[str, Any]:
            self.posts += 1
            try:
                client = await self._client()
                return "ok", await client.post(path, body=body, cast_to=object)
            except Exception as exc:  # noqa: BLE001 -- sent back as data, raised in the task
                return "error", describe_error(exc)

        async def _client(self) -> Any:
            if self.transport is None:
                from resources.llm.endpoint import resolve_api_key
                from resources.llm.retries import RetryPolicy
                from resources.llm.transport import Transport

                api_key = resolve_api_key(self.api_key_setting, self.base_url)
                endpoint = Endpoint(base_url=self.base_url, api_key=api_key or "no-key", endpoint_id="relay",
                                    is_local=False, chat_model="", embedding_model="")
                self.transport = Transport(endpoint, self.timeout_s, self.pool_size, None, None, RetryPolicy(0, 0.0, 0.0))
            return await self.transport.client()

    return CallRelay


def describe_error(exc: BaseException) -> dict:
    """An `openai` exception as picklable data (its response object is not)."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        return {"kind": "status", "status": exc.status_code, "message": exc.message, "body": exc.body,
                "headers": dict(exc.response.headers)}
    if isinstance(exc, openai.APITimeoutError):
        return {"kind": "timeout", "message": str(exc)}
    if isinstance(exc, openai.APIConnectionError):
        return {"kind": "connection", "message": str(exc)}
    if isinstance(exc, json.JSONDecodeError):  # a 200 whose body is not JSON: retried, as in the task
        return {"kind": "json", "message": exc.msg, "doc": exc.doc[:1000], "pos": min(exc.pos, 1000)}
    return {"kind": "other", "message": f"{type(exc).__name__}: {exc}"}


def raise_error(error: dict, client: Any, base_url: str) -> None:
    """Raise what `describe_error` described, as the `openai` exception it was."""
    import openai

    from resources.llm.transport import _httpx

    request = _httpx.Request("POST", f"{base_url}/chat/completions")
    if error["kind"] == "status":
        response = _httpx.Response(error["status"], headers=error["headers"], request=request)
        raise client._make_status_error(error["message"], body=error["body"], response=response)
    if error["kind"] == "timeout":
        raise openai.APITimeoutError(request=request)
    if error["kind"] == "connection":
        raise openai.APIConnectionError(message=error["message"], request=request)
    if error["kind"] == "json":
        raise json.JSONDecodeError(error["message"], error["doc"], error["pos"])
    raise RuntimeError(error["message"])


class Relay:
    """A task's handle on its endpoint's relay actor."""

    def __init__(self, endpoint: Endpoint, api_key_setting: str | None, timeout_s: float, pool_size: int) -> None:
        import ray

        self.base_url = endpoint.base_url
        settings = json.dumps([endpoint.base_url, api_key_setting, timeout_s])
        self.name = f"{RELAY_PREFIX}{endpoint.endpoint_id}:{hashlib.sha256(settings.encode()).hexdigest()[:12]}"
        self._actor = _relay_class().options(
            name=self.name, namespace=relay_namespace(), lifetime="detached", get_if_exists=True,
        ).remote(endpoint.base_url, api_key_setting, timeout_s, pool_size)
        ray.get(self._actor.warm.remote())

    async def post(self, client: Any, key: str, path: str, body: dict) -> Any:
        import openai
        import ray

        try:
            status, outcome = await self._actor.post.remote(key, path, body)
        except ray.exceptions.RayActorError as exc:  # the relay died: retryable, as a dropped connection
            from resources.llm.transport import _httpx

            request = _httpx.Request("POST", f"{self.base_url}{path}")
            raise openai.APIConnectionError(message=f"the LLM relay actor died: {type(exc).__name__}",
                                            request=request) from None
        if status == "error":
            raise_error(outcome, client, self.base_url)
        return outcome

    def ack(self, key: str) -> None:
        self._actor.ack.remote(key)  # fire and forget: an unacked answer is only held longer


def relay_namespace() -> str:
    from resources.llm.cluster_limits import NAMESPACE

    return NAMESPACE
