"""self_qa (grounded in filtered_textbook documents) and evol_instruct (rounds, chains,
elimination) against the OpenAI double."""

from __future__ import annotations

import dagster as dg
import polars as pl

from resources.compute import Compute
from synth_assets.filtering.filtered_textbook import filtered_textbook
from synth_assets.instructions.evol_instruct import EvolInstructConfig, evol_instruct, only_stop_words, precheck, response_problem, strip_label
from synth_assets.instructions.self_qa import SelfQAConfig, chunk, self_qa
from synth_assets.instructions.seed_pool import load_seed_tasks
from tests.instruction_doubles import CODE_OUTPUT, evol_responder, self_qa_responder
from tests.openai_double import OpenAIDouble
from tests.test_instructions_self_instruct import llm_for

DOCS = {
    f"doc{i:02d}": f'"""{name} utilities.\n\nHelpers for {name}."""\nimport os\n\n' + "\n".join(
        f"def {name}_{j}(x):\n    return x + {j}\n" for j in range(40)
    )
    for i, name in enumerate(["alpha", "beta", "gamma", "delta", "epsilon"])
}


def test_self_qa_rows_carry_their_source_document_and_filters_say_why(warehouse):
    warehouse.write_table("filtered_textbook", pl.DataFrame({"doc_id": list(DOCS), "content": list(DOCS.values())}))
    config = SelfQAConfig(n_documents=4, questions_per_document=2, chunk_chars=400, sandbox_timeout_s=2.0)
    with OpenAIDouble(chat=self_qa_responder) as server:
        result = dg.materialize([self_qa], resources={"compute": Compute(), "warehouse": warehouse, "llm": llm_for(server)},
                                run_config=dg.RunConfig({"self_qa": config}))
        prompts = [b["messages"][-1]["content"] for b in server.chat_requests]
        again = dg.materialize([self_qa], resources={"compute": Compute(), "warehouse": warehouse, "llm": llm_for(server)},
                               run_config=dg.RunConfig({"self_qa": config}))
        assert len(server.chat_requests) == len(prompts)  # nothing changed: no request
    assert again.asset_materializations_for_node("self_qa")[0].metadata["llm/cost_usd"].value == 0
    assert result.success
    rows = warehouse.query("SELECT * FROM self_qa").to_dicts()
    rejects = warehouse.query("SELECT * FROM self_qa_rejects").to_dicts()
    # per document: 5 questions -> 1 near-duplicate, 1 pointing at "this code", 1 over the quota of 2;
    # of the 2 answered, the answer that points back at "the text" is dropped
    assert len({r["source_doc_id"] for r in rows}) == 4 and len(rows) == 4
    for row in rows:
        module = DOCS[row["source_doc_id"]].split(" ", 1)[0].strip('"')
        assert module in row["instruction"] and row["input"] == "" and row["output"].endswith(CODE_OUTPUT)
        assert row["sandbox_passed"] is True and row["question_cache_key"] and row["chunk_chars"] <= 400
        # the answer call saw the same document chunk the question came from
        assert any(chunk(DOCS[row["source_doc_id"]], 400) in p and row["instruction"] in p for p in prompts)
    reasons = sorted(r["reason"].split(":")[0] for r in rejects)
    assert reasons == ["over_quota"] * 4 + ["refers_to_document"] * 8 + ["rouge_l"] * 4
    assert all(r["source_id"] in DOCS for r in rejects)
    assert sum(r["reason"] == "refers_to_document: this code" and r["stage"] == "question_filter" for r in rejects) == 4
    answer_rejects = [r for r in rejects if r["stage"] == "answer_filter"]
    assert len(answer_rejects) == 4 and all(r["reason"] == "refers_to_document: the text" for r in answer_rejects)
    assert all(r["instruction"].startswith("How would you test") for r in answer_rejects)
    assert filtered_textbook.key in self_qa.asset_deps[self_qa.key]


def test_elimination_rules():
    assert precheck("Sort a list", "#Rewritten Prompt#: Sort a list fast").startswith("copied_prompt_words")
    assert precheck("Sort a list of numbers.", "sort a list of numbers") == "no_information_gain: unchanged"
    assert precheck("Sort a list", "Sort a list of tuples by their second item") is None
    assert precheck("Sort a list", "{") == "too_short: 1 words (< 4)"
    # a leading answer label is format, not content; the label elsewhere still eliminates
    assert strip_label("#Rewritten Prompt#: Sort tuples by their second item") == "Sort tuples by their second item"
    assert precheck("Sort a list", strip_label("#Rewritten Prompt#: Sort a list, see #Rewritten Prompt#")).startswith("copied")
    assert response_problem("Sorry, I can't.").startswith("response_is_refusal")
    assert response_problem("sorry " + "word " * 100) is None
    assert only_stop_words("It is, and it was...") and response_problem("It is, and it was...") == "response_only_punctuation_and_stop_words"
    assert response_problem(CODE_OUTPUT) is None


def test_evol_instruct_chains_rounds_and_eliminations(warehouse):
    config = EvolInstructConfig(n_seeds=6, rounds=3, sandbox_timeout_s=2.0)
    with OpenAIDouble(chat=evol_responder) as server:
        result = dg.materialize([evol_instruct], resources={"compute": Compute(), "warehouse": warehouse, "llm": llm_for(server)},
                                run_config=dg.RunConfig({"evol_instruct": config}))
        sent = len(server.chat_requests)
        dg.materialize([evol_instruct], resources={"compute": Compute(), "warehouse": warehouse, "llm": llm_for(server)},
                       run_config=dg.RunConfig({"evol_instruct": config}))
        assert len(server.chat_requests) == sent  # a re-run is answered from the cache
    assert result.success
    rows = warehouse.query("SELECT * FROM evol_instruct").to_dicts()
    rejects = warehouse.query("SELECT * FROM evol_instruct_rejects").to_dicts()
    assert rows and rejects
    seeds = {t.task_id: t for t in load_seed_tasks()}
    by_id = {r["instruction_id"]: r for r in rows}
    for row in rows:
        assert "and also handle" in row["instruction"] and row["output"].endswith(CODE_OUTPUT)
        assert row["chain"][-1] == row["instruction"] and row["chain"][-2] == row["parent_instruction"]
        assert len(row["chain"]) == row["depth"] + 1 == len(row["chain_operations"]) + 1
        if row["depth"] == 1:
            assert row["parent_id"] == row["seed_task_id"] and seeds[row["seed_task_id"]].instruction in row["chain"][0]
        else:
            parent = by_id[row["parent_id"]]
            assert parent["round"] < row["round"] and parent["chain"] == row["chain"][:-1]
        assert row["sandbox_passed"] is True
    reasons = {r["reason"].split(":")[0] for r in rejects}
    assert reasons <= {"copied_prompt_words", "no_information_gain", "response_is_refusal", "too_short"}
    for reject in rejects:
        if "REFUSE" in (reject["instruction"] or ""):
            assert reject["reason"].startswith("response_is_refusal")
        if "SAMEWISE" in (reject["instruction"] or ""):
            assert reject["reason"] == "no_information_gain: judged Equal"
    assert not any("REFUSE" in r["instruction"] or "SAMEWISE" in r["instruction"] for r in rows)
    # a failed evolution leaves its chain where it was: its parent is evolved again later
    failed_parents = {(r["source_id"], r["round"]) for r in rejects}
    assert any((pid, rnd + 1) in {(x["source_id"], x["round"]) for x in rejects} | {(x["parent_id"], x["round"]) for x in rows}
               for pid, rnd in failed_parents if rnd < 3)
