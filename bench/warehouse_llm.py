"""Part 2 of bench/warehouse.py: LLM answers from several processes into one lake.

Each worker process opens an LLM session on the shared lake and asks the OpenAI test double
(a separate process) `answers` fresh questions; the layer caches every answer and ledgers
every call. Afterwards llm_cache must hold exactly one row per question and llm_calls one
row per call: none lost, none duplicated.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from bench.llm_throughput import start_double

ROOT = Path(__file__).resolve().parents[1]
WORKERS = 4


def llm_worker(lake_path: str, base_url: str, worker: str, answers: str) -> dict:
    from resources.llm import ChatRequest, LLMResource
    from tests.openai_double import TEST_KEY_REF
    from resources.warehouse import Warehouse

    llm = LLMResource(base_url=base_url, api_key=TEST_KEY_REF, model="gpt-4o-mini", max_concurrency=32, timeout_s=60)
    requests = [
        ChatRequest(messages=[{"role": "user", "content": f"worker {worker} question {i}"}], max_tokens=16)
        for i in range(int(answers))
    ]
    warehouse = Warehouse(path=lake_path)
    started = time.time()
    with llm.session(None, warehouse) as session:
        results = session.complete(requests)
    return {"started": started, "finished": time.time(), "ok": sum(r.ok for r in results)}


def run_llm_writers(folder: Path, answers: int) -> None:
    from resources.warehouse import Warehouse

    lake_path = str(folder / "lake-llm")
    Warehouse(path=lake_path).lake().snapshot_id()
    double, base_url = start_double(0.01)
    try:
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "bench.warehouse", "--llm-worker", lake_path, base_url, str(w), str(answers)],
                cwd=ROOT, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            for w in range(WORKERS)
        ]
        spans = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    finally:
        double.kill()
    wall = max(s["finished"] for s in spans) - min(s["started"] for s in spans)
    warehouse = Warehouse(path=lake_path).read_only()
    cache = warehouse.query("SELECT count(*) AS n, count(DISTINCT cache_key) AS keys FROM llm_cache").row(0, named=True)
    calls = warehouse.query("SELECT count(*) AS n, count(DISTINCT call_id) AS ids FROM llm_calls").row(0, named=True)
    expected = WORKERS * answers
    ok = sum(s["ok"] for s in spans)
    print(f"2. LLM answers: {WORKERS} processes x {answers:,} fresh answers through the LLM layer (test double, 10 ms latency)")
    print(f"   {expected / wall:,.0f} answers/s in all ({wall:.1f} s); answered ok: {ok:,} of {expected:,}")
    print(f"   llm_cache: {cache['n']:,} rows, {cache['keys']:,} distinct keys; llm_calls: {calls['n']:,} rows, "
          f"{calls['ids']:,} distinct call ids -> "
          f"{'none lost, none duplicated' if cache['n'] == cache['keys'] == calls['n'] == calls['ids'] == expected else 'MISMATCH'}")
