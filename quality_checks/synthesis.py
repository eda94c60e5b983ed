"""Checks of the synthesis group: `personas`, `textbook_prompts`, `synthetic_textbook`,
`code_exercises` and `case2code`, plus the Python-side rules they need (corpus distinct-n, "every
function parses").

Table names are read from the synthesis modules when the checks are built; the floors
are the checks' own (`QualityBounds`).
"""

from __future__ import annotations

import ast
import re

import polars as pl

from quality_checks.gx_runner import RuleOutcome, import_gx
from quality_checks.rules import (
    CheckSpec,
    FrameRule,
    QualityBounds,
    SqlMetricRule,
    SqlRowRule,
    asset_name,
    integrity_check,
    new_suite,
    quality_floors_check,
    unique_non_null_rules,
)
from synth_assets.synthesis import case2code, code_exercises, personas, synthetic_textbook, textbook_prompts

WORD = re.compile(r"\w+")


def distinct_n(texts: list[str], n: int = 2) -> tuple[float | None, int]:
    """Corpus-level distinct-n: unique word n-grams / all word n-grams (lower-cased
    `\\w+` tokens). Returns (ratio, total n-grams); ratio is None with no n-grams."""
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        tokens = WORD.findall((text or "").lower())
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return (len(seen) / total if total else None), total


def distinct2_rule(name: str, floor: float, text_column: str, sample_sql: str) -> FrameRule:
    """Corpus distinct-2 of `text_column` over the rows `sample_sql` loads, >= floor."""

    def evaluate(rule_name: str, frame: pl.DataFrame) -> RuleOutcome:
        ratio, total = distinct_n(frame[text_column].to_list(), 2)
        ok = ratio is not None and ratio >= floor
        observed = "no bigrams" if ratio is None else f"{ratio:.4f} over {total} bigrams (floor {floor})"
        return RuleOutcome(rule_name, "python", ok, observed, text_column)

    return FrameRule(name, sample_sql, evaluate)


def assemble_function_source(exercise: str | None, solution: str | None) -> str:
    """The function a code_exercises row stands for. phi-1 CodeExercises are a signature
    plus docstring (`exercise`) completed by a body (`solution`). If the solution already
    restates the `def`, it is the whole function; otherwise it is the body appended to the
    exercise."""
    exercise = exercise or ""
    solution = solution or ""
    if re.match(r"\s*(async\s+)?def\s", solution) or re.search(r"^(async\s+)?def\s", solution, re.M):
        return solution
    return exercise.rstrip("\n") + "\n" + solution


def parse_error(source: str) -> str | None:
    """None if `source` parses as Python 3, else `SyntaxError: msg (line N)`."""
    try:
        ast.parse(source)
    except SyntaxError as exc:
        return f"SyntaxError: {exc.msg} (line {exc.lineno})"
    except (ValueError, RecursionError) as exc:  # NUL bytes, pathological nesting
        return f"{type(exc).__name__}: {exc}"
    return None


def every_row_parses_rule(name: str, table_sql: str) -> FrameRule:
    """Every exercise's function parses (`ast.parse`): the `source` column (code_exercises
    stores the assembled function there), or exercise + solution where source is NULL.
    Offending rows carry the error."""

    def evaluate(rule_name: str, frame: pl.DataFrame) -> RuleOutcome:
        bad = []
        for row in frame.iter_rows(named=True):
            source = row.get("source")
            if source is None:
                source = assemble_function_source(row.get("exercise"), row.get("solution"))
            error = parse_error(source)
            if error:
                bad.append({"exercise_id": row["exercise_id"], "function_name": row.get("function_name"), "parse_error": error})
        observed = f"{len(bad)} of {frame.height} do not parse"
        return RuleOutcome(rule_name, "python", not bad, observed, "source", len(bad), bad[:5])

    return FrameRule(name, table_sql, evaluate)


def textbook_prompts_checks(b: QualityBounds) -> list[CheckSpec]:
    table = textbook_prompts.PROMPTS_TABLE
    asset = asset_name(textbook_prompts.textbook_prompts)

    def suite():
        e = import_gx().expectations
        return new_suite(
            table,
            [
                e.ExpectColumnValuesToNotBeNull(column="prompt_id"),
                e.ExpectColumnValuesToNotBeNull(column="topic"),
            ],
        )

    return [
        integrity_check(
            asset=asset,
            table=table,
            description="prompt_id unique and non-null; every prompt has a topic.",
            id_column="prompt_id",
            rules=(*unique_non_null_rules("prompt_id"),),
            gx_suite=suite,
        ),
        quality_floors_check(
            asset=asset,
            table=table,
            description=f"Distinct (topic, subtopic, audience) slots / prompts >= {b.prompt_slot_distinct_floor}.",
            id_column="prompt_id",
            rules=(
                SqlMetricRule(
                    "distinct_slot_ratio",
                    "SELECT count(DISTINCT (topic, subtopic, audience)) / count(*) FROM {table}",
                    min_value=b.prompt_slot_distinct_floor,
                ),
            ),
        ),
    ]


def synthetic_textbook_checks(b: QualityBounds) -> list[CheckSpec]:
    table = synthetic_textbook.SECTIONS_TABLE
    asset = asset_name(synthetic_textbook.synthetic_textbook)

    def integrity_suite():
        e = import_gx().expectations
        return new_suite(
            table,
            [
                e.ExpectColumnValuesToNotBeNull(column="section_id"),
                e.ExpectColumnValuesToNotBeNull(column="prompt_id"),
                e.ExpectColumnValueLengthsToBeBetween(column="text", min_value=1),
            ],
        )

    def length_suite():
        e = import_gx().expectations
        return new_suite(
            f"{table}_lengths",
            [
                e.ExpectColumnValueLengthsToBeBetween(
                    column="text", min_value=b.textbook_min_chars, max_value=b.textbook_max_chars
                ),
            ],
        )

    sample = (
        f"SELECT section_id, text FROM {{table}} USING SAMPLE reservoir({b.gx_sample_rows} ROWS) "
        f"REPEATABLE ({b.sample_seed})"
    )
    return [
        integrity_check(
            asset=asset,
            table=table,
            description="section_id unique and non-null; every section has a prompt_id and non-empty text.",
            id_column="section_id",
            rules=(
                *unique_non_null_rules("section_id"),
                SqlRowRule(
                    "text_non_empty",
                    "SELECT section_id, prompt_id FROM {table} WHERE text IS NULL OR length(trim(text)) = 0",
                ),
            ),
            gx_suite=integrity_suite,
        ),
        quality_floors_check(
            asset=asset,
            table=table,
            description=f"Section length within {b.textbook_min_chars}-{b.textbook_max_chars} characters; "
            f"corpus distinct-2 >= {b.textbook_distinct2_floor}; share of sections whose code parses "
            f">= {b.textbook_code_parse_floor}.",
            id_column="section_id",
            rules=(
                distinct2_rule("text_distinct_2", b.textbook_distinct2_floor, "text", sample),
                SqlMetricRule(
                    "code_blocks_parse_rate",
                    "SELECT avg(CASE WHEN code_blocks_parse THEN 1.0 ELSE 0.0 END) FROM {table}",
                    min_value=b.textbook_code_parse_floor,
                ),
            ),
            gx_suite=length_suite,
        ),
    ]


def code_exercises_checks(b: QualityBounds, table: str | None = None, asset: str | None = None) -> list[CheckSpec]:
    """The exercise checks; `decontaminated_exercises` (the same rows, filtered) reuses
    them with its own table and asset."""
    table = table or code_exercises.EXERCISES_TABLE
    asset = asset or asset_name(code_exercises.code_exercises)

    def suite():
        e = import_gx().expectations
        return new_suite(
            table,
            [
                e.ExpectColumnValuesToNotBeNull(column="exercise_id"),
                e.ExpectColumnValuesToNotBeNull(column="function_name"),
                e.ExpectColumnValuesToMatchRegex(column="function_name", regex=r"^[A-Za-z_][A-Za-z0-9_]*$"),
                e.ExpectColumnValueLengthsToBeBetween(column="solution", min_value=1),
                e.ExpectColumnValuesToNotBeNull(column="passed"),
            ],
        )

    parse_sql = "SELECT exercise_id, function_name, exercise, solution, source FROM {table}"
    return [
        integrity_check(
            asset=asset,
            table=table,
            description="exercise_id unique and non-null; every exercise + solution parses as Python (ast.parse).",
            id_column="exercise_id",
            rules=(
                *unique_non_null_rules("exercise_id"),
                every_row_parses_rule("every_function_parses", parse_sql),
            ),
            gx_suite=suite,
        ),
        quality_floors_check(
            asset=asset,
            table=table,
            description=f"Distinct function names / exercises >= {b.exercise_function_name_distinct_floor}.",
            id_column="exercise_id",
            rules=(
                SqlMetricRule(
                    "distinct_function_name_ratio",
                    "SELECT count(DISTINCT function_name) / count(*) FROM {table}",
                    min_value=b.exercise_function_name_distinct_floor,
                ),
            ),
        ),
    ]


def personas_checks(b: QualityBounds) -> list[CheckSpec]:
    table = personas.PERSONAS_TABLE
    return [
        integrity_check(
            asset=asset_name(personas.personas),
            table=table,
            description="persona_id unique and non-null; every persona non-empty and the last link of its own "
            "chain, which is hop + 1 personas long.",
            id_column="persona_id",
            rules=(
                *unique_non_null_rules("persona_id"),
                SqlRowRule(
                    "chain_ends_with_the_persona",
                    "SELECT persona_id, hop FROM {table} WHERE persona IS NULL OR length(trim(persona)) = 0 "
                    "OR list_extract(chain, -1) IS DISTINCT FROM persona OR len(chain) <> hop + 1",
                ),
            ),
        ),
    ]


def case2code_checks(b: QualityBounds) -> list[CheckSpec]:
    table = case2code.CASES_TABLE
    return [
        integrity_check(
            asset=asset_name(case2code.case2code),
            table=table,
            description="case_id unique and non-null; as many outputs as inputs (n_pairs >= 2), outputs that "
            "vary, 1 <= shown_pairs <= n_pairs, and a prompt and program on every row.",
            id_column="case_id",
            rules=(
                *unique_non_null_rules("case_id"),
                SqlRowRule(
                    "pairs_consistent",
                    "SELECT case_id, n_pairs FROM {table} WHERE len(inputs) <> n_pairs OR len(outputs) <> n_pairs "
                    "OR n_pairs < 2 OR len(list_distinct(outputs)) < 2 OR shown_pairs < 1 OR shown_pairs > n_pairs "
                    "OR prompt IS NULL OR program IS NULL",
                ),
            ),
        ),
    ]


def check_specs(b: QualityBounds) -> list[CheckSpec]:
    """The synthesis group's checks, in DAG order."""
    return [*personas_checks(b), *textbook_prompts_checks(b), *synthetic_textbook_checks(b), *code_exercises_checks(b),
            *case2code_checks(b)]
