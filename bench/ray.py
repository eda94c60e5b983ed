"""Ray speed-up on the embarrassingly parallel stages, and a cluster-wide RPM limit.

    .venv/bin/python -m bench.ray                         # 100k documents, 3 alternated repeats
    .venv/bin/python -m bench.ray --docs 20000 --repeats 1  # quick
    .venv/bin/python -m bench.ray --source python_tree    # the corpus as a tree of .py files

Corpus: the scale benchmark's (bench/scale.py: this virtual environment's site-packages
cut into documents, with planted edited copies), written once to a scratch folder, then
either (--source the_stack, the default) packed into JSONL files of The Stack's schema of
--shard-docs documents each, one shard per file as the pipeline cuts The Stack, or
(--source python_tree) read as a tree cut into path-hash chunks of about --shard-docs
files (every chunk's task walks the whole tree to find its files).

Stages, the pipeline's own functions on a local Ray cluster (`resources.compute.Compute`,
one task per shard, each task reading its input and writing the DuckLake itself):
* ingest: `synth_assets.ingest.corpus.materialize_shards` over every shard (`publish_shard`
  per shard: read, normalise, exact hash, MinHash-sign, publish the shard's rows of
  corpus_documents / corpus_rejects / corpus_signatures / corpus_shard_manifest);
* scoring: `synth_assets.filtering.corpus_scores.score_shards` over every shard key
  (`score_shard` per shard into corpus_scores), with the quality classifier's saved model
  (hashed n-grams + random forest, `train_quality_model` with the default forest, trained
  here on --train-docs documents graded by the scale benchmark's heuristic). Its input,
  raw_stack_plus, is built untimed from corpus_documents as `finalise_tables` builds it,
  exact copies dropped and ordered by doc_id (near dedup is not part of this benchmark).

The lake's catalog is a SQLite file (the embedded default) or, with --catalog postgres, a
database on a throwaway local PostgreSQL server (what a multi-worker deployment uses: its
commits do not serialise on one file lock). Each repeat and CPU count gets a fresh lake (deleted afterwards), so every repeat does the
full work, and its own local Ray cluster (started before the clock, shared by both stages).
Timed on 1 CPU and on 2 CPUs, alternated --repeats times; the speed-up is the median of
the 1-CPU walls over the median of the 2-CPU walls (target: >= 1.7x on this 2-core
machine; the machine is noisy, so the load average is printed).

Per-shard overhead: in-process, on a lake that already holds the corpus tables,
`publish_shard` and `score_shard` of --tiny-shards shards of one document each (the fixed
cost of a shard: its local staging file, the publish commit; for scoring also the model
load), with the catalog commits (DuckLake snapshots) each makes.

Rate limit: 64 concurrent generation requests, 32 from each of 2 Ray workers, through the
LLM layer (`LLMResource(requests_per_minute=--rpm)`) against the OpenAI test double
(tests/openai_double.py, run as its own process): in a process connected to Ray the
transport paces every request by the cluster's one limiter actor for the endpoint
(resources/llm/cluster_limits.py). Prints the observed rate, (n-1) / (last send - first
answer) from the ledger's answer times (the double answers in a fixed 50 ms), against the limit (target:
within 5% and never above).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SOURCE_NAME = "bench"
# raw_stack_plus as finalise_tables writes it (synth_assets/ingest/raw_stack_plus.py), without
# the near-duplicate removal: the first copy of each doc_id, ordered by doc_id.
RAW_STACK_PLUS_SQL = """
    CREATE OR REPLACE TABLE raw_stack_plus AS
    SELECT doc_id, source, origin, repo, license, content, n_chars, n_lines, n_tokens, parses_as_python, shard
    FROM corpus_documents
    QUALIFY row_number() OVER (PARTITION BY doc_id ORDER BY source, origin, shard, seq) = 1
    ORDER BY doc_id
"""


def write_stack_files(files: list[str], shard_docs: int, folder: Path) -> Path:
    """The documents as JSONL files of The Stack's schema, `shard_docs` rows each."""
    folder.mkdir(parents=True, exist_ok=True)
    count = (len(files) + shard_docs - 1) // shard_docs
    for index in range(count):
        with open(folder / f"train-{index:05d}-of-{count:05d}.jsonl", "w", encoding="utf-8") as out:
            for path in files[index * shard_docs : (index + 1) * shard_docs]:
                row = {
                    "content": Path(path).read_text(encoding="utf-8", errors="surrogatepass"),
                    "max_stars_repo_name": "bench/scale-corpus",
                    "max_stars_repo_path": Path(path).name,
                    "max_stars_repo_licenses": ["MIT"],
                }
                out.write(json.dumps(row) + "\n")
    return folder


def corpus_source(kind: str, manifest: dict, files: list[str], shard_docs: int, scratch: Path):
    from synth_assets.ingest.corpus import SourceSpec

    if kind == "the_stack":
        return SourceSpec(kind="the_stack", path=str(write_stack_files(files, shard_docs, scratch / "stack")),
                          name=SOURCE_NAME)
    return SourceSpec(kind="python_tree", path=manifest["tree"], name=SOURCE_NAME, repo="bench/scale-corpus",
                      license="MIT")


def train_classifier(texts: list[str], folder: Path) -> dict:
    """The pipeline's classifier (hashed n-grams, default forest) trained on the scale
    benchmark's heuristic grades, saved as quality_classifier saves it; returns the
    quality_classifier_versions fields score_shards needs."""
    import numpy as np

    from bench.scale import heuristic_grade
    from synth_assets.filtering.quality_classifier import ClassifierConfig, save_model, train_quality_model
    from synth_assets.ingest.dedup import content_hash, normalise_content

    ids = [content_hash(normalise_content(t)) for t in texts]
    labels = np.array([heuristic_grade(t) >= 3 for t in texts])
    outcome = train_quality_model(ids, texts, labels, ClassifierConfig(feature_sets=["hashed_ngrams"]), None, None)
    path = save_model(outcome.model, folder / "models")
    return {"classifier_version": outcome.model.classifier_version, "artefact_path": str(path),
            "n_estimators": ClassifierConfig().n_estimators}


# --catalog postgres: the libpq string of the benchmark's PostgreSQL server (each lake gets a
# new database on it); None: every lake's catalog is a SQLite file in its folder.
POSTGRES: str | None = None


def lake_at(folder: Path):
    """A new, empty lake in `folder`: its catalog a SQLite file there (the embedded
    default), or with --catalog postgres a new database on the benchmark's PostgreSQL
    server, its Parquet files in the folder."""
    from resources.warehouse import Warehouse

    if POSTGRES is None:  # explicit: no catalog or data path from the environment
        return Warehouse(path=str(folder), catalog=None, data_path=None)
    from tests.postgres_server import _binary

    fields = dict(part.split("=", 1) for part in POSTGRES.split())
    name = f"lake_{uuid.uuid4().hex[:12]}"
    subprocess.run([_binary("createdb"), "-h", fields["host"], "-p", fields["port"], "-U", fields["user"], name],
                   check=True, capture_output=True, timeout=60)
    libpq = " ".join(f"{k}={name if k == 'dbname' else v}" for k, v in fields.items())
    return Warehouse(path=str(folder), catalog=f"postgres:{libpq}", data_path=str(folder / "data"))


def snapshots(warehouse) -> int:
    return warehouse.snapshot_id() if warehouse.location().exists() else 0


def run_round(lake_dir: Path, shards: list, config, classifier: dict, batch_size: int, cpus: int) -> dict:
    """Both stages on a fresh lake and one local Ray cluster of `cpus` CPUs."""
    from resources.compute import Compute
    from synth_assets.filtering.corpus_scores import score_shards
    from synth_assets.ingest.corpus import materialize_shards

    warehouse = lake_at(lake_dir)
    compute = Compute(ray_address="local", num_cpus=cpus)
    run_id = uuid.uuid4().hex
    started = time.perf_counter()
    with compute.engine():  # materialize_shards / score_shards find the cluster running and keep it
        cluster_s = time.perf_counter() - started
        started = time.perf_counter()
        summaries = materialize_shards(warehouse, shards, config, run_id, compute)
        ingest_s = time.perf_counter() - started
        ingest_commits = snapshots(warehouse)
        warehouse.execute(RAW_STACK_PLUS_SQL)
        raw = int(warehouse.query("SELECT count(*) AS n FROM raw_stack_plus")["n"][0])
        before = snapshots(warehouse)
        started = time.perf_counter()
        scored = score_shards(warehouse, [s.key for s in shards], classifier, batch_size, run_id, compute)
        scoring_s = time.perf_counter() - started
        scoring_commits = snapshots(warehouse) - before
    stored = int(warehouse.query("SELECT count(*) AS n FROM corpus_scores")["n"][0])
    assert scored == stored == raw, (scored, stored, raw)
    return {
        "ingest_s": ingest_s, "scoring_s": scoring_s, "cluster_start_s": cluster_s,
        "documents": sum(s.documents for s in summaries), "rejected": sum(s.rejected for s in summaries),
        "raw_stack_plus": raw, "ingest_commits": ingest_commits, "scoring_commits": scoring_commits,
    }


def per_shard_overhead(scratch: Path, kind: str, texts: list[str], config, classifier: dict, batch_size: int) -> dict:
    """The fixed cost of one shard, in-process: `publish_shard` and `score_shard` of
    shards of one document each, on a lake already holding the corpus tables (the first
    shard, which creates them, is left out), with the catalog commits (snapshots) each
    makes. Median seconds per shard."""
    from synth_assets.filtering.corpus_scores import ShardScoring, score_shard
    from synth_assets.ingest.corpus import ShardTask, publish_shard
    from synth_assets.ingest.shards import plan_shards

    folder = scratch / "tiny"
    files = []
    for index, text in enumerate(texts):
        path = folder / "tree" / f"tiny{index:04d}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        files.append(str(path))
    source = corpus_source(kind, {"tree": str(folder / "tree")}, files, 1, folder)
    shards = plan_shards([source], files_per_shard=1)
    warehouse = lake_at(folder / "lake")
    settings = {name: getattr(warehouse, name) for name in ("path", "catalog", "data_path", "retry_timeout_s")}
    publish, publish_commits = [], []
    for shard in shards:
        before = snapshots(warehouse)
        started = time.perf_counter()
        publish_shard(ShardTask(settings, shard, config.model_dump(), uuid.uuid4().hex))
        publish.append(time.perf_counter() - started)
        publish_commits.append(snapshots(warehouse) - before)
    warehouse.execute(RAW_STACK_PLUS_SQL)
    score, score_commits = [], []
    for shard in shards:
        if not warehouse.query("SELECT count(*) AS n FROM raw_stack_plus WHERE shard = ?", [shard.key])["n"][0]:
            continue  # a python_tree chunk that got no file
        before = snapshots(warehouse)
        started = time.perf_counter()
        score_shard(ShardScoring(settings, shard.key, classifier["classifier_version"], classifier["artefact_path"],
                                 batch_size, uuid.uuid4().hex))
        score.append(time.perf_counter() - started)
        score_commits.append(snapshots(warehouse) - before)
    shutil.rmtree(folder, ignore_errors=True)
    return {
        "shards": len(shards) - 1,
        "publish_shard_s": round(statistics.median(publish[1:]), 3),
        "publish_shard_commits": statistics.median(publish_commits[1:]),
        "score_shard_s": round(statistics.median(score[1:]), 3),
        "score_shard_commits": statistics.median(score_commits[1:]),
    }


def paced_requests(task: tuple[str, str, int, float]) -> int:
    """One Ray worker: `n` concurrent generation requests through the LLM layer (the real
    path: cache, ledger, retries), whose transport paces them by the cluster's one limiter
    for the endpoint. The ledger (`llm_calls`) keeps when each answer came and its latency."""
    import dagster as dg

    from resources.compute import TaskContext
    from resources.llm import ChatRequest, LLMResource
    from resources.warehouse import Warehouse
    from tests.openai_double import TEST_KEY_REF

    base_url, lake_path, n, rpm = task
    worker = os.getpid()
    llm = LLMResource(base_url=base_url, api_key=TEST_KEY_REF, model="gpt-4o-mini", requests_per_minute=int(rpm),
                      max_concurrency=n, max_cost_usd=None)
    requests = [ChatRequest(messages=[{"role": "user", "content": f"write section {worker}-{i}"}]) for i in range(n)]
    # a task's context, as the generation assets' batches carry: the requests go out through the relay actor
    with llm.session(TaskContext("bench-rpm", dg.AssetKey("bench_rpm")), Warehouse(path=lake_path)) as session:
        results = session.complete(requests)
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:1]
    return len(results)


def rate_limit_check(requests: int, rpm: float) -> dict:
    """The double runs in this process (a thread) and stamps each request as it arrives;
    the Ray workers reach it over HTTP like any endpoint."""
    import ray

    from resources.compute import Compute
    from tests.openai_double import TEST_KEY, TEST_KEY_ENV, OpenAIDouble

    arrivals: list[float] = []

    def answer(body: dict) -> str:
        arrivals.append(time.time())
        return "A section about loops."

    lake = tempfile.mkdtemp(prefix="bench-ray-llm-")
    with OpenAIDouble(chat=answer, latency_s=0.05) as server:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {TEST_KEY_ENV: TEST_KEY}})  # the key on every node, the relay's too
        try:
            with Compute(ray_address="local").engine() as engine:
                half = requests // 2
                tasks = [(server.base_url, lake, half, rpm), (server.base_url, lake, requests - half, rpm)]
                answered = sum(engine.map(paced_requests, tasks))
        finally:
            ray.shutdown()
    stamps = sorted(arrivals)
    observed = (len(stamps) - 1) / (stamps[-1] - stamps[0]) * 60
    return {"requests": len(stamps), "answered": answered, "workers": 2, "limit_rpm": rpm,
            "observed_rpm": round(observed, 1), "ratio": round(observed / rpm, 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--shard-docs", type=int, default=2_500)
    parser.add_argument("--source", choices=("the_stack", "python_tree"), default="the_stack")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-docs", type=int, default=2_000)
    parser.add_argument("--batch-size", type=int, default=1024, help="score_shards' batch (CorpusScoresConfig's)")
    parser.add_argument("--tiny-shards", type=int, default=8, help="one-document shards timed for the overhead")
    parser.add_argument("--rpm", type=float, default=600.0)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--catalog", choices=("sqlite", "postgres"), default="sqlite",
                        help="the lake's catalog: a SQLite file (the embedded default) or a throwaway local "
                        "PostgreSQL server (tests/postgres_server.py; Debian's postgresql, fsync off)")
    parser.add_argument("--out", default="bench/results/ray.json")
    args = parser.parse_args(argv)
    if args.catalog == "postgres":
        from tests.postgres_server import postgres_server

        global POSTGRES
        with postgres_server() as libpq:
            POSTGRES = libpq
            try:
                return run(args)
            finally:
                POSTGRES = None
    return run(args)


def run(args: argparse.Namespace) -> int:

    import sysconfig

    from bench.scale import document_pool, write_corpus
    from synth_assets.filtering.quality_classifier import load_model
    from synth_assets.ingest.corpus import RawStackPlusConfig
    from synth_assets.ingest.shards import plan_shards

    scratch = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    pool = document_pool(sysconfig.get_paths()["purelib"], 400, args.seed)
    manifest = write_corpus(pool, args.docs, 0.05, args.seed, scratch)
    files = sorted(str(p) for p in Path(manifest["tree"]).rglob("*.py"))
    config = RawStackPlusConfig(files_per_shard=args.shard_docs)
    source = corpus_source(args.source, manifest, files, args.shard_docs, scratch)
    shards = plan_shards([source], config.files_per_shard, config.exclude_dirs)
    sizes = [s.files for s in shards] if args.source == "python_tree" else [args.shard_docs]
    classifier = train_classifier([Path(p).read_text() for p in files[: args.train_docs]], scratch)
    started = time.perf_counter()
    load_model(classifier["artefact_path"])
    classifier["load_s"] = round(time.perf_counter() - started, 3)
    print(f"catalog: {args.catalog}; corpus: {len(files):,} documents, {manifest['characters'] / 1e6:,.0f} MB, {len(shards)} shards "
          f"({args.source}) of {min(sizes):,}-{max(sizes):,}; classifier {classifier['n_estimators']} trees "
          f"(loads in {classifier['load_s']:.2f}s); scratch {scratch}")

    walls: dict[tuple[str, int], list[float]] = {}
    rounds = []
    for repeat in range(args.repeats):
        for cpus in (1, 2) if repeat % 2 == 0 else (2, 1):
            lake = scratch / f"lake-{cpus}-{repeat}"
            load = os.getloadavg()[0]
            result = run_round(lake, shards, config, classifier, args.batch_size, cpus)
            shutil.rmtree(lake, ignore_errors=True)
            assert result["documents"] + result["rejected"] == len(files), result
            walls.setdefault(("ingest", cpus), []).append(result["ingest_s"])
            walls.setdefault(("scoring", cpus), []).append(result["scoring_s"])
            rounds.append({"repeat": repeat + 1, "cpus": cpus, "load_average_before": round(load, 2),
                           "load_average_after": round(os.getloadavg()[0], 2),
                           **{k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}})
            print(f"  repeat {repeat + 1}, {cpus} CPU(s): ingest {result['ingest_s']:.1f}s, "
                  f"scoring {result['scoring_s']:.1f}s (load average before: {load:.1f}, "
                  f"after: {os.getloadavg()[0]:.1f}; {result['documents']:,} documents, "
                  f"{result['raw_stack_plus']:,} in raw_stack_plus; commits {result['ingest_commits']} + "
                  f"{result['scoring_commits']})", flush=True)

    report = {"documents": len(files), "shards": len(shards), "repeats": args.repeats, "source": args.source,
              "shard_docs": args.shard_docs, "catalog": args.catalog, "stages": {}}
    print("\n| stage | 1 worker (median s) | 2 workers (median s) | speed-up | docs/s on 2 |")
    print("|---|---|---|---|---|")
    for stage in ("ingest", "scoring"):
        one, two = statistics.median(walls[(stage, 1)]), statistics.median(walls[(stage, 2)])
        report["stages"][stage] = {"one_worker_s": round(one, 2), "two_workers_s": round(two, 2),
                                   "speedup": round(one / two, 3)}
        print(f"| {stage} | {one:.1f} | {two:.1f} | **{one / two:.2f}x** | {len(files) / two:,.0f} |")
    print("target: >= 1.7x")
    loads = [r["load_average_before"] for r in rounds] + [r["load_average_after"] for r in rounds]
    print(f"load average (1 min) around the rounds: median {statistics.median(loads):.1f}, "
          f"{min(loads):.1f}-{max(loads):.1f} ({os.cpu_count()} cores)")
    report["load_average_1min"] = {"median": statistics.median(loads), "min": min(loads), "max": max(loads)}
    report["rounds"] = rounds
    report["classifier"] = classifier

    overhead = per_shard_overhead(scratch, args.source, pool[: args.tiny_shards + 1], config, classifier,
                                  args.batch_size)
    report["per_shard_overhead"] = overhead
    per_shard = {stage: statistics.median(walls[(stage, 1)]) / len(shards) for stage in ("ingest", "scoring")}
    print(f"\nper-shard overhead (in-process, one-document shards, median of {overhead['shards']}): "
          f"publish_shard {overhead['publish_shard_s']:.2f}s ({overhead['publish_shard_commits']:.0f} commits), "
          f"score_shard {overhead['score_shard_s']:.2f}s ({overhead['score_shard_commits']:.0f} commits); "
          f"a {len(files) // len(shards):,}-document shard on 1 CPU: ingest {per_shard['ingest']:.2f}s, "
          f"scoring {per_shard['scoring']:.2f}s")

    limited = rate_limit_check(args.requests, args.rpm)
    report["rate_limit"] = limited
    print(f"\nrate limit: {limited['requests']} requests from 2 workers at {limited['limit_rpm']:.0f} RPM: "
          f"observed {limited['observed_rpm']:.1f} RPM = {limited['ratio']:.3f}x the limit (target 0.95-1.00)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
