"""Near-duplicate detection out of core: MinHash signatures in the lake, LSH in SQL.

datatrove's four MinHash steps (signatures, buckets per band, clusters, filter), on the
DuckLake instead of files:

1. `SignatureWriter`: each batch of ingested documents is signed (`MinHasher`, bigcode
   byte tokens) and appended to `SIGNATURES_TABLE` with one 64-bit key per LSH band
   (`band_keys`, a BIGINT[] with one key per band). Nothing is kept in Python afterwards.
   The corpus shards store theirs in `corpus_signatures` with a `shard` column; every
   later step takes the signatures as a relation (a table or a subquery over the shards).
2. `candidate_pairs`: per band, one SQL statement groups the band's keys into buckets
   and inserts every pair of documents sharing a bucket into `CANDIDATES_TABLE`.
3. `verified_edges`: the distinct candidate pairs are joined to both stored signatures
   and streamed in Arrow record batches; each batch's estimated Jaccards are computed
   with numpy and the pairs at or above the threshold are kept (the edges: a few per
   duplicate, far fewer than documents).
4. `cluster_edges`: union-find over the edges gives the connected components; within
   them, the documents to drop:
   * "greedy" (default, bigcode's rule and the in-memory `greedy_near_duplicates`'s):
     documents are visited longest first (ties: smallest doc_id) and one is dropped as a
     near duplicate of its most similar already-kept neighbour (ties: smallest doc_id).
     Same LSH candidates, same estimated Jaccard, same order: the same decisions as the
     in-memory clustering, without holding a signature per document.
   * "components" (datatrove's rule): each component keeps its longest document and
     drops all others, even those only linked through a chain of near duplicates;
     their Jaccard to the survivor is estimated from the stored signatures.

Memory is bounded by a batch of documents, a band's bucket keys inside DuckDB (which
spills to disk), a batch of candidate pairs, and the edges: never by the corpus.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from resources.warehouse.lake import Lake, quote
from synth_assets.common.minhash import (
    EMPTY,
    MinHasher,
    MinHashParams,
    band_keys,
    lsh_bands,
    paired_estimated_jaccards,
)
from synth_assets.ingest.dedup import NearDuplicate

SIGNATURES_TABLE = "_staging_minhash_signatures"
CANDIDATES_TABLE = "_staging_near_candidates"
CLUSTERINGS = ("greedy", "components")
# Signature rows gathered per lake commit: 16k x (1 KiB signature + 8 B per band) ~ 20 MiB.
SIGNATURE_FLUSH_ROWS = 16_384
# Candidate pairs per Arrow record batch in the Jaccard check: 2 x 64k x 1 KiB ~ 128 MiB.
PAIR_BATCH_ROWS = 65_536


def lsh_shape(params: MinHashParams) -> tuple[int, int]:
    """(bands, rows) of the LSH banding: tuned for `lsh_threshold`, never above `threshold`."""
    return lsh_bands(min(params.lsh_threshold, params.threshold), params.num_perm)


def band_key_sql(band: int) -> str:
    """The SQL of band `band`'s key (0-based) in a signatures relation."""
    return f"bands[{band + 1}]"


@dataclass
class NearDedupStats:
    signed_documents: int = 0
    documents_without_shingles: int = 0
    bands: int = 0
    rows_per_band: int = 0
    candidate_rows: int = 0
    candidate_pairs: int = 0
    verified_pairs: int = 0
    components: int = 0
    documents_in_components: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def as_metadata(self) -> dict:
        return {
            "signed_documents": self.signed_documents,
            "documents_without_shingles": self.documents_without_shingles,
            "lsh_bands_x_rows": f"{self.bands} x {self.rows_per_band}",
            "candidate_rows": self.candidate_rows,
            "candidate_pairs": self.candidate_pairs,
            "verified_pairs": self.verified_pairs,
            "components": self.components,
            "documents_in_components": self.documents_in_components,
        }


# --- 1. signatures, stored as they are produced -------------------------------------


class SignatureWriter:
    """Signs batches of document rows (`doc_id`, `n_chars`, `content`) and appends them to
    a signatures table: doc_id, n_chars, signature (UINTEGER[num_perm]) and `bands`, one
    BIGINT key per LSH band (and `shard` when the writer has one). Documents without shingles are left out (they are never near
    duplicates). Exact copies within a batch are signed once; copies in different
    batches are signed again and collapsed by the SQL steps."""

    def __init__(
        self, append: Callable[[pa.Table], None], params: MinHashParams, stats: NearDedupStats, shard: str | None = None
    ):
        self.append = append
        self.shard = shard
        self.params = params
        self.stats = stats
        self.hasher = MinHasher(params)
        self.bands, self.rows = lsh_shape(params)
        stats.bands, stats.rows_per_band = self.bands, self.rows

    def add(self, rows: Sequence[dict]) -> None:
        first_copies = list({row["doc_id"]: row for row in reversed(rows)}.values())
        if not first_copies:
            return
        signatures = self.hasher.signatures(row["content"] for row in first_copies)
        signed = np.flatnonzero((signatures != EMPTY).any(axis=1))
        self.stats.documents_without_shingles += len(first_copies) - len(signed)
        if not len(signed):
            return
        signatures = signatures[signed]
        keys = band_keys(signatures, self.bands, self.rows)
        num_perm = self.params.num_perm
        offsets = pa.array(np.arange(0, (len(signed) + 1) * num_perm, num_perm, dtype=np.int32))
        band_offsets = pa.array(np.arange(0, (len(signed) + 1) * self.bands, self.bands, dtype=np.int32))
        columns = {
            "doc_id": pa.array([first_copies[i]["doc_id"] for i in signed], pa.string()),
            "n_chars": pa.array([first_copies[i]["n_chars"] for i in signed], pa.int64()),
            "signature": pa.ListArray.from_arrays(offsets, pa.array(signatures.reshape(-1), pa.uint32())),
            "bands": pa.ListArray.from_arrays(band_offsets, pa.array(np.ascontiguousarray(keys).reshape(-1), pa.int64())),
        }
        if self.shard is not None:
            columns = {"shard": pa.array([self.shard] * len(signed), pa.string()), **columns}
        self.append(pa.table(columns))
        self.stats.signed_documents += len(signed)


@contextmanager
def signature_writer(
    lake: Lake,
    params: MinHashParams,
    stats: NearDedupStats,
    table: str = SIGNATURES_TABLE,
    shard: str | None = None,
    fresh: bool = True,
) -> Iterator[SignatureWriter]:
    """A `SignatureWriter` on a signatures `table` in `lake` (with a `shard` column when
    `shard` is given; a new table unless `fresh` is False and it exists), committing every
    `SIGNATURE_FLUSH_ROWS` rows (and the rest when the block ends)."""
    qualified = lake.qualified(table)  # never the live table of the same name
    if fresh:
        lake.execute(f"DROP TABLE IF EXISTS {qualified}")
    shard_column = "shard VARCHAR, " if shard is not None else ""
    lake.execute(
        f"CREATE TABLE IF NOT EXISTS {qualified} "
        f"({shard_column}doc_id VARCHAR, n_chars BIGINT, signature UINTEGER[], bands BIGINT[])"
    )
    with lake.appender(table, flush_rows=SIGNATURE_FLUSH_ROWS) as append:
        yield SignatureWriter(append, params, stats, shard)


# --- 2. candidate pairs, one band at a time ------------------------------------------


def candidate_pairs(
    lake: Lake, params: MinHashParams, stats: NearDedupStats, log=lambda m: None, signatures: str = quote(SIGNATURES_TABLE)
) -> None:
    """Fill `CANDIDATES_TABLE` (doc_a < doc_b) with the pairs sharing a bucket, band by band."""
    bands, _ = lsh_shape(params)
    lake.execute(f"CREATE OR REPLACE TABLE {quote(CANDIDATES_TABLE)} (band INTEGER, doc_a VARCHAR, doc_b VARCHAR)")
    for band in range(bands):
        column = band_key_sql(band)
        lake.execute(
            f"""
            INSERT INTO {quote(CANDIDATES_TABLE)}
            WITH bucket AS (SELECT DISTINCT doc_id, {column} AS key FROM {signatures}),
                 shared AS (SELECT key FROM bucket GROUP BY key HAVING count(*) > 1),
                 member AS (SELECT doc_id, key FROM bucket SEMI JOIN shared USING (key))
            SELECT {band} AS band, a.doc_id AS doc_a, b.doc_id AS doc_b
            FROM member a JOIN member b ON a.key = b.key AND a.doc_id < b.doc_id
            """
        )
    stats.candidate_rows = int(lake.query(f"SELECT count(*) AS n FROM {quote(CANDIDATES_TABLE)}")["n"][0])
    log(f"near dedup: {stats.candidate_rows} candidate rows over {bands} bands")


# --- 3. the Jaccard check, in bounded batches of pairs --------------------------------

_PAIRS_WITH_SIGNATURES = """
    WITH pairs AS (SELECT DISTINCT doc_a, doc_b FROM {pairs}),
         involved AS (SELECT doc_a AS doc_id FROM pairs UNION SELECT doc_b FROM pairs),
         signed AS (
             SELECT doc_id, any_value(n_chars) AS n_chars, any_value(signature) AS signature
             FROM {signatures} SEMI JOIN involved USING (doc_id) GROUP BY doc_id
         )
    SELECT p.doc_a, p.doc_b, a.n_chars AS n_chars_a, b.n_chars AS n_chars_b,
           a.signature AS signature_a, b.signature AS signature_b
    FROM pairs p JOIN signed a ON a.doc_id = p.doc_a JOIN signed b ON b.doc_id = p.doc_b
"""


def _signature_matrix(column: pa.ChunkedArray | pa.Array, num_perm: int) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.flatten().to_numpy().reshape(-1, num_perm)


def pair_jaccards(
    lake: Lake, pairs_sql: str, num_perm: int, signatures: str = quote(SIGNATURES_TABLE)
) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
    """Stream (batch, estimated Jaccards) for the distinct pairs `pairs_sql` names (a table
    or a subquery with doc_a, doc_b), `PAIR_BATCH_ROWS` pairs at a time."""
    sql = _PAIRS_WITH_SIGNATURES.format(pairs=pairs_sql, signatures=signatures)
    with lake.connect() as conn:
        reader = conn.execute(sql).fetch_record_batch(PAIR_BATCH_ROWS)
        for batch in reader:
            if batch.num_rows == 0:
                continue
            left = _signature_matrix(batch.column("signature_a"), num_perm)
            right = _signature_matrix(batch.column("signature_b"), num_perm)
            yield batch, paired_estimated_jaccards(left, right)


@dataclass
class Edges:
    """Verified near-duplicate pairs and the length of every document on one."""

    pairs: list[tuple[str, str, float]] = field(default_factory=list)
    n_chars: dict[str, int] = field(default_factory=dict)


def verified_edges(
    lake: Lake, params: MinHashParams, stats: NearDedupStats, signatures: str = quote(SIGNATURES_TABLE)
) -> Edges:
    edges = Edges()
    for batch, jaccards in pair_jaccards(lake, quote(CANDIDATES_TABLE), params.num_perm, signatures):
        stats.candidate_pairs += batch.num_rows
        hits = np.flatnonzero(jaccards >= params.threshold)
        if not len(hits):
            continue
        columns = {name: batch.column(name).to_pylist() for name in ("doc_a", "doc_b", "n_chars_a", "n_chars_b")}
        for i in hits.tolist():
            a, b = columns["doc_a"][i], columns["doc_b"][i]
            edges.pairs.append((a, b, float(jaccards[i])))
            edges.n_chars[a], edges.n_chars[b] = columns["n_chars_a"][i], columns["n_chars_b"][i]
    stats.verified_pairs = len(edges.pairs)
    return edges


# --- 4. clusters -----------------------------------------------------------------------


def connected_components(nodes: Sequence[str], pairs: Sequence[tuple[str, str, float]]) -> dict[str, str]:
    """Union-find: each node -> its component's root (the smallest node of the component
    in `nodes` order, so the root is stable)."""
    rank = {node: i for i, node in enumerate(nodes)}
    parent = list(range(len(nodes)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b, _ in pairs:
        ra, rb = find(rank[a]), find(rank[b])
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {node: nodes[find(i)] for i, node in enumerate(nodes)}


def greedy_over_edges(order: Sequence[str], pairs: Sequence[tuple[str, str, float]]) -> list[NearDuplicate]:
    """The in-memory greedy rule on the verified edges: visit `order`; a document with an
    already-kept neighbour is dropped as a near duplicate of the most similar one (ties:
    smallest doc_id), otherwise kept."""
    neighbours: dict[str, list[tuple[str, float]]] = {}
    for a, b, jaccard in pairs:
        neighbours.setdefault(a, []).append((b, jaccard))
        neighbours.setdefault(b, []).append((a, jaccard))
    kept: set[str] = set()
    removed = []
    for doc_id in order:
        best = min(
            ((-jaccard, other) for other, jaccard in neighbours.get(doc_id, ()) if other in kept), default=None
        )
        if best is None:
            kept.add(doc_id)
        else:
            removed.append(NearDuplicate(doc_id, best[1], -best[0]))
    return removed


def components_survivors(roots: dict[str, str]) -> list[tuple[str, str]]:
    """datatrove's rule: (dropped, survivor) for every document of a component but its
    root (`connected_components` over the visiting order: the longest document)."""
    return [(doc_id, root) for doc_id, root in roots.items() if doc_id != root]


def visiting_order(n_chars: dict[str, int]) -> list[str]:
    """Longest first, ties by doc_id: the document of a cluster that is kept."""
    return sorted(n_chars, key=lambda doc_id: (-n_chars[doc_id], doc_id))


def cluster_edges(
    lake: Lake,
    edges: Edges,
    params: MinHashParams,
    clustering: str,
    stats: NearDedupStats,
    signatures: str = quote(SIGNATURES_TABLE),
) -> list[NearDuplicate]:
    order = visiting_order(edges.n_chars)
    roots = connected_components(order, edges.pairs)
    stats.components = len(set(roots.values()))
    stats.documents_in_components = len(roots)
    if clustering == "greedy":
        return greedy_over_edges(order, edges.pairs)
    if clustering != "components":
        raise ValueError(f"unknown near-dedup clustering {clustering!r}; expected one of {', '.join(CLUSTERINGS)}")
    survivors = components_survivors(roots)
    if not survivors:
        return []
    # the Jaccard of each dropped document to its survivor (often not an edge: a chain)
    pairs = pa.table({"doc_a": [d for d, _ in survivors], "doc_b": [s for _, s in survivors]})
    found: dict[str, NearDuplicate] = {}
    with lake.connect() as conn:
        conn.register("_survivor_pairs", pairs)
        sql = _PAIRS_WITH_SIGNATURES.format(pairs="_survivor_pairs", signatures=signatures)
        for batch in conn.execute(sql).fetch_record_batch(PAIR_BATCH_ROWS):
            left = _signature_matrix(batch.column("signature_a"), params.num_perm)
            right = _signature_matrix(batch.column("signature_b"), params.num_perm)
            jaccards = paired_estimated_jaccards(left, right)
            for doc_id, survivor, jaccard in zip(batch.column("doc_a").to_pylist(), batch.column("doc_b").to_pylist(), jaccards):
                found[doc_id] = NearDuplicate(doc_id, survivor, float(jaccard))
        conn.unregister("_survivor_pairs")
    return [found[doc_id] for doc_id, _ in survivors]


def find_near_duplicates(
    lake: Lake,
    params: MinHashParams,
    stats: NearDedupStats,
    clustering: str = "greedy",
    log: Callable[[str], None] = lambda message: None,
    signatures: str = quote(SIGNATURES_TABLE),
) -> list[NearDuplicate]:
    """Steps 2-4 over the `signatures` relation (default: the table a `signature_writer`
    stored in `lake`); drops the candidates table afterwards (the signatures stay)."""
    if clustering not in CLUSTERINGS:
        raise ValueError(f"unknown near-dedup clustering {clustering!r}; expected one of {', '.join(CLUSTERINGS)}")
    started = time.perf_counter()
    candidate_pairs(lake, params, stats, log, signatures)
    stats.seconds["candidates"] = time.perf_counter() - started
    started = time.perf_counter()
    edges = verified_edges(lake, params, stats, signatures)
    stats.seconds["jaccard_check"] = time.perf_counter() - started
    started = time.perf_counter()
    removed = cluster_edges(lake, edges, params, clustering, stats, signatures)
    stats.seconds["clusters"] = time.perf_counter() - started
    log(
        f"near dedup: {stats.candidate_pairs} distinct candidate pairs, {stats.verified_pairs} at Jaccard >= "
        f"{params.threshold}, {stats.components} components, {len(removed)} near duplicates ({clustering})"
    )
    lake.execute(f"DROP TABLE IF EXISTS {quote(CANDIDATES_TABLE)}")
    return removed
