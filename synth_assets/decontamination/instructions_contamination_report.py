"""`instructions_contamination_report`: every row of the four instruction tables scored
against the benchmarks with the signals and thresholds of the exercises (issue 15: "all
instruction data is decontaminated against HumanEval like the exercises"; issue 17 point
4), one row per instruction row with a verdict and a reason. The release leaves out the
rows whose verdict is `contaminated`.

What the signals see of a row: its prose (instruction, and input/output when they hold no
Python) as the docstring, and the Python of its input and output (fenced blocks, or text
that parses as statements: `instructions.execution.extract_python`) as the code. So a
HumanEval docstring copied into an instruction fires the n-gram signal on docstrings, and a
canonical solution copied into an output fires the code signals, as for an exercise.
"""

import dagster as dg
import polars as pl

from resources.llm import LLMResource
from resources.warehouse import Warehouse
from synth_assets.automation import on_upstream_change
from synth_assets.common.tables import table_result
from synth_assets.decontamination.contamination_report import CODE_VERSION, CONTAMINATED, DecontaminationConfig
from synth_assets.decontamination.rekeyed_report import EXERCISE_KEYS, SCORE_SCHEMA, score_and_write
from synth_assets.instructions import alpaca_instructions, evol_instruct, self_instruct, self_qa
from synth_assets.instructions.execution import extract_python
from synth_assets.settings import with_settings

INSTRUCTIONS_REPORT_TABLE = "instructions_contamination_report"
INSTRUCTION_MODULES = (self_instruct, alpaca_instructions, self_qa, evol_instruct)
INSTRUCTION_TABLES = tuple(module.TABLE for module in INSTRUCTION_MODULES)
INSTRUCTIONS_REPORT_SCHEMA = {"dataset": pl.Utf8, "instruction_id": pl.Utf8, "has_code": pl.Boolean, **SCORE_SCHEMA}


def instruction_document(instruction: str, input_text: str, output: str) -> tuple[str, bool]:
    """(the Python source the signals read, whether the row holds any code): the prose as a
    module docstring, then the code of the input and the output."""
    codes, prose = [], [instruction or ""]
    for part in (input_text or "", output or ""):
        code = extract_python(part)
        if code:
            codes.append(code)
        elif part.strip():
            prose.append(part)
    docstring = "\n".join(p.strip() for p in prose if p.strip()).replace('"""', "'''")
    return f'"""{docstring}\n"""\n' + "\n".join(codes), bool(codes)


def read_instruction_rows(lake) -> pl.DataFrame:
    """(dataset, instruction_id, instruction, input, output) of every instruction table
    that exists, in (dataset, instruction_id) order."""
    parts = [
        lake.query(f"SELECT '{table}' AS dataset, instruction_id, instruction, input, output FROM \"{table}\" ORDER BY instruction_id")
        for table in INSTRUCTION_TABLES if lake.table_exists(table)
    ]
    schema = {"dataset": pl.Utf8, "instruction_id": pl.Utf8, "instruction": pl.Utf8, "input": pl.Utf8, "output": pl.Utf8}
    return pl.concat(parts) if parts else pl.DataFrame(schema=schema)


def instruction_report(rows: pl.DataFrame, has_code: list[bool], report: pl.DataFrame) -> pl.DataFrame:
    """The exercise-shaped report re-keyed by (dataset, instruction_id) (same row order)."""
    head = rows.select("dataset", "instruction_id").with_columns(pl.Series("has_code", has_code, dtype=pl.Boolean))
    return head.hstack(report.drop(EXERCISE_KEYS)).select(list(INSTRUCTIONS_REPORT_SCHEMA))


def release_filter(dataset: str) -> tuple[str, str]:
    """A release `row_filter` for one instruction table: rows not found contaminated."""
    return (
        f"instruction_id NOT IN (SELECT instruction_id FROM {INSTRUCTIONS_REPORT_TABLE} "
        f"WHERE dataset = '{dataset}' AND verdict = '{CONTAMINATED}')",
        f"contaminated: matches a benchmark problem (see `SELECT * FROM {INSTRUCTIONS_REPORT_TABLE} "
        f"WHERE dataset = '{dataset}' AND verdict = '{CONTAMINATED}'`)",
    )


@dg.asset(
    name=INSTRUCTIONS_REPORT_TABLE,
    deps=[dg.AssetKey(table) for table in INSTRUCTION_TABLES],
    group_name="decontamination",
    kinds={"duckdb", "python"},
    owners=["team:synth-assets"],
    code_version=CODE_VERSION,
    automation_condition=on_upstream_change(),
)
def instructions_contamination_report(
    context: dg.AssetExecutionContext, config: DecontaminationConfig, warehouse: Warehouse, llm: LLMResource
) -> dg.MaterializeResult:
    """Every row of `self_instruct`, `alpaca_instructions`, `self_qa` and `evol_instruct`
    scored against the benchmark problems (HumanEval by default) with the signals and
    thresholds of `contamination_report`: the instruction and any prose as the docstring
    (n-gram), the Python of input and output as the code (n-gram, MinHash, AST,
    embedding, functional when it defines a function). One row per instruction row:
    `dataset`, `instruction_id`, `has_code`, the scores, `verdict` (`clean` /
    `contaminated`) and `reason`. `training_data_release` leaves the contaminated rows out."""
    config = with_settings(config, INSTRUCTIONS_REPORT_TABLE)
    with warehouse.materialization(context) as lake:
        rows = read_instruction_rows(lake)
        documents = [instruction_document(*r) for r in rows.select("instruction", "input", "output").iter_rows()]
        sources, has_code = [d for d, _ in documents], [c for _, c in documents]
        ids = [f"{d}:{i}" for d, i in rows.select("dataset", "instruction_id").iter_rows()]
        scored = score_and_write(
            context, config, warehouse, llm, lake, INSTRUCTIONS_REPORT_TABLE, ids=ids, sources=sources,
            rekey=lambda report: instruction_report(rows, has_code, report),
        )
        table, metadata = scored.table, scored.metadata
        by_dataset = table.group_by("dataset").agg(pl.len().alias("rows"), (pl.col("verdict") == CONTAMINATED).sum().alias("contaminated"))
        metadata.update({
            "rows_by_dataset": dg.MetadataValue.json({d: int(n) for d, n, _ in by_dataset.sort("dataset").iter_rows()}),
            "contaminated_by_dataset": dg.MetadataValue.json({d: int(c) for d, _, c in by_dataset.sort("dataset").iter_rows()}),
            "with_code": int(sum(has_code)),
        })
        context.log.info(f"{INSTRUCTIONS_REPORT_TABLE}: {metadata['contaminated']} of {table.height} instruction rows contaminated")
    return table_result(warehouse, INSTRUCTIONS_REPORT_TABLE, {**metadata, **scored.llm_metadata}, snapshot_id=lake.snapshot_id_published)
