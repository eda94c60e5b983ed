"""The corpus as shards: stable membership, per-shard partitions in a real Dagster instance,
a changed shard re-run alone, multi-shard backfill runs, and the same duplicates whatever the
sharding."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from quality_checks.checks import all_check_specs, evaluate_spec
from resources.compute import Compute
from synth_assets.ingest.corpus import CORPUS_MANIFEST
from synth_assets.ingest.corpus_sensor import corpus_change_sensor
from synth_assets.ingest.corpus_shards import corpus_shards
from synth_assets.ingest.raw_stack_plus import CORPUS_PATHS_ENV, SourceSpec, raw_stack_plus
from synth_assets.ingest.shards import plan_shards, tree_chunk
from tests.fixtures_corpus import near_copy, python_module


def write_tree(root, n: int, copies: int = 0) -> None:
    (root / "pkg").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / "pkg" / f"m{i:03d}.py").write_text(python_module(i))
    for i in range(copies):  # near copies and exact copies spread over the tree
        (root / f"near{i:03d}.py").write_text(near_copy(python_module(i)))
        (root / f"exact{i:03d}.py").write_text(python_module(100 + i))
        (root / "pkg" / f"exact{i:03d}_copy.py").write_text(python_module(100 + i))


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "tree"
    write_tree(root, 24, copies=4)
    return root


def settings(tmp_path, monkeypatch, **raw_stack_plus_settings) -> None:
    path = tmp_path / "synth_assets.toml"
    lines = ["[raw_stack_plus]"] + [f"{k} = {json.dumps(v)}" for k, v in raw_stack_plus_settings.items()]
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("SYNTH_ASSETS_SETTINGS", str(path))


def test_tree_chunks_have_stable_membership_and_keep_their_count(tree):
    spec = SourceSpec(kind="python_tree", path=str(tree), name="tree")
    shards = plan_shards([spec], files_per_shard=10)
    assert [s.key for s in shards] == [f"tree:tree-{i:04d}-of-0004" for i in range(4)]  # 36 files / 10
    assert sum(s.files for s in shards) == 36

    # a new file changes one chunk's fingerprint; the count stays 4 (the keys are known)
    (tree / "pkg" / "late.py").write_text(python_module(999))
    again = plan_shards([spec], files_per_shard=10, known_keys=[s.key for s in shards])
    changed = [b.key for a, b in zip(shards, again) if a.fingerprint != b.fingerprint]
    assert len(again) == 4 and changed == [f"tree:tree-{tree_chunk('pkg/late.py', 4):04d}-of-0004"]

    with pytest.raises(ValueError, match="share a name"):
        plan_shards([spec, spec])

def test_listing_a_tree_for_the_sensor_holds_memory_per_chunk_not_per_file(tmp_path):
    import tracemalloc

    def listing_peak(files: int) -> int:
        root = tmp_path / f"tree{files}"
        for index in range(files):
            folder = root / f"p{index // 1600}" / f"d{index // 40}"  # 40 files a directory, 40 directories a package
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"m{index}.py").touch()
        spec = SourceSpec(kind="python_tree", path=str(root), name="tree")
        # once unmeasured: pathlib interns every name it parses, and the interpreter's table
        # of interned strings grows once to fit them (~380 B a file the first time only)
        plan_shards([spec], known_keys=["tree:tree-0000-of-0008"], keep_paths=False)
        tracemalloc.start()
        shards = plan_shards([spec], known_keys=["tree:tree-0000-of-0008"], keep_paths=False)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert len(shards) == 8 and sum(s.files for s in shards) == files
        return peak

    small, large = listing_peak(1_000), listing_peak(10_000)
    # a line per file kept until the digest costs ~500 B a file (measured: ~0.5 MB -> ~4.8 MB);
    # what may grow is os.walk's listing of the wider top directory
    assert (large - small) / 9_000 < 20, (small, large)



def run_defs(warehouse) -> dg.Definitions:
    return dg.Definitions(assets=[corpus_shards, raw_stack_plus], resources={"compute": Compute(), "warehouse": warehouse})


def manifest(warehouse) -> dict[str, str]:
    return dict(warehouse.query(f'SELECT shard, run_id FROM "{CORPUS_MANIFEST}"').rows())


def test_a_changed_shard_reruns_alone_then_the_global_dedup(tree, tmp_path, warehouse, monkeypatch):
    monkeypatch.setenv(CORPUS_PATHS_ENV, str(tree))
    settings(tmp_path, monkeypatch, files_per_shard=10)
    defs = run_defs(warehouse)
    with dg.instance_for_test() as instance:
        # first run: raw_stack_plus ingests every shard itself and registers them
        first = dg.materialize([raw_stack_plus], resources={"compute": Compute(), "warehouse": warehouse}, instance=instance)
        metadata = first.asset_materializations_for_node("raw_stack_plus")[0].metadata
        assert metadata["shards"].value == 4 and metadata["shards_ingested_here"].value == 4
        keys = instance.get_dynamic_partitions("corpus_shard")
        assert len(keys) == 4
        status = instance.get_status_by_partition(dg.AssetKey("corpus_shards"), keys, dg.DynamicPartitionsDefinition(name="corpus_shard"))
        assert all(str(s).endswith("MATERIALIZED") for s in status.values())  # runless events per shard
        stored = manifest(warehouse)
        assert set(stored) == set(keys) and set(stored.values()) == {first.run_id}
        kept = warehouse.query("SELECT count(*) AS n FROM raw_stack_plus")["n"][0]

        # the sensor: the first tick only records; a new file makes one shard's run
        recorded = corpus_change_sensor(dg.build_sensor_context(instance=instance, definitions=defs))
        assert not recorded.run_requests
        (tree / "pkg" / "late.py").write_text(python_module(999))
        changed = corpus_change_sensor(dg.build_sensor_context(instance=instance, cursor=recorded.cursor, definitions=defs))
        (request,) = changed.run_requests
        assert request.partition_key == f"tree:tree-{tree_chunk('pkg/late.py', 4):04d}-of-0004"

        shard_run = dg.materialize(
            [corpus_shards], resources={"compute": Compute(), "warehouse": warehouse}, instance=instance, partition_key=request.partition_key
        )
        after_shard = manifest(warehouse)
        assert after_shard[request.partition_key] == shard_run.run_id
        assert {k: v for k, v in after_shard.items() if k != request.partition_key} == {
            k: v for k, v in stored.items() if k != request.partition_key
        }  # the other shards were not touched

        # the global step re-runs over the stored shards and ingests nothing itself
        second = dg.materialize([raw_stack_plus], resources={"compute": Compute(), "warehouse": warehouse}, instance=instance)
        metadata = second.asset_materializations_for_node("raw_stack_plus")[0].metadata
        assert metadata["shards_ingested_here"].value == 0
        assert warehouse.query("SELECT count(*) AS n FROM raw_stack_plus")["n"][0] == kept + 1
        assert manifest(warehouse) == after_shard

    # the checks hold on the stored shards, and see a lost row
    specs = {spec.name: spec for spec in all_check_specs()}
    for name in ("corpus_shard_manifest_integrity", "raw_stack_plus_integrity", "dedup_removed_integrity"):
        assert evaluate_spec(warehouse, specs[name]).passed, name
    warehouse.execute("DELETE FROM corpus_documents WHERE shard = ? AND seq = 0", [request.partition_key])
    broken = evaluate_spec(warehouse, specs["corpus_shard_manifest_integrity"])
    assert not broken.passed


def test_a_backfill_run_ingests_many_shards_and_a_missing_shard_fails_clearly(tree, tmp_path, warehouse, monkeypatch):
    monkeypatch.setenv(CORPUS_PATHS_ENV, str(tree))
    settings(tmp_path, monkeypatch, files_per_shard=10)
    keys = [f"tree:tree-{i:04d}-of-0004" for i in range(4)]
    defs = run_defs(warehouse)
    job = defs.resolve_implicit_global_asset_job_def()
    assert corpus_shards.backfill_policy.max_partitions_per_run == 16
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("corpus_shard", keys + ["tree:tree-0009-of-0009"])
        # one run of a multi-run backfill: a range of partitions
        result = job.execute_in_process(
            instance=instance,
            asset_selection=[dg.AssetKey("corpus_shards")],
            tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]},
        )
        assert result.success
        events = result.asset_materializations_for_node("corpus_shards")  # one event per partition of the range
        assert sorted(e.partition for e in events) == keys
        assert set(manifest(warehouse)) == set(keys)
        counts = warehouse.query(f'SELECT sum(documents) AS d FROM "{CORPUS_MANIFEST}"')["d"][0]
        assert counts == 36

        gone = dg.materialize(
            [corpus_shards], resources={"compute": Compute(), "warehouse": warehouse}, instance=instance,
            partition_key="tree:tree-0009-of-0009", raise_on_error=False,
        )
        assert not gone.success
        failure = gone.get_step_failure_events()[0].step_failure_data.user_failure_data
        assert "not in the configured corpus" in failure.description


def dedup_sets(warehouse) -> tuple[set, set]:
    kept = set(warehouse.query("SELECT doc_id FROM raw_stack_plus")["doc_id"])
    removed = set(warehouse.query("SELECT doc_id, near_duplicate_of, reason FROM dedup_removed").rows())
    return kept, removed


def test_the_duplicates_found_do_not_depend_on_the_sharding(tree, tmp_path, warehouse, monkeypatch):
    monkeypatch.setenv(CORPUS_PATHS_ENV, str(tree))
    settings(tmp_path, monkeypatch, files_per_shard=5)
    dg.materialize([raw_stack_plus], resources={"compute": Compute(), "warehouse": warehouse})
    sharded = dedup_sets(warehouse)
    assert len(manifest(warehouse)) == 8

    one_shard = dg.RunConfig(ops={"raw_stack_plus": {"config": {"files_per_shard": 1000}}})  # a one-off
    result = dg.materialize([raw_stack_plus], resources={"compute": Compute(), "warehouse": warehouse}, run_config=one_shard)
    metadata = result.asset_materializations_for_node("raw_stack_plus")[0].metadata
    assert metadata["shards"].value == 1
    signing = metadata["near_dedup"].value  # signed per shard, counted from the lake
    assert signing["signed_documents"] == 32 and signing["lsh_bands_x_rows"] == "32 x 8"
    assert dedup_sets(warehouse) == sharded
    kept, removed = sharded
    assert {reason for _, _, reason in removed} == {"exact_duplicate", "near_duplicate"}
    assert len([r for r in removed if r[2] == "exact_duplicate"]) == 4
    assert len(manifest(warehouse)) == 8  # the one-off never replaced the stored shards


def test_a_source_taken_out_of_the_corpus_has_its_stored_shards_pruned(tree, tmp_path, warehouse, monkeypatch):
    import os

    from tests.fixtures_corpus import make_stack_jsonl

    stack = make_stack_jsonl(tmp_path / "stack.jsonl")
    monkeypatch.setenv(CORPUS_PATHS_ENV, os.pathsep.join([str(tree), str(stack)]))
    settings(tmp_path, monkeypatch, files_per_shard=1000)
    dg.materialize([raw_stack_plus], resources={"compute": Compute(), "warehouse": warehouse})
    assert set(manifest(warehouse)) == {"tree:tree-0000-of-0001", "stack.jsonl:stack.jsonl"}
    assert "stack.jsonl" in set(warehouse.query("SELECT DISTINCT source FROM raw_stack_plus")["source"])

    monkeypatch.setenv(CORPUS_PATHS_ENV, str(tree))
    result = dg.materialize([raw_stack_plus], resources={"compute": Compute(), "warehouse": warehouse})
    metadata = result.asset_materializations_for_node("raw_stack_plus")[0].metadata
    assert metadata["shards_pruned"].value == 1 and metadata["shards_ingested_here"].value == 0
    assert set(manifest(warehouse)) == {"tree:tree-0000-of-0001"}
    for table in ("corpus_documents", "corpus_rejects", "corpus_signatures"):
        assert set(warehouse.query(f"SELECT DISTINCT shard FROM {table}")["shard"]) <= {"tree:tree-0000-of-0001"}
    assert set(warehouse.query("SELECT DISTINCT source FROM raw_stack_plus")["source"]) == {"tree"}
