"""The compute engine: in-process by default (no Ray imported), the same results on a real
local Ray cluster (2 CPUs) with each task writing to the lake itself, a killed worker's
task retried (its LLM calls paid once: the retry gets the dead worker's answers from the
cache and its journal), and one RPM limit held across processes by the cluster limiter actor."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from resources.compute import Compute, InProcessEngine
from resources.llm.cluster_limits import ClusterRateLimiter, RateSchedule
from resources.warehouse import Warehouse

pytestmark = pytest.mark.timeout(300)


def square_shard(item: tuple[str, int]) -> dict:
    """A shard task as the pipeline writes them: read nothing large from the driver, write
    the shard's rows to the lake itself (idempotently: replace the shard), return a summary."""
    lake_path, shard = item
    rows = pl.DataFrame({"shard": [shard] * 50, "value": [shard * 1000 + i * i for i in range(50)]})
    Warehouse(path=lake_path).write_table(f"shard_{shard:03d}", rows)
    return {"shard": shard, "rows": rows.height, "pid": os.getpid()}


def dies_once(item: tuple[str, int]) -> dict:
    """Kills its worker process on the first attempt for shard 1 (a marker file says whether
    it ran before), as a node failure would."""
    marker, shard = item
    if shard == 1 and not Path(marker).exists():
        Path(marker).write_text("died")
        os._exit(1)
    return {"shard": shard, "pid": os.getpid()}


def test_the_default_runs_in_process_without_importing_ray(tmp_path):
    code = (
        "import sys\nfrom resources.compute import Compute\n"
        "with Compute(ray_address=None).engine() as engine:\n"
        "    print(engine.name, list(engine.map(lambda x: x * 2, [1, 2, 3])), 'ray' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.split() == ["in-process", "[2,", "4,", "6]", "False"]
    assert Compute(ray_address=None).distributed is False
    assert isinstance(InProcessEngine(), InProcessEngine)


def test_a_ray_cluster_writes_the_same_tables_as_in_process(tmp_path, local_cluster):
    in_process, on_ray = str(tmp_path / "in_process"), str(tmp_path / "ray")
    with Compute(ray_address=None).engine() as engine:
        local = sorted((r["shard"], r["rows"]) for r in engine.map(square_shard, [(in_process, s) for s in range(6)]))
    with local_cluster.engine() as engine:
        assert engine.name == "ray" and engine.workers == 2
        results = list(engine.map(square_shard, [(on_ray, s) for s in range(6)]))
    assert sorted((r["shard"], r["rows"]) for r in results) == local
    assert len({r["pid"] for r in results} - {os.getpid()}) >= 1  # ran in Ray's worker processes
    for shard in range(6):
        table = f"shard_{shard:03d}"
        expected = Warehouse(path=in_process).read_only().query(f"SELECT * FROM {table} ORDER BY value")
        assert Warehouse(path=on_ray).read_only().query(f"SELECT * FROM {table} ORDER BY value").equals(expected)


def test_a_task_whose_worker_dies_is_retried(tmp_path, local_cluster):
    marker = str(tmp_path / "died-once")
    with local_cluster.engine() as engine:
        results = sorted(r["shard"] for r in engine.map(dies_once, [(marker, s) for s in range(4)]))
    assert results == [0, 1, 2, 3] and Path(marker).read_text() == "died"


def paced_calls(item: tuple[str, int, float]) -> list[float]:
    """One worker process sending `n` calls through the cluster-wide limiter."""
    endpoint_id, n, rpm = item

    async def go() -> list[float]:
        limiter = ClusterRateLimiter(endpoint_id, requests_per_minute=rpm, tokens_per_minute=None, burst_seconds=0)
        stamps = []
        for _ in range(n):
            await limiter.acquire(10)
            stamps.append(time.time())
        return stamps

    return asyncio.run(go())


def test_one_rpm_limit_holds_across_worker_processes(local_cluster):
    rpm = 240.0  # 4 requests a second for the whole cluster, however many processes ask
    with local_cluster.engine() as engine:
        per_worker = list(engine.map(paced_calls, [("double-a", 12, rpm), ("double-a", 12, rpm)]))
    stamps = sorted(t for worker in per_worker for t in worker)
    observed = (len(stamps) - 1) / (stamps[-1] - stamps[0]) * 60
    assert rpm * 0.93 <= observed <= rpm, observed  # scheduled at 99% of the limit
    # a separate endpoint has its own schedule
    with local_cluster.engine() as engine:
        other = list(engine.map(paced_calls, [("double-b", 3, 6000.0)]))[0]
    assert other[-1] - other[0] < 1.0


def test_the_schedule_books_requests_and_tokens_in_arrival_order():
    strict = RateSchedule(60, None, burst_seconds=0)
    assert [strict.reserve(0, 100.0) for _ in range(3)] == [0.0, 1.0, 2.0]
    bursty = RateSchedule(60, None)  # the local limiter's ten-second burst
    waits = [bursty.reserve(0, 100.0) for _ in range(12)]
    assert waits[:10] == [0.0] * 10 and waits[10:] == [1.0, 2.0]
    tokens = RateSchedule(None, 600, burst_seconds=0)  # 10 tokens a second
    assert [tokens.reserve(20, 100.0) for _ in range(3)] == [0.0, 2.0, 4.0]


def llm_layer_calls(item: tuple[str, str, int, int]) -> int:
    """A Ray worker asking through the LLM layer (cache, ledger, retries, transport)."""
    from resources.llm import ChatRequest, LLMResource
    from tests.openai_double import TEST_KEY_REF

    base_url, lake_path, n, rpm = item
    llm = LLMResource(base_url=base_url, api_key=TEST_KEY_REF, model="gpt-4o-mini", requests_per_minute=rpm,
                      max_concurrency=n, max_cost_usd=None)
    requests = [ChatRequest(messages=[{"role": "user", "content": f"section {os.getpid()}-{i}"}]) for i in range(n)]
    with llm.session(None, Warehouse(path=lake_path)) as session:
        return sum(result.ok for result in session.complete(requests))


def test_the_llm_layer_on_ray_workers_paces_the_whole_cluster(tmp_path, local_cluster):
    from tests.openai_double import OpenAIDouble

    arrivals: list[float] = []

    def answer(body: dict) -> str:
        arrivals.append(time.time())
        return "ok"

    rpm = 240  # each worker alone would burst all 10 at once with a process-local limiter
    with OpenAIDouble(chat=answer) as server, local_cluster.engine() as engine:
        items = [(server.base_url, str(tmp_path / "lake"), 10, rpm)] * 2
        assert sum(engine.map(llm_layer_calls, items)) == 20
    stamps = sorted(arrivals)
    observed = (len(stamps) - 1) / (stamps[-1] - stamps[0]) * 60
    assert rpm * 0.9 <= observed <= rpm, observed


def budgeted_calls(item: tuple[str, str, int, float]) -> int:
    """A Ray worker spending for one materialization (the same run id and asset as the
    other worker), one request at a time, under a budget."""
    import dagster as dg

    from resources.compute import TaskContext
    from resources.llm import ChatRequest, LLMResource
    from tests.openai_double import TEST_KEY_REF

    base_url, lake_path, n, budget = item
    llm = LLMResource(base_url=base_url, api_key=TEST_KEY_REF, model="gpt-4o-mini", max_concurrency=1,
                      max_cost_usd=budget)
    requests = [ChatRequest(messages=[{"role": "user", "content": f"w {os.getpid()}-{i}"}], max_tokens=1000)
                for i in range(n)]
    try:
        with llm.session(TaskContext("run-budget", dg.AssetKey("synthetic_textbook")), Warehouse(path=lake_path)) as s:
            return sum(result.ok for result in s.complete(requests))
    except dg.Failure:  # the budget stopped this process's calls: what it got is in the ledger
        return -1


def test_one_materialization_budget_binds_across_worker_processes(tmp_path, local_cluster):
    from tests.openai_double import OpenAIDouble

    lake = str(tmp_path / "lake")
    # 1,000 words an answer: at gpt-4o-mini's $0.60/Mtok output, ~$0.0006 a call, so
    # $0.006 pays for ~10 calls in all; each worker alone would spend up to that.
    budget = 0.006
    with OpenAIDouble(chat=lambda body: "word " * 1000) as server, local_cluster.engine() as engine:
        list(engine.map(budgeted_calls, [(server.base_url, lake, 12, budget)] * 2))
    ledger = Warehouse(path=lake).read_only().query(
        "SELECT run_id, asset_key, status, cost_usd FROM llm_calls"
    )
    ok = ledger.filter(pl.col("status") == "ok")
    assert set(ledger["run_id"]) == {"run-budget"} and set(ledger["asset_key"]) == {"synthetic_textbook"}
    assert ok["cost_usd"].sum() <= budget
    assert 6 <= ok.height <= 10, ok.height  # not ~20, as two process-local budgets would allow
    assert (ledger["status"] == "budget_exceeded").sum() == 24 - ok.height


def test_filtered_textbook_on_a_ray_cluster_equals_the_in_process_run(tmp_path, local_cluster, monkeypatch):
    """The scoring branch materialized twice on the same corpus and classifier: in-process,
    then with RAY_ADDRESS naming the (already running) local cluster, where each shard of
    the corpus is a Ray task writing its own table. Same scores, same kept rows."""
    import dagster as dg

    from resources.llm import LLMResource
    from synth_assets.filtering.features import HASHED_NGRAMS
    from synth_assets.filtering.filtered_textbook import filtered_textbook
    from tests.openai_double import TEST_KEY_REF
    from tests.test_classify import labelled_corpus, raw_stack_plus_rows
    from tests.test_filter import corpus, install_model

    tables = {}
    for mode in ("in-process", "ray"):
        warehouse = Warehouse(path=str(tmp_path / mode))
        install_model(warehouse, tmp_path / mode, HASHED_NGRAMS)
        warehouse.write_table("raw_stack_plus", raw_stack_plus_rows(corpus(40, 30) + labelled_corpus(12, 12)[1][:4]))
        if mode == "ray":
            monkeypatch.setenv("RAY_ADDRESS", "local")
        else:
            monkeypatch.delenv("RAY_ADDRESS", raising=False)
        result = dg.materialize(
            [filtered_textbook],
            resources={"compute": Compute(), "warehouse": warehouse, "llm": LLMResource(base_url="http://127.0.0.1:9", api_key=TEST_KEY_REF)},
        )
        assert result.success
        (event,) = result.asset_materializations_for_node("filtered_textbook")
        assert event.metadata["compute"].value == mode
        reader = warehouse.read_only()
        tables[mode] = (
            reader.query("SELECT doc_id, quality_score, kept, reason FROM textbook_scores ORDER BY doc_id"),
            reader.query("SELECT doc_id, quality_score FROM filtered_textbook ORDER BY doc_id"),
        )
        leftovers = reader.query("SELECT table_name FROM information_schema.tables WHERE table_name LIKE '_textbook_raw%'")
        assert leftovers.height == 0
    assert tables["ray"][0].height == 74
    # the models were trained identically (seeded), so the scores must match exactly
    assert tables["ray"][0].drop("quality_score").equals(tables["in-process"][0].drop("quality_score"))
    assert (tables["ray"][0]["quality_score"] - tables["in-process"][0]["quality_score"]).abs().max() < 1e-12
    assert tables["ray"][1]["doc_id"].equals(tables["in-process"][1]["doc_id"])


# --------------------------------------------------------------------------- a killed worker pays nothing twice

RETRY_TASKS, RETRY_CALLS, IN_LAKE_BEFORE_KILL = 3, 5, 2  # the dying attempt's 3rd answer is in its journal only
DYING_TASK = 0


def question(task: int, i: int) -> str:
    return f"task {task} question {i}"


def chats_then_dies_once(item: tuple[str, str, str, int | None, int]) -> dict:
    """One partition's LLM work on a Ray worker: RETRY_CALLS chat calls, one at a time,
    through the real session (cache, journal, ledger) on the shared lake. The dying task's
    first attempt gets IN_LAKE_BEFORE_KILL answers committed to the lake, waits until every
    other task has its session open (so no other session starts after the kill and replays
    the dead one's journal: only the retry may), then gets one more answer and SIGKILLs its
    own process after that answer is journaled and before it is committed: a worker lost
    between an answer arriving and its write to the lake."""
    import signal

    import dagster as dg

    from resources.compute import TaskContext
    from resources.llm import ChatRequest, LLMResource
    from tests.openai_double import TEST_KEY_REF

    base_url, lake_path, markers, dying, task = item
    marker = Path(markers) / "died"
    first_attempt = task == dying and not marker.exists()
    in_lake_before = None
    if task == dying and not first_attempt:  # the retry: what of this task did the lake hold when it started?
        in_lake_before = Warehouse(path=lake_path).read_only().query(
            f"SELECT count(*) AS n FROM llm_cache WHERE request_json LIKE '%task {task} question%'"
        )["n"][0]
    llm = LLMResource(base_url=base_url, api_key=TEST_KEY_REF, model="gpt-4o-mini", max_cost_usd=None,
                      max_concurrency=1)
    context = TaskContext("run-retried", dg.AssetKey("retried_partition"), f"p{task}")
    answers = []
    with llm.session(context, Warehouse(path=lake_path)) as session:
        (Path(markers) / f"open-{task}-{os.getpid()}").touch()
        for i in range(RETRY_CALLS):
            if first_attempt and i == IN_LAKE_BEFORE_KILL:
                deadline = time.monotonic() + 60
                while len(list(Path(markers).glob("open-*"))) < RETRY_TASKS:  # this attempt's marker included
                    if time.monotonic() > deadline:
                        raise TimeoutError("the other tasks never opened their sessions")
                    time.sleep(0.05)
                marker.write_text(str(os.getpid()))
                recorder = session.recorder

                def die_once_journaled() -> bool:
                    # the ledger row is kept right after the cache row: both are in the journal
                    if recorder._ledger_rows:
                        os.kill(os.getpid(), signal.SIGKILL)
                    return True  # nothing taken from the buffer: the rows stay pending

                recorder.flush = die_once_journaled  # the flusher thread and complete() call it
            (result,) = session.complete([ChatRequest(messages=[{"role": "user", "content": question(task, i)}])])
            assert result.ok, result.error
            answers.append(result.text)
        hits = session.totals.cache_hits
    return {"task": task, "answers": answers, "pid": os.getpid(), "cache_hits": hits, "in_lake_before": in_lake_before}


def test_a_killed_workers_retry_pays_for_no_answer_twice(tmp_path, local_cluster):
    """Three partitions' LLM work as Ray tasks, all running at once (half a CPU each); one
    worker is SIGKILLed mid-partition with two answers committed and a third only in its
    journal. Ray retries the task in a new worker process, whose session replays the dead
    one's journal and finds all three answers cached: the test server answers every
    distinct request exactly once, and the ledger holds each paid call once."""
    from collections import Counter

    from tests.openai_double import OpenAIDouble

    with OpenAIDouble() as server:  # in-process: the same work, nothing killed
        in_process = str(tmp_path / "lake-in-process")
        items = [(server.base_url, in_process, str(tmp_path), None, t) for t in range(RETRY_TASKS)]
        with Compute(ray_address=None).engine() as engine:
            expected = {r["task"]: r["answers"] for r in engine.map(chats_then_dies_once, items)}

    markers = tmp_path / "markers"
    markers.mkdir()
    lake = str(tmp_path / "lake")
    compute = local_cluster.model_copy(update={"num_cpus_per_task": 0.5})
    with OpenAIDouble(latency_s=0.05) as server:
        items = [(server.base_url, lake, str(markers), DYING_TASK, t) for t in range(RETRY_TASKS)]
        with compute.engine() as engine:
            assert engine.workers == 4 and engine.max_task_retries >= 1
            results = {r["task"]: r for r in engine.map(chats_then_dies_once, items)}
        asked = Counter(body["messages"][-1]["content"] for body in server.chat_requests)
        answered = len(server.answered)

    everything = {question(t, i) for t in range(RETRY_TASKS) for i in range(RETRY_CALLS)}
    assert {t: r["answers"] for t, r in results.items()} == expected
    assert sorted(expected) == list(range(RETRY_TASKS)) and all(len(a) == RETRY_CALLS for a in expected.values())
    # the task was killed once, and retried in another worker process
    died_pid = int((markers / "died").read_text())
    retried = results[DYING_TASK]
    assert retried["pid"] != died_pid and died_pid != os.getpid()
    # the retry started with 2 of its answers in the lake and the 3rd only in the dead
    # worker's journal, and got all 3 from the cache
    assert retried["in_lake_before"] == IN_LAKE_BEFORE_KILL
    assert retried["cache_hits"] == IN_LAKE_BEFORE_KILL + 1
    assert all(r["cache_hits"] == 0 for t, r in results.items() if t != DYING_TASK)
    # no request reached the server twice
    assert set(asked) == everything and max(asked.values()) == 1, asked.most_common(3)
    assert answered == len(everything)
    # the ledger: each paid call once (the dead attempt's 3 included), the retry's 3 hits free
    ledger = Warehouse(path=lake).read_only().query(
        "SELECT partition, cache_key, cache_hit, status, cost_usd FROM llm_calls WHERE run_id = 'run-retried'"
    )
    assert (ledger["status"] == "ok").all()
    paid = ledger.filter(~pl.col("cache_hit"))
    assert paid.height == len(everything) and paid["cache_key"].n_unique() == len(everything)
    assert (paid["cost_usd"] > 0).all()
    hits = ledger.filter(pl.col("cache_hit"))
    assert hits.height == IN_LAKE_BEFORE_KILL + 1 and set(hits["partition"]) == {f"p{DYING_TASK}"}
    assert set(hits["cache_key"]) <= set(paid["cache_key"]) and (hits["cost_usd"] == 0).all()
    cached = Warehouse(path=lake).read_only().query("SELECT DISTINCT cache_key FROM llm_cache")
    assert set(cached["cache_key"]) == set(paid["cache_key"])


# --------------------------------------------------------------------------- the corpus shards on Ray


IN_FLIGHT = 4


def dies_with_requests_in_flight(item: tuple[str, str, str]) -> dict:
    """IN_FLIGHT chat requests at once through the real session on a Ray worker. On its
    first attempt the worker SIGKILLs itself while all of them are in flight (sent, the
    double still answering): a node lost mid-request."""
    import signal
    import threading

    import dagster as dg
    import ray

    from resources.compute import TaskContext
    from resources.llm import ChatRequest, LLMResource
    from resources.llm.relay import relay_namespace
    from tests.openai_double import TEST_KEY_REF

    base_url, lake_path, markers = item
    marker = Path(markers) / "died-in-flight"
    llm = LLMResource(base_url=base_url, api_key=TEST_KEY_REF, model="gpt-4o-mini", max_cost_usd=None,
                      max_concurrency=IN_FLIGHT)
    context = TaskContext("run-in-flight", dg.AssetKey("in_flight"), None)
    with llm.session(context, Warehouse(path=lake_path)) as session:
        if not marker.exists():
            marker.write_text(str(os.getpid()))

            def kill_when_all_in_flight() -> None:
                relay = ray.get_actor(session.chat.relay.name, namespace=relay_namespace())
                deadline = time.monotonic() + 60
                while ray.get(relay.stats.remote())["posts"] < IN_FLIGHT and time.monotonic() < deadline:
                    time.sleep(0.05)
                os.kill(os.getpid(), signal.SIGKILL)

            threading.Thread(target=kill_when_all_in_flight, daemon=True).start()
        results = session.complete([ChatRequest(messages=[{"role": "user", "content": f"in flight {i}"}])
                                    for i in range(IN_FLIGHT)])
    return {"answers": [r.text for r in results], "ok": all(r.ok for r in results), "pid": os.getpid()}


def test_a_worker_killed_with_requests_in_flight_gets_them_answered_once(tmp_path, local_cluster):
    """A task's requests go out through its endpoint's relay actor (resources/llm/relay.py):
    a worker killed while its requests are in flight leaves them to the relay, and the
    retried task gets those answers from it. The endpoint answers each request once, and
    the ledger holds each paid call once. (Sent from the task itself, every request in
    flight at the kill would be answered, and paid, twice.)"""
    from collections import Counter

    from tests.openai_double import OpenAIDouble

    markers = tmp_path / "markers"
    markers.mkdir()
    lake = str(tmp_path / "lake")
    with OpenAIDouble(latency_s=2.0) as server:
        with local_cluster.engine() as engine:
            (result,) = list(engine.map(dies_with_requests_in_flight, [(server.base_url, lake, str(markers))]))
        answered = Counter(body["messages"][-1]["content"] for body in server.answered)
    died_pid = int((markers / "died-in-flight").read_text())
    assert result["ok"] and result["pid"] != died_pid  # retried in another worker process
    assert answered == {f"in flight {i}": 1 for i in range(IN_FLIGHT)}
    ledger = Warehouse(path=lake).read_only().query(
        "SELECT cache_key, status, cache_hit FROM llm_calls WHERE run_id = 'run-in-flight'")
    assert ledger.height == IN_FLIGHT and ledger["cache_key"].n_unique() == IN_FLIGHT
    assert (ledger["status"] == "ok").all() and not ledger["cache_hit"].any()


def test_the_relay_raises_an_endpoints_errors_in_the_task_as_they_were():
    """Errors cross from the relay actor as data and come back as the `openai` exceptions
    (or JSON decode error) they were, so the task's retries classify them as before."""
    import json

    import openai

    from resources.llm.relay import describe_error, raise_error
    from resources.llm.retries import is_retryable, retry_after_s
    from resources.llm.transport import _httpx as httpx2

    client = openai.AsyncOpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1")
    request = httpx2.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    limited = client._make_status_error(
        "slow down", body={"error": {"message": "slow down"}},
        response=httpx2.Response(429, headers={"retry-after": "3"}, request=request))
    refused = client._make_status_error("bad", body=None, response=httpx2.Response(400, request=request))
    cases = [(limited, openai.RateLimitError, True), (refused, openai.BadRequestError, False),
             (openai.APITimeoutError(request=request), openai.APITimeoutError, True),
             (json.JSONDecodeError("Expecting value", "<html>", 0), json.JSONDecodeError, True)]
    for error, kind, retryable in cases:
        described = describe_error(error)
        json.dumps(described)  # plain data: crosses Ray as it is
        with pytest.raises(kind) as raised:
            raise_error(described, client, "http://127.0.0.1:9/v1")
        assert is_retryable(raised.value) is retryable
    with pytest.raises(openai.RateLimitError) as raised:
        raise_error(describe_error(limited), client, "http://127.0.0.1:9/v1")
    assert retry_after_s(raised.value) == 3.0


def test_the_corpus_shards_on_a_ray_cluster_equal_the_in_process_run(tmp_path, local_cluster, monkeypatch):
    """raw_stack_plus on a tree cut into 4 shards, twice on fresh lakes: in-process, then with
    RAY_ADDRESS naming the local cluster, where each shard is a Ray task that reads its files
    and publishes its rows itself. Same stored shards, same deduplicated corpus."""
    import dagster as dg

    from synth_assets.ingest.raw_stack_plus import raw_stack_plus
    from tests.test_corpus_shards import settings, write_tree

    tree = tmp_path / "tree"
    write_tree(tree, 24, copies=4)
    monkeypatch.setenv("SYNTH_ASSETS_CORPUS_PATHS", str(tree))
    settings(tmp_path, monkeypatch, files_per_shard=10)
    tables = {}
    for mode in ("in-process", "ray"):
        if mode == "ray":
            monkeypatch.setenv("RAY_ADDRESS", "local")
        else:
            monkeypatch.delenv("RAY_ADDRESS", raising=False)
        warehouse = Warehouse(path=str(tmp_path / mode))
        with dg.instance_for_test() as instance:
            result = dg.materialize([raw_stack_plus], resources={"compute": Compute(), "warehouse": warehouse}, instance=instance)
            metadata = result.asset_materializations_for_node("raw_stack_plus")[0].metadata
            assert metadata["compute"].value == mode and metadata["shards_ingested_here"].value == 4
        tables[mode] = ingested_tables(warehouse)
    assert tables["ray"][0].height == 4 and tables["ray"][3].height >= 8
    for ray_table, local_table in zip(tables["ray"], tables["in-process"]):
        assert ray_table.equals(local_table)


def ingested_tables(warehouse: Warehouse) -> list[pl.DataFrame]:
    """What raw_stack_plus stored, in a stable order: the shard manifest, the documents,
    the deduplicated corpus and the removed duplicates."""
    reader = warehouse.read_only()
    return [
        reader.query("SELECT shard, documents, rejected, fingerprint FROM corpus_shard_manifest ORDER BY shard"),
        reader.query("SELECT shard, seq, doc_id, origin FROM corpus_documents ORDER BY shard, seq"),
        reader.query("SELECT doc_id, origin, shard FROM raw_stack_plus ORDER BY doc_id"),
        reader.query("SELECT doc_id, near_duplicate_of, reason, jaccard FROM dedup_removed ORDER BY doc_id, origin"),
    ]
