"""The compute engine: in-process by default (no Ray imported), the same results on a real
local Ray cluster (2 CPUs) with each task writing to the lake itself, a killed worker's
task retried, and one RPM limit held across processes by the cluster limiter actor."""

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


@pytest.fixture(scope="module")
def local_cluster():
    """One real local Ray cluster (2 CPUs) for the module: ~5 s to start."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield Compute(ray_address="local", num_cpus=2)
    ray.shutdown()


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
            resources={"warehouse": warehouse, "llm": LLMResource(base_url="http://127.0.0.1:9", api_key=TEST_KEY_REF)},
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
