"""The shared MinHash (synth_assets/common/minhash.py) and tokens (common/tokens.py)."""

from __future__ import annotations

import numpy as np
import polars as pl
from datasketch import LeanMinHash, MinHash, MinHashLSH

from synth_assets.common.minhash import (
    LshIndex,
    MinHasher,
    MinHashParams,
    exact_jaccard,
    greedy_near_duplicates,
    shingle_hashes,
    text_shingle_hashes,
    token_hashes,
)
from synth_assets.common.tokens import approximate_token_count, approximate_token_count_expr, word_and_symbol_tokens
from tests.fixtures_corpus import near_copy, python_module


def test_word_tokens_hash_like_their_bytes_and_shingle_like_any_tokens():
    assert token_hashes(["déf", "x"]).tolist() == token_hashes(["déf".encode(), b"x"]).tolist()
    words = word_and_symbol_tokens("the quick brown fox jumps")
    by_hand = shingle_hashes(token_hashes(words), 5)
    assert text_shingle_hashes("the quick brown fox jumps", 5, word_and_symbol_tokens).tolist() == by_hand.tolist()
    assert len(shingle_hashes(token_hashes(words), 2)) == 4 and len(shingle_hashes(token_hashes(words), 9)) == 1


def test_lsh_candidates_are_datasketchs():
    params = MinHashParams(num_perm=128)
    hasher = MinHasher(params)
    base = python_module(3, functions=10)
    texts = [base, near_copy(base), python_module(4), base.replace("total", "acc"), near_copy(python_module(4))]
    signatures = hasher.signatures(texts)
    ours = LshIndex(0.5, 128)
    theirs = MinHashLSH(threshold=0.5, num_perm=128, params=(ours.bands, ours.rows))
    for key, signature in enumerate(signatures):
        assert ours.candidates(signature) == set(theirs.query(LeanMinHash(seed=1, hashvalues=signature, scheme="affine32")))
        ours.insert(key, signature)
        theirs.insert(key, LeanMinHash(seed=1, hashvalues=signature, scheme="affine32"))
    assert ours.candidates(signatures[1]) >= {0, 1}


def test_greedy_clustering_names_the_most_similar_kept_text_then_the_smallest_key():
    params = MinHashParams(ngram_size=1, num_perm=128, threshold=0.5, lsh_threshold=0.1)
    sets = [{"a", "b", "c", "d"}, {"a", "b", "c", "e"}, {"a", "b", "c", "d", "e"}, set(), {"x", "y"}]
    signatures = [
        MinHasher(params).signature_from_hashes(shingle_hashes(token_hashes(sorted(s)), 1)) if s else None for s in sets
    ]
    found = greedy_near_duplicates(signatures, params, similarity=lambda i, j: exact_jaccard(sets[i], sets[j]))
    # 1 resembles 0 (3/5); 2 resembles 0 and 1 alike (4/5): the smallest key wins
    assert found == [(1, 0, 0.6), (2, 0, 0.8)]
    reverse_keys = greedy_near_duplicates(
        signatures, params, keys=[5, 4, 3, 2, 1], similarity=lambda i, j: exact_jaccard(sets[i], sets[j])
    )
    assert reverse_keys == [(1, 0, 0.6), (2, 0, 0.8)]  # only 0 is kept when 2 is visited
    in_reverse = greedy_near_duplicates(
        signatures, params, order=[4, 3, 2, 1, 0], similarity=lambda i, j: exact_jaccard(sets[i], sets[j])
    )
    assert in_reverse == [(1, 2, 0.8), (0, 2, 0.8)]


def test_string_token_signatures_equal_datasketch():
    hashes = shingle_hashes(token_hashes(sorted({"data", "analyst", "sql"})), 1)
    reference = MinHash(num_perm=128, seed=1, hashfunc=int)
    reference.update_batch(hashes.tolist())
    signature = MinHasher(MinHashParams(num_perm=128)).signature_from_hashes(hashes)
    assert np.array_equal(signature, reference.hashvalues)


def test_one_approximate_token_count_for_texts_and_columns():
    texts = ["x = f(a, b)", "", "größe += 2.5  # ü", None]
    assert [approximate_token_count(t) for t in texts[:3]] == [8, 0, 8]
    assert word_and_symbol_tokens("größe += 2.5") == ["größe", "+", "=", "2", ".", "5"]
    counted = pl.DataFrame({"text": texts}).select(approximate_token_count_expr("text"))["text"].to_list()
    assert counted == [8, 0, 8, 0]
