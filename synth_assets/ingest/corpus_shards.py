"""`corpus_shards`: the corpus read, normalised and MinHash-signed one shard at a time.

One dynamic partition per shard (synth_assets/ingest/shards.py): a file of The Stack, a
StackOverflow dump, or a fixed chunk of a Python tree. The corpus sensor registers new
shards and requests the changed ones; a backfill over thousands of shards runs
`SHARDS_PER_RUN` of them per run (BackfillPolicy.multi_run), each shard one task of the
run's engine (in-process, or a Ray task on the compute resource's cluster). `raw_stack_plus` then
deduplicates across all shards, and ingests itself any shard no run has stored yet, so
the graph also works with no partition ever materialized.
"""


from collections.abc import Sequence

import dagster as dg

from resources.compute import Compute
from resources.warehouse import Warehouse
from synth_assets.common.tables import markdown_table
from synth_assets.ingest.corpus import ShardSummary, lasting_config, lasting_sources, materialize_shards
from synth_assets.ingest.shards import ShardError, corpus_shard_partitions, find_shard, plan_shards
from synth_assets.ingest.sources import SourceNotFound
from synth_assets.settings import SettingsError, lasting_compute

CORPUS_SHARDS_KEY = dg.AssetKey("corpus_shards")
# Shards per run of a backfill: few enough that a failed run redoes little, enough that
# thousands of shards do not mean thousands of run launches.
SHARDS_PER_RUN = 16


def registered_shards(instance: dg.DagsterInstance) -> list[str]:
    return list(instance.get_dynamic_partitions(corpus_shard_partitions.name))


def register_shards(instance: dg.DagsterInstance, keys: Sequence[str]) -> list[str]:
    """Add the keys not registered yet as `corpus_shards` partitions; returns them."""
    known = set(registered_shards(instance))
    new = [key for key in keys if key not in known]
    if new:
        instance.add_dynamic_partitions(corpus_shard_partitions.name, new)
    return new


def shard_metadata(summary: ShardSummary) -> dict:
    return {
        "documents": summary.documents,
        "rejected": summary.rejected,
        "signed_documents": summary.near_dedup.signed_documents,
    }


def shard_materialization(summary: ShardSummary, run_id: str) -> dg.AssetMaterialization:
    """The event of a shard raw_stack_plus ingested and published itself, reported as a
    runless event of `corpus_shards` (that partition is then materialized in the UI)."""
    return dg.AssetMaterialization(
        asset_key=CORPUS_SHARDS_KEY,
        partition=summary.shard,
        metadata={**shard_metadata(summary), "ingested_by": f"raw_stack_plus run {run_id}"},
    )


@dg.asset(
    partitions_def=corpus_shard_partitions,
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=SHARDS_PER_RUN),
    group_name="ingest",
    kinds={"duckdb", "python"},
    owners=["team:synth-assets"],
    code_version="1",
)
def corpus_shards(
    context: dg.AssetExecutionContext, warehouse: Warehouse, compute: Compute
) -> dg.MaterializeResult:
    """One shard of the lasting corpus per partition: its documents (normalised, hashed),
    its rejects with their reasons, and its MinHash signatures with LSH band keys, in the
    lake tables `corpus_documents`, `corpus_rejects`, `corpus_signatures` and
    `corpus_shard_manifest` (a `shard` column in each; a run replaces only its shards' rows).

    The corpus and the reading/signing settings are raw_stack_plus's lasting ones
    ([raw_stack_plus] in synth_assets.toml, or env SYNTH_ASSETS_CORPUS_PATHS): a shard is
    the same rows whoever ingests it. A run of several partitions (a backfill) ingests each
    shard as its own task: on a Ray cluster when the compute resource names one."""
    try:
        config = lasting_config()
        specs, _ = lasting_sources()
        shards = plan_shards(specs, config.files_per_shard, config.exclude_dirs, registered_shards(context.instance))
        selected = [find_shard(key, shards) for key in context.partition_keys]
    except (SourceNotFound, SettingsError, ShardError) as exc:
        raise dg.Failure(description=f"corpus_shards: {exc}") from exc
    compute = lasting_compute(compute)
    summaries = materialize_shards(warehouse, selected, config, context.run_id, compute)
    rows = [(s.shard, s.documents, s.rejected, s.near_dedup.signed_documents) for s in summaries]
    return dg.MaterializeResult(
        metadata={
            "shards": len(summaries),
            "documents": sum(s.documents for s in summaries),
            "rejected": sum(s.rejected for s in summaries),
            "by_shard": dg.MetadataValue.md(markdown_table(rows, ["shard", "documents", "rejected", "signed"])),
            "compute": "ray" if compute.distributed else "in-process",
        }
    )
