"""What "good data" means for every asset: one expectation suite (GX 1.x) plus the
full-table SQL and Python rules per asset, with every floor and bound in one dataclass.

Each asset gets up to two checks (built in `quality_checks.checks`):

- `<table>_integrity`, blocking (ERROR): failures that would poison downstream assets --
  ids unique and non-null, scores in range, exercises that parse, nothing contaminated.
  Automation waits for these (`all_deps_blocking_checks_passed`).
- `<table>_quality_floors`, non-blocking (WARN): diversity floors, length bounds, known
  source names: figures a human should look at but that do not stop the pipeline.

(`dedup_removed` is written by the `raw_stack_plus` asset, so its check is attached there.)

Rules come in three kinds, all reported the same way (`gx_runner.RuleOutcome`):

- GX expectations (row-level: nulls, ranges, sets, regexes, lengths), validated on the
  whole table or, above `QualityBounds.gx_sample_threshold_rows`, on a seeded reservoir
  sample (only the columns the suite names are loaded);
- `SqlRowRule`: a query that selects offending rows, run on the full table in DuckDB
  (uniqueness, references between tables, anti-joins); zero rows is a pass;
- `SqlMetricRule` / `FrameRule`: one figure computed in SQL or Python (distinct ratios,
  distinct-2, "every function parses") compared with a floor.

SQL text uses `{table}` for the asset's table; column names are those of ARCHITECTURE.md
and the producing modules (a rule on a missing column fails with DuckDB's binder error,
which is what a broken contract should do).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl

from quality_checks.gx_runner import RuleOutcome, import_gx

# ---------------------------------------------------------------------------------------
# Bounds: the one place to change a floor.
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContaminationThreshold:
    """A kept exercise must not have `score_column >= threshold` in contamination_report
    (counted only where `task_column`, the matched benchmark task, is set)."""

    score_column: str
    threshold: float
    task_column: str | None = None


@dataclass(frozen=True)
class QualityBounds:
    """Floors and bounds for every check. Defaults are the project's published values;
    change them here (or pass a custom instance to `build_asset_checks`)."""

    # Sampling: GX row-level suites run on the whole table up to this size, above it on
    # a seeded `USING SAMPLE reservoir(gx_sample_rows ROWS) REPEATABLE (sample_seed)`.
    # SQL rules always see the full table.
    gx_sample_threshold_rows: int = 50_000
    gx_sample_rows: int = 50_000
    sample_seed: int = 20230620  # the phi-1 paper's arXiv date; any fixed seed will do

    # raw_stack_plus: `source` is the configured source name (ingest.SourceSpec.name,
    # default: the kind). Known: the three reader kinds (sources.SOURCE_KINDS: The Stack,
    # StackOverflow, a python tree, phi-1 section 2.1) and the default stdlib source. A
    # source outside the set is a warning (a new source someone forgot to list), not a
    # block. doc_id: sha256 hex of the normalised content, 16+ chars (ARCHITECTURE.md).
    known_sources: tuple[str, ...] = ("stdlib", "python_tree", "the_stack", "stackoverflow")
    doc_id_regex: str = r"^[0-9a-f]{16,64}$"

    # annotated_sample: phi-1 section 2.1 asks GPT-4 for an educational value; the
    # project's prompt grades 0-5 (annotate.SCORE_RANGE).
    educational_score_min: int = 0
    educational_score_max: int = 5

    # quality_classifier: the newest version (by created_at, the one filter.py uses by
    # default) must beat the majority-class baseline in CV (classify.beats_baseline).
    # Older rows are history and may have lost. Without a `beats_baseline` column these
    # metrics_json keys are tried in order.
    baseline_metric_keys: tuple[str, ...] = ("beats_baseline",)

    # synthetic_textbook: section length bounds in characters (warning only). phi-1's
    # textbook sections are short lessons: ~100 tokens (~400 chars) is the least that
    # holds an explanation plus a snippet; textbook.py caps a section at max_tokens=350
    # (~1.4k chars), so 12_000 leaves room for a raised cap and flags runaway output.
    textbook_min_chars: int = 400
    textbook_max_chars: int = 12_000
    # Corpus-level distinct-2 (unique word bigrams / all bigrams, Li et al. 2016) over
    # the sections; phi-1 section 2.2 stresses diversity. Below 0.35 the sections repeat
    # each other heavily.
    textbook_distinct2_floor: float = 0.35
    # Share of sections whose fenced code all parses (textbook.py `code_blocks_parse`;
    # phi-1 textbooks interleave prose with runnable snippets). Sections without parseable
    # code are kept by design, so this is a floor on the mix, not a per-row rule.
    textbook_code_parse_floor: float = 0.5
    # textbook_prompts: share of distinct (topic, subtopic, audience) slots among prompts.
    prompt_slot_distinct_floor: float = 0.5

    # code_exercises: distinct function names / exercises (phi-1 CodeExercises are
    # docstring-completion tasks; repeated names mean repeated tasks).
    exercise_function_name_distinct_floor: float = 0.6

    # decontamination (phi-1 section 5): no kept exercise may have a signal at or above
    # its threshold (a signal fires at score >= threshold when it names a benchmark task,
    # as in similarity.fired_signals). Defaults mirror decontaminate.DecontaminationConfig;
    # a run launched with looser thresholds is flagged here against the published ones.
    contamination_thresholds: tuple[ContaminationThreshold, ...] = (
        # phi-1 5.1: any shared 13-gram (threshold 0.0 = any overlap with a named task)
        ContaminationThreshold("max_ngram_overlap", 0.0, "ngram_task_id"),
        ContaminationThreshold("longest_shared_ngram", 13, "ngram_task_id"),
        ContaminationThreshold("minhash_jaccard", 0.5, "minhash_task_id"),
        # phi-1 5.2 sweeps the AST match rate; project default 0.8
        ContaminationThreshold("ast_match_rate", 0.8, "ast_task_id"),
        ContaminationThreshold("embedding_cosine", 0.95, None),
    )
    clean_verdict: str = "clean"
    contaminated_verdict: str = "contaminated"


DEFAULT_BOUNDS = QualityBounds()

# ---------------------------------------------------------------------------------------
# Rule types
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SqlRowRule:
    """`sql` selects the offending rows (put the id column first); none is a pass."""

    name: str
    sql: str


@dataclass(frozen=True)
class SqlMetricRule:
    """`sql` returns one number; it must lie within [min_value, max_value]. A NULL (empty
    table) passes only if `null_passes`."""

    name: str
    sql: str
    min_value: float | None = None
    max_value: float | None = None
    null_passes: bool = False


@dataclass(frozen=True)
class FrameRule:
    """`sql` loads a frame; `evaluate(frame)` returns the outcome (Python-side logic such
    as `ast.parse` or distinct-n)."""

    name: str
    sql: str
    evaluate: Callable[[str, pl.DataFrame], RuleOutcome]


Rule = SqlRowRule | SqlMetricRule | FrameRule


@dataclass(frozen=True)
class CheckSpec:
    """One asset check: the asset it guards, its table, whether it blocks, its rules and
    (optionally) a GX suite factory."""

    asset: str
    table: str
    name: str
    blocking: bool
    description: str
    id_column: str | None
    rules: tuple[Rule, ...] = ()
    gx_suite: Callable[[], Any] | None = None
    additional_deps: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------
# Reusable pieces
# ---------------------------------------------------------------------------------------


def unique_non_null_rules(column: str) -> tuple[SqlRowRule, SqlRowRule]:
    """Full-table uniqueness and non-null for an id column."""
    return (
        SqlRowRule(
            f"{column}_unique",
            f"SELECT {column}, count(*) AS copies FROM {{table}} WHERE {column} IS NOT NULL "
            f"GROUP BY {column} HAVING count(*) > 1 ORDER BY copies DESC, {column}",
        ),
        SqlRowRule(f"{column}_not_null", f"SELECT * FROM {{table}} WHERE {column} IS NULL"),
    )


def new_suite(name: str, expectations: list[Any]) -> Any:
    gx = import_gx()
    return gx.ExpectationSuite(name=name, expectations=expectations)


def _sql_list(values: tuple[str, ...] | list[str]) -> str:
    return ", ".join("'" + value.replace("'", "''") + "'" for value in values)


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
    """Every exercise's function parses (`ast.parse`): the `source` column (exercises.py
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


# ---------------------------------------------------------------------------------------
# Per-asset specs
# ---------------------------------------------------------------------------------------


def raw_stack_plus_checks(b: QualityBounds) -> list[CheckSpec]:
    def known_sources_suite():
        e = import_gx().expectations
        return new_suite(
            "raw_stack_plus_sources",
            [e.ExpectColumnValuesToBeInSet(column="source", value_set=list(b.known_sources))],
        )

    def suite():
        gx = import_gx()
        e = gx.expectations
        return new_suite(
            "raw_stack_plus",
            [
                e.ExpectColumnValuesToNotBeNull(column="doc_id"),
                e.ExpectColumnValuesToMatchRegex(column="doc_id", regex=b.doc_id_regex),
                e.ExpectColumnValuesToNotBeNull(column="source"),
                e.ExpectColumnValuesToBeBetween(column="n_chars", min_value=1),
                e.ExpectColumnValuesToBeBetween(column="n_lines", min_value=1),
                e.ExpectColumnValuesToBeBetween(column="n_tokens", min_value=0),
                e.ExpectColumnValuesToNotBeNull(column="parses_as_python"),
            ],
        )

    return [
        CheckSpec(
            asset="raw_stack_plus",
            table="raw_stack_plus",
            name="raw_stack_plus_integrity",
            blocking=True,
            description="doc_id unique, non-null sha256 hex; content non-empty with n_chars = its length > 0; "
            "source named.",
            id_column="doc_id",
            rules=(
                *unique_non_null_rules("doc_id"),
                SqlRowRule(
                    "content_non_empty",
                    "SELECT doc_id, n_chars FROM {table} WHERE content IS NULL OR length(trim(content)) = 0",
                ),
                SqlRowRule(
                    "n_chars_positive_and_matches_content",
                    "SELECT doc_id, n_chars, length(content) AS content_chars FROM {table} "
                    "WHERE n_chars IS NULL OR n_chars <= 0 OR n_chars <> length(content)",
                ),
                SqlMetricRule("row_count", "SELECT count(*) FROM {table}", min_value=1),
            ),
            gx_suite=suite,
        ),
        CheckSpec(
            asset="raw_stack_plus",
            table="raw_stack_plus",
            name="raw_stack_plus_quality_floors",
            blocking=False,
            description=f"source in the known set ({', '.join(b.known_sources)}).",
            id_column="doc_id",
            rules=(
                SqlRowRule(
                    "source_known",
                    "SELECT source, count(*) AS documents FROM {table} "
                    f"WHERE source IS NULL OR source NOT IN ({_sql_list(b.known_sources)}) GROUP BY source",
                ),
            ),
            gx_suite=known_sources_suite,
        ),
    ]


def dedup_removed_checks(b: QualityBounds) -> list[CheckSpec]:
    def suite():
        e = import_gx().expectations
        return new_suite(
            "dedup_removed",
            [
                e.ExpectColumnValuesToNotBeNull(column="doc_id"),
                e.ExpectColumnValuesToNotBeNull(column="near_duplicate_of"),
                e.ExpectColumnValuesToBeInSet(column="reason", value_set=["exact_duplicate", "near_duplicate"]),
                e.ExpectColumnValuesToBeBetween(column="jaccard", min_value=0.0, max_value=1.0),
            ],
        )

    return [
        CheckSpec(
            # dedup_removed is written by the raw_stack_plus asset (ingest), so its check
            # guards raw_stack_plus.
            asset="raw_stack_plus",
            table="dedup_removed",
            name="dedup_removed_integrity",
            blocking=True,
            description="One row per dropped copy, (doc_id, source, origin) unique; every removed "
            "document points at a kept doc_id in raw_stack_plus; an exact duplicate shares the kept "
            "doc_id, a near duplicate is itself not kept.",
            id_column="doc_id",
            rules=(
                # ingest.finalise_tables: exact copies share the kept doc_id, so doc_id
                # alone repeats; a dropped copy is one (doc_id, source, origin).
                SqlRowRule(
                    "doc_id_source_origin_unique",
                    "SELECT doc_id, source, origin, count(*) AS copies FROM {table} "
                    "GROUP BY doc_id, source, origin HAVING count(*) > 1 ORDER BY copies DESC, doc_id",
                ),
                SqlRowRule("doc_id_not_null", "SELECT * FROM {table} WHERE doc_id IS NULL"),
                SqlRowRule(
                    "near_duplicate_of_is_kept",
                    "SELECT d.doc_id, d.near_duplicate_of, d.reason FROM {table} d "
                    "ANTI JOIN raw_stack_plus r ON r.doc_id = d.near_duplicate_of",
                ),
                SqlRowRule(
                    "near_duplicate_not_kept",
                    "SELECT d.doc_id, d.reason FROM {table} d SEMI JOIN raw_stack_plus r ON r.doc_id = d.doc_id "
                    "WHERE d.reason = 'near_duplicate'",
                ),
                SqlRowRule(
                    "exact_duplicate_shares_doc_id",
                    "SELECT doc_id, near_duplicate_of FROM {table} "
                    "WHERE reason = 'exact_duplicate' AND doc_id IS DISTINCT FROM near_duplicate_of",
                ),
            ),
            gx_suite=suite,
        )
    ]


def annotated_sample_checks(b: QualityBounds) -> list[CheckSpec]:
    def suite():
        e = import_gx().expectations
        return new_suite(
            "annotated_sample",
            [
                e.ExpectColumnValuesToNotBeNull(column="doc_id"),
                # GX skips nulls: a failed grading keeps a NULL score by design.
                e.ExpectColumnValuesToBeBetween(
                    column="educational_score", min_value=b.educational_score_min, max_value=b.educational_score_max
                ),
                e.ExpectColumnValuesToNotBeNull(column="status"),
            ],
        )

    lo, hi = b.educational_score_min, b.educational_score_max
    return [
        CheckSpec(
            asset="annotated_sample",
            table="annotated_sample",
            name="annotated_sample_integrity",
            blocking=True,
            description=f"doc_id unique and non-null; educational_score within {lo}-{hi} where graded; "
            "an ok row has a score.",
            id_column="doc_id",
            rules=(
                *unique_non_null_rules("doc_id"),
                SqlRowRule(
                    "educational_score_in_range",
                    f"SELECT doc_id, educational_score FROM {{table}} WHERE educational_score IS NOT NULL "
                    f"AND (educational_score < {lo} OR educational_score > {hi})",
                ),
                SqlRowRule(
                    "ok_rows_have_a_score",
                    "SELECT doc_id, status, error FROM {table} WHERE status = 'ok' AND educational_score IS NULL",
                ),
            ),
            gx_suite=suite,
        )
    ]


def quality_classifier_checks(b: QualityBounds) -> list[CheckSpec]:
    def suite():
        e = import_gx().expectations
        return new_suite(
            "quality_classifier_versions",
            [
                e.ExpectColumnValuesToNotBeNull(column="classifier_version"),
                e.ExpectColumnValuesToNotBeNull(column="metrics_json"),
                e.ExpectTableRowCountToBeBetween(min_value=1),
            ],
        )

    def beats_baseline(rule_name: str, frame: pl.DataFrame) -> RuleOutcome:
        """The newest version must beat its baseline: the column if the table has one,
        else the first of `baseline_metric_keys` found in metrics_json."""
        import json

        bad, observed_rows = [], 0
        for row in frame.iter_rows(named=True):
            observed_rows += 1
            verdict = row.get("beats_baseline")
            if verdict is None:
                try:
                    metrics = json.loads(row.get("metrics_json") or "{}")
                except (TypeError, ValueError) as exc:
                    metrics = {"_error": f"metrics_json is not JSON: {exc}"}
                verdict = next((metrics[k] for k in b.baseline_metric_keys if k in metrics), None)
            if verdict is not True:
                bad.append({"classifier_version": row.get("classifier_version"), "beats_baseline": verdict})
        observed = (
            "no classifier version" if not observed_rows
            else f"newest {frame['classifier_version'][0]}: beats_baseline={not bad}"
        )
        return RuleOutcome(rule_name, "python", not bad and observed_rows > 0, observed, "beats_baseline", len(bad), bad[:5])

    return [
        CheckSpec(
            asset="quality_classifier",
            table="quality_classifier_versions",
            name="quality_classifier_integrity",
            blocking=True,
            description="classifier_version unique and non-null; metrics recorded as JSON.",
            id_column="classifier_version",
            rules=(
                *unique_non_null_rules("classifier_version"),
                SqlRowRule(
                    "metrics_json_is_json",
                    "SELECT classifier_version FROM {table} WHERE metrics_json IS NULL OR NOT json_valid(metrics_json)",
                ),
            ),
            gx_suite=suite,
        ),
        # A classifier that does not beat the majority baseline makes filtering no better
        # than chance, but every row it scores is still valid: a WARN the UI shows with the
        # CV metrics, not a block. On the bundled 135M grader the labels are close to noise
        # (measured: CV ROC-AUC 0.48-0.53 on 35 graded stdlib files), so blocking here would
        # leave the default pipeline's filtered_textbook empty.
        CheckSpec(
            asset="quality_classifier",
            table="quality_classifier_versions",
            name="quality_classifier_quality_floors",
            blocking=False,
            description="The newest classifier (by created_at, the one filtered_textbook uses by "
            "default) beats the majority-class baseline in cross-validation.",
            id_column="classifier_version",
            rules=(
                FrameRule(
                    "newest_classifier_beats_baseline",
                    "SELECT * FROM {table} ORDER BY created_at DESC, classifier_version LIMIT 1",
                    beats_baseline,
                ),
            ),
        ),
    ]


def filtered_textbook_checks(b: QualityBounds) -> list[CheckSpec]:
    def suite():
        e = import_gx().expectations
        return new_suite(
            "filtered_textbook",
            [
                e.ExpectColumnValuesToNotBeNull(column="doc_id"),
                e.ExpectColumnValuesToNotBeNull(column="classifier_version"),
                e.ExpectColumnValuesToNotBeNull(column="quality_score"),
                e.ExpectColumnValuesToBeBetween(column="quality_score", min_value=0.0, max_value=1.0),
            ],
        )

    return [
        CheckSpec(
            asset="filtered_textbook",
            table="filtered_textbook",
            name="filtered_textbook_integrity",
            blocking=True,
            description="doc_id unique; every kept row carries a quality_score in [0, 1] and a "
            "classifier_version recorded in quality_classifier_versions.",
            id_column="doc_id",
            rules=(
                *unique_non_null_rules("doc_id"),
                SqlRowRule(
                    "quality_score_in_unit_interval",
                    "SELECT doc_id, quality_score FROM {table} WHERE quality_score IS NULL "
                    "OR quality_score < 0 OR quality_score > 1 OR isnan(quality_score)",
                ),
                SqlRowRule(
                    "classifier_version_present",
                    "SELECT doc_id, classifier_version FROM {table} WHERE classifier_version IS NULL",
                ),
                SqlRowRule(
                    "classifier_version_is_recorded",
                    "SELECT classifier_version, count(*) AS documents FROM {table} f "
                    "ANTI JOIN quality_classifier_versions v USING (classifier_version) "
                    "WHERE f.classifier_version IS NOT NULL GROUP BY classifier_version",
                ),
            ),
            gx_suite=suite,
            additional_deps=("quality_classifier",),
        )
    ]


def textbook_prompts_checks(b: QualityBounds) -> list[CheckSpec]:
    def suite():
        e = import_gx().expectations
        return new_suite(
            "textbook_prompts",
            [
                e.ExpectColumnValuesToNotBeNull(column="prompt_id"),
                e.ExpectColumnValuesToNotBeNull(column="topic"),
            ],
        )

    return [
        CheckSpec(
            asset="textbook_prompts",
            table="textbook_prompts",
            name="textbook_prompts_integrity",
            blocking=True,
            description="prompt_id unique and non-null; every prompt has a topic.",
            id_column="prompt_id",
            rules=(*unique_non_null_rules("prompt_id"),),
            gx_suite=suite,
        ),
        CheckSpec(
            asset="textbook_prompts",
            table="textbook_prompts",
            name="textbook_prompts_quality_floors",
            blocking=False,
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
    def integrity_suite():
        e = import_gx().expectations
        return new_suite(
            "synthetic_textbook",
            [
                e.ExpectColumnValuesToNotBeNull(column="section_id"),
                e.ExpectColumnValuesToNotBeNull(column="prompt_id"),
                e.ExpectColumnValueLengthsToBeBetween(column="text", min_value=1),
            ],
        )

    def length_suite():
        e = import_gx().expectations
        return new_suite(
            "synthetic_textbook_lengths",
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
        CheckSpec(
            asset="synthetic_textbook",
            table="synthetic_textbook",
            name="synthetic_textbook_integrity",
            blocking=True,
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
        CheckSpec(
            asset="synthetic_textbook",
            table="synthetic_textbook",
            name="synthetic_textbook_quality_floors",
            blocking=False,
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


def code_exercises_checks(b: QualityBounds, table: str = "code_exercises", asset: str = "code_exercises") -> list[CheckSpec]:
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
        CheckSpec(
            asset=asset,
            table=table,
            name=f"{table}_integrity",
            blocking=True,
            description="exercise_id unique and non-null; every exercise + solution parses as Python (ast.parse).",
            id_column="exercise_id",
            rules=(
                *unique_non_null_rules("exercise_id"),
                every_row_parses_rule("every_function_parses", parse_sql),
            ),
            gx_suite=suite,
        ),
        CheckSpec(
            asset=asset,
            table=table,
            name=f"{table}_quality_floors",
            blocking=False,
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


def contamination_report_checks(b: QualityBounds) -> list[CheckSpec]:
    def suite():
        e = import_gx().expectations
        return new_suite(
            "contamination_report",
            [
                e.ExpectColumnValuesToNotBeNull(column="exercise_id"),
                e.ExpectColumnValuesToBeInSet(column="verdict", value_set=[b.clean_verdict, b.contaminated_verdict]),
                e.ExpectColumnValuesToNotBeNull(column="verdict"),
            ],
        )

    return [
        CheckSpec(
            asset="contamination_report",
            table="contamination_report",
            name="contamination_report_integrity",
            blocking=True,
            description="One verdict per exercise: exercise_id unique, verdict non-null, a reason for every "
            "non-clean verdict, every code exercise judged.",
            id_column="exercise_id",
            rules=(
                *unique_non_null_rules("exercise_id"),
                SqlRowRule(
                    "non_clean_verdict_has_reason",
                    f"SELECT exercise_id, verdict FROM {{table}} WHERE verdict <> '{b.clean_verdict}' "
                    "AND (reason IS NULL OR length(trim(reason)) = 0)",
                ),
                SqlRowRule(
                    "every_exercise_judged",
                    "SELECT c.exercise_id FROM code_exercises c ANTI JOIN {table} r ON r.exercise_id = c.exercise_id",
                ),
            ),
            gx_suite=suite,
            additional_deps=("code_exercises",),
        )
    ]


def decontaminated_exercises_checks(b: QualityBounds) -> list[CheckSpec]:
    threshold_rules = tuple(
        SqlRowRule(
            f"{t.score_column}_below_{t.threshold:g}",
            f"SELECT d.exercise_id, r.{t.score_column}"
            + (f", r.{t.task_column}" if t.task_column else "")
            + " FROM {table} d JOIN contamination_report r USING (exercise_id) "
            + f"WHERE r.{t.score_column} >= {t.threshold}"
            + (f" AND r.{t.task_column} IS NOT NULL" if t.task_column else ""),
        )
        for t in b.contamination_thresholds
    )
    specs = code_exercises_checks(b, table="decontaminated_exercises", asset="decontaminated_exercises")
    integrity = specs[0]
    decontam_rules = (
        SqlRowRule(
            "report_verdict_clean",
            f"SELECT d.exercise_id, r.verdict, r.reason FROM {{table}} d LEFT JOIN contamination_report r "
            f"USING (exercise_id) WHERE r.verdict IS DISTINCT FROM '{b.clean_verdict}'",
        ),
        *threshold_rules,
    )
    specs[0] = CheckSpec(
        asset=integrity.asset,
        table=integrity.table,
        name=integrity.name,
        blocking=True,
        description=integrity.description
        + f" Every kept exercise has contamination_report verdict '{b.clean_verdict}' and every signal "
        + "below its threshold ("
        + ", ".join(f"{t.score_column} < {t.threshold:g}" for t in b.contamination_thresholds)
        + ").",
        id_column=integrity.id_column,
        rules=(*integrity.rules, *decontam_rules),
        gx_suite=integrity.gx_suite,
        additional_deps=("contamination_report",),
    )
    return specs


def cost_report_checks(b: QualityBounds) -> list[CheckSpec]:
    money = ("cost_usd", "saved_usd", "no_cache_cost_usd")
    counts = ("calls", "cache_hits", "failed_calls", "prompt_tokens", "completion_tokens", "unknown_price_calls")

    def suite():
        e = import_gx().expectations
        return new_suite(
            "cost_report",
            [e.ExpectColumnValuesToNotBeNull(column="asset_key")]
            + [e.ExpectColumnValuesToBeBetween(column=c, min_value=0) for c in (*money, *counts)],
        )

    return [
        CheckSpec(
            asset="cost_report",
            table="cost_report",
            name="cost_report_integrity",
            blocking=True,
            description="One row per asset_key; money and counts non-negative; cache hits never exceed calls.",
            id_column="asset_key",
            rules=(
                *unique_non_null_rules("asset_key"),
                SqlRowRule(
                    "cache_hits_within_calls",
                    "SELECT asset_key, calls, cache_hits, failed_calls FROM {table} "
                    "WHERE cache_hits > calls OR failed_calls > calls",
                ),
            ),
            gx_suite=suite,
        )
    ]


def training_data_release_checks(b: QualityBounds) -> list[CheckSpec]:
    def suite():
        e = import_gx().expectations
        return new_suite(
            "training_data_release",
            [
                e.ExpectColumnValuesToNotBeNull(column="config_name"),
                e.ExpectColumnValuesToMatchRegex(column="parquet_sha256", regex=r"^[0-9a-f]{64}$"),
                e.ExpectColumnValuesToBeBetween(column="rows", min_value=0),
                e.ExpectColumnValuesToBeBetween(column="rows_left_out", min_value=0),
            ],
        )

    return [
        CheckSpec(
            asset="training_data_release",
            table="training_data_release",
            name="training_data_release_integrity",
            blocking=True,
            description="One manifest row per config with a sha256 checksum; rows left out always say why.",
            id_column="config_name",
            rules=(
                *unique_non_null_rules("config_name"),
                SqlRowRule(
                    "rows_left_out_have_reason",
                    "SELECT config_name, rows_left_out FROM {table} "
                    "WHERE rows_left_out > 0 AND (left_out_reason IS NULL OR length(trim(left_out_reason)) = 0)",
                ),
            ),
            gx_suite=suite,
        )
    ]


def all_check_specs(bounds: QualityBounds = DEFAULT_BOUNDS) -> list[CheckSpec]:
    """Every check, in DAG order."""
    return [
        *raw_stack_plus_checks(bounds),
        *dedup_removed_checks(bounds),
        *annotated_sample_checks(bounds),
        *quality_classifier_checks(bounds),
        *filtered_textbook_checks(bounds),
        *textbook_prompts_checks(bounds),
        *synthetic_textbook_checks(bounds),
        *code_exercises_checks(bounds),
        *contamination_report_checks(bounds),
        *decontaminated_exercises_checks(bounds),
        *cost_report_checks(bounds),
        *training_data_release_checks(bounds),
    ]
