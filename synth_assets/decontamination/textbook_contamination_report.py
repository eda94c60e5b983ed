"""`textbook_contamination_report`: every Python code block of `synthetic_textbook`
scored against the benchmarks with the same signals and thresholds as the exercises
(issue 17 point 4), one row per block with a verdict and a reason."""

import hashlib

import dagster as dg
import polars as pl

from resources.llm import LLMResource
from resources.warehouse import Warehouse
from synth_assets.automation import on_upstream_change
from synth_assets.common.tables import table_result
from synth_assets.decontamination.contamination_report import CODE_VERSION, DecontaminationConfig
from synth_assets.decontamination.rekeyed_report import EXERCISE_KEYS, SCORE_SCHEMA, score_and_write
from synth_assets.synthesis.synthetic_textbook import SECTIONS_TABLE, code_blocks

TEXTBOOK_REPORT_TABLE = "textbook_contamination_report"
BLOCK_SCHEMA = {"block_id": pl.Utf8, "section_id": pl.Utf8, "block_index": pl.Int64, "code": pl.Utf8}
TEXTBOOK_REPORT_SCHEMA = {"block_id": pl.Utf8, "section_id": pl.Utf8, "block_index": pl.Int64, **SCORE_SCHEMA}


def textbook_blocks(sections: pl.DataFrame) -> pl.DataFrame:
    """One row per fenced code block of each section; `block_id` is a content hash of
    the section id, the block's position and its code (a re-run gives the same ids)."""
    rows = []
    for section_id, text in zip(sections["section_id"].to_list(), sections["text"].to_list()):
        for position, code in enumerate(code_blocks(text or "")):
            digest = hashlib.sha256(f"{section_id}|{position}|{code}".encode()).hexdigest()[:16]
            rows.append({"block_id": digest, "section_id": section_id, "block_index": position, "code": code})
    return pl.DataFrame(rows, schema=BLOCK_SCHEMA)


def block_report(blocks: pl.DataFrame, report: pl.DataFrame) -> pl.DataFrame:
    """The exercise-shaped report re-keyed by block (same row order)."""
    keys = blocks.select("block_id", "section_id", "block_index")
    return keys.hstack(report.drop(EXERCISE_KEYS)).select(list(TEXTBOOK_REPORT_SCHEMA))


@dg.asset(
    name=TEXTBOOK_REPORT_TABLE,
    deps=[dg.AssetKey(SECTIONS_TABLE)],
    group_name="decontamination",
    kinds={"duckdb", "python"},
    owners=["team:synth-assets"],
    code_version=CODE_VERSION,
    automation_condition=on_upstream_change(),
)
def textbook_contamination_report(
    context: dg.AssetExecutionContext, config: DecontaminationConfig, warehouse: Warehouse, llm: LLMResource
) -> dg.MaterializeResult:
    """Every Python code block of `synthetic_textbook` scored against the benchmark
    problems with the signals and thresholds of `contamination_report` (n-gram, MinHash,
    AST, embedding, functional when a block defines a function, the LLM judge when on).
    One row per block: `block_id`, `section_id`, `block_index`, the scores, `verdict`
    (`clean` / `contaminated`) and `reason`. Sections with contaminated blocks are
    listed in metadata for the release to leave out."""
    with warehouse.materialization(context) as lake:
        if not lake.table_exists(SECTIONS_TABLE):
            raise dg.Failure(f"{SECTIONS_TABLE} does not exist yet; materialize it first")
        sections = lake.query(f'SELECT section_id, text FROM "{SECTIONS_TABLE}" ORDER BY section_id')
        blocks = textbook_blocks(sections)
        scored = score_and_write(
            context, config, warehouse, llm, lake, TEXTBOOK_REPORT_TABLE,
            ids=blocks["block_id"].to_list(), sources=blocks["code"].to_list(),
            rekey=lambda report: block_report(blocks, report),
        )
        table, metadata = scored.table, scored.metadata
        flagged = table.filter(pl.col("verdict") != "clean")["section_id"].unique().sort().to_list()
        metadata.update({"sections": sections.height, "blocks": table.height,
                         "sections_with_contaminated_blocks": ", ".join(flagged[:50]) or "none"})
        context.log.info(f"{TEXTBOOK_REPORT_TABLE}: {metadata['contaminated']} of {table.height} code blocks contaminated")
    return table_result(warehouse, TEXTBOOK_REPORT_TABLE, {**metadata, **scored.llm_metadata}, snapshot_id=lake.snapshot_id_published)
