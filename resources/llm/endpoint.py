"""Which server a session talks to, and how that server is named where it is recorded.

The resource's settings win, then the environment (OPENAI_BASE_URL, OPENAI_API_KEY,
SYNTH_ASSETS_CHAT_MODEL, SYNTH_ASSETS_EMBEDDING_MODEL). With neither an api key nor a
base url the session uses the bundled llama.cpp server (`local_model.py`): one started
for the session, or the one SYNTH_ASSETS_LOCAL_MODEL_URL points at.

Two names come out of the endpoint and neither carries a secret: `endpoint_id` goes into
cache keys (the URL without credentials, or a fixed name for the local model, whose port
changes every session), `host` (host[:port]) goes into the ledger.
"""

from __future__ import annotations

import logging
import os
from contextlib import ExitStack
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from resources.llm.local_model import (
    CHAT_ALIAS,
    EMBED_ALIAS,
    LOCAL_ENDPOINT_ID,
    LocalModelServer,
    local_model_url_from_env,
)

logger = logging.getLogger(__name__)

OPENAI_BASE_URL_ENV = "OPENAI_BASE_URL"
OPENAI_API_KEY_ENV = "OPENAI_API_KEY"
CHAT_MODEL_ENV = "SYNTH_ASSETS_CHAT_MODEL"
EMBEDDING_MODEL_ENV = "SYNTH_ASSETS_EMBEDDING_MODEL"
DEFAULT_REMOTE_CHAT_MODEL = "gpt-4o-mini"
DEFAULT_REMOTE_EMBEDDING_MODEL = "text-embedding-3-small"
OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"


@dataclass
class Endpoint:
    base_url: str
    api_key: str = field(repr=False)
    endpoint_id: str
    is_local: bool
    chat_model: str
    embedding_model: str

    @property
    def host(self) -> str:
        return endpoint_host(self.base_url)

    def redact(self, text: str) -> str:
        """`text` with the api key masked: error messages from the SDK can quote it."""
        key = self.api_key
        if key and len(key) >= 4:
            text = text.replace(key, "***")
        return text


def strip_credentials(url: str) -> str:
    """scheme://host[:port]/path with no user:password, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme.lower(), netloc.lower(), parts.path.rstrip("/"), "", ""))


def endpoint_host(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{host}:{parts.port}" if parts.port else host


def resolve_endpoint(
    *,
    base_url: str | None,
    api_key: str | None,
    model: str | None,
    embedding_model: str | None,
    cache_namespace: str | None,
    local_model_log_dir: str,
    local_startup_timeout_s: float,
    stack: ExitStack,
) -> Endpoint:
    """The endpoint for one session. A local server started here is stopped when `stack`
    closes (i.e. when the session ends)."""
    api_key = api_key or os.environ.get(OPENAI_API_KEY_ENV) or None
    base_url = base_url or os.environ.get(OPENAI_BASE_URL_ENV) or None
    env_chat = os.environ.get(CHAT_MODEL_ENV) or None
    env_embed = os.environ.get(EMBEDDING_MODEL_ENV) or None
    if api_key is None and base_url is None:
        local_url = local_model_url_from_env()
        if local_url is None:
            server = LocalModelServer(local_model_log_dir, local_startup_timeout_s)
            stack.enter_context(server)
            local_url = server.base_url
            logger.info("started local llama.cpp server at %s in %.1fs (log %s)", local_url, server.startup_s, server.log_path)
        return Endpoint(
            base_url=local_url,
            api_key="local-no-key",
            endpoint_id=cache_namespace or LOCAL_ENDPOINT_ID,
            is_local=True,
            chat_model=model or env_chat or CHAT_ALIAS,
            embedding_model=embedding_model or env_embed or EMBED_ALIAS,
        )
    base_url = (base_url or OPENAI_DEFAULT_BASE_URL).rstrip("/")
    return Endpoint(
        base_url=base_url,
        api_key=api_key or "no-key",
        endpoint_id=cache_namespace or strip_credentials(base_url),
        is_local=False,
        chat_model=model or env_chat or DEFAULT_REMOTE_CHAT_MODEL,
        embedding_model=embedding_model or env_embed or DEFAULT_REMOTE_EMBEDDING_MODEL,
    )
