"""personas: text-to-persona and persona-to-persona chains against the OpenAI test
double, dedup by MinHash and by embedding cosine on planted near-copies, the shipped
personas as the fallback, and textbook_prompts drawing from the pool."""

from __future__ import annotations

import json
import re

import dagster as dg
import numpy as np
import polars as pl

from quality_checks.checks import all_asset_checks
from resources.compute import Compute
from synth_assets.synthesis.personas import (
    PersonaRow,
    PersonasConfig,
    dedupe,
    embedding_near_duplicates,
    personas,
)
from synth_assets.synthesis.prompt_plans import load_catalog
from synth_assets.synthesis.textbook_prompts import TextbookPromptsConfig, textbook_prompts
from tests.openai_double import OpenAIDouble, hashed_bag_of_words
from tests.test_exercises import llm_for

ORIGINAL = "a beekeeper who logs hive weights in spreadsheets and wants to automate the charts"
WORD_COPY = "A beekeeper, who logs hive weights in spreadsheets and wants to automate the charts!"  # same 1-grams
PARAPHRASE = "an apiarist recording colony masses in tables who hopes to script the plots"  # other words, same meaning


def planted_embedding(text: str) -> list[float]:
    """The double's bag of words, except that the paraphrase lands next to the original."""
    if text == PARAPHRASE:
        return [x + 0.01 for x in hashed_bag_of_words(ORIGINAL)]
    return hashed_bag_of_words(text)


def test_dedup_removes_planted_near_copies_by_both_signals():
    rows = [PersonaRow(t, "text:d", 0) for t in
            [ORIGINAL, "a marathon coach planning weekly mileage", WORD_COPY, PARAPHRASE, ORIGINAL]]
    vectors_of = lambda texts: np.array([planted_embedding(t) for t in texts])  # noqa: E731
    kept, rejects = dedupe(rows, vectors_of, jaccard=0.9, cosine=0.9)
    assert [k.persona for k in kept] == [ORIGINAL, "a marathon coach planning weekly mileage"]
    by_reason = {r["reason"]: r for r in rejects}
    assert set(by_reason) == {"exact_duplicate", "near_duplicate_minhash", "near_duplicate_embedding"}
    assert by_reason["near_duplicate_minhash"]["persona"] == WORD_COPY
    assert by_reason["near_duplicate_minhash"]["near_duplicate_of"] == ORIGINAL
    assert by_reason["near_duplicate_minhash"]["similarity"] == 1.0
    assert by_reason["near_duplicate_embedding"]["persona"] == PARAPHRASE
    assert by_reason["near_duplicate_embedding"]["near_duplicate_of"] == ORIGINAL
    assert by_reason["near_duplicate_embedding"]["similarity"] >= 0.9
    # Without the embedding signal the paraphrase would have stayed: MinHash cannot see it.
    kept_minhash_only, _ = dedupe(rows, vectors_of, jaccard=0.9, cosine=1.01)
    assert PARAPHRASE in [k.persona for k in kept_minhash_only]


def test_embedding_dedup_keeps_failed_embeddings_and_names_the_most_similar_kept():
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [np.nan, np.nan], [0.1, 1.0], [0.99, 0.05]])
    found = embedding_near_duplicates(vectors, 0.9)
    assert [(d.index, d.near_duplicate_of) for d in found] == [(3, 1), (4, 0)]


def persona_responder(body: dict) -> str:
    prompt = body["messages"][-1]["content"]
    if "Who is likely to read, write or like" in prompt:
        doc = re.search(r"# doc (\w+)", prompt).group(1)
        persona = {"d0": ORIGINAL, "d1": ORIGINAL, "d2": PARAPHRASE, "d3": "x"}.get(doc, EXPANSIONS[0].format(doc=doc))
        return json.dumps({"persona": persona})
    parent = re.search(r"Persona: (.+)", prompt).group(1)
    match = re.search(r"\b(d\d)\b", parent)
    chain = expected_chain(match.group(1) if match else "d0")
    return json.dumps({"persona": chain[chain.index(parent) + 1]})


# Related personas with words of their own (a chain of near-identical texts would be MinHash duplicates).
EXPANSIONS = ["a developer who maintains the {doc} tools", "a statistician working beside the {doc} maintainers",
              "an accountant auditing budgets of {doc} statisticians", "a lawyer advising {doc} accountants"]


def expected_chain(doc: str) -> list[str]:
    root = ORIGINAL if doc == "d0" else EXPANSIONS[0].format(doc=doc)
    return [root] + [e.format(doc=doc) for e in EXPANSIONS[1:]]


def corpus(n_docs: int) -> pl.DataFrame:
    return pl.DataFrame({"doc_id": [f"d{i}" for i in range(n_docs)],
                         "content": [f"# doc d{i}\ndef f{i}(x):\n    return x + {i}\n" for i in range(n_docs)]})


def run(warehouse, server, hops=2, n_docs=6, extra=()):
    checks = [c for c in all_asset_checks if any(k.asset_key == dg.AssetKey("personas") for k in c.check_keys)]
    return dg.materialize(
        [personas, *checks, *extra], resources={"compute": Compute(), "warehouse": warehouse, "llm": llm_for(server)},
        run_config=dg.RunConfig({"personas": PersonasConfig(n_docs=n_docs, hops=hops)}),
    )


def test_personas_grow_in_chains_from_corpus_text_and_are_deduplicated(warehouse):
    warehouse.write_table("raw_stack_plus", corpus(6))
    with OpenAIDouble(chat=persona_responder, embed=planted_embedding) as server:
        result = run(warehouse, server)
    assert result.success
    rows = warehouse.query("SELECT * FROM personas").to_dicts()
    rejects = warehouse.query("SELECT * FROM persona_rejects").to_dicts()
    catalog = load_catalog().personas
    assert {r["persona"] for r in rows if r["source"] == "catalog"} <= set(catalog)
    assert sum(r["source"] == "catalog" for r in rows) >= len(catalog) - 10  # the fallback seed is there
    text_rows = {r["doc_id"]: r for r in rows if r["source"].startswith("text:")}
    assert set(text_rows) == {"d0", "d4", "d5"}  # d1 repeats d0, d2 is d0's paraphrase, d3 too short
    reasons = {(r["doc_id"], r["hop"]): r["reason"] for r in rejects}
    assert reasons[("d3", 0)] == "too_short"
    assert reasons[("d1", 0)] == "exact_duplicate"
    assert reasons[("d2", 0)] == "near_duplicate_embedding"
    for doc_id, root in text_rows.items():  # two hops of persona-to-persona, the chain on every row
        chain = [r for r in rows if r["doc_id"] == doc_id]
        assert sorted(r["hop"] for r in chain) == [0, 1, 2]
        for row in chain:
            assert row["chain"][0] == root["persona"] and row["chain"][-1] == row["persona"]
            assert len(row["chain"]) == row["hop"] + 1 and row["model"] == "gpt-4o-mini"
            assert row["chain"] == expected_chain(doc_id)[: row["hop"] + 1]
    evaluations = result.get_asset_check_evaluations()
    assert evaluations and all(e.passed for e in evaluations)
    metadata = result.asset_materializations_for_node("personas")[0].metadata
    assert metadata["from_expansion"].value == 6 and metadata["max_hop"].value == 2


def test_textbook_prompts_draw_from_the_persona_pool_and_fall_back_to_the_catalog(warehouse):
    with OpenAIDouble(chat=persona_responder, embed=planted_embedding) as server:
        # No corpus: the pool is the shipped personas alone.
        result = run(warehouse, server, hops=1, extra=[textbook_prompts])
        assert result.success and server.chat_requests == []
        sources = set(warehouse.query("SELECT persona_source FROM textbook_prompts")["persona_source"])
        assert sources == {"catalog"}
        warehouse.write_table("raw_stack_plus", corpus(6))
        result = dg.materialize(
            [personas, textbook_prompts], resources={"compute": Compute(), "warehouse": warehouse, "llm": llm_for(server)},
            run_config=dg.RunConfig({"personas": PersonasConfig(n_docs=6, hops=1),
                                     "textbook_prompts": TextbookPromptsConfig(n_prompts=200)}),
        )
    assert result.success
    plans = warehouse.query("SELECT persona, persona_source FROM textbook_prompts").to_dicts()
    pool = {r["persona"]: r["source"] for r in warehouse.query("SELECT persona, source FROM personas").to_dicts()}
    assert all(pool[p["persona"]] == p["persona_source"] for p in plans)
    assert any(p["persona_source"].startswith(("text:", "persona:")) for p in plans)


def test_a_persona_that_copies_the_prompt_example_is_rejected():
    from resources.llm import StructuredResult
    from synth_assets.synthesis.personas import TEXT_EXAMPLE, PersonaAnswer, clean_persona

    def answer(text):
        return clean_persona(StructuredResult(text=text, cache_key="k", parsed=PersonaAnswer(persona=text)))

    assert answer(TEXT_EXAMPLE.capitalize() + " 1234567890") == (None, "copies_prompt_example")
    assert answer("x") == (None, "too_short")
    assert answer(f"  {ORIGINAL}\n") == (ORIGINAL, None)
    failed = clean_persona(StructuredResult(text=None, cache_key="k", status="error", error="HTTP 500"))
    assert failed == (None, "llm_error")
