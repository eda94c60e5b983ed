"""Exact and near-duplicate detection as plain functions.

Exact duplicates share a `doc_id` (sha256 of the normalised content). Near
duplicates are found with MinHash + LSH from `datasketch`, with the bigcode
near-deduplication defaults (5-gram token shingles, 256 permutations, Jaccard
threshold 0.7).

The MinHash signatures are datasketch's own "affine32" scheme (the 2.x default),
computed with numpy for many documents at once instead of one Python call per
shingle:

* tokens are runs of ``[a-z0-9_]`` in the ASCII-lowercased UTF-8 bytes (bigcode's
  ``NON_ALPHA = [^A-Za-z_0-9]`` split, lowercased, empty tokens dropped);
* each token is hashed once with xxh32; a shingle's 32-bit hash is a polynomial
  mod 2^32 over its ``ngram_size`` token hashes (equal shingles always get equal
  hashes; distinct ones collide with probability ~2^-32, as with any 32-bit
  shingle hash such as datasketch's default sha1_hash32);
* the permutation step is datasketch's: ``fmix32(h)``, then ``a*h + b mod 2^32``
  with datasketch's ``(a, b)`` for the seed, minimum over the shingles.

So a signature here equals ``MinHash(num_perm, seed, hashfunc=<shingle hash>)``
filled with ``update_batch`` (tests/test_dedup.py checks this), and the sketches
go into a real ``datasketch.MinHashLSH`` as ``LeanMinHash`` objects.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import xxhash
from datasketch import LeanMinHash, MinHash, MinHashLSH

SCHEME = "affine32"  # datasketch >= 2.0 default permutation scheme
# bytes.translate table: ASCII letters lowercased, digits and `_` kept, every other
# byte (punctuation, whitespace, UTF-8 multi-byte sequences) becomes a separator.
_TOKEN_TABLE = bytes(
    (c + 32 if 65 <= c <= 90 else c) if (48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122 or c == 95) else 32
    for c in range(256)
)
DOC_ID_HEX_CHARS = 16

_FMIX32 = (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35), np.uint32(16))
_SHINGLE_MULTIPLIER = np.uint32(0x9E3779B1)  # odd 32-bit golden-ratio constant
_EMPTY = np.uint32(0xFFFFFFFF)
# Shingles handled at once: the (permutations x shingles) block is 256 x 8192 x 4 B = 8 MiB;
# measured fastest on the 2-core dev box among 1k..32k (bench/dedup.py).
_BLOCK_ROWS = 8192


@dataclass(frozen=True)
class NearDedupParams:
    """MinHash LSH settings. Defaults: bigcode near-deduplication
    (bigcode-dataset/near_deduplication, The Stack v1 / StarCoder data pipeline)."""

    ngram_size: int = 5  # bigcode: 5-gram token shingles
    num_perm: int = 256  # bigcode: 256 permutations
    threshold: float = 0.7  # bigcode: Jaccard similarity threshold 0.7
    seed: int = 1  # datasketch's default seed
    # LSH only proposes candidates; each is then verified with the estimated Jaccard
    # >= threshold. Banding tuned for 0.7 (b=25, r=10) retrieves a pair at J=0.7 with
    # probability 1-(1-0.7^10)^25 ~ 0.51, so real duplicates just above the threshold
    # are lost at random; retrieving at 0.6 makes the decision rest on the estimate.
    lsh_threshold: float = 0.6


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


# --- shingles and signatures -------------------------------------------------------


def tokenize(text: str) -> list[bytes]:
    """bigcode-style tokens: runs of ASCII letters, digits and `_`, lowercased."""
    return text.encode("utf-8", "surrogatepass").translate(_TOKEN_TABLE).split()


def shingles(tokens: Sequence[bytes], ngram_size: int) -> list[bytes]:
    """Token n-grams joined by a space (a document shorter than `ngram_size` tokens
    is one shingle of all its tokens; no tokens gives no shingles)."""
    if not tokens:
        return []
    if len(tokens) < ngram_size:
        return [b" ".join(tokens)]
    return [b" ".join(tokens[i : i + ngram_size]) for i in range(len(tokens) - ngram_size + 1)]


def _fmix32(h: np.ndarray) -> np.ndarray:
    s1, m1, s2, m2, s3 = _FMIX32
    h = h ^ (h >> s1)
    h *= m1
    h ^= h >> s2
    h *= m2
    h ^= h >> s3
    return h


def shingle_hashes(text: str, ngram_size: int = 5) -> np.ndarray:
    """The 32-bit hashes of a text's shingles (uint32, one per token window).

    Each token is hashed once (xxh32); a window's hash is the polynomial
    ``((t0*M + t1)*M + t2)...`` mod 2^32 over its token hashes, plus the window
    width. datasketch's affine32 scheme then pre-mixes it with fmix32, so no
    further mixing is needed here."""
    tokens = tokenize(text)
    if not tokens:
        return np.empty(0, dtype=np.uint32)
    token_hashes = np.fromiter(map(xxhash.xxh32_intdigest, tokens), dtype=np.uint32, count=len(tokens))
    width = min(ngram_size, len(token_hashes))
    count = len(token_hashes) - width + 1
    combined = token_hashes[:count].copy()
    for offset in range(1, width):
        combined *= _SHINGLE_MULTIPLIER
        combined += token_hashes[offset : offset + count]
    combined += np.uint32(width)  # a short document's single shingle differs from any 5-gram
    return combined


class MinHasher:
    """Computes datasketch-compatible affine32 MinHash signatures for many texts."""

    def __init__(self, params: NearDedupParams = NearDedupParams()):
        self.params = params
        a, b = MinHash(num_perm=params.num_perm, seed=params.seed, scheme=SCHEME).permutations
        self.a = np.ascontiguousarray(a, dtype=np.uint32)
        self.b = np.ascontiguousarray(b, dtype=np.uint32)
        self._buffer: np.ndarray | None = None

    def signature_from_hashes(self, hashes: np.ndarray) -> np.ndarray:
        """The signature of one set of 32-bit input hashes (all-0xFFFFFFFF if empty)."""
        return self.signatures_from_hash_sets([hashes])[0]

    def signatures_from_hash_sets(self, hash_sets: Sequence[np.ndarray]) -> np.ndarray:
        """Signatures (n, num_perm) uint32 for n sets of input hashes, computed in
        cache-sized blocks that may span several documents (one `reduceat` per block)."""
        out = np.full((len(hash_sets), self.params.num_perm), _EMPTY, dtype=np.uint32)
        block: list[np.ndarray] = []
        owners: list[int] = []
        rows = 0
        for index, hashes in enumerate(hash_sets):
            if len(hashes) == 0:
                continue
            if len(hashes) >= _BLOCK_ROWS:
                for start in range(0, len(hashes), _BLOCK_ROWS):
                    part = self._permuted(hashes[start : start + _BLOCK_ROWS]).min(axis=1)
                    np.minimum(out[index], part, out=out[index])
                continue
            if rows + len(hashes) > _BLOCK_ROWS:
                self._reduce_block(block, owners, out)
                block, owners, rows = [], [], 0
            block.append(hashes)
            owners.append(index)
            rows += len(hashes)
        if block:
            self._reduce_block(block, owners, out)
        return out

    def signatures(self, texts: Iterable[str]) -> np.ndarray:
        """Signatures (n, num_perm) of raw texts; a text without tokens gets the
        all-0xFFFFFFFF empty signature (see `has_shingles`)."""
        return self.signatures_from_hash_sets([shingle_hashes(t, self.params.ngram_size) for t in texts])

    def _permuted(self, hashes: np.ndarray) -> np.ndarray:
        """(num_perm, n) permuted hashes, laid out so each reduction runs over
        contiguous memory; written into one reused buffer."""
        mixed = _fmix32(np.asarray(hashes, dtype=np.uint32))
        if self._buffer is None:
            self._buffer = np.empty((self.params.num_perm, _BLOCK_ROWS), dtype=np.uint32)
        permuted = self._buffer[:, : len(mixed)]
        np.multiply(self.a[:, None], mixed[None, :], out=permuted)
        permuted += self.b[:, None]
        return permuted

    def _reduce_block(self, block: list[np.ndarray], owners: list[int], out: np.ndarray) -> None:
        starts = np.cumsum([0] + [len(h) for h in block[:-1]])
        out[owners] = np.minimum.reduceat(self._permuted(np.concatenate(block)), starts, axis=1).T

    def lean_minhash(self, signature: np.ndarray) -> LeanMinHash:
        return LeanMinHash(seed=self.params.seed, hashvalues=signature, scheme=SCHEME)


def has_shingles(signature: np.ndarray) -> bool:
    return bool(signature[0] != _EMPTY or np.any(signature != _EMPTY))


# --- clustering ------------------------------------------------------------------


@dataclass(frozen=True)
class NearDuplicate:
    doc_id: str
    near_duplicate_of: str
    jaccard: float


@functools.lru_cache(maxsize=16)
def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """datasketch's optimal (bands, rows) for a threshold, computed once per process
    (the numerical integration behind it costs ~0.1 s per MinHashLSH)."""
    index = MinHashLSH(threshold=threshold, num_perm=num_perm)
    return index.b, index.r


def estimated_jaccard(left: np.ndarray, right: np.ndarray) -> float:
    return float(np.count_nonzero(left == right)) / float(len(left))


def cluster_near_duplicates(
    doc_ids: Sequence[str],
    sketches: Sequence,
    priority: Sequence[int],
    params: NearDedupParams = NearDedupParams(),
) -> list[NearDuplicate]:
    """Greedy LSH clustering. Documents are visited from highest `priority` (e.g. the
    longest) to lowest, ties by doc_id; each is checked against the representatives
    kept so far with `MinHashLSH.query` (banding tuned for `lsh_threshold`), and is
    dropped as a near duplicate of the most similar candidate whose estimated Jaccard
    reaches `threshold`, else kept and indexed. `sketches` are datasketch
    MinHash/LeanMinHash objects (anything with `hashvalues`); documents without
    shingles (None) are never near duplicates. Deterministic: the same inputs give
    the same decisions in any input order."""
    lsh_threshold = min(params.lsh_threshold, params.threshold)
    lsh = MinHashLSH(threshold=lsh_threshold, num_perm=params.num_perm, params=lsh_bands(lsh_threshold, params.num_perm))
    order = sorted(range(len(doc_ids)), key=lambda i: (-priority[i], doc_ids[i]))
    kept_sketch: dict[str, np.ndarray] = {}
    removed: list[NearDuplicate] = []
    for index in order:
        sketch = sketches[index]
        if sketch is None:
            continue
        hashvalues = sketch.hashvalues
        best_id, best_jaccard = None, -1.0
        for candidate in lsh.query(sketch):
            jaccard = estimated_jaccard(hashvalues, kept_sketch[candidate])
            if jaccard > best_jaccard or (jaccard == best_jaccard and candidate < best_id):
                best_id, best_jaccard = candidate, jaccard
        if best_id is not None and best_jaccard >= params.threshold:
            removed.append(NearDuplicate(doc_ids[index], best_id, best_jaccard))
        else:
            lsh.insert(doc_ids[index], sketch, check_duplication=False)
            kept_sketch[doc_ids[index]] = hashvalues
    return removed


def near_duplicates_of_texts(
    doc_ids: Sequence[str], texts: Sequence[str], params: NearDedupParams = NearDedupParams()
) -> list[NearDuplicate]:
    """Convenience: signatures + clustering for in-memory texts (longest kept)."""
    hasher = MinHasher(params)
    signatures = hasher.signatures(texts)
    sketches = [hasher.lean_minhash(s) if has_shingles(s) else None for s in signatures]
    return cluster_near_duplicates(doc_ids, sketches, [len(t) for t in texts], params)


# --- the plain datasketch baseline (bench/dedup.py, tests) -----------------------


def baseline_minhash(text: str, params: NearDedupParams = NearDedupParams()) -> MinHash | None:
    """The textbook route: one `MinHash(num_perm)` per document, `update_batch` with
    the encoded shingles, default sha1 hashing. None for a text without tokens."""
    grams = shingles(tokenize(text), params.ngram_size)
    if not grams:
        return None
    minhash = MinHash(num_perm=params.num_perm, seed=params.seed)
    minhash.update_batch(grams)
    return minhash
