"""Checks of the filtering group: `annotated_sample`, `quality_classifier` (its
`quality_classifier_versions` table) and `filtered_textbook`.

Table names and the grading scale are read from the filtering modules when the checks
are built, never copied.
"""

from __future__ import annotations

import json

import polars as pl

from quality_checks.gx_runner import RuleOutcome, import_gx
from quality_checks.rules import (
    CheckSpec,
    FrameRule,
    QualityBounds,
    SqlRowRule,
    asset_name,
    integrity_check,
    new_suite,
    quality_floors_check,
    unique_non_null_rules,
)
from synth_assets.filtering import annotated_sample, corpus_scores, filtered_textbook, quality_classifier

# Without a `beats_baseline` column these metrics_json keys are tried in order
# (quality_classifier.train records the verdict under this key as well).
BASELINE_METRIC_KEYS = ("beats_baseline",)


def annotated_sample_checks(b: QualityBounds) -> list[CheckSpec]:
    # The asset writes the table named after itself.
    table = asset = asset_name(annotated_sample.annotated_sample)
    # phi-1 section 2.1 asks GPT-4 for an educational value; the project's prompt grades
    # on annotated_sample.SCORE_RANGE.
    lo, hi = min(annotated_sample.SCORE_RANGE), max(annotated_sample.SCORE_RANGE)

    def suite():
        e = import_gx().expectations
        return new_suite(
            table,
            [
                e.ExpectColumnValuesToNotBeNull(column="doc_id"),
                # GX skips nulls: a failed grading keeps a NULL score by design.
                e.ExpectColumnValuesToBeBetween(column="educational_score", min_value=lo, max_value=hi),
                e.ExpectColumnValuesToNotBeNull(column="status"),
            ],
        )

    return [
        integrity_check(
            asset=asset,
            table=table,
            description=f"doc_id unique and non-null; educational_score within {lo}-{hi} where graded; "
            "an ok row has a score.",
            id_column="doc_id",
            rules=(
                *unique_non_null_rules("doc_id"),
                SqlRowRule(
                    "educational_score_in_range",
                    f"SELECT doc_id, educational_score FROM {{table}} WHERE educational_score IS NOT NULL "
                    f"AND (educational_score < {lo} OR educational_score > {hi})",
                ),
                SqlRowRule(
                    "ok_rows_have_a_score",
                    # `ok`: the LLM layer's ChatResult status of an answered call.
                    "SELECT doc_id, status, error FROM {table} WHERE status = 'ok' AND educational_score IS NULL",
                ),
            ),
            gx_suite=suite,
        )
    ]


def beats_baseline(rule_name: str, frame: pl.DataFrame) -> RuleOutcome:
    """The newest version must beat its baseline: the `beats_baseline` column if the
    table has one, else the first of `BASELINE_METRIC_KEYS` found in metrics_json."""
    bad, observed_rows = [], 0
    for row in frame.iter_rows(named=True):
        observed_rows += 1
        verdict = row.get("beats_baseline")
        if verdict is None:
            try:
                metrics = json.loads(row.get("metrics_json") or "{}")
            except (TypeError, ValueError) as exc:
                metrics = {"_error": f"metrics_json is not JSON: {exc}"}
            verdict = next((metrics[k] for k in BASELINE_METRIC_KEYS if k in metrics), None)
        if verdict is not True:
            bad.append({"classifier_version": row.get("classifier_version"), "beats_baseline": verdict})
    observed = (
        "no classifier version" if not observed_rows
        else f"newest {frame['classifier_version'][0]}: beats_baseline={not bad}"
    )
    return RuleOutcome(rule_name, "python", not bad and observed_rows > 0, observed, "beats_baseline", len(bad), bad[:5])


def quality_classifier_checks(b: QualityBounds) -> list[CheckSpec]:
    table = quality_classifier.VERSIONS_TABLE
    asset = asset_name(quality_classifier.quality_classifier)

    def suite():
        e = import_gx().expectations
        return new_suite(
            table,
            [
                e.ExpectColumnValuesToNotBeNull(column="classifier_version"),
                e.ExpectColumnValuesToNotBeNull(column="metrics_json"),
                e.ExpectTableRowCountToBeBetween(min_value=1),
            ],
        )

    return [
        integrity_check(
            asset=asset,
            table=table,
            named_after=asset,
            description="classifier_version unique and non-null; metrics recorded as JSON.",
            id_column="classifier_version",
            rules=(
                *unique_non_null_rules("classifier_version"),
                SqlRowRule(
                    "metrics_json_is_json",
                    "SELECT classifier_version FROM {table} WHERE metrics_json IS NULL OR NOT json_valid(metrics_json)",
                ),
            ),
            gx_suite=suite,
        ),
        # A classifier that does not beat the majority baseline makes filtering no better
        # than chance, but every row it scores is still valid: a WARN the UI shows with the
        # CV metrics, not a block. On the bundled 135M grader the labels are close to noise
        # (measured: CV ROC-AUC 0.48-0.53 on 35 graded stdlib files), so blocking here would
        # leave the default pipeline's filtered_textbook empty. Older rows are history and
        # may have lost.
        quality_floors_check(
            asset=asset,
            table=table,
            named_after=asset,
            description="The newest classifier (by created_at, the one filtered_textbook uses by "
            "default) beats the majority-class baseline in cross-validation.",
            id_column="classifier_version",
            rules=(
                FrameRule(
                    "newest_classifier_beats_baseline",
                    "SELECT * FROM {table} ORDER BY created_at DESC, classifier_version LIMIT 1",
                    beats_baseline,
                ),
            ),
        ),
    ]


def filtered_textbook_checks(b: QualityBounds) -> list[CheckSpec]:
    table = filtered_textbook.FILTERED_TABLE
    versions_table = quality_classifier.VERSIONS_TABLE

    def suite():
        e = import_gx().expectations
        return new_suite(
            table,
            [
                e.ExpectColumnValuesToNotBeNull(column="doc_id"),
                e.ExpectColumnValuesToNotBeNull(column="classifier_version"),
                e.ExpectColumnValuesToNotBeNull(column="quality_score"),
                e.ExpectColumnValuesToBeBetween(column="quality_score", min_value=0.0, max_value=1.0),
            ],
        )

    return [
        integrity_check(
            asset=asset_name(filtered_textbook.filtered_textbook),
            table=table,
            description="doc_id unique; every kept row carries a quality_score in [0, 1] and a "
            f"classifier_version recorded in {versions_table}.",
            id_column="doc_id",
            rules=(
                *unique_non_null_rules("doc_id"),
                SqlRowRule(
                    "quality_score_in_unit_interval",
                    "SELECT doc_id, quality_score FROM {table} WHERE quality_score IS NULL "
                    "OR quality_score < 0 OR quality_score > 1 OR isnan(quality_score)",
                ),
                SqlRowRule(
                    "classifier_version_present",
                    "SELECT doc_id, classifier_version FROM {table} WHERE classifier_version IS NULL",
                ),
                SqlRowRule(
                    "classifier_version_is_recorded",
                    "SELECT classifier_version, count(*) AS documents FROM {table} f "
                    f"ANTI JOIN {versions_table} v USING (classifier_version) "
                    "WHERE f.classifier_version IS NOT NULL GROUP BY classifier_version",
                ),
            ),
            gx_suite=suite,
            additional_deps=(asset_name(quality_classifier.quality_classifier),),
        )
    ]


def corpus_scores_checks(b: QualityBounds) -> list[CheckSpec]:
    versions_table = quality_classifier.VERSIONS_TABLE
    return [
        integrity_check(
            asset=asset_name(corpus_scores.corpus_scores),
            table=corpus_scores.CORPUS_SCORES,
            description="One score per (shard, doc_id, classifier_version), each within [0, 1] or NULL (the "
            f"document could not be embedded), from a classifier in {versions_table}.",
            id_column="doc_id",
            rules=(
                SqlRowRule(
                    "shard_doc_version_unique",
                    "SELECT shard, doc_id, classifier_version, count(*) AS copies FROM {table} GROUP BY ALL "
                    "HAVING count(*) > 1",
                ),
                SqlRowRule(
                    "ids_not_null",
                    "SELECT * FROM {table} WHERE shard IS NULL OR doc_id IS NULL OR classifier_version IS NULL",
                ),
                SqlRowRule("score_in_unit_range", "SELECT * FROM {table} WHERE quality_score NOT BETWEEN 0 AND 1"),
                SqlRowRule(
                    "classifier_version_known",
                    f"SELECT classifier_version, count(*) AS documents FROM {{table}} ANTI JOIN {versions_table} "
                    "USING (classifier_version) GROUP BY classifier_version",
                ),
            ),
        )
    ]


def check_specs(b: QualityBounds) -> list[CheckSpec]:
    """The filtering group's checks, in DAG order."""
    return [
        *annotated_sample_checks(b),
        *quality_classifier_checks(b),
        *corpus_scores_checks(b),
        *filtered_textbook_checks(b),
    ]
