"""The LLM judge for the doubtful band (signals/judge.py): which rows it asks about, what
it stores, that it fires, and through the asset: off by default, cached on a re-run."""

from __future__ import annotations

import json

import dagster as dg
import polars as pl

from resources.compute import Compute
from resources.llm import LLMResource
from resources.llm.types import StructuredResult
from synth_assets.decontamination.benchmark_index import SignalScores, Thresholds, verdict
from synth_assets.decontamination.benchmarks import load_humaneval
from synth_assets.decontamination.contamination_report import DecontaminationConfig, contamination_report
from synth_assets.decontamination.signals.judge import JudgeConfig, JudgeVerdict, doubtful_pairs, judge_doubtful
from tests.contamination_variants import make_variant, stdlib_exercises
from tests.openai_double import OpenAIDouble, TEST_KEY_REF

THRESHOLDS = Thresholds(use_embedding=False)


def rows() -> list[SignalScores]:
    return [
        SignalScores("fired", ast_task_id="HumanEval/1", ast_match_rate=0.9),  # already contaminated
        SignalScores("near-ast", ast_task_id="HumanEval/2", ast_match_rate=0.7, minhash_task_id="HumanEval/9", minhash_jaccard=0.1),
        SignalScores("near-minhash", minhash_task_id="HumanEval/3", minhash_jaccard=0.4, ast_task_id="HumanEval/4", ast_match_rate=0.2),
        SignalScores("partial-functional", functional_task_id="HumanEval/5", functional_tests_passed=4, functional_tests_total=6,
                     ast_task_id="HumanEval/6", ast_match_rate=0.1),
        SignalScores("far", ast_task_id="HumanEval/7", ast_match_rate=0.3, minhash_task_id="HumanEval/8", minhash_jaccard=0.2),
    ]


def test_only_rows_just_below_a_threshold_are_doubtful_with_the_closest_signals_task():
    pairs = doubtful_pairs(rows(), THRESHOLDS)
    by_row = {pair.row: pair for pair in pairs}
    assert set(by_row) == {1, 2, 3}
    assert by_row[1].task_id == "HumanEval/2" and by_row[1].why == "ast 0.70"
    assert by_row[2].task_id == "HumanEval/3" and by_row[3].task_id == "HumanEval/5"
    assert [p.row for p in pairs] == sorted(by_row, key=lambda r: -by_row[r].closeness)  # closest first
    assert [p.row for p in doubtful_pairs(rows(), THRESHOLDS, JudgeConfig(max_pairs=1))] == [pairs[0].row]


def test_judge_verdicts_are_stored_and_a_same_verdict_fires_with_its_rationale():
    scores = rows()
    asked = []

    def complete_json(requests, schema):
        asked.extend(requests)
        assert schema is JudgeVerdict
        answers = [JudgeVerdict(same_problem=True, rationale="Both reverse the words."), None,
                   JudgeVerdict(same_problem=False, rationale="Different output.")]
        return [
            StructuredResult(text="{}", cache_key=f"k{i}", status="ok" if answer else "error",
                             error=None if answer else "malformed", parsed=answer)
            for i, answer in enumerate(answers)
        ]

    problems = {p.task_id: p.source for p in load_humaneval()}
    judged = judge_doubtful(scores, [f"def f{i}(): pass" for i in range(5)], problems, THRESHOLDS, complete_json)
    assert judged == 3 and len(asked) == 3
    assert "def f1(): pass" in asked[0].messages[1]["content"] and problems["HumanEval/2"][:40] in asked[0].messages[1]["content"]
    assert asked[0].temperature == 0.0 and asked[0].row_id == "near-ast"
    judged_rows = {row.exercise_id: row for row in scores if row.judge_verdict}
    assert {r: judged_rows[r].judge_verdict for r in judged_rows} == {
        "near-ast": "same", "near-minhash": "error", "partial-functional": "different"}
    decision, reason, fired = verdict(judged_rows["near-ast"], THRESHOLDS)
    assert decision == "contaminated" and fired == ["judge"] and "Both reverse the words." in reason
    assert verdict(judged_rows["partial-functional"], THRESHOLDS)[0] == "clean"
    assert "judge different vs HumanEval/5" in verdict(judged_rows["partial-functional"], THRESHOLDS)[1]
    assert scores[4].judge_verdict is None  # far from every threshold: not asked


def exercises_frame() -> pl.DataFrame:
    humaneval = load_humaneval()
    planted = [make_variant(p, "translated+restructured+renamed") for p in humaneval[:40:4]]
    clean = stdlib_exercises(30, seed=4, restructure=True)
    return pl.DataFrame([
        {"exercise_id": e.exercise_id, "function_name": e.function_name, "exercise": e.exercise, "solution": e.solution}
        for e in planted + clean
    ])


def materialize(warehouse, server, **config):
    llm = LLMResource(base_url=server.base_url, api_key=TEST_KEY_REF, model="gpt-4o-mini",
                      embedding_model="text-embedding-3-small", max_retries=0)
    result = dg.materialize([contamination_report], resources={"compute": Compute(), "warehouse": warehouse, "llm": llm},
                            run_config=dg.RunConfig({"contamination_report": DecontaminationConfig(**config)}))
    return result.asset_materializations_for_node("contamination_report")[0].metadata


def test_judge_is_off_by_default_and_a_rerun_with_it_on_costs_nothing(warehouse):
    warehouse.write_table("code_exercises", exercises_frame())
    verdicts = json.dumps({"same_problem": False, "rationale": "Different task."})
    with OpenAIDouble(chat=lambda body: verdicts) as server:
        off = materialize(warehouse, server, use_embedding=False)
        assert off["judge"].value == "off" and not server.chat_requests
        # thresholds pushed up (functional signal and AST rewriting off) leave the planted copies
        # just below them: a doubtful band
        strict = dict(use_embedding=False, use_functional=False, max_ngram_overlap=2.0, longest_shared_ngram=10**6,
                      minhash_jaccard=0.99, ast_match_rate=0.99, ast_canonical=False, use_llm_judge=True)
        first = materialize(warehouse, server, **strict)
        asked = len(server.chat_requests)
        assert asked > 0 and first["judge_asked"].value == asked and first["llm/cost_usd"].value > 0
        second = materialize(warehouse, server, **strict)
        assert len(server.chat_requests) == asked  # every answer from the cache
        assert second["llm/cost_usd"].value == 0 and second["llm/cache_hits"].value == asked
    report = warehouse.query("SELECT * FROM contamination_report")
    judged = report.filter(pl.col("judge_verdict").is_not_null())
    assert judged.height == asked and (judged["judge_verdict"] == "different").all()
    assert judged["judge_rationale"].str.contains("Different task.").all()
