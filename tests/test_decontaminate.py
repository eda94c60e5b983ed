"""`contamination_report` + `decontaminated_exercises` materialized for real: DuckDB in
tmp_path, the LLM layer's embeddings against the OpenAI test double over HTTP."""

from __future__ import annotations

import json

import dagster as dg
import polars as pl
import pytest

from resources.compute import Compute
from resources.llm import LLMResource
from synth_assets.decontamination.benchmarks import load_humaneval
from synth_assets.decontamination.contamination_report import REPORT_SCHEMA, DecontaminationConfig, contamination_report
from synth_assets.decontamination.decontaminated_exercises import decontaminated_exercises
from tests.contamination_variants import VARIANTS, plant_variants, stdlib_exercises
from tests.openai_double import OpenAIDouble, TEST_KEY_REF

HUMANEVAL = load_humaneval()
ASSETS = [contamination_report, decontaminated_exercises]


def exercises_frame(planted_every: int = 8, n_clean: int = 150) -> tuple[pl.DataFrame, set[str], set[str]]:
    """A `code_exercises`-shaped table: every variant of every 8th HumanEval problem plus
    standard-library exercises. Returns (frame, planted ids, clean ids)."""
    planted = plant_variants(HUMANEVAL[::planted_every])
    clean = stdlib_exercises(n_clean, seed=11)
    rows = [
        {
            "exercise_id": e.exercise_id,
            "function_name": e.function_name,
            "exercise": e.exercise,
            # clean rows store the body only, planted rows the whole function: both shapes occur
            "solution": e.solution if e.variant != "clean" else e.solution.split('"""', 2)[-1],
            "tests": ["assert True"],
            "passed": True,
        }
        for e in planted + clean
    ]
    return pl.DataFrame(rows), {e.exercise_id for e in planted}, {e.exercise_id for e in clean}


def llm_for(server: OpenAIDouble) -> LLMResource:
    return LLMResource(base_url=server.base_url, api_key=TEST_KEY_REF, model="gpt-4o-mini",
                       embedding_model="text-embedding-3-small", max_retries=0, embed_batch_size=256)


def run(warehouse, server, config: DecontaminationConfig, raise_on_error: bool = True):
    return dg.materialize(
        ASSETS,
        resources={"compute": Compute(), "warehouse": warehouse, "llm": llm_for(server)},
        run_config=dg.RunConfig({"contamination_report": config}),
        raise_on_error=raise_on_error,
    )


def test_planted_copies_are_removed_with_reasons_and_clean_rows_kept(warehouse):
    frame, planted, clean = exercises_frame()
    warehouse.write_table("code_exercises", frame)
    with OpenAIDouble() as server:
        result = run(warehouse, server, DecontaminationConfig())
        embedded = sum(len(b["input"]) if isinstance(b["input"], list) else 1 for b in server.embedding_requests)
    assert result.success
    assert embedded >= len(frame)  # every exercise went through the embeddings endpoint

    report = warehouse.query("SELECT * FROM contamination_report")
    assert report.columns == list(REPORT_SCHEMA)
    assert report.height == frame.height and report["exercise_id"].n_unique() == frame.height
    verdicts = dict(zip(report["exercise_id"], report["verdict"]))
    assert {i for i in planted if verdicts[i] != "contaminated"} == set()
    false_positives = {i for i in clean if verdicts[i] != "clean"}
    assert len(false_positives) / len(clean) < 0.01
    contaminated = report.filter(pl.col("verdict") == "contaminated")
    for row in contaminated.iter_rows(named=True):
        assert row["reason"] and " vs HumanEval/" in row["reason"] and row["fired_signals"]
    assert report["embedding_cosine"].null_count() == 0 and report["ast_task_id"].null_count() < report.height

    kept = warehouse.query("SELECT * FROM decontaminated_exercises")
    assert set(kept["exercise_id"]) == {i for i, v in verdicts.items() if v == "clean"}
    assert kept.columns == frame.columns  # the same rows, same columns: lineage by exercise_id
    assert set(kept["exercise_id"]) <= clean

    metadata = result.asset_materializations_for_node("contamination_report")[0].metadata
    assert metadata["contaminated"].value == len(planted) + len(false_positives)
    assert metadata["removed_by/ast"].value >= len(planted) - 30
    assert "| ast_match_rate | 0.8 |" in metadata["thresholds"].value
    assert "HumanEval/" in metadata["closest_kept_per_task"].value
    assert metadata["llm/calls"].value >= 1 and metadata["embedding_status"].value.startswith("ok")
    assert "sk-test-secret" not in json.dumps({k: str(v.value) for k, v in metadata.items()})
    kept_metadata = result.asset_materializations_for_node("decontaminated_exercises")[0].metadata
    assert kept_metadata["kept"].value == kept.height


def test_failed_embeddings_degrade_to_three_signals_and_are_recorded(warehouse):
    frame, planted, clean = exercises_frame(planted_every=20, n_clean=60)
    warehouse.write_table("code_exercises", frame)
    with OpenAIDouble() as server:
        server.fail_next(status=500, count=1000, endpoint="embeddings")
        result = run(warehouse, server, DecontaminationConfig())
    assert result.success
    report = warehouse.query("SELECT * FROM contamination_report")
    assert report["embedding_cosine"].null_count() == report.height
    assert all("embedding signal skipped" in r or "vector unavailable" in r for r in report["reason"])
    verdicts = dict(zip(report["exercise_id"], report["verdict"]))
    assert all(verdicts[i] == "contaminated" for i in planted)
    metadata = result.asset_materializations_for_node("contamination_report")[0].metadata
    assert metadata["removed_by/embedding"].value == 0
    assert metadata["embedding_status"].value != "disabled"


def test_embedding_off_makes_no_calls_and_extra_benchmark_is_checked(warehouse, tmp_path):
    extra = tmp_path / "private_bench.jsonl"
    prompt = 'def count_vowels_twice(text: str) -> int:\n    """Count the vowels in text and return twice that number of vowels found in it."""\n'
    solution = "    total = 0\n    for ch in text.lower():\n        if ch in 'aeiou':\n            total += 2\n    return total\n"
    extra.write_text(json.dumps({"task_id": "Private/0", "prompt": prompt, "canonical_solution": solution}) + "\n")
    renamed = prompt.replace("count_vowels_twice(text", "vowel_score(s").replace("in text", "in s") + solution.replace("text", "s").replace("total", "n")
    frame = pl.DataFrame([
        {"exercise_id": "copy", "function_name": "vowel_score", "exercise": "", "solution": "", "code": renamed, "passed": True},
        {"exercise_id": "other", "function_name": "read_config", "exercise": 'def read_config(path):\n    """Parse KEY=VALUE lines of a file into a dict, skipping comments."""\n',
         "solution": "    settings = {}\n    with open(path) as handle:\n        for line in handle:\n            line = line.strip()\n            if not line or line.startswith('#'):\n                continue\n            key, _, value = line.partition('=')\n            settings[key.strip()] = value.strip()\n    return settings\n", "code": None, "passed": True},
    ])
    warehouse.write_table("code_exercises", frame)
    config = DecontaminationConfig(use_embedding=False, extra_benchmark_paths=[str(extra)])
    with OpenAIDouble() as server:
        result = run(warehouse, server, config)
        assert server.requests == []
    assert result.success
    report = {r["exercise_id"]: r for r in warehouse.query("SELECT * FROM contamination_report").iter_rows(named=True)}
    assert report["copy"]["verdict"] == "contaminated" and "Private/0" in report["copy"]["reason"]
    assert report["other"]["verdict"] == "clean" and report["other"]["embedding_cosine"] is None
    metadata = result.asset_materializations_for_node("contamination_report")[0].metadata
    assert metadata["embedding_status"].value == "disabled" and "private_bench (1)" in metadata["benchmarks"].value


def test_missing_benchmark_file_fails_with_its_path(warehouse, tmp_path):
    frame, _, _ = exercises_frame(planted_every=82, n_clean=5)
    warehouse.write_table("code_exercises", frame)
    missing = tmp_path / "nowhere.jsonl"
    with OpenAIDouble() as server:
        result = run(warehouse, server, DecontaminationConfig(extra_benchmark_paths=[str(missing)]), raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].event_specific_data.error
    text = failure.to_string()
    assert "BenchmarkError" in text and "benchmark file not found" in text and "nowhere.jsonl" in text
    assert not warehouse.table_exists("contamination_report")


def test_stale_report_stops_the_kept_table(warehouse):
    frame, _, _ = exercises_frame(planted_every=82, n_clean=5)
    warehouse.write_table("code_exercises", frame)
    with OpenAIDouble() as server:
        assert run(warehouse, server, DecontaminationConfig(use_embedding=False)).success
    extra = frame.head(1).with_columns(pl.lit("new-exercise").alias("exercise_id"))
    warehouse.append_table("code_exercises", extra)
    with pytest.raises(dg.Failure, match="1 code exercises have no contamination verdict"):
        dg.materialize([decontaminated_exercises], resources={"compute": Compute(), "warehouse": warehouse})
