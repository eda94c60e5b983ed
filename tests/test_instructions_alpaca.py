"""alpaca_instructions against the OpenAI double: one call per seeded topic/persona plan,
near-duplicates of the seed examples and empty outputs dropped with their reasons."""

from __future__ import annotations

import dagster as dg

from resources.compute import Compute
from synth_assets.instructions.alpaca_instructions import AlpacaConfig, alpaca_instructions
from synth_assets.instructions.rouge import rouge_l
from synth_assets.instructions.seed_pool import load_seed_tasks
from synth_assets.synthesis.prompt_plans import load_catalog
from tests.instruction_doubles import CODE_OUTPUT, alpaca_responder, near_duplicate
from tests.openai_double import OpenAIDouble
from tests.test_instructions_self_instruct import llm_for


def test_alpaca_one_call_per_plan_with_catalog_diversity_and_filters(warehouse):
    def materialize():
        return dg.materialize(
            [alpaca_instructions], resources={"compute": Compute(), "warehouse": warehouse, "llm": llm_for(server)},
            run_config=dg.RunConfig({"alpaca_instructions": AlpacaConfig(n_requests=16, sandbox_timeout_s=2.0)}),
        )

    with OpenAIDouble(chat=alpaca_responder) as server:
        result = materialize()
        prompts = [b["messages"][-1]["content"] for b in server.chat_requests]
        again = materialize()  # nothing changed: answered from the cache, no request, $0
        assert len(server.chat_requests) == len(prompts)
    metadata = again.asset_materializations_for_node("alpaca_instructions")[0].metadata
    assert metadata["llm/cost_usd"].value == 0 and metadata["llm/cache_hits"].value == 16
    assert result.success and len(prompts) == 16
    rows = warehouse.query("SELECT * FROM alpaca_instructions").to_dicts()
    rejects = warehouse.query("SELECT * FROM alpaca_instructions_rejects").to_dicts()
    assert len(rows) + len(rejects) == 16 and rows and rejects

    catalog = load_catalog()
    topics = {t for t, _ in catalog.topics}
    assert len({r["topic"] for r in rows}) == len(rows)  # topics drawn without replacement
    for row in rows:
        assert row["topic"] in topics and row["persona"] in catalog.personas
        assert row["subtopic"] in row["instruction"] and row["input"] == ""  # "<noinput>" normalised
        assert row["output"] == CODE_OUTPUT and row["sandbox_passed"] is True
        assert len(row["in_context_ids"]) == 3
        sent = next(p for p in prompts if f"about {row['topic']} ({row['subtopic']})" in p)
        assert row["persona"] in sent

    seeds = {s.task_id: s.instruction for s in load_seed_tasks()}
    similar = [r for r in rejects if r["reason"].startswith("rouge_l")]
    empty = [r for r in rejects if r["reason"] == "empty_output"]
    assert similar and empty and len(similar) + len(empty) == len(rejects)
    for reject in similar:
        assert reject["instruction"] == near_duplicate(seeds[reject["most_similar_id"]]) and reject["rouge_l"] >= 0.7
    assert all(rouge_l(r["instruction"], s) < 0.7 for r in rows for s in seeds.values())
