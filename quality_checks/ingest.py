"""Checks of the ingest group: `raw_stack_plus` and `dedup_removed` (written by the
`raw_stack_plus` asset, so its check is attached there).

Table names, source kinds and the doc_id length are read from the ingest modules when
the checks are built, never copied.
"""

from __future__ import annotations

from quality_checks.gx_runner import import_gx
from quality_checks.rules import (
    CheckSpec,
    QualityBounds,
    SqlMetricRule,
    SqlRowRule,
    asset_name,
    integrity_check,
    new_suite,
    quality_floors_check,
    sql_list,
    unique_non_null_rules,
)
from synth_assets.ingest import corpus, corpus_shards, dedup, raw_stack_plus, sources

# raw_stack_plus.default_sources() names the standard-library source "stdlib"; the
# ingest modules keep that name inline, so it is listed here next to the reader kinds.
DEFAULT_SOURCE_NAME = "stdlib"
SHA256_HEX_CHARS = 64


def known_sources() -> tuple[str, ...]:
    """`source` values a corpus may carry: the default stdlib source and the reader kinds
    (a configured `SourceSpec.name` defaults to its kind; phi-1 section 2.1 reads The
    Stack and StackOverflow). A source outside the set is a warning (a new source someone
    forgot to list), not a block."""
    return (DEFAULT_SOURCE_NAME, *sources.SOURCE_KINDS)


def doc_id_regex() -> str:
    """doc_id: sha256 hex of the normalised content, at least as long as `content_hash`
    makes it (ARCHITECTURE.md: 16+ chars)."""
    return rf"^[0-9a-f]{{{dedup.DOC_ID_HEX_CHARS},{SHA256_HEX_CHARS}}}$"


def raw_stack_plus_checks(b: QualityBounds) -> list[CheckSpec]:
    table = raw_stack_plus.RAW_TABLE
    asset = asset_name(raw_stack_plus.raw_stack_plus)
    source_names = known_sources()
    id_pattern = doc_id_regex()

    def known_sources_suite():
        e = import_gx().expectations
        return new_suite(
            f"{table}_sources",
            [e.ExpectColumnValuesToBeInSet(column="source", value_set=list(source_names))],
        )

    def suite():
        e = import_gx().expectations
        return new_suite(
            table,
            [
                e.ExpectColumnValuesToNotBeNull(column="doc_id"),
                e.ExpectColumnValuesToMatchRegex(column="doc_id", regex=id_pattern),
                e.ExpectColumnValuesToNotBeNull(column="source"),
                e.ExpectColumnValuesToBeBetween(column="n_chars", min_value=1),
                e.ExpectColumnValuesToBeBetween(column="n_lines", min_value=1),
                e.ExpectColumnValuesToBeBetween(column="n_tokens", min_value=0),
                e.ExpectColumnValuesToNotBeNull(column="parses_as_python"),
            ],
        )

    return [
        integrity_check(
            asset=asset,
            table=table,
            description="doc_id unique, non-null sha256 hex; content non-empty with n_chars = its length > 0; "
            "source named.",
            id_column="doc_id",
            rules=(
                *unique_non_null_rules("doc_id"),
                SqlRowRule(
                    "content_non_empty",
                    "SELECT doc_id, n_chars FROM {table} WHERE content IS NULL OR length(trim(content)) = 0",
                ),
                SqlRowRule(
                    "n_chars_positive_and_matches_content",
                    "SELECT doc_id, n_chars, length(content) AS content_chars FROM {table} "
                    "WHERE n_chars IS NULL OR n_chars <= 0 OR n_chars <> length(content)",
                ),
                SqlMetricRule("row_count", "SELECT count(*) FROM {table}", min_value=1),
            ),
            gx_suite=suite,
        ),
        quality_floors_check(
            asset=asset,
            table=table,
            description=f"source in the known set ({', '.join(source_names)}).",
            id_column="doc_id",
            rules=(
                SqlRowRule(
                    "source_known",
                    "SELECT source, count(*) AS documents FROM {table} "
                    f"WHERE source IS NULL OR source NOT IN ({sql_list(source_names)}) GROUP BY source",
                ),
            ),
            gx_suite=known_sources_suite,
        ),
    ]


def dedup_removed_checks(b: QualityBounds) -> list[CheckSpec]:
    table = raw_stack_plus.REMOVED_TABLE
    kept_table = raw_stack_plus.RAW_TABLE
    # raw_stack_plus.finalise_tables writes these reasons inline in its SQL.
    exact, near = "exact_duplicate", "near_duplicate"

    def suite():
        e = import_gx().expectations
        return new_suite(
            table,
            [
                e.ExpectColumnValuesToNotBeNull(column="doc_id"),
                e.ExpectColumnValuesToNotBeNull(column="near_duplicate_of"),
                e.ExpectColumnValuesToBeInSet(column="reason", value_set=[exact, near]),
                e.ExpectColumnValuesToBeBetween(column="jaccard", min_value=0.0, max_value=1.0),
            ],
        )

    return [
        integrity_check(
            # dedup_removed is written by the raw_stack_plus asset (ingest), so its check
            # guards raw_stack_plus.
            asset=asset_name(raw_stack_plus.raw_stack_plus),
            table=table,
            description="One row per dropped copy, (doc_id, source, origin) unique; every removed "
            f"document points at a kept doc_id in {kept_table}; an exact duplicate shares the kept "
            "doc_id (or, when that copy was removed as a near duplicate, points at its survivor), "
            "a near duplicate is itself not kept.",
            id_column="doc_id",
            rules=(
                # finalise_tables: exact copies share the kept doc_id, so doc_id alone
                # repeats; a dropped copy is one (doc_id, source, origin).
                SqlRowRule(
                    "doc_id_source_origin_unique",
                    "SELECT doc_id, source, origin, count(*) AS copies FROM {table} "
                    "GROUP BY doc_id, source, origin HAVING count(*) > 1 ORDER BY copies DESC, doc_id",
                ),
                SqlRowRule("doc_id_not_null", "SELECT * FROM {table} WHERE doc_id IS NULL"),
                SqlRowRule(
                    "near_duplicate_of_is_kept",
                    "SELECT d.doc_id, d.near_duplicate_of, d.reason FROM {table} d "
                    f"ANTI JOIN {kept_table} r ON r.doc_id = d.near_duplicate_of",
                ),
                SqlRowRule(
                    "near_duplicate_not_kept",
                    f"SELECT d.doc_id, d.reason FROM {{table}} d SEMI JOIN {kept_table} r ON r.doc_id = d.doc_id "
                    f"WHERE d.reason = '{near}'",
                ),
                # An exact copy points at its own kept copy, or, when that copy was itself
                # removed as a near duplicate, at the survivor of that near duplicate (as
                # finalise_tables writes it): on real corpora (site-packages) both happen.
                SqlRowRule(
                    "exact_duplicate_shares_doc_id",
                    "SELECT d.doc_id, d.near_duplicate_of FROM {table} d "
                    f"WHERE d.reason = '{exact}' AND d.doc_id IS DISTINCT FROM d.near_duplicate_of "
                    "AND NOT EXISTS (SELECT 1 FROM {table} n "
                    f"WHERE n.reason = '{near}' AND n.doc_id = d.doc_id AND n.near_duplicate_of = d.near_duplicate_of)",
                ),
            ),
            gx_suite=suite,
        )
    ]


def corpus_shards_checks(b: QualityBounds) -> list[CheckSpec]:
    """The stored shards agree with their manifest: what raw_stack_plus deduplicates is
    exactly what each shard's run wrote, nothing missing, nothing orphaned."""
    docs, rejects, signatures = corpus.CORPUS_DOCS, corpus.CORPUS_REJECTS, corpus.CORPUS_SIGNATURES
    return [
        integrity_check(
            asset=asset_name(corpus_shards.corpus_shards),
            table=corpus.CORPUS_MANIFEST,
            description=f"One manifest row per shard; each shard's rows in {docs} and {rejects} number what its "
            f"manifest says; every stored row belongs to a shard in the manifest; one signature per "
            f"(shard, doc_id) in {signatures}.",
            id_column="shard",
            rules=(
                *unique_non_null_rules("shard"),
                SqlRowRule(
                    "documents_match_manifest",
                    f"SELECT m.shard, m.documents, count(d.seq) AS stored FROM {{table}} m LEFT JOIN {docs} d "
                    "USING (shard) GROUP BY m.shard, m.documents HAVING m.documents <> count(d.seq)",
                ),
                SqlRowRule(
                    "rejects_match_manifest",
                    f"SELECT m.shard, m.rejected, count(r.shard) AS stored FROM {{table}} m LEFT JOIN {rejects} r "
                    "USING (shard) GROUP BY m.shard, m.rejected HAVING m.rejected <> count(r.shard)",
                ),
                SqlRowRule(
                    "rows_have_a_manifest",
                    f"SELECT shard, count(*) AS rows FROM (SELECT shard FROM {docs} UNION ALL SELECT shard FROM "
                    f"{signatures}) ANTI JOIN {{table}} USING (shard) GROUP BY shard",
                ),
                SqlRowRule(
                    "one_signature_per_document",
                    f"SELECT shard, doc_id, count(*) AS copies FROM {signatures} GROUP BY shard, doc_id "
                    "HAVING count(*) > 1",
                ),
            ),
        )
    ]


def check_specs(b: QualityBounds) -> list[CheckSpec]:
    """The ingest group's checks, in DAG order."""
    return [*corpus_shards_checks(b), *raw_stack_plus_checks(b), *dedup_removed_checks(b)]
