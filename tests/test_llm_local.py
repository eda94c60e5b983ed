"""The real bundled model (SmolLM2-135M-Instruct on llama.cpp) through the LLM resource."""

from __future__ import annotations

import time

import numpy as np
import pytest
from pydantic import BaseModel, Field

from resources.llm import ChatRequest, LLMResource
from resources.llm.local_model import CHAT_ALIAS, EMBED_ALIAS


class Verdict(BaseModel):
    score: int = Field(ge=1, le=5)
    reason: str


@pytest.mark.slow
def test_local_model_chat_json_and_embeddings(warehouse, tmp_path, monkeypatch):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "SYNTH_ASSETS_LOCAL_MODEL_URL",
                 "SYNTH_ASSETS_CHAT_MODEL", "SYNTH_ASSETS_EMBEDDING_MODEL"):
        monkeypatch.delenv(name, raising=False)
    llm = LLMResource(local_model_log_dir=str(tmp_path / "logs"), max_concurrency=1, timeout_s=60)
    started = time.monotonic()
    with llm.session(None, warehouse) as session:
        assert session.model == CHAT_ALIAS and session.embedding_model == EMBED_ALIAS
        assert session.structured_output_mode == "json_object_schema"
        [chat] = session.complete(
            [ChatRequest(messages=[{"role": "user", "content": "Name one Python data type."}], max_tokens=24)]
        )
        [graded] = session.complete_json(
            [ChatRequest(messages=[{"role": "user", "content": "Rate `def add(a, b): return a + b` "
                                    "for teaching value from 1 to 5 as JSON."}], max_tokens=60)],
            schema=Verdict,
        )
        vectors = session.embed(["sorting a list in python", "reading a csv file"])
        metadata = session.metadata()
    assert time.monotonic() - started < 60
    assert chat.status == "ok" and chat.text.strip() and chat.completion_tokens > 0
    assert graded.status == "ok", (graded.error, graded.raw_text)
    assert 1 <= graded.parsed.score <= 5  # grammar-constrained to the schema
    assert vectors.shape[0] == 2 and vectors.shape[1] > 100 and np.isfinite(vectors).all()
    assert not np.allclose(vectors[0], vectors[1])
    assert metadata["llm/cost_usd"] == 0 and metadata["llm/cost_known"] is True
    calls = warehouse.query("SELECT * FROM llm_calls")
    assert calls.height == 4 and set(calls["status"]) == {"ok"} and calls["cost_usd"].sum() == 0
    assert (calls["latency_s"] > 0).all()  # wall time recorded for the free local model
    assert list((tmp_path / "logs").glob("llama_server_*.log"))  # its output went to a file
