"""The corpus and its shards: which sources are read, and how one shard is ingested.

A shard (synth_assets/ingest/shards.py) is read, normalised, hashed and MinHash-signed on
its own, into three tables keyed by `shard`, plus one manifest row:

    corpus_documents     one row per document read (exact copies included)
    corpus_rejects       one row per input that could not be used, with its reason
    corpus_signatures    MinHash signature + LSH band keys per distinct document
    corpus_shard_manifest  the shard's fingerprint, signing parameters and counts

`materialize_shards` publishes each shard as a partition of those tables (its rows replace
only that shard's rows), one shard per task: in-process, or on a Ray cluster where each
worker reads its files and writes the lake itself. `raw_stack_plus` then deduplicates
across all shards in SQL (synth_assets/ingest/raw_stack_plus.py).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import dagster as dg
import polars as pl
import pydantic
from pydantic import Field

from resources.compute import Compute
from resources.warehouse import Warehouse
from resources.warehouse.lake import Lake, quote
from synth_assets.common.tokens import approximate_token_count
from synth_assets.ingest.dedup import NearDedupParams, content_hash, normalise_content
from synth_assets.ingest.near_dedup import NearDedupStats, lsh_shape, signature_writer
from synth_assets.ingest.shards import DEFAULT_FILES_PER_SHARD, Shard, read_shard
from synth_assets.ingest.sources import (
    DEFAULT_EXCLUDE_DIRS,
    DEFAULT_MAX_BYTES,
    SOURCE_KINDS,
    RawDocument,
    Reject,
    stdlib_path,
)
from synth_assets.settings import SettingsError, asset_settings, settings_path, with_settings

CORPUS_DOCS = "corpus_documents"
CORPUS_REJECTS = "corpus_rejects"
CORPUS_SIGNATURES = "corpus_signatures"
CORPUS_MANIFEST = "corpus_shard_manifest"
CORPUS_TABLES = (CORPUS_DOCS, CORPUS_REJECTS, CORPUS_SIGNATURES, CORPUS_MANIFEST)

DOC_SCHEMA = {
    "shard": pl.Utf8,
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
REJECT_SCHEMA = {"shard": pl.Utf8, "source": pl.Utf8, "origin": pl.Utf8, "reason": pl.Utf8, "detail": pl.Utf8}
MANIFEST_SCHEMA = {
    "shard": pl.Utf8,
    "source": pl.Utf8,
    "fingerprint": pl.Utf8,
    "files": pl.Int64,
    "params": pl.Utf8,
    "documents": pl.Int64,
    "rejected": pl.Int64,
    "skipped": pl.Utf8,
    "run_id": pl.Utf8,
    "ingested_at": pl.Datetime("us", "UTC"),
}


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
    files_per_shard: int = Field(
        default=DEFAULT_FILES_PER_SHARD,
        description="python_tree sources are cut into shards of about this many files when first listed (the "
        "count is then kept, so membership stays stable); The Stack shards are its files, a StackOverflow dump "
        "is one shard.",
    )
    # A shard's writes go to its local staging file (resources/warehouse/staging.py), a
    # one-off corpus's to the run's staging schema (a catalog commit each): few large ones.
    batch_docs: int = Field(default=4096, description="Documents per staging write (bounds memory).")
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




def parses_as_python(text: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escape sequences etc. are still valid code
        try:
            ast.parse(text)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return False
    return True


def document_row(doc: RawDocument, seq: int, shard: str = "") -> dict:
    """The normalised row of one document; `doc_id` is the hash of the stored content."""
    content = normalise_content(doc.content)
    return {
        "shard": shard,
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




# --- the reading and signing parameters a shard's rows depend on -----------------------

# Fields of RawStackPlusConfig that change a shard's stored rows (the rest only change the
# global dedup): a run with other values than the lasting ones cannot reuse stored shards.
SHARD_FIELDS = ("exclude_dirs", "max_file_bytes", "ngram_size", "num_perm", "minhash_seed", "files_per_shard")


def lasting_config(config: RawStackPlusConfig | None = None) -> RawStackPlusConfig:
    """`config` (default: all defaults) with the fields the launchpad did not set taken
    from [raw_stack_plus] in the settings file (`sources` excepted: see lasting_sources)."""
    return with_settings(config or RawStackPlusConfig(), "raw_stack_plus", exclude=("sources",))


def shard_params(config: RawStackPlusConfig) -> str:
    """A digest of everything a shard's stored rows depend on besides its files."""
    bands, rows = lsh_shape(config.near_params())
    described = {
        "exclude_dirs": sorted(config.exclude_dirs),
        "max_file_bytes": config.max_file_bytes,
        "ngram_size": config.ngram_size,
        "num_perm": config.num_perm,
        "seed": config.minhash_seed,
        "lsh": [bands, rows],
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


# --- one shard --------------------------------------------------------------------------


@dataclass
class ShardSummary:
    shard: str
    source: str
    documents: int = 0
    rejected: int = 0
    rejects_by_reason: Counter = field(default_factory=Counter)
    skipped_by_reason: Counter = field(default_factory=Counter)
    near_dedup: NearDedupStats = field(default_factory=NearDedupStats)


def create_corpus_tables(lake: Lake) -> None:
    """Empty corpus tables in `lake` (a staging schema), replacing any there, in one
    commit (a catalog commit costs ~0.1 s, and shards publish many at once)."""
    empty = {
        CORPUS_DOCS: pl.DataFrame(schema=DOC_SCHEMA).to_arrow(),
        CORPUS_REJECTS: pl.DataFrame(schema=REJECT_SCHEMA).to_arrow(),
        CORPUS_MANIFEST: pl.DataFrame(schema=MANIFEST_SCHEMA).to_arrow(),
    }

    def create(conn) -> None:
        for table, frame in empty.items():
            conn.register("_empty", frame)
            conn.execute(f"CREATE OR REPLACE TABLE {lake.qualified(table)} AS SELECT * FROM _empty")
            conn.unregister("_empty")
        # qualified: an unqualified DROP in a staging schema would find the live table
        conn.execute(f"DROP TABLE IF EXISTS {lake.qualified(CORPUS_SIGNATURES)}")

    lake.transaction(create)


def ingest_shard(lake: Lake, shard: Shard, config: RawStackPlusConfig, run_id: str | None = None) -> ShardSummary:
    """Read one shard into the corpus tables of `lake` (created by create_corpus_tables):
    document rows in batches (`batch_docs` / `batch_bytes`), each batch signed as it is
    written, rejects with their reasons, and the shard's manifest row last."""
    summary = ShardSummary(shard.key, shard.source)
    params = config.near_params()
    with signature_writer(lake, params, summary.near_dedup, CORPUS_SIGNATURES, shard.key, fresh=False) as signatures:
        _stage_records(lake, shard, config, summary, signatures.add)
    manifest = {
        "shard": shard.key,
        "source": shard.source,
        "fingerprint": shard.fingerprint,
        "files": shard.files,
        "params": shard_params(config),
        "documents": summary.documents,
        "rejected": summary.rejected,
        "skipped": json.dumps(dict(summary.skipped_by_reason), sort_keys=True),
        "run_id": run_id,
        "ingested_at": datetime.now(timezone.utc),
    }
    lake.append_table(CORPUS_MANIFEST, pl.DataFrame([manifest], schema=MANIFEST_SCHEMA))
    return summary


def _stage_records(
    lake: Lake, shard: Shard, config: RawStackPlusConfig, summary: ShardSummary, sign: Callable[[list[dict]], None]
) -> None:
    rows: list[dict] = []
    rejects: list[dict] = []
    batch_chars = 0

    def flush() -> None:
        nonlocal rows, rejects, batch_chars
        if rows:
            lake.append_table(CORPUS_DOCS, pl.DataFrame(rows, schema=DOC_SCHEMA))
            sign(rows)
        if rejects:
            lake.append_table(CORPUS_REJECTS, pl.DataFrame(rejects, schema=REJECT_SCHEMA))
        rows, rejects, batch_chars = [], [], 0

    records = read_shard(shard, config.max_file_bytes, config.exclude_dirs, summary.skipped_by_reason)
    for record in records:
        if isinstance(record, Reject):
            rejects.append(
                {"shard": shard.key, "source": record.source, "origin": record.origin,
                 "reason": record.reason, "detail": record.detail}
            )
            summary.rejected += 1
            summary.rejects_by_reason[record.reason] += 1
        else:
            row = document_row(record, summary.documents, shard.key)
            rows.append(row)
            batch_chars += row["n_chars"]
            summary.documents += 1
        if len(rows) >= config.batch_docs or batch_chars >= config.batch_bytes or len(rejects) >= config.batch_docs:
            flush()
    flush()


# --- many shards, each published as its own partition of the corpus tables ------------


@dataclass(frozen=True)
class ShardTask:
    """What a worker needs to ingest and publish one shard (picklable)."""

    warehouse: dict
    shard: Shard
    config: dict
    run_id: str | None


def publish_shard(task: ShardTask) -> ShardSummary:
    """A worker's task: ingest one shard into its own staging schema and publish it,
    replacing that shard's live rows (and only those) in one lake transaction."""
    warehouse = Warehouse(**task.warehouse)
    config = RawStackPlusConfig(**task.config)
    name = "corpus_shard_" + hashlib.blake2b(task.shard.key.encode(), digest_size=6).hexdigest()
    with warehouse.materialization(name=name, rows_of=("shard", [task.shard.key]), run_id=task.run_id) as lake:
        create_corpus_tables(lake)
        return ingest_shard(lake, task.shard, config, task.run_id)


def materialize_shards(
    warehouse: Warehouse,
    shards: Sequence[Shard],
    config: RawStackPlusConfig,
    run_id: str | None,
    compute: Compute | None = None,
) -> list[ShardSummary]:
    """Ingest and publish `shards`, one task each: in-process, or as Ray tasks when
    `compute` points at a cluster (each worker reads its files and writes the lake)."""
    settings = {name: getattr(warehouse, name) for name in ("path", "catalog", "data_path", "retry_timeout_s")}
    tasks = [ShardTask(settings, shard, config.model_dump(), run_id) for shard in shards]
    with (compute or Compute(ray_address=None)).engine() as engine:
        return list(engine.map(publish_shard, tasks))


def stored_shards(lake: Lake) -> dict[str, tuple[str, str]]:
    """shard -> (fingerprint, params) of the shards stored in the live corpus tables."""
    if not lake.table_exists(CORPUS_MANIFEST):
        return {}
    rows = lake.query(f"SELECT shard, fingerprint, params FROM {quote(CORPUS_MANIFEST)}").rows()
    return {shard: (fingerprint, params) for shard, fingerprint, params in rows}


def stale_shards(lake: Lake, shards: Sequence[Shard], config: RawStackPlusConfig) -> list[Shard]:
    """The shards whose files or signing parameters differ from what is stored (or that
    were never stored)."""
    stored = stored_shards(lake)
    params = shard_params(config)
    return [shard for shard in shards if stored.get(shard.key) != (shard.fingerprint, params)]
