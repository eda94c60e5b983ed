"""cost_report: every figure against a ledger with known rows, the HTML file, the empty case."""

from __future__ import annotations

import base64
import re
from datetime import date, datetime, timezone
from resources.compute import Compute
from tests.openai_double import TEST_KEY_REF

import dagster as dg
import polars as pl
import pytest

from synth_assets.reports.cost_report import build_cost_report, cost_report, normalise_ledger
from synth_assets.reports.lineage_views import lineage_views

DAY1 = datetime(2026, 1, 1, 23, 30, tzinfo=timezone.utc)  # late in the UTC day: must stay on day 1
DAY2 = datetime(2026, 1, 2, 8, 0, tzinfo=timezone.utc)

# (run, asset, model, created, cache_hit, cost_usd, saved_usd, prompt, completion, cached, status)
LEDGER_ROWS = [
    ("run-1", "annotated_sample", "gpt-4o-mini", DAY1, False, 0.010, 0.0, 100, 50, 0, "ok"),
    ("run-1", "annotated_sample", "gpt-4o-mini", DAY1, False, 0.020, 0.0, 200, 80, 0, "ok"),
    ("run-1", "synthetic_textbook", "gpt-4o", DAY1, False, 0.100, 0.0, 1000, 500, 200, "ok"),
    # cache hits: nothing paid, no tokens sent, the saving recorded (as resources/llm/recorder.py writes them)
    ("run-2", "annotated_sample", "gpt-4o-mini", DAY2, True, 0.0, 0.010, 0, 0, 0, "ok"),
    ("run-2", "synthetic_textbook", "gpt-4o", DAY2, True, 0.0, 0.100, 0, 0, 0, "ok"),
    # a model with no known price: tokens used, cost NULL
    ("run-2", "code_exercises", "mystery-model", DAY2, False, None, None, 300, 100, 0, "ok"),
    # a failed call that used no tokens: failed, but not an unknown price
    ("run-2", "code_exercises", "gpt-4o-mini", DAY2, False, 0.0, 0.0, 0, 0, 0, "error"),
]


def ledger_frame(rows=LEDGER_ROWS) -> pl.DataFrame:
    """An `llm_calls` table with the columns the LLM layer writes (ARCHITECTURE.md)."""
    return pl.DataFrame(
        {
            "call_id": [f"call-{i}" for i in range(len(rows))],
            "run_id": [r[0] for r in rows],
            "asset_key": [r[1] for r in rows],
            "partition": [None] * len(rows),
            "model": [r[2] for r in rows],
            "endpoint_host": ["api.openai.com"] * len(rows),
            "prompt_tokens": [r[7] for r in rows],
            "completion_tokens": [r[8] for r in rows],
            "cached_tokens": [r[9] for r in rows],
            "cost_usd": [r[5] for r in rows],
            "saved_usd": [r[6] for r in rows],
            "latency_s": [0.5] * len(rows),
            "cache_hit": [r[4] for r in rows],
            "mode": ["online"] * len(rows),
            "status": [r[10] for r in rows],
            "error_class": [None if r[10] == "ok" else "APIError" for r in rows],
            "cache_key": [f"key-{i % 5}" for i in range(len(rows))],
            "created_at": [r[3] for r in rows],
        },
        schema_overrides={"partition": pl.String, "cost_usd": pl.Float64, "saved_usd": pl.Float64},
    )


def by_key(frame: pl.DataFrame, key: str) -> dict:
    return {row[key]: row for row in frame.to_dicts()}


def test_totals_and_every_dimension():
    report = build_cost_report(ledger_frame(), top_n=2)
    t = report.totals
    assert t["calls"] == 7
    assert t["cache_hits"] == 2
    assert t["failed_calls"] == 1
    assert t["unknown_price_calls"] == 1
    assert t["prompt_tokens"] == 1600 and t["completion_tokens"] == 730 and t["cached_tokens"] == 200
    assert t["cost_usd"] == pytest.approx(0.13)
    assert t["saved_usd"] == pytest.approx(0.11)
    # re-running with no cache = misses' cost + hits' savings
    assert t["no_cache_cost_usd"] == pytest.approx(0.24)
    assert t["runs"] == 2 and t["models"] == ["gpt-4o", "gpt-4o-mini", "mystery-model"]
    assert any("1 call(s) have no known price" in note for note in report.notes)

    assets = by_key(report.by_asset, "asset_key")
    assert assets["annotated_sample"]["cost_usd"] == pytest.approx(0.03)
    assert assets["annotated_sample"]["saved_usd"] == pytest.approx(0.01)
    assert assets["annotated_sample"]["no_cache_cost_usd"] == pytest.approx(0.04)
    assert assets["annotated_sample"]["calls"] == 3 and assets["annotated_sample"]["cache_hits"] == 1
    assert assets["synthetic_textbook"]["no_cache_cost_usd"] == pytest.approx(0.2)
    assert assets["code_exercises"]["cost_usd"] == 0
    assert assets["code_exercises"]["unknown_price_calls"] == 1
    assert assets["code_exercises"]["failed_calls"] == 1
    assert report.by_asset["asset_key"].to_list()[0] == "synthetic_textbook"  # most expensive first

    runs = by_key(report.by_run, "run_id")
    assert runs["run-1"]["cost_usd"] == pytest.approx(0.13) and runs["run-1"]["saved_usd"] == 0
    assert runs["run-2"]["cost_usd"] == 0 and runs["run-2"]["saved_usd"] == pytest.approx(0.11)

    models = by_key(report.by_model, "model")
    assert models["gpt-4o"]["cost_usd"] == pytest.approx(0.1)
    assert models["gpt-4o-mini"]["calls"] == 4
    assert models["mystery-model"]["unknown_price_calls"] == 1

    days = by_key(report.by_day, "day")
    assert set(days) == {"2026-01-01", "2026-01-02"}
    assert days["2026-01-01"]["cost_usd"] == pytest.approx(0.13) and days["2026-01-01"]["calls"] == 3
    assert days["2026-01-02"]["saved_usd"] == pytest.approx(0.11)

    top = report.top_materializations
    assert top.height == 2
    assert top.select("asset_key", "run_id").rows() == [("synthetic_textbook", "run-1"), ("annotated_sample", "run-1")]
    assert top["cost_usd"].to_list() == pytest.approx([0.1, 0.03])

    # every dimension adds up to the ledger totals
    for frame in (report.by_asset, report.by_run, report.by_model, report.by_day):
        assert frame["cost_usd"].sum() == pytest.approx(t["cost_usd"])
        assert frame["no_cache_cost_usd"].sum() == pytest.approx(t["no_cache_cost_usd"])
        assert frame["calls"].sum() == t["calls"]
        assert frame["unknown_price_calls"].sum() == t["unknown_price_calls"]


def test_missing_ledger_columns_are_reported_not_fatal():
    calls = ledger_frame().drop("cached_tokens", "saved_usd")
    normalised, notes = normalise_ledger(calls)
    assert normalised["cached_tokens"].null_count() == normalised.height
    assert any("cached_tokens" in n and "saved_usd" in n for n in notes)
    report = build_cost_report(calls)
    assert report.totals["cost_usd"] == pytest.approx(0.13)
    # hits without a recorded saving now have an unknown price
    assert report.totals["unknown_price_calls"] == 3


def materialize_report(warehouse, tmp_path):
    report_path = tmp_path / "reports" / "cost_report.html"
    result = dg.materialize(
        [cost_report],
        resources={"compute": Compute(), "warehouse": warehouse},
        run_config={"ops": {"cost_report": {"config": {"report_path": str(report_path), "top_n": 3}}}},
    )
    assert result.success
    (materialization,) = result.asset_materializations_for_node("cost_report")
    return report_path, materialization.metadata


def test_asset_writes_table_html_and_metadata_equal_to_ledger(warehouse, tmp_path):
    warehouse.write_table("llm_calls", ledger_frame())
    report_path, metadata = materialize_report(warehouse, tmp_path)

    ledger = warehouse.query(
        "SELECT sum(cost_usd) AS cost, sum(saved_usd) AS saved, count(*) AS calls, "
        "sum(prompt_tokens) AS prompt FROM llm_calls"
    ).row(0, named=True)
    table = warehouse.query(
        "SELECT sum(cost_usd) AS cost, sum(saved_usd) AS saved, sum(calls) AS calls, "
        "sum(prompt_tokens) AS prompt, count(*) AS assets FROM cost_report"
    ).row(0, named=True)
    assert table["cost"] == pytest.approx(ledger["cost"])
    assert table["saved"] == pytest.approx(ledger["saved"])
    assert table["calls"] == ledger["calls"] and table["prompt"] == ledger["prompt"]
    assert table["assets"] == 3
    assert metadata["total_cost_usd"].value == pytest.approx(ledger["cost"])
    assert metadata["total_calls"].value == ledger["calls"]
    assert metadata["no_cache_cost_usd"].value == pytest.approx(0.24)
    assert metadata["unknown_price_calls"].value == 1
    assert metadata["dagster/row_count"].value == 3

    # markdown tables and the chart as a data URI
    assert "| asset_key |" in metadata["by_asset"].value and "synthetic_textbook" in metadata["by_asset"].value
    assert "$0.130000" in metadata["summary"].value
    chart = re.fullmatch(r"!\[spend\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", metadata["chart"].value)
    assert chart and base64.b64decode(chart.group(1)).startswith(b"\x89PNG")

    html = report_path.read_text()
    assert metadata["report_path"].value == str(report_path.resolve())
    for heading in ("Spend by asset", "Spend by run", "Spend by model", "Spend by day (UTC)", "Most expensive"):
        assert heading in html
    assert '<img alt="spend" src="data:image/png;base64,' in html
    assert "<td>run-2</td>" in html and "mystery-model" in html and "$0.240000" in html

    # the lineage_views asset creates the views (llm_calls exists, pipeline tables do not)
    views = dg.materialize([lineage_views], resources={"compute": Compute(), "warehouse": warehouse})
    (views_event,) = views.asset_materializations_for_node("lineage_views")
    assert "lineage_llm_calls_by_key" in views_event.metadata["lineage_views"].value
    assert "skipped: table code_exercises does not exist" in views_event.metadata["lineage_views"].value
    by_cache_key = warehouse.query("SELECT * FROM lineage_llm_calls_by_key ORDER BY cache_key")
    assert by_cache_key["llm_cost_usd"].sum() == pytest.approx(ledger["cost"])


def test_asset_with_missing_then_empty_ledger(warehouse, tmp_path):
    report_path, metadata = materialize_report(warehouse, tmp_path)
    assert metadata["total_calls"].value == 0 and metadata["total_cost_usd"].value == 0
    assert "does not exist yet" in metadata["summary"].value
    assert metadata["dagster/row_count"].value == 0
    assert "No LLM calls recorded" in report_path.read_text()

    warehouse.write_table("llm_calls", ledger_frame().head(0))
    report_path, metadata = materialize_report(warehouse, tmp_path)
    assert "is empty" in metadata["summary"].value
    assert warehouse.query("SELECT count(*) AS n FROM cost_report")["n"][0] == 0


def test_days_are_utc_days_for_timezone_aware_ledgers():
    calls = ledger_frame()
    normalised, _ = normalise_ledger(calls.with_columns(pl.col("created_at").dt.convert_time_zone("Asia/Tokyo")))
    assert normalised["created_at"].dt.date().to_list()[0] == date(2026, 1, 1)


def test_report_on_the_ledger_the_llm_layer_writes(warehouse):
    """The real LLM layer (openai client against the local HTTP double) writes llm_calls;
    the report reads its columns and its totals equal the ledger's."""
    from resources.llm import ChatRequest, LLMResource
    from synth_assets.reports.lineage_views import create_lineage_views
    from tests.openai_double import OpenAIDouble

    requests = [ChatRequest(messages=[{"role": "user", "content": f"question {i}"}]) for i in range(3)]
    with OpenAIDouble() as server:
        # no budget: the unpriced model could not be held to one (a configuration error otherwise)
        settings = dict(base_url=server.base_url, api_key=TEST_KEY_REF, embedding_model="text-embedding-3-small", max_cost_usd=None,
                        retry_base_delay_s=0.01, timeout_s=5.0)
        for model in ("gpt-4o-mini", "gpt-4o-mini", "no-such-model-xyz"):  # paid, cached, unpriced
            with LLMResource(model=model, **settings).session(None, warehouse) as session:
                session.complete(requests)

    report = build_cost_report(warehouse.query("SELECT * FROM llm_calls"))
    ledger = warehouse.query(
        "SELECT sum(cost_usd) AS cost, sum(saved_usd) AS saved, count(*) FILTER (WHERE cache_hit) AS hits, "
        "count(*) AS calls FROM llm_calls"
    ).row(0, named=True)
    t = report.totals
    assert t["calls"] == ledger["calls"] == 9 and t["cache_hits"] == ledger["hits"] == 3
    assert t["cost_usd"] == pytest.approx(ledger["cost"]) and t["cost_usd"] > 0
    # the second session re-asked the first one's questions: savings equal the first spend
    assert t["saved_usd"] == pytest.approx(t["cost_usd"])
    assert t["no_cache_cost_usd"] == pytest.approx(2 * t["cost_usd"])
    assert t["unknown_price_calls"] == 3
    assert by_key(report.by_model, "model")["no-such-model-xyz"]["unknown_price_calls"] == 3

    assert create_lineage_views(warehouse)["lineage_llm_calls_by_key"] == "created"
    per_key = warehouse.query("SELECT * FROM lineage_llm_calls_by_key")
    assert per_key["llm_cost_usd"].sum() == pytest.approx(ledger["cost"])
