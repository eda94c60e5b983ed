"""Batch mode cannot pay twice: the intent is recorded before the batch is created and the
batch carries its key in provider metadata; requests map to batches one by one, so a
changed set resumes what is submitted; every terminal status is read."""

from __future__ import annotations

import json

import pytest

from resources.llm import ChatRequest, LLMResource
from resources.llm import batch as batch_module
from resources.llm import store
from tests.openai_double import OpenAIDouble, TEST_KEY_REF


class Killed(BaseException):
    """Stands for the process dying at this point (nothing catches it)."""


def make_llm(server: OpenAIDouble, **overrides) -> LLMResource:
    settings = dict(base_url=server.base_url, api_key=TEST_KEY_REF, model="gpt-4o-mini", batch_mode=True,
                    batch_poll_interval_s=0.05, batch_timeout_s=20.0, retry_base_delay_s=0.01)  # fmt: skip
    settings.update(overrides)
    return LLMResource(**settings)


def ask(i: int) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": f"batch question {i}"}])


def texts(results) -> list[str | None]:
    return [r.text for r in results]


def batch_lines(server: OpenAIDouble) -> list[list[str]]:
    """The questions each submitted batch carried, in submission order."""
    out = []
    for batch in sorted(server.batches.values(), key=lambda b: b["_created"]):
        content = server.files[batch["input_file_id"]]["content"].decode().splitlines()
        out.append(sorted(json.loads(line)["body"]["messages"][-1]["content"] for line in content if line.strip()))
    return out


def asked_counts(server: OpenAIDouble) -> dict[str, int]:
    counts: dict[str, int] = {}
    for body in server.chat_requests:
        question = body["messages"][-1]["content"]
        counts[question] = counts.get(question, 0) + 1
    return counts


def test_a_batch_created_by_a_run_killed_before_recording_it_is_found_and_resumed(warehouse, monkeypatch):
    def die_after_create(self, batch_key, batch):
        raise Killed()

    with OpenAIDouble() as server:
        monkeypatch.setattr(batch_module.BatchJobs, "_record_created", die_after_create)
        with pytest.raises(Killed):
            with make_llm(server).session(None, warehouse) as session:
                session.complete([ask(i) for i in range(3)])
        monkeypatch.undo()
        assert server.batches_created == 1
        [row] = warehouse.query("SELECT batch_key, batch_id, status FROM llm_batches").to_dicts()
        assert row["status"] == store.INTENT and row["batch_id"] is None  # the kill came before the id was stored
        [created] = server.batches.values()
        assert created["metadata"] == {batch_module.METADATA_KEY: row["batch_key"]}

        with make_llm(server).session(None, warehouse) as session:
            results = session.complete([ask(i) for i in range(3)])
        assert server.batches_created == 1  # found through batches.list, not paid again
        assert ("GET", "/v1/batches") in server.paths
    assert texts(results) == [f"echo: batch question {i}" for i in range(3)]
    [row] = warehouse.query("SELECT batch_id, status, harvested_at FROM llm_batches").to_dicts()
    assert row["batch_id"] == created["id"] and row["status"] == "completed" and row["harvested_at"] is not None


def test_an_intent_that_never_reached_the_provider_is_abandoned_and_submitted_again(warehouse, monkeypatch):
    real_intent = store.record_batch_intent

    def die_after_intent(*args, **kwargs):
        real_intent(*args, **kwargs)
        raise Killed()

    with OpenAIDouble() as server:
        monkeypatch.setattr(store, "record_batch_intent", die_after_intent)
        with pytest.raises(Killed):
            with make_llm(server).session(None, warehouse) as session:
                session.complete([ask(i) for i in range(2)])
        monkeypatch.undo()
        assert server.batches_created == 0
        with make_llm(server).session(None, warehouse) as session:
            results = session.complete([ask(i) for i in range(2)])
        assert server.batches_created == 1
    assert texts(results) == ["echo: batch question 0", "echo: batch question 1"]
    statuses = sorted(warehouse.query("SELECT status FROM llm_batches")["status"].to_list())
    assert statuses == ["completed"]  # the same key, re-recorded and created this time


def test_a_changed_set_resumes_the_open_batch_and_submits_only_the_new_requests(warehouse):
    with OpenAIDouble(batch_delay_s=2.0) as server:
        with make_llm(server, batch_timeout_s=0.2).session(None, warehouse) as session:
            waiting = session.complete([ask(i) for i in range(4)])  # gives up waiting; the batch is open
        assert [r.status for r in waiting] == ["error"] * 4

        with make_llm(server).session(None, warehouse) as session:
            changed = session.complete([ask(i) for i in range(2, 6)])
        assert texts(changed) == [f"echo: batch question {i}" for i in range(2, 6)]
        assert batch_lines(server) == [
            [f"batch question {i}" for i in range(4)],
            ["batch question 4", "batch question 5"],  # only what no open batch carried
        ]
        # questions 0 and 1 were answered by the first batch too: paid, so stored
        with make_llm(server).session(None, warehouse) as session:
            again = session.complete([ask(i) for i in range(6)])
        assert all(r.cache_hit for r in again) and server.batches_created == 2
    assert asked_counts(server) == {f"batch question {i}": 1 for i in range(6)}
    assert warehouse.query("SELECT count(*) AS n FROM llm_calls WHERE mode = 'batch' AND status = 'ok'")["n"][0] == 6


@pytest.mark.parametrize("ending", ["expired", "cancelled"])
def test_a_batch_that_ends_early_keeps_what_it_answered_and_resubmits_only_the_rest(warehouse, ending):
    with OpenAIDouble() as server:
        server.end_next_batch(ending, answered=2)
        with make_llm(server).session(None, warehouse) as session:
            first = session.complete([ask(i) for i in range(4)])
        assert texts(first)[:2] == ["echo: batch question 0", "echo: batch question 1"]
        assert [r.status for r in first] == ["ok", "ok", "error", "error"]
        assert f"batch_{ending}" in first[2].error
        [row] = warehouse.query("SELECT status, harvested_at FROM llm_batches").to_dicts()
        assert row["status"] == ending and row["harvested_at"] is not None

        with make_llm(server).session(None, warehouse) as session:
            second = session.complete([ask(i) for i in range(4)])
    assert texts(second) == [f"echo: batch question {i}" for i in range(4)]
    assert [r.cache_hit for r in second] == [True, True, False, False]
    assert batch_lines(server)[1] == ["batch question 2", "batch question 3"]
    assert asked_counts(server) == {f"batch question {i}": 1 for i in range(4)}
