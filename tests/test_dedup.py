from __future__ import annotations

import re

import numpy as np
from datasketch import MinHash

from synth_assets.common.minhash import (
    MinHasher,
    bigcode_tokens,
    estimated_jaccard,
    has_shingles,
    shingles,
    text_shingle_hashes,
)
from synth_assets.ingest.dedup import (
    NearDedupParams,
    baseline_minhash,
    cluster_near_duplicates,
    content_hash,
    near_duplicates_of_texts,
    normalise_content,
)
from tests.fixtures_corpus import near_copy, python_module


def test_normalisation_makes_line_ending_and_trailing_space_variants_one_doc_id():
    text = "def f():\n    return 1\n"
    variants = ["\ufeff" + text, text.replace("\n", "\r\n"), "\n\ndef f():   \n    return 1\t\n\n\n"]
    assert {normalise_content(v) for v in variants} == {text}
    assert len({content_hash(normalise_content(v)) for v in variants}) == 1
    assert content_hash(text) != content_hash(text.replace("1", "2"))
    assert len(content_hash(text)) == 16 and re.fullmatch("[0-9a-f]+", content_hash(text))
    assert normalise_content(" \n\t\n") == ""


def test_tokens_are_bigcode_non_alpha_splits_lowercased():
    text = "Déf foo_Bar(x1, y):  return x1+ÿ"
    expected = [t.lower().encode() for t in re.split("[^A-Za-z_0-9]", text) if t]
    assert bigcode_tokens(text) == expected
    assert shingles([b"a", b"b"], 5) == [b"a b"]
    assert shingles(bigcode_tokens("a b c d e f"), 5) == [b"a b c d e", b"b c d e f"]


def test_shingle_hashes_count_distinct_shingles_like_the_textbook_route():
    text = python_module(5)
    distinct = set(shingles(bigcode_tokens(text), 5))
    assert len(set(text_shingle_hashes(text).tolist())) == len(distinct)
    assert text_shingle_hashes("").size == 0
    # short documents get one shingle, different from the same tokens inside a 5-gram
    assert text_shingle_hashes("a b").size == 1


def test_vectorised_signature_equals_datasketch_update_batch():
    params = NearDedupParams(num_perm=64, seed=7)
    hasher = MinHasher(params)
    hashes = text_shingle_hashes(python_module(6))
    reference = MinHash(num_perm=64, seed=7, hashfunc=lambda value: value)
    reference.update_batch(hashes.tolist())
    np.testing.assert_array_equal(hasher.signature_from_hashes(hashes), reference.hashvalues)
    assert hasher.lean_minhash(hasher.signature_from_hashes(hashes)).jaccard(reference) == 1.0


def test_batched_signatures_equal_one_document_at_a_time():
    hasher = MinHasher()
    hasher.block_rows = 300  # force multi-document blocks and split documents
    texts = [python_module(seed, functions=n) for seed, n in ((1, 2), (2, 30), (3, 1), (4, 5), (5, 3))] + [""]
    together = hasher.signatures(texts)
    for text, row in zip(texts, together):
        np.testing.assert_array_equal(row, hasher.signatures([text])[0])
    assert not has_shingles(together[-1]) and has_shingles(together[0])


def test_estimated_jaccard_tracks_the_true_jaccard():
    base = python_module(8, functions=20)
    lines = base.split("\n")
    edited = "\n".join(lines[: len(lines) // 2] + [line.replace("total", "acc") for line in lines[len(lines) // 2 :]])
    a, b = set(shingles(bigcode_tokens(base), 5)), set(shingles(bigcode_tokens(edited), 5))
    true_jaccard = len(a & b) / len(a | b)
    signatures = MinHasher().signatures([base, edited])
    assert abs(estimated_jaccard(*signatures) - true_jaccard) < 0.1


def test_planted_near_duplicates_are_caught_and_distinct_files_kept():
    texts = {
        "long": python_module(1, functions=14),
        "edited": near_copy(python_module(1, functions=14)),
        "other": python_module(2),
        "third": python_module(3),
        "empty1": "+++",
        "empty2": "---",
    }
    removed = near_duplicates_of_texts(list(texts), list(texts.values()))
    assert len(removed) == 1
    [dup] = removed
    # the longer document is the representative
    keep, drop = sorted(["long", "edited"], key=lambda k: -len(texts[k]))
    assert (dup.doc_id, dup.near_duplicate_of) == (drop, keep)
    assert 0.7 <= dup.jaccard < 1.0


def test_clustering_is_deterministic_and_points_at_kept_representatives():
    base = python_module(9, functions=10)
    family = [base, near_copy(base), near_copy(base) + "\n# another edit\n", base.replace("total", "acc", 1)]
    texts = family + [python_module(s) for s in (20, 21, 22)]
    ids = [f"d{i}" for i in range(len(texts))]
    first = near_duplicates_of_texts(ids, texts)
    again = near_duplicates_of_texts(list(reversed(ids)), list(reversed(texts)))
    assert sorted(first, key=lambda d: d.doc_id) == sorted(again, key=lambda d: d.doc_id)
    removed_ids = {d.doc_id for d in first}
    assert len(removed_ids) == 3 and removed_ids <= {"d0", "d1", "d2", "d3"}
    assert {d.near_duplicate_of for d in first}.isdisjoint(removed_ids)


def test_baseline_and_fast_route_make_the_same_decisions():
    base = python_module(30, functions=16)
    texts = [base, near_copy(base), python_module(31), python_module(32), near_copy(python_module(32))]
    ids = [f"d{i}" for i in range(len(texts))]
    params = NearDedupParams()
    baseline = cluster_near_duplicates(ids, [baseline_minhash(t, params) for t in texts], [len(t) for t in texts], params)
    fast = near_duplicates_of_texts(ids, texts, params)
    assert {(d.doc_id, d.near_duplicate_of) for d in baseline} == {(d.doc_id, d.near_duplicate_of) for d in fast}
    assert len(fast) == 2
