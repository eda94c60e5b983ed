"""`training_data_release`: the final datasets as files the Hugging Face `datasets` library loads.

Layout (one folder per dataset config, one shard each, Parquet and JSONL side by side):

    data/release/README.md                                   dataset card, YAML front matter declares `configs:`
    data/release/filtered_textbook/train-00000-of-00001.parquet  (+ .jsonl)
    data/release/synthetic_textbook/train-00000-of-00001.parquet (+ .jsonl)
    data/release/decontaminated_exercises/train-00000-of-00001.parquet (+ .jsonl)
    data/release/self_instruct/train-00000-of-00001.parquet (+ .jsonl)   instruction / input / output
    ... (personas, case2code, alpaca_instructions, self_qa, evol_instruct)

Generated rows are gated: `synthetic_textbook`, the exercises and the four instruction
configs keep only rows the `llm_judge` kept (score >= the dataset's threshold), and the
instruction configs also leave out rows `instructions_contamination_report` found
contaminated. A config left with no rows is not declared in the card's `configs:`
(`datasets` 5.2 raises "Instruction 'train' corresponds to no data" for an empty one); the
card says which and why.

`load_dataset("data/release", "synthetic_textbook")` reads the Parquet files named in the card's
`configs:` block (https://huggingface.co/docs/hub/datasets-manual-configuration); the JSONL
copies are for tools that want plain text.
"""

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import yaml
from pydantic import Field

from resources.warehouse import Warehouse
from synth_assets.automation import on_upstream_change
from synth_assets.decontamination.instructions_contamination_report import (
    INSTRUCTIONS_REPORT_TABLE,
    release_filter as contamination_filter,
)
from synth_assets.decontamination.synthesis_contamination_report import SYNTHESIS_REPORT_TABLE
from synth_assets.decontamination.synthesis_contamination_report import release_filter as synthesis_filter
from synth_assets.instructions import alpaca_instructions, evol_instruct, llm_judge, self_instruct, self_qa
from synth_assets.instructions.card import instruction_card_section
from synth_assets.synthesis.code_exercises import EXERCISES_TABLE
from synth_assets.synthesis.synthetic_textbook import SECTIONS_TABLE
from synth_assets.reports.cost_report import CostReport, build_cost_report, load_ledger, render_markdown
from synth_assets.common.tables import markdown_table, table_result
from synth_assets.common.tokens import approximate_token_count_expr

RELEASE_TABLE = "training_data_release"
CONTAMINATION_TABLE = "contamination_report"
CONTAMINATED = "contaminated"  # synth_assets/decontamination/contamination_report.py verdict label
DEFAULT_RELEASE_DIR = "data/release"
SHARD = "train-00000-of-00001"
# Tokens are counted as in the ingest when a table carries a count column; otherwise as
# the approximate token count (regex word/punctuation pieces) of the text columns.
TOKEN_COUNT_COLUMNS = ("n_tokens", "tokens", "completion_tokens")


@dataclass(frozen=True)
class ReleaseConfigSpec:
    """One dataset config: the warehouse table it exports and the columns holding its text."""

    name: str
    table: str
    text_columns: tuple[str, ...]
    description: str
    # (SQL condition a released row meets, why the others are left out); None = every row.
    # `include_failed_exercises` lifts this one.
    row_filter: tuple[str, str] | None = None
    # More (condition, reason) pairs that always apply: the judge's and decontamination's.
    gates: tuple[tuple[str, str], ...] = ()
    # The released columns, in order (None = every column of the table).
    columns: tuple[str, ...] | None = None


# The instruction configs' layout (Alpaca's), then the ids a row can be traced by.
INSTRUCTION_RELEASE_COLUMNS = ("instruction", "input", "output", "instruction_id", "method", "model")
INSTRUCTION_DESCRIPTIONS = {
    self_instruct: "Self-Instruct (Wang et al. 2023) from a shipped seed pool of coding tasks, ROUGE-L < 0.7 filtered.",
    alpaca_instructions: "Alpaca-style (Taori et al. 2023) instruction, input and output written in one call.",
    self_qa: "Self-QA (Zhang et al. 2023) questions and answers grounded in filtered_textbook documents.",
    evol_instruct: "Evol-Instruct (WizardLM) in-depth and in-breadth evolutions of seed tasks.",
}


RELEASE_CONFIGS = (
    ReleaseConfigSpec(
        "filtered_textbook", "filtered_textbook", ("content",),
        "Python files kept by the educational-quality classifier (phi-1 'filtered code-language dataset').",
    ),
    ReleaseConfigSpec(
        "synthetic_textbook", "synthetic_textbook", ("text",),
        "LLM-written textbook sections mixing prose and code (phi-1 'synthetic textbook').",
        gates=(llm_judge.judge_filter(SECTIONS_TABLE, "section_id"),),
    ),
    ReleaseConfigSpec(
        "decontaminated_exercises", "decontaminated_exercises", ("exercise", "solution"),
        "Function-completion exercises with solutions that passed their tests and the HumanEval "
        "decontamination (phi-1 'CodeExercises').",
        # code_exercises keeps failing solutions (passed = false) for inspection; a training
        # set must not teach them.
        row_filter=("passed IS TRUE", "solution failed its tests in the sandbox (passed = false)"),
        gates=(llm_judge.judge_filter(EXERCISES_TABLE, "exercise_id"),),
    ),
    ReleaseConfigSpec(
        "personas", "personas", ("persona",),
        "Persona Hub personas: shipped, LLM text-to-persona over corpus files and persona-to-persona chains "
        "(`chain`), deduplicated by MinHash and embedding cosine 0.9.",
        gates=(synthesis_filter("personas", "persona_id"),),
    ),
    ReleaseConfigSpec(
        "case2code", "case2code", ("prompt", "program"),
        "Case2Code samples: corpus functions, inputs, outputs computed by running them in the sandbox, and a "
        "prompt showing some input/output pairs that asks for the program.",
        gates=(synthesis_filter("case2code", "case_id"),),
    ),
    *(
        ReleaseConfigSpec(
            module.TABLE, module.TABLE, ("instruction", "input", "output"), description,
            gates=(llm_judge.judge_filter(module.TABLE, "instruction_id"), contamination_filter(module.TABLE)),
            columns=INSTRUCTION_RELEASE_COLUMNS,
        )
        for module, description in INSTRUCTION_DESCRIPTIONS.items()
    ),
)
# Tables the gates read: the release depends on them and fails without them.
GATE_TABLES = (llm_judge.TABLE, INSTRUCTIONS_REPORT_TABLE, SYNTHESIS_REPORT_TABLE)


class ReleaseConfig(dg.Config):
    """Where the release is written and how the card names it."""

    release_dir: str = Field(
        default=DEFAULT_RELEASE_DIR, description="Folder for the dataset card and one folder per config."
    )
    pretty_name: str = Field(
        default="synth-assets phi-1 style training data", description="Dataset card title."
    )
    include_failed_exercises: bool = Field(
        default=False,
        description="Also release exercises whose solution failed its tests (passed = false).",
    )
    license: str = Field(
        # The filtered corpus keeps each file's own license (the `license` column), so the
        # release as a whole is 'other' in Hub terms.
        default="other",
        description="Hub license identifier for the card's front matter.",
    )


@dataclass
class ExportedConfig:
    spec: ReleaseConfigSpec
    rows: int
    tokens: int
    token_source: str
    models: list[str]
    parquet_path: Path | None  # None: no rows, nothing written, not declared in the card
    jsonl_path: Path | None
    parquet_sha256: str | None
    left_out: int = 0
    left_out_reason: str | None = None

    @property
    def empty(self) -> bool:
        return self.rows == 0


def config_token_count(frame: pl.DataFrame, text_columns: tuple[str, ...]) -> tuple[int, str]:
    """(tokens, where the figure comes from) for one config's rows: the sum of its token
    count column, else the `approximate_token_count` of its text columns."""
    for column in TOKEN_COUNT_COLUMNS:
        if column in frame.columns and frame.schema[column].is_integer():
            return int(frame[column].fill_null(0).sum()), f"sum of `{column}`"
    present = [c for c in text_columns if c in frame.columns]
    if not present:
        return 0, "no text column"
    total = sum(int(frame.select(approximate_token_count_expr(c).sum()).item()) for c in present)
    return total, f"regex word/punctuation pieces of {', '.join(present)}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _replace(write, target: Path) -> None:
    """Write through a temporary name and rename, so a reader never sees half a file."""
    partial = target.with_name(target.name + ".partial")
    write(partial)
    os.replace(partial, target)


def export_config(frame: pl.DataFrame, spec: ReleaseConfigSpec, release_dir: Path) -> ExportedConfig:
    """Write one config's Parquet and JSONL shard; stale shards of an earlier layout are removed.
    A config with no rows writes nothing (and removes what an earlier release left)."""
    folder = release_dir / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    parquet_path, jsonl_path = folder / f"{SHARD}.parquet", folder / f"{SHARD}.jsonl"
    for stale in folder.glob("train-*"):
        if frame.height == 0 or stale not in (parquet_path, jsonl_path):
            stale.unlink()
    if frame.height == 0:
        return ExportedConfig(spec, 0, 0, "no rows", [], None, None, None)
    _replace(lambda p: frame.write_parquet(p, compression="zstd"), parquet_path)
    _replace(frame.write_ndjson, jsonl_path)
    tokens, token_source = config_token_count(frame, spec.text_columns)
    models = sorted(frame["model"].drop_nulls().unique().to_list()) if "model" in frame.columns else []
    return ExportedConfig(spec, frame.height, tokens, token_source, models, parquet_path, jsonl_path, _sha256(parquet_path))


def decontamination_summary(report: pl.DataFrame | None, released_ids: set[str]) -> dict[str, Any]:
    """Checked exercises, how many were removed, and removals per signal.

    Removed = verdict `contaminated` (the decontaminate module's label); a report without a
    `verdict` column falls back to "checked but not released". Per signal counts come from
    `fired_signals` (an exercise that fired two signals counts under both), else `reason`."""
    if report is None or "exercise_id" not in report.columns:
        return {"checked": None, "removed": None, "removed_by": {}}
    if "verdict" in report.columns:
        removed = report.filter(pl.col("verdict") == CONTAMINATED)
    else:
        removed = report.filter(~pl.col("exercise_id").is_in(list(released_ids)))
    by: dict[str, int] = {}
    group = None
    if "fired_signals" in report.columns and isinstance(report.schema["fired_signals"], pl.List):
        group = "signal"
        exploded = removed.select(pl.col("fired_signals").explode().alias("signal")).drop_nulls()
        counts = exploded.group_by("signal").len()
    elif "reason" in report.columns:
        group = "reason"
        counts = removed.group_by(pl.col("reason").cast(pl.String).fill_null("(none)")).len()
    if group is not None and removed.height:
        by = dict(counts.sort(["len", group], descending=[True, False]).rows())
    return {"checked": report.height, "removed": removed.height, "removed_by": by, "grouped_by": group}


def front_matter(exported: list[ExportedConfig], pretty_name: str, license: str) -> dict[str, Any]:
    """The Hub's YAML: only configs with rows are declared (an empty one would make
    `load_dataset` raise "Instruction 'train' corresponds to no data")."""
    exported = [e for e in exported if not e.empty]
    total_rows = sum(e.rows for e in exported)
    size = next(label for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                                           (1_000_000, "100K<n<1M"), (float("inf"), "n>1M")) if total_rows < limit)
    return {
        "pretty_name": pretty_name,
        "license": license,
        "language": ["en"],
        "task_categories": ["text-generation"],
        "tags": ["code", "python", "synthetic", "phi-1"],
        "size_categories": [size],
        "configs": [
            {
                "config_name": e.spec.name,
                "data_files": [{"split": "train", "path": f"{e.spec.name}/train-*.parquet"}],
                **({"default": True} if index == 0 else {}),
            }
            for index, e in enumerate(exported)
        ],
    }


def dataset_card(
    exported: list[ExportedConfig],
    costs: CostReport,
    decontamination: dict[str, Any],
    pretty_name: str,
    license: str,
    instructions: str = "",
) -> str:
    """The README.md: YAML front matter for the Hub, then counts, tokens, models, cost and
    the decontamination summary, each with its source."""
    yaml_text = yaml.safe_dump(front_matter(exported, pretty_name, license), sort_keys=False)
    configs = markdown_table(
        [(e.spec.name, f"{e.rows:,}", f"{e.tokens:,}", e.token_source, ", ".join(e.models) or "-") for e in exported],
        ["config", "rows", "tokens", "token count", "models"],
    )
    descriptions = "\n".join(
        f"- `{e.spec.name}`: {e.spec.description}"
        + (f" {e.left_out:,} row(s) of `{e.spec.table}` left out: {e.left_out_reason}." if e.left_out else "")
        for e in exported
    )
    empty = [e for e in exported if e.empty]
    empty_note = (
        "Left out of `configs:` because they have no rows (`datasets` raises \"Instruction 'train' corresponds "
        "to no data\" for a declared config without data):\n\n"
        + "\n".join(
            f"- `{e.spec.name}`: "
            + (f"all {e.left_out:,} row(s) of `{e.spec.table}` left out: {e.left_out_reason}." if e.left_out
               else f"`{e.spec.table}` has no rows.")
            for e in empty
        )
        if empty else ""
    )
    t = costs.totals
    cost_lines = [
        f"- spent: ${t['cost_usd']:.6f} over {t['calls']:,} calls ({t['cache_hits']:,} served from the cache)",
        f"- saved by the cache: ${t['saved_usd']:.6f}; re-running everything with no cache: ${t['no_cache_cost_usd']:.6f}",
        f"- models called: {', '.join(t['models']) or 'none'}",
    ]
    if t["unknown_price_calls"]:
        cost_lines.append(f"- {t['unknown_price_calls']:,} call(s) have no known price and are not in these sums")
    cost_lines += [f"- note: {note}" for note in costs.notes if "no known price" not in note]
    if decontamination["checked"] is None:
        decont = "`contamination_report` was not found: no decontamination summary."
    else:
        removed_by = decontamination["removed_by"]
        decont = (
            f"- checked against HumanEval: {decontamination['checked']:,} exercises\n"
            f"- removed: {decontamination['removed']:,}"
            + (
                f"\n\nRemoved by {decontamination['grouped_by']}:\n\n"
                + markdown_table(list(removed_by.items()), [decontamination["grouped_by"], "exercises"])
                if removed_by else ""
            )
        )
    first = next((e.spec.name for e in exported if not e.empty), "filtered_textbook")
    return f"""---
{yaml_text}---

# {pretty_name}

phi-1 style ("Textbooks Are All You Need", Gunasekar et al. 2023) Python training data, built by the
synth-assets Dagster pipeline.

## Configs

{configs}

{descriptions}

{empty_note}

Each config has one `train` split, as Parquet (declared above for `datasets`) and as JSONL beside it.

```python
from datasets import load_dataset
rows = load_dataset("path/to/this/folder", "{first}", split="train")
```

## Models used

{", ".join(sorted({m for e in exported for m in e.models} | set(t["models"]))) or "none"}

## Cost (from the `llm_calls` ledger, the whole pipeline)

{chr(10).join(cost_lines)}

{render_markdown(costs.by_asset)}

## Decontamination (from `contamination_report`)

{decont}

{instructions}
## Lineage

Every row keeps the ids it came from (`doc_id`, `classifier_version`, `prompt_id`, `section_id`,
`exercise_id`, `cache_key`). In the warehouse, `python -m synth_assets.lineage <id>` prints the chain
and what it cost.
"""


def write_card(release_dir: Path, card: str) -> Path:
    path = release_dir / "README.md"
    _replace(lambda p: p.write_text(card, encoding="utf-8"), path)
    return path


def manifest(exported: list[ExportedConfig]) -> pl.DataFrame:
    """The `training_data_release` table: one row per config with its files and checksums."""
    return pl.DataFrame(
        {
            "config_name": [e.spec.name for e in exported],
            "source_table": [e.spec.table for e in exported],
            "rows": [e.rows for e in exported],
            "tokens": [e.tokens for e in exported],
            "token_count_source": [e.token_source for e in exported],
            "models": [", ".join(e.models) for e in exported],
            "parquet_path": [None if e.empty else str(e.parquet_path) for e in exported],
            "jsonl_path": [None if e.empty else str(e.jsonl_path) for e in exported],
            "parquet_sha256": [e.parquet_sha256 for e in exported],
            "rows_left_out": [e.left_out for e in exported],
            "left_out_reason": [e.left_out_reason for e in exported],
        },
        schema_overrides={"rows": pl.Int64, "tokens": pl.Int64, "rows_left_out": pl.Int64, "left_out_reason": pl.String,
                          "parquet_path": pl.String, "jsonl_path": pl.String, "parquet_sha256": pl.String},
    )


def read_config_rows(warehouse: Warehouse, spec: ReleaseConfigSpec, include_all: bool) -> tuple[pl.DataFrame, int, str | None]:
    """(released rows, rows left out, why) for one config. Filters apply in order; each
    reason is counted with the rows it removed ("3: not kept by `llm_judge` ...; 1: ...")."""
    select = ", ".join(f'"{c}"' for c in spec.columns) if spec.columns else "*"
    filters = ([] if spec.row_filter is None or include_all else [spec.row_filter]) + list(spec.gates)
    columns = {name for name, _ in warehouse.columns(spec.table)}
    total = int(warehouse.query(f'SELECT count(*) AS n FROM "{spec.table}"')["n"][0])
    conditions, reasons, remaining = [], [], total
    for condition, reason in filters:
        if condition.split()[0] not in columns:  # a table without the column the filter reads
            continue
        conditions.append(condition)
        now = int(warehouse.query(f'SELECT count(*) AS n FROM "{spec.table}" WHERE {" AND ".join(conditions)}')["n"][0])
        if now < remaining:
            reasons.append(f"{remaining - now:,}: {reason}")
        remaining = now
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    kept = warehouse.query(f'SELECT {select} FROM "{spec.table}"{where}')
    return kept, total - kept.height, "; ".join(reasons) or None


def build_release(warehouse: Warehouse, config: ReleaseConfig) -> tuple[list[ExportedConfig], str, Path]:
    """Export every config, then write the card. Raises dg.Failure naming any missing table."""
    missing = [t for t in [spec.table for spec in RELEASE_CONFIGS] + list(GATE_TABLES) if not warehouse.table_exists(t)]
    if missing:
        raise dg.Failure(f"cannot release: table(s) {', '.join(missing)} do not exist; materialize them first.")
    release_dir = Path(config.release_dir)
    exported = []
    for spec in RELEASE_CONFIGS:
        frame, left_out, reason = read_config_rows(warehouse, spec, config.include_failed_exercises)
        item = export_config(frame, spec, release_dir)
        item.left_out, item.left_out_reason = left_out, reason
        exported.append(item)
    calls, notes = load_ledger(warehouse)
    costs = build_cost_report(calls, notes=notes)
    report = warehouse.query(f'SELECT * FROM "{CONTAMINATION_TABLE}"') if warehouse.table_exists(CONTAMINATION_TABLE) else None
    released = set(warehouse.query('SELECT exercise_id FROM "decontaminated_exercises"')["exercise_id"].to_list())
    card = dataset_card(exported, costs, decontamination_summary(report, released), config.pretty_name, config.license,
                        instruction_card_section(warehouse))
    return exported, card, write_card(release_dir, card)


@dg.asset(
    group_name="release",
    kinds={"duckdb", "python", "parquet"},
    owners=["team:synth-assets"],
    code_version="1",
    deps=[dg.AssetKey(spec.table) for spec in RELEASE_CONFIGS] + [dg.AssetKey(CONTAMINATION_TABLE)]
    + [dg.AssetKey(table) for table in GATE_TABLES],
    automation_condition=on_upstream_change(),
)
def training_data_release(
    context: dg.AssetExecutionContext, config: ReleaseConfig, warehouse: Warehouse
) -> dg.MaterializeResult:
    """The final datasets as a Hugging Face `datasets`-loadable folder (default `data/release/`).

    One config per dataset (`filtered_textbook`, `synthetic_textbook`, `decontaminated_exercises`, `personas`, `case2code`,
    and the instruction sets `self_instruct`, `alpaca_instructions`, `self_qa`, `evol_instruct` in the
    `instruction` / `input` / `output` layout),
    each a `train` split written as Parquet and JSONL (`<config>/train-00000-of-00001.*`), plus a
    `README.md` dataset card whose YAML front matter declares the configs for `load_dataset`.
    The card states rows, tokens and models per config, the pipeline's total LLM cost (from
    `llm_calls`) and the decontamination summary (from `contamination_report`: exercises checked
    and removed, by signal). Also writes the `training_data_release` table: one row per config
    with its file paths and Parquet sha256. Exercises whose solution failed its tests are left
    out (counted, with the reason, in the card) unless `include_failed_exercises`. Generated rows
    (textbook, exercises, instructions) are released only when `llm_judge` kept them, and
    instruction rows only when `instructions_contamination_report` found them clean; the card
    gives per-method counts, the judge's score distribution and what was dropped and why. A
    config left with no rows is written as no files and not declared in the card (the card
    says why). Fails, naming the table, if an input table is missing."""
    with warehouse.materialization(context) as lake:
        exported, card, card_path = build_release(lake, config)
        lake.write_table(RELEASE_TABLE, manifest(exported))
        for item in exported:
            context.log.info(f"{item.spec.name}: {item.rows} rows, {item.tokens} tokens -> {item.parquet_path}")
        metadata: dict[str, Any] = {
            "release_dir": dg.MetadataValue.path(str(Path(config.release_dir).resolve())),
            "dataset_card_path": dg.MetadataValue.path(str(card_path.resolve())),
            "dataset_card": dg.MetadataValue.md(card),
            "files": dg.MetadataValue.md(
                markdown_table([(e.spec.name, e.rows, str(e.parquet_path or "-"), str(e.jsonl_path or "-")) for e in exported],
                               ["config", "rows", "parquet", "jsonl"])
            ),
        }
        for item in exported:
            metadata[f"rows/{item.spec.name}"] = dg.MetadataValue.int(item.rows)
            if item.left_out:
                metadata[f"left_out/{item.spec.name}"] = dg.MetadataValue.int(item.left_out)
            metadata[f"tokens/{item.spec.name}"] = dg.MetadataValue.int(item.tokens)
    return table_result(warehouse, RELEASE_TABLE, metadata, snapshot_id=lake.snapshot_id_published)
