"""The four decontamination signals, the benchmark loader and the planted-variant recall."""

from __future__ import annotations

import gzip
import json
from collections import Counter

import numpy as np
import pytest

from synth_assets.decontamination.benchmarks import BenchmarkError, load_benchmarks, load_humaneval, read_benchmark_jsonl
import xxhash
from datasketch import MinHash

from synth_assets.common.minhash import token_hashes
from synth_assets.decontamination.benchmark_index import (
    BenchmarkIndex,
    SignalScores,
    Thresholds,
    exercise_source,
    verdict,
)
from synth_assets.decontamination.signals.ast import AstIndex, ast_match_rate, normalised_subtrees
from synth_assets.decontamination.signals.code_document import CodeDocument
from synth_assets.decontamination.signals.embedding import hashed_bag_of_words, nearest_by_embedding
from synth_assets.decontamination.signals.minhash import MinhashIndex, TokenStreams, python_tokens
from synth_assets.decontamination.signals.ngram import (
    NgramConfig,
    NgramIndex,
    NgramMatch,
    all_pairs_ngram_overlap,
    batch_token_hashes,
    ngram_tokens,
    plain_ngram_set,
    rolling_hashes,
    windows_of,
)
from tests.contamination_variants import VARIANTS, make_variant, plant_variants, stdlib_exercises

HUMANEVAL = load_humaneval()


def doc(source: str, key: str = "x") -> CodeDocument:
    return CodeDocument.from_source(key, source)


# ------------------------------------------------------------------------------- benchmarks


def test_humaneval_has_164_problems_with_unique_ids():
    assert len(HUMANEVAL) == 164
    assert len({p.task_id for p in HUMANEVAL}) == 164
    assert HUMANEVAL[0].task_id == "HumanEval/0"
    assert "def has_close_elements" in HUMANEVAL[0].prompt
    assert HUMANEVAL[23].source.strip().endswith("return len(string)")


def test_extra_benchmark_is_loaded_and_errors_name_file_and_line(tmp_path):
    good = tmp_path / "mini.jsonl.gz"
    with gzip.open(good, "wt") as handle:
        handle.write(json.dumps({"task_id": "Mini/0", "prompt": "def f():\n", "canonical_solution": "    return 1\n"}) + "\n")
    problems = load_benchmarks(extra_paths=[str(good)])
    assert len(problems) == 165 and problems[-1].task_id == "Mini/0" and problems[-1].benchmark == "mini"

    with pytest.raises(BenchmarkError, match="not found: .*missing.jsonl"):
        load_benchmarks(extra_paths=[str(tmp_path / "missing.jsonl")])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task_id": "B/0", "prompt": "p", "canonical_solution": "s"}\n{not json\n')
    with pytest.raises(BenchmarkError, match=r"bad.jsonl:2: not valid JSON"):
        read_benchmark_jsonl(bad)
    bad.write_text('{"task_id": "B/0", "prompt": "p"}\n')
    with pytest.raises(BenchmarkError, match="canonical_solution"):
        read_benchmark_jsonl(bad)
    clash = tmp_path / "clash.jsonl"
    clash.write_text(json.dumps({"task_id": "HumanEval/3", "prompt": "p", "canonical_solution": "s"}) + "\n")
    with pytest.raises(BenchmarkError, match="HumanEval/3"):
        load_benchmarks(extra_paths=[str(clash)])


# ------------------------------------------------------------------------------- tokens, sources


def test_python_tokens_normalise_identifiers_and_literals_but_keep_builtins():
    assert python_tokens("Total = len(items) + 42\nname = 'x'") == [
        "total", "=", "len", "(", "items", ")", "+", "42", "name", "=", "'x'"
    ]
    normalised = python_tokens("total = len(items) + 42", normalise_identifiers=True, normalise_literals=True)
    assert normalised == ["id", "=", "len", "(", "id", ")", "+", "lit"]


def test_document_separates_docstring_from_code_and_drops_comments():
    d = doc('def f(a):\n    """Add one to a."""\n    return a + 1  # inc\n')
    assert d.docstring == "Add one to a."
    assert "Add" not in d.code and "inc" not in d.code and "return a + 1" in d.code


def test_exercise_source_assembles_body_or_takes_whole_function():
    exercise = 'def f(a):\n    """Doc."""\n'
    assert exercise_source(exercise, "    return a\n") == exercise + "    return a\n"
    whole = 'def f(a):\n    """Doc."""\n    return a\n'
    assert exercise_source(exercise, whole) == whole
    assert exercise_source(exercise, "    return a\n", code="def g(): pass\n") == "def g(): pass\n"


# ------------------------------------------------------------------------------- n-grams


def test_ngram_index_finds_verbatim_copy_and_longest_shared_run():
    problems = HUMANEVAL[:20]
    index = NgramIndex([p.task_id for p in problems], [doc(p.source) for p in problems])
    match = index.query(doc(problems[12].source))
    assert match.task_id == problems[12].task_id and match.overlap == 1.0
    code_length = len(ngram_tokens(doc(problems[12].source).code))
    assert match.longest_shared == code_length  # the whole code stream is one shared run

    # exactly 20 shared docstring words inside unrelated text: longest run is 20 tokens
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau upsilon".split()
    benchmark = doc('def b():\n    """' + " ".join(["one", "two"] + words + ["three"]) + '"""\n')
    small = NgramIndex(["B/0"], [benchmark], NgramConfig(n=13))
    found = small.query(doc('def e():\n    """' + " ".join(["zz"] + words + ["yy", "ww"]) + '"""\n'))
    assert found.task_id == "B/0" and found.longest_shared == 20
    assert found.overlap == pytest.approx(8 / 11)  # 8 of the problem's 11 docstring 13-grams


def test_ngram_index_agrees_with_all_pairs_loop():
    index = NgramIndex([p.task_id for p in HUMANEVAL], [doc(p.source) for p in HUMANEVAL])
    problem_sets = [set(g for s in index.grams(doc(p.source)) for g in s) for p in HUMANEVAL]
    for problem in HUMANEVAL[::16]:
        variant = make_variant(problem, "literals")
        d = doc(exercise_source(variant.exercise, variant.solution))
        best, overlap = all_pairs_ngram_overlap(set(g for s in index.grams(d) for g in s), problem_sets)
        match = index.query(d)
        if overlap == 0:
            assert match.task_id is None
        else:
            # the index takes the max of docstring and code overlap, never less than the union's
            assert match.overlap >= overlap - 1e-9 and match.task_id is not None


def test_unrelated_code_shares_no_13_gram():
    index = NgramIndex([p.task_id for p in HUMANEVAL], [doc(p.source) for p in HUMANEVAL])
    clean = stdlib_exercises(200, seed=3)
    overlaps = [index.query(doc(e.solution)).overlap for e in clean]
    assert sum(o > 0 for o in overlaps) <= 2


def test_token_streams_normalise_python_tokens_for_minhash():
    d = doc('def f(items, n=2):\n    """Doc words here."""\n    return len(items) + 42 * n  # c\n')
    streams = TokenStreams.from_document(d)
    assert streams.code == python_tokens(d.code)
    assert streams.normalised == python_tokens(d.code, normalise_identifiers=True, normalise_literals=True)
    assert streams.normalised_hashes().tolist() == token_hashes(streams.normalised).tolist()
    assert python_tokens("x = True if None else False") == ["x", "=", "true", "if", "none", "else", "false"]
    assert python_tokens("X = True", normalise_identifiers=True) == ["id", "=", "true"]
    assert streams.normalised[:4] == ["def", "id", "(", "id"] and "len" in streams.normalised


def test_batch_token_hashes_hash_the_plain_tokens_of_each_text():
    texts = ["def f(x_1): return x_1 + 2.5  # hi", "", "Größe = 'ü' ** 2\n\tx", "A b a", "   "]
    assert ngram_tokens(texts[0]) == ["def", "f", "(", "x_1", ")", ":", "return", "x_1", "+", "2", ".", "5", "#", "hi"]
    assert ngram_tokens(texts[2]) == ["größe", "=", "'", "ü", "'", "*", "*", "2", "x"]
    assert ngram_tokens("Doc, words: here!", words_only=True) == ["doc", "words", "here"]
    for words_only in (False, True):
        hashes, counts = batch_token_hashes(texts, seed=7, words_only=words_only)
        tokens = [ngram_tokens(text, words_only) for text in texts]
        assert counts.tolist() == [len(t) for t in tokens]
        # a token hashes the same alone, anywhere in any batch; equal tokens hash equal
        alone = [int(batch_token_hashes([token], seed=7)[0][0]) for text in tokens for token in text]
        assert hashes.tolist() == alone
        assert len(set(alone)) == len({token for text in tokens for token in text})
    assert batch_token_hashes(["a"], 1)[0][0] != batch_token_hashes(["a"], 2)[0][0]  # streams are seeded apart
    # identifiers normalised: user names become one token, builtins and keywords stay
    plain = batch_token_hashes(["total = len(items) + n_2 + 42"], 2)[0]
    normalised = batch_token_hashes(["total = len(items) + n_2 + 42"], 2, normalise_identifiers=True)[0]
    same = plain == normalised
    assert same.tolist() == [False, True, True, True, False, True, True, False, True, True]
    assert len(set(normalised[[0, 4, 7]].tolist())) == 1


def test_rolling_hashes_are_per_window_and_batches_never_cross_streams():
    tokens = "a b c d e a b c x".split()
    hashes = token_hashes(tokens)
    rolled = rolling_hashes(hashes, 3)
    assert len(rolled) == 7 and rolled[0] == rolled[5]  # "a b c" twice
    assert len(set(rolled.tolist())) == 6 and len(rolling_hashes(hashes[:2], 3)) == 0
    streams = [hashes, token_hashes(["q", "r"]), token_hashes("c x a b".split())]
    batched, owner, position = windows_of(np.concatenate(streams), np.array([len(s) for s in streams]), 3)
    expected = [rolling_hashes(s, 3) for s in streams]
    assert batched.tolist() == [g for e in expected for g in e.tolist()]
    assert owner.tolist() == [0] * 7 + [2] * 2 and position.tolist() == list(range(7)) + [0, 1]
    # the window "x a b" spans the end of stream 0 and stream 2 only when concatenated
    assert rolling_hashes(token_hashes(["x", "a", "b"]), 3)[0] in batched  # inside stream 2 itself
    assert rolling_hashes(token_hashes(["c", "x", "q"]), 3)[0] not in batched  # crosses 0 -> 1


def postings_of(index: NgramIndex, problem_docs: list[CodeDocument]) -> tuple[dict, dict]:
    postings: dict[int, list[tuple[int, int, int]]] = {}
    distinct = {}
    for problem_index, problem in enumerate(problem_docs):
        for stream_index, stream in enumerate(index.grams(problem)):
            for position, gram in enumerate(stream):
                postings.setdefault(gram, []).append((problem_index, stream_index, position))
            distinct[problem_index, stream_index] = len(set(stream))
    return postings, distinct


def walk_postings(index: NgramIndex, postings: dict, distinct: dict, d: CodeDocument) -> NgramMatch:
    """The reference the numpy matcher is checked against: a dict n-gram -> occurrences and
    a walk over the exercise's n-grams, extending runs one position at a time."""
    shared: dict[tuple[int, int], set[int]] = {}
    longest: dict[int, int] = {}
    for stream_grams in index.grams(d):
        previous: dict[tuple[int, int, int], int] = {}
        for gram in stream_grams:
            runs = {}
            for problem_index, stream_index, position in postings.get(gram, []):
                shared.setdefault((problem_index, stream_index), set()).add(gram)
                run = runs[problem_index, stream_index, position] = previous.get((problem_index, stream_index, position - 1), 0) + 1
                longest[problem_index] = max(longest.get(problem_index, 0), run)
            previous = runs
    if not shared:
        return NgramMatch(None, 0.0, 0)
    overlaps: dict[int, float] = {}
    for (problem_index, stream_index), grams in shared.items():
        overlaps[problem_index] = max(overlaps.get(problem_index, 0.0), len(grams) / max(distinct[problem_index, stream_index], 1))
    best = max(overlaps, key=lambda i: (overlaps[i], longest[i], -i))
    return NgramMatch(index.task_ids[best], overlaps[best], longest[best] + index.config.n - 1)


def test_batched_ngram_query_equals_the_postings_walk_and_the_plain_loop():
    index = NgramIndex([p.task_id for p in HUMANEVAL], [doc(p.source) for p in HUMANEVAL])
    planted = [make_variant(p, v) for p in HUMANEVAL[::11] for v in ("verbatim", "renamed+reworded", "all")]
    sources = [exercise_source(e.exercise, e.solution) for e in planted + stdlib_exercises(150, seed=5)]
    # repeated n-grams: the same code twice, and a docstring that repeats itself
    sources += [HUMANEVAL[3].source * 2, 'def f():\n    """' + " ".join(["alpha beta gamma"] * 12) + '"""\n']
    docs = [doc(s) for s in sources]
    batched = index.query_batch(docs)
    postings, distinct = postings_of(index, [doc(p.source) for p in HUMANEVAL])
    for d, match in zip(docs, batched):
        expected = walk_postings(index, postings, distinct, d)
        assert match.task_id == expected.task_id and match.longest_shared == expected.longest_shared
        assert match.overlap == pytest.approx(expected.overlap)
        assert index.query(d) == match
    assert sum(m.task_id is not None for m in batched) >= len(HUMANEVAL[::11])  # every verbatim copy at least
    problem_sets = [plain_ngram_set(doc(p.source), 13) for p in HUMANEVAL]
    for d, match in zip(docs, batched):
        _, overlap = all_pairs_ngram_overlap(plain_ngram_set(d, 13), problem_sets)
        assert (overlap > 0) == (match.task_id is not None)
    assert index.query_batch([]) == [] and index.query(doc("x = 1")).task_id is None


# ------------------------------------------------------------------------------- minhash


def test_minhash_is_invariant_to_renaming_and_literals():
    problems = HUMANEVAL[:40]
    index = MinhashIndex([p.task_id for p in problems], [doc(p.source) for p in problems])
    assert index.query(doc(problems[5].source)).jaccard == 1.0
    renamed = make_variant(problems[5], "renamed+reordered+literals")
    literal = make_variant(problems[5], "literals")
    assert index.query(doc(literal.solution)) == index.query(doc(literal.solution))
    assert index.query(doc(literal.solution)).task_id == problems[5].task_id
    assert index.query(doc(literal.solution)).jaccard >= 0.9
    assert index.query(doc(renamed.solution)).task_id == problems[5].task_id
    unrelated = index.query(doc("def g(path):\n    with open(path) as fh:\n        return fh.read().split(',')\n"))
    assert unrelated.jaccard < 0.3


def test_batched_minhash_signatures_equal_datasketch():
    problems = HUMANEVAL[:30]
    index = MinhashIndex([p.task_id for p in problems], [doc(p.source) for p in problems])
    shingle_sets = [index.shingles(doc(p.source)) for p in problems] + [np.empty(0, dtype=np.uint32)]
    index.hasher.block_rows = 64  # force several blocks
    signatures = index.signatures_of(shingle_sets)
    for shingles, signature in zip(shingle_sets, signatures):
        reference = MinHash(num_perm=128, seed=1, hashfunc=int)
        reference.update_batch(shingles.tolist())
        assert np.array_equal(signature, reference.hashvalues)
    assert np.array_equal(signatures[:30], index.signatures)
    matches = index.query_signatures(signatures, np.array([False] * 30 + [True]))
    assert [m.task_id for m in matches[:30]] == [p.task_id for p in problems]
    assert all(m.jaccard == 1.0 for m in matches[:30]) and matches[30].task_id is None


# ------------------------------------------------------------------------------- AST


def test_ast_fingerprint_ignores_names_literals_docstrings_and_statement_order():
    original = 'def f(xs):\n    """Sum."""\n    total = 0\n    count = 0\n    for x in xs:\n        total += x\n        count += 1\n    return total / count\n'
    rewritten = 'def mean(values):\n    """Arithmetic mean of values."""\n    n = 5\n    acc = 7\n    for v in values:\n        n += 3\n        acc += v\n    return acc / n\n'
    assert normalised_subtrees(original) == normalised_subtrees(rewritten)
    different = "def f(xs):\n    return sorted(xs)[len(xs) // 2]\n"
    assert ast_match_rate(normalised_subtrees(original), normalised_subtrees(different)) < 0.3
    assert normalised_subtrees("def f(:\n") is None


def test_ast_index_scores_planted_variants_and_reports_unparseable():
    index = AstIndex([p.task_id for p in HUMANEVAL], [p.source for p in HUMANEVAL])
    for problem in HUMANEVAL[::20]:
        for variant in ("renamed", "reordered", "literals", "all"):
            planted = make_variant(problem, variant)
            match = index.query(planted.solution)
            assert match.match_rate >= 0.9, (problem.task_id, variant, match)
    assert index.query("def broken(:\n    pass").match_rate is None


# ------------------------------------------------------------------------------- embeddings


def test_nearest_by_embedding_handles_failed_rows_and_reports_l2():
    problems = np.array([[1.0, 0.0], [0.0, 2.0], [np.nan, np.nan]], dtype=np.float32)
    exercises = np.array([[3.0, 0.1], [np.nan, 1.0], [0.0, 0.0], [1.0, 1.0]], dtype=np.float32)
    matches = nearest_by_embedding(exercises, problems, ["P/0", "P/1", "P/2"])
    assert matches[0].task_id == "P/0" and matches[0].cosine > 0.99
    assert matches[1].task_id is None and matches[1].cosine is None  # failed embedding
    assert matches[2].cosine is None  # zero vector cannot be normalised
    assert matches[3].cosine == pytest.approx(np.sqrt(0.5)) and matches[3].l2 == pytest.approx(np.sqrt(2 - 2 * np.sqrt(0.5)), rel=1e-5)


def test_hashed_bag_of_words_is_deterministic():
    a, b = hashed_bag_of_words(["return the sum", "return the sum"]), hashed_bag_of_words(["return the sum"])
    assert np.array_equal(a[0], b[0]) and a[0].sum() == 3
    texts = ["Return the SUM of the list", "", "x_1 + y_2 = z", "the the the"]
    expected = np.zeros((4, 16), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in text.lower().replace("+", " ").replace("=", " ").split():
            expected[row, xxhash.xxh32_intdigest(word.encode()) % 16] += 1
    assert np.array_equal(hashed_bag_of_words(texts, dimensions=16, block=3), expected)


# ------------------------------------------------------------------------------- verdict


def test_verdict_names_signal_threshold_and_task():
    scores = SignalScores("e1", ast_task_id="HumanEval/12", ast_match_rate=0.93, minhash_task_id="HumanEval/12", minhash_jaccard=0.2)
    decision, reason, fired = verdict(scores, Thresholds(ast_match_rate=0.85))
    assert decision == "contaminated" and fired == ["ast"]
    assert reason == "ast_match_rate 0.93 >= 0.85 vs HumanEval/12"
    clean = SignalScores("e2", minhash_task_id="HumanEval/1", minhash_jaccard=0.2, ast_task_id="HumanEval/1", ast_match_rate=0.3)
    decision, reason, fired = verdict(clean, Thresholds(use_embedding=False))
    assert decision == "clean" and fired == [] and "ast 0.30" in reason and "minhash 0.20" in reason
    high_embedding = SignalScores("e3", embedding_task_id="HumanEval/2", embedding_cosine=0.99)
    assert verdict(high_embedding, Thresholds(use_embedding=False))[0] == "clean"
    assert verdict(high_embedding, Thresholds(use_embedding=True))[2] == ["embedding"]


# ------------------------------------------------------------------------------- recall / FP


def test_parallel_scoring_gives_the_serial_scores():
    """Worker processes (fork) score chunks; the rows must equal one process's, in order."""
    planted = plant_variants(HUMANEVAL[::8])
    exercises = planted + stdlib_exercises(200, seed=13)
    ids = [e.exercise_id for e in exercises]
    sources = [exercise_source(e.exercise, e.solution) for e in exercises] + ["def broken(:\n    pass\n"]
    ids.append("broken")
    index = BenchmarkIndex([p.task_id for p in HUMANEVAL], [p.source for p in HUMANEVAL])
    serial_timings: dict[str, float] = {}
    serial = index.score(ids, sources, embed=hashed_bag_of_words, workers=1, timings=serial_timings)
    index.parallel_min_exercises = 1
    parallel_timings: dict[str, float] = {}
    parallel = index.score(ids, sources, embed=hashed_bag_of_words, workers=2, chunk_size=64, timings=parallel_timings)
    assert parallel == serial
    assert [r.exercise_id for r in parallel] == ids
    assert parallel[-1].ast_match_rate is None and "does not parse" in parallel[-1].notes[0]
    assert sum(r.ast_match_rate is not None and r.ast_match_rate >= 0.8 for r in parallel) >= len(planted) - 10
    assert set(parallel_timings) >= {"split", "ngram", "minhash", "ast", "embedding", "signals_wall"}




def test_every_planted_variant_is_caught_and_clean_code_survives():
    """All 10 variants of all 164 problems among 1,500 standard-library exercises, with
    the embedding signal off: n-gram + MinHash + AST must carry recall alone."""
    planted = plant_variants(HUMANEVAL)
    clean = stdlib_exercises(1500, seed=7)
    exercises = planted + clean
    index = BenchmarkIndex([p.task_id for p in HUMANEVAL], [p.source for p in HUMANEVAL])
    rows = index.score([e.exercise_id for e in exercises], [exercise_source(e.exercise, e.solution) for e in exercises])
    thresholds = Thresholds(use_embedding=False)
    missed = [(e.variant, e.source_task_id) for e, r in zip(exercises, rows) if e.variant != "clean" and verdict(r, thresholds)[0] == "clean"]
    # Beyond the list: one added statement in a one-line function (HumanEval/23,
    # `return len(string)`) halves its AST and shares no 13-gram; at most that one may slip.
    extra = [m for m in missed if m[0] == "added_statement"]
    missed = [m for m in missed if m[0] != "added_statement"]
    assert len(extra) <= 1, extra
    false_positives = [verdict(r, thresholds)[1] for e, r in zip(exercises, rows) if e.variant == "clean" and verdict(r, thresholds)[0] != "clean"]
    assert missed == []
    assert len(false_positives) / len(clean) < 0.01, false_positives
    # the reason for a planted copy names the problem it was planted from
    by_variant = Counter(e.variant for e in planted)
    assert set(by_variant) == set(VARIANTS) and all(c == 164 for c in by_variant.values())
    first = next(r for e, r in zip(exercises, rows) if e.variant == "all")
    assert planted[0].source_task_id in verdict(rows[0], thresholds)[1]
    assert first.ast_task_id is not None
