"""`decontaminated_exercises`: the code exercises that no contamination signal flagged."""

import dagster as dg

from resources.warehouse import Warehouse
from synth_assets.automation import on_upstream_change
from synth_assets.common.tables import table_result
from synth_assets.decontamination.contamination_report import (
    CLEAN,
    CODE_VERSION,
    CONTAMINATED,
    EXERCISES_TABLE,
    REPORT_TABLE,
)

KEPT_TABLE = "decontaminated_exercises"


@dg.asset(
    name=KEPT_TABLE,
    deps=[dg.AssetKey(EXERCISES_TABLE), dg.AssetKey(REPORT_TABLE)],
    group_name="decontamination",
    kinds={"duckdb", "python"},
    owners=["team:synth-assets"],
    code_version=CODE_VERSION,
    automation_condition=on_upstream_change(),
)
def decontaminated_exercises(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    """The `code_exercises` rows whose `contamination_report` verdict is `clean`, same
    columns and `exercise_id` (row lineage). Why a row is missing: see its `reason` in
    `contamination_report`. Fails if any exercise has no verdict (stale report)."""
    with warehouse.materialization(context) as lake:
        unjudged = lake.query(
            f'SELECT count(*) AS n FROM "{EXERCISES_TABLE}" c ANTI JOIN "{REPORT_TABLE}" r USING (exercise_id)'
        )["n"][0]
        if unjudged:
            raise dg.Failure(
                f"{unjudged} code exercises have no contamination verdict; re-materialize {REPORT_TABLE} first"
            )
        lake.execute(
            f'CREATE OR REPLACE TABLE "{KEPT_TABLE}" AS SELECT c.* FROM "{EXERCISES_TABLE}" c '
            f"JOIN \"{REPORT_TABLE}\" r USING (exercise_id) WHERE r.verdict = '{CLEAN}' ORDER BY c.exercise_id"
        )
        counts = lake.query(f'SELECT verdict, count(*) AS n FROM "{REPORT_TABLE}" GROUP BY verdict')
        by_verdict = dict(zip(counts["verdict"].to_list(), counts["n"].to_list()))
        context.log.info(f"{KEPT_TABLE}: kept {by_verdict.get(CLEAN, 0)}, removed {by_verdict.get(CONTAMINATED, 0)}")
    return table_result(
        warehouse,
        KEPT_TABLE,
        {"kept": by_verdict.get(CLEAN, 0), "removed_as_contaminated": by_verdict.get(CONTAMINATED, 0)},
        snapshot_id=lake.snapshot_id_published,
    )

