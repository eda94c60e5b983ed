"""`llm_judge`: AlpaGasus (Chen et al. 2023) for every generated dataset.

AlpaGasus had ChatGPT score each of Alpaca's 52k examples 0-5 and kept those at 4.5 or
more (about 9k); the model trained on them beat the one trained on all 52k (LIMA makes
the same point: quality and diversity over quantity). Here one judging step scores
every row of the synthesis and instruction tables, stores score, rationale and the
keep/drop decision per row, and the release keeps only the rows marked `kept`.
"""

from dataclasses import dataclass
from collections.abc import Callable

import dagster as dg
import polars as pl
from pydantic import Field

from resources.compute import Compute
from resources.llm import ChatRequest, LLMResource
from resources.llm.batches import on_cluster
from resources.warehouse import Warehouse
from synth_assets.automation import on_upstream_change
from synth_assets.common.tables import markdown_table, table_result
from synth_assets.settings import lasting_compute, settings_origin, with_settings
from synth_assets.instructions import alpaca_instructions, evol_instruct, self_instruct, self_qa
from synth_assets.instructions.judge_rubrics import LOCAL_LENGTHS, SCORE_MAX, SCORE_MIN, Judgement, judge_messages
from synth_assets.instructions.rows import complete_json, failure_reason
from synth_assets.synthesis import code_exercises, synthetic_textbook

TABLE = "llm_judge"
PROMPT_VERSION = "judge-v1"
CODE_VERSION = f"llm_judge-2+{PROMPT_VERSION}"
# AlpaGasus keeps ChatGPT scores >= 4.5 on 0-5, where ChatGPT also gave half points. Our
# scores are whole numbers (a schema-constrained enum), on which ">= 4.5" would mean
# "only 5": the default keeps 4 and 5 ("good" and better). Set 5 for AlpaGasus's cut.
DEFAULT_THRESHOLD = 4.0


@dataclass(frozen=True)
class JudgedDataset:
    """A table whose rows are judged: its id column, the columns to read, the rubric kind,
    and how a row becomes (instruction, input, response)."""

    name: str
    id_column: str
    columns: tuple[str, ...]
    kind: str
    render: Callable[[dict], tuple[str, str, str]]


def _textbook(row: dict) -> tuple[str, str, str]:
    return (f"Write a short textbook section about {row['topic']}: {row['subtopic']} for a {row['audience']}.", "", row["text"])


def _exercise(row: dict) -> tuple[str, str, str]:
    tests = "\n".join(row["tests"] or [])
    return ("Complete the Python function so that it does what its docstring says.", row["exercise"], f"{row['source']}\n{tests}")


def _instruction(row: dict) -> tuple[str, str, str]:
    return row["instruction"], row["input"], row["output"]


INSTRUCTION_COLUMNS = ("instruction_id", "instruction", "input", "output")
DATASETS = (
    JudgedDataset(synthetic_textbook.SECTIONS_TABLE, "section_id", ("section_id", "topic", "subtopic", "audience", "text"), "textbook", _textbook),
    JudgedDataset(code_exercises.EXERCISES_TABLE, "exercise_id", ("exercise_id", "exercise", "source", "tests"), "exercise", _exercise),
    *(
        JudgedDataset(module.TABLE, "instruction_id", INSTRUCTION_COLUMNS, "instruction", _instruction)
        for module in (self_instruct, alpaca_instructions, self_qa, evol_instruct)
    ),
)
DATASET_NAMES = tuple(d.name for d in DATASETS)

SCHEMA = {
    "dataset": pl.Utf8, "judged_id": pl.Utf8, "kind": pl.Utf8, "score": pl.Int64, "rationale": pl.Utf8,
    "threshold": pl.Float64, "kept": pl.Boolean, "reason": pl.Utf8,
    "model": pl.Utf8, "prompt_version": pl.Utf8, "cache_key": pl.Utf8,
}


class LLMJudgeConfig(dg.Config):
    default_threshold: float = Field(
        default=DEFAULT_THRESHOLD,
        description="Keep a row when its 0-5 score is at least this (AlpaGasus: 4.5 on half-point scores; 4 here on whole ones).",
    )
    thresholds: dict[str, float] = Field(default={}, description="Per-dataset thresholds, e.g. {'self_instruct': 5}.")
    datasets: list[str] = Field(default=list(DATASET_NAMES), description="Tables to judge (those that exist).")
    max_chars: int = Field(default=1500, description="Response characters shown to the judge (the bundled model has a 4k context).")
    max_tokens: int = Field(default=150, description="Completion cap for score + rationale.")
    temperature: float = Field(default=0.0, description="Judge temperature (greedy, as a grader should be).")

    def threshold(self, dataset: str) -> float:
        return float(self.thresholds.get(dataset, self.default_threshold))


def judge_requests(dataset: JudgedDataset, rows: list[dict], config: LLMJudgeConfig) -> list[ChatRequest]:
    return [
        ChatRequest(judge_messages(dataset.kind, *dataset.render(row), max_chars=config.max_chars),
                    temperature=config.temperature, max_tokens=config.max_tokens, row_id=str(row[dataset.id_column]))
        for row in rows
    ]


def verdict_rows(dataset: JudgedDataset, rows: list[dict], results: list, threshold: float, model: str) -> list[dict]:
    """One judge row per input row: the score and rationale, kept when score >= threshold,
    otherwise the reason (`below_threshold: ...` or `judge_failed: ...`)."""
    out = []
    for row, result in zip(rows, results, strict=True):
        failed = failure_reason(result)
        score = None if failed else result.parsed.score
        if failed:
            reason = f"judge_failed: {failed}" + (f": {result.error}" if result.error else "")
        elif score < threshold:
            reason = f"below_threshold: score {score} < {threshold:g}"
        else:
            reason = None
        out.append({
            "dataset": dataset.name, "judged_id": str(row[dataset.id_column]), "kind": dataset.kind, "score": score,
            "rationale": None if failed else result.parsed.rationale.strip(), "threshold": threshold,
            "kept": reason is None, "reason": reason, "model": model, "prompt_version": PROMPT_VERSION,
            "cache_key": result.cache_key,
        })
    return out


def judge_metadata(verdicts: list[dict], missing: list[str]) -> dict:
    frame = pl.DataFrame(verdicts, schema=SCHEMA)
    summary = []
    distribution = []
    for name in frame["dataset"].unique(maintain_order=True).to_list():
        part = frame.filter(pl.col("dataset") == name)
        scores = part["score"].drop_nulls()
        summary.append((name, part.height, int(part["kept"].sum()), part.height - int(part["kept"].sum()),
                        round(float(scores.mean()), 3) if scores.len() else None, part["threshold"][0],
                        int(part["score"].is_null().sum())))
        distribution.append((name, *(int((scores == s).sum()) for s in range(SCORE_MIN, SCORE_MAX + 1))))
    return {
        "judged": frame.height,
        "kept": int(frame["kept"].sum()) if frame.height else 0,
        "judge_failed": int(frame["score"].is_null().sum()) if frame.height else 0,
        "by_dataset": dg.MetadataValue.md(markdown_table(summary, ["dataset", "judged", "kept", "dropped", "mean score", "threshold", "judge failed"])),
        "score_distribution": dg.MetadataValue.md(markdown_table(distribution, ["dataset", *map(str, range(SCORE_MIN, SCORE_MAX + 1))])),
        "datasets_missing": dg.MetadataValue.json(missing),
    }


@dg.asset(
    group_name="instructions",
    kinds={"duckdb", "python", "openai"},
    owners=["team:synth-assets"],
    code_version=CODE_VERSION,
    deps=[synthetic_textbook.synthetic_textbook, code_exercises.code_exercises, self_instruct.self_instruct,
          alpaca_instructions.alpaca_instructions, self_qa.self_qa, evol_instruct.evol_instruct],
    automation_condition=on_upstream_change(),
)
def llm_judge(
    context: dg.AssetExecutionContext, config: LLMJudgeConfig, warehouse: Warehouse, llm: LLMResource,
    compute: Compute,
) -> dg.MaterializeResult:
    """An LLM's 0-5 score and rationale for every generated row (AlpaGasus), one row per
    judged row: `dataset` (the table), `judged_id` (its `section_id`, `exercise_id` or
    `instruction_id`), `kind` (rubric: textbook = educational value, exercise =
    correctness, instruction = accuracy), `score`, `rationale`, `threshold`, `kept` and,
    for dropped rows, `reason` (`below_threshold: score 2 < 4` or `judge_failed: ...`
    when no valid score came back; an unjudged row is not kept). The release keeps a row
    when `kept`; what it drops stays here with its reason:
    `SELECT * FROM llm_judge WHERE NOT kept`. Join a dataset with
    `JOIN llm_judge j ON j.dataset = '<table>' AND j.judged_id = <id column>`.

    Judging is one schema-constrained call per row, cached and priced like every call:
    changing a threshold re-decides `kept` from cached answers at no cost. On the bundled
    135M model the judge is weak (scores are noisy); the mechanism is what matters."""
    settings_from = settings_origin(config, "llm_judge")  # before the merge: what the launchpad set
    config = with_settings(config, "llm_judge")
    wanted = [d for d in DATASETS if d.name in config.datasets]
    verdicts: list[dict] = []
    missing = []
    with warehouse.materialization(context) as lake:
        with llm.session(context, warehouse) as driver, on_cluster(driver, lasting_compute(compute)) as session:
            for dataset in wanted:
                if not lake.table_exists(dataset.name):
                    missing.append(dataset.name)
                    continue
                columns = ", ".join(f'"{c}"' for c in dataset.columns)
                rows = lake.query(f'SELECT {columns} FROM "{dataset.name}" ORDER BY "{dataset.id_column}"').to_dicts()
                requests = judge_requests(dataset, rows, config)
                session.log_estimate(len(requests), 500, config.max_tokens)
                results = complete_json(session, requests, schema=Judgement, local_lengths=LOCAL_LENGTHS)
                verdicts += verdict_rows(dataset, rows, results, config.threshold(dataset.name), session.model)
            llm_metadata = {**session.metadata(), "compute": session.engine}
        lake.write_table(TABLE, pl.DataFrame(verdicts, schema=SCHEMA))
        context.log.info(f"llm_judge: {len(verdicts)} rows judged, {sum(v['kept'] for v in verdicts)} kept; missing {missing}")
    metadata = {**judge_metadata(verdicts, missing), "prompt_version": PROMPT_VERSION,
                "settings_origin": dg.MetadataValue.json(settings_from), **llm_metadata}
    return table_result(warehouse, TABLE, metadata, snapshot_id=lake.snapshot_id_published)


def judge_filter(dataset: str, id_column: str) -> tuple[str, str]:
    """A release `row_filter` (SQL condition on the dataset's table, reason for the rest):
    only rows the judge kept. `training_data_release` imports it for each judged config."""
    return (
        f'{id_column} IN (SELECT judged_id FROM {TABLE} WHERE dataset = \'{dataset}\' AND kept)',
        f"not kept by `{TABLE}` (score below the threshold, or not judged); "
        f"see `SELECT * FROM {TABLE} WHERE dataset = '{dataset}' AND NOT kept`",
    )
