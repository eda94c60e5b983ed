"""quality_checks: the GX runner, the SQL rules and every asset's check, on small tables
with good and bad rows written to a real DuckDB warehouse."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import socket
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from quality_checks import gx_runner
from resources.compute import Compute
from resources.warehouse import Warehouse
from quality_checks.checks import all_asset_checks, all_check_specs, build_asset_checks, evaluate_spec, run_rule
from quality_checks.rules import DEFAULT_BOUNDS, QualityBounds, SqlMetricRule, SqlRowRule
from quality_checks.synthesis import assemble_function_source, distinct_n, parse_error
from quality_checks.decontamination import published_thresholds
from synth_assets.decontamination import contamination_report
from synth_assets.filtering import annotated_sample
from synth_assets.ingest import raw_stack_plus, sources

# ---------------------------------------------------------------------------------------
# Good tables for the whole graph
# ---------------------------------------------------------------------------------------

VOCABULARY = [f"word{i}" for i in range(300)]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def prose(seed: int, words: int = 120) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(VOCABULARY) for _ in range(words))


def raw_docs() -> pl.DataFrame:
    contents = [
        "def add(a, b):\n    return a + b\n",
        "Q: how do I reverse a list?\nA: use reversed(xs) or xs[::-1]\n",
        "import math\n\nprint(math.pi)\n",
    ]
    return pl.DataFrame(
        {
            "doc_id": [sha(c) for c in contents],
            "source": ["the_stack", "stackoverflow", "the_stack"],
            "origin": ["a.py", "so/1", "b.py"],
            "repo": ["r/a", None, "r/b"],
            "license": ["mit", "cc-by-sa", "mit"],
            "content": contents,
            "n_chars": [len(c) for c in contents],
            "n_lines": [c.count("\n") for c in contents],
            "n_tokens": [len(c.split()) for c in contents],
            "parses_as_python": [True, False, True],
        }
    )


EXERCISES = [
    ("is_even", 'def is_even(n: int) -> bool:\n    """Return True if n is even."""\n', "    return n % 2 == 0\n"),
    ("square", 'def square(x: float) -> float:\n    """Return x squared."""\n', "    return x * x\n"),
    ("first_word", 'def first_word(s: str) -> str:\n    """Return the first word of s."""\n', "    return s.split()[0]\n"),
]


def exercise_rows(items=EXERCISES, with_source: bool = True) -> pl.DataFrame:
    """Rows shaped like exercises.EXERCISE_SCHEMA (the columns the checks read)."""
    return pl.DataFrame(
        {
            "exercise_id": [sha(ex + sol)[:16] for _, ex, sol in items],
            "function_name": [name for name, _, _ in items],
            "exercise": [ex for _, ex, _ in items],
            "solution": [sol for _, _, sol in items],
            "source": [ex + sol if with_source else None for _, ex, sol in items],
            "tests": [["assert True"]] * len(items),
            "passed": [True] * len(items),
        },
        schema_overrides={"source": pl.String},
    )


def report_rows(exercise_ids, verdicts, reasons, **scores) -> pl.DataFrame:
    """contamination_report rows (decontaminate.REPORT_SCHEMA); unspecified signals are
    the clean defaults (no task matched, zero scores)."""
    n = len(exercise_ids)
    columns = {
        "exercise_id": exercise_ids,
        "ngram_task_id": [None] * n,
        "max_ngram_overlap": [0.0] * n,
        "longest_shared_ngram": [0] * n,
        "minhash_task_id": [None] * n,
        "minhash_jaccard": [0.0] * n,
        "embedding_task_id": [None] * n,
        "embedding_cosine": [None] * n,
        "ast_task_id": [None] * n,
        "ast_match_rate": [None] * n,
        "functional_task_id": [None] * n,
        "functional_pass_rate": [None] * n,
        "judge_task_id": [None] * n,
        "judge_verdict": [None] * n,
        "judge_rationale": [None] * n,
        "verdict": verdicts,
        "reason": reasons,
    }
    columns.update(scores)
    return pl.DataFrame(
        columns,
        schema_overrides={
            "ngram_task_id": pl.String, "minhash_task_id": pl.String, "embedding_task_id": pl.String,
            "ast_task_id": pl.String, "embedding_cosine": pl.Float64, "ast_match_rate": pl.Float64,
            "max_ngram_overlap": pl.Float64, "minhash_jaccard": pl.Float64,
            "functional_task_id": pl.String, "functional_pass_rate": pl.Float64,
            "judge_task_id": pl.String, "judge_verdict": pl.String, "judge_rationale": pl.String,
        },
    )


def write_good_shards(warehouse, docs: pl.DataFrame) -> None:
    """One stored corpus shard holding the good raw_stack_plus documents, and their scores."""
    n = docs.height
    warehouse.write_table("corpus_documents", docs.select("doc_id", "source", "origin", "content").with_columns(
        shard=pl.lit("s:0"), seq=pl.int_range(n, dtype=pl.Int64)))
    warehouse.write_table("corpus_rejects", pl.DataFrame(
        {"shard": ["s:0"], "source": ["the_stack"], "origin": ["empty.py"], "reason": ["empty"], "detail": ["0 bytes"]}))
    warehouse.write_table("corpus_signatures", pl.DataFrame(
        {"shard": ["s:0"] * n, "doc_id": docs["doc_id"], "n_chars": [10] * n}))
    warehouse.write_table("corpus_shard_manifest", pl.DataFrame(
        {"shard": ["s:0"], "source": ["the_stack"], "fingerprint": ["f"], "documents": [n], "rejected": [1]}))
    warehouse.write_table("corpus_scores", pl.DataFrame(
        {"shard": ["s:0"] * n, "doc_id": docs["doc_id"], "classifier_version": ["clf-aaaa1111"] * n,
         "quality_score": [0.1, 0.9, None][:n] + [0.5] * max(0, n - 3)}))


def write_good_graph(warehouse) -> None:
    docs = raw_docs()
    warehouse.write_table("raw_stack_plus", docs)
    near = "def add(a, b):\n    return a+b\n"
    warehouse.write_table(
        "dedup_removed",
        pl.DataFrame(
            {
                "doc_id": [docs["doc_id"][0], sha(near)],
                "near_duplicate_of": [docs["doc_id"][0], docs["doc_id"][0]],
                "jaccard": [1.0, 0.91],
                "reason": ["exact_duplicate", "near_duplicate"],
                "source": ["the_stack", "the_stack"],
                "origin": ["copy/a.py", "c.py"],
                "duplicate_of_origin": ["a.py", "a.py"],
            }
        ),
    )
    write_good_shards(warehouse, docs)
    warehouse.write_table(
        "annotated_sample",
        pl.DataFrame(
            {
                "doc_id": docs["doc_id"].to_list(),
                "educational_score": [0, 5, None],
                "rationale": ["none", "great", None],
                "label": [False, True, None],
                "status": ["ok", "ok", "error"],
                "error": [None, None, "timeout"],
            },
            schema_overrides={"educational_score": pl.Int64},
        ),
    )
    warehouse.write_table(
        "quality_classifier_versions",
        pl.DataFrame(
            {
                "classifier_version": ["clf-old", "clf-aaaa1111"],
                "feature_set": ["hashed_ngrams", "tfidf"],
                "artefact_path": ["/tmp/old.joblib", "/tmp/clf.joblib"],
                "training_data_hash": ["abc", "abd"],
                "metrics_json": [json.dumps({"f1": 0.4}), json.dumps({"f1": 0.8, "baseline_f1": 0.5})],
                # history: an older version that lost to the baseline does not matter
                "beats_baseline": [False, True],
                "created_at": [datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)],
            }
        ),
    )
    warehouse.write_table(
        "filtered_textbook",
        pl.DataFrame(
            {"doc_id": docs["doc_id"].to_list()[:2], "quality_score": [0.7, 1.0], "classifier_version": ["clf-aaaa1111"] * 2}
        ),
    )
    warehouse.write_table(
        "textbook_prompts",
        pl.DataFrame(
            {
                "prompt_id": ["p1", "p2", "p3"],
                "topic": ["lists", "loops", "strings"],
                "subtopic": ["slicing", "while", "format"],
                "audience": ["beginner", "beginner", "expert"],
            }
        ),
    )
    warehouse.write_table(
        "synthetic_textbook",
        pl.DataFrame(
            {
                "section_id": ["s1", "s2", "s3"],
                "prompt_id": ["p1", "p2", "p3"],
                "text": [prose(i) for i in range(3)],
                "code_blocks_parse": [True, True, False],
            }
        ),
    )
    exercises = exercise_rows()
    warehouse.write_table("code_exercises", exercises)
    warehouse.write_table(
        "contamination_report",
        report_rows(
            exercises["exercise_id"].to_list(),
            ["clean", "clean", "contaminated"],
            ["ngram 0.00/0tok", "ngram 0.00/0tok", "max_ngram_overlap 1.00 >= 0.0 vs HumanEval/23"],
            ngram_task_id=[None, None, "HumanEval/23"],
            max_ngram_overlap=[0.0, 0.0, 1.0],
            minhash_task_id=["HumanEval/1", None, None],
            minhash_jaccard=[0.3, 0.0, 0.0],  # a near miss stays below 0.5
        ),
    )
    warehouse.write_table("decontaminated_exercises", exercises.head(2))
    warehouse.write_table(
        "cost_report",
        pl.DataFrame(
            {
                "asset_key": ["annotated_sample", "synthetic_textbook"],
                "calls": [10, 4], "cache_hits": [2, 0], "failed_calls": [1, 0],
                "prompt_tokens": [1000, 400], "completion_tokens": [200, 900], "cached_tokens": [0, 0],
                "cost_usd": [0.01, 0.02], "saved_usd": [0.002, 0.0], "no_cache_cost_usd": [0.012, 0.02],
                "unknown_price_calls": [0, 0],
            }
        ),
    )
    warehouse.write_table(
        "training_data_release",
        pl.DataFrame(
            {
                "config_name": ["textbook", "exercises"],
                "source_table": ["synthetic_textbook", "decontaminated_exercises"],
                "rows": [3, 2],
                "parquet_sha256": [sha("a"), sha("b")],
                "rows_left_out": [0, 1],
                "left_out_reason": [None, "sandbox tests failed"],
            }
        ),
    )
    warehouse.write_table(
        "personas",
        pl.DataFrame(
            {
                "persona_id": ["p-1", "p-2"],
                "persona": ["a retired teacher who tutors maths", "her grandson, who is learning Python"],
                "source": ["catalog", "relation:p-1"],
                "hop": [0, 1],
                "chain": [["a retired teacher who tutors maths"],
                          ["a retired teacher who tutors maths", "her grandson, who is learning Python"]],
            }
        ),
    )
    warehouse.write_table(
        "case2code",
        pl.DataFrame(
            {
                "case_id": ["c-1"],
                "program": ["def double(x):\n    return 2 * x\n"],
                "inputs": [["1", "2", "3"]],
                "outputs": [["2", "4", "6"]],
                "n_pairs": [3],
                "prompt": ["double(1) == 2; double(2) == 4. Write the function."],
                "template": ["pairs_then_ask"],
                "shown_pairs": [2],
            }
        ),
    )
    write_good_instructions(warehouse)


GOOD_INSTRUCTIONS = [
    "Write a function that reverses the words of a sentence.",
    "Explain when a Python tuple is preferable to a list.",
    "Classify whether the given integer is prime or composite.",
    "Convert a temperature in Celsius to Fahrenheit and round it.",
]


def write_good_instructions(warehouse) -> None:
    """The four instruction tables, the judge's verdicts and the HumanEval report on them."""
    for table, method in (("self_instruct", "self_instruct"), ("alpaca_instructions", "alpaca"), ("self_qa", "self_qa"),
                          ("evol_instruct", "evol_instruct")):
        ids = [f"{table}-{n}" for n in range(len(GOOD_INSTRUCTIONS))]
        frame = pl.DataFrame({
            "instruction_id": ids, "method": [method] * len(ids), "instruction": GOOD_INSTRUCTIONS,
            "input": ["", "", "7", "21.5"], "output": ["def f(s):\n    return ' '.join(s.split()[::-1])\n",
                                                       "When it should not change.", "prime", "70.7"],
        })
        if table == "self_qa":
            frame = frame.with_columns(pl.lit("doc1").alias("source_doc_id"))
        warehouse.write_table(table, frame)
    judged = [(table, f"{table}-{n}") for table in ("self_instruct", "alpaca_instructions", "self_qa", "evol_instruct")
              for n in range(len(GOOD_INSTRUCTIONS))] + [("synthetic_textbook", "s-1")]
    scores = [5, 4, 2, None] * 4 + [4]
    warehouse.write_table("llm_judge", pl.DataFrame({
        "dataset": [d for d, _ in judged], "judged_id": [i for _, i in judged], "score": scores,
        "threshold": [4.0] * len(judged), "kept": [s is not None and s >= 4 for s in scores],
        "reason": [None if s is not None and s >= 4 else ("judge_failed: llm_error" if s is None else f"below_threshold: score {s} < 4")
                   for s in scores],
    }, schema_overrides={"score": pl.Int64, "reason": pl.Utf8}))
    warehouse.write_table("instructions_contamination_report", pl.DataFrame({
        "dataset": ["self_instruct", "self_instruct"], "instruction_id": ["self_instruct-0", "self_instruct-1"],
        "fired_signals": [["ngram"], []], "verdict": ["contaminated", "clean"],
        "reason": ["ngram 1.00 >= 0.5 (HumanEval/0)", "below every threshold"],
    }))
    write_synthesis_report(warehouse, items=[("case2code", "c-1"), ("personas", "p-1"), ("personas", "p-2")])


def write_synthesis_report(warehouse, items, verdict="clean", reason="below every threshold"):
    warehouse.write_table("synthesis_contamination_report", pl.DataFrame({
        "source_table": [t for t, _ in items], "item_id": [i for _, i in items],
        "verdict": [verdict] * len(items), "reason": [reason] * len(items),
    }))


def test_synthesis_contamination_report_flags_unjudged_items_and_missing_reasons(graph):
    warehouse = graph
    write_synthesis_report(warehouse, items=[("case2code", "c-1"), ("personas", "p-1")], reason="")
    result = run(warehouse, "synthesis_contamination_report_integrity")
    assert not result.passed and result.severity == dg.AssetCheckSeverity.ERROR
    assert set(failing(result)) == {"verdict_known_with_reason", "every_personas_row_judged"}
    assert "p-2" in md(result, "offending_rows")


SPECS = {spec.name: spec for spec in all_check_specs()}


@pytest.fixture
def graph(tmp_path) -> Warehouse:
    """A warehouse holding a good table for every asset (this test's own, which it may spoil;
    a lake's catalog records its data path, so it is written afresh rather than copied)."""
    warehouse = Warehouse(path=str(tmp_path / "graph"))
    write_good_graph(warehouse)
    return warehouse


def run(warehouse, name: str, bounds: QualityBounds = DEFAULT_BOUNDS) -> dg.AssetCheckResult:
    spec = {s.name: s for s in all_check_specs(bounds)}[name]
    return evaluate_spec(warehouse, spec, bounds)


def failing(result: dg.AssetCheckResult) -> list[str]:
    value = result.metadata.get("failing_expectation_names")
    return list(value.value) if value is not None else []


def md(result: dg.AssetCheckResult, key: str) -> str:
    return result.metadata[key].value


# ---------------------------------------------------------------------------------------
# GX runner
# ---------------------------------------------------------------------------------------


def test_gx_analytics_is_off_and_nothing_reaches_the_network(monkeypatch, graph):
    attempts: list[object] = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)

    gx = gx_runner.import_gx()
    context = gx_runner.ephemeral_context()
    assert os.environ["GX_ANALYTICS_ENABLED"] == "false"
    assert context.config.analytics_enabled is False
    assert context.variables.analytics_enabled is False
    suite = gx.ExpectationSuite(name="net", expectations=[gx.expectations.ExpectColumnValuesToNotBeNull(column="a")])
    result = gx_runner.validate_frame(pl.DataFrame({"a": [1, 2]}), suite, "a")
    assert result.success and result.rows_validated == 2
    # a whole check (DuckDB + GX) too
    assert evaluate_spec(graph, SPECS["synthetic_textbook_quality_floors"]).passed
    assert attempts == []


def test_validate_frame_names_failures_with_observed_values_and_offending_ids():
    gx = gx_runner.import_gx()
    e = gx.expectations
    suite = gx.ExpectationSuite(
        name="scores",
        expectations=[
            e.ExpectColumnValuesToBeBetween(column="score", min_value=0, max_value=5),
            e.ExpectColumnValuesToNotBeNull(column="doc_id"),
            e.ExpectColumnToExist(column="missing_column"),
        ],
    )
    frame = pl.DataFrame({"doc_id": ["a", "b", "c", "d"], "score": [1, 7, None, -1]})
    result = gx_runner.validate_frame(frame, suite, "doc_id")
    assert not result.success
    by_name = {o.name: o for o in result.outcomes}
    between = by_name["expect_column_values_to_be_between(score, max_value=5.0, min_value=0.0)"]
    assert not between.success and between.unexpected_count == 2
    assert between.observed == "2 unexpected of 4"
    assert {(r["doc_id"], r["score"]) for r in between.offending_rows} == {("b", 7), ("d", -1)}
    assert by_name["expect_column_values_to_not_be_null(doc_id)"].success
    assert not by_name["expect_column_to_exist(missing_column)"].success
    assert [o.name for o in result.failures] == [between.name, "expect_column_to_exist(missing_column)"]


def test_sql_rules_count_offenders_compare_metrics_and_report_errors(warehouse):
    warehouse.write_table("t", pl.DataFrame({"id": ["a", "a", "b", None], "x": [1, 2, 3, 4]}))
    with warehouse.connect() as conn:
        check_sql_rules(conn)


def check_sql_rules(warehouse):
    dup = run_rule(warehouse, SqlRowRule("id_unique", "SELECT id, count(*) AS n FROM {table} GROUP BY id HAVING n > 1"), "t")
    assert not dup.success and dup.unexpected_count == 1 and dup.offending_rows == [{"id": "a", "n": 2}]
    ok = run_rule(warehouse, SqlRowRule("x_positive", "SELECT * FROM {table} WHERE x <= 0"), "t")
    assert ok.success and ok.observed == "0 offending rows"
    ratio = run_rule(warehouse, SqlMetricRule("distinct", "SELECT count(DISTINCT id) / count(*) FROM {table}", 0.8), "t")
    assert not ratio.success and ratio.observed == "0.5000 (expected >= 0.8)"
    broken = run_rule(warehouse, SqlRowRule("no_col", "SELECT * FROM {table} WHERE nope > 1"), "t")
    assert not broken.success and "nope" in broken.error and broken.observed.startswith("error: BinderException")


def test_distinct_n_and_function_assembly():
    assert distinct_n(["a b a b", "a b"], 2) == (2 / 4, 4)  # bigrams: ab ba ab | ab
    assert distinct_n([""], 2) == (None, 0)
    header = 'def f(x):\n    """Doc."""\n'
    assert assemble_function_source(header, "    return x\n") == header + "    return x\n"
    whole = "def f(x):\n    return x\n"
    assert assemble_function_source(header, whole) == whole
    assert parse_error(assemble_function_source(header, "    return x\n")) is None
    assert parse_error(assemble_function_source(header, "    return (x\n")).startswith("SyntaxError")


# ---------------------------------------------------------------------------------------
# Every asset's checks on good data, then on bad rows
# ---------------------------------------------------------------------------------------


def test_every_check_passes_on_a_good_graph(graph):
    warehouse = graph
    for spec in all_check_specs():
        result = evaluate_spec(warehouse, spec)
        assert result.passed, (spec.name, md(result, "failing_expectations"), md(result, "offending_rows"))
        assert result.severity == (dg.AssetCheckSeverity.ERROR if spec.blocking else dg.AssetCheckSeverity.WARN)
        assert result.metadata["rules_failed"].value == 0
        assert result.metadata["rows_in_table"].value > 0
        if spec.gx_suite is not None:
            assert result.metadata["gx_rows_validated"].value == result.metadata["rows_in_table"].value
            assert result.metadata["gx_sampled"].value is False


def test_raw_stack_plus_flags_duplicates_empty_content_and_unknown_source(graph):
    warehouse = graph
    docs = raw_docs()
    bad = pl.concat([docs, docs.head(1)]).with_columns(
        pl.when(pl.col("origin") == "so/1").then(pl.lit("github_gists")).otherwise(pl.col("source")).alias("source"),
        pl.when(pl.col("origin") == "b.py").then(pl.lit("  ")).otherwise(pl.col("content")).alias("content"),
    )
    warehouse.write_table("raw_stack_plus", bad)
    result = run(warehouse, "raw_stack_plus_integrity")
    assert not result.passed and result.severity == dg.AssetCheckSeverity.ERROR
    names = failing(result)
    assert set(names) == {"doc_id_unique", "content_non_empty", "n_chars_positive_and_matches_content"}
    assert docs["doc_id"][0] in md(result, "offending_rows")
    assert result.metadata["gx_rows_validated"].value == 4
    sources = run(warehouse, "raw_stack_plus_quality_floors")
    assert not sources.passed and sources.severity == dg.AssetCheckSeverity.WARN
    assert set(failing(sources)) == {
        "source_known",
        "expect_column_values_to_be_in_set(source, value_set=['stdlib', 'python_tree', 'the_stack', 'stackoverflow'])",
    }
    assert "| github_gists | 1 |" in md(sources, "offending_rows")


def test_dedup_removed_must_point_at_a_kept_document(graph):
    warehouse = graph
    kept = raw_docs()["doc_id"]
    warehouse.write_table(
        "dedup_removed",
        pl.DataFrame(
            {
                "doc_id": ["f" * 16, kept[1], kept[2], kept[2]],
                "near_duplicate_of": ["0" * 16, kept[0], kept[0], kept[0]],
                "jaccard": [0.95, 0.8, 1.4, 1.4],
                "reason": ["near_duplicate", "near_duplicate", "exact_duplicate", "exact_duplicate"],
                "source": ["the_stack"] * 4,
                "origin": ["x.py", "y.py", "z.py", "z.py"],
            }
        ),
    )
    result = run(warehouse, "dedup_removed_integrity")
    names = failing(result)
    assert {
        "near_duplicate_of_is_kept",
        "near_duplicate_not_kept",
        "exact_duplicate_shares_doc_id",
        "doc_id_source_origin_unique",
    } <= set(names)
    assert any(n.startswith("expect_column_values_to_be_between(jaccard") for n in names)
    offending = md(result, "offending_rows")
    assert "0" * 16 in offending and f"| {kept[2]} | the_stack | z.py | 2 |" in offending


def test_annotated_scores_out_of_range_block(graph):
    warehouse = graph
    warehouse.write_table(
        "annotated_sample",
        pl.DataFrame(
            {
                "doc_id": ["d1", "d2", "d2", "d4"],
                "educational_score": [3, 9, 1, None],
                "status": ["ok", "ok", "ok", "ok"],
                "error": [None, None, None, None],
            }
        ),
    )
    result = run(warehouse, "annotated_sample_integrity")
    assert not result.passed
    names = failing(result)
    assert {"doc_id_unique", "educational_score_in_range", "ok_rows_have_a_score"} <= set(names)
    assert "expect_column_values_to_be_between(educational_score, max_value=5.0, min_value=0.0)" in names
    assert "| d2 | 9 |" in md(result, "offending_rows")
    assert "1 unexpected of 4" in md(result, "failing_expectations")


def test_classifier_must_beat_its_baseline(graph):
    warehouse = graph
    warehouse.write_table(
        "quality_classifier_versions",
        pl.DataFrame(
            {
                "classifier_version": ["clf-good", "clf-newest", "clf-broken"],
                "metrics_json": [json.dumps({"f1": 0.9}), json.dumps({"f1": 0.4}), "{not json"],
                "beats_baseline": [True, False, True],
                "created_at": [datetime(2026, 1, d, tzinfo=UTC) for d in (1, 3, 2)],
            }
        ),
    )
    integrity = run(warehouse, "quality_classifier_integrity")
    assert not integrity.passed and integrity.severity == dg.AssetCheckSeverity.ERROR
    assert set(failing(integrity)) == {"metrics_json_is_json"}
    assert "| clf-broken |" in md(integrity, "offending_rows")
    # Losing to the baseline is a warning shown with the metrics, not a block.
    floors = run(warehouse, "quality_classifier_quality_floors")
    assert not floors.passed and floors.severity == dg.AssetCheckSeverity.WARN
    assert set(failing(floors)) == {"newest_classifier_beats_baseline"}
    assert floors.metadata["observed"].value["newest_classifier_beats_baseline"] == "newest clf-newest: beats_baseline=False"
    offending = md(floors, "offending_rows")
    assert "| clf-newest | False |" in offending and "clf-good" not in offending


def test_filtered_textbook_needs_version_and_unit_score(graph):
    warehouse = graph
    warehouse.write_table(
        "filtered_textbook",
        pl.DataFrame(
            {"doc_id": ["a", "b", "c"], "quality_score": [0.5, 1.5, 0.2], "classifier_version": ["clf-aaaa1111", "v9", None]}
        ),
    )
    result = run(warehouse, "filtered_textbook_integrity")
    assert {"quality_score_in_unit_interval", "classifier_version_present", "classifier_version_is_recorded"} <= set(
        failing(result)
    )
    offending = md(result, "offending_rows")
    assert "| b | 1.5 |" in offending and "| v9 | 1 |" in offending


def test_textbook_length_and_diversity_are_warnings(graph):
    warehouse = graph
    repeated = "the same sentence again " * 40
    warehouse.write_table(
        "synthetic_textbook",
        pl.DataFrame(
            {
                "section_id": ["s1", "s2", "s3"],
                "prompt_id": ["p1"] * 3,
                "text": [repeated, repeated, "short"],
                "code_blocks_parse": [False, False, True],
            }
        ),
    )
    integrity = run(warehouse, "synthetic_textbook_integrity")
    assert integrity.passed  # unique ids, non-empty text
    floors = run(warehouse, "synthetic_textbook_quality_floors")
    assert not floors.passed and floors.severity == dg.AssetCheckSeverity.WARN
    assert set(failing(floors)) == {
        "text_distinct_2",
        "code_blocks_parse_rate",
        "expect_column_value_lengths_to_be_between(text, max_value=12000, min_value=400)",
    }
    assert floors.metadata["observed"].value["code_blocks_parse_rate"] == f"{1 / 3:.4f} (expected >= 0.5)"
    assert "| s3 | short |" in md(floors, "offending_rows")
    observed = floors.metadata["observed"].value["text_distinct_2"]
    assert observed == f"{4 / 318:.4f} over 318 bigrams (floor 0.35)"  # 2 x 159 bigrams, 4 distinct
    looser = QualityBounds(textbook_distinct2_floor=0.0, textbook_min_chars=1, textbook_code_parse_floor=0.3)
    assert run(warehouse, "synthetic_textbook_quality_floors", looser).passed


def test_code_exercises_must_parse_and_vary(graph):
    warehouse = graph
    broken = [*EXERCISES, ("square", 'def square(x):\n    """Again."""\n', "    return (x *\n")]
    warehouse.write_table("code_exercises", exercise_rows(broken))
    result = run(warehouse, "code_exercises_integrity")
    assert not result.passed and failing(result) == ["every_function_parses"]
    assert "SyntaxError" in md(result, "offending_rows")
    assert result.metadata["observed"].value["every_function_parses"] == "1 of 4 do not parse"
    warehouse.write_table("code_exercises", exercise_rows(broken, with_source=False))  # exercise + solution
    assert failing(run(warehouse, "code_exercises_integrity")) == ["every_function_parses"]
    warehouse.write_table("code_exercises", exercise_rows(EXERCISES, with_source=False))
    assert run(warehouse, "code_exercises_integrity").passed
    warehouse.write_table("code_exercises", exercise_rows([EXERCISES[0]] * 1 + [("is_even", "def is_even(n):\n", "    return not n % 2\n")]))
    floors = run(warehouse, "code_exercises_quality_floors")
    assert not floors.passed and floors.severity == dg.AssetCheckSeverity.WARN
    assert floors.metadata["observed"].value["distinct_function_name_ratio"] == "0.5000 (expected >= 0.6)"


def test_decontaminated_exercises_hold_nothing_contaminated(graph):
    warehouse = graph
    exercises = exercise_rows()
    warehouse.write_table("decontaminated_exercises", exercises)  # includes the contaminated one
    warehouse.write_table(
        "contamination_report",
        report_rows(
            exercises["exercise_id"].to_list(),
            ["clean", "clean", "contaminated"],
            ["ngram 0.00/0tok", "mislabelled clean", "max_ngram_overlap 1.00 >= 0.0 vs HumanEval/2"],
            ngram_task_id=[None, None, "HumanEval/2"],
            max_ngram_overlap=[0.0, 0.0, 1.0],
            minhash_task_id=[None, "HumanEval/7", None],
            minhash_jaccard=[0.0, 0.62, 0.0],
        ),
    )
    result = run(warehouse, "decontaminated_exercises_integrity")
    assert not result.passed and result.severity == dg.AssetCheckSeverity.ERROR
    assert set(failing(result)) == {"report_verdict_clean", "max_ngram_overlap_below_0", "minhash_jaccard_below_0.5"}
    offending = md(result, "offending_rows")
    assert exercises["exercise_id"][2] in offending and "contaminated" in offending
    assert f"| {exercises['exercise_id'][1]} | 0.62 | HumanEval/7 |" in offending  # "clean" yet above 0.5


def test_contamination_report_covers_every_exercise(graph):
    warehouse = graph
    exercises = exercise_rows()
    warehouse.write_table(
        "contamination_report",
        report_rows(exercises["exercise_id"].to_list()[:2], ["clean", "maybe"], ["ngram 0.00/0tok", ""]),
    )
    result = run(warehouse, "contamination_report_integrity")
    assert set(failing(result)) == {
        "every_exercise_judged",
        "non_clean_verdict_has_reason",
        "expect_column_values_to_be_in_set(verdict, value_set=['clean', 'contaminated'])",
    }
    assert exercises["exercise_id"][2] in md(result, "offending_rows")


def test_missing_table_or_column_is_a_clear_failure(warehouse):
    result = run(warehouse, "filtered_textbook_integrity")
    assert not result.passed and "does not exist" in result.metadata["error"].value
    warehouse.write_table("filtered_textbook", pl.DataFrame({"doc_id": ["a"], "quality_score": [0.5]}))
    result = run(warehouse, "filtered_textbook_integrity")
    assert "classifier_version_present" in failing(result)
    assert "classifier_version" in result.metadata["observed"].value["classifier_version_present"]


def test_large_tables_are_validated_on_a_seeded_sample(warehouse):
    n = 400
    contents = [f"print({i})\n" for i in range(n)]
    frame = pl.DataFrame(
        {
            "doc_id": [sha(c) for c in contents],
            "source": ["the_stack"] * n,
            "content": contents,
            "n_chars": [len(c) for c in contents],
            "n_lines": [1] * n,
            "n_tokens": [1] * n,
            "parses_as_python": [True] * n,
        }
    )
    warehouse.write_table("raw_stack_plus", frame)
    bounds = QualityBounds(gx_sample_threshold_rows=100, gx_sample_rows=60, sample_seed=7)
    first = run(warehouse, "raw_stack_plus_integrity", bounds)
    again = run(warehouse, "raw_stack_plus_integrity", bounds)
    assert first.passed
    assert first.metadata["rows_in_table"].value == n
    assert first.metadata["gx_rows_validated"].value == 60 and first.metadata["gx_sampled"].value is True
    assert first.metadata["gx_sample"].value == "reservoir(60 rows), seed 7"
    assert first.metadata["observed"].value == again.metadata["observed"].value


# ---------------------------------------------------------------------------------------
# As Dagster asset checks
# ---------------------------------------------------------------------------------------


def test_all_asset_checks_cover_every_asset_with_blocking_integrity():
    keys = {(key.asset_key.to_user_string(), key.name) for checks in all_asset_checks for key in checks.check_keys}
    assets = {asset for asset, _ in keys}
    assert {
        "raw_stack_plus",
        "annotated_sample",
        "quality_classifier",
        "filtered_textbook",
        "synthetic_textbook",
        "code_exercises",
        "contamination_report",
        "decontaminated_exercises",
        "cost_report",
        "training_data_release",
    } <= assets
    blocking = {spec.name for spec in all_check_specs() if spec.blocking}
    assert all(name.endswith("_integrity") for name in blocking)
    assert {spec.name for spec in all_check_specs() if not spec.blocking} == {
        "raw_stack_plus_quality_floors",
        "quality_classifier_quality_floors",
        "textbook_prompts_quality_floors",
        "synthetic_textbook_quality_floors",
        "code_exercises_quality_floors",
        "decontaminated_exercises_quality_floors",
        "self_instruct_quality_floors",
        "alpaca_instructions_quality_floors",
        "self_qa_quality_floors",
        "evol_instruct_quality_floors",
    }
    for checks in all_asset_checks:
        for spec in checks.check_specs:
            assert spec.blocking == SPECS[spec.name].blocking


def test_checks_run_after_their_asset_in_materialize(warehouse):
    scores = {"value": [2, 4]}

    @dg.asset(name="annotated_sample")
    def annotated_sample_double(warehouse: Warehouse) -> None:
        """A tiny stand-in writer for the annotated_sample table."""
        warehouse.write_table(
            "annotated_sample",
            pl.DataFrame(
                {"doc_id": ["a", "b"], "educational_score": scores["value"], "status": ["ok", "ok"], "error": [None, None]}
            ),
        )

    @dg.asset(deps=["annotated_sample"])
    def downstream() -> None:
        """Stands for quality_classifier: must not run on poisoned labels."""

    checks = build_asset_checks(assets={"annotated_sample"})
    result = dg.materialize([annotated_sample_double, downstream, *checks], resources={"compute": Compute(), "warehouse": warehouse})
    evaluations = result.get_asset_check_evaluations()
    assert [(e.check_name, e.passed) for e in evaluations] == [("annotated_sample_integrity", True)]
    materialized = {e.event_specific_data.materialization.asset_key for e in result.get_asset_materialization_events()}
    assert materialized == {dg.AssetKey("annotated_sample"), dg.AssetKey("downstream")}

    scores["value"] = [2, 7]
    result = dg.materialize(
        [annotated_sample_double, downstream, *checks], resources={"compute": Compute(), "warehouse": warehouse}, raise_on_error=False
    )
    assert not result.success  # the blocking check stopped the run
    materialized = {e.event_specific_data.materialization.asset_key for e in result.get_asset_materialization_events()}
    assert materialized == {dg.AssetKey("annotated_sample")}  # downstream never ran
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert "educational_score_in_range" in evaluation.metadata["failing_expectation_names"].value
    assert "| b | 7 |" in evaluation.metadata["offending_rows"].value


def test_check_definitions_can_be_invoked_directly(graph):
    warehouse = graph
    (check,) = [c for c in all_asset_checks if any(k.name == "filtered_textbook_integrity" for k in c.check_keys)]
    result = check(warehouse=warehouse)
    assert result.passed and result.metadata["rows_in_table"].value == 2


def test_cost_report_release_and_prompt_checks_catch_bad_rows(graph):
    warehouse = graph
    warehouse.write_table(
        "cost_report",
        pl.DataFrame(
            {
                "asset_key": ["annotated_sample", "annotated_sample"],
                "calls": [3, 1], "cache_hits": [5, 0], "failed_calls": [0, 0],
                "prompt_tokens": [1, 1], "completion_tokens": [1, 1], "unknown_price_calls": [0, 0],
                "cost_usd": [-0.5, 0.1], "saved_usd": [0.0, 0.0], "no_cache_cost_usd": [0.0, 0.1],
            }
        ),
    )
    cost = run(warehouse, "cost_report_integrity")
    assert {"asset_key_unique", "cache_hits_within_calls", "expect_column_values_to_be_between(cost_usd, min_value=0.0)"} <= set(
        failing(cost)
    )
    warehouse.write_table(
        "training_data_release",
        pl.DataFrame(
            {"config_name": ["textbook"], "rows": [3], "parquet_sha256": ["not-a-hash"], "rows_left_out": [2], "left_out_reason": [None]},
            schema_overrides={"left_out_reason": pl.String},
        ),
    )
    release = run(warehouse, "training_data_release_integrity")
    assert set(failing(release)) == {
        "rows_left_out_have_reason",
        "expect_column_values_to_match_regex(parquet_sha256, regex=^[0-9a-f]{64}$)",
    }
    warehouse.write_table(
        "textbook_prompts",
        pl.DataFrame({"prompt_id": ["p1", "p2", "p3"], "topic": ["t"] * 3, "subtopic": ["s"] * 3, "audience": ["a"] * 3}),
    )
    prompts = run(warehouse, "textbook_prompts_quality_floors")
    assert not prompts.passed and prompts.severity == dg.AssetCheckSeverity.WARN
    assert prompts.metadata["observed"].value["distinct_slot_ratio"] == f"{1 / 3:.4f} (expected >= 0.5)"
    assert run(warehouse, "textbook_prompts_integrity").passed


# ---------------------------------------------------------------------------------------
# Values an asset defines are read from its module, never copied into a check
# ---------------------------------------------------------------------------------------


def test_checks_follow_the_thresholds_labels_and_tables_their_assets_define(graph, monkeypatch):
    """Change a value in the asset module that defines it and the rebuilt checks judge the
    same rows by the new value; a check holding its own copy would not move."""
    warehouse = graph
    exercises = exercise_rows()
    ids = exercises["exercise_id"].to_list()
    near_miss = {"minhash_task_id": [None, "HumanEval/7", None], "minhash_jaccard": [0.0, 0.62, 0.0]}
    warehouse.write_table("contamination_report", report_rows(ids, ["clean"] * 3, ["below"] * 3, **near_miss))
    warehouse.write_table("decontaminated_exercises", exercises)

    # decontamination threshold: contamination_report.DEFAULT_THRESHOLDS
    assert failing(run(warehouse, "decontaminated_exercises_integrity")) == ["minhash_jaccard_below_0.5"]
    looser = dataclasses.replace(contamination_report.DEFAULT_THRESHOLDS, minhash_jaccard=0.7)
    monkeypatch.setattr(contamination_report, "DEFAULT_THRESHOLDS", looser)
    assert run(warehouse, "decontaminated_exercises_integrity").passed

    # verdict label: contamination_report.CLEAN
    monkeypatch.setattr(contamination_report, "CLEAN", "kept")
    assert failing(run(warehouse, "contamination_report_integrity")) == [
        "expect_column_values_to_be_in_set(verdict, value_set=['kept', 'contaminated'])"
    ]
    assert failing(run(warehouse, "decontaminated_exercises_integrity")) == ["report_verdict_clean"]
    warehouse.write_table("contamination_report", report_rows(ids, ["kept"] * 3, ["below"] * 3, **near_miss))
    assert run(warehouse, "contamination_report_integrity").passed
    assert run(warehouse, "decontaminated_exercises_integrity").passed

    # grading scale: annotated_sample.SCORE_RANGE
    warehouse.write_table(
        "annotated_sample",
        pl.DataFrame({"doc_id": ["d1", "d2"], "educational_score": [3, 9], "status": ["ok", "ok"], "error": [None, None]}),
    )
    assert "educational_score_in_range" in failing(run(warehouse, "annotated_sample_integrity"))
    monkeypatch.setattr(annotated_sample, "SCORE_RANGE", range(0, 11))
    assert run(warehouse, "annotated_sample_integrity").passed

    # source names: sources.SOURCE_KINDS
    docs = raw_docs().with_columns(pl.lit("github_gists").alias("source"))
    warehouse.write_table("raw_stack_plus", docs)
    assert "source_known" in failing(run(warehouse, "raw_stack_plus_quality_floors"))
    monkeypatch.setattr(sources, "SOURCE_KINDS", (*sources.SOURCE_KINDS, "github_gists"))
    assert run(warehouse, "raw_stack_plus_quality_floors").passed

    # table name: raw_stack_plus.RAW_TABLE (dedup_removed's references point at it too)
    warehouse.execute('CREATE TABLE corpus_v2 AS SELECT * FROM "raw_stack_plus"')
    warehouse.execute('DROP TABLE "raw_stack_plus"')
    monkeypatch.setattr(raw_stack_plus, "RAW_TABLE", "corpus_v2")
    renamed = run(warehouse, "corpus_v2_integrity")
    assert renamed.passed and renamed.metadata["table"].value == "corpus_v2"
    assert renamed.metadata["rows_in_table"].value == 3
    assert run(warehouse, "dedup_removed_integrity").passed


def test_decontamination_config_defaults_are_the_thresholds_kept_exercises_are_held_to():
    """The asset's launchpad defaults and its check agree, signal by signal."""
    config_defaults = contamination_report.DecontaminationConfig().thresholds()
    checked = {t.score_column: t.threshold for t in published_thresholds()}
    assert set(checked) == {"max_ngram_overlap", "longest_shared_ngram", "minhash_jaccard", "ast_match_rate",
                            "embedding_cosine", "functional_pass_rate"}
    assert checked == {name: getattr(config_defaults, name) for name in checked}


def test_an_exact_copy_of_a_near_duplicate_points_at_the_survivor_and_passes(tmp_path):
    """Real corpora (a virtualenv's site-packages) have files whose exact copy was also a near
    duplicate of a longer file: the copy then points at the cluster's survivor, which the
    integrity check must accept (it blocked raw_stack_plus before, issue 12)."""
    from synth_assets.ingest.raw_stack_plus import raw_stack_plus

    body = "\n".join(f"def helper_{i}(value):\n    return value * {i} + {i % 7}\n" for i in range(40))
    corpus = tmp_path / "corpus"
    for folder in ("a", "b", "c"):
        (corpus / folder).mkdir(parents=True)
    (corpus / "a" / "short.py").write_text(body)
    (corpus / "b" / "short_copy.py").write_text(body)  # exact copy of the short file
    (corpus / "c" / "longer.py").write_text(body + "\n\ndef one_more(value):\n    return value - 1\n")
    warehouse = Warehouse(path=str(tmp_path / "lake"))
    result = dg.materialize(
        [raw_stack_plus],
        resources={"compute": Compute(), "warehouse": warehouse},
        run_config={"ops": {"raw_stack_plus": {"config": {"sources": [{"kind": "python_tree", "path": str(corpus)}]}}}},
    )
    assert result.success
    removed = warehouse.query("SELECT origin, reason, near_duplicate_of FROM dedup_removed ORDER BY origin")
    kept = warehouse.query("SELECT doc_id, origin FROM raw_stack_plus")
    assert [Path(o).relative_to(corpus).as_posix() for o in kept["origin"]] == ["c/longer.py"]
    survivor = kept["doc_id"][0]
    rows = [(Path(origin).relative_to(corpus).as_posix(), reason, of) for origin, reason, of in removed.rows()]
    assert rows == [("a/short.py", "near_duplicate", survivor), ("b/short_copy.py", "exact_duplicate", survivor)]
    assert run(warehouse, "dedup_removed_integrity").passed


def test_instruction_report_and_judge_integrity_catch_inconsistent_rows(graph):
    warehouse = graph
    warehouse.write_table("instructions_contamination_report", pl.DataFrame({
        "dataset": ["self_instruct", "self_instruct", "nonsense"], "instruction_id": ["a", "b", "c"],
        "fired_signals": [[], ["ngram"], []], "verdict": ["contaminated", "clean", "clean"], "reason": ["x", "y", "z"],
    }))
    result = run(warehouse, "instructions_contamination_report_integrity")
    assert not result.passed and result.severity == dg.AssetCheckSeverity.ERROR
    assert {"contaminated_iff_a_signal_fired", "known_dataset"} <= set(failing(result))
    warehouse.write_table("llm_judge", pl.DataFrame({
        "dataset": ["self_instruct"], "judged_id": ["a"], "score": [2], "threshold": [4.0], "kept": [True], "reason": [None],
    }, schema_overrides={"reason": pl.Utf8}))
    result = run(warehouse, "llm_judge_integrity")
    assert not result.passed and "kept_matches_threshold" in failing(result)
