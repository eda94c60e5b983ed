"""instructions_contamination_report: instruction rows checked against HumanEval like the
exercises; a copied problem (docstring in the instruction, canonical solution in the
output) is `contaminated` with its reason, an unrelated row is `clean`, and the release
filter leaves out exactly the contaminated rows."""

from __future__ import annotations

import dagster as dg
import polars as pl

from resources.compute import Compute
from resources.llm import LLMResource
from synth_assets.decontamination.benchmarks import load_humaneval
from synth_assets.decontamination.contamination_report import DecontaminationConfig
from synth_assets.decontamination.instructions_contamination_report import (
    INSTRUCTIONS_REPORT_TABLE,
    instruction_document,
    instructions_contamination_report,
    release_filter,
)
from tests.test_release import instruction_rows


def test_instruction_document_puts_prose_in_the_docstring_and_python_in_the_code():
    source, has_code = instruction_document("Reverse a list.", "xs = [1, 2]", "```python\ndef rev(xs):\n    return xs[::-1]\n```")
    assert has_code and source.startswith('"""Reverse a list.\n"""') and "xs = [1, 2]" in source and "return xs[::-1]" in source
    source, has_code = instruction_document('Say """hi"""', "", "Hello there, friend.")
    assert not has_code and '"""' not in source.split('"""')[1] and "Hello there, friend." in source


def test_copied_humaneval_problem_is_contaminated_and_left_out(warehouse):
    problem = load_humaneval()[0]
    rows = instruction_rows(["copied", "clean"], "self_instruct").with_columns(
        pl.Series("instruction", [problem.prompt.split('"""')[1].strip(), "Explain what a Python dictionary is used for."]),
        pl.Series("output", [f"```python\n{problem.prompt}{problem.canonical_solution}```", "It maps keys to values."]),
    )
    warehouse.write_table("self_instruct", rows)
    warehouse.write_table("evol_instruct", instruction_rows(["e1"], "evol_instruct"))
    config = DecontaminationConfig(use_embedding=False, use_functional=False)
    result = dg.materialize([instructions_contamination_report], resources={"compute": Compute(), "warehouse": warehouse, "llm": LLMResource()},
                            run_config=dg.RunConfig({INSTRUCTIONS_REPORT_TABLE: config}))
    assert result.success
    report = {(r["dataset"], r["instruction_id"]): r for r in warehouse.query(f"SELECT * FROM {INSTRUCTIONS_REPORT_TABLE}").to_dicts()}
    assert set(report) == {("self_instruct", "copied"), ("self_instruct", "clean"), ("evol_instruct", "e1")}
    copied = report[("self_instruct", "copied")]
    assert copied["verdict"] == "contaminated" and copied["has_code"] and problem.task_id in copied["reason"]
    assert copied["fired_signals"] and copied["max_ngram_overlap"] > 0.5
    assert report[("self_instruct", "clean")]["verdict"] == "clean" and not report[("self_instruct", "clean")]["has_code"]
    assert report[("self_instruct", "clean")]["reason"].startswith("below every threshold")
    metadata = result.asset_materializations_for_node(INSTRUCTIONS_REPORT_TABLE)[0].metadata
    assert metadata["contaminated_by_dataset"].value == {"evol_instruct": 0, "self_instruct": 1}

    condition, reason = release_filter("self_instruct")
    kept = warehouse.query(f"SELECT instruction_id FROM self_instruct WHERE {condition} ORDER BY 1")
    assert kept["instruction_id"].to_list() == ["clean"] and "contaminated" in reason
