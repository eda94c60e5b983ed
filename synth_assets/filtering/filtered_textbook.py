"""filtered_textbook: the quality classifier scores every file of raw_stack_plus and
keeps the educational ones (phi-1's "filtered code-language dataset")."""


from contextlib import nullcontext
from typing import Any

import dagster as dg
from pydantic import Field

from resources.compute import Compute
from resources.llm import LLMResource
from resources.warehouse import Lake, Warehouse
from synth_assets.automation import on_upstream_change
from synth_assets.settings import lasting_compute, settings_origin, with_settings
from synth_assets.filtering.corpus_scores import (  # noqa: F401  (iter_batches: the streaming reader)
    CORPUS_SCORES,
    iter_batches,
    pending_shards,
    report_scored_shards,
    resolve_classifier,
    score_shards,
)
from synth_assets.filtering.quality_classifier import load_model
from synth_assets.filtering.features import EMBEDDINGS
from synth_assets.common.tables import markdown_table, table_result

SCORES_TABLE = "textbook_scores"
FILTERED_TABLE = "filtered_textbook"

class FilterConfig(dg.Config):
    """Which classifier scores the corpus and where the cut is."""

    quality_threshold: float = Field(
        # P(educational) >= 0.5 is the classifier's own decision boundary; see the
        # quality_classifier threshold_sweep metadata to trade precision for volume.
        default=0.5,
        description="Keep documents whose predicted P(educational) is at or above this "
        "(ignored when keep_token_share is set).",
    )
    keep_token_share: float | None = Field(
        # phi-1 kept ~6B of its ~35B-token pool: keep_token_share=0.17.
        default=None,
        description="Instead of a threshold, keep the best-scored documents up to this share of the corpus's "
        "tokens (phi-1: 0.17, 6B of 35B). The resulting cut and token count go into the metadata.",
    )
    batch_size: int = Field(
        default=1024, description="Documents streamed, featurized and scored per Arrow batch (bounds memory)."
    )
    classifier_version: str = Field(
        default="",
        description="A classifier_version from quality_classifier_versions; empty = the most recently trained.",
    )


# The current classifier's scores of the current corpus, gathered for the cut.
RAW_SCORES_TABLE = "_textbook_raw_scores"


def score_corpus(
    warehouse: Warehouse, lake: Lake, classifier: dict[str, Any], batch_size: int, run_id: str | None,
    compute: Compute, session: Any = None, log=lambda message: None, instance: dg.DagsterInstance | None = None,
) -> tuple[int, int]:
    """Score the raw_stack_plus documents that have no score from this classifier yet
    (per shard: corpus_scores.py), then gather every current document's score into
    RAW_SCORES_TABLE. Returns (documents scored now, documents with a score)."""
    version = classifier["classifier_version"]
    pending = pending_shards(lake, version)
    log(f"{sum(pending.values())} documents in {len(pending)} shard(s) have no score from {version} yet")
    scored = score_shards(warehouse, sorted(pending), classifier, batch_size, run_id, compute, session)
    if instance is not None:
        report_scored_shards(instance, sorted(pending), version, run_id, lake)
    lake.execute(
        f"""CREATE OR REPLACE TABLE "{RAW_SCORES_TABLE}" AS
        SELECT c.doc_id, c.quality_score FROM "{CORPUS_SCORES}" c JOIN raw_stack_plus r USING (shard, doc_id)
        WHERE c.classifier_version = ?""",
        [version],
    )
    total = int(lake.query(f'SELECT count(*) AS n FROM "{RAW_SCORES_TABLE}"')["n"][0])
    return scored, total


def kept_by_token_share(lake, share: float) -> str:
    """SQL selecting the doc_ids kept when the best-scored documents (ties broken by doc_id,
    so the share is exact and reproducible) are kept while they hold at most `share` of the
    corpus's tokens."""
    if not 0 < share <= 1:
        raise ValueError(f"keep_token_share must be within (0, 1], got {share}")
    return f"""
        SELECT doc_id FROM (
            SELECT s.doc_id,
                   sum(coalesce(r.n_tokens, 0)) OVER (ORDER BY s.quality_score DESC, s.doc_id
                                                      ROWS UNBOUNDED PRECEDING) AS tokens_so_far,
                   sum(coalesce(r.n_tokens, 0)) OVER () AS total_tokens
            FROM "{RAW_SCORES_TABLE}" s JOIN raw_stack_plus r USING (doc_id)
            WHERE s.quality_score IS NOT NULL
        ) WHERE tokens_so_far <= {float(share)!r} * total_tokens"""


def decide(lake, kept_sql: str, classifier_version: str, training_data_hash: str) -> None:
    """textbook_scores (every document: score, kept, reason) and filtered_textbook (the
    kept documents with content and lineage), both in SQL from the streamed scores;
    `kept_sql` selects the kept doc_ids."""
    lake.execute(
        f"""CREATE OR REPLACE TABLE "{SCORES_TABLE}" AS
        WITH kept AS ({kept_sql})
        SELECT s.doc_id, s.quality_score, ?::VARCHAR AS classifier_version,
               k.doc_id IS NOT NULL AS kept,
               CASE WHEN s.quality_score IS NULL THEN 'embedding_failed'
                    WHEN k.doc_id IS NOT NULL THEN 'kept' ELSE 'below_threshold' END AS reason
        FROM "{RAW_SCORES_TABLE}" s LEFT JOIN kept k USING (doc_id) ORDER BY s.doc_id""",
        [classifier_version],
    )
    lake.execute(
        f"""CREATE OR REPLACE TABLE "{FILTERED_TABLE}" AS
        SELECT r.doc_id, r.source, r.origin, r.repo, r.license, r.content, r.n_chars, r.n_lines, r.n_tokens,
               a.educational_score AS annotated_educational_score, a.prompt_version AS annotation_prompt_version,
               a.doc_id IS NOT NULL AS in_annotated_sample,
               s.quality_score, s.classifier_version, ?::VARCHAR AS classifier_training_data_hash
        FROM "{SCORES_TABLE}" s JOIN raw_stack_plus r USING (doc_id) LEFT JOIN annotated_sample a USING (doc_id)
        WHERE s.kept ORDER BY r.doc_id""",
        [training_data_hash],
    )
    lake.execute(f'DROP TABLE "{RAW_SCORES_TABLE}"')


def summarise(lake) -> dict[str, Any]:
    totals = lake.query(
        f"""SELECT count(*) FILTER (WHERE s.kept) AS kept_docs, count(*) FILTER (WHERE NOT s.kept) AS dropped_docs,
               coalesce(sum(r.n_tokens) FILTER (WHERE s.kept), 0) AS kept_tokens,
               coalesce(sum(r.n_tokens) FILTER (WHERE NOT s.kept), 0) AS dropped_tokens,
               count(*) FILTER (WHERE s.quality_score IS NULL) AS unscored_docs
        FROM "{SCORES_TABLE}" s JOIN raw_stack_plus r USING (doc_id)"""
    ).row(0, named=True)
    totals = {key: int(value) for key, value in totals.items()}
    totals["score_histogram"] = score_histogram(lake)
    return totals


def score_histogram(lake, table: str = SCORES_TABLE, bins: int = 10) -> str:
    """Documents per quality_score bin (equal widths over [0, 1], 1.0 in the last) plus
    unscored rows, counted in SQL."""
    found = lake.query(
        f"""SELECT CASE WHEN quality_score IS NULL THEN -1 ELSE least(floor(quality_score * {bins}), {bins - 1}) END::INTEGER
                   AS bin, count(*) AS n
        FROM "{table}" GROUP BY bin"""
    )
    counts = dict(found.iter_rows())
    rows = [(f"[{i / bins:.1f}, {(i + 1) / bins:.1f}{']' if i == bins - 1 else ')'}", counts.get(i, 0)) for i in range(bins)]
    rows.append(("unscored", counts.get(-1, 0)))
    return markdown_table(rows, ["quality_score", "documents"])


def filter_corpus(
    warehouse: Warehouse, lake: Lake, classifier: dict[str, Any], config: FilterConfig, run_id: str | None = None,
    compute: Compute | None = None, session: Any = None, log=lambda message: None,
    instance: dg.DagsterInstance | None = None,
) -> dict[str, Any]:
    """Score what is not scored yet, decide the cut, write textbook_scores and
    filtered_textbook. Returns summary counts, the cut and how it was chosen."""
    scored, total = score_corpus(
        warehouse, lake, classifier, config.batch_size, run_id, compute or Compute(ray_address=None), session, log,
        instance,
    )
    if total == 0:
        raise dg.Failure("raw_stack_plus is empty: nothing to filter.")
    if config.keep_token_share is not None:
        kept_sql, rule = kept_by_token_share(lake, config.keep_token_share), f"best {config.keep_token_share:.0%} of tokens"
    else:
        threshold = float(config.quality_threshold)
        kept_sql = f'SELECT doc_id FROM "{RAW_SCORES_TABLE}" WHERE quality_score >= {threshold!r}'
        rule = f"quality_score >= {threshold}"
    decide(lake, kept_sql, classifier["classifier_version"], classifier["training_data_hash"])
    cut = lake.query(f'SELECT min(quality_score) AS cut FROM "{SCORES_TABLE}" WHERE kept')["cut"][0]
    return {**summarise(lake), "cut": cut, "cut_rule": rule, "scored_now": scored}


@dg.asset(
    deps=[dg.AssetKey("quality_classifier"), dg.AssetKey("raw_stack_plus"), dg.AssetKey("annotated_sample")],
    group_name="filtering",
    kinds={"duckdb", "python", "scikitlearn"},
    owners=["team:synth-assets"],
    code_version="filter-1",
    automation_condition=on_upstream_change(),
)
def filtered_textbook(
    context: dg.AssetExecutionContext, config: FilterConfig, warehouse: Warehouse, llm: LLMResource,
    compute: Compute,
) -> dg.MaterializeResult:
    """The educational part of raw_stack_plus, as judged by the quality classifier.

    Every document is scored in Arrow batches of `batch_size` streamed from one scan (memory
    stays bounded by a batch) by the newest model in quality_classifier_versions (or the
    `classifier_version` named in the launchpad). The cut is `quality_threshold`, or, with
    `keep_token_share`, the score that keeps the best-scored documents up to that share of
    the corpus's tokens (phi-1 kept ~17%); the cut and token counts are in the metadata. `textbook_scores` gets one row per
    document (quality_score, classifier_version, kept, reason: kept / below_threshold /
    embedding_failed); `filtered_textbook` gets the kept documents with their content,
    quality_score, classifier_version and annotation lineage (in_annotated_sample, the
    LLM's educational_score if it graded the file, the classifier's training-data hash).
    If the embedding classifier was chosen, the corpus is embedded through the LLM
    layer (cached) on the first `embed_max_chars` characters the classifier was trained on.
    """
    settings_from = settings_origin(config, "filtered_textbook")  # before the merge: what the launchpad set
    config = with_settings(config, "filtered_textbook")
    with warehouse.materialization(context) as lake:
        row = resolve_classifier(lake, config.classifier_version)
        model = load_model(row["artefact_path"])
        context.log.info(f"Scoring raw_stack_plus with {model.classifier_version} ({model.feature_set})")
        llm_metadata: dict[str, Any] = {}
        session_scope = llm.session(context, warehouse) if model.feature_set == EMBEDDINGS else nullcontext(None)
        with session_scope as session:
            # Ray when the compute resource names a cluster (README "Many machines"), else in-process.
            compute = lasting_compute(compute)
            totals = filter_corpus(
                warehouse, lake, row, config, context.run_id, compute, session, context.log.info, context.instance
            )
            if session is not None:
                llm_metadata = session.metadata()
    kept, dropped = totals["kept_docs"], totals["dropped_docs"]
    return table_result(
        warehouse,
        FILTERED_TABLE,
        {
            "classifier_version": model.classifier_version,
            "feature_set": model.feature_set,
            "settings_origin": dg.MetadataValue.json(settings_from),
            "quality_threshold": config.quality_threshold,
            "cut/quality_score": totals["cut"] if totals["cut"] is not None else "none (nothing kept)",
            "cut/rule": totals["cut_rule"],
            "documents/kept": kept,
            "documents/dropped": dropped,
            "documents/unscored": totals["unscored_docs"],
            "documents/scored_this_run": totals["scored_now"],
            "documents/kept_share": round(kept / (kept + dropped), 4),
            "tokens/kept": totals["kept_tokens"],
            "tokens/dropped": totals["dropped_tokens"],
            "tokens/kept_share": round(totals["kept_tokens"] / max(1, totals["kept_tokens"] + totals["dropped_tokens"]), 4),
            "compute": "ray" if compute.distributed else "in-process",
            "tokens/count_source": "approximate (regex word and symbol tokens; no offline BPE tokenizer)",
            "score_histogram": dg.MetadataValue.md(totals["score_histogram"]),
            **llm_metadata,
        },
        snapshot_id=lake.snapshot_id_published,
    )
