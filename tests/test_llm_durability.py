"""No paid answer lost: every answer is in the local journal before it is used, in the lake
within a second, kept through failed writes, drained on a run termination, and replayed
after a SIGKILL so a re-run pays only for the requests that were in flight."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import dagster as dg
from dagster._utils.interrupts import capture_interrupts
import duckdb
import pytest

from resources.llm import ChatRequest, LLMResource
from resources.llm import recorder as recorder_module
from resources.llm.journal import CACHE, LEDGER, Journal, read_segment, replay_orphans
from resources.warehouse import Warehouse
from tests.openai_double import OpenAIDouble

KEY_ENV = "SYNTH_TEST_DURABILITY_KEY"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-durability-test-0000")


def make_llm(server: OpenAIDouble, **overrides) -> LLMResource:
    settings = dict(
        base_url=server.base_url, api_key=f"env:{KEY_ENV}", model="gpt-4o-mini", timeout_s=10.0,
        retry_base_delay_s=0.01, retry_max_delay_s=0.5, max_cost_usd=None,
    )  # fmt: skip
    settings.update(overrides)
    return LLMResource(**settings)


def question(i: int) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": f"durable question {i}"}])


def asked(body: dict) -> str:
    return body["messages"][-1]["content"]


def cached_questions(warehouse: Warehouse) -> list[str]:
    rows = warehouse.query("SELECT request_json FROM llm_cache")["request_json"].to_list()
    return sorted(asked(json.loads(row)) for row in rows)


def test_answers_reach_the_lake_within_a_second_while_another_request_retries(warehouse):
    with OpenAIDouble() as server:
        server.fail_next(status=503, count=1, retry_after=4.0)  # the first request waits 4 s to retry
        llm = make_llm(server, max_concurrency=4, retry_max_delay_s=10.0)
        with llm.session(None, warehouse) as session:
            call = threading.Thread(target=session.complete, args=([question(i) for i in range(4)],))
            call.start()
            while len(server.answered) < 3:
                time.sleep(0.01)
            answered_at = time.monotonic()
            seen = []
            while call.is_alive() and len(seen) < 3:
                seen = warehouse.query("SELECT cache_key FROM llm_cache")["cache_key"].to_list()
                time.sleep(0.05)
            stored_after = time.monotonic() - answered_at
            still_retrying = call.is_alive()
            call.join()
    assert len(seen) == 3 and still_retrying  # in the lake while the fourth request still waits
    assert stored_after < 2.0  # flushed every 0.5 s; a busy machine gets slack for the commit
    assert len(cached_questions(warehouse)) == 4


def test_a_failed_write_is_kept_and_retried_never_dropped(warehouse, monkeypatch):
    real_write = recorder_module.write_rows
    failures = {"left": 3}

    def flaky_write(lake, cache_rows, ledger_rows, dedup_ledger=False):
        if failures["left"]:
            failures["left"] -= 1
            raise duckdb.IOException("IO Error: catalog unavailable (injected)")
        real_write(lake, cache_rows, ledger_rows, dedup_ledger)

    monkeypatch.setattr(recorder_module, "write_rows", flaky_write)
    with OpenAIDouble() as server:
        with make_llm(server).session(None, warehouse) as session:
            results = session.complete([question(i) for i in range(5)])
            failed_writes = session.recorder.write_failures
            journal_dir = session.recorder._journal.directory
    assert failures["left"] == 0 and failed_writes >= 1
    assert [r.status for r in results] == ["ok"] * 5
    assert cached_questions(warehouse) == sorted(f"durable question {i}" for i in range(5))
    calls = warehouse.query("SELECT call_id FROM llm_calls")
    assert calls.height == 5 and calls["call_id"].n_unique() == 5  # retried, not duplicated
    assert list(journal_dir.iterdir()) == []  # all committed: the journal is gone


def test_a_run_termination_drains_what_was_received(warehouse):
    """A Dagster run termination raises DagsterExecutionInterruptedError (not a
    KeyboardInterrupt) in the step; the answers received before it are in the lake when
    the step ends, with no later session needed to replay them."""
    n_questions = 200

    @dg.asset
    def slow_answers(context, llm: LLMResource) -> None:
        with llm.session(context, warehouse) as session:
            session.complete([question(i) for i in range(n_questions)])

    def terminate_once_answers_flow(server: OpenAIDouble, stop: threading.Event) -> None:
        while len(server.answered) < 10 and not stop.is_set():
            time.sleep(0.01)
        if not stop.is_set():
            os.kill(os.getpid(), signal.SIGINT)  # what a run worker turns a UI termination (SIGTERM) into

    with OpenAIDouble(latency_s=0.1) as server:
        stop = threading.Event()
        watcher = threading.Thread(target=terminate_once_answers_flow, args=(server, stop))
        watcher.start()
        try:
            with capture_interrupts():  # as in a run worker: the step raises DagsterExecutionInterruptedError
                result = dg.materialize(
                    [slow_answers], resources={"llm": make_llm(server, max_concurrency=2)}, raise_on_error=False
                )
        finally:
            stop.set()
            watcher.join()
        answered = sorted(asked(body) for body in server.answered)
    assert not result.success
    failure = result.failure_data_for_node("slow_answers")
    assert failure is not None and "DagsterExecutionInterruptedError" in str(failure.error)
    stored = cached_questions(warehouse)
    assert 4 <= len(stored) < n_questions
    assert set(stored) <= set(answered) and len(answered) - len(stored) <= 2  # at most the 2 in flight


# --------------------------------------------------------------------------- SIGKILL and replay


def child_session(base_url: str, lake: str, n_questions: int) -> None:
    """What the killed process runs: one session over n questions, 4 in flight."""
    llm = LLMResource(base_url=base_url, api_key=f"env:{KEY_ENV}", model="gpt-4o-mini", max_concurrency=4, max_cost_usd=None)
    with llm.session(None, Warehouse(path=lake)) as session:
        results = session.complete([question(i) for i in range(n_questions)])
    print(json.dumps(Counter(r.status for r in results)), flush=True)


def run_child(base_url: str, lake: Path, n_questions: int) -> subprocess.Popen:
    code = f"from tests.test_llm_durability import child_session; child_session({base_url!r}, {str(lake)!r}, {n_questions})"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigkill_mid_session_then_rerun_pays_only_for_requests_in_flight(tmp_path):
    n_questions, in_flight = 80, 4
    lake = tmp_path / "lake"
    with OpenAIDouble(latency_s=0.1) as server:
        child = run_child(server.base_url, lake, n_questions)
        deadline = time.monotonic() + 60
        while len(server.answered) < 20 and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        answered_before_kill = len(server.answered)
        assert child.returncode == -signal.SIGKILL and answered_before_kill < n_questions

        rerun = run_child(server.base_url, lake, n_questions)
        out, err = rerun.communicate(timeout=120)
        assert rerun.returncode == 0, err[-2000:]
        asked_counts = Counter(asked(body) for body in server.chat_requests)
    assert json.loads(out.strip().splitlines()[-1]) == {"ok": n_questions}
    assert set(asked_counts) == {f"durable question {i}" for i in range(n_questions)}
    asked_twice = [q for q, n in asked_counts.items() if n > 1]
    assert len(asked_twice) <= in_flight, f"{len(asked_twice)} answers paid twice after the kill"
    cache = Warehouse(path=str(lake)).query("SELECT cache_key FROM llm_cache")
    assert cache.height == n_questions and cache["cache_key"].n_unique() == n_questions


def test_a_live_sessions_journal_is_never_replayed_and_a_dead_ones_is(tmp_path):
    journal = Journal(tmp_path)
    journal.append(CACHE, {"cache_key": "k1", "response_text": "kept"})
    journal.append(LEDGER, {"call_id": "c1"})
    written: list[tuple[list, list]] = []
    assert replay_orphans(tmp_path, lambda cache, ledger: written.append((cache, ledger))) == (0, 0)
    assert written == []  # its flock is held: the session is alive
    journal.close(committed=False)  # what a killed process leaves behind
    segment = next(tmp_path.glob("*.jsonl"))
    with open(segment, "a") as handle:
        handle.write('{"t": "cache", "r": {"cache_ke')  # torn by the kill
    assert read_segment(segment) == ([{"cache_key": "k1", "response_text": "kept"}], [{"call_id": "c1"}])
    assert replay_orphans(tmp_path, lambda cache, ledger: written.append((cache, ledger))) == (1, 1)
    assert written == [([{"cache_key": "k1", "response_text": "kept"}], [{"call_id": "c1"}])]
    assert list(tmp_path.iterdir()) == []
