"""How diverse a set of generated texts is, and which of them are near-duplicates.

- distinct-n (Li et al. 2016, "A Diversity-Promoting Objective Function for Neural
  Conversation Models"): distinct n-grams / total n-grams over all outputs, on
  lower-cased word tokens; 1.0 means no n-gram repeats anywhere.
- near-duplicates: MinHash LSH on word 5-gram shingles (the shingle size used for
  documents in phi-1-style dedup pipelines; Lee et al. 2022 "Deduplicating Training
  Data" uses 5-grams, Jaccard 0.8), confirmed with the exact shingle Jaccard.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from datasketch import MinHash, MinHashLSH

NEAR_DUP_SHINGLE = 5  # Lee et al. 2022: 5-gram word shingles
NEAR_DUP_THRESHOLD = 0.8  # Lee et al. 2022: Jaccard 0.8
NUM_PERM = 128
MINHASH_SEED = 1


def word_tokens(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]", text.lower())


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams / total n-grams across all texts (0.0 when there are none)."""
    total = 0
    distinct: set[tuple[str, ...]] = set()
    for text in texts:
        tokens = word_tokens(text)
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        total += len(grams)
        distinct.update(grams)
    return len(distinct) / total if total else 0.0


def distinct_metrics(texts: Sequence[str]) -> dict[str, float]:
    """distinct-1/2/3, rounded for metadata."""
    return {f"distinct_{n}": round(distinct_n(texts, n), 4) for n in (1, 2, 3)}


def shingles(text: str, size: int = NEAR_DUP_SHINGLE) -> set[str]:
    tokens = word_tokens(text)
    if len(tokens) < size:
        return {" ".join(tokens)} if tokens else set()
    return {" ".join(tokens[i : i + size]) for i in range(len(tokens) - size + 1)}


@dataclass(frozen=True)
class NearDuplicate:
    index: int  # position of the dropped text
    near_duplicate_of: int  # position of the kept text it resembles
    jaccard: float


def find_near_duplicates(
    texts: Sequence[str], threshold: float = NEAR_DUP_THRESHOLD, shingle_size: int = NEAR_DUP_SHINGLE
) -> list[NearDuplicate]:
    """Every text whose shingle Jaccard with an earlier *kept* text is >= threshold.
    The first of a group is kept; empty texts are never matched."""
    lsh = MinHashLSH(threshold=max(threshold - 0.1, 0.1), num_perm=NUM_PERM)
    kept_shingles: dict[str, set[str]] = {}
    duplicates: list[NearDuplicate] = []
    for index, text in enumerate(texts):
        grams = shingles(text, shingle_size)
        if not grams:
            continue
        signature = MinHash(num_perm=NUM_PERM, seed=MINHASH_SEED)
        for gram in sorted(grams):
            signature.update(gram.encode())
        best: tuple[float, int] | None = None
        for key in lsh.query(signature):
            other = kept_shingles[key]
            score = len(grams & other) / len(grams | other)
            if score >= threshold and (best is None or score > best[0]):
                best = (score, int(key))
        if best is not None:
            duplicates.append(NearDuplicate(index, best[1], round(best[0], 4)))
            continue
        lsh.insert(str(index), signature)
        kept_shingles[str(index)] = grams
    return duplicates


def near_duplicate_rate(texts: Sequence[str], threshold: float = NEAR_DUP_THRESHOLD) -> float:
    """Share of non-empty texts that near-duplicate an earlier one."""
    non_empty = [t for t in texts if t.strip()]
    return round(len(find_near_duplicates(non_empty, threshold)) / len(non_empty), 4) if non_empty else 0.0


def diversity_metadata(texts: Sequence[str]) -> dict[str, float]:
    """The diversity block both synthesis assets publish."""
    return {**distinct_metrics(texts), "near_duplicate_rate": near_duplicate_rate(texts)}
