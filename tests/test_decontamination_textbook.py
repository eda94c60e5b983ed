"""`textbook_contamination_report`: synthetic textbook code blocks checked like the
exercises, one verdict and reason per block."""

from __future__ import annotations

import dagster as dg
import polars as pl
from tests.openai_double import TEST_KEY_REF

from resources.compute import Compute
from resources.llm import LLMResource
from synth_assets.decontamination.benchmarks import load_humaneval
from synth_assets.decontamination.contamination_report import DecontaminationConfig
from synth_assets.decontamination.textbook_contamination_report import (
    TEXTBOOK_REPORT_TABLE,
    textbook_blocks,
    textbook_contamination_report,
)
from tests.contamination_variants import make_variant

HUMANEVAL = load_humaneval()


def section(text_blocks: list[str], prose: str = "Loops repeat work.") -> str:
    return prose + "\n\n" + "\n\n".join(f"```python\n{block}```" for block in text_blocks)


def sections_frame() -> tuple[pl.DataFrame, str]:
    copy = make_variant(HUMANEVAL[12], "no_statement+restructured+renamed").solution
    clean_block = "for index in range(3):\n    print('step', index)\n"
    helper = "def greet(name):\n    return 'Hello, ' + name + '!'\n"
    frame = pl.DataFrame([
        {"section_id": "s1", "text": section([clean_block, copy])},
        {"section_id": "s2", "text": section([helper], prose="Functions name a computation.")},
        {"section_id": "s3", "text": "No code here."},
    ])
    return frame, copy


def test_blocks_are_split_per_section_with_stable_ids():
    frame, copy = sections_frame()
    blocks = textbook_blocks(frame)
    assert blocks["section_id"].to_list() == ["s1", "s1", "s2"]
    assert blocks["block_index"].to_list() == [0, 1, 0]
    assert blocks["code"][1] == copy
    assert textbook_blocks(frame)["block_id"].to_list() == blocks["block_id"].to_list()
    assert blocks["block_id"].n_unique() == 3


def test_a_paraphrased_humaneval_block_is_contaminated_and_the_rest_clean(warehouse):
    frame, _ = sections_frame()
    warehouse.write_table("synthetic_textbook", frame)
    result = dg.materialize(
        [textbook_contamination_report],
        resources={"compute": Compute(), "warehouse": warehouse, "llm": LLMResource(base_url="http://127.0.0.1:9", api_key=TEST_KEY_REF)},
        run_config=dg.RunConfig({TEXTBOOK_REPORT_TABLE: DecontaminationConfig(use_embedding=False, functional_on_flagged=True)}),
    )
    metadata = result.asset_materializations_for_node(TEXTBOOK_REPORT_TABLE)[0].metadata
    report = warehouse.query(f"SELECT * FROM {TEXTBOOK_REPORT_TABLE} ORDER BY section_id, block_index")
    assert report["verdict"].to_list() == ["clean", "contaminated", "clean"]
    copied = report.row(1, named=True)
    assert "HumanEval/12" in copied["reason"] and copied["section_id"] == "s1"
    assert copied["functional_task_id"] == "HumanEval/12" and copied["functional_pass_rate"] == 1.0
    assert report["reason"].str.len_chars().min() > 0  # every row says why
    assert metadata["sections_with_contaminated_blocks"].value == "s1" and metadata["blocks"].value == 3
