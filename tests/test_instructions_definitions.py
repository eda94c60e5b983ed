"""The instruction assets load in a Definitions with their checks (group, owners, kinds,
automation), and the checks pass on real rows and fail on a duplicated id."""

from __future__ import annotations

import dagster as dg
import polars as pl

from quality_checks import instructions as instruction_checks
from quality_checks.checks import build_asset_check, evaluate_spec
from quality_checks.rules import DEFAULT_BOUNDS
from resources.compute import Compute
from resources.llm import LLMResource
from synth_assets.instructions.alpaca_instructions import alpaca_instructions
from synth_assets.instructions.evol_instruct import evol_instruct
from synth_assets.instructions.llm_judge import llm_judge
from synth_assets.instructions.self_instruct import SelfInstructConfig, self_instruct
from synth_assets.instructions.self_qa import self_qa
from tests.instruction_doubles import self_instruct_responder
from tests.openai_double import OpenAIDouble
from tests.test_instructions_self_instruct import llm_for


def test_instruction_assets_and_checks_load_and_checks_pass(warehouse):
    assets = [self_instruct, alpaca_instructions, self_qa, evol_instruct, llm_judge]
    names = {a.key.to_user_string() for a in assets}
    # The group's checks built from their own module (tests/test_definitions.py covers the
    # whole Definitions); the HumanEval report's check belongs to an asset of another group.
    checks = [build_asset_check(spec) for spec in instruction_checks.check_specs(DEFAULT_BOUNDS) if spec.asset in names]
    defs = dg.Definitions(assets=assets, asset_checks=checks, resources={"compute": Compute(), "warehouse": warehouse, "llm": LLMResource()})
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    for asset in assets:
        node = graph.get(asset.key)
        assert node.group_name == "instructions" and node.owners == ["team:synth-assets"] and node.automation_condition
        assert node.kinds >= {"duckdb", "python", "openai"}
    assert {c.asset_key.to_user_string() for c in graph.asset_check_keys} == names
    with OpenAIDouble(chat=self_instruct_responder) as server:
        dg.materialize([self_instruct], resources={"compute": Compute(), "warehouse": warehouse, "llm": llm_for(server)},
                       run_config=dg.RunConfig({"self_instruct": SelfInstructConfig(rounds=1, requests_per_round=6, sandbox_timeout_s=2.0)}))
    specs = [s for s in instruction_checks.check_specs(DEFAULT_BOUNDS) if s.table == "self_instruct"]
    assert specs
    for spec in specs:
        outcome = evaluate_spec(warehouse, spec)
        assert outcome.passed, outcome.metadata
    # a duplicated id fails the blocking check
    frame = warehouse.query("SELECT * FROM self_instruct")
    warehouse.write_table("self_instruct", pl.concat([frame, frame.head(1)]))
    integrity = next(s for s in specs if s.blocking)
    assert not evaluate_spec(warehouse, integrity).passed


def test_card_section_reports_counts_reasons_and_score_distribution(warehouse):
    from synth_assets.instructions.card import instruction_card_section

    warehouse.write_table("self_instruct", pl.DataFrame({"instruction_id": ["a", "b", "c"]}))
    warehouse.write_table("self_instruct_rejects", pl.DataFrame({"reason": ["rouge_l: 0.9 >= 0.7", "rouge_l: 0.8 >= 0.7", "too_short: 2 words (< 4)"]}))
    warehouse.write_table("llm_judge", pl.DataFrame({
        "dataset": ["self_instruct"] * 3, "judged_id": ["a", "b", "c"], "score": [5, 2, None],
        "threshold": [4.0] * 3, "kept": [True, False, False],
    }))
    card = instruction_card_section(warehouse)
    assert "| self_instruct | 3 | 3 | 1 | 3.5 | - | self_instruct |" in card
    assert "| alpaca_instructions | not materialized |" in card
    assert "- `self_instruct`: rouge_l (2), too_short (1)" in card
    assert "| self_instruct | 4.0 | 0 | 0 | 1 | 0 | 0 | 1 | 1 |" in card
