"""Lineage views and the `python -m synth_assets.lineage` command on a small pipeline."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from synth_assets.reports.lineage import LineageError, main, resolve_id, trace
from synth_assets.reports.lineage_views import create_lineage_views

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 1, 1, 12, 0)

# (call_id, run_id, asset_key, model, cache_key, cache_hit, cost_usd, saved_usd, status)
CALLS = [
    ("c1", "run-1", "code_exercises", "gpt-4o-mini", "k-ex1", False, 0.020, 0.0, "ok"),
    ("c2", "run-2", "code_exercises", "gpt-4o-mini", "k-ex1", True, 0.0, 0.020, "ok"),
    ("c3", "run-1", "code_exercises", "mystery-model", "k-ex2", False, None, None, "ok"),
    ("c4", "run-1", "synthetic_textbook", "gpt-4o", "k-sec1", False, 0.050, 0.0, "ok"),
    ("c5", "run-1", "annotated_sample", "gpt-4o-mini", "k-ann1", False, 0.001, 0.0, "ok"),
]


def write_pipeline(warehouse, with_downstream: bool = True) -> None:
    warehouse.write_table("llm_calls", pl.DataFrame({
        "call_id": [c[0] for c in CALLS], "run_id": [c[1] for c in CALLS], "asset_key": [c[2] for c in CALLS],
        "model": [c[3] for c in CALLS], "cache_key": [c[4] for c in CALLS], "cache_hit": [c[5] for c in CALLS],
        "cost_usd": [c[6] for c in CALLS], "saved_usd": [c[7] for c in CALLS], "status": [c[8] for c in CALLS],
        "prompt_tokens": [100] * len(CALLS), "completion_tokens": [40] * len(CALLS),
        "cached_tokens": [0] * len(CALLS), "created_at": [T0] * len(CALLS),
    }, schema_overrides={"cost_usd": pl.Float64, "saved_usd": pl.Float64}))
    warehouse.write_table("code_exercises", pl.DataFrame({
        "exercise_id": ["ex1aaaa", "ex2bbbb"], "topic": ["lists", "strings"], "difficulty": ["easy", "hard"],
        "function_name": ["add", "rev"], "exercise": ["def add(a, b):", "def rev(s):"],
        "solution": ["return a + b", "return s[::-1]"], "passed": [True, True], "sandbox_reason": ["ok", "ok"],
        "model": ["gpt-4o-mini", "mystery-model"], "prompt_version": ["ex-v1", "ex-v1"], "cache_key": ["k-ex1", "k-ex2"],
        "inspiration_doc_id": ["doc1", None],
    }))
    if not with_downstream:
        return
    warehouse.write_table("contamination_report", pl.DataFrame({
        "exercise_id": ["ex1aaaa", "ex2bbbb"], "nearest_task": ["HumanEval/0", "HumanEval/12"],
        "ngram_overlap": [0.05, 0.92], "verdict": ["clean", "contaminated"], "reason": [None, "ngram_overlap"],
    }))
    warehouse.write_table("decontaminated_exercises", pl.DataFrame({"exercise_id": ["ex1aaaa"]}))
    warehouse.write_table("textbook_prompts", pl.DataFrame({
        "prompt_id": ["p1"], "topic": ["recursion"], "audience": ["beginner"],
    }))
    warehouse.write_table("synthetic_textbook", pl.DataFrame({
        "section_id": ["sec1"], "prompt_id": ["p1"], "text": ["Recursion is ..."], "model": ["gpt-4o"],
        "prompt_version": ["tb-v1"], "cache_key": ["k-sec1"],
    }))
    warehouse.write_table("raw_stack_plus", pl.DataFrame({
        "doc_id": ["doc1", "doc2"], "source": ["python_tree"] * 2, "origin": ["/lib/a.py", "/lib/b.py"],
        "content": ["import os", "x = 1"],
    }))
    warehouse.write_table("annotated_sample", pl.DataFrame({
        "doc_id": ["doc1"], "educational_score": [4], "label": [True], "model": ["gpt-4o-mini"],
        "prompt_version": ["ann-v1"], "cache_key": ["k-ann1"],
    }))
    warehouse.write_table("quality_classifier_versions", pl.DataFrame({
        "classifier_version": ["clf-1"], "feature_set": ["tfidf"], "training_data_hash": ["abc"],
    }))
    warehouse.write_table("textbook_scores", pl.DataFrame({
        "doc_id": ["doc1", "doc2"], "quality_score": [0.8, 0.2], "classifier_version": ["clf-1"] * 2,
        "kept": [True, False], "reason": [None, "below_threshold"],
    }))
    warehouse.write_table("filtered_textbook", pl.DataFrame({
        "doc_id": ["doc1"], "content": ["import os"], "quality_score": [0.8], "classifier_version": ["clf-1"],
    }))


def test_views_on_an_empty_warehouse_are_skipped(warehouse):
    status = create_lineage_views(warehouse)
    assert set(status) == {"lineage_llm_calls_by_key", "lineage_exercises", "lineage_textbook", "lineage_filtered",
                           "lineage_self_instruct", "lineage_alpaca_instructions", "lineage_self_qa", "lineage_evol_instruct"}
    assert all(s.startswith("skipped") for s in status.values())


def test_views_leave_out_tables_that_do_not_exist_yet(warehouse):
    write_pipeline(warehouse, with_downstream=False)
    status = create_lineage_views(warehouse)
    assert status["lineage_exercises"].startswith("created without contamination_report")
    assert status["lineage_textbook"].startswith("skipped")
    row = warehouse.query("SELECT * FROM lineage_exercises WHERE exercise_id = 'ex1aaaa'").row(0, named=True)
    assert row["llm_calls"] == 2 and row["llm_cost_usd"] == pytest.approx(0.02)
    assert "contamination_verdict" not in row


def test_views_join_every_link_and_are_idempotent(warehouse):
    write_pipeline(warehouse)
    first = create_lineage_views(warehouse)
    assert create_lineage_views(warehouse) == first
    assert all(s == "created" for s in first.values() if "llm_judge" not in s and not s.startswith("skipped")), first
    assert first["lineage_textbook"] == "created without llm_judge (table missing)"

    exercises = {r["exercise_id"]: r for r in warehouse.query("SELECT * FROM lineage_exercises").to_dicts()}
    ex1, ex2 = exercises["ex1aaaa"], exercises["ex2bbbb"]
    assert (ex1["topic"], ex1["model"], ex1["prompt_version"], ex1["passed"]) == ("lists", "gpt-4o-mini", "ex-v1", True)
    assert ex1["llm_calls"] == 2 and ex1["llm_cache_hits"] == 1
    assert ex1["llm_cost_usd"] == pytest.approx(0.02) and ex1["llm_saved_usd"] == pytest.approx(0.02)
    assert ex1["llm_run_ids"] == "run-1, run-2"
    assert ex1["contamination_verdict"] == "clean" and ex1["in_decontaminated_exercises"] is True
    assert ex2["contamination_verdict"] == "contaminated" and ex2["contamination_ngram_overlap"] == 0.92
    assert ex2["in_decontaminated_exercises"] is False and ex2["llm_unknown_price_calls"] == 1

    section = warehouse.query("SELECT * FROM lineage_textbook").row(0, named=True)
    assert (section["prompt_topic"], section["prompt_audience"]) == ("recursion", "beginner")
    assert section["llm_cost_usd"] == pytest.approx(0.05) and section["llm_models"] == "gpt-4o"

    filtered = warehouse.query("SELECT * FROM lineage_filtered").row(0, named=True)
    assert filtered["raw_origin"] == "/lib/a.py" and "raw_content" not in filtered
    assert filtered["annotation_educational_score"] == 4 and filtered["classifier_feature_set"] == "tfidf"
    assert filtered["llm_cost_usd"] == pytest.approx(0.001)

    # the views follow a table that is rewritten with another schema once re-created
    warehouse.write_table("textbook_prompts", pl.DataFrame({"prompt_id": ["p1"], "style": ["socratic"]}))
    create_lineage_views(warehouse)
    assert warehouse.query("SELECT prompt_style FROM lineage_textbook")["prompt_style"].to_list() == ["socratic"]


def test_trace_an_exercise_with_its_calls_and_cost(warehouse, capsys):
    write_pipeline(warehouse)
    result = trace(warehouse, "ex1")  # a unique prefix is enough
    assert (result.kind, result.row_id) == ("exercise_id", "ex1aaaa")
    assert result.calls["call_id"].to_list() == ["c1", "c2"]
    assert result.totals["cost_usd"] == pytest.approx(0.02) and result.totals["saved_usd"] == pytest.approx(0.02)

    assert main(["ex1aaaa", "--warehouse", warehouse.path]) == 0
    out = capsys.readouterr().out
    assert "exercise_id ex1aaaa" in out
    # the corpus document that inspired it comes first in the chain
    assert out.index("inspiring corpus document") < out.index("exercise (plan slots") and "origin: /lib/a.py" in out
    assert "prompt_version: ex-v1" in out and "sandbox_reason: ok" in out
    assert "verdict: clean" in out
    assert "released in decontaminated_exercises  [decontaminated_exercises]\n   yes" in out
    assert "LLM calls (2):" in out and "run_id=run-2" in out
    assert "cost: $0.020000 spent, $0.020000 saved by the cache" in out


def test_trace_a_section_a_doc_and_an_unknown_price(warehouse, capsys):
    write_pipeline(warehouse)
    assert main(["sec1", "--warehouse", warehouse.path]) == 0
    out = capsys.readouterr().out
    assert out.index("prompt plan") < out.index("textbook section") and "topic: recursion" in out
    assert "cost: $0.050000 spent" in out

    assert main(["doc2", "--warehouse", warehouse.path]) == 0
    out = capsys.readouterr().out
    assert "reason: below_threshold" in out and "feature_set: tfidf" in out
    assert "kept in filtered_textbook  [filtered_textbook]\n   (no row)" in out
    assert "LLM calls: none recorded" in out

    assert main(["doc1", "--warehouse", warehouse.path]) == 0
    out = capsys.readouterr().out
    assert "educational_score: 4" in out and "cost: $0.001000 spent" in out

    assert main(["ex2bbbb", "--warehouse", warehouse.path]) == 0
    assert "1 call(s) with unknown price" in capsys.readouterr().out


def test_unknown_and_ambiguous_ids_are_clear_errors(warehouse, capsys, tmp_path):
    write_pipeline(warehouse)
    with pytest.raises(LineageError, match="ambiguous"):
        resolve_id(warehouse, "ex")
    assert main(["nope", "--warehouse", warehouse.path]) == 1
    assert "no exercise_id, section_id, prompt_id, doc_id or instruction_id starts with 'nope'" in capsys.readouterr().err
    assert main(["doc1", "--warehouse", str(tmp_path / "missing.duckdb")]) == 1
    assert "no warehouse at" in capsys.readouterr().err
    assert not (tmp_path / "missing.duckdb").exists()


def write_instructions(warehouse) -> None:
    """A Self-QA row, its judge verdict and HumanEval verdict, and a judged section."""
    warehouse.write_table("self_qa", pl.DataFrame({
        "instruction_id": ["qa1234567890abcd"], "method": ["self_qa"], "instruction": ["What does os.path.join do?"],
        "input": [""], "output": ["It joins path parts."], "source_doc_id": ["doc1"], "model": ["gpt-4o-mini"],
        "cache_key": ["k-qa1"],
    }))
    warehouse.write_table("llm_judge", pl.DataFrame({
        "dataset": ["self_qa", "synthetic_textbook"], "judged_id": ["qa1234567890abcd", "sec1"],
        "kind": ["instruction", "textbook"], "score": [2, 5],
        "rationale": ["The answer is vague about separators.", "Clear and correct."], "threshold": [4.0, 4.0],
        "kept": [False, True], "reason": ["below_threshold: score 2 < 4", None], "cache_key": ["k-judge-qa1", "k-judge-sec1"],
    }))
    warehouse.write_table("instructions_contamination_report", pl.DataFrame({
        "dataset": ["self_qa"], "instruction_id": ["qa1234567890abcd"], "verdict": ["clean"],
        "reason": ["below every threshold (ngram 0.00/0tok, minhash 0.00, ast n/a)"],
    }))
    ledger = warehouse.query("SELECT * FROM llm_calls")
    extra = ledger.head(2).with_columns(pl.Series("call_id", ["c6", "c7"]), pl.Series("cache_key", ["k-qa1", "k-judge-qa1"]),
                                        pl.Series("asset_key", ["self_qa", "llm_judge"]))
    warehouse.write_table("llm_calls", pl.concat([ledger, extra]))


def test_trace_an_instruction_shows_its_document_judge_score_and_rationale(warehouse, capsys):
    write_pipeline(warehouse)
    write_instructions(warehouse)
    assert main(["qa123", "--warehouse", warehouse.path]) == 0  # a prefix is enough
    out = capsys.readouterr().out
    assert "instruction_id qa1234567890abcd" in out
    # the grounding document first, then the row, the HumanEval verdict and the judge's verdict
    assert out.index("source document (Self-QA)") < out.index("instruction row (self_qa)") < out.index("LLM judge")
    assert "content: import os" in out and "verdict: clean" in out and "instruction row (self_instruct)" not in out
    assert "score: 2" in out and "rationale: The answer is vague about separators." in out
    assert "kept: False" in out and "reason: below_threshold: score 2 < 4" in out
    assert "LLM calls (2):" in out and "cache_key=k-judge-qa1" in out
    # judged ids are not searched: a section id stays unambiguous, and its trace shows its score
    assert resolve_id(warehouse, "sec1") == ("section_id", "sec1")
    assert main(["sec1", "--warehouse", warehouse.path]) == 0
    out = capsys.readouterr().out
    assert "score: 5" in out and "rationale: Clear and correct." in out


def test_the_module_runs_as_a_command(warehouse):
    write_pipeline(warehouse)
    completed = subprocess.run(
        [sys.executable, "-m", "synth_assets.lineage", "sec1", "--warehouse", warehouse.path],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert "section_id sec1" in completed.stdout and "cost: $0.050000 spent" in completed.stdout


def test_ids_stored_with_another_type_still_join(warehouse):
    write_pipeline(warehouse)
    warehouse.write_table("textbook_prompts", pl.DataFrame({"prompt_id": [1], "topic": ["sorting"]}))
    warehouse.write_table("synthetic_textbook", pl.DataFrame({"section_id": ["sec9"], "prompt_id": ["1"]}))
    assert create_lineage_views(warehouse)["lineage_textbook"].startswith("created")
    row = warehouse.query("SELECT * FROM lineage_textbook").row(0, named=True)
    assert row["prompt_topic"] == "sorting"


def test_instruction_and_judge_views(warehouse):
    write_pipeline(warehouse)
    write_instructions(warehouse)
    status = create_lineage_views(warehouse)
    assert status["lineage_self_qa"] == "created" and status["lineage_self_instruct"].startswith("skipped")
    row = warehouse.query("SELECT * FROM lineage_self_qa").row(0, named=True)
    assert (row["judge_score"], row["judge_kept"], row["judge_reason"]) == (2, False, "below_threshold: score 2 < 4")
    assert row["contamination_verdict"] == "clean" and row["llm_calls"] == 1
    section = warehouse.query("SELECT judge_score, judge_rationale FROM lineage_textbook").row(0, named=True)
    assert section == {"judge_score": 5, "judge_rationale": "Clear and correct."}
