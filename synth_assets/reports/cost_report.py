"""`cost_report`: what the LLM calls cost, where the money went, and what the cache saved.

Everything here is computed from the `llm_calls` ledger that the LLM layer writes for every
request (cache hits included). The plain functions (`load_ledger`, `build_cost_report`,
`render_markdown`, `render_html`, `spend_chart_png`) are tested directly; the asset only wires
them to the warehouse and to the Dagster UI.
"""


import base64
import html
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from resources.warehouse import Warehouse
from synth_assets.automation import on_upstream_change
from synth_assets.common.tables import markdown_table, table_result

LEDGER_TABLE = "llm_calls"
COST_REPORT_TABLE = "cost_report"
DEFAULT_REPORT_PATH = "data/reports/cost_report.html"

# The assets that call the LLM and therefore write rows into the ledger. cost_report is
# downstream of all of them so it re-runs after any of them spent money.
LLM_ASSETS = (
    "annotated_sample",
    "quality_classifier",
    "filtered_textbook",
    "synthetic_textbook",
    "code_exercises",
    "contamination_report",  # embeds exercises for the embedding signal
    "decontaminated_exercises",
    "personas",
    "case2code",
    "textbook_contamination_report",  # embeds code blocks for the embedding signal
    "self_instruct",
    "alpaca_instructions",
    "self_qa",
    "evol_instruct",
    "llm_judge",
    "instructions_contamination_report",  # embeds instruction rows for the embedding signal
)

# The ledger columns the report reads (ARCHITECTURE.md, "The LLM layer contract").
LEDGER_SCHEMA: dict[str, pl.DataType] = {
    "call_id": pl.String,
    "run_id": pl.String,
    "asset_key": pl.String,
    "model": pl.String,
    "prompt_tokens": pl.Int64,
    "completion_tokens": pl.Int64,
    "cached_tokens": pl.Int64,
    "cost_usd": pl.Float64,
    "saved_usd": pl.Float64,
    "cache_hit": pl.Boolean,
    "status": pl.String,
    "created_at": pl.Datetime("us"),
}

# One row of every summary table: these measures, per group.
MEASURES = (
    "calls",
    "cache_hits",
    "failed_calls",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cost_usd",
    "saved_usd",
    "no_cache_cost_usd",
    "unknown_price_calls",
)
MONEY = {"cost_usd", "saved_usd", "no_cache_cost_usd"}
UNKNOWN_GROUP = "(none)"


class CostReportConfig(dg.Config):
    """Where the HTML report goes and how long the "most expensive" list is."""

    report_path: str = Field(
        default=DEFAULT_REPORT_PATH,
        description="HTML report file, relative to the working directory (or absolute).",
    )
    top_n: int = Field(
        default=10,
        ge=1,
        description="How many of the most expensive materializations (asset x run) to list.",
    )


@dataclass
class CostReport:
    """The report's figures. Every summary frame has a key column plus `MEASURES`."""

    totals: dict[str, Any]
    by_asset: pl.DataFrame
    by_run: pl.DataFrame
    by_model: pl.DataFrame
    by_day: pl.DataFrame
    top_materializations: pl.DataFrame
    notes: list[str] = field(default_factory=list)

    @property
    def sections(self) -> list[tuple[str, pl.DataFrame]]:
        return [
            ("Spend by asset", self.by_asset),
            ("Spend by run", self.by_run),
            ("Spend by model", self.by_model),
            ("Spend by day (UTC)", self.by_day),
            ("Most expensive materializations (asset x run)", self.top_materializations),
        ]


def empty_ledger() -> pl.DataFrame:
    return pl.DataFrame(schema=LEDGER_SCHEMA)


def load_ledger(warehouse: Warehouse) -> tuple[pl.DataFrame, list[str]]:
    """The ledger rows with the columns the report needs, plus notes about what was missing.

    A missing table gives zero rows (nothing has called the LLM yet); a missing column is
    filled with NULL and named in the notes, so an older ledger still reports what it can."""
    if not warehouse.table_exists(LEDGER_TABLE):
        return empty_ledger(), [
            f"The `{LEDGER_TABLE}` table does not exist yet: no LLM call has been recorded, "
            "so every figure is zero."
        ]
    calls = warehouse.query(f'SELECT * FROM "{LEDGER_TABLE}"')
    return normalise_ledger(calls)


def normalise_ledger(calls: pl.DataFrame) -> tuple[pl.DataFrame, list[str]]:
    """Cast the ledger to `LEDGER_SCHEMA`; absent columns become NULL and are reported."""
    notes: list[str] = []
    missing = [name for name in LEDGER_SCHEMA if name not in calls.columns]
    if missing:
        notes.append(f"`{LEDGER_TABLE}` has no column(s) {', '.join(missing)}; counted as NULL.")
    columns = []
    for name, dtype in LEDGER_SCHEMA.items():
        if name in missing:
            columns.append(pl.lit(None, dtype=dtype).alias(name))
        elif name == "created_at" and calls.schema[name] == pl.String:
            columns.append(pl.col(name).str.to_datetime(time_unit="us", strict=False).alias(name))
        elif name == "created_at" and isinstance(calls.schema[name], pl.Datetime):
            # Timezone-aware timestamps are converted to UTC, then made naive, so days are UTC days.
            created = pl.col(name)
            if calls.schema[name].time_zone is not None:
                created = created.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
            columns.append(created.dt.cast_time_unit("us").alias(name))
        else:
            columns.append(pl.col(name).cast(dtype, strict=False).alias(name))
    return calls.select(columns), notes


def _with_flags(calls: pl.DataFrame) -> pl.DataFrame:
    """Per-call derived columns: what the call would cost without the cache, and whether its
    price is unknown (tokens were used, or the call succeeded, but no price is recorded)."""
    hit = pl.col("cache_hit").fill_null(False)
    would_cost = pl.when(hit).then(pl.col("saved_usd")).otherwise(pl.col("cost_usd"))
    used_tokens = (pl.col("prompt_tokens").fill_null(0) + pl.col("completion_tokens").fill_null(0)) > 0
    return calls.with_columns(
        hit.alias("cache_hit"),
        would_cost.alias("_would_cost"),
        (would_cost.is_null() & ((pl.col("status") == "ok").fill_null(False) | used_tokens)).alias("_unknown"),
        (pl.col("status").fill_null("") != "ok").alias("_failed"),
        pl.col("created_at").dt.date().alias("day"),
    )


def _aggregations() -> list[pl.Expr]:
    return [
        pl.len().cast(pl.Int64).alias("calls"),
        pl.col("cache_hit").sum().cast(pl.Int64).alias("cache_hits"),
        pl.col("_failed").sum().cast(pl.Int64).alias("failed_calls"),
        pl.col("prompt_tokens").sum().cast(pl.Int64).alias("prompt_tokens"),
        pl.col("completion_tokens").sum().cast(pl.Int64).alias("completion_tokens"),
        pl.col("cached_tokens").sum().cast(pl.Int64).alias("cached_tokens"),
        pl.col("cost_usd").sum().cast(pl.Float64).alias("cost_usd"),
        pl.col("saved_usd").sum().cast(pl.Float64).alias("saved_usd"),
        pl.col("_would_cost").sum().cast(pl.Float64).alias("no_cache_cost_usd"),
        pl.col("_unknown").sum().cast(pl.Int64).alias("unknown_price_calls"),
    ]


def _summarise(flagged: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    keyed = flagged.with_columns(
        [pl.col(k).cast(pl.String).fill_null(UNKNOWN_GROUP).alias(k) for k in keys]
    )
    return (
        keyed.group_by(keys)
        .agg(_aggregations())
        .sort(["cost_usd", *keys], descending=[True] + [False] * len(keys))
    )


def build_cost_report(calls: pl.DataFrame, top_n: int = 10, notes: list[str] | None = None) -> CostReport:
    """Spend, tokens, calls and cache savings by asset, run, model and UTC day, the `top_n`
    most expensive materializations, and the projected cost of re-running with no cache.

    `cost_usd` is what was paid (a cache hit pays nothing); `saved_usd` is what a hit would
    have cost; `no_cache_cost_usd` = cost of misses + savings of hits. Calls whose price is
    unknown (NULL) add nothing to the sums and are counted in `unknown_price_calls`."""
    calls, normalise_notes = normalise_ledger(calls)
    notes = list(notes or []) + [n for n in normalise_notes if n not in (notes or [])]
    if calls.height == 0 and not notes:
        notes.append(f"`{LEDGER_TABLE}` is empty: no LLM call has been recorded, so every figure is zero.")
    flagged = _with_flags(calls)

    totals_frame = flagged.select(_aggregations())
    totals = {name: totals_frame[name][0] for name in MEASURES}
    for name in MEASURES:
        if totals[name] is None:  # sum over zero rows
            totals[name] = 0.0 if name in MONEY else 0
    totals["runs"] = flagged["run_id"].drop_nulls().n_unique()
    totals["assets"] = flagged["asset_key"].drop_nulls().n_unique()
    totals["models"] = sorted(flagged["model"].drop_nulls().unique().to_list())

    by_day = _summarise(flagged, ["day"]).sort("day")
    top = (
        _summarise(flagged, ["asset_key", "run_id"])
        .join(
            flagged.with_columns(
                pl.col("asset_key").cast(pl.String).fill_null(UNKNOWN_GROUP),
                pl.col("run_id").cast(pl.String).fill_null(UNKNOWN_GROUP),
            )
            .group_by(["asset_key", "run_id"])
            .agg(pl.col("created_at").min().alias("first_call_at"), pl.col("created_at").max().alias("last_call_at")),
            on=["asset_key", "run_id"],
            how="left",
        )
        .sort(["cost_usd", "no_cache_cost_usd", "asset_key", "run_id"], descending=[True, True, False, False])
        .head(top_n)
    )
    if totals["unknown_price_calls"]:
        notes.append(
            f"{totals['unknown_price_calls']} call(s) have no known price (cost_usd/saved_usd NULL); "
            "they are excluded from every dollar figure, so spend and the no-cache projection are "
            "lower bounds. Add the model to resources/llm/pricing.py overrides to price them."
        )
    return CostReport(
        totals=totals,
        by_asset=_summarise(flagged, ["asset_key"]),
        by_run=_summarise(flagged, ["run_id"]),
        by_model=_summarise(flagged, ["model"]),
        by_day=by_day,
        top_materializations=top,
        notes=notes,
    )


# ---------------------------------------------------------------- rendering


def _format(column: str, value: Any) -> str:
    if value is None:
        return ""
    if column in MONEY:
        return f"${value:,.6f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _formatted_rows(frame: pl.DataFrame) -> list[list[str]]:
    return [[_format(c, v) for c, v in zip(frame.columns, row)] for row in frame.rows()]


def totals_table(report: CostReport) -> pl.DataFrame:
    t = report.totals
    rows = [
        ("calls", _format("calls", t["calls"])),
        ("cache hits", _format("", t["cache_hits"])),
        ("failed calls", _format("", t["failed_calls"])),
        ("runs", _format("", t["runs"])),
        ("models", ", ".join(t["models"]) or "none"),
        ("prompt tokens", _format("", t["prompt_tokens"])),
        ("completion tokens", _format("", t["completion_tokens"])),
        ("cached prompt tokens", _format("", t["cached_tokens"])),
        ("spend (cost_usd)", _format("cost_usd", t["cost_usd"])),
        ("saved by the cache (saved_usd)", _format("saved_usd", t["saved_usd"])),
        ("projected cost with no cache", _format("cost_usd", t["no_cache_cost_usd"])),
        ("calls with unknown price", _format("", t["unknown_price_calls"])),
    ]
    return pl.DataFrame({"figure": [r[0] for r in rows], "value": [r[1] for r in rows]})


def render_markdown(frame: pl.DataFrame) -> str:
    if frame.height == 0:
        return "_No LLM calls recorded._"
    return markdown_table(_formatted_rows(frame), frame.columns)


def summary_markdown(report: CostReport) -> str:
    parts = [render_markdown(totals_table(report))]
    parts += [f"> {note}" for note in report.notes]
    return "\n\n".join(parts)


def spend_chart_png(report: CostReport) -> bytes:
    """A PNG with spend (and cache savings) by asset and spend by day."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 3.6), dpi=80)
    FigureCanvasAgg(figure)
    by_asset, by_day = report.by_asset, report.by_day
    if by_asset.height == 0:
        axis = figure.add_subplot(1, 1, 1)
        axis.axis("off")
        axis.text(0.5, 0.5, "No LLM calls recorded", ha="center", va="center", fontsize=14)
    else:
        left, right = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
        ordered = by_asset.sort("cost_usd")
        labels = ordered["asset_key"].to_list()
        left.barh(labels, ordered["cost_usd"].to_list(), label="spent")
        left.barh(labels, ordered["saved_usd"].fill_null(0).to_list(),
                  left=ordered["cost_usd"].to_list(), label="saved by cache")
        left.set_xlabel("USD")
        left.set_title("Spend by asset")
        left.legend(fontsize=8)
        days = [str(d) for d in by_day["day"].to_list()]
        right.bar(days, by_day["cost_usd"].to_list(), label="spent")
        right.bar(days, by_day["saved_usd"].fill_null(0).to_list(), bottom=by_day["cost_usd"].to_list(),
                  label="saved by cache")
        right.set_ylabel("USD")
        right.set_title("Spend by day (UTC)")
        right.tick_params(axis="x", labelrotation=30, labelsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def chart_markdown(png: bytes) -> str:
    return f"![spend](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


def _html_table(frame: pl.DataFrame) -> str:
    if frame.height == 0:
        return "<p><em>No LLM calls recorded.</em></p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
        for row in _formatted_rows(frame)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: CostReport, png: bytes) -> str:
    """A self-contained HTML page: totals, notes, the chart and every summary table."""
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in report.notes)
    sections = "".join(f"<h2>{html.escape(title)}</h2>{_html_table(frame)}" for title, frame in report.sections)
    image = base64.b64encode(png).decode("ascii")
    return (
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>LLM cost report</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1.5em}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#eee}"
        "td:first-child{text-align:left}.note{background:#fff4d6;padding:6px}</style></head><body>"
        "<h1>LLM cost report</h1>"
        f"<h2>Totals</h2>{_html_table(totals_table(report))}{notes}"
        f'<img alt="spend" src="data:image/png;base64,{image}">'
        f"{sections}</body></html>"
    )


def write_html(path: str | os.PathLike, text: str) -> Path:
    """Write the report atomically (a reader never sees half a file)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, target)
    return target


def cost_report_table(report: CostReport) -> pl.DataFrame:
    """The `cost_report` table: the by-asset summary (one row per asset_key)."""
    return report.by_asset


@dg.asset(
    group_name="reports",
    kinds={"duckdb", "python", "html"},
    owners=["team:synth-assets"],
    code_version="1",
    deps=[dg.AssetKey(key) for key in LLM_ASSETS],
    automation_condition=on_upstream_change(),
)
def cost_report(context: dg.AssetExecutionContext, config: CostReportConfig, warehouse: Warehouse) -> dg.MaterializeResult:
    """What the LLM calls cost, from the `llm_calls` ledger (every request, cache hits included).

    Spend, tokens, calls and cache savings by asset, by run, by model and by UTC day; the most
    expensive materializations (asset x run); and the projected cost of re-running everything
    with no cache (cost of misses + `saved_usd` of hits). Calls with an unknown price (NULL
    `cost_usd`, e.g. a model missing from the price list) are counted and flagged, never priced
    at zero silently. An empty or missing ledger gives a zero report with a note.

    Writes the `cost_report` table (one row per asset), an HTML report (tables + chart, path in
    the config, default `data/reports/cost_report.html`). The lineage views are the
    `lineage_views` asset's.
    Also runs daily at 06:00 UTC (`daily_cost_report_schedule`)."""
    with warehouse.materialization(context) as lake:
        calls, notes = load_ledger(warehouse.read_only())  # a reader: attached read-only
        report = build_cost_report(calls, top_n=config.top_n, notes=notes)
        png = spend_chart_png(report)
        report_path = write_html(config.report_path, render_html(report, png))
        lake.write_table(COST_REPORT_TABLE, cost_report_table(report))
        for note in report.notes:
            context.log.info(note)
        t = report.totals
        metadata = {
            "summary": dg.MetadataValue.md(summary_markdown(report)),
            "chart": dg.MetadataValue.md(chart_markdown(png)),
            "by_asset": dg.MetadataValue.md(render_markdown(report.by_asset)),
            "by_run": dg.MetadataValue.md(render_markdown(report.by_run)),
            "by_model": dg.MetadataValue.md(render_markdown(report.by_model)),
            "by_day": dg.MetadataValue.md(render_markdown(report.by_day)),
            "top_materializations": dg.MetadataValue.md(render_markdown(report.top_materializations)),
            "report_path": dg.MetadataValue.path(str(report_path.resolve())),
            "total_calls": dg.MetadataValue.int(int(t["calls"])),
            "total_cost_usd": dg.MetadataValue.float(float(t["cost_usd"])),
            "total_saved_usd": dg.MetadataValue.float(float(t["saved_usd"])),
            "no_cache_cost_usd": dg.MetadataValue.float(float(t["no_cache_cost_usd"])),
            "unknown_price_calls": dg.MetadataValue.int(int(t["unknown_price_calls"])),
        }
    return table_result(warehouse, COST_REPORT_TABLE, metadata, snapshot_id=lake.snapshot_id_published)
