"""annotated_sample: seeded stratified sampling, prompt truncation, grading through the
LLM layer against the OpenAI double (one garbage answer is kept as an error row)."""

import hashlib
import json

import dagster as dg
import polars as pl
import pytest

from resources.compute import Compute
from resources.llm import LLMResource
from synth_assets.filtering.annotated_sample import (
    PROMPT_VERSION,
    TRUNCATION_MARKER,
    AnnotateConfig,
    Grade,
    allocate_by_source,
    annotated_sample,
    grading_messages,
    sample_size,
    score_histogram_markdown,
    draw_key,
    sample_in_sql,
    truncate_for_prompt,
)
from tests.openai_double import OpenAIDouble, TEST_KEY_REF


def corpus_frame(counts: dict[str, int]) -> pl.DataFrame:
    rows = []
    for source, n in counts.items():
        for i in range(n):
            content = f"# {source} file {i}\nx = {i}\n"
            rows.append({"doc_id": hashlib.sha256(content.encode()).hexdigest()[:16], "source": source, "content": content})
    return pl.DataFrame(rows)


def raw_stack_plus_frame(contents: list[tuple[str, str]]) -> pl.DataFrame:
    """A small raw_stack_plus table with the contract's columns."""
    rows = []
    for source, content in contents:
        rows.append(
            {
                "doc_id": hashlib.sha256(content.encode()).hexdigest()[:16],
                "source": source,
                "origin": f"{source}/file.py",
                "repo": source,
                "license": "PSF-2.0",
                "content": content,
                "n_chars": len(content),
                "n_lines": content.count("\n") + 1,
                "n_tokens": len(content.split()),
                "parses_as_python": True,
            }
        )
    return pl.DataFrame(rows)


# ----------------------------------------------------------------------------- sampling


def test_sample_size_is_fraction_clamped_to_bounds_and_corpus():
    assert sample_size(10_000, 0.003, 40, 200) == 40  # 30 -> min
    assert sample_size(100_000, 0.003, 40, 200) == 200  # 300 -> max
    assert sample_size(30_000, 0.003, 40, 200) == 90
    assert sample_size(25, 0.003, 40, 200) == 25  # never more than the corpus
    with pytest.raises(ValueError, match="min_docs <= max_docs"):
        sample_size(100, 0.1, 50, 10)


def test_allocation_is_proportional_and_covers_small_sources():
    alloc = allocate_by_source({"stdlib": 900, "examples": 90, "tiny": 10}, 50)
    assert sum(alloc.values()) == 50
    assert alloc["tiny"] >= 1
    assert alloc["stdlib"] > alloc["examples"] > 0
    assert abs(alloc["stdlib"] - 45) <= 1


def stratified_sample(warehouse, docs: pl.DataFrame, fraction, min_docs, max_docs, seed, max_chars=10_000):
    warehouse.write_table("corpus", docs)
    return sample_in_sql(warehouse, "corpus", fraction, min_docs, max_docs, seed, max_chars)[0]


def test_stratified_sample_is_seeded_stratified_and_bounded(warehouse):
    docs = corpus_frame({"stdlib": 400, "examples": 100, "tiny": 3})
    first = stratified_sample(warehouse, docs, fraction=0.1, min_docs=10, max_docs=30, seed=7)
    again = stratified_sample(warehouse, docs.reverse(), fraction=0.1, min_docs=10, max_docs=30, seed=7)
    other = stratified_sample(warehouse, docs, fraction=0.1, min_docs=10, max_docs=30, seed=8)

    assert first.height == 30  # 50 clamped to max_docs
    assert first["doc_id"].to_list() == again["doc_id"].to_list()  # row order does not matter
    assert first["doc_id"].to_list() != other["doc_id"].to_list()
    per_source = dict(first.group_by("source").len().iter_rows())
    assert set(per_source) == {"stdlib", "examples", "tiny"}
    assert per_source["stdlib"] > per_source["examples"] >= per_source["tiny"] >= 1
    assert first["doc_id"].n_unique() == 30
    assert set(first["doc_id"]) <= set(docs["doc_id"])


def test_stratified_sample_of_a_small_corpus_takes_all_of_it(warehouse):
    docs = corpus_frame({"a": 5, "b": 4})
    assert stratified_sample(warehouse, docs, 0.003, 40, 200, seed=0).height == 9


def test_the_sql_sample_is_the_documents_with_the_smallest_draw_keys_per_source(warehouse):
    docs = corpus_frame({"stdlib": 300, "examples": 60})
    sample = stratified_sample(warehouse, docs, fraction=0.1, min_docs=10, max_docs=None, seed=3, max_chars=8)
    alloc = allocate_by_source({"stdlib": 300, "examples": 60}, 36)
    expected = set()
    for source, quota in alloc.items():
        ids = docs.filter(pl.col("source") == source)["doc_id"].to_list()
        expected |= set(sorted(ids, key=lambda d: draw_key(3, d))[:quota])
    assert set(sample["doc_id"]) == expected and sample.height == 36
    # only max_chars + 1 characters of each file come back: enough to know it was cut
    assert sample["content"].str.len_chars().max() == 9


def test_no_hidden_cap_at_phi1_share():
    # phi-1: ~0.3% of ~35M files graded, ~100k; nothing clamps it unless max_docs is set
    assert sample_size(35_000_000, 0.003, 40, None) == 105_000
    assert sample_size(35_000_000, 0.003, 40, 200) == 200


# ------------------------------------------------------------------------------ prompts


def test_truncation_keeps_the_first_characters_and_marks_the_cut():
    long = "".join(f"line_{i} = {i}\n" for i in range(500))
    shown, cut = truncate_for_prompt(long, 300)
    assert cut and shown.startswith(long[:300]) and shown.endswith(TRUNCATION_MARKER)
    assert len(shown) == 300 + len(TRUNCATION_MARKER)
    short, cut_short = truncate_for_prompt("x = 1\n", 300)
    assert short == "x = 1\n" and not cut_short


def test_grading_messages_ask_phi1_question_and_embed_truncated_file():
    long = "def f():\n    return 1\n" * 200
    messages = grading_messages(long, 120)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    user = messages[-1]["content"]
    assert "for a student whose goal is to learn basic coding concepts" in user
    assert long[:120] in user and long[:121] not in user and TRUNCATION_MARKER in user
    # the worked examples are valid answers of both classes, in the schema's field order
    examples = [Grade.model_validate_json(m["content"]) for m in messages if m["role"] == "assistant"]
    assert sorted(g.educational_score >= 3 for g in examples) == [False, True]
    assert messages[2]["content"].startswith('{"rationale"')


def test_grade_schema_rejects_out_of_range_scores():
    assert Grade.model_validate_json('{"educational_score": 4, "rationale": "clear"}').educational_score == 4
    with pytest.raises(ValueError):
        Grade.model_validate_json('{"educational_score": 7, "rationale": "too high"}')
    assert list(Grade.model_json_schema()["properties"]) == ["rationale", "educational_score"]


def test_score_histogram_counts_failed_rows():
    md = score_histogram_markdown([0, 3, 3, None, 5])
    assert "| 3 | 2 |" in md and "| failed | 1 |" in md and "| 1 | 0 |" in md


# ---------------------------------------------------------------------- the asset


TUTORIAL = '''"""Lesson {i}: loops.

We add numbers step by step.
"""


def total_{i}(numbers):
    """Return the sum of numbers."""
    # start from zero and add each number
    result = 0
    for number in numbers:
        result += number
    return result
'''
JUNK = "a{i}=lambda q:[q*{i}for _ in range(9)];b=a{i}(3);c={{k:v for k,v in zip(b,b)}}\n"
GARBAGE_MARKER = "GARBAGE_ME"


def grading_responder(body: dict) -> str:
    """Grades like a reasonable model: docstrings -> 4, minified -> 1; one file gets garbage."""
    user = body["messages"][-1]["content"]
    if GARBAGE_MARKER in user:
        return "I think this file is quite nice, maybe a four?"
    score = 4 if '"""' in user else 1
    return json.dumps({"educational_score": score, "rationale": "docstrings" if score == 4 else "minified"})


def test_annotated_sample_grades_through_llm_layer_and_keeps_failed_rows(warehouse):
    contents = [("tutorials", TUTORIAL.format(i=i)) for i in range(6)]
    contents += [("junk", JUNK.format(i=i)) for i in range(5)]
    contents += [("junk", f"# {GARBAGE_MARKER}\nz=1\n")]
    warehouse.write_table("raw_stack_plus", raw_stack_plus_frame(contents))

    with OpenAIDouble(chat=grading_responder) as server:
        llm = LLMResource(base_url=server.base_url, api_key=TEST_KEY_REF, model="gpt-4o-mini",
                          embedding_model="text-embedding-3-small")
        result = dg.materialize(
            [annotated_sample],
            resources={"compute": Compute(), "warehouse": warehouse, "llm": llm},
            run_config=dg.RunConfig({"annotated_sample": AnnotateConfig(min_docs=12, max_docs=12, label_threshold=3)}),
        )
        chat_bodies = server.chat_requests
    assert result.success
    rows = warehouse.query("SELECT * FROM annotated_sample ORDER BY doc_id")
    assert rows.height == 12
    assert rows["model"].unique().to_list() == ["gpt-4o-mini"]
    assert rows["prompt_version"].unique().to_list() == [PROMPT_VERSION]

    failed = rows.filter(pl.col("status") != "ok")
    assert failed.height == 1
    bad = failed.row(0, named=True)
    assert bad["status"] == "error" and bad["error"]
    assert bad["educational_score"] is None and bad["label"] is None
    assert "maybe a four" in bad["raw_response"]

    ok = rows.filter(pl.col("status") == "ok")
    assert ok["cache_key"].null_count() == 0
    tutorials = ok.filter(pl.col("source") == "tutorials")
    assert tutorials["educational_score"].to_list() == [4] * 6 and tutorials["label"].all()
    assert not ok.filter(pl.col("source") == "junk")["label"].any()

    # the malformed answer was retried once; the other 11 documents asked once each
    assert len(chat_bodies) == 13
    assert {b.get("max_tokens", b.get("max_completion_tokens")) for b in chat_bodies} == {AnnotateConfig().max_tokens}

    meta = result.asset_materializations_for_node("annotated_sample")[0].metadata
    assert meta["labels/positive"].value == 6
    assert meta["labels/negative"].value == 5
    assert meta["labels/failed_gradings"].value == 1
    assert "| 4 | 6 |" in meta["score_histogram"].value
    assert meta["llm/calls"].value >= 12
    assert "sk-test-secret" not in json.dumps({k: str(v.value) for k, v in meta.items()})


def test_annotated_sample_fails_clearly_on_empty_corpus(warehouse):
    warehouse.write_table("raw_stack_plus", raw_stack_plus_frame([("a", "x=1\n")]).clear())
    result = dg.materialize(
        [annotated_sample],
        resources={"compute": Compute(), "warehouse": warehouse, "llm": LLMResource(base_url="http://127.0.0.1:9", api_key=TEST_KEY_REF)},
        raise_on_error=False,
    )
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert "raw_stack_plus is empty" in str(failure)


def test_label_threshold_unset_depends_on_the_endpoint_and_a_set_value_wins():
    from synth_assets.filtering.annotated_sample import resolve_label_threshold

    assert resolve_label_threshold(None, endpoint_is_local=False) == 3
    assert resolve_label_threshold(None, endpoint_is_local=True) == 2
    assert resolve_label_threshold(4, endpoint_is_local=True) == 4


def test_the_settings_file_sizes_every_sample_and_the_launchpad_wins_for_its_run(warehouse, tmp_path, monkeypatch):
    settings = tmp_path / "synth_assets.toml"
    settings.write_text("[annotated_sample]\nmin_docs = 3\nmax_docs = 3\nlabel_threshold = 3\n")
    monkeypatch.setenv("SYNTH_ASSETS_SETTINGS", str(settings))
    contents = [("tutorials", TUTORIAL.format(i=i)) for i in range(6)] + [("junk", JUNK.format(i=i)) for i in range(5)]
    warehouse.write_table("raw_stack_plus", raw_stack_plus_frame(contents))
    with OpenAIDouble(chat=grading_responder) as server:
        llm = LLMResource(base_url=server.base_url, api_key=TEST_KEY_REF, model="gpt-4o-mini")
        lasting = dg.materialize([annotated_sample], resources={"compute": Compute(), "warehouse": warehouse, "llm": llm})
        assert warehouse.query("SELECT count(*) AS n FROM annotated_sample")["n"][0] == 3
        one_off = dg.materialize(
            [annotated_sample], resources={"compute": Compute(), "warehouse": warehouse, "llm": llm},
            run_config=dg.RunConfig({"annotated_sample": AnnotateConfig(min_docs=5, max_docs=5)}),
        )  # fmt: skip
        assert warehouse.query("SELECT count(*) AS n FROM annotated_sample")["n"][0] == 5
    origin = one_off.asset_materializations_for_node("annotated_sample")[0].metadata["settings_origin"].value
    assert origin == {"min_docs": "launchpad", "max_docs": "launchpad", "label_threshold": "settings file"}
    assert lasting.asset_materializations_for_node("annotated_sample")[0].metadata["sample/label_threshold"].value == 3
