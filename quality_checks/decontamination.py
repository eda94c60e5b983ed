"""Checks of the decontamination group: `contamination_report` and
`decontaminated_exercises` (phi-1 section 5).

Verdict labels, table names and the signal thresholds are read from
`synth_assets.decontamination.contamination_report` when the checks are built, never
copied: the thresholds are the asset's published defaults (`DEFAULT_THRESHOLDS`, which
its config defaults to), so a run launched with looser thresholds is flagged here
against the published ones.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from quality_checks.gx_runner import import_gx
from quality_checks.rules import (
    CheckSpec,
    QualityBounds,
    SqlRowRule,
    asset_name,
    composite_key_rules,
    integrity_check,
    new_suite,
    sql_string,
    unique_non_null_rules,
    verdict_with_reason_rule,
)
from quality_checks.synthesis import code_exercises_checks
from synth_assets.decontamination import contamination_report, decontaminated_exercises
from synth_assets.decontamination import synthesis_contamination_report as synthesis_report
from synth_assets.synthesis.case2code import CASES_TABLE
from synth_assets.synthesis.personas import PERSONAS_TABLE
from synth_assets.synthesis import code_exercises


@dataclass(frozen=True)
class ContaminationThreshold:
    """A kept exercise must not have `score_column >= threshold` in contamination_report
    (counted only where `task_column`, the matched benchmark task, is set)."""

    score_column: str
    threshold: float
    task_column: str | None = None


# (report score column = its `Thresholds` field, benchmark task column that must be set
# for the signal to fire), as in benchmark_index.fired_signals: the n-gram signal fires on
# overlap or on a long shared run with a named task; the embedding signal needs no task.
SIGNAL_COLUMNS: tuple[tuple[str, str | None], ...] = (
    # phi-1 5.1: any shared 13-gram (threshold 0.0 = any overlap with a named task)
    ("max_ngram_overlap", "ngram_task_id"),
    ("longest_shared_ngram", "ngram_task_id"),
    ("minhash_jaccard", "minhash_task_id"),
    # phi-1 5.2 sweeps the AST match rate
    ("ast_match_rate", "ast_task_id"),
    ("embedding_cosine", None),
    # issue 17: passing a benchmark problem's official tests (1.0 = all of them)
    ("functional_pass_rate", "functional_task_id"),
)


def published_thresholds() -> tuple[ContaminationThreshold, ...]:
    """One threshold per signal, from the asset's published defaults."""
    defaults = contamination_report.DEFAULT_THRESHOLDS
    return tuple(ContaminationThreshold(score, getattr(defaults, score), task) for score, task in SIGNAL_COLUMNS)


def contamination_report_checks(b: QualityBounds) -> list[CheckSpec]:
    table = contamination_report.REPORT_TABLE
    clean, contaminated = contamination_report.CLEAN, contamination_report.CONTAMINATED
    exercises_table = code_exercises.EXERCISES_TABLE

    def suite():
        e = import_gx().expectations
        return new_suite(
            table,
            [
                e.ExpectColumnValuesToNotBeNull(column="exercise_id"),
                e.ExpectColumnValuesToBeInSet(column="verdict", value_set=[clean, contaminated]),
                e.ExpectColumnValuesToNotBeNull(column="verdict"),
            ],
        )

    return [
        integrity_check(
            asset=asset_name(contamination_report.contamination_report),
            table=table,
            description="One verdict per exercise: exercise_id unique, verdict non-null, a reason for every "
            "non-clean verdict, every code exercise judged.",
            id_column="exercise_id",
            rules=(
                *unique_non_null_rules("exercise_id"),
                SqlRowRule(
                    "non_clean_verdict_has_reason",
                    f"SELECT exercise_id, verdict FROM {{table}} WHERE verdict <> {sql_string(clean)} "
                    "AND (reason IS NULL OR length(trim(reason)) = 0)",
                ),
                SqlRowRule(
                    "every_exercise_judged",
                    f"SELECT c.exercise_id FROM {exercises_table} c "
                    "ANTI JOIN {table} r ON r.exercise_id = c.exercise_id",
                ),
            ),
            gx_suite=suite,
            additional_deps=(asset_name(code_exercises.code_exercises),),
        )
    ]


def decontaminated_exercises_checks(b: QualityBounds) -> list[CheckSpec]:
    """The exercise checks on the kept rows, plus: every kept exercise is judged clean and
    has every signal below its published threshold."""
    report_table = contamination_report.REPORT_TABLE
    clean = contamination_report.CLEAN
    thresholds = published_thresholds()
    threshold_rules = tuple(
        SqlRowRule(
            f"{t.score_column}_below_{t.threshold:g}",
            f"SELECT d.exercise_id, r.{t.score_column}"
            + (f", r.{t.task_column}" if t.task_column else "")
            + f" FROM {{table}} d JOIN {report_table} r USING (exercise_id) "
            + f"WHERE r.{t.score_column} >= {t.threshold}"
            + (f" AND r.{t.task_column} IS NOT NULL" if t.task_column else ""),
        )
        for t in thresholds
    )
    specs = code_exercises_checks(
        b,
        table=decontaminated_exercises.KEPT_TABLE,
        asset=asset_name(decontaminated_exercises.decontaminated_exercises),
    )
    integrity = specs[0]
    decontam_rules = (
        SqlRowRule(
            "report_verdict_clean",
            f"SELECT d.exercise_id, r.verdict, r.reason FROM {{table}} d LEFT JOIN {report_table} r "
            f"USING (exercise_id) WHERE r.verdict IS DISTINCT FROM {sql_string(clean)}",
        ),
        *threshold_rules,
        SqlRowRule(
            "judge_not_same_problem",
            f"SELECT d.exercise_id, r.judge_task_id, r.judge_rationale FROM {{table}} d JOIN {report_table} r "
            f"USING (exercise_id) WHERE r.judge_verdict = {sql_string(contamination_report.JUDGE_SAME)}",
        ),
    )
    specs[0] = replace(
        integrity,
        description=integrity.description
        + f" Every kept exercise has {report_table} verdict '{clean}' and every signal "
        + "below its threshold ("
        + ", ".join(f"{t.score_column} < {t.threshold:g}" for t in thresholds)
        + ").",
        rules=(*integrity.rules, *decontam_rules),
        additional_deps=(asset_name(contamination_report.contamination_report),),
    )
    return specs


def synthesis_contamination_checks(b: QualityBounds) -> list[CheckSpec]:
    """One verdict with a reason per case2code program and per persona."""
    table = synthesis_report.SYNTHESIS_REPORT_TABLE
    clean, contaminated = contamination_report.CLEAN, contamination_report.CONTAMINATED
    judged = {CASES_TABLE: "case_id", PERSONAS_TABLE: "persona_id"}
    return [
        integrity_check(
            asset=asset_name(synthesis_report.synthesis_contamination_report),
            table=table,
            description=f"(source_table, item_id) unique and non-null; verdict {clean} or {contaminated} with a "
            "reason; every case2code program and every persona judged.",
            id_column="item_id",
            rules=(
                *composite_key_rules("source_table", "item_id", "source_item_unique"),
                verdict_with_reason_rule("source_table", "item_id", (clean, contaminated)),
                *(
                    SqlRowRule(f"every_{source}_row_judged",
                               f"SELECT s.{id_column} FROM {source} s ANTI JOIN {{table}} r "
                               f"ON r.source_table = {sql_string(source)} AND r.item_id = s.{id_column}")
                    for source, id_column in judged.items()
                ),
            ),
            additional_deps=(CASES_TABLE, PERSONAS_TABLE),  # the asset names are the table names
        )
    ]


def check_specs(b: QualityBounds) -> list[CheckSpec]:
    """The decontamination group's checks, in DAG order."""
    return [*contamination_report_checks(b), *decontaminated_exercises_checks(b), *synthesis_contamination_checks(b)]
