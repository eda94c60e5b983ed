"""`raw_stack_plus`: the code corpus every later stage draws from: every shard of the
configured sources, exact- and near-deduplicated across shards.

The shards are read and signed per shard (synth_assets/ingest/corpus.py, the `corpus_shards`
partitions); this asset deduplicates across all of them in SQL: exact copies by doc_id,
then MinHash LSH over the stored signatures (synth_assets/ingest/near_dedup.py).
"""

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg
import polars as pl

from resources.compute import Compute
from resources.warehouse import Warehouse
from resources.warehouse.lake import Lake, quote
from synth_assets.automation import on_new_shards
from synth_assets.common.tables import counts_markdown, markdown_table, table_result
from synth_assets.ingest.corpus import (  # noqa: F401  (the corpus's config is raw_stack_plus's)
    CORPUS_DOCS,
    CORPUS_MANIFEST,
    CORPUS_PATHS_ENV,
    CORPUS_REJECTS,
    CORPUS_SIGNATURES,
    DOC_SCHEMA,
    SHARD_FIELDS,
    RawStackPlusConfig,
    ShardSummary,
    SourceSpec,
    create_corpus_tables,
    default_sources,
    document_row,
    ingest_shard,
    lasting_config,
    lasting_sources,
    materialize_shards,
    parses_as_python,
    source_for_path,
    stale_shards,
    stored_shards,
)
from synth_assets.ingest.dedup import NearDuplicate
from synth_assets.ingest.near_dedup import CLUSTERINGS, NearDedupStats, find_near_duplicates, lsh_shape
from synth_assets.ingest.corpus_shards import (
    CORPUS_SHARDS_KEY,
    register_shards,
    registered_shards,
    shard_materialization,
)
from synth_assets.ingest.shards import Shard, ShardError, plan_shards
from synth_assets.ingest.sources import SOURCE_KINDS, SourceNotFound, require_path
from synth_assets.settings import SettingsError, lasting_compute

RAW_TABLE = "raw_stack_plus"
REMOVED_TABLE = "dedup_removed"
REJECTS_TABLE = "ingest_rejects"
CURRENT_SHARDS = "_corpus_shards_current"
STAGING_NEAR = "_staging_near_duplicates"
NEAR_SCHEMA = {"doc_id": pl.Utf8, "near_duplicate_of": pl.Utf8, "jaccard": pl.Float64}


@dataclass
class IngestSummary:
    documents_read: int = 0
    rejected: int = 0
    exact_duplicates: int = 0
    near_duplicates: int = 0
    kept: int = 0
    shards: int = 0
    shards_ingested: int = 0
    shards_pruned: int = 0
    rejects_by_reason: Counter = field(default_factory=Counter)
    skipped_by_reason: Counter = field(default_factory=Counter)
    by_source: dict[str, Counter] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    near_dedup: NearDedupStats = field(default_factory=NearDedupStats)


@dataclass
class CorpusPlan:
    """The shards a run deduplicates, which of them it (re-)ingests, and whether they are
    the lasting corpus (stored and published as `corpus_shards` partitions) or a one-off
    (launchpad sources or signing parameters, staged for this run only)."""

    shards: list[Shard]
    to_ingest: list[Shard]
    lasting: bool
    origin: str


def validate(config: RawStackPlusConfig, specs: list[SourceSpec]) -> None:
    """Fail on configuration before any table is touched."""
    for spec in specs:
        if spec.kind not in SOURCE_KINDS:
            raise ValueError(f"unknown source kind {spec.kind!r} for {spec.path}; expected one of {', '.join(SOURCE_KINDS)}")
        require_path(spec.path)
    if config.near_dedup_clustering not in CLUSTERINGS:
        raise ValueError(
            f"unknown near_dedup_clustering {config.near_dedup_clustering!r}; expected one of {', '.join(CLUSTERINGS)}"
        )


def plan_corpus(lake: Lake, config: RawStackPlusConfig, known_keys: list[str] = ()) -> CorpusPlan:
    """Which shards this run reads. The lasting corpus reuses every stored shard whose
    files and signing parameters are unchanged; a one-off run ingests all of its own.
    `known_keys` (registered partitions) keep a tree's chunk count stable."""
    specs, origin = config.sources_and_origin()
    validate(config, specs)
    lasting_values = lasting_config()
    lasting = not config.sources and all(getattr(config, f) == getattr(lasting_values, f) for f in SHARD_FIELDS)
    known = [*known_keys, *stored_shards(lake)] if lasting else []
    shards = plan_shards(specs, config.files_per_shard, config.exclude_dirs, known)
    to_ingest = stale_shards(lake, shards, config) if lasting else list(shards)
    return CorpusPlan(shards, to_ingest, lasting, origin)


def _shard_relation(table: str) -> str:
    return f"(SELECT * FROM {quote(table)} SEMI JOIN {quote(CURRENT_SHARDS)} USING (shard))"


def ingest(
    warehouse: Warehouse,
    config: RawStackPlusConfig,
    log: Callable[[str], None] = lambda message: None,
    lake: Lake | None = None,
    run_id: str | None = None,
    compute: Compute | None = None,
    on_shard: Callable[[ShardSummary], None] = lambda summary: None,
    plan: CorpusPlan | None = None,
) -> IngestSummary:
    """Bring the shards up to date, deduplicate across them, and write `raw_stack_plus`,
    `dedup_removed` and `ingest_rejects` into `lake` (default: the live tables). Returns the
    counts. `on_shard` hears of every shard published on the way."""
    lake = lake or warehouse.lake()
    summary = IngestSummary()
    plan = plan or plan_corpus(lake, config)
    if not plan.lasting and lake.schema == "main":
        raise ValueError("a one-off corpus is staged in a materialization's schema, never in the live tables")
    summary.shards, summary.shards_ingested = len(plan.shards), len(plan.to_ingest)
    started = time.perf_counter()
    if plan.lasting:
        log(f"{len(plan.to_ingest)} of {len(plan.shards)} shards are new or changed: ingesting them")
        for shard_summary in materialize_shards(warehouse, plan.to_ingest, config, run_id, compute):
            on_shard(shard_summary)
        summary.shards_pruned = prune_shards(warehouse, [s.key for s in plan.shards])
    else:
        log(f"one-off corpus ({plan.origin}): ingesting its {len(plan.shards)} shards for this run only")
        create_corpus_tables(lake)
        for shard in plan.shards:
            ingest_shard(lake, shard, config, run_id)
    summary.seconds["read_and_sign"] = time.perf_counter() - started

    lake.write_table(CURRENT_SHARDS, pl.DataFrame({"shard": [s.key for s in plan.shards]}, schema={"shard": pl.Utf8}))
    _count_shards(lake, summary)
    # the signing happened per shard (maybe in other processes): its figures, from the lake
    stats = summary.near_dedup
    stats.bands, stats.rows_per_band = lsh_shape(config.near_params())
    signed, distinct = lake.query(
        f"SELECT (SELECT count(DISTINCT doc_id) FROM {_shard_relation(CORPUS_SIGNATURES)}) AS signed, "
        f"(SELECT count(DISTINCT doc_id) FROM {_shard_relation(CORPUS_DOCS)}) AS distinct_docs"
    ).row(0)
    stats.signed_documents, stats.documents_without_shingles = int(signed), int(distinct) - int(signed)
    started = time.perf_counter()
    near = find_near_duplicates(
        lake, config.near_params(), summary.near_dedup, config.near_dedup_clustering, log,
        signatures=_shard_relation(CORPUS_SIGNATURES),
    )
    summary.seconds["near_dedup"] = time.perf_counter() - started
    started = time.perf_counter()
    finalise_tables(lake, near)
    summary.seconds["write"] = time.perf_counter() - started
    dropped = [CURRENT_SHARDS, STAGING_NEAR] + ([] if plan.lasting else [CORPUS_DOCS, CORPUS_REJECTS, CORPUS_SIGNATURES, CORPUS_MANIFEST])
    for table in dropped:
        if lake.owns(table):
            lake.execute(f"DROP TABLE {quote(table)}")

    removed = dict(lake.query(f'SELECT reason, count(*) AS n FROM "{REMOVED_TABLE}" GROUP BY reason').rows())
    summary.exact_duplicates = int(removed.get("exact_duplicate", 0))
    summary.near_duplicates = int(removed.get("near_duplicate", 0))
    for source, n in lake.query(f'SELECT source, count(*) AS n FROM "{RAW_TABLE}" GROUP BY source').rows():
        summary.by_source.setdefault(source, Counter())["kept"] = int(n)
        summary.kept += int(n)
    return summary


def prune_shards(warehouse: Warehouse, keep: list[str]) -> int:
    """Delete the stored rows of shards that are no longer in the corpus (a source taken
    out of the settings, a Stack file deleted), in one transaction; returns how many."""
    if not warehouse.table_exists(CORPUS_MANIFEST):
        return 0
    gone = warehouse.query(
        f"SELECT shard FROM {quote(CORPUS_MANIFEST)} WHERE shard NOT IN (SELECT unnest(?::VARCHAR[]))", [keep]
    )["shard"].to_list()
    if not gone:
        return 0

    def delete(conn) -> None:
        for table in (CORPUS_DOCS, CORPUS_REJECTS, CORPUS_SIGNATURES, CORPUS_MANIFEST):
            conn.execute(f"DELETE FROM {quote(table)} WHERE shard IN (SELECT unnest(?::VARCHAR[]))", [gone])

    warehouse.transaction(delete)
    return len(gone)


def _count_shards(lake: Lake, summary: IngestSummary) -> None:
    """Documents, rejects and skips of the current shards, from their stored rows."""
    for source, documents, rejected, skipped in lake.query(
        f"SELECT source, sum(documents), sum(rejected), list(skipped) FROM {_shard_relation(CORPUS_MANIFEST)} GROUP BY source"
    ).rows():
        counts = summary.by_source.setdefault(source, Counter())
        counts["documents"] += int(documents or 0)
        counts["rejected"] += int(rejected or 0)
        summary.documents_read += int(documents or 0)
        summary.rejected += int(rejected or 0)
        for item in skipped or []:
            summary.skipped_by_reason.update(json.loads(item or "{}"))
    for reason, n in lake.query(
        f"SELECT reason, count(*) FROM {_shard_relation(CORPUS_REJECTS)} GROUP BY reason"
    ).rows():
        summary.rejects_by_reason[reason] += int(n)


def finalise_tables(lake: Lake, near: list[NearDuplicate]) -> None:
    """Build the three output tables from the current shards' rows in SQL (CREATE OR
    REPLACE). Exact copies: the smallest (source, origin) is kept."""
    lake.write_table(
        STAGING_NEAR,
        pl.DataFrame(
            [{"doc_id": n.doc_id, "near_duplicate_of": n.near_duplicate_of, "jaccard": n.jaccard} for n in near],
            schema=NEAR_SCHEMA,
        ),
    )
    docs = _shard_relation(CORPUS_DOCS)
    with lake.connect() as conn:
        # The copy ranks without the content (~100 B a document), so only the final
        # statement streams the content from the stored Parquet.
        conn.execute(f"""
            CREATE OR REPLACE TEMP TABLE ranked AS
            SELECT shard, seq, doc_id, source, origin,
                   row_number() OVER (PARTITION BY doc_id ORDER BY source, origin, shard, seq) AS copy_rank
            FROM {docs}
        """)
        conn.execute(f"""
            CREATE OR REPLACE TABLE "{RAW_TABLE}" AS
            SELECT d.doc_id, d.source, d.origin, d.repo, d.license, d.content, d.n_chars, d.n_lines, d.n_tokens,
                   d.parses_as_python, d.shard
            FROM {docs} d SEMI JOIN ranked r ON r.shard = d.shard AND r.seq = d.seq AND r.copy_rank = 1
            WHERE d.doc_id NOT IN (SELECT doc_id FROM "{STAGING_NEAR}")
            -- by shard first: each data file / row group then holds few shards, so a
            -- per-shard read (corpus_scores) skips the others by their min/max statistics
            -- instead of scanning the whole corpus's content once per shard
            ORDER BY d.shard, d.doc_id
        """)
        conn.execute(f"""
            CREATE OR REPLACE TABLE "{REMOVED_TABLE}" AS
            WITH kept_copy AS (SELECT doc_id, origin FROM ranked WHERE copy_rank = 1)
            -- An exact copy points at the document that survived: its own kept copy, or,
            -- when that copy was itself removed as a near-duplicate, the cluster's survivor.
            SELECT r.doc_id, coalesce(n.near_duplicate_of, r.doc_id) AS near_duplicate_of,
                   coalesce(n.jaccard, 1.0)::DOUBLE AS jaccard,
                   'exact_duplicate' AS reason, r.source, r.origin, k.origin AS duplicate_of_origin
            FROM ranked r
            LEFT JOIN "{STAGING_NEAR}" n ON n.doc_id = r.doc_id
            JOIN kept_copy k ON k.doc_id = coalesce(n.near_duplicate_of, r.doc_id)
            WHERE r.copy_rank > 1
            UNION ALL
            SELECT n.doc_id, n.near_duplicate_of, n.jaccard,
                   'near_duplicate' AS reason, r.source, r.origin, k.origin AS duplicate_of_origin
            FROM "{STAGING_NEAR}" n
            JOIN ranked r ON r.doc_id = n.doc_id AND r.copy_rank = 1
            JOIN kept_copy k ON k.doc_id = n.near_duplicate_of
            ORDER BY reason, doc_id, origin
        """)
        conn.execute(f"""
            CREATE OR REPLACE TABLE "{REJECTS_TABLE}" AS
            SELECT source, origin, reason, detail FROM {_shard_relation(CORPUS_REJECTS)}
            ORDER BY source, origin, reason
        """)


def summary_metadata(summary: IngestSummary, config: RawStackPlusConfig) -> dict:
    by_source_rows = [
        (source, c["documents"], c["rejected"], c["kept"]) for source, c in sorted(summary.by_source.items())
    ]
    metadata = {
        "documents_read": summary.documents_read,
        "rejected": summary.rejected,
        "exact_duplicates": summary.exact_duplicates,
        "near_duplicates": summary.near_duplicates,
        "kept": summary.kept,
        "shards": summary.shards,
        "shards_ingested_here": summary.shards_ingested,
        "shards_pruned": summary.shards_pruned,
        "by_source": dg.MetadataValue.md(markdown_table(by_source_rows, ["source", "documents", "rejected", "kept"])),
        "rejects_by_reason": dg.MetadataValue.md(counts_markdown(dict(summary.rejects_by_reason))),
        "dedup_params": dg.MetadataValue.json(
            {
                "ngram_size": config.ngram_size,
                "num_perm": config.num_perm,
                "jaccard_threshold": config.jaccard_threshold,
                "seed": config.minhash_seed,
                "lsh_candidate_threshold": config.lsh_candidate_threshold,
                "clustering": config.near_dedup_clustering,
            }
        ),
        "near_dedup": dg.MetadataValue.json(
            {
                **summary.near_dedup.as_metadata(),
                "seconds": {k: round(v, 2) for k, v in summary.near_dedup.seconds.items()},
            }
        ),
        "sources": dg.MetadataValue.json([s.model_dump() for s in config.resolved_sources()]),
        "sources_from": config.sources_and_origin()[1],
        "seconds": dg.MetadataValue.json({k: round(v, 2) for k, v in summary.seconds.items()}),
    }
    for reason, n in sorted(summary.rejects_by_reason.items()):
        metadata[f"rejects/{reason}"] = int(n)
    for reason, n in sorted(summary.skipped_by_reason.items()):
        metadata[f"skipped/{reason}"] = int(n)
    return metadata


# --- the asset -------------------------------------------------------------------------


@dg.asset(
    group_name="ingest",
    kinds={"duckdb", "python"},
    owners=["team:synth-assets"],
    code_version="2",
    deps=[dg.AssetDep(CORPUS_SHARDS_KEY)],
    automation_condition=on_new_shards(),
)
def raw_stack_plus(
    context: dg.AssetExecutionContext, config: RawStackPlusConfig, warehouse: Warehouse, compute: Compute
):
    """The deduplicated code corpus (one row per distinct document).

    Reads the corpus sources: directory trees of `.py` files, The Stack
    Parquet/JSONL shards, and StackOverflow Python questions joined with their
    accepted answers. Which sources is a lasting setting, so sensor and automation
    runs read the same ones: `sources` under [raw_stack_plus] in synth_assets.toml
    (or env SYNTH_ASSETS_CORPUS_PATHS); with neither, this interpreter's Python
    standard library (~600 files, without tests, site-packages, idlelib and
    lib2to3). `sources` in the launchpad overrides them for one run only; the
    `sources_from` metadata says which applied.

    The corpus is a set of shards (`corpus_shards` partitions: a file of The Stack, a
    StackOverflow dump, a fixed chunk of a tree); each is read and signed once and
    stored, and this asset ingests only the shards that are new or whose files changed
    (in-process, or as Ray tasks when the compute resource names a cluster), registers them as partitions, and
    deduplicates across all of them. `shards` and `shards_ingested_here` are in the
    metadata. Launchpad sources, or signing parameters other than the lasting ones, are a
    one-off: their shards are staged for this run only and never replace stored ones.

    Content is normalised (LF line ends, no trailing spaces, one final newline) and
    `doc_id` is the sha256 of it. Exact copies are collapsed (the smallest
    source/origin is kept); near duplicates are found with MinHash LSH (bigcode
    defaults: 5-gram token shingles, 256 permutations, Jaccard >= 0.7) and the
    longest document of each cluster is kept. The near dedup runs out of core: each
    batch's signatures and LSH band keys are stored in the run's staging schema as they
    are computed, candidate pairs come from SQL per band, and their estimated Jaccard is
    checked in bounded batches (memory does not grow with the corpus; the `near_dedup`
    metadata has the candidate, edge and component counts). Every dropped copy is a row in
    `dedup_removed` (reason, duplicate_of, estimated Jaccard); every unreadable,
    binary, undecodable, empty, oversize or malformed input is a row in
    `ingest_rejects` with its reason. `n_tokens` is approximate: regex word and
    punctuation tokens, not a BPE count.
    """
    config = lasting_config(config)
    with warehouse.materialization(context) as lake:
        try:
            plan = plan_corpus(lake, config, registered_shards(context.instance))
            if plan.lasting:
                register_shards(context.instance, [s.key for s in plan.shards])
            compute = lasting_compute(compute)  # Ray when the compute resource names a cluster, else in-process
            summary = ingest(
                warehouse, config, context.log.info, lake, context.run_id, compute,
                on_shard=lambda shard: context.instance.report_runless_asset_event(shard_materialization(shard, context.run_id)),
                plan=plan,
            )
        except SourceNotFound as exc:
            _, origin = config.sources_and_origin()
            raise dg.Failure(description=f"raw_stack_plus: {exc}. Fix the sources ({origin}).") from exc
        except (SettingsError, ShardError) as exc:
            raise dg.Failure(description=f"raw_stack_plus: {exc}") from exc
        except ValueError as exc:
            if "unknown source kind" not in str(exc) and "unknown near_dedup_clustering" not in str(exc):
                raise
            raise dg.Failure(description=f"raw_stack_plus: {exc}") from exc
        metadata = summary_metadata(summary, config)
        metadata["dedup_removed_rows"] = summary.exact_duplicates + summary.near_duplicates
        metadata["ingest_rejects_rows"] = summary.rejected
        metadata["compute"] = "ray" if compute.distributed and plan.lasting else "in-process"
    return table_result(warehouse, RAW_TABLE, metadata, snapshot_id=lake.snapshot_id_published)
