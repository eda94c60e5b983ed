"""Batch mode cannot pay twice: the intent is recorded before the batch is created and the
batch carries its key in provider metadata; requests map to batches one by one, so a
changed set resumes what is submitted; every terminal status is read."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from resources.llm import ChatRequest, LLMResource
from resources.llm import batch as batch_module
from resources.llm import store
from resources.warehouse import Warehouse
from tests.openai_double import OpenAIDouble, TEST_KEY_REF
from tests.postgres_server import PostgresUnavailable, postgres_server

REPO = Path(__file__).resolve().parent.parent


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


# --------------------------------------------------------------------------- two runs, one key


def child_claims_together(base_url: str, lake_settings: dict, door: str, n_questions: int) -> None:
    """One of two processes asking the same questions in batch mode. Both are held at the
    claim until both have reached it, so they race for the same batch key."""
    real_claim = store.record_batch_intent

    def claim_together(*args, **kwargs):
        Path(door, str(os.getpid())).touch()
        deadline = time.monotonic() + 60
        while len(os.listdir(door)) < 2 and time.monotonic() < deadline:
            time.sleep(0.002)
        return real_claim(*args, **kwargs)

    store.record_batch_intent = claim_together
    llm = make_llm_at(base_url)
    with llm.session(None, Warehouse(**lake_settings)) as session:
        results = session.complete([ask(i) for i in range(n_questions)])
    print(json.dumps({"texts": texts(results), "hits": [r.cache_hit for r in results]}), flush=True)


def make_llm_at(base_url: str) -> LLMResource:
    return LLMResource(base_url=base_url, api_key=TEST_KEY_REF, model="gpt-4o-mini", batch_mode=True,
                       batch_poll_interval_s=0.05, batch_timeout_s=60.0, retry_base_delay_s=0.01)  # fmt: skip


@pytest.fixture(params=["sqlite", "postgres"])
def lake_settings(request, tmp_path) -> Iterator[dict]:
    """The lake both processes share: the default SQLite catalog, or PostgreSQL (where
    concurrent inserts do not conflict by themselves)."""
    if request.param == "sqlite":
        yield {"path": str(tmp_path / "lake")}
        return
    try:
        server = postgres_server()
        libpq = server.__enter__()
    except PostgresUnavailable as exc:
        pytest.skip(f"PostgreSQL could not be started: {exc}")
    try:
        yield {"path": str(tmp_path / "lake"), "catalog": f"postgres:{libpq}", "data_path": str(tmp_path / "lake-data") + "/"}
    finally:
        server.__exit__(None, None, None)


def test_two_processes_meeting_the_same_batch_key_create_one_batch(tmp_path, lake_settings):
    n_questions = 5
    door = tmp_path / "door"
    door.mkdir()
    with OpenAIDouble(batch_delay_s=1.0) as server:
        code = (
            "import json, sys; from tests.test_llm_batch import child_claims_together; "
            "child_claims_together(sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4]))"
        )
        args = [server.base_url, json.dumps(lake_settings), str(door), str(n_questions)]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        children = [
            subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        outputs = []
        for child in children:
            out, err = child.communicate(timeout=120)
            assert child.returncode == 0, err[-3000:]
            outputs.append(json.loads(out.strip().splitlines()[-1]))
        assert len(os.listdir(door)) == 2  # both reached the claim
        assert server.batches_created == 1  # the second run waited for the first one's batch
    expected = [f"echo: batch question {i}" for i in range(n_questions)]
    assert [out["texts"] for out in outputs] == [expected, expected]
    assert asked_counts(server) == {f"batch question {i}": 1 for i in range(n_questions)}
    [row] = Warehouse(**lake_settings).query("SELECT status, harvested_at, claimed_by FROM llm_batches").to_dicts()
    assert row["status"] == "completed" and row["harvested_at"] is not None
    assert json.loads(row["claimed_by"])["pid"] in {child.pid for child in children}


def child_killed_after_create(base_url: str, lake: str, n_questions: int) -> None:
    """A batch-mode session whose process is SIGKILLed right after the provider created its
    batch, before the batch id is recorded (its intent lease stays behind, unlocked)."""

    def die(self, batch_key, batch):
        os.kill(os.getpid(), signal.SIGKILL)

    batch_module.BatchJobs._record_created = die
    with make_llm_at(base_url).session(None, Warehouse(path=lake)) as session:
        session.complete([ask(i) for i in range(n_questions)])


def test_a_batch_run_sigkilled_between_submit_and_record_is_found_by_the_rerun(tmp_path):
    lake = str(tmp_path / "lake")
    with OpenAIDouble(batch_delay_s=0.5) as server:
        code = f"from tests.test_llm_batch import child_killed_after_create; child_killed_after_create({server.base_url!r}, {lake!r}, 3)"
        child = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                               capture_output=True, text=True, timeout=120)  # fmt: skip
        assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
        assert server.batches_created == 1
        [row] = Warehouse(path=lake).query("SELECT status, batch_id, claimed_by FROM llm_batches").to_dicts()
        assert row["status"] == store.INTENT and row["batch_id"] is None
        assert Path(json.loads(row["claimed_by"])["lease"]).exists()  # left by the kill, its lock gone with it

        with make_llm(server).session(None, Warehouse(path=lake)) as session:
            results = session.complete([ask(i) for i in range(3)])
        assert server.batches_created == 1  # found by its metadata tag, not paid again
    assert texts(results) == [f"echo: batch question {i}" for i in range(3)]
    assert asked_counts(server) == {f"batch question {i}": 1 for i in range(3)}
    [row] = Warehouse(path=lake).query("SELECT status, batch_id, harvested_at FROM llm_batches").to_dicts()
    assert row["status"] == "completed" and row["batch_id"] and row["harvested_at"] is not None
