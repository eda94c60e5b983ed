"""The dataset card's instruction section: rows per method, what the filters dropped and
why, and the judge's score distribution per dataset. `training_data_release` appends
`instruction_card_section(warehouse)` to its card; every figure is one SQL aggregate."""

from __future__ import annotations

from synth_assets.common.tables import markdown_table
from synth_assets.decontamination.instructions_contamination_report import INSTRUCTIONS_REPORT_TABLE as CONTAMINATION_TABLE
from synth_assets.instructions import alpaca_instructions, evol_instruct, llm_judge, self_instruct, self_qa
from synth_assets.instructions.judge_rubrics import SCORE_MAX, SCORE_MIN

METHODS = (self_instruct, alpaca_instructions, self_qa, evol_instruct)
TOP_REASONS = 5


def _count(lake, sql: str) -> int:
    return int(lake.query(sql).item())


def instruction_card_section(lake) -> str:
    """Markdown for the card (tables that do not exist are reported as such)."""
    judged = lake.table_exists(llm_judge.TABLE)
    checked = lake.table_exists(CONTAMINATION_TABLE)
    rows, reasons = [], []
    for module in METHODS:
        if not lake.table_exists(module.TABLE):
            rows.append((module.TABLE, "not materialized", "-", "-", "-", "-", "-"))
            continue
        n_rows = _count(lake, f'SELECT count(*) FROM "{module.TABLE}"')
        n_rejected = _count(lake, f'SELECT count(*) FROM "{module.REJECTS_TABLE}"') if lake.table_exists(module.REJECTS_TABLE) else 0
        kept = mean = "-"
        if judged:
            stats = lake.query(f"SELECT count(*) FILTER (WHERE kept) AS kept, round(avg(score), 2) AS mean FROM {llm_judge.TABLE} WHERE dataset = ?", [module.TABLE]).row(0)
            kept, mean = stats[0], "-" if stats[1] is None else stats[1]
        contaminated = "-"
        if checked:
            contaminated = _count(lake, f"SELECT count(*) FROM {CONTAMINATION_TABLE} WHERE dataset = '{module.TABLE}' AND verdict = 'contaminated'")
        rows.append((module.TABLE, n_rows, n_rejected, kept, mean, contaminated, module.METHOD))
        if n_rejected:
            top = lake.query(
                f"SELECT split_part(reason, ':', 1) AS reason, count(*) AS n FROM \"{module.REJECTS_TABLE}\" "
                f"GROUP BY 1 ORDER BY n DESC, reason LIMIT {TOP_REASONS}"
            ).rows()
            reasons.append(f"- `{module.TABLE}`: " + ", ".join(f"{reason} ({n})" for reason, n in top))
    parts = [
        "## Instruction data",
        "",
        "Rows in the `instruction` / `input` / `output` layout, one config per method. Every dropped candidate "
        "is kept in the warehouse (`<table>_rejects`, with a `reason`).",
        "",
        markdown_table(rows, ["table", "rows generated", "candidates dropped", "kept by the judge", "mean judge score",
                              "contaminated (HumanEval)", "method"]),
        "",
        "Dropped by the method's own filters (top reasons):",
        "",
        "\n".join(reasons) or "- nothing dropped",
    ]
    if judged:
        distribution = lake.query(
            f"SELECT dataset, any_value(threshold) AS threshold, "
            + ", ".join(f"count(*) FILTER (WHERE score = {s}) AS s{s}" for s in range(SCORE_MIN, SCORE_MAX + 1))
            + f", count(*) FILTER (WHERE score IS NULL) AS failed FROM {llm_judge.TABLE} GROUP BY dataset ORDER BY dataset"
        )
        parts += [
            "",
            f"LLM judge (AlpaGasus): score {SCORE_MIN}-{SCORE_MAX} per row; a row is released when its score reaches "
            "its dataset's threshold. Scores by dataset:",
            "",
            markdown_table(distribution.rows(), ["dataset", "threshold", *map(str, range(SCORE_MIN, SCORE_MAX + 1)), "judge failed"]),
            "",
            "Dropped rows and the judge's rationale: `SELECT * FROM llm_judge WHERE NOT kept`. On the bundled "
            "135M model the judge is weak: its scores are noisy and should not be read as quality.",
        ]
    return "\n".join(parts) + "\n"
