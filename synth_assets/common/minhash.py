"""MinHash and LSH, once, for every near-duplicate question in the pipeline.

Callers choose their tokens: ingest dedup uses bigcode's byte tokens of whole files
(`bigcode_tokens`), persona dedup word 1-grams, the diversity metrics word 5-grams of
generated texts, the MinHash contamination signal identifier/literal-normalised code
tokens. Everything after the tokens is this module:

* token hashes: xxh32 of each token's UTF-8 bytes (`token_hashes`);
* shingle hashes: a shingle's 32-bit hash is a polynomial mod 2^32 over its
  ``ngram_size`` token hashes, plus the window width (`shingle_hashes`). Equal shingles
  always get equal hashes; distinct ones collide with probability ~2^-32, as with any
  32-bit shingle hash such as datasketch's default sha1_hash32. A text shorter than a
  shingle is one shingle of all its tokens, different from any full-width shingle;
* signatures: datasketch's own "affine32" permutation scheme (the 2.x default):
  ``fmix32(h)``, then ``a*h + b mod 2^32`` with datasketch's ``(a, b)`` for the seed,
  minimum over the shingles, computed with numpy for many documents at once
  (`MinHasher`). A signature equals ``datasketch.MinHash(num_perm, seed,
  hashfunc=<shingle hash>)`` filled with ``update_batch`` (tests check this);
* LSH banding: datasketch's optimal (bands, rows) for a threshold; two signatures are
  candidates when one whole band is equal, exactly as in ``datasketch.MinHashLSH``
  (`LshIndex`);
* Jaccard: estimated from two signatures (the share of equal slots) or exact on sets;
* greedy clustering (`greedy_near_duplicates`): documents are visited in a given order
  and each is dropped as a near duplicate of its most similar kept LSH candidate at or
  above the threshold, else kept and indexed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import xxhash
from datasketch import LeanMinHash, MinHash, MinHashLSH

SCHEME = "affine32"  # datasketch >= 2.0 default permutation scheme
EMPTY = np.uint32(0xFFFFFFFF)  # every slot of the signature of a text without shingles

_FMIX32 = (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35), np.uint32(16))
_SHINGLE_MULTIPLIER = np.uint32(0x9E3779B1)  # odd 32-bit golden-ratio constant
# bytes.translate table: ASCII letters lowercased, digits and `_` kept, every other
# byte (punctuation, whitespace, UTF-8 multi-byte sequences) becomes a separator.
_BIGCODE_TOKEN_TABLE = bytes(
    (c + 32 if 65 <= c <= 90 else c) if (48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122 or c == 95) else 32
    for c in range(256)
)
# Bytes of one (permutations x shingles) block: 256 x 8192 x 4 B = 8 MiB, measured fastest
# on the 2-core dev box among 1k..32k shingles at 256 permutations (bench/dedup.py).
_BLOCK_BYTES = 8 << 20


@dataclass(frozen=True)
class MinHashParams:
    """Shingles, permutations and thresholds. Defaults: bigcode near-deduplication
    (bigcode-dataset/near_deduplication, The Stack v1 / StarCoder data pipeline); other
    callers pass their own published parameters."""

    ngram_size: int = 5  # bigcode: 5-gram token shingles
    num_perm: int = 256  # bigcode: 256 permutations
    threshold: float = 0.7  # bigcode: Jaccard similarity threshold 0.7
    seed: int = 1  # datasketch's default seed
    # LSH only proposes candidates; each is then verified against `threshold`. Banding
    # tuned for 0.7 (b=25, r=10 at 256 permutations) retrieves a pair at J=0.7 with
    # probability 1-(1-0.7^10)^25 ~ 0.51, so real duplicates just above the threshold
    # are lost at random; retrieving at 0.6 makes the decision rest on the verification.
    lsh_threshold: float = 0.6


# --- tokens and shingles ---------------------------------------------------------


def bigcode_tokens(text: str) -> list[bytes]:
    """bigcode-style tokens: runs of ASCII letters, digits and `_` in the UTF-8 bytes,
    lowercased (bigcode's ``NON_ALPHA = [^A-Za-z_0-9]`` split, empty tokens dropped)."""
    return text.encode("utf-8", "surrogatepass").translate(_BIGCODE_TOKEN_TABLE).split()


def shingles(tokens: Sequence[bytes], ngram_size: int) -> list[bytes]:
    """Token n-grams joined by a space, the textbook route (a document shorter than
    `ngram_size` tokens is one shingle of all its tokens; no tokens gives no shingles)."""
    if not tokens:
        return []
    if len(tokens) < ngram_size:
        return [b" ".join(tokens)]
    return [b" ".join(tokens[i : i + ngram_size]) for i in range(len(tokens) - ngram_size + 1)]


def token_hashes(tokens: Sequence[bytes] | Sequence[str]) -> np.ndarray:
    """uint32 xxh32 of each token (str tokens are hashed as their UTF-8 bytes)."""
    if tokens and isinstance(tokens[0], str):
        tokens = [token.encode("utf-8", "surrogatepass") for token in tokens]
    return np.fromiter(map(xxhash.xxh32_intdigest, tokens), dtype=np.uint32, count=len(tokens))


def shingle_hashes(hashes: np.ndarray, ngram_size: int) -> np.ndarray:
    """The 32-bit hash of every window of `ngram_size` token hashes (uint32, one per
    window): ``((t0*M + t1)*M + t2)...`` mod 2^32, plus the window width. Fewer tokens
    than `ngram_size` give one shingle of all of them; none give none. The affine32
    scheme pre-mixes each hash with fmix32, so no further mixing is needed here."""
    if not len(hashes):
        return np.empty(0, dtype=np.uint32)
    hashes = np.asarray(hashes, dtype=np.uint32)
    width = min(ngram_size, len(hashes))
    count = len(hashes) - width + 1
    combined = hashes[:count].copy()
    for offset in range(1, width):
        combined *= _SHINGLE_MULTIPLIER
        combined += hashes[offset : offset + count]
    combined += np.uint32(width)  # a short document's single shingle differs from any full shingle
    return combined


def text_shingle_hashes(
    text: str, ngram_size: int = MinHashParams.ngram_size, tokenize: Callable[[str], Sequence] = bigcode_tokens
) -> np.ndarray:
    """`shingle_hashes` of a text's tokens (bigcode byte tokens unless told otherwise)."""
    return shingle_hashes(token_hashes(tokenize(text)), ngram_size)


# --- signatures ------------------------------------------------------------------


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer, as datasketch's affine32 scheme applies it."""
    s1, m1, s2, m2, s3 = _FMIX32
    h = h ^ (h >> s1)
    h *= m1
    h ^= h >> s2
    h *= m2
    h ^= h >> s3
    return h


class MinHasher:
    """Computes datasketch-compatible affine32 MinHash signatures for many documents.

    `tokenize` (text -> tokens) is used by `signatures(texts)`; callers that hash their
    own tokens pass shingle hashes to `signatures_from_hash_sets`."""

    def __init__(self, params: MinHashParams = MinHashParams(), tokenize: Callable[[str], Sequence] = bigcode_tokens):
        self.params = params
        self.tokenize = tokenize
        a, b = MinHash(num_perm=params.num_perm, seed=params.seed, scheme=SCHEME).permutations
        self.a = np.ascontiguousarray(a, dtype=np.uint32)
        self.b = np.ascontiguousarray(b, dtype=np.uint32)
        # shingles per (permutations x shingles) block; a block may span several documents
        self.block_rows = max(_BLOCK_BYTES // (4 * params.num_perm), 1)
        self._buffer: np.ndarray | None = None

    def shingle_hashes(self, text: str) -> np.ndarray:
        return text_shingle_hashes(text, self.params.ngram_size, self.tokenize)

    def signatures(self, texts: Iterable[str]) -> np.ndarray:
        """Signatures (n, num_perm) of raw texts; a text without tokens gets the
        all-0xFFFFFFFF empty signature (see `has_shingles`)."""
        return self.signatures_from_hash_sets([self.shingle_hashes(text) for text in texts])

    def signature_from_hashes(self, hashes: np.ndarray) -> np.ndarray:
        """The signature of one set of 32-bit shingle hashes (all-0xFFFFFFFF if empty)."""
        return self.signatures_from_hash_sets([hashes])[0]

    def signatures_from_hash_sets(self, hash_sets: Sequence[np.ndarray]) -> np.ndarray:
        """Signatures (n, num_perm) uint32 for n sets of shingle hashes, computed in
        cache-sized blocks that may span several documents (one `reduceat` per block)."""
        out = np.full((len(hash_sets), self.params.num_perm), EMPTY, dtype=np.uint32)
        block_rows = self.block_rows
        block: list[np.ndarray] = []
        owners: list[int] = []
        rows = 0
        for index, hashes in enumerate(hash_sets):
            if len(hashes) == 0:
                continue
            if len(hashes) >= block_rows:
                for start in range(0, len(hashes), block_rows):
                    part = self._permuted(hashes[start : start + block_rows]).min(axis=1)
                    np.minimum(out[index], part, out=out[index])
                continue
            if rows + len(hashes) > block_rows:
                self._reduce_block(block, owners, out)
                block, owners, rows = [], [], 0
            block.append(hashes)
            owners.append(index)
            rows += len(hashes)
        if block:
            self._reduce_block(block, owners, out)
        return out

    def _permuted(self, hashes: np.ndarray) -> np.ndarray:
        """(num_perm, n) permuted hashes, laid out so each reduction runs over
        contiguous memory; written into one reused buffer."""
        mixed = _fmix32(np.asarray(hashes, dtype=np.uint32))
        if self._buffer is None or self._buffer.shape[1] < len(mixed):
            self._buffer = np.empty((self.params.num_perm, max(self.block_rows, len(mixed))), dtype=np.uint32)
        permuted = self._buffer[:, : len(mixed)]
        np.multiply(self.a[:, None], mixed[None, :], out=permuted)
        permuted += self.b[:, None]
        return permuted

    def _reduce_block(self, block: list[np.ndarray], owners: list[int], out: np.ndarray) -> None:
        starts = np.cumsum([0] + [len(h) for h in block[:-1]])
        out[owners] = np.minimum.reduceat(self._permuted(np.concatenate(block)), starts, axis=1).T

    def lean_minhash(self, signature: np.ndarray) -> LeanMinHash:
        """The signature as a datasketch object, for code that wants datasketch's API."""
        return LeanMinHash(seed=self.params.seed, hashvalues=signature, scheme=SCHEME)


def has_shingles(signature: np.ndarray) -> bool:
    return bool(signature[0] != EMPTY or np.any(signature != EMPTY))


# --- Jaccard ---------------------------------------------------------------------


def estimated_jaccard(left: np.ndarray, right: np.ndarray) -> float:
    """The share of equal signature slots: an unbiased estimate of the shingle Jaccard
    (standard error ~ 1/sqrt(num_perm))."""
    return float(np.count_nonzero(left == right)) / float(len(left))


def estimated_jaccards(signatures: np.ndarray, against: np.ndarray) -> np.ndarray:
    """`estimated_jaccard` of every row of `signatures` (n, p) with every row of
    `against` (m, p), as an (n, m) float array in one numpy comparison."""
    return (signatures[:, None, :] == against[None, :, :]).mean(axis=2)


def exact_jaccard(left: set, right: set) -> float:
    return len(left & right) / len(left | right)


# --- LSH banding and greedy clustering ------------------------------------------


@functools.lru_cache(maxsize=16)
def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """datasketch's optimal (bands, rows) for a threshold, computed once per process
    (the numerical integration behind it costs ~0.1 s per MinHashLSH)."""
    index = MinHashLSH(threshold=threshold, num_perm=num_perm)
    return index.b, index.r


class LshIndex:
    """Signatures banded into `bands` slices of `rows` slots (datasketch's optimum for
    `threshold`); a query's candidates are the keys that share at least one whole band
    with it, as `datasketch.MinHashLSH.query` returns them."""

    def __init__(self, threshold: float, num_perm: int):
        self.bands, self.rows = lsh_bands(threshold, num_perm)
        self._tables: list[dict[bytes, list[Hashable]]] = [{} for _ in range(self.bands)]

    def _band_keys(self, signature: np.ndarray) -> list[bytes]:
        rows = self.rows
        signature = np.ascontiguousarray(signature)
        return [signature[band * rows : (band + 1) * rows].tobytes() for band in range(self.bands)]

    def insert(self, key: Hashable, signature: np.ndarray) -> None:
        for table, band in zip(self._tables, self._band_keys(signature)):
            table.setdefault(band, []).append(key)

    def candidates(self, signature: np.ndarray) -> set:
        found: set = set()
        for table, band in zip(self._tables, self._band_keys(signature)):
            found.update(table.get(band, ()))
        return found


def greedy_near_duplicates(
    signatures: Sequence[np.ndarray | None],
    params: MinHashParams,
    order: Iterable[int] | None = None,
    keys: Sequence | None = None,
    similarity: Callable[[int, int], float] | None = None,
) -> list[tuple[int, int, float]]:
    """Greedy LSH clustering. Documents are visited in `order` (default: as given);
    each is checked against the representatives kept so far that LSH proposes (banding
    tuned for `params.lsh_threshold`, never above `params.threshold`), and is dropped as
    a near duplicate of the most similar one if that reaches `params.threshold`, else
    kept and indexed. Equally similar candidates are broken by the smallest `keys`
    value (default: position). `similarity(i, j)` defaults to the estimated Jaccard of
    the two signatures; callers holding the shingle sets pass the exact Jaccard.
    Documents without shingles (signature None) are neither kept nor dropped.

    Returns (position dropped, position of its kept representative, similarity), in
    visiting order."""
    keys = range(len(signatures)) if keys is None else keys
    if similarity is None:

        def similarity(index: int, kept: int) -> float:
            return estimated_jaccard(signatures[index], signatures[kept])

    lsh = LshIndex(min(params.lsh_threshold, params.threshold), params.num_perm)
    removed: list[tuple[int, int, float]] = []
    for index in range(len(signatures)) if order is None else order:
        signature = signatures[index]
        if signature is None:
            continue
        best, best_score = -1, -1.0
        for candidate in lsh.candidates(signature):
            score = similarity(index, candidate)
            if score > best_score or (score == best_score and keys[candidate] < keys[best]):
                best, best_score = candidate, score
        if best >= 0 and best_score >= params.threshold:
            removed.append((index, best, best_score))
        else:
            lsh.insert(index, signature)
    return removed


# --- out-of-core LSH: band keys and row-wise Jaccard (ingest's SQL dedup) ----------

_BAND_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit golden-ratio constant
_FMIX64 = (np.uint64(33), np.uint64(0xFF51AFD7ED558CCD), np.uint64(33), np.uint64(0xC4CEB9FE1A85EC53), np.uint64(33))


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 64-bit key per (document, band): a polynomial mod 2^64 over the band's `rows`
    slots, finished with MurmurHash3's fmix64, as an (n, bands) int64 array (SQL BIGINT).
    Equal bands always get equal keys, so two documents share a key where `LshIndex`
    makes them candidates; distinct bands collide with probability ~2^-64, and a
    collision only proposes a pair that the Jaccard check then judges."""
    signatures = np.asarray(signatures, dtype=np.uint32)
    sliced = signatures[:, : bands * rows].reshape(len(signatures), bands, rows).astype(np.uint64)
    keys = np.zeros((len(signatures), bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for slot in range(rows):
            keys *= _BAND_MULTIPLIER
            keys += sliced[:, :, slot] + np.uint64(1)
        s1, m1, s2, m2, s3 = _FMIX64
        keys ^= keys >> s1
        keys *= m1
        keys ^= keys >> s2
        keys *= m2
        keys ^= keys >> s3
    return keys.view(np.int64)


def paired_estimated_jaccards(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """`estimated_jaccard` of row i of `left` with row i of `right` (both (n, p)), as n floats."""
    return np.count_nonzero(np.asarray(left) == np.asarray(right), axis=1) / float(np.shape(left)[1])
