"""`synthesis_contamination_report`: case2code programs and personas checked against
HumanEval like the exercises, one verdict and reason per item."""

from __future__ import annotations

import dagster as dg
import polars as pl

from resources.compute import Compute
from resources.llm import LLMResource
from synth_assets.decontamination.benchmarks import load_humaneval
from synth_assets.decontamination.contamination_report import DecontaminationConfig
from synth_assets.decontamination.synthesis_contamination_report import (
    SYNTHESIS_REPORT_TABLE,
    contaminated_ids,
    persona_source,
    release_filter,
    synthesis_contamination_report,
    synthesis_items,
)
from tests.contamination_variants import make_variant
from tests.openai_double import TEST_KEY_REF, OpenAIDouble

HUMANEVAL = load_humaneval()
# HumanEval/0's docstring, word for word, inside a persona (a leaked benchmark sentence).
LEAKED = ("a tutor who asks students to check if in given list of numbers, are any two numbers closer to "
          "each other than given threshold")


def tables() -> tuple[pl.DataFrame, pl.DataFrame]:
    copied = make_variant(HUMANEVAL[12], "no_statement+restructured+renamed")
    cases = pl.DataFrame([
        {"case_id": "c-copy", "function_name": "longest", "program": copied.solution},
        {"case_id": "c-clean", "function_name": "clamp",
         "program": "def clamp(value, low, high):\n    return max(low, min(value, high))\n"},
    ])
    personas = pl.DataFrame([
        {"persona_id": "p-leak", "persona": LEAKED},
        {"persona_id": "p-clean", "persona": "a beekeeper who logs hive weights in a spreadsheet every week"},
    ])
    return cases, personas


def test_items_are_programs_as_code_and_personas_as_docstrings():
    cases, personas = tables()
    items = synthesis_items(cases, personas)
    assert items["item_id"].to_list() == ["c-copy", "c-clean", "p-leak", "p-clean"]
    assert items["source_table"].to_list() == ["case2code", "case2code", "personas", "personas"]
    assert items["function_name"].to_list() == ["longest", "clamp", None, None]
    assert items["source"][3] == persona_source(personas["persona"][1]) == f'"""{personas["persona"][1]}"""\n'
    assert persona_source('a fan of "quotes" and """docstrings"""') == '"""a fan of \'quotes\' and \'\'\'docstrings\'\'\'"""\n'


def test_a_copied_program_and_a_leaked_persona_are_contaminated_and_the_rest_clean(warehouse):
    cases, personas = tables()
    warehouse.write_table("case2code", cases)
    warehouse.write_table("personas", personas)
    with OpenAIDouble() as server:  # embeddings through the LLM layer, like the exercises
        llm = LLMResource(base_url=server.base_url, api_key=TEST_KEY_REF, model="gpt-4o-mini",
                          embedding_model="text-embedding-3-small", max_retries=0)
        result = dg.materialize(
            [synthesis_contamination_report], resources={"compute": Compute(), "warehouse": warehouse, "llm": llm},
            run_config=dg.RunConfig({SYNTHESIS_REPORT_TABLE: DecontaminationConfig(functional_on_flagged=True)}),
        )
    assert result.success
    report = warehouse.query(f"SELECT * FROM {SYNTHESIS_REPORT_TABLE}")
    verdicts = dict(zip(report["item_id"], report["verdict"]))
    assert verdicts == {"c-copy": "contaminated", "c-clean": "clean", "p-leak": "contaminated", "p-clean": "clean"}
    rows = {row["item_id"]: row for row in report.iter_rows(named=True)}
    assert "HumanEval/12" in rows["c-copy"]["reason"] and rows["c-copy"]["functional_pass_rate"] == 1.0
    assert rows["p-leak"]["ngram_task_id"] == "HumanEval/0" and "ngram" in rows["p-leak"]["fired_signals"]
    assert rows["p-leak"]["ast_match_rate"] in (None, 0.0) and rows["p-leak"]["functional_candidates"] in (None, 0)
    assert report["embedding_cosine"].is_not_null().all()  # every item was embedded
    assert report["reason"].str.len_chars().min() > 0  # every row says why
    assert contaminated_ids(report, "case2code") == ["c-copy"] and contaminated_ids(report, "personas") == ["p-leak"]
    # the release's gates keep exactly the clean rows
    for table, id_column, kept in (("case2code", "case_id", ["c-clean"]), ("personas", "persona_id", ["p-clean"])):
        condition, reason = release_filter(table, id_column)
        assert warehouse.query(f"SELECT {id_column} FROM {table} WHERE {condition}")[id_column].to_list() == kept
        assert reason.startswith("contaminated:")
    metadata = result.asset_materializations_for_node(SYNTHESIS_REPORT_TABLE)[0].metadata
    assert metadata["contaminated_case_ids"].value == "c-copy"
    assert metadata["contaminated_persona_ids"].value == "p-leak"
    assert (metadata["cases"].value, metadata["personas"].value) == (2, 2)


def test_a_missing_input_table_fails_saying_which(warehouse):
    cases, _ = tables()
    warehouse.write_table("case2code", cases)
    result = dg.materialize(
        [synthesis_contamination_report],
        resources={"compute": Compute(), "warehouse": warehouse, "llm": LLMResource(base_url="http://127.0.0.1:9", api_key=TEST_KEY_REF)},
        run_config=dg.RunConfig({SYNTHESIS_REPORT_TABLE: DecontaminationConfig(use_embedding=False)}),
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "personas does not exist yet" in str(failure.event_specific_data.error)
