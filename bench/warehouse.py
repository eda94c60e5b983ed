"""The DuckLake warehouse against the previous single-file DuckDB warehouse, side by side.

    .venv/bin/python -m bench.warehouse [--rows 200000] [--batch 5000] [--repeats 3]

1. Writers: 1, 2 and 4 concurrent processes, each appending `--rows` rows in batches of
   `--batch` into ONE table of the lake (through `Lake.appender`, which gathers batches into
   few commits). Baseline: the previous version's writer (one DuckDB file, a connection per
   `append_table` call, as `resources/warehouse.py` did), serial, writing the same total
   rows; it cannot run concurrently (one writer per file). Prints total rows/s and the ratio.
2. LLM answers: 4 processes, each caching `--answers` fresh answers through the LLM layer
   against the OpenAI test double; prints answers/s and the row counts of llm_cache and
   llm_calls (none lost, none duplicated).
3. Reads: a full-table read of a `raw_stack_plus`-shaped table (the stdlib corpus repeated
   to `--read-rows` rows) from the lake and from a plain DuckDB file.

Targets (issue 11): 4 writers >= 2.5x the serial writer; lake reads within 1.5x of DuckDB.
Medians of `--repeats` runs; the machine is shared, so ratios matter more than seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
TARGET_WRITERS = 2.5
TARGET_READ = 1.5


def batch_table(worker: int, start: int, size: int) -> pa.Table:
    rng = np.random.default_rng(worker * 1_000_003 + start)
    return pa.table(
        {
            "worker": np.full(size, worker, dtype=np.int64),
            "seq": np.arange(start, start + size, dtype=np.int64),
            "score": rng.random(size),
            "doc_id": pa.array([f"{worker:02d}-{i:012d}" for i in range(start, start + size)]),
        }
    )


# ---------------------------------------------------------------- writer processes


def lake_writer(lake_path: str, worker: int, rows: int, batch: int, go_at: float) -> dict:
    from resources.warehouse import Warehouse

    lake = Warehouse(path=lake_path).lake()
    lake.snapshot_id()  # attach before the clock starts, as a long-lived worker would have
    # The batches exist before the clock starts: this measures writing, not making rows.
    batches = [batch_table(worker, start, min(batch, rows - start)) for start in range(0, rows, batch)]
    while time.time() < go_at:
        time.sleep(0.001)
    started = time.time()
    with lake.appender("bench_rows") as append:
        for arrow in batches:
            append(arrow)
    return {"started": started, "finished": time.time()}


def legacy_writer(path: str, workers: int, rows: int, batch: int) -> dict:
    """The previous `Warehouse.append_table`: open the file, create-if-missing, insert, close."""
    batches = [batch_table(w, start, min(batch, rows - start)) for w in range(workers) for start in range(0, rows, batch)]
    started = time.time()
    for arrow in batches:
        with duckdb.connect(path) as conn:
            conn.register("_incoming", arrow)
            conn.execute('CREATE TABLE IF NOT EXISTS "bench_rows" AS SELECT * FROM _incoming LIMIT 0')
            conn.execute('INSERT INTO "bench_rows" BY NAME SELECT * FROM _incoming')
            conn.unregister("_incoming")
    return {"started": started, "finished": time.time()}


def spawn(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.warehouse", *args], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )


def run_lake_writers(folder: Path, n: int, rows: int, batch: int) -> tuple[float, int]:
    lake_path = str(folder / f"lake-{n}")
    from resources.warehouse import Warehouse

    # The lake and the (empty) table exist before the clock starts, as a pipeline's would.
    Warehouse(path=lake_path).write_table("bench_rows", batch_table(0, 0, 1).slice(0, 0))
    go_at = time.time() + 4.0 + n * 1.0  # every worker attached, its batches made, waiting
    procs = [spawn(["--worker", lake_path, str(w), str(rows), str(batch), str(go_at)]) for w in range(n)]
    spans = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError("a writer failed")
    wall = max(s["finished"] for s in spans) - min(s["started"] for s in spans)
    counted = Warehouse(path=lake_path).query(
        "SELECT count(*) AS n, count(DISTINCT (worker, seq)) AS distinct_rows FROM bench_rows"
    ).row(0, named=True)
    if counted["n"] != n * rows or counted["distinct_rows"] != n * rows:
        raise RuntimeError(f"lost or duplicated rows: {counted} for {n * rows} written")
    return n * rows / wall, counted["n"]


def run_legacy(folder: Path, n: int, rows: int, batch: int) -> float:
    path = str(folder / f"legacy-{n}-{time.time_ns()}.duckdb")
    span = legacy_writer(path, n, rows, batch)
    return n * rows / (span["finished"] - span["started"])


# ---------------------------------------------------------------- reads


def read_tables(folder: Path, read_rows: int) -> tuple[str, str]:
    from resources.warehouse import Warehouse
    from synth_assets.ingest.sources import read_python_tree, stdlib_path

    docs = [d for d in read_python_tree(stdlib_path()) if hasattr(d, "content")]
    base = pa.table(
        {
            "doc_id": [f"{i:016x}" for i in range(len(docs))],
            "source": ["python_tree"] * len(docs),
            "origin": [d.origin for d in docs],
            "content": [d.content for d in docs],
            "n_chars": [len(d.content) for d in docs],
        }
    )
    copies = max(1, read_rows // base.num_rows)
    table = pa.concat_tables([base] * copies)
    plain = str(folder / "plain.duckdb")
    with duckdb.connect(plain) as conn:
        conn.register("t", table)
        conn.execute("CREATE TABLE raw_stack_plus AS SELECT * FROM t")
    lake_path = str(folder / "lake-read")
    Warehouse(path=lake_path).write_table("raw_stack_plus", table)
    return plain, lake_path


def time_read(read) -> float:
    started = time.perf_counter()
    rows = read()
    elapsed = time.perf_counter() - started
    assert rows > 0
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--read-rows", type=int, default=20_000)
    parser.add_argument("--skip-llm", action="store_true")
    parser.add_argument("--answers", type=int, default=5_000)
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--llm-worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        lake_path, worker, rows, batch, go_at = args.worker
        print(json.dumps(lake_writer(lake_path, int(worker), int(rows), int(batch), float(go_at))))
        return
    if args.llm_worker:
        from bench.warehouse_llm import llm_worker

        print(json.dumps(llm_worker(*args.llm_worker)))
        return

    with tempfile.TemporaryDirectory(prefix="bench-warehouse-") as scratch:
        folder = Path(scratch)
        print(f"1. writers: each appends {args.rows:,} rows in batches of {args.batch:,} (median of {args.repeats})")
        legacy_rates = {}
        for n in (1, 2, 4):
            legacy_rates[n] = statistics.median(run_legacy(folder, n, args.rows, args.batch) for _ in range(args.repeats))
        baseline = legacy_rates[1]
        print(f"   baseline, previous single-file DuckDB writer, serial: {baseline:,.0f} rows/s "
              f"(same total rows as 2 / 4 writers: {legacy_rates[2]:,.0f} / {legacy_rates[4]:,.0f} rows/s)")
        print("   | writers | lake total rows/s | vs serial single-file writer (same total rows) | rows |")
        print("   |---|---|---|---|")
        ratios = {}
        for n in (1, 2, 4):
            rates, count = [], 0
            for repeat in range(args.repeats):
                rate, count = run_lake_writers(folder / f"w{n}-{repeat}", n, args.rows, args.batch)
                rates.append(rate)
            rate = statistics.median(rates)
            ratios[n] = rate / legacy_rates[n]
            print(f"   | {n} | {rate:,.0f} | {ratios[n]:.2f}x ({rate / baseline:.2f}x the 1-writer baseline) | {count:,} |")
        print(f"   4 writers vs the serial writer: {ratios[4]:.2f}x (target >= {TARGET_WRITERS}x): "
              f"{'met' if ratios[4] >= TARGET_WRITERS else 'NOT met'}")

        if not args.skip_llm:
            from bench.warehouse_llm import run_llm_writers

            print()
            run_llm_writers(folder, args.answers)

        print()
        print(f"3. full-table read of raw_stack_plus ({args.read_rows:,} rows, median of {max(5, args.repeats)})")
        plain, lake_path = read_tables(folder, args.read_rows)
        from resources.warehouse import Warehouse

        lake = Warehouse(path=lake_path).read_only().lake()

        def read_plain() -> int:
            with duckdb.connect(plain, read_only=True) as conn:
                return conn.execute("SELECT * FROM raw_stack_plus").to_arrow_table().num_rows

        def read_lake() -> int:
            with lake.connect() as conn:
                return conn.execute("SELECT * FROM raw_stack_plus").to_arrow_table().num_rows

        read_lake()  # attach once, as a reader process would
        plain_s, lake_s = [], []
        for _ in range(max(5, args.repeats)):
            plain_s.append(time_read(read_plain))
            lake_s.append(time_read(read_lake))
        ratio = statistics.median(lake_s) / statistics.median(plain_s)
        print(f"   DuckDB file {statistics.median(plain_s) * 1000:.0f} ms, DuckLake {statistics.median(lake_s) * 1000:.0f} ms: "
              f"{ratio:.2f}x (target <= {TARGET_READ}x): {'met' if ratio <= TARGET_READ else 'NOT met'}")


if __name__ == "__main__":
    main()
