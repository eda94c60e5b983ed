"""Exact and near-duplicate detection of ingested documents, as plain functions.

Exact duplicates share a `doc_id` (sha256 of the normalised content). Near
duplicates are found with the shared MinHash + LSH (`synth_assets.common.minhash`) on
bigcode's byte tokens, with the bigcode near-deduplication defaults (5-gram token
shingles, 256 permutations, Jaccard threshold 0.7): the defaults of `MinHashParams`.

The `raw_stack_plus` asset runs the out-of-core version (`near_dedup`), which makes the
same decisions as `cluster_near_duplicates` without a signature per document in memory;
the in-memory route stays as the reference for tests and benches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from datasketch import MinHash

from synth_assets.common.minhash import (
    MinHasher,
    MinHashParams,
    bigcode_tokens,
    greedy_near_duplicates,
    has_shingles,
    shingles,
)

DOC_ID_HEX_CHARS = 16

# The ingest's near-dedup settings (the `raw_stack_plus` launchpad fields map onto it) are
# exactly MinHashParams with its bigcode defaults.
NearDedupParams = MinHashParams


# --- normalisation and exact duplicates -------------------------------------------


def normalise_content(text: str) -> str:
    """The content that is hashed and stored: no byte-order mark, ``\\n`` line ends,
    no trailing whitespace on lines, no blank lines at either end, one final newline
    (empty string if nothing is left)."""
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    lines = [line.rstrip() for line in text.split("\n")]
    body = "\n".join(lines).strip("\n")
    return body + "\n" if body else ""


def content_hash(normalised: str) -> str:
    """The stable `doc_id`: sha256 hex of the normalised content, first 16 characters."""
    return hashlib.sha256(normalised.encode("utf-8", "surrogatepass")).hexdigest()[:DOC_ID_HEX_CHARS]


# --- near duplicates ---------------------------------------------------------------


@dataclass(frozen=True)
class NearDuplicate:
    doc_id: str
    near_duplicate_of: str
    jaccard: float


def cluster_near_duplicates(
    doc_ids: Sequence[str],
    sketches: Sequence,
    priority: Sequence[int],
    params: NearDedupParams = NearDedupParams(),
) -> list[NearDuplicate]:
    """Greedy LSH clustering (`greedy_near_duplicates`). Documents are visited from
    highest `priority` (e.g. the longest) to lowest, ties by doc_id, and dropped as a
    near duplicate of the kept candidate with the highest estimated Jaccard (ties: the
    smallest doc_id) when it reaches `threshold`. `sketches` are signature arrays or
    datasketch MinHash/LeanMinHash objects (anything with `hashvalues`); documents
    without shingles (None) are never near duplicates. Deterministic: the same inputs
    give the same decisions in any input order."""
    signatures = [None if sketch is None else np.asarray(getattr(sketch, "hashvalues", sketch)) for sketch in sketches]
    order = sorted(range(len(doc_ids)), key=lambda i: (-priority[i], doc_ids[i]))
    return [
        NearDuplicate(doc_ids[index], doc_ids[kept], jaccard)
        for index, kept, jaccard in greedy_near_duplicates(signatures, params, order=order, keys=doc_ids)
    ]


def near_duplicates_of_texts(
    doc_ids: Sequence[str], texts: Sequence[str], params: NearDedupParams = NearDedupParams()
) -> list[NearDuplicate]:
    """Convenience: signatures + clustering for in-memory texts (longest kept)."""
    signatures = MinHasher(params).signatures(texts)
    sketches = [signature if has_shingles(signature) else None for signature in signatures]
    return cluster_near_duplicates(doc_ids, sketches, [len(t) for t in texts], params)


# --- the plain datasketch baseline (bench/dedup.py, tests) -----------------------


def baseline_minhash(text: str, params: NearDedupParams = NearDedupParams()) -> MinHash | None:
    """The textbook route: one `MinHash(num_perm)` per document, `update_batch` with
    the encoded shingles, default sha1 hashing. None for a text without tokens."""
    grams = shingles(bigcode_tokens(text), params.ngram_size)
    if not grams:
        return None
    minhash = MinHash(num_perm=params.num_perm, seed=params.seed)
    minhash.update_batch(grams)
    return minhash
