"""The DuckLake warehouse: atomic materializations, concurrent writers, snapshots, readers,
maintenance, migration, and a PostgreSQL catalog shared by several processes."""



import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from resources.warehouse import Warehouse
from resources.warehouse.extensions import ExtensionMissing, extension_file
from resources.warehouse.migrate import migrate
from synth_assets.common.tables import table_result
from tests.postgres_server import PostgresUnavailable, postgres_server

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_extensions_come_from_the_wheels_of_this_duckdb_version():
    for name in ("ducklake", "sqlite", "postgres", "httpfs"):
        path = extension_file(name)
        assert path.exists() and f"v{duckdb.__version__}" in str(path)
    with pytest.raises(KeyError):
        extension_file("spatial")


def test_a_failed_materialization_leaves_the_last_good_snapshot_and_keeps_its_partial_rows(warehouse):
    warehouse.write_table("scores", pl.DataFrame({"doc_id": ["a", "b"], "score": [0.1, 0.2]}))
    good = warehouse.snapshot_id()

    class Run:
        run_id = "0123456789abcdef"
        asset_key = dg.AssetKey("scores")
        log = None

    with pytest.raises(RuntimeError, match="budget stop"):
        with warehouse.materialization(Run()) as lake:
            lake.write_table("scores", pl.DataFrame({"doc_id": ["c"], "score": [0.9]}))
            lake.write_table("scores_rejects", pl.DataFrame({"doc_id": ["d"], "reason": ["empty"]}))
            # inside, the asset reads its own staged rows; outside, nobody sees them
            assert lake.query("SELECT doc_id FROM scores")["doc_id"].to_list() == ["c"]
            assert warehouse.query("SELECT doc_id FROM scores ORDER BY 1")["doc_id"].to_list() == ["a", "b"]
            raise RuntimeError("budget stop after writing")
    assert warehouse.query("SELECT doc_id FROM scores ORDER BY 1")["doc_id"].to_list() == ["a", "b"]
    assert not warehouse.table_exists("scores_rejects")
    assert warehouse.snapshot_id() >= good
    # the partial rows are kept in the run's own staging schema for inspection
    stage = "stage_scores_01234567"
    assert sorted(warehouse.lake().tables(stage)) == ["scores", "scores_rejects"]
    assert warehouse.query(f"SELECT doc_id FROM {stage}.scores")["doc_id"].to_list() == ["c"]

    # a successful attempt publishes every table in ONE commit and drops the staging schema
    with warehouse.materialization(Run()) as lake:
        lake.write_table("scores", pl.DataFrame({"doc_id": ["c", "e"], "score": [0.9, 0.5]}))
        lake.write_table("scores_rejects", pl.DataFrame({"doc_id": ["d"], "reason": ["empty"]}))
    published = lake.snapshot_id_published
    assert warehouse.lake().tables(stage) == []
    created = warehouse.query(
        "SELECT changes['tables_created'] AS created FROM ducklake_snapshots('lake') WHERE snapshot_id = ?", [published]
    )["created"][0].to_list()
    assert {"main.scores", "main.scores_rejects"} <= set(created)
    assert warehouse.query("SELECT doc_id FROM scores ORDER BY 1")["doc_id"].to_list() == ["c", "e"]
    # the lake can be read as of any snapshot: before the publish, the old rows
    before = warehouse.read_only().lake(as_of_snapshot=good)
    assert before.query("SELECT doc_id FROM scores ORDER BY 1")["doc_id"].to_list() == ["a", "b"]



def test_a_partition_stages_in_a_local_file_and_publishes_its_rows_in_one_commit(warehouse):
    def shard_rows(shard: str, docs: list[str]) -> pl.DataFrame:
        return pl.DataFrame({"shard": [shard] * len(docs), "doc_id": docs})

    def snapshots() -> int:
        return int(warehouse.query("SELECT count(*) AS n FROM ducklake_snapshots('lake')")["n"][0])

    # the first partition creates the live tables
    with warehouse.materialization(name="docs", rows_of=("shard", ["s1"])) as lake:
        lake.append_table("docs", shard_rows("s1", ["a", "b"]))
    with warehouse.materialization(name="docs", rows_of=("shard", ["s2"])) as lake:
        lake.append_table("docs", shard_rows("s2", ["c"]))

    before = snapshots()
    with warehouse.materialization(name="docs", rows_of=("shard", ["s1"])) as lake:
        folder = lake.folder
        lake.execute('CREATE TABLE docs AS SELECT * FROM lake.main.docs WHERE shard = \'s1\' AND doc_id = \'b\'')
        for batch in (["d"], ["e", "f"]):  # batches commit to the local file, not to the lake
            lake.append_table("docs", shard_rows("s1", batch))
        lake.append_table("notes", pl.DataFrame({"shard": ["s1"], "note": ["new table"]}))
        # staged rows first, live tables otherwise
        assert lake.query("SELECT doc_id FROM docs ORDER BY 1")["doc_id"].to_list() == ["b", "d", "e", "f"]
        assert warehouse.query("SELECT count(*) AS n FROM docs")["n"][0] == 3
    assert snapshots() == before + 1  # the publish is the partition's only catalog commit
    assert not folder.exists()
    rows = warehouse.query("SELECT shard, doc_id FROM docs ORDER BY 2").rows()
    assert rows == [("s1", "b"), ("s2", "c"), ("s1", "d"), ("s1", "e"), ("s1", "f")]
    assert warehouse.query("SELECT note FROM notes")["note"].to_list() == ["new table"]

    # a failed partition publishes nothing and leaves no file or attached database
    good = warehouse.snapshot_id()
    with pytest.raises(RuntimeError, match="worker lost"):
        with warehouse.materialization(name="docs", rows_of=("shard", ["s2"])) as lake:
            folder, attached = lake.folder, lake.catalog
            lake.append_table("docs", shard_rows("s2", ["x"]))
            raise RuntimeError("worker lost")
    assert warehouse.snapshot_id() == good
    assert warehouse.query("SELECT doc_id FROM docs WHERE shard = 's2'")["doc_id"].to_list() == ["c"]
    assert not folder.exists()
    with warehouse.connect() as conn:
        assert attached not in {row[0] for row in conn.execute("SELECT database_name FROM duckdb_databases()").fetchall()}

def test_materialize_records_the_snapshot_and_the_lineage_command_reads_it(warehouse, capsys):
    from synth_assets.reports.lineage import main as lineage_main

    @dg.asset(name="textbook_prompts")
    def textbook_prompts(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        version = context.run.tags.get("version", "1")
        with warehouse.materialization(context) as lake:
            lake.write_table(
                "textbook_prompts",
                pl.DataFrame({"prompt_id": ["p-one"], "topic": [f"topic v{version}"]}),
            )
        return table_result(warehouse, "textbook_prompts", snapshot_id=lake.snapshot_id_published)

    snapshots = []
    for version in ("1", "2"):
        result = dg.materialize([textbook_prompts], resources={"warehouse": warehouse}, tags={"version": version})
        (event,) = result.asset_materializations_for_node("textbook_prompts")
        snapshots.append(event.metadata["lake/snapshot_id"].value)
        assert event.metadata["dagster/row_count"].value == 1
    assert snapshots[1] > snapshots[0]
    assert lineage_main(["p-one", "--warehouse", warehouse.path, "--snapshot", str(snapshots[0])]) == 0
    assert "topic v1" in capsys.readouterr().out
    assert lineage_main(["p-one", "--warehouse", warehouse.path]) == 0
    assert "topic v2" in capsys.readouterr().out


def test_readers_are_read_only(warehouse):
    warehouse.write_table("t", pl.DataFrame({"x": [1]}))
    reader = warehouse.read_only()
    assert reader.query("SELECT x FROM t")["x"].to_list() == [1]
    with pytest.raises(duckdb.Error, match="read-only|read only|Cannot execute"):
        reader.write_table("t", pl.DataFrame({"x": [2]}))
    assert warehouse.query("SELECT x FROM t")["x"].to_list() == [1]


WRITER = """
import sys
import numpy as np, pyarrow as pa
from resources.warehouse import Warehouse
worker, rows = int(sys.argv[1]), int(sys.argv[2])
lake = Warehouse(path=sys.argv[3]).lake()
with lake.appender("rows", flush_rows=1000) as append:
    for start in range(0, rows, 250):
        append(pa.table({"worker": np.full(250, worker), "seq": np.arange(start, start + 250)}))
print("done")
"""


def test_concurrent_writer_processes_lose_and_duplicate_nothing(warehouse):
    warehouse.lake().snapshot_id()  # create the lake first
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(worker), "4000", warehouse.path], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for worker in range(3)
    ]  # fmt: skip
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    counts = warehouse.query("SELECT worker, count(*) AS n, count(DISTINCT seq) AS distinct_seq FROM rows GROUP BY worker ORDER BY worker")
    assert counts.rows() == [(0, 4000, 4000), (1, 4000, 4000), (2, 4000, 4000)]


def test_a_writer_killed_mid_materialization_leaves_the_previous_snapshot_readable(warehouse):
    warehouse.write_table("corpus", pl.DataFrame({"doc_id": [f"d{i}" for i in range(100)]}))
    victim = f"""
    import time, polars as pl
    from resources.warehouse import Warehouse
    warehouse = Warehouse(path={warehouse.path!r})
    with warehouse.materialization(name="corpus") as lake:
        lake.write_table("corpus", pl.DataFrame({{"doc_id": ["new"]}}))
        for i in range(1000):
            lake.append_table("corpus", pl.DataFrame({{"doc_id": [f"n{{i}}"]}}))
            if i == 3:
                print("staged", flush=True)
            time.sleep(0.05)
    """
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(victim)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "staged"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    live = warehouse.read_only().query("SELECT count(*) AS n, min(doc_id) AS first FROM corpus").row(0, named=True)
    assert live == {"n": 100, "first": "d0"}
    stages = [s for s in warehouse.query("SELECT schema_name FROM information_schema.schemata WHERE catalog_name = 'lake'")["schema_name"] if s.startswith("stage_corpus_")]
    assert len(stages) == 1 and warehouse.query(f"SELECT count(*) AS n FROM {stages[0]}.corpus")["n"][0] >= 5


def test_maintenance_merges_small_files_and_expires_old_snapshots(warehouse):
    for start in range(0, 500, 50):
        warehouse.append_table("many", pl.DataFrame({"x": list(range(start, start + 50))}))
    files = lambda: warehouse.query("SELECT count(*) AS n FROM ducklake_list_files('lake', 'many')")["n"][0]  # noqa: E731
    before_files = files()
    snapshots_before = warehouse.query("SELECT count(*) AS n FROM ducklake_snapshots('lake')")["n"][0]
    report = warehouse.model_copy(update={"snapshot_retention_days": 0.0}).maintain()
    assert files() < before_files and files() == 1
    assert report.snapshots_expired > 0
    assert warehouse.query("SELECT count(*) AS n FROM ducklake_snapshots('lake')")["n"][0] < snapshots_before
    assert warehouse.query("SELECT sum(x) AS s FROM many")["s"][0] == sum(range(500))


def test_the_maintenance_job_is_defined_and_scheduled():
    from synth_assets.definitions import defs

    job = defs.resolve_job_def("lake_maintenance_job")
    assert job is not None
    schedule = defs.resolve_schedule_def("nightly_lake_maintenance_schedule")
    assert schedule.job_name == "lake_maintenance_job"


def test_migration_carries_a_previous_warehouse_file_over(warehouse, tmp_path):
    old = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(old)) as conn:
        conn.execute("CREATE TABLE llm_cache AS SELECT 'k' || range AS cache_key, 'answer' AS response_text FROM range(25)")
        conn.execute("CREATE TABLE raw_stack_plus AS SELECT 'doc' AS doc_id")
    counts = migrate(old, warehouse, only=["llm_cache"])
    assert counts == {"llm_cache": 25} and not warehouse.table_exists("raw_stack_plus")
    counts = migrate(old, warehouse)
    assert counts == {"llm_cache": 25, "raw_stack_plus": 1}
    assert warehouse.query("SELECT count(*) AS n FROM llm_cache")["n"][0] == 25


def test_a_location_names_its_catalog_and_never_its_password():
    from resources.warehouse.location import LakeLocation

    location = LakeLocation.resolve("data/lake", "postgres:dbname=lake host=db user=me password=hunter2", "s3://bucket/lake")
    assert location.catalog_type == "postgres" and location.is_remote_data
    assert location.extensions == ["postgres", "httpfs", "ducklake"]
    assert "hunter2" not in location.describe()
    with pytest.raises(ValueError, match="catalog must look like"):
        LakeLocation.resolve("data/lake", "mysql:whatever", None)


MATERIALIZE = """
import json, sys, dagster as dg
from resources.compute import Compute
from resources.warehouse import Warehouse
from synth_assets.ingest.raw_stack_plus import raw_stack_plus
from synth_assets.synthesis.textbook_prompts import textbook_prompts
asset = {"raw_stack_plus": raw_stack_plus, "textbook_prompts": textbook_prompts}[sys.argv[1]]
config = {"raw_stack_plus": {"sources": [{"kind": "python_tree", "path": sys.argv[2]}]},
          "textbook_prompts": {"n_prompts": 12, "n_corpus_personas": 0}}[sys.argv[1]]
result = dg.materialize([asset], resources={"compute": Compute(), "warehouse": Warehouse()}, run_config={"ops": {sys.argv[1]: {"config": config}}})
(event,) = result.asset_materializations_for_node(sys.argv[1])
print(json.dumps({"rows": event.metadata["dagster/row_count"].value, "snapshot": event.metadata["lake/snapshot_id"].value}))
"""


def test_two_processes_materialize_into_a_postgres_catalog_and_a_third_reads_consistent_tables(tmp_path):
    try:
        server = postgres_server()
        libpq = server.__enter__()
    except PostgresUnavailable as exc:
        pytest.skip(f"PostgreSQL could not be started: {exc}")
    try:
        corpus = tmp_path / "corpus"
        corpus.mkdir()
        for i in range(30):
            (corpus / f"m{i}.py").write_text(f"def f{i}(x):\n    return x * {i} + {i * i}\n\nprint(f{i}(3))\n")
        env = {"SYNTH_ASSETS_CATALOG": f"postgres:{libpq}", "SYNTH_ASSETS_DATA_PATH": str(tmp_path / "lake-data"),
               "SYNTH_ASSETS_WAREHOUSE": str(tmp_path / "unused")}  # fmt: skip
        procs = {
            name: subprocess.Popen([sys.executable, "-c", MATERIALIZE, name, str(corpus)], cwd=ROOT,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env})
            for name in ("raw_stack_plus", "textbook_prompts")
        }  # fmt: skip
        results = {}
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err[-3000:]
            results[name] = json.loads(out.strip().splitlines()[-1])
        reader = run_python(
            """
            import json
            from resources.warehouse import Warehouse
            w = Warehouse().read_only()
            print(json.dumps({t: w.query(f"SELECT count(*) AS n FROM {t}")["n"][0] for t in
                              ("raw_stack_plus", "dedup_removed", "ingest_rejects", "textbook_prompts")}))
            print(w.location().describe())
            """,
            env=env,
        )
        assert reader.returncode == 0, reader.stderr[-3000:]
        counts = json.loads(reader.stdout.splitlines()[0])
        assert reader.stdout.splitlines()[1].startswith("postgres:dbname=lake")
        assert counts["raw_stack_plus"] == results["raw_stack_plus"]["rows"] == 30
        assert counts["textbook_prompts"] == results["textbook_prompts"]["rows"] == 12
        assert not (tmp_path / "unused" / "catalog.sqlite").exists()
        assert list((tmp_path / "lake-data").rglob("*.parquet"))
    finally:
        server.__exit__(None, None, None)
