"""The code location loads, and it holds the whole graph the product promises."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from synth_assets.definitions import defs

PIPELINE = [
    "raw_stack_plus",
    "annotated_sample",
    "quality_classifier",
    "filtered_textbook",
    "synthetic_textbook",
    "code_exercises",
    "decontaminated_exercises",
    "cost_report",
    "training_data_release",
]


def test_definitions_validate():
    dg.Definitions.validate_loadable(defs)


def test_graph_has_every_stage_in_lineage_order():
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert set(PIPELINE) <= keys
    upstream = {k: {p.to_user_string() for p in graph.get(dg.AssetKey(k)).parent_keys} for k in PIPELINE}
    assert "raw_stack_plus" in upstream["annotated_sample"]
    assert "annotated_sample" in upstream["quality_classifier"]
    assert "quality_classifier" in upstream["filtered_textbook"]
    assert "code_exercises" in upstream["decontaminated_exercises"]


def test_every_pipeline_asset_has_a_quality_check_and_a_group():
    graph = defs.resolve_asset_graph()
    checked = {check.asset_key.to_user_string() for check in graph.asset_check_keys}
    for key in PIPELINE[:7]:
        assert key in checked, f"{key} has no asset check"
        node = graph.get(dg.AssetKey(key))
        assert node.group_name != "default", f"{key} has no group"
        assert node.owners, f"{key} has no owner"


def test_downstream_assets_automate_and_the_sensor_runs_by_default():
    graph = defs.resolve_asset_graph()
    for key in PIPELINE[1:]:
        assert graph.get(dg.AssetKey(key)).automation_condition is not None, key
    sensors = {sensor.name: sensor for sensor in defs.sensors}
    automation = [s for s in sensors.values() if isinstance(s, dg.AutomationConditionSensorDefinition)]
    assert automation and automation[0].default_status == dg.DefaultSensorStatus.RUNNING
    assert any(s.name == "corpus_change_sensor" for s in sensors.values())


def test_resources_are_the_warehouse_and_the_llm():
    assert set(defs.resources) >= {"warehouse", "llm"}


def test_no_step_depends_on_a_concurrency_pool():
    """The warehouse is a DuckLake that takes concurrent writers (issue 11): correctness never
    depends on a pool in dagster.yaml, so no asset or check declares one."""
    for definition in [*defs.assets, *defs.asset_checks]:
        pools = {getattr(node, "pool", None) for node in definition.node_def.iterate_op_defs()}
        assert pools == {None}, (definition, pools)
    assert "pools" not in (Path(__file__).resolve().parents[1] / "dagster_home" / "dagster.yaml").read_text()


def test_instructions_group_is_judged_decontaminated_and_released():
    graph = defs.resolve_asset_graph()
    instructions = ["self_instruct", "alpaca_instructions", "self_qa", "evol_instruct", "llm_judge"]
    checked = {check.asset_key.to_user_string() for check in graph.asset_check_keys}
    for key in instructions:
        node = graph.get(dg.AssetKey(key))
        assert node.group_name == "instructions" and node.automation_condition is not None and key in checked, key
    parents = {k: {p.to_user_string() for p in graph.get(dg.AssetKey(k)).parent_keys}
               for k in ("llm_judge", "instructions_contamination_report", "training_data_release", "cost_report")}
    assert {"synthetic_textbook", "code_exercises", *instructions[:4]} <= parents["llm_judge"]
    assert set(instructions[:4]) <= parents["instructions_contamination_report"]
    assert {"llm_judge", "instructions_contamination_report", *instructions[:4]} <= parents["training_data_release"]
    assert {*instructions, "instructions_contamination_report"} <= parents["cost_report"]
    assert "filtered_textbook" in {p.to_user_string() for p in graph.get(dg.AssetKey("self_qa")).parent_keys}
