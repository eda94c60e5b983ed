"""The LLM layer against a real HTTP double: cache, ledger, retries, budget, batch API, secrets."""

from __future__ import annotations

import json
import os
import logging
import time

import dagster as dg
import numpy as np
import pytest
from pydantic import BaseModel, Field

from resources.llm import ChatRequest, LLMResource, StructuredResult
from resources.llm.embeddings import mean_pool
from resources.llm.endpoint import strip_credentials
from resources.llm.pricing import price_usd
from resources.llm.ratelimit import RateLimiter
from resources.llm.store import cache_key
from resources.llm.structured import JSON_RETRY_SAMPLE_OFFSET, parse_structured, response_format_for
from resources.warehouse import Warehouse
from tests.openai_double import OpenAIDouble, chat_usage

SECRET = "sk-test-secret-3f9a1c"
SECRET_ENV = "SYNTH_TEST_LLM_SECRET"
os.environ.setdefault(SECRET_ENV, SECRET)


class Grade(BaseModel):
    educational_score: int = Field(ge=1, le=5)
    rationale: str
    tags: list[str] = Field(min_length=1)


def make_llm(server: OpenAIDouble, **overrides) -> LLMResource:
    settings = dict(
        base_url=server.base_url,
        api_key=f"env:{SECRET_ENV}",
        model="gpt-4o-mini",
        embedding_model="text-embedding-3-small",
        retry_base_delay_s=0.01,
        retry_max_delay_s=0.5,
        timeout_s=5.0,
    )
    settings.update(overrides)
    return LLMResource(**settings)


def ask(i: int, **kw) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": f"question number {i}"}], row_id=f"r{i}", **kw)


@pytest.fixture
def server():
    with OpenAIDouble() as double:
        yield double


def ledger(warehouse):
    return warehouse.query("SELECT * FROM llm_calls ORDER BY created_at")


# --------------------------------------------------------------------------- basics, cache, ledger


def test_complete_caches_before_return_and_prices_with_genai_prices(server, warehouse):
    llm = make_llm(server)
    requests = [ask(i) for i in range(5)]
    with llm.session(dg.build_asset_context(), warehouse) as session:
        results = session.complete(requests)
        metadata = session.metadata()
    assert [r.text for r in results] == [f"echo: question number {i}" for i in range(5)]
    assert [r.row_id for r in results] == [f"r{i}" for i in range(5)]
    expected_usage = chat_usage({"messages": requests[0].messages}, results[0].text)
    assert results[0].prompt_tokens == expected_usage["prompt_tokens"]
    assert results[0].completion_tokens == expected_usage["completion_tokens"]
    expected_cost = price_usd("gpt-4o-mini", expected_usage["prompt_tokens"], expected_usage["completion_tokens"])
    assert expected_cost and results[0].cost_usd == pytest.approx(expected_cost)

    cache = warehouse.query("SELECT * FROM llm_cache ORDER BY response_text")
    assert cache["response_text"].to_list() == [r.text for r in results]
    assert set(cache["cache_key"]) == {r.cache_key for r in results}
    calls = ledger(warehouse)
    assert calls.height == 5
    assert set(calls["status"]) == {"ok"} and not any(calls["cache_hit"])
    assert set(calls["endpoint_host"]) == {f"127.0.0.1:{server.port}"}
    assert set(calls["mode"]) == {"online"}
    assert calls["cost_usd"].sum() == pytest.approx(sum(r.cost_usd for r in results))
    assert metadata["llm/calls"] == 5 and metadata["llm/cache_hits"] == 0
    assert metadata["llm/cost_usd"] == pytest.approx(calls["cost_usd"].sum(), rel=1e-4)
    assert metadata["llm/model"] == "gpt-4o-mini" and metadata["llm/cost_known"] is True
    sent = server.chat_requests[0]
    assert sent["model"] == "gpt-4o-mini" and sent["max_tokens"] == 512 and sent["seed"] == 1234


def test_second_session_is_served_from_cache_with_zero_http_calls(server, warehouse):
    llm = make_llm(server)
    requests = [ask(i) for i in range(8)]
    with llm.session(None, warehouse) as session:
        first = session.complete(requests)
    n_http = len(server.requests)
    with llm.session(None, warehouse) as session:
        second = session.complete(requests)
        metadata = session.metadata()
    assert len(server.requests) == n_http == 8
    assert [r.text for r in second] == [r.text for r in first]
    assert all(r.cache_hit and r.cost_usd == 0 for r in second)
    assert metadata["llm/cache_hits"] == 8 and metadata["llm/cost_usd"] == 0
    assert metadata["llm/saved_usd"] == pytest.approx(sum(r.cost_usd for r in first), rel=1e-3)
    hits = warehouse.query("SELECT * FROM llm_calls WHERE cache_hit")
    assert hits.height == 8 and hits["cost_usd"].sum() == 0 and hits["saved_usd"].sum() > 0


def test_answers_and_ledger_rows_are_committed_before_each_call_returns(server, warehouse):
    """The session keeps one DuckDB connection open; each call's rows must still be
    committed (visible to a fresh connection) before the call returns, not at close."""
    llm = make_llm(server)
    with llm.session(None, warehouse) as session:
        first = session.complete([ask(i) for i in range(3)])
        cache = warehouse.query("SELECT cache_key, response_text FROM llm_cache")
        assert dict(zip(cache["cache_key"], cache["response_text"])) == {r.cache_key: r.text for r in first}
        assert ledger(warehouse)["cache_hit"].to_list() == [False] * 3
        again = session.complete([ask(0), ask(1)])
        calls = ledger(warehouse)
        assert [r.cache_hit for r in again] == [True, True]
        assert calls.height == 5 and calls["call_id"].n_unique() == 5
        assert calls.filter(calls["cache_hit"])["cache_key"].sort().to_list() == sorted(r.cache_key for r in again)
    assert len(server.chat_requests) == 3


def test_resume_after_crash_never_pays_twice(server, warehouse):
    llm = make_llm(server)
    requests = [ask(i) for i in range(6)]
    with pytest.raises(RuntimeError, match="asset crashed"):
        with llm.session(None, warehouse) as session:
            session.complete(requests[:4])
            raise RuntimeError("asset crashed after its calls")
    assert warehouse.query("SELECT count(*) AS n FROM llm_cache")["n"][0] == 4
    with llm.session(None, warehouse) as session:
        results = session.complete(requests)
    assert len(server.chat_requests) == 6  # 4 before the crash + only the 2 new ones
    assert [r.cache_hit for r in results] == [True] * 4 + [False] * 2


def test_cache_key_depends_on_what_determines_the_answer_not_on_credentials():
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 0.7}
    base = cache_key("https://api.example.com/v1", "chat", body, 0)
    assert cache_key("https://api.example.com/v1", "chat", body, 1) != base
    assert cache_key("https://api.example.com/v1", "chat", {**body, "model": "n"}, 0) != base
    assert cache_key("https://api.example.com/v1", "chat", {**body, "temperature": 0.2}, 0) != base
    assert strip_credentials("https://user:pw@API.example.com/v1/?key=abc#frag") == "https://api.example.com/v1"


def test_duplicate_requests_in_one_call_are_sent_once(server, warehouse):
    with make_llm(server).session(None, warehouse) as session:
        results = session.complete([ask(1), ask(1), ask(2)])
    assert len(server.chat_requests) == 2
    assert results[0].text == results[1].text and results[1].cache_hit
    assert ledger(warehouse).height == 3


def test_sample_index_draws_a_new_sample_with_its_own_seed(server, warehouse):
    with make_llm(server).session(None, warehouse) as session:
        session.complete([ask(1, sample_index=0), ask(1, sample_index=3)])
    assert sorted(b["seed"] for b in server.chat_requests) == [1234, 1237]


# --------------------------------------------------------------------------- retries and failures


def test_429_with_retry_after_is_honoured_and_every_attempt_counted(server, warehouse):
    server.fail_next(status=429, retry_after=0.2, count=2)
    started = time.monotonic()
    with make_llm(server, max_concurrency=1).session(None, warehouse) as session:
        [result] = session.complete([ask(1)])
        metadata = session.metadata()
    assert time.monotonic() - started >= 0.4  # two Retry-After waits of 0.2 s
    assert result.status == "ok" and result.attempts == 3
    assert len(server.chat_requests) == 3
    assert ledger(warehouse)["attempts"].to_list() == [3]
    assert metadata["llm/retries"] == 2


def test_5xx_retried_then_recorded_as_error_without_raising(server, warehouse):
    with make_llm(server, max_retries=3, max_concurrency=1).session(None, warehouse) as session:
        server.fail_next(status=503, count=2)
        [first] = session.complete([ask(1)])
        server.fail_next(status=500, count=10)
        [second] = session.complete([ask(2)])
        metadata = session.metadata()
    assert first.status == "ok" and first.attempts == 3
    assert second.status == "error" and "InternalServerError" in second.error and second.attempts == 4
    calls = ledger(warehouse)
    assert calls.filter(calls["status"] == "error")["error_class"].to_list() == ["InternalServerError"]
    # a failed request is not cached, so a re-run tries it again
    assert warehouse.query("SELECT count(*) AS n FROM llm_cache")["n"][0] == 1
    assert metadata["llm/failed"] == 1


def test_timeouts_are_retried(server, warehouse):
    server.hang_next(seconds=3.0)
    with make_llm(server, timeout_s=0.3).session(None, warehouse) as session:
        [result] = session.complete([ask(1)])
    assert result.status == "ok" and result.attempts == 2


def test_malformed_json_body_is_retried(server, warehouse):
    server.malformed_next(count=1)
    with make_llm(server).session(None, warehouse) as session:
        [result] = session.complete([ask(1)])
    assert result.status == "ok" and result.attempts == 2 and result.text == "echo: question number 1"


def test_client_errors_are_not_retried(server, warehouse):
    server.fail_next(status=400, count=1, message="bad request")
    with make_llm(server).session(None, warehouse) as session:
        [result] = session.complete([ask(1)])
    assert result.status == "error" and result.attempts == 1 and "BadRequestError" in result.error


def test_slow_responses_overlap_under_concurrency(warehouse):
    with OpenAIDouble(latency_s=0.2) as server:
        with make_llm(server, max_concurrency=8).session(None, warehouse) as session:
            started = time.monotonic()  # the calls only: opening the lake is not what this measures
            results = session.complete([ask(i) for i in range(16)])
            elapsed = time.monotonic() - started
    assert all(r.status == "ok" for r in results)
    assert elapsed < 16 * 0.2 / 2  # sequential would take 3.2 s; 8 in flight ~0.4 s


def test_rate_limiter_paces_requests():
    import asyncio

    async def run() -> float:
        limiter = RateLimiter(requests_per_minute=120, tokens_per_minute=None)  # 2/s, burst 20
        started = time.monotonic()
        for _ in range(22):
            await limiter.acquire(10)
        return time.monotonic() - started

    assert 0.8 <= asyncio.run(run()) < 2.0


# --------------------------------------------------------------------------- structured output


def test_complete_json_returns_validated_objects_with_openai_strict_schema(server, warehouse):
    with make_llm(server).session(None, warehouse) as session:
        results = session.complete_json([ask(1), ask(2)], schema=Grade)
    assert all(isinstance(r, StructuredResult) and r.status == "ok" for r in results)
    assert isinstance(results[0].parsed, Grade) and 1 <= results[0].parsed.educational_score <= 5
    response_format = server.chat_requests[0]["response_format"]
    assert response_format["type"] == "json_schema" and response_format["json_schema"]["strict"] is True
    schema = response_format["json_schema"]["schema"]
    assert schema["additionalProperties"] is False and set(schema["required"]) == {"educational_score", "rationale", "tags"}


def test_complete_json_retries_a_malformed_answer_once_as_a_new_sample(warehouse):
    answers = iter(['{"educational_score": 9, "rationale": "too high", "tags": ["x"]}'])

    def chat(body):
        return next(answers, '{"educational_score": 4, "rationale": "fine", "tags": ["python"]}')

    with OpenAIDouble(chat=chat) as server:
        with make_llm(server).session(None, warehouse) as session:
            [result] = session.complete_json([ask(1)], schema=Grade)
    assert result.status == "ok" and result.parsed.educational_score == 4
    seeds = [b["seed"] for b in server.chat_requests]
    assert seeds == [1234, 1234 + JSON_RETRY_SAMPLE_OFFSET]
    assert warehouse.query("SELECT count(*) AS n FROM llm_cache")["n"][0] == 2  # both answers kept
    assert result.prompt_tokens == 2 * chat_usage(server.chat_requests[0], "")["prompt_tokens"]


def test_complete_json_gives_up_after_one_retry_keeping_the_raw_text(warehouse):
    with OpenAIDouble(chat=lambda body: "Sure! The score is four.") as server:
        with make_llm(server).session(None, warehouse) as session:
            [result] = session.complete_json([ask(1)], schema=Grade)
    assert result.status == "error" and result.parsed is None
    assert result.raw_text == "Sure! The score is four." and "after one retry" in result.error
    assert len(server.chat_requests) == 2


def test_parse_structured_tolerates_fences_and_reports_schema_errors():
    parsed, why = parse_structured('```json\n{"educational_score": 3, "rationale": "ok", "tags": ["a"]}\n```', Grade)
    assert parsed.educational_score == 3 and why is None
    parsed, why = parse_structured('{"educational_score": 0, "rationale": "ok", "tags": ["a"]}', Grade)
    assert parsed is None and "educational_score" in why


def test_local_endpoints_get_llama_cpp_json_object_schema():
    response_format = response_format_for(Grade, "json_object_schema")
    assert response_format["type"] == "json_object"
    # llama.cpp's grammar ignores minimum/maximum, so a small range becomes an enum
    assert response_format["schema"]["properties"]["educational_score"]["enum"] == [1, 2, 3, 4, 5]


# --------------------------------------------------------------------------- embeddings


def test_embed_returns_mean_pooled_float32_rows_nan_for_failures_and_caches(server, warehouse):
    texts = ["sorting a list in python", "sorting a python list", "baking bread at home", ""]
    with make_llm(server).session(None, warehouse) as session:
        vectors = session.embed(texts)
        again = session.embed(texts[:3])
        metadata = session.metadata()
    assert vectors.shape == (4, 64) and vectors.dtype == np.float32
    assert np.isnan(vectors[3]).all() and not np.isnan(vectors[:3]).any()
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    np.testing.assert_allclose(again, vectors[:3], atol=1e-6)
    assert len(server.embedding_requests) == 1
    assert metadata["llm/cache_hits"] == 3 and metadata["llm/failed"] == 1
    calls = warehouse.query("SELECT * FROM llm_calls WHERE kind = 'embedding' AND NOT cache_hit AND status = 'ok'")
    assert calls.height == 3 and calls["cost_usd"].sum() > 0  # text-embedding-3-small is priced


def test_embed_mean_pools_per_token_vectors(warehouse):
    with OpenAIDouble(embed=lambda text: [[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]]) as server:
        with make_llm(server).session(None, warehouse) as session:
            vectors = session.embed(["a b c"])
    np.testing.assert_allclose(vectors, [[1.0, 1.0]])
    np.testing.assert_allclose(mean_pool([0.5, 0.25]), [0.5, 0.25])


# --------------------------------------------------------------------------- budget


def test_budget_stops_new_calls_keeps_done_work_and_resumes(warehouse):
    long_answer = "word " * 2000  # 2000 completion tokens at gpt-4o-mini's $0.60/Mtok = $0.0012 each
    with OpenAIDouble(chat=lambda body: long_answer) as server:
        llm = make_llm(server, max_concurrency=1, max_cost_usd=0.005)
        requests = [ask(i) for i in range(10)]
        with pytest.raises(dg.Failure) as failure:
            with llm.session(None, warehouse) as session:
                results = session.complete(requests)
                statuses = [r.status for r in results]
        assert "re-run" in str(failure.value.description) and "max_cost_usd" in str(failure.value.description)
        paid = statuses.count("ok")
        assert 2 <= paid <= 5 and statuses[paid:] == ["budget_exceeded"] * (10 - paid)
        spent = warehouse.query("SELECT sum(cost_usd) AS s FROM llm_calls")["s"][0]
        assert spent <= 0.005 + 0.0013
        assert len(server.chat_requests) == paid
        with make_llm(server, max_concurrency=1, max_cost_usd=1.0).session(None, warehouse) as session:
            resumed = session.complete(requests)
        assert all(r.status == "ok" for r in resumed)
        assert sum(r.cache_hit for r in resumed) == paid
        assert len(server.chat_requests) == 10  # nothing paid twice


def test_log_estimate_is_calls_times_tokens_times_price(server, warehouse):
    with make_llm(server).session(None, warehouse) as session:
        estimate = session.log_estimate(1000, 400, 200)
    assert estimate == pytest.approx(1000 * price_usd("gpt-4o-mini", 400, 200))


def test_unknown_model_price_is_null_not_zero(server, warehouse, caplog):
    """Without a budget an unpriced model may run; its cost is unknown, never $0 (with a
    budget it is a configuration error: test_llm_budget.py)."""
    caplog.set_level(logging.WARNING, logger="resources.llm.pricing")
    with make_llm(server, model="acme-private-finetune-7b", max_cost_usd=None).session(None, warehouse) as session:
        session.complete([ask(1)])
        metadata = session.metadata()
    calls = ledger(warehouse)
    assert calls["cost_usd"].to_list() == [None]
    assert metadata["llm/cost_known"] is False
    assert "acme-private-finetune-7b" in caplog.text


# --------------------------------------------------------------------------- batch API


def test_batch_mode_uses_the_batch_api_at_half_price_and_resumes(warehouse):
    with OpenAIDouble(batch_delay_s=2.0) as server:  # long enough for the first session to give up
        requests = [ask(i) for i in range(4)]
        llm = make_llm(server, batch_mode=True, batch_poll_interval_s=0.05, batch_timeout_s=0.2)
        with llm.session(None, warehouse) as session:  # gives up waiting: the batch stays submitted
            waited = session.complete(requests)
        assert all(r.status == "error" for r in waited) and server.batches_created == 1
        assert warehouse.query("SELECT status FROM llm_batches")["status"].to_list() != ["completed"]

        llm = make_llm(server, batch_mode=True, batch_poll_interval_s=0.05, batch_timeout_s=10)
        with llm.session(None, warehouse) as session:
            results = session.complete(requests)
        assert server.batches_created == 1  # picked up, not resubmitted
        assert [r.text for r in results] == [f"echo: question number {i}" for i in range(4)]
        batch_rows = warehouse.query("SELECT * FROM llm_calls WHERE mode = 'batch' AND status = 'ok'")
        assert batch_rows.height == 4
        row = batch_rows.row(0, named=True)
        online = price_usd("gpt-4o-mini", row["prompt_tokens"], row["completion_tokens"])
        assert row["cost_usd"] == pytest.approx(online / 2)
        assert warehouse.query("SELECT status FROM llm_batches")["status"].to_list() == ["completed"]
        with llm.session(None, warehouse) as session:
            cached = session.complete(requests)
        assert all(r.cache_hit for r in cached) and server.batches_created == 1


def test_batch_mode_embeds_through_the_batch_api_at_half_price_and_resumes(warehouse):
    texts = [f"text number {i} about sorting" for i in range(5)] + [""]
    with OpenAIDouble(batch_delay_s=2.0) as server:  # long enough for the first session to give up
        llm = make_llm(server, batch_mode=True, embed_batch_size=2, batch_poll_interval_s=0.05, batch_timeout_s=0.2)
        with llm.session(None, warehouse) as session:  # gives up waiting: the batch stays submitted
            waited = session.embed(texts)
        assert np.isnan(waited).all() and server.batches_created == 1
        assert not server.embedding_requests  # nothing went to the online endpoint

        llm = make_llm(server, batch_mode=True, embed_batch_size=2, batch_poll_interval_s=0.05, batch_timeout_s=10)
        with llm.session(None, warehouse) as session:
            vectors = session.embed(texts)
        assert server.batches_created == 1  # picked up, not resubmitted
        with OpenAIDouble() as online_server:  # the same texts embedded online, for comparison
            with make_llm(online_server).session(None, Warehouse(path=str(warehouse.path) + ".online")) as session:
                online = session.embed(texts)
        np.testing.assert_allclose(vectors[:5], online[:5], rtol=1e-5)
        assert np.isnan(vectors[5]).all()  # the empty text is a recorded failure, not a request
        rows = warehouse.query(
            "SELECT * FROM llm_calls WHERE kind = 'embedding' AND mode = 'batch' AND status = 'ok'"
        ).to_dicts()
        assert len(rows) == 5
        for row in rows:
            full = price_usd("text-embedding-3-small", row["prompt_tokens"], 0)
            assert row["prompt_tokens"] > 0 and row["cost_usd"] == pytest.approx(full / 2)
        batches = warehouse.query("SELECT model, n_requests, status FROM llm_batches").to_dicts()
        assert batches == [{"model": "text-embedding-3-small", "n_requests": 3, "status": "completed"}]
        with llm.session(None, warehouse) as session:
            again = session.embed(texts)
        np.testing.assert_array_equal(again[:5], vectors[:5])
        assert session.totals.cache_hits == 5 and server.batches_created == 1


# --------------------------------------------------------------------------- environment and secrets


def test_environment_alone_configures_the_endpoint(server, warehouse, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("SYNTH_ASSETS_CHAT_MODEL", "gpt-4o-mini")
    with LLMResource(retry_base_delay_s=0.01).session(None, warehouse) as session:
        [result] = session.complete([ask(1)])
    assert result.status == "ok" and session.model == "gpt-4o-mini"
    assert server.chat_requests[0]["model"] == "gpt-4o-mini"


def test_api_key_never_appears_in_logs_metadata_tables_or_errors(warehouse, caplog):
    caplog.set_level(logging.DEBUG)
    leaky_message = f"Incorrect API key provided: {SECRET}"  # some servers echo the key back

    @dg.asset
    def graded(context, llm: LLMResource) -> dg.MaterializeResult:
        with llm.session(context, warehouse) as session:
            session.log_estimate(3, 10, 10)
            results = session.complete([ask(i) for i in range(3)])
            context.log.info("errors: " + " | ".join(str(r.error) for r in results))
            return dg.MaterializeResult(metadata=session.metadata())

    with OpenAIDouble() as server:
        server.fail_next(status=401, count=1, message=leaky_message)
        server.fail_next(status=500, count=20, message=leaky_message)
        llm = make_llm(server, api_key=dg.EnvVar("SYNTH_TEST_OPENAI_KEY"), max_retries=1, max_concurrency=1)
        instance = dg.DagsterInstance.ephemeral()
        import os

        os.environ["SYNTH_TEST_OPENAI_KEY"] = SECRET
        try:
            result = dg.materialize([graded], resources={"llm": llm}, instance=instance)
        finally:
            del os.environ["SYNTH_TEST_OPENAI_KEY"]
        assert server.chat_requests  # the key was really sent to the endpoint
    assert result.success
    texts = [caplog.text, repr(llm), str(llm)]
    texts += [str(entry) for entry in instance.all_logs(result.run_id)]
    texts += [repr(event) for event in result.all_events]
    for table in ("llm_cache", "llm_calls", "llm_batches"):
        texts.append(warehouse.query(f"SELECT * FROM {table}").write_csv())
    metadata = result.asset_materializations_for_node("graded")[0].metadata
    texts.append(repr(metadata))
    errors = "".join(texts)
    assert "Incorrect API key provided: ***" in errors  # the errors were logged, redacted
    assert SECRET not in errors
    assert metadata["llm/failed"].value == 3


def test_progress_is_logged_to_the_dagster_run(warehouse):
    @dg.asset
    def slow(context, llm: LLMResource) -> dg.MaterializeResult:
        with llm.session(context, warehouse) as session:
            session.complete([ask(i) for i in range(12)])
            return dg.MaterializeResult(metadata=session.metadata())

    with OpenAIDouble(latency_s=0.1) as server:
        instance = dg.DagsterInstance.ephemeral()
        llm = make_llm(server, max_concurrency=2, progress_interval_s=0.2)
        result = dg.materialize([slow], resources={"llm": llm}, instance=instance)
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    progress = [m for m in messages if m.startswith("llm complete:")]
    assert progress and "/12 done" in progress[0] and "req/s" in progress[0] and "$" in progress[0]
    run_rows = warehouse.query("SELECT DISTINCT run_id, asset_key FROM llm_calls").rows()
    assert run_rows == [(result.run_id, "slow")]
