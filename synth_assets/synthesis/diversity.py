"""How diverse a set of generated texts is, and which of them are near-duplicates.

- distinct-n (Li et al. 2016, "A Diversity-Promoting Objective Function for Neural
  Conversation Models"): distinct n-grams / total n-grams over all outputs, on
  lower-cased word-and-symbol tokens; 1.0 means no n-gram repeats anywhere.
- near-duplicates: the shared MinHash LSH (`synth_assets.common.minhash`) on word 5-gram
  shingles (the shingle size used for documents in phi-1-style dedup pipelines; Lee et
  al. 2022 "Deduplicating Training Data" uses 5-grams, Jaccard 0.8), confirmed with the
  exact Jaccard of the shingle sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from synth_assets.common.minhash import (
    MinHasher,
    MinHashParams,
    exact_jaccard,
    greedy_near_duplicates,
    text_shingle_hashes,
)
from synth_assets.common.tokens import word_and_symbol_tokens

NEAR_DUP_SHINGLE = 5  # Lee et al. 2022: 5-gram word shingles
NEAR_DUP_THRESHOLD = 0.8  # Lee et al. 2022: Jaccard 0.8
NUM_PERM = 128
MINHASH_SEED = 1
# LSH proposes candidates a little below the threshold; the exact Jaccard decides.
LSH_RECALL_MARGIN = 0.1


def lowercase_tokens(text: str) -> list[str]:
    return word_and_symbol_tokens(text.lower())


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams / total n-grams across all texts (0.0 when there are none)."""
    total = 0
    distinct: set[tuple[str, ...]] = set()
    for text in texts:
        tokens = lowercase_tokens(text)
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        total += len(grams)
        distinct.update(grams)
    return len(distinct) / total if total else 0.0


def distinct_metrics(texts: Sequence[str]) -> dict[str, float]:
    """distinct-1/2/3, rounded for metadata."""
    return {f"distinct_{n}": round(distinct_n(texts, n), 4) for n in (1, 2, 3)}


@dataclass(frozen=True)
class NearDuplicate:
    index: int  # position of the dropped text
    near_duplicate_of: int  # position of the kept text it resembles
    jaccard: float


def find_near_duplicates(
    texts: Sequence[str], threshold: float = NEAR_DUP_THRESHOLD, shingle_size: int = NEAR_DUP_SHINGLE
) -> list[NearDuplicate]:
    """Every text whose shingle Jaccard with an earlier *kept* text is >= threshold.
    The first of a group is kept (of equally similar kept texts, the earliest is named);
    empty texts are never matched."""
    params = MinHashParams(
        ngram_size=shingle_size,
        num_perm=NUM_PERM,
        threshold=threshold,
        seed=MINHASH_SEED,
        lsh_threshold=max(threshold - LSH_RECALL_MARGIN, 0.1),
    )
    shingle_sets = [text_shingle_hashes(text, shingle_size, lowercase_tokens) for text in texts]
    signatures = MinHasher(params).signatures_from_hash_sets(shingle_sets)
    distinct = [set(hashes.tolist()) for hashes in shingle_sets]
    found = greedy_near_duplicates(
        [signature if len(hashes) else None for signature, hashes in zip(signatures, shingle_sets)],
        params,
        similarity=lambda index, kept: exact_jaccard(distinct[index], distinct[kept]),
    )
    return [NearDuplicate(index, kept, round(jaccard, 4)) for index, kept, jaccard in found]


def near_duplicate_rate(texts: Sequence[str], threshold: float = NEAR_DUP_THRESHOLD) -> float:
    """Share of non-empty texts that near-duplicate an earlier one."""
    non_empty = [t for t in texts if t.strip()]
    return round(len(find_near_duplicates(non_empty, threshold)) / len(non_empty), 4) if non_empty else 0.0


def diversity_metadata(texts: Sequence[str]) -> dict[str, float]:
    """The diversity block both synthesis assets publish."""
    return {**distinct_metrics(texts), "near_duplicate_rate": near_duplicate_rate(texts)}

