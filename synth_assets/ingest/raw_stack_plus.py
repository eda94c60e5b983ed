"""`raw_stack_plus`: the code corpus every later stage draws from, read from the
configured sources, normalised, and exact- and near-deduplicated."""


import ast
import os
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg
import polars as pl
import pydantic
from pydantic import Field

from resources.warehouse import Warehouse
from synth_assets.settings import SettingsError, asset_settings, settings_path
from synth_assets.ingest.dedup import NearDedupParams, NearDuplicate, content_hash, normalise_content
from synth_assets.ingest.near_dedup import (
    CANDIDATES_TABLE,
    CLUSTERINGS,
    SIGNATURES_TABLE,
    NearDedupStats,
    find_near_duplicates,
    signature_writer,
)
from synth_assets.ingest.sources import (
    DEFAULT_EXCLUDE_DIRS,
    DEFAULT_MAX_BYTES,
    SOURCE_KINDS,
    RawDocument,
    Reject,
    SourceNotFound,
    read_source,
    require_path,
    stdlib_path,
)
from synth_assets.common.tables import counts_markdown, markdown_table, table_result
from synth_assets.common.tokens import approximate_token_count

RAW_TABLE = "raw_stack_plus"
REMOVED_TABLE = "dedup_removed"
REJECTS_TABLE = "ingest_rejects"
STAGING_DOCS = "_staging_raw_stack_plus"
STAGING_REJECTS = "_staging_ingest_rejects"
STAGING_NEAR = "_staging_near_duplicates"

DOC_SCHEMA = {
    "seq": pl.Int64,
    "doc_id": pl.Utf8,
    "source": pl.Utf8,
    "origin": pl.Utf8,
    "repo": pl.Utf8,
    "license": pl.Utf8,
    "content": pl.Utf8,
    "n_chars": pl.Int64,
    "n_lines": pl.Int64,
    "n_tokens": pl.Int64,
    "parses_as_python": pl.Boolean,
}
REJECT_SCHEMA = {"source": pl.Utf8, "origin": pl.Utf8, "reason": pl.Utf8, "detail": pl.Utf8}
NEAR_SCHEMA = {"doc_id": pl.Utf8, "near_duplicate_of": pl.Utf8, "jaccard": pl.Float64}


class SourceSpec(dg.Config):
    """One input of the corpus."""

    kind: str = Field(description=f"One of {', '.join(SOURCE_KINDS)}.")
    path: str = Field(
        description="python_tree: a directory of .py files; the_stack: a Parquet/JSONL file or a directory "
        "of them (bigcode/the-stack-dedup schema); stackoverflow: Posts.xml, Parquet/JSONL of its rows, or a "
        "directory of them."
    )
    name: str | None = Field(default=None, description="Value of the `source` column (default: the kind).")
    repo: str | None = Field(default=None, description="python_tree only: the `repo` column for its files.")
    license: str | None = Field(default=None, description="python_tree only: the `license` column for its files.")


CORPUS_PATHS_ENV = "SYNTH_ASSETS_CORPUS_PATHS"


def source_for_path(path: str) -> SourceSpec:
    """The source kind a bare path implies: a folder of .py files, a StackOverflow dump
    (a file named Posts.*), or The Stack's Parquet/JSONL shards."""
    name = os.path.basename(os.path.normpath(path)) or path
    if os.path.isdir(path):
        return SourceSpec(kind="python_tree", path=path, name=name)
    if name.lower().startswith("posts"):
        return SourceSpec(kind="stackoverflow", path=path, name="stackoverflow")
    return SourceSpec(kind="the_stack", path=path, name=name)


def lasting_sources() -> tuple[list[SourceSpec], str]:
    """The corpus every run without launchpad sources reads (the corpus sensor watches the
    same), and where that choice comes from: the paths in env SYNTH_ASSETS_CORPUS_PATHS
    (os.pathsep-separated), else `sources` under [raw_stack_plus] in the project settings
    file (synth_assets/settings.py), else the running interpreter's standard library
    (~600 files, ~11 MB)."""
    configured = [p.strip() for p in os.environ.get(CORPUS_PATHS_ENV, "").split(os.pathsep) if p.strip()]
    if configured:
        return [source_for_path(path) for path in configured], f"env {CORPUS_PATHS_ENV}"
    entries = asset_settings("raw_stack_plus").get("sources")
    if entries:
        try:
            return [SourceSpec(**entry) for entry in entries], f"settings file {settings_path()}"
        except (TypeError, pydantic.ValidationError) as exc:
            raise SettingsError(f"[raw_stack_plus] sources in {settings_path()}: {exc}") from exc
    stdlib = SourceSpec(kind="python_tree", path=stdlib_path(), name="stdlib", repo="python/cpython", license="PSF-2.0")
    return [stdlib], "default (the standard library)"


def default_sources() -> list[SourceSpec]:
    """The lasting corpus (`lasting_sources()` without where it came from)."""
    return lasting_sources()[0]


class RawStackPlusConfig(dg.Config):
    sources: list[SourceSpec] = Field(
        default=[],
        description="One-off override of the sources to read, in order, for this run only. Empty: the lasting "
        "corpus, which sensor and automation runs read too: env SYNTH_ASSETS_CORPUS_PATHS, else [raw_stack_plus] "
        "sources in synth_assets.toml, else the running interpreter's standard library.",
    )
    exclude_dirs: list[str] = Field(
        default=list(DEFAULT_EXCLUDE_DIRS), description="Directory names skipped in python_tree sources."
    )
    # The Stack v1 dropped files over 1 MB.
    max_file_bytes: int = Field(default=DEFAULT_MAX_BYTES, description="Larger files/rows are rejected as `oversize`.")
    # bigcode near-deduplication defaults (5-gram shingles, 256 permutations, Jaccard 0.7).
    ngram_size: int = Field(default=NearDedupParams.ngram_size, description="Tokens per MinHash shingle.")
    num_perm: int = Field(default=NearDedupParams.num_perm, description="MinHash permutations.")
    jaccard_threshold: float = Field(
        default=NearDedupParams.threshold, description="Estimated Jaccard at or above which documents are near duplicates."
    )
    minhash_seed: int = Field(default=NearDedupParams.seed, description="Seed of the MinHash permutations.")
    lsh_candidate_threshold: float = Field(
        default=NearDedupParams.lsh_threshold,
        description="Jaccard the LSH banding is tuned for when proposing candidates (each is then checked "
        "against jaccard_threshold); lower finds more of the pairs just above the threshold.",
    )
    near_dedup_clustering: str = Field(
        default="greedy",
        description="Which documents of a cluster of verified near duplicates are dropped. greedy (bigcode's rule, "
        "the default): longest first, a document is dropped when one already kept is at or above "
        "jaccard_threshold; components (datatrove's rule): every connected component keeps only its longest "
        "document, so chains of near duplicates collapse too.",
    )
    batch_docs: int = Field(default=512, description="Documents per staging write (bounds memory).")
    batch_bytes: int = Field(default=32_000_000, description="Content bytes per staging write (bounds memory).")

    def near_params(self) -> NearDedupParams:
        return NearDedupParams(
            self.ngram_size, self.num_perm, self.jaccard_threshold, self.minhash_seed, self.lsh_candidate_threshold
        )

    def resolved_sources(self) -> list[SourceSpec]:
        return self.sources_and_origin()[0]

    def sources_and_origin(self) -> tuple[list[SourceSpec], str]:
        """The sources this run reads and where they come from (launchpad or lasting)."""
        if self.sources:
            return list(self.sources), "launchpad (this run only)"
        return lasting_sources()


# --- plain functions -----------------------------------------------------------------


def parses_as_python(text: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escape sequences etc. are still valid code
        try:
            ast.parse(text)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return False
    return True


def document_row(doc: RawDocument, seq: int) -> dict:
    """The normalised row of one document; `doc_id` is the hash of the stored content."""
    content = normalise_content(doc.content)
    return {
        "seq": seq,
        "doc_id": content_hash(content),
        "source": doc.source,
        "origin": doc.origin,
        "repo": doc.repo,
        "license": doc.license,
        "content": content,
        "n_chars": len(content),
        "n_lines": content.count("\n"),
        "n_tokens": approximate_token_count(content),
        "parses_as_python": parses_as_python(content),
    }


@dataclass
class IngestSummary:
    documents_read: int = 0
    rejected: int = 0
    exact_duplicates: int = 0
    near_duplicates: int = 0
    kept: int = 0
    rejects_by_reason: Counter = field(default_factory=Counter)
    skipped_by_reason: Counter = field(default_factory=Counter)
    by_source: dict[str, Counter] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    near_dedup: NearDedupStats = field(default_factory=NearDedupStats)


def stage_sources(
    warehouse: Warehouse,
    config: RawStackPlusConfig,
    log: Callable[[str], None] = lambda message: None,
) -> IngestSummary:
    """Read every source in batches into the staging tables: the document rows, the
    rejects, and each document's MinHash signature with its LSH band keys (stored as each
    batch is signed, never kept in memory). Raises SourceNotFound / ValueError for a bad
    configuration."""
    specs = config.resolved_sources()
    for spec in specs:  # fail on configuration before any table is touched
        if spec.kind not in SOURCE_KINDS:
            raise ValueError(f"unknown source kind {spec.kind!r} for {spec.path}; expected one of {', '.join(SOURCE_KINDS)}")
        require_path(spec.path)
    if config.near_dedup_clustering not in CLUSTERINGS:
        raise ValueError(
            f"unknown near_dedup_clustering {config.near_dedup_clustering!r}; expected one of {', '.join(CLUSTERINGS)}"
        )
    for table in (STAGING_DOCS, STAGING_REJECTS, STAGING_NEAR, SIGNATURES_TABLE, CANDIDATES_TABLE):
        warehouse.execute(f'DROP TABLE IF EXISTS "{table}"')
    warehouse.write_table(STAGING_DOCS, pl.DataFrame(schema=DOC_SCHEMA))
    warehouse.write_table(STAGING_REJECTS, pl.DataFrame(schema=REJECT_SCHEMA))

    summary = IngestSummary()
    with signature_writer(warehouse, config.near_params(), summary.near_dedup) as signatures:
        _read_sources(warehouse, config, specs, summary, signatures.add, log)
    return summary


def _read_sources(
    warehouse: Warehouse,
    config: RawStackPlusConfig,
    specs: list[SourceSpec],
    summary: IngestSummary,
    sign: Callable[[list[dict]], None],
    log: Callable[[str], None],
) -> None:
    """Stage document and reject rows in batches; each staged batch of documents is signed."""
    rows: list[dict] = []
    rejects: list[dict] = []
    batch_chars = 0

    def flush() -> None:
        nonlocal rows, rejects, batch_chars
        if rows:
            warehouse.append_table(STAGING_DOCS, pl.DataFrame(rows, schema=DOC_SCHEMA))
            sign(rows)
        if rejects:
            warehouse.append_table(STAGING_REJECTS, pl.DataFrame(rejects, schema=REJECT_SCHEMA))
        rows, rejects, batch_chars = [], [], 0

    for spec in specs:
        source = spec.name or spec.kind
        per_source = summary.by_source.setdefault(source, Counter())
        log(f"reading {spec.kind} source {source!r} from {spec.path}")
        records = read_source(
            spec.kind,
            spec.path,
            source,
            max_bytes=config.max_file_bytes,
            exclude_dirs=config.exclude_dirs,
            repo=spec.repo,
            license=spec.license,
            skipped=summary.skipped_by_reason,
        )
        for record in records:
            if isinstance(record, Reject):
                rejects.append(
                    {"source": record.source, "origin": record.origin, "reason": record.reason, "detail": record.detail}
                )
                summary.rejected += 1
                summary.rejects_by_reason[record.reason] += 1
                per_source["rejected"] += 1
            else:
                row = document_row(record, summary.documents_read)
                rows.append(row)
                batch_chars += row["n_chars"]
                summary.documents_read += 1
                per_source["documents"] += 1
            if len(rows) >= config.batch_docs or batch_chars >= config.batch_bytes or len(rejects) >= config.batch_docs:
                flush()
    flush()


def finalise_tables(warehouse: Warehouse, near: list[NearDuplicate]) -> None:
    """Build the three output tables from staging in SQL (CREATE OR REPLACE), then
    drop the staging tables. Exact copies: the smallest (source, origin) is kept."""
    warehouse.write_table(
        STAGING_NEAR,
        pl.DataFrame(
            [{"doc_id": n.doc_id, "near_duplicate_of": n.near_duplicate_of, "jaccard": n.jaccard} for n in near],
            schema=NEAR_SCHEMA,
        ),
    )
    with warehouse.connect() as conn:
        # The copy ranks without the content (~100 B a document), so only the final
        # statement streams the content from the staged Parquet.
        conn.execute(f"""
            CREATE OR REPLACE TEMP TABLE ranked AS
            SELECT seq, doc_id, source, origin,
                   row_number() OVER (PARTITION BY doc_id ORDER BY source, origin, seq) AS copy_rank
            FROM "{STAGING_DOCS}"
        """)
        conn.execute(f"""
            CREATE OR REPLACE TABLE "{RAW_TABLE}" AS
            SELECT d.doc_id, d.source, d.origin, d.repo, d.license, d.content, d.n_chars, d.n_lines, d.n_tokens,
                   d.parses_as_python
            FROM "{STAGING_DOCS}" d SEMI JOIN ranked r ON r.seq = d.seq AND r.copy_rank = 1
            WHERE d.doc_id NOT IN (SELECT doc_id FROM "{STAGING_NEAR}")
            ORDER BY d.doc_id
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
            SELECT source, origin, reason, detail FROM "{STAGING_REJECTS}" ORDER BY source, origin, reason
        """)
        for table in (STAGING_DOCS, STAGING_REJECTS, STAGING_NEAR, SIGNATURES_TABLE):
            conn.execute(f'DROP TABLE IF EXISTS "{table}"')


def ingest(
    warehouse: Warehouse,
    config: RawStackPlusConfig,
    log: Callable[[str], None] = lambda message: None,
) -> IngestSummary:
    """Read, stage, deduplicate and write `raw_stack_plus`, `dedup_removed` and
    `ingest_rejects`. Returns the counts."""
    started = time.perf_counter()
    summary = stage_sources(warehouse, config, log)
    summary.seconds["read_and_sign"] = time.perf_counter() - started
    started = time.perf_counter()
    near = find_near_duplicates(warehouse, config.near_params(), summary.near_dedup, config.near_dedup_clustering, log)
    summary.seconds["near_dedup"] = time.perf_counter() - started
    started = time.perf_counter()
    finalise_tables(warehouse, near)
    summary.seconds["write"] = time.perf_counter() - started
    counts = warehouse.query(
        f'SELECT reason, count(*) AS n FROM "{REMOVED_TABLE}" GROUP BY reason'
    ).rows()
    removed = dict(counts)
    summary.exact_duplicates = int(removed.get("exact_duplicate", 0))
    summary.near_duplicates = int(removed.get("near_duplicate", 0))
    kept = warehouse.query(f'SELECT source, count(*) AS n FROM "{RAW_TABLE}" GROUP BY source').rows()
    for source, n in kept:
        summary.by_source.setdefault(source, Counter())["kept"] = int(n)
    summary.kept = sum(int(n) for _, n in kept)
    return summary


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
    code_version="1",
)
def raw_stack_plus(context: dg.AssetExecutionContext, config: RawStackPlusConfig, warehouse: Warehouse):
    """The deduplicated code corpus (one row per distinct document).

    Reads the corpus sources: directory trees of `.py` files, The Stack
    Parquet/JSONL shards, and StackOverflow Python questions joined with their
    accepted answers. Which sources is a lasting setting, so sensor and automation
    runs read the same ones: `sources` under [raw_stack_plus] in synth_assets.toml
    (or env SYNTH_ASSETS_CORPUS_PATHS); with neither, this interpreter's Python
    standard library (~600 files, without tests, site-packages, idlelib and
    lib2to3). `sources` in the launchpad overrides them for one run only; the
    `sources_from` metadata says which applied.

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
    with warehouse.materialization(context) as lake:
        try:
            summary = ingest(lake, config, context.log.info)
        except SourceNotFound as exc:
            _, origin = config.sources_and_origin()
            raise dg.Failure(description=f"raw_stack_plus: {exc}. Fix the sources ({origin}).") from exc
        except SettingsError as exc:
            raise dg.Failure(description=f"raw_stack_plus: {exc}") from exc
        except ValueError as exc:
            if "unknown source kind" not in str(exc) and "unknown near_dedup_clustering" not in str(exc):
                raise
            raise dg.Failure(description=f"raw_stack_plus: {exc}") from exc
        metadata = summary_metadata(summary, config)
        metadata["dedup_removed_rows"] = summary.exact_duplicates + summary.near_duplicates
        metadata["ingest_rejects_rows"] = summary.rejected
    return table_result(warehouse, RAW_TABLE, metadata, snapshot_id=lake.snapshot_id_published)
