"""LLM layer throughput against the OpenAI double (a separate aiohttp process, fixed latency).

    .venv/bin/python -m bench.llm_throughput [--latency 0.05] [--concurrency 1 16 64 256]

For each concurrency N it sends 32 fresh (uncached) requests per slot through `LLMSession.complete`
and through a plain `AsyncOpenAI` + `asyncio.gather` baseline (default httpx transport,
same N via a semaphore, no cache, no ledger), and prints requests/second, the ideal N/L,
the fraction reached and client CPU ms per request. Then the same requests again, now
all cache hits, to compare hit and miss speed. Client CPU is this process's CPU time
(the double runs in its own process); on a shared machine wall-clock figures are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid

import openai

from resources.llm import ChatRequest, LLMResource
from resources.warehouse import Warehouse
from tests.openai_double import TEST_KEY_REF

TARGET_FRACTION_UP_TO_16 = 0.8
TARGET_VS_BASELINE_AT_64 = 1.5
TARGET_HIT_SPEEDUP = 20.0


def start_double(latency_s: float) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.openai_double", "--latency", str(latency_s)],
        stdout=subprocess.PIPE,
        text=True,
    )
    base_url = process.stdout.readline().strip()
    if not base_url.startswith("http"):
        process.kill()
        raise RuntimeError("the OpenAI double did not start")
    return process, base_url


def requests_for(n: int, tag: str) -> list[ChatRequest]:
    return [
        ChatRequest(messages=[{"role": "user", "content": f"bench {tag} request {i}: write a haiku"}], max_tokens=64)
        for i in range(n)
    ]


def n_requests_for(concurrency: int) -> int:
    """32 requests per slot (64 at least, 2048 at most): enough that the fixed costs of one
    `complete()` call (one cache lookup for all keys, opening N connections, the durable
    write of every answer before it returns: ~30 ms together) are a few percent of the
    run, as in the pipeline's calls of hundreds to thousands of requests."""
    return min(2048, max(64, concurrency * 32))


def run_resource(base_url: str, warehouse: Warehouse, concurrency: int, requests: list[ChatRequest]) -> tuple[float, float]:
    llm = LLMResource(
        base_url=base_url, api_key=TEST_KEY_REF, model="gpt-4o-mini", max_concurrency=concurrency,
        max_cost_usd=None, progress_interval_s=3600,
    )  # fmt: skip
    with llm.session(None, warehouse) as session:
        session.complete(requests[:1])  # warm the connection and the tables, like a real run's first call
        wall0, cpu0 = time.perf_counter(), time.process_time()
        results = session.complete(requests[1:])
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    bad = [r for r in results if r.status != "ok"]
    if bad:
        raise RuntimeError(f"{len(bad)} failed: {bad[0].error}")
    return wall, cpu


def run_baseline(base_url: str, concurrency: int, requests: list[ChatRequest]) -> tuple[float, float]:
    async def go() -> tuple[float, float]:
        client = openai.AsyncOpenAI(base_url=base_url, api_key="sk-bench", max_retries=0)
        semaphore = asyncio.Semaphore(concurrency)

        async def one(request: ChatRequest) -> str:
            async with semaphore:
                response = await client.chat.completions.create(
                    model="gpt-4o-mini", messages=request.messages, max_tokens=request.max_tokens
                )
                return response.choices[0].message.content

        await one(requests[0])
        wall0, cpu0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one(r) for r in requests[1:]))
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        await client.close()
        return wall, cpu

    return asyncio.run(go())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64, 256])
    args = parser.parse_args(argv)
    process, base_url = start_double(args.latency)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as folder:
            warehouse = Warehouse(path=os.path.join(folder, "bench.duckdb"))
            print(f"double at {base_url}, latency {args.latency * 1000:.0f} ms, cpus {os.cpu_count()}")
            print(f"{'N':>4} {'reqs':>5} {'ideal/s':>8} {'layer/s':>8} {'frac':>5} {'cpu ms':>7} "
                  f"{'base/s':>8} {'frac':>5} {'cpu ms':>7} {'layer/base':>10}")  # fmt: skip
            hit_row = None
            for concurrency in args.concurrency:
                n = n_requests_for(concurrency) + 1
                tag = uuid.uuid4().hex[:8]
                layer_requests = requests_for(n, "layer-" + tag)
                wall, cpu = run_resource(base_url, warehouse, concurrency, layer_requests)
                base_wall, base_cpu = run_baseline(base_url, concurrency, requests_for(n, "base-" + tag))
                ideal = concurrency / args.latency
                layer_rate, base_rate = (n - 1) / wall, (n - 1) / base_wall
                rows.append((concurrency, layer_rate / ideal, layer_rate / base_rate))
                print(f"{concurrency:>4} {n - 1:>5} {ideal:>8.0f} {layer_rate:>8.0f} {layer_rate / ideal:>5.2f} "
                      f"{cpu / (n - 1) * 1000:>7.2f} {base_rate:>8.0f} {base_rate / ideal:>5.2f} "
                      f"{base_cpu / (n - 1) * 1000:>7.2f} {layer_rate / base_rate:>10.2f}")  # fmt: skip
                if concurrency == 64 or hit_row is None:
                    hit_wall, _ = run_resource(base_url, warehouse, concurrency, layer_requests)
                    hit_row = (concurrency, n - 1, wall, hit_wall)
            concurrency, n, miss_wall, hit_wall = hit_row
            speedup = miss_wall / hit_wall
            print(f"cache: {n} requests at N={concurrency}: misses {miss_wall * 1000:.0f} ms "
                  f"({miss_wall / n * 1e6:.0f} us/req), hits {hit_wall * 1000:.0f} ms "
                  f"({hit_wall / n * 1e6:.0f} us/req): hits {speedup:.0f}x faster")  # fmt: skip
    finally:
        process.terminate()
        process.wait(timeout=10)
    verdicts = [
        all(frac >= TARGET_FRACTION_UP_TO_16 for c, frac, _ in rows if c <= 16),
        all(ratio >= TARGET_VS_BASELINE_AT_64 for c, _, ratio in rows if c == 64),
        speedup >= TARGET_HIT_SPEEDUP,
    ]
    print(f"targets: >= {TARGET_FRACTION_UP_TO_16:.0%} of N/L up to N=16: {verdicts[0]}; "
          f">= {TARGET_VS_BASELINE_AT_64}x baseline at N=64: {verdicts[1]}; "
          f"hits >= {TARGET_HIT_SPEEDUP:.0f}x faster: {verdicts[2]}")  # fmt: skip


if __name__ == "__main__":
    main()
