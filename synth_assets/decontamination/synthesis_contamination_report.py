"""`synthesis_contamination_report`: every `case2code` program and every persona scored
against the benchmarks (HumanEval by default) with the signals and thresholds of the
exercises' `contamination_report`, one row per item with a verdict and a reason, so
the release can leave contaminated rows out of its `case2code` and `personas` configs.

A case2code program is scored as code (n-gram, MinHash, AST, embedding, and the
functional signal: its function run against the official tests of its candidate
problems). A persona is prose: it is scored as a docstring, so the n-gram signal
compares it with the benchmark docstrings and the embedding signal with the problems,
while the code signals (MinHash, AST, functional) find nothing to compare and stay
silent.
"""


import dagster as dg
import polars as pl

from resources.llm import LLMResource
from resources.warehouse import Warehouse
from synth_assets.automation import on_upstream_change
from synth_assets.common.tables import counts_markdown, table_result
from synth_assets.decontamination.contamination_report import CODE_VERSION, CONTAMINATED, DecontaminationConfig
from synth_assets.decontamination.rekeyed_report import EXERCISE_KEYS, SCORE_SCHEMA, score_and_write
from synth_assets.synthesis.case2code import CASES_TABLE
from synth_assets.synthesis.personas import PERSONAS_TABLE

SYNTHESIS_REPORT_TABLE = "synthesis_contamination_report"
ITEM_SCHEMA = {"item_id": pl.Utf8, "source_table": pl.Utf8, "function_name": pl.Utf8, "source": pl.Utf8}
SYNTHESIS_REPORT_SCHEMA = {"item_id": pl.Utf8, "source_table": pl.Utf8, "function_name": pl.Utf8, **SCORE_SCHEMA}


def persona_source(persona: str) -> str:
    """A persona as the signals' docstring (a module docstring and no code); its double
    quotes become single ones so no quote can close the docstring early."""
    return '"""' + (persona or "").replace('"', "'") + '"""\n'


def synthesis_items(cases: pl.DataFrame | None, personas: pl.DataFrame | None) -> pl.DataFrame:
    """One row per item to score: case2code rows (`item_id` = case_id, the program as
    code, its function name for the functional signal) then personas (`item_id` =
    persona_id, the persona as a docstring)."""
    rows = []
    if cases is not None:
        rows += [{"item_id": case_id, "source_table": CASES_TABLE, "function_name": name, "source": program}
                 for case_id, name, program in zip(cases["case_id"], cases["function_name"], cases["program"])]
    if personas is not None:
        rows += [{"item_id": persona_id, "source_table": PERSONAS_TABLE, "function_name": None,
                  "source": persona_source(persona)}
                 for persona_id, persona in zip(personas["persona_id"], personas["persona"])]
    return pl.DataFrame(rows, schema=ITEM_SCHEMA)


def item_report(items: pl.DataFrame, report: pl.DataFrame) -> pl.DataFrame:
    """The exercise-shaped report re-keyed by item (same row order)."""
    return (items.select("item_id", "source_table", "function_name")
            .hstack(report.drop(EXERCISE_KEYS))
            .select(list(SYNTHESIS_REPORT_SCHEMA)))


def contaminated_ids(report: pl.DataFrame, source_table: str) -> list[str]:
    """The ids of `source_table` rows the release must leave out."""
    flagged = report.filter((pl.col("source_table") == source_table) & (pl.col("verdict") == CONTAMINATED))
    return sorted(flagged["item_id"].to_list())


def release_filter(source_table: str, id_column: str) -> tuple[str, str]:
    """A release gate (condition, reason) for `case2code` (case_id) or `personas`
    (persona_id): rows this report did not find contaminated."""
    flagged = (f"SELECT item_id FROM {SYNTHESIS_REPORT_TABLE} "
               f"WHERE source_table = '{source_table}' AND verdict = '{CONTAMINATED}'")
    return (f"{id_column} NOT IN ({flagged})",
            f"contaminated: matches a benchmark problem (see `SELECT * FROM {SYNTHESIS_REPORT_TABLE} "
            f"WHERE source_table = '{source_table}' AND verdict = '{CONTAMINATED}'`)")


def _read(lake, table: str, columns: str, order: str) -> pl.DataFrame:
    if not lake.table_exists(table):
        raise dg.Failure(f"{table} does not exist yet; materialize it first")
    return lake.query(f'SELECT {columns} FROM "{table}" ORDER BY {order}')


@dg.asset(
    name=SYNTHESIS_REPORT_TABLE,
    deps=[dg.AssetKey(CASES_TABLE), dg.AssetKey(PERSONAS_TABLE)],
    group_name="decontamination",
    kinds={"duckdb", "python", "openai"},
    owners=["team:synth-assets"],
    code_version=CODE_VERSION,
    automation_condition=on_upstream_change(),
)
def synthesis_contamination_report(
    context: dg.AssetExecutionContext, config: DecontaminationConfig, warehouse: Warehouse, llm: LLMResource
) -> dg.MaterializeResult:
    """Every `case2code` program and every persona of `personas` scored against the
    benchmark problems with the signals and thresholds of `contamination_report`
    (phi-1 section 5: 13-gram overlap, MinHash, AST, embedding, functional; the LLM
    judge when on). One row per item: `item_id` (the case_id or persona_id),
    `source_table` (`case2code` / `personas`), `function_name` (case2code), the scores,
    `verdict` (`clean` / `contaminated`) and `reason` (which signal fired, against which
    task). Programs are scored as code; a persona as a docstring, so only the text
    signals (n-gram against the benchmark docstrings, embedding) can fire for it. The
    release leaves out the rows whose verdict is `contaminated`; their ids are in the
    metadata."""
    with warehouse.materialization(context) as lake:
        cases = _read(lake, CASES_TABLE, "case_id, function_name, program", "case_id")
        persona_rows = _read(lake, PERSONAS_TABLE, "persona_id, persona", "persona_id")
        items = synthesis_items(cases, persona_rows)
        scored = score_and_write(
            context, config, warehouse, llm, lake, SYNTHESIS_REPORT_TABLE,
            ids=items["item_id"].to_list(), sources=items["source"].to_list(),
            names=items["function_name"].to_list(), rekey=lambda report: item_report(items, report),
        )
        if scored.embedding_status.get("error"):
            context.log.warning(f"embeddings failed, embedding signal skipped: {scored.embedding_status['error']}")
        table, metadata = scored.table, scored.metadata
        flagged_cases, flagged_personas = contaminated_ids(table, CASES_TABLE), contaminated_ids(table, PERSONAS_TABLE)
        verdicts = {f"{row['source_table']}: {row['verdict']}": row["n"] for row in
                    table.group_by("source_table", "verdict").len(name="n").iter_rows(named=True)}
        metadata.update({
            "cases": cases.height, "personas": persona_rows.height,
            "contaminated_cases": len(flagged_cases), "contaminated_personas": len(flagged_personas),
            "contaminated_case_ids": ", ".join(flagged_cases[:50]) or "none",
            "contaminated_persona_ids": ", ".join(flagged_personas[:50]) or "none",
            "verdicts": dg.MetadataValue.md(counts_markdown(verdicts)),
        })
        context.log.info(f"{SYNTHESIS_REPORT_TABLE}: {len(flagged_cases)} of {cases.height} case2code programs and "
                         f"{len(flagged_personas)} of {persona_rows.height} personas contaminated")
    return table_result(warehouse, SYNTHESIS_REPORT_TABLE, {**metadata, **scored.llm_metadata},
                        snapshot_id=lake.snapshot_id_published)
