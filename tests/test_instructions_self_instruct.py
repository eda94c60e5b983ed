"""self_instruct against the OpenAI double: near-duplicates planted by the double (of
seeds, of candidates from the same answer, of earlier rounds' instructions) are removed
by the ROUGE-L filter with their reason; the pool grows; output-first for classification;
Python outputs run in the sandbox; a re-run costs nothing."""

from __future__ import annotations

import re

import dagster as dg

from resources.compute import Compute
from resources.llm import LLMResource
from synth_assets.instructions.rouge import rouge_l
from synth_assets.instructions.seed_pool import load_seed_tasks
from synth_assets.instructions.self_instruct import SelfInstructConfig, self_instruct
from tests.instruction_doubles import CODE_OUTPUT, FAILING_CODE_OUTPUT, self_instruct_responder
from tests.openai_double import OpenAIDouble, TEST_KEY_REF


def llm_for(server) -> LLMResource:
    return LLMResource(base_url=server.base_url, api_key=TEST_KEY_REF, model="gpt-4o-mini",
                       embedding_model="text-embedding-3-small", max_retries=0)


def run(warehouse, server, **overrides):
    config = SelfInstructConfig(**{"rounds": 2, "requests_per_round": 6, "sandbox_timeout_s": 2.0, **overrides})
    return dg.materialize([self_instruct], resources={"compute": Compute(), "warehouse": warehouse, "llm": llm_for(server)},
                          run_config=dg.RunConfig({"self_instruct": config}))


def test_self_instruct_removes_planted_near_duplicates_and_grows_the_pool(warehouse):
    with OpenAIDouble(chat=self_instruct_responder) as server:
        result = run(warehouse, server)
        generation_prompts = [b["messages"][-1]["content"] for b in server.chat_requests if "Come up with a series" in b["messages"][-1]["content"]]
    assert result.success
    rows = warehouse.query("SELECT * FROM self_instruct").to_dicts()
    rejects = warehouse.query("SELECT * FROM self_instruct_rejects").to_dicts()
    seeds = {s.task_id: s.instruction for s in load_seed_tasks()}

    # 6 one-task requests x 2 rounds; per round one fresh generation and one fresh classification task
    assert len(rows) == 4 and len({r["instruction_id"] for r in rows}) == 4
    kept = [r["instruction"] for r in rows]
    for i, a in enumerate(kept):  # nothing kept is a near-duplicate of anything else kept or of a seed
        assert all(rouge_l(a, b) < 0.7 for b in kept[i + 1 :])
        assert all(rouge_l(a, s) < 0.7 for s in seeds.values())

    similar = [r for r in rejects if r["reason"].startswith("rouge_l: ")]
    by_target = {r["most_similar_id"] for r in similar}
    assert by_target & set(seeds), "near-duplicates of seed tasks were not caught"
    same_round = [r for r in similar if r["round"] == 1 and r["most_similar_id"] not in seeds]
    assert same_round, "a near-duplicate of a task accepted earlier in the same round was not caught"
    round_two_dups = [r for r in similar if r["round"] == 2 and r["most_similar_id"] not in seeds]
    assert round_two_dups, "near-duplicates of earlier generated instructions were not caught"
    for reject in similar:
        score = float(re.match(r"rouge_l: ([\d.]+) >= 0.7", reject["reason"]).group(1))
        assert score >= 0.7 and abs(reject["rouge_l"] - score) < 1e-3 and reject["stage"] == "instruction_filter"
    assert any(r["reason"] == "blacklisted: image" for r in rejects)
    assert any(r["reason"] == "too_short: 3 words (< 4)" for r in rejects)

    # the pool grew: round-2 prompts show two generated (round-1) instructions, round-1 prompts none
    assert len(generation_prompts) == 12
    round_one = [r["instruction"] for r in rows if r["round"] == 1]
    assert not any(t in generation_prompts[0] for t in round_one)
    for prompt in generation_prompts[6:]:
        assert sum(1 for t in round_one if t in prompt) == 2
        assert len(re.findall(r"^Task \d+: ", prompt, flags=re.MULTILINE)) == 8

    classification = [r for r in rows if r["is_classification"]]
    assert len(classification) == 2
    assert all(r["instance_order"] == "output_first" and r["output"] == "Yes" for r in classification)
    generation = [r for r in rows if not r["is_classification"]]
    assert all(r["instance_order"] == "input_first" for r in generation)
    for row in generation:
        if row["output"] == CODE_OUTPUT:
            assert (row["has_code"], row["n_asserts"], row["sandbox_passed"], row["sandbox_reason"]) == (True, 1, True, "passed")
        elif row["output"] == FAILING_CODE_OUTPUT:
            assert row["sandbox_passed"] is False and row["sandbox_reason"].startswith("assertion_failed")
        else:
            assert not row["has_code"] and row["sandbox_reason"] == "no_code"
    assert all(len(r["in_context_ids"]) == 8 and r["instruction_cache_key"] and r["cache_key"] for r in rows)
    metadata = result.asset_materializations_for_node("self_instruct")[0].metadata
    assert metadata["pool_size_by_round"].value == [len(seeds) + 2, len(seeds) + 4]
    assert "rouge_l" in metadata["rejection_reasons"].value


def test_rerun_with_nothing_changed_sends_no_request(warehouse):
    with OpenAIDouble(chat=self_instruct_responder) as server:
        run(warehouse, server, rounds=1)
        first = warehouse.query("SELECT instruction_id FROM self_instruct ORDER BY 1")
        sent = len(server.chat_requests)
        result = run(warehouse, server, rounds=1)
        assert len(server.chat_requests) == sent
    assert warehouse.query("SELECT instruction_id FROM self_instruct ORDER BY 1").equals(first)
    metadata = result.asset_materializations_for_node("self_instruct")[0].metadata
    assert metadata["llm/cost_usd"].value == 0 and metadata["llm/cache_hits"].value == sent
