"""The out-of-core near dedup (synth_assets.ingest.near_dedup): signatures stored in the
lake, LSH buckets and candidate pairs in SQL, the Jaccard check in batches, clusters over
the verified edges. Its decisions are compared with the in-memory clustering."""

from __future__ import annotations

import random

import dagster as dg
import numpy as np
import pytest

from quality_checks.checks import all_check_specs, evaluate_spec
from resources.compute import Compute
from synth_assets.common.minhash import LshIndex, MinHasher, band_keys, lsh_bands
from synth_assets.ingest import near_dedup
from synth_assets.ingest.dedup import NearDedupParams, content_hash, near_duplicates_of_texts, normalise_content
from synth_assets.ingest.near_dedup import (
    SIGNATURES_TABLE,
    NearDedupStats,
    connected_components,
    find_near_duplicates,
    greedy_over_edges,
    signature_writer,
)
from synth_assets.ingest.raw_stack_plus import (
    RawStackPlusConfig,
    default_sources,
    document_row,
    raw_stack_plus,
)
from synth_assets.ingest.sources import DEFAULT_EXCLUDE_DIRS, RawDocument, read_source
from tests.fixtures_corpus import near_copy, python_module


def rows_of(texts: list[str]) -> list[dict]:
    return [{"doc_id": content_hash(t), "n_chars": len(t), "content": t} for t in texts]


def sql_near_duplicates(warehouse, texts: list[str], clustering="greedy", batch=7, params=NearDedupParams()):
    stats, lake = NearDedupStats(), warehouse.lake()
    with signature_writer(lake, params, stats) as writer:
        rows = rows_of(texts)
        for first in range(0, len(rows), batch):
            writer.add(rows[first : first + batch])
    return find_near_duplicates(lake, params, stats, clustering), stats


def chain(seed: int = 3) -> dict[str, str]:
    """A ~ B and B ~ C (exact shingle Jaccard 0.80), A and C at 0.63: A longest, then B, then C."""
    rng = random.Random(seed)
    a = [f"token{rng.randrange(10**6)}" for _ in range(400)]
    b = [f"b{i}" for i in range(45)] + a[45:]
    c = b[:355] + [f"c{i}" for i in range(45)]
    return {name: "total = " + " + ".join(tokens) + "\n" for name, tokens in {"a": a, "b": b, "c": c}.items()}


def corpus_with_duplicates() -> list[str]:
    """Distinct modules, near copies of some, near copies of near copies, exact copies
    (some in a later batch), a chain, and a text without tokens."""
    texts = [python_module(seed) for seed in range(30)]
    texts += [near_copy(texts[i]) for i in (1, 4, 9, 16)]
    texts += [near_copy(near_copy(texts[4]))]
    texts += [texts[2], texts[30]]  # exact copies, one of a near copy
    texts += list(chain().values())
    texts += ["+-*/\n"]
    return [normalise_content(t) for t in texts]


def test_band_keys_are_equal_exactly_where_lsh_makes_candidates():
    params = NearDedupParams()
    bands, rows = lsh_bands(params.lsh_threshold, params.num_perm)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**32 - 1, size=params.num_perm, dtype=np.uint32)
    shares_band_3 = rng.integers(0, 2**32 - 1, size=params.num_perm, dtype=np.uint32)
    shares_band_3[3 * rows : 4 * rows] = base[3 * rows : 4 * rows]
    unrelated = rng.integers(0, 2**32 - 1, size=params.num_perm, dtype=np.uint32)
    keys = band_keys(np.stack([base, shares_band_3, unrelated]), bands, rows)
    assert keys.shape == (3, bands) and keys.dtype == np.int64
    assert np.flatnonzero(keys[0] == keys[1]).tolist() == [3]
    assert not np.any(keys[0] == keys[2])
    index = LshIndex(params.lsh_threshold, params.num_perm)
    index.insert("base", base)
    assert index.candidates(shares_band_3) == {"base"} and index.candidates(unrelated) == set()


def test_signatures_and_band_keys_are_stored_in_the_lake_one_row_per_signed_document(warehouse):
    texts = corpus_with_duplicates()
    params = NearDedupParams()
    stats = NearDedupStats()
    with signature_writer(warehouse.lake(), params, stats) as writer:
        writer.add(rows_of(texts))
    stored = warehouse.query(f'SELECT * FROM "{SIGNATURES_TABLE}"')
    distinct = {content_hash(t): t for t in texts if t.strip("+-*/\n")}
    assert sorted(stored["doc_id"].to_list()) == sorted(distinct)  # one batch: copies signed once
    assert stats.documents_without_shingles == 1 and stats.signed_documents == len(distinct)
    row = stored.row(0, named=True)
    signature = MinHasher(params).signatures([distinct[row["doc_id"]]])
    np.testing.assert_array_equal(np.array(row["signature"], dtype=np.uint32), signature[0])
    bands, rows = lsh_bands(params.lsh_threshold, params.num_perm)
    assert row["bands"] == band_keys(signature, bands, rows)[0].tolist()


def test_sql_dedup_makes_the_in_memory_greedy_decisions(warehouse):
    texts = corpus_with_duplicates()
    distinct = {content_hash(t): t for t in texts}
    expected = near_duplicates_of_texts(list(distinct), list(distinct.values()))
    found, stats = sql_near_duplicates(warehouse, texts)
    key = lambda n: (n.doc_id, n.near_duplicate_of, round(n.jaccard, 9))  # noqa: E731
    assert sorted(map(key, found)) == sorted(map(key, expected))
    assert len(found) >= 6  # 4 near copies + 1 second-generation copy + the chain's B
    assert 0 < stats.verified_pairs <= stats.candidate_pairs < stats.candidate_rows  # a pair shares many bands
    assert not warehouse.table_exists(near_dedup.CANDIDATES_TABLE)


def test_greedy_keeps_a_chain_end_components_collapse_the_chain(warehouse):
    texts = list(chain().values())
    ids = dict(zip("abc", map(content_hash, texts)))
    greedy, stats = sql_near_duplicates(warehouse, texts, "greedy")
    assert stats.verified_pairs == 2 and stats.components == 1
    assert [(n.doc_id, n.near_duplicate_of) for n in greedy] == [(ids["b"], ids["a"])]
    components, _ = sql_near_duplicates(warehouse, texts, "components")
    by_doc = {n.doc_id: n for n in components}
    assert set(by_doc) == {ids["b"], ids["c"]} and {n.near_duplicate_of for n in components} == {ids["a"]}
    assert by_doc[ids["b"]].jaccard >= 0.7 > by_doc[ids["c"]].jaccard  # C's own similarity to A, said as it is


def test_clusters_over_edges():
    edges = [("b", "a", 0.8), ("c", "b", 0.9), ("e", "d", 0.75)]
    assert connected_components(["a", "b", "c", "d", "e", "f"], edges) == {
        "a": "a", "b": "a", "c": "a", "d": "d", "e": "d", "f": "f"
    }
    # c visited first and kept; b joins c (0.9 beats nothing kept); a has only b, dropped -> a kept
    removed = greedy_over_edges(["c", "a", "b", "d", "e"], edges)
    assert [(n.doc_id, n.near_duplicate_of, n.jaccard) for n in removed] == [("b", "c", 0.9), ("e", "d", 0.75)]
    # equally similar kept neighbours: the smallest doc_id
    tie = greedy_over_edges(["y", "x", "z"], [("z", "y", 0.8), ("z", "x", 0.8)])
    assert [(n.doc_id, n.near_duplicate_of) for n in tie] == [("z", "x")]


@pytest.mark.parametrize("clustering", ["greedy", "components"])
def test_raw_stack_plus_with_either_clustering_passes_its_integrity_checks(tmp_path, warehouse, clustering):
    tree = tmp_path / "tree"
    tree.mkdir()
    for name, text in chain().items():
        (tree / f"{name}.py").write_text(text)
    (tree / "a_copy.py").write_text(chain()["a"])
    (tree / "c_copy.py").write_text(chain()["c"])
    for i in range(4):
        (tree / f"unique_{i}.py").write_text(python_module(200 + i))
    config = {"sources": [{"kind": "python_tree", "path": str(tree), "name": "tree"}], "batch_docs": 2,
              "near_dedup_clustering": clustering}  # fmt: skip
    result = dg.materialize(
        [raw_stack_plus], resources={"compute": Compute(), "warehouse": warehouse}, run_config=dg.RunConfig(ops={"raw_stack_plus": {"config": config}})
    )
    assert result.success
    removed = warehouse.query("SELECT origin, reason, jaccard FROM dedup_removed ORDER BY origin").rows()
    names = [(origin.rsplit("/", 1)[-1], reason) for origin, reason, _ in removed]
    if clustering == "greedy":
        assert names == [("a_copy.py", "exact_duplicate"), ("b.py", "near_duplicate"), ("c_copy.py", "exact_duplicate")]
    else:
        assert names == [("a_copy.py", "exact_duplicate"), ("b.py", "near_duplicate"), ("c.py", "near_duplicate"),
                         ("c_copy.py", "exact_duplicate")]  # fmt: skip
    for spec in [s for s in all_check_specs() if s.asset == "raw_stack_plus" and s.blocking]:
        assert evaluate_spec(warehouse.read_only(), spec).passed, spec.name
    staging = warehouse.query("SELECT table_name FROM information_schema.tables WHERE table_name LIKE '_staging%'")
    assert staging.height == 0


def test_an_unknown_clustering_fails_naming_the_choices(tmp_path, warehouse):
    (tmp_path / "a.py").write_text("x = 1\n")
    config = {"sources": [{"kind": "python_tree", "path": str(tmp_path)}], "near_dedup_clustering": "louvain"}
    with pytest.raises(dg.Failure, match="greedy, components"):
        dg.materialize(
            [raw_stack_plus], resources={"compute": Compute(), "warehouse": warehouse}, run_config=dg.RunConfig(ops={"raw_stack_plus": {"config": config}})
        )


@pytest.mark.slow
def test_stdlib_duplicate_sets_match_the_in_memory_dedup(warehouse):
    """The default corpus (this interpreter's standard library): the out-of-core dedup
    removes the same documents, pointing at the same survivors, as the in-memory
    clustering it replaced (before: 2 exact + 35 near duplicates of 598 on 3.x)."""
    result = dg.materialize([raw_stack_plus], resources={"compute": Compute(), "warehouse": warehouse})
    assert result.success
    spec = default_sources()[0]
    distinct: dict[str, str] = {}
    for record in read_source(spec.kind, spec.path, "stdlib", max_bytes=RawStackPlusConfig().max_file_bytes,
                              exclude_dirs=DEFAULT_EXCLUDE_DIRS):  # fmt: skip
        if isinstance(record, RawDocument):
            row = document_row(record, 0)
            distinct.setdefault(row["doc_id"], row["content"])
    before = {(n.doc_id, n.near_duplicate_of) for n in near_duplicates_of_texts(list(distinct), list(distinct.values()))}
    after = set(warehouse.query("SELECT doc_id, near_duplicate_of FROM dedup_removed WHERE reason = 'near_duplicate'").rows())
    assert len(before) >= 10
    assert len(before ^ after) <= 0.02 * len(before)
