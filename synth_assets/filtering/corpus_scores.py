"""`corpus_scores`: the quality classifier's score of every corpus document, kept per corpus
shard and per classifier version, so a document is scored once per classifier.

Table `corpus_scores` (shard, doc_id, classifier_version, quality_score). Scoring a shard
scores only its raw_stack_plus documents without a score from that classifier yet, streamed
in Arrow record batches (no OFFSET paging), and publishes the shard's rows alone (the
other shards' rows stay). `filtered_textbook` scores whatever shards still lack scores
itself, then makes the cut over all of them; the partitioned asset lets a backfill score
thousands of shards ahead of it, `SHARDS_PER_RUN` per run, each shard one task of the
run's engine (in-process, or a Ray task on the compute resource's cluster).
"""

import hashlib
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from resources.compute import Compute
from resources.llm import LLMResource
from resources.warehouse import Lake, Warehouse
from resources.warehouse.lake import LAKE, MAIN, quote
from synth_assets.filtering.features import EMBEDDINGS
from synth_assets.filtering.quality_classifier import VERSIONS_TABLE, QualityModel, load_model
from synth_assets.ingest.corpus_shards import SHARDS_PER_RUN
from synth_assets.ingest.shards import corpus_shard_partitions
from synth_assets.settings import lasting_compute

CORPUS_SCORES = "corpus_scores"
CORPUS_SCORES_KEY = dg.AssetKey("corpus_scores")
SCORES_SCHEMA = {"shard": pl.String, "doc_id": pl.String, "classifier_version": pl.String, "quality_score": pl.Float64}
RAW_SCORES_SCHEMA = {"doc_id": pl.String, "quality_score": pl.Float64}


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def iter_batches(lake: Lake, sql: str, batch_size: int) -> Iterator[pl.DataFrame]:
    """The rows of `sql` as Arrow record batches of `batch_size` rows, streamed from one
    scan: memory is bounded by a batch, and no page re-reads (or re-sorts) the table."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    with lake.connect() as conn:
        reader = conn.execute(sql).fetch_record_batch(batch_size)
        for record_batch in reader:
            if record_batch.num_rows:
                yield pl.from_arrow(record_batch)


def score_batch(model: QualityModel, batch: pl.DataFrame, session: Any = None) -> pl.DataFrame:
    """(doc_id, quality_score) for one batch; NULL where the document could not be scored."""
    scores = model.score(batch["content"].to_list(), session)
    return pl.DataFrame(
        {"doc_id": batch["doc_id"], "quality_score": pl.Series(scores, dtype=pl.Float64).fill_nan(None)},
        schema=RAW_SCORES_SCHEMA,
    )


def pending_shards(lake: Lake, classifier_version: str) -> dict[str, int]:
    """shard -> raw_stack_plus documents of it without a `classifier_version` score."""
    if lake.table_exists(CORPUS_SCORES):
        unscored = f"""SELECT r.shard, count(*) AS n FROM raw_stack_plus r ANTI JOIN (
                           SELECT shard, doc_id FROM {quote(CORPUS_SCORES)} WHERE classifier_version = ?
                       ) c USING (shard, doc_id) GROUP BY r.shard"""
        rows = lake.query(unscored, [classifier_version]).rows()
    else:
        rows = lake.query("SELECT shard, count(*) AS n FROM raw_stack_plus GROUP BY shard").rows()
    return {shard: int(n) for shard, n in rows}


@dataclass(frozen=True)
class ShardScoring:
    """What a worker needs to score one shard (picklable)."""

    warehouse: dict
    shard: str
    classifier_version: str
    artefact_path: str
    batch_size: int
    run_id: str | None


def score_shard(task: ShardScoring, session: Any = None) -> int:
    """Score one shard's documents that have no score from this classifier yet and publish
    the shard's rows of `corpus_scores` (the ones kept plus the new ones, replacing only
    that shard's). Returns documents scored. Idempotent: a retried task redoes the same."""
    warehouse = Warehouse(**task.warehouse)
    shard, version = literal(task.shard), literal(task.classifier_version)
    name = "corpus_scores_" + hashlib.blake2b(task.shard.encode(), digest_size=6).hexdigest()
    with warehouse.materialization(name=name, rows_of=("shard", [task.shard]), run_id=task.run_id) as lake:
        kept = (
            f"SELECT shard, doc_id, classifier_version, quality_score FROM {LAKE}.{MAIN}.{quote(CORPUS_SCORES)} "
            f"WHERE shard = {shard} AND classifier_version = {version} "
            f"AND doc_id IN (SELECT doc_id FROM raw_stack_plus WHERE shard = {shard})"
        )
        if lake.resolve(CORPUS_SCORES) == (LAKE, MAIN):
            lake.execute(f"CREATE OR REPLACE TABLE {quote(CORPUS_SCORES)} AS {kept}")
        else:
            lake.write_table(CORPUS_SCORES, pl.DataFrame(schema=SCORES_SCHEMA))
        unscored = (
            f"SELECT doc_id, content FROM raw_stack_plus WHERE shard = {shard} "
            f"AND doc_id NOT IN (SELECT doc_id FROM {quote(CORPUS_SCORES)})"
        )
        model = load_model(task.artefact_path)
        scored = 0
        # appended straight to the staged table (a local file: no catalog commit); the
        # reader's snapshot does not see the rows appended meanwhile
        with lake.appender(CORPUS_SCORES) as append:
            for batch in iter_batches(lake, unscored, task.batch_size):
                scores = score_batch(model, batch, session)
                append(scores.select(
                    pl.lit(task.shard).alias("shard"), "doc_id",
                    pl.lit(task.classifier_version).alias("classifier_version"), "quality_score",
                ))
                scored += batch.height
    return scored


def score_shards(
    warehouse: Warehouse,
    shards: list[str],
    classifier: dict[str, Any],
    batch_size: int,
    run_id: str | None,
    compute: Compute,
    session: Any = None,
) -> int:
    """Score `shards`, one task each: on the Ray cluster when `compute` has one and the
    model needs no LLM session (an embedding model's calls stay in this process's cached
    session), else in-process. Returns documents scored."""
    settings = {name: getattr(warehouse, name) for name in ("path", "catalog", "data_path", "retry_timeout_s")}
    tasks = [
        ShardScoring(settings, shard, classifier["classifier_version"], classifier["artefact_path"], batch_size, run_id)
        for shard in shards
    ]
    if session is not None or not compute.distributed:
        return sum(score_shard(task, session) for task in tasks)
    with compute.engine() as engine:
        return sum(engine.map(score_shard, tasks))


def report_scored_shards(
    instance: dg.DagsterInstance, shards: list[str], classifier_version: str, run_id: str, lake: Lake | None = None
) -> None:
    """Record the shards filtered_textbook scored itself as runless `corpus_scores`
    materializations (registered shards only: a one-off corpus's shards are not partitions).
    With the `lake`, also the registered shards with no document in raw_stack_plus (a tree
    chunk no file fell in, a shard whose files were all duplicates of others') that were
    never reported: there is nothing to score in them, and the UI should not show them
    missing forever."""
    registered = set(instance.get_dynamic_partitions(corpus_shard_partitions.name))
    reported = [(shard, None) for shard in shards if shard in registered]
    if lake is not None and registered:
        with_documents = {row[0] for row in lake.query("SELECT DISTINCT shard FROM raw_stack_plus").rows()}
        empty = registered - with_documents - set(shards) - instance.get_materialized_partitions(CORPUS_SCORES_KEY)
        reported += [(shard, 0) for shard in sorted(empty)]
    for shard, documents in reported:
        metadata = {"classifier_version": classifier_version, "scored_by": f"filtered_textbook run {run_id}"}
        if documents == 0:
            metadata["documents"] = 0  # nothing of it is in raw_stack_plus
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=CORPUS_SCORES_KEY, partition=shard, metadata=metadata)
        )


def resolve_classifier(warehouse: Warehouse | Lake, version: str) -> dict[str, Any]:
    """The quality_classifier_versions row to use (named, or the newest)."""
    if not warehouse.table_exists(VERSIONS_TABLE):
        raise dg.Failure(f"{VERSIONS_TABLE} does not exist: materialize quality_classifier first.")
    if version:
        rows = warehouse.query(f"SELECT * FROM {VERSIONS_TABLE} WHERE classifier_version = ?", [version])
        if rows.height == 0:
            raise dg.Failure(f"classifier_version {version!r} is not in {VERSIONS_TABLE}.")
    else:
        rows = warehouse.query(f"SELECT * FROM {VERSIONS_TABLE} ORDER BY created_at DESC LIMIT 1")
        if rows.height == 0:
            raise dg.Failure(f"{VERSIONS_TABLE} is empty: materialize quality_classifier first.")
    return rows.row(0, named=True)


class CorpusScoresConfig(dg.Config):
    classifier_version: str = Field(default="", description="A classifier_version; empty = the most recently trained.")
    batch_size: int = Field(default=1024, description="Documents streamed and scored per Arrow batch (bounds memory).")


@dg.asset(
    partitions_def=corpus_shard_partitions,
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=SHARDS_PER_RUN),
    deps=[dg.AssetKey("raw_stack_plus"), dg.AssetKey("quality_classifier")],
    group_name="filtering",
    kinds={"duckdb", "python", "scikitlearn"},
    owners=["team:synth-assets"],
    code_version="1",
)
def corpus_scores(
    context: dg.AssetExecutionContext, config: CorpusScoresConfig, warehouse: Warehouse, llm: LLMResource,
    compute: Compute,
) -> dg.MaterializeResult:
    """The quality classifier's scores of one corpus shard per partition (table
    `corpus_scores`): only the shard's documents without a score from the classifier yet
    are scored, so re-running a shard after an unchanged raw_stack_plus costs a scan.
    filtered_textbook scores what is still missing itself; backfill this asset to score a
    large corpus ahead of it across runs (and Ray workers)."""
    classifier = resolve_classifier(warehouse, config.classifier_version)
    model = load_model(classifier["artefact_path"])
    compute = lasting_compute(compute)
    session_scope = llm.session(context, warehouse) if model.feature_set == EMBEDDINGS else nullcontext(None)
    with session_scope as session:
        scored = score_shards(
            warehouse, list(context.partition_keys), classifier, config.batch_size, context.run_id, compute, session
        )
    return dg.MaterializeResult(
        metadata={
            "classifier_version": classifier["classifier_version"],
            "shards": len(context.partition_keys),
            "documents_scored": scored,
            "compute": "ray" if compute.distributed and session is None else "in-process",
        }
    )
