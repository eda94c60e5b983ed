"""Checks of the instructions group: the four instruction tables, `llm_judge`, and the
HumanEval report on instruction rows (`instructions_contamination_report`).

Table names, the ROUGE-L threshold, the judge's score range and dataset names are read
from the asset modules; the floors below are the checks' own.
"""

from __future__ import annotations

import polars as pl

from quality_checks.gx_runner import RuleOutcome
from quality_checks.rules import (
    CheckSpec,
    FrameRule,
    QualityBounds,
    SqlMetricRule,
    SqlRowRule,
    asset_name,
    composite_key_rules,
    integrity_check,
    quality_floors_check,
    sql_list,
    unique_non_null_rules,
    verdict_with_reason_rule,
)
from quality_checks.synthesis import distinct2_rule
from synth_assets.decontamination import instructions_contamination_report as report
from synth_assets.decontamination.contamination_report import CLEAN
from synth_assets.instructions import alpaca_instructions, evol_instruct, llm_judge, self_instruct, self_qa
from synth_assets.instructions.filters import ROUGE_L_THRESHOLD
from synth_assets.instructions.judge_rubrics import SCORE_MAX, SCORE_MIN
from synth_assets.instructions.rouge import RougePool

# Distinct instructions / rows: repeated instructions are repeated training signal (LIMA:
# diversity over quantity). Evol-Instruct chains legitimately share most words, so the
# floor is on exact repeats, not on similarity.
INSTRUCTION_DISTINCT_FLOOR = 0.9
# Corpus distinct-2 of the instructions (as the textbook floor, quality_checks/rules.py).
INSTRUCTION_DISTINCT2_FLOOR = 0.35
# Pairwise ROUGE-L is quadratic: the check looks at a seeded sample of this many rows.
ROUGE_SAMPLE_ROWS = 300


def rouge_pairs_rule(name: str, sample_sql: str, threshold: float) -> FrameRule:
    """No two sampled instructions have ROUGE-L >= threshold (the filter the asset applies)."""

    def evaluate(rule_name: str, frame: pl.DataFrame) -> RuleOutcome:
        pool, offending = RougePool(), []
        for row in frame.iter_rows(named=True):
            score, nearest = pool.most_similar(row["instruction"])
            if score >= threshold:
                offending.append({"instruction_id": row["instruction_id"], "near_duplicate_of": nearest, "rouge_l": round(score, 4)})
            pool.add(row["instruction_id"], row["instruction"])
        observed = f"{len(offending)} of {frame.height} sampled rows have ROUGE-L >= {threshold} with another"
        return RuleOutcome(rule_name, "python", not offending, observed, "instruction", len(offending), offending[:5])

    return FrameRule(name, sample_sql, evaluate)


def instruction_table_checks(b: QualityBounds, module, similarity_filtered: bool) -> list[CheckSpec]:
    table, asset = module.TABLE, asset_name(getattr(module, module.TABLE))
    extra_rules = ()
    if module is self_qa:
        extra_rules = (SqlRowRule("source_doc_id_not_null", "SELECT instruction_id FROM {table} WHERE source_doc_id IS NULL"),)
    sample = f"SELECT instruction_id, instruction FROM {{table}} USING SAMPLE reservoir({ROUGE_SAMPLE_ROWS} ROWS) REPEATABLE ({b.sample_seed}) ORDER BY instruction_id"
    floors = (
        SqlMetricRule("distinct_instruction_ratio", "SELECT count(DISTINCT lower(instruction)) / count(*) FROM {table}",
                      min_value=INSTRUCTION_DISTINCT_FLOOR, null_passes=True),
        distinct2_rule("instruction_distinct_2", INSTRUCTION_DISTINCT2_FLOOR, "instruction", sample),
        *((rouge_pairs_rule("no_near_duplicate_instructions", sample, ROUGE_L_THRESHOLD),) if similarity_filtered else ()),
    )
    return [
        integrity_check(
            asset=asset, table=table,
            description="instruction_id unique and non-null; instruction and output non-empty; input not null.",
            id_column="instruction_id",
            rules=(
                *unique_non_null_rules("instruction_id"),
                SqlRowRule("instruction_and_output_non_empty",
                           "SELECT instruction_id FROM {table} WHERE coalesce(trim(instruction), '') = '' "
                           "OR coalesce(trim(output), '') = '' OR input IS NULL"),
                *extra_rules,
            ),
        ),
        quality_floors_check(
            asset=asset, table=table,
            description=f"Distinct instructions / rows >= {INSTRUCTION_DISTINCT_FLOOR}; instruction distinct-2 >= "
            f"{INSTRUCTION_DISTINCT2_FLOOR}" + (f"; no two instructions with ROUGE-L >= {ROUGE_L_THRESHOLD}" if similarity_filtered else "") + ".",
            id_column="instruction_id",
            rules=floors,
        ),
    ]


def llm_judge_checks(b: QualityBounds) -> list[CheckSpec]:
    table, asset = llm_judge.TABLE, asset_name(llm_judge.llm_judge)
    return [
        integrity_check(
            asset=asset, table=table,
            description=f"(dataset, judged_id) unique; score in {SCORE_MIN}..{SCORE_MAX} or NULL (judge failed); "
            "kept exactly when score >= threshold; every dropped row has a reason; known datasets.",
            id_column="judged_id",
            rules=(
                *composite_key_rules("dataset", "judged_id", "dataset_judged_id_unique", "judged_id_not_null"),
                SqlRowRule("score_in_range", f"SELECT dataset, judged_id, score FROM {{table}} WHERE score NOT BETWEEN {SCORE_MIN} AND {SCORE_MAX}"),
                SqlRowRule("kept_matches_threshold",
                           "SELECT dataset, judged_id, score, threshold, kept FROM {table} "
                           "WHERE kept IS DISTINCT FROM coalesce(score >= threshold, false)"),
                SqlRowRule("dropped_rows_have_a_reason", "SELECT dataset, judged_id FROM {table} WHERE NOT kept AND reason IS NULL"),
                SqlRowRule("known_dataset", f"SELECT dataset, judged_id FROM {{table}} WHERE dataset NOT IN ({sql_list(llm_judge.DATASET_NAMES)})"),
            ),
        ),
    ]


def instructions_contamination_checks(b: QualityBounds) -> list[CheckSpec]:
    table = report.INSTRUCTIONS_REPORT_TABLE
    return [
        integrity_check(
            asset=asset_name(report.instructions_contamination_report), table=table,
            description="(dataset, instruction_id) unique and non-null; verdict clean or contaminated with a reason; "
            "contaminated exactly when a signal fired.",
            id_column="instruction_id",
            rules=(
                *composite_key_rules("dataset", "instruction_id", "dataset_instruction_id_unique"),
                verdict_with_reason_rule("dataset", "instruction_id", (CLEAN, report.CONTAMINATED)),
                SqlRowRule("contaminated_iff_a_signal_fired",
                           f"SELECT dataset, instruction_id, verdict, fired_signals FROM {{table}} "
                           f"WHERE (verdict = '{report.CONTAMINATED}') IS DISTINCT FROM (len(coalesce(fired_signals, [])) > 0)"),
                SqlRowRule("known_dataset",
                           f"SELECT dataset, instruction_id FROM {{table}} WHERE dataset NOT IN ({sql_list(report.INSTRUCTION_TABLES)})"),
            ),
        ),
    ]


def check_specs(b: QualityBounds) -> list[CheckSpec]:
    """The instructions group's checks, in DAG order."""
    return [
        *instruction_table_checks(b, self_instruct, similarity_filtered=True),
        *instruction_table_checks(b, alpaca_instructions, similarity_filtered=True),
        *instruction_table_checks(b, self_qa, similarity_filtered=False),
        *instruction_table_checks(b, evol_instruct, similarity_filtered=False),
        *llm_judge_checks(b),
        *instructions_contamination_checks(b),
    ]
