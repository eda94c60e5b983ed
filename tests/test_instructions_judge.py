"""llm_judge (AlpaGasus): every row of the judged tables scored with its rubric, kept by a
per-dataset threshold, dropped rows queryable with the reason; the threshold changes what
the release keeps at no LLM cost; lineage shows a judged row's score and rationale."""

from __future__ import annotations

import dagster as dg
import polars as pl

from resources.compute import Compute
from synth_assets.instructions.llm_judge import LLMJudgeConfig, judge_filter, llm_judge
from synth_assets.instructions.self_instruct import SelfInstructConfig, self_instruct
from synth_assets.reports import lineage
from synth_assets.reports.training_data_release import ReleaseConfigSpec, read_config_rows
from tests.instruction_doubles import judge_responder, self_instruct_responder
from tests.openai_double import OpenAIDouble
from tests.test_instructions_self_instruct import llm_for

SECTIONS = pl.DataFrame({
    "section_id": ["s1", "s2"], "prompt_id": ["p1", "p2"], "topic": ["Sorting", "Recursion"],
    "subtopic": ["bubble sort", "factorial"], "audience": ["beginner", "student"],
    "text": ["Sorting puts items in order.\n```python\ndef f(x):\n    return sorted(x)\n```", "Recursion is a function calling itself."],
})


def judge(warehouse, server, **config):
    return dg.materialize([llm_judge], resources={"compute": Compute(), "warehouse": warehouse, "llm": llm_for(server)},
                          run_config=dg.RunConfig({"llm_judge": LLMJudgeConfig(**config)}))


def test_judge_scores_rows_thresholds_decide_and_lineage_shows_it(warehouse):
    warehouse.write_table("synthetic_textbook", SECTIONS)
    with OpenAIDouble(chat=self_instruct_responder) as server:
        dg.materialize([self_instruct], resources={"compute": Compute(), "warehouse": warehouse, "llm": llm_for(server)},
                       run_config=dg.RunConfig({"self_instruct": SelfInstructConfig(rounds=2, requests_per_round=12, sandbox_timeout_s=2.0)}))
    instructions = warehouse.query("SELECT instruction_id, output FROM self_instruct").to_dicts()
    with OpenAIDouble(chat=judge_responder) as server:
        server.malformed_next(count=1)  # the first judge call fails: that row is not judged, not kept
        result = judge(warehouse, server)
        sent = len(server.chat_requests)
        verdicts = warehouse.query("SELECT * FROM llm_judge").to_dicts()
        stricter = judge(warehouse, server, thresholds={"self_instruct": 5})
        assert len(server.chat_requests) == sent + 1  # only the failed call is asked again
    assert result.success and stricter.success
    assert {v["dataset"] for v in verdicts} == {"synthetic_textbook", "self_instruct"}
    assert len(verdicts) == 2 + len(instructions)
    failed = [v for v in verdicts if v["score"] is None]
    assert len(failed) == 1 and not failed[0]["kept"] and failed[0]["reason"].startswith("judge_failed: llm_error")
    expected = {i["instruction_id"]: 5 if "assert" in i["output"] else 4 if "def " in i["output"] else 2 for i in instructions}
    expected.update({"s1": 4, "s2": 2})
    for verdict in verdicts:
        if verdict["score"] is None:
            continue
        assert verdict["score"] == expected[verdict["judged_id"]] and verdict["rationale"].startswith(f"scored {verdict['score']}")
        assert verdict["kind"] == ("textbook" if verdict["dataset"] == "synthetic_textbook" else "instruction")
        assert verdict["kept"] == (verdict["score"] >= 4) and verdict["threshold"] == 4.0
        if not verdict["kept"]:
            assert verdict["reason"] == f"below_threshold: score {verdict['score']} < 4"
    metadata = result.asset_materializations_for_node("llm_judge")[0].metadata
    assert metadata["judge_failed"].value == 1 and "code_exercises" in metadata["datasets_missing"].value
    assert "self_instruct" in metadata["score_distribution"].value

    # the release keeps what the judge kept; a stricter threshold keeps less, at no cost
    spec = ReleaseConfigSpec("self_instruct", "self_instruct", ("instruction", "input", "output"), "Self-Instruct",
                             row_filter=judge_filter("self_instruct", "instruction_id"))
    released, left_out, reason = read_config_rows(warehouse, spec, include_all=False)
    now = warehouse.query("SELECT * FROM llm_judge WHERE dataset = 'self_instruct'").to_dicts()
    assert set(released["instruction_id"]) == {v["judged_id"] for v in now if v["kept"]}
    assert all(v["score"] == 5 for v in now if v["kept"]) and left_out == len(instructions) - released.height
    assert 0 < released.height < len(instructions) and "llm_judge" in reason
    assert {"instruction", "input", "output"} <= set(released.columns)

    # lineage: the judged row's score and rationale
    row_id = next(v["judged_id"] for v in now if v["kept"])
    text = lineage.format_trace(lineage.trace(warehouse.read_only(), row_id[:10]))
    assert "score: 5" in text and "rationale: scored 5: tested code" in text and "kept: True" in text
    assert "instruction row (self_instruct)" in text and "LLM judge" in text
    judged = next(v for v in now if v["judged_id"] == row_id)
    assert f"cache_key={judged['cache_key'][:20]}" in text  # the judging call is in the cost
    # a dropped row's reason is shown too
    dropped = next(v["judged_id"] for v in now if not v["kept"] and v["score"] is not None)
    text = lineage.format_trace(lineage.trace(warehouse.read_only(), dropped))
    assert "kept: False" in text and "reason: below_threshold: score" in text
