"""filtered_textbook: the quality classifier scores every file of raw_stack_plus and
keeps the educational ones (phi-1's "filtered code-language dataset")."""


from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from resources.llm import LLMResource
from resources.warehouse import Warehouse
from synth_assets.automation import on_upstream_change
from synth_assets.filtering.quality_classifier import VERSIONS_TABLE, QualityModel, load_model
from synth_assets.filtering.features import EMBEDDINGS
from synth_assets.common.tables import markdown_table, table_result

SCORES_TABLE = "textbook_scores"
FILTERED_TABLE = "filtered_textbook"

SCORE_SCHEMA = {
    "doc_id": pl.String,
    "quality_score": pl.Float64,
    "classifier_version": pl.String,
    "kept": pl.Boolean,
    "reason": pl.String,
}


class FilterConfig(dg.Config):
    """Which classifier scores the corpus and where the cut is."""

    quality_threshold: float = Field(
        # P(educational) >= 0.5 is the classifier's own decision boundary; see the
        # quality_classifier threshold_sweep metadata to trade precision for volume.
        default=0.5,
        description="Keep documents whose predicted P(educational) is at or above this.",
    )
    batch_size: int = Field(
        default=256, description="Documents read, featurized and scored per batch (bounds memory)."
    )
    classifier_version: str = Field(
        default="",
        description="A classifier_version from quality_classifier_versions; empty = the most recently trained.",
    )


def iter_batches(warehouse: Warehouse, sql: str, batch_size: int) -> Iterator[pl.DataFrame]:
    """`sql` in pages of `batch_size` rows (LIMIT/OFFSET on a stable ORDER BY inside
    `sql`), so memory is bounded by one batch, not the corpus."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    offset = 0
    while True:
        batch = warehouse.query(f"{sql} LIMIT {int(batch_size)} OFFSET {int(offset)}")
        if batch.height == 0:
            return
        yield batch
        if batch.height < batch_size:
            return
        offset += batch_size


def score_rows(model: QualityModel, batch: pl.DataFrame, threshold: float, session: Any = None) -> pl.DataFrame:
    """textbook_scores rows for one batch: every document gets a row; a document that
    could not be scored (embedding failed) is not kept and says why."""
    scores = model.score(batch["content"].to_list(), session)
    failed = np.isnan(scores)
    kept = ~failed & (scores >= threshold)
    reason = np.where(failed, "embedding_failed", np.where(kept, "kept", "below_threshold"))
    return pl.DataFrame(
        {
            "doc_id": batch["doc_id"],
            "quality_score": pl.Series(scores, dtype=pl.Float64).fill_nan(None),
            "classifier_version": [model.classifier_version] * batch.height,
            "kept": kept,
            "reason": reason,
        },
        schema=SCORE_SCHEMA,
    )


def resolve_classifier(warehouse: Warehouse, version: str) -> dict[str, Any]:
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


def score_histogram(scores: list[float | None], bins: int = 10) -> str:
    """Counts of quality_score in equal-width bins over [0, 1], plus unscored rows."""
    values = np.array([s for s in scores if s is not None], dtype=float)
    counts, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    rows = [(f"[{edges[i]:.1f}, {edges[i + 1]:.1f}{']' if i == bins - 1 else ')'}", int(c)) for i, c in enumerate(counts)]
    rows.append(("unscored", len(scores) - len(values)))
    return markdown_table(rows, ["quality_score", "documents"])


CORPUS_SQL = (
    "SELECT r.doc_id, r.source, r.origin, r.repo, r.license, r.content, r.n_chars, r.n_lines, r.n_tokens, "
    "a.educational_score AS annotated_educational_score, a.prompt_version AS annotation_prompt_version, "
    "a.doc_id IS NOT NULL AS in_annotated_sample "
    "FROM raw_stack_plus r LEFT JOIN annotated_sample a USING (doc_id) ORDER BY r.doc_id"
)


def filter_corpus(
    warehouse: Warehouse, model: QualityModel, config: FilterConfig, training_data_hash: str, session: Any = None
) -> dict[str, Any]:
    """Score every raw_stack_plus row in batches; write textbook_scores (all rows) and
    filtered_textbook (kept rows with content and lineage). Returns summary counts."""
    totals = {"kept_docs": 0, "dropped_docs": 0, "kept_tokens": 0, "dropped_tokens": 0, "unscored_docs": 0}
    all_scores: list[float | None] = []
    for index, batch in enumerate(iter_batches(warehouse, CORPUS_SQL, config.batch_size)):
        scored = score_rows(model, batch, config.quality_threshold, session)
        kept = (
            batch.join(scored, on="doc_id")
            .filter(pl.col("kept"))
            .drop("kept", "reason")
            .with_columns(pl.lit(training_data_hash).alias("classifier_training_data_hash"))
        )
        write = warehouse.write_table if index == 0 else warehouse.append_table
        write(SCORES_TABLE, scored)
        write(FILTERED_TABLE, kept)
        tokens = batch["n_tokens"].fill_null(0)
        mask = scored["kept"]
        totals["kept_docs"] += int(mask.sum())
        totals["dropped_docs"] += int((~mask).sum())
        totals["kept_tokens"] += int(tokens.filter(mask).sum())
        totals["dropped_tokens"] += int(tokens.filter(~mask).sum())
        totals["unscored_docs"] += int(scored["quality_score"].is_null().sum())
        all_scores.extend(scored["quality_score"].to_list())
    if not all_scores:
        raise dg.Failure("raw_stack_plus is empty: nothing to filter.")
    totals["score_histogram"] = score_histogram(all_scores)
    return totals


@dg.asset(
    deps=[dg.AssetKey("quality_classifier"), dg.AssetKey("raw_stack_plus"), dg.AssetKey("annotated_sample")],
    group_name="filtering",
    kinds={"duckdb", "python", "scikitlearn"},
    owners=["team:synth-assets"],
    code_version="filter-1",
    automation_condition=on_upstream_change(),
)
def filtered_textbook(
    context: dg.AssetExecutionContext, config: FilterConfig, warehouse: Warehouse, llm: LLMResource
) -> dg.MaterializeResult:
    """The educational part of raw_stack_plus, as judged by the quality classifier.

    Every document is scored in batches of `batch_size` (streamed with LIMIT/OFFSET, so
    memory stays bounded) by the newest model in quality_classifier_versions (or the
    `classifier_version` named in the launchpad). `textbook_scores` gets one row per
    document (quality_score, classifier_version, kept, reason: kept / below_threshold /
    embedding_failed); `filtered_textbook` gets the kept documents with their content,
    quality_score, classifier_version and annotation lineage (in_annotated_sample, the
    LLM's educational_score if it graded the file, the classifier's training-data hash).
    If the embedding classifier was chosen, the corpus is embedded through the LLM
    layer (cached) on the first `embed_max_chars` characters the classifier was trained on.
    """
    with warehouse.materialization(context) as lake:
        row = resolve_classifier(lake, config.classifier_version)
        model = load_model(row["artefact_path"])
        context.log.info(f"Scoring raw_stack_plus with {model.classifier_version} ({model.feature_set})")
        llm_metadata: dict[str, Any] = {}
        session_scope = llm.session(context, warehouse) if model.feature_set == EMBEDDINGS else nullcontext(None)
        with session_scope as session:
            totals = filter_corpus(lake, model, config, row["training_data_hash"], session)
            if session is not None:
                llm_metadata = session.metadata()
    kept, dropped = totals["kept_docs"], totals["dropped_docs"]
    return table_result(
        warehouse,
        FILTERED_TABLE,
        {
            "classifier_version": model.classifier_version,
            "feature_set": model.feature_set,
            "quality_threshold": config.quality_threshold,
            "documents/kept": kept,
            "documents/dropped": dropped,
            "documents/unscored": totals["unscored_docs"],
            "documents/kept_share": round(kept / (kept + dropped), 4),
            "tokens/kept": totals["kept_tokens"],
            "tokens/dropped": totals["dropped_tokens"],
            "score_histogram": dg.MetadataValue.md(totals["score_histogram"]),
            **llm_metadata,
        },
        snapshot_id=lake.snapshot_id_published,
    )
