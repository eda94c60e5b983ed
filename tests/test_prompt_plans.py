"""Prompt plans: seeded slot draws, persona dedup, text-to-persona, diversity metrics."""

from __future__ import annotations

import polars as pl

from resources.compute import Compute
from synth_assets.synthesis.diversity import distinct_n, find_near_duplicates, near_duplicate_rate
from synth_assets.synthesis.prompt_plans import (
    Persona,
    dedupe_personas,
    load_catalog,
    persona_from_source,
    persona_pool,
    plan_exercises,
    plan_textbook_prompts,
    random_snippet,
    sample_corpus_files,
)


def catalog_personas():
    catalog = load_catalog()
    return catalog, [Persona(p, "catalog") for p in catalog.personas]


def test_catalog_ships_hundreds_of_topics_with_subtopics():
    catalog = load_catalog()
    assert len(catalog.topics) >= 200
    assert all(len(subtopics) >= 3 for _, subtopics in catalog.topics)
    assert len({topic for topic, _ in catalog.topics}) == len(catalog.topics)
    assert len(catalog.verbs) * len(catalog.nouns) >= 1000


def test_same_seed_same_plans_different_seed_different_plans():
    catalog, personas = catalog_personas()
    first = plan_textbook_prompts(catalog, 20, seed=7, personas=personas)
    again = plan_textbook_prompts(catalog, 20, seed=7, personas=personas)
    other = plan_textbook_prompts(catalog, 20, seed=8, personas=personas)
    assert [p.row() for p in first] == [p.row() for p in again]
    assert {p.prompt_id for p in first}.isdisjoint({p.prompt_id for p in other})
    assert len(first) == 20 and len({p.prompt_id for p in first}) == 20
    # Topics are drawn without replacement first: 20 prompts cover 20 topics.
    assert len({p.topic for p in first}) == 20


def test_every_slot_is_filled_from_the_catalog():
    catalog, personas = catalog_personas()
    topics = dict(catalog.topics)
    for plan in plan_textbook_prompts(catalog, 30, seed=1, personas=personas):
        assert plan.subtopic in topics[plan.topic]
        assert plan.audience in catalog.audiences
        assert plan.style in dict(catalog.styles)
        # TinyStories: two distinct features, and one verb, one noun and one adjective.
        assert len(plan.features) == 2 and len(set(plan.features)) == 2 and set(plan.features) <= set(catalog.features)
        assert plan.feature == "; ".join(plan.features)
        verb, noun, adjective = plan.required_words
        assert verb in catalog.story_verbs and noun in catalog.story_nouns and adjective in catalog.story_adjectives
        assert plan.persona in catalog.personas and plan.persona_source == "catalog"
        assert plan.seed == 1


def test_story_vocabulary_is_about_1500_real_words_split_by_part_of_speech():
    catalog = load_catalog()
    lists = {"verbs": catalog.story_verbs, "nouns": catalog.story_nouns, "adjectives": catalog.story_adjectives}
    assert all(len(words) >= 500 for words in lists.values())
    assert sum(len(words) for words in lists.values()) >= 1500
    everything = [word for words in lists.values() for word in words]
    assert len(everything) == len(set(everything))  # a word belongs to one list only
    assert all(word.isalpha() and word.islower() for word in everything)
    assert {"sort", "merge", "parse"} <= set(catalog.story_verbs)
    assert {"queue", "ladder", "river"} <= set(catalog.story_nouns)
    assert {"recursive", "brave", "sparse"} <= set(catalog.story_adjectives)
    assert len(catalog.features) >= 15


def test_draws_depend_only_on_seed_and_prompt_index():
    """Plan i is the same in a run of 5 and in a run of 40 (a larger run extends a
    smaller one), and 40 plans use many different words and feature pairs."""
    catalog, personas = catalog_personas()
    small = plan_textbook_prompts(catalog, 5, seed=2, personas=personas)
    large = plan_textbook_prompts(catalog, 40, seed=2, personas=personas)
    assert [p.row() for p in small] == [p.row() for p in large[:5]]
    assert [p.prompt_index for p in large] == list(range(40))
    assert len({p.required_words[1] for p in large}) >= 30
    assert len({tuple(sorted(p.features)) for p in large}) >= 30
    # the same index under another seed draws other slots
    other = plan_textbook_prompts(catalog, 5, seed=3, personas=personas)
    assert all(a.required_words != b.required_words for a, b in zip(small, other))


def test_exercise_plans_have_distinct_planned_names_and_seeded_snippets():
    catalog = load_catalog()
    snippets = [("doc-a", "x = 1\ny = 2"), ("doc-b", "def f():\n    return 3")]
    plans = plan_exercises(catalog, 40, seed=3, snippets=snippets, oss_instruct_fraction=0.5)
    assert plans == plan_exercises(catalog, 40, seed=3, snippets=snippets, oss_instruct_fraction=0.5)
    names = [p.function_name for p in plans]
    assert len(set(names)) == 40
    assert all(name.split("_", 1)[0] in catalog.verbs for name in names)
    oss = [p for p in plans if p.mode == "oss_instruct"]
    assert 5 < len(oss) < 35
    assert all((p.inspiration_doc_id, p.inspiration) in snippets for p in oss)
    assert all(p.inspiration == "" for p in plans if p.mode == "topic")
    assert plan_exercises(catalog, 10, seed=3) != plan_exercises(catalog, 10, seed=4)
    # Without snippets every plan is topic mode.
    assert {p.mode for p in plan_exercises(catalog, 10, seed=3, oss_instruct_fraction=1.0)} == {"topic"}


def test_exercise_plans_draw_personas_and_format_examples_without_moving_other_draws():
    catalog = load_catalog()
    pool = [Persona("a beekeeper who logs hive weights in spreadsheets", "text:d1"),
            Persona("a tram driver who studies timetables", "persona:abc")]
    plans = plan_exercises(catalog, 30, seed=5, personas=pool)
    fallback = plan_exercises(catalog, 30, seed=5)
    assert {(p.persona, p.persona_source) for p in plans} == {(x.text, x.source) for x in pool}
    assert {p.persona for p in fallback} <= set(catalog.personas) and {p.persona_source for p in fallback} == {"catalog"}
    # the persona and the example come from their own generator: names, topics and difficulty are unchanged
    assert [(p.function_name, p.topic, p.difficulty) for p in plans] == [(p.function_name, p.topic, p.difficulty) for p in fallback]
    examples = {e["name"] for e in catalog.exercise_examples}
    assert {p.format_example for p in plans} <= examples and len({p.format_example for p in plans}) >= 6
    assert plans == plan_exercises(catalog, 30, seed=5, personas=pool)  # seeded
    assert {p.exercise_id for p in plans}.isdisjoint({p.exercise_id for p in fallback})  # the persona is a slot


def test_persona_dedup_removes_near_identical_and_keeps_distinct():
    personas = [
        "a data analyst who writes SQL all day and wants to write cleaner Python",
        "a farmer monitoring irrigation data",
        "a data analyst who writes SQL all day and wants to write much cleaner Python",  # 14/15 = 0.93
        "A farmer, monitoring irrigation data!",  # same tokens
        "a sports coach tracking player statistics",
        "a sports coach tracking the player statistics",  # 6/7 = 0.86 < 0.9: kept
    ]
    kept, removed = dedupe_personas(personas)
    assert kept == [personas[0], personas[1], personas[4], personas[5]]
    assert [(r.persona, r.near_duplicate_of) for r in removed] == [
        (personas[2], personas[0]),
        (personas[3], personas[1]),
    ]
    assert removed[0].jaccard == round(14 / 15, 4) and removed[1].jaccard == 1.0


def test_shipped_persona_list_is_deduplicated_in_the_pool():
    catalog = load_catalog()
    pool, removed = persona_pool(catalog)
    assert len(pool) == len(catalog.personas) - len(removed) and removed
    assert len({p.text.lower() for p in pool}) == len(pool)


def test_text_to_persona_from_docstring_and_imports():
    source = '"""Parse GPX tracks into route segments.\n\nLonger text."""\nimport numpy as np\nfrom gpxpy.gpx import GPX\n'
    assert persona_from_source(source) == (
        "a developer who maintains code that uses numpy and gpxpy for: parse GPX tracks into route segments"
    )
    assert persona_from_source("import requests\nx = 1\n") == "a developer who maintains Python code built on requests"
    assert persona_from_source("x = 1\n") is None
    assert persona_from_source("def broken(:\n") is None


def test_corpus_personas_come_from_raw_stack_plus_when_present(warehouse):
    catalog = load_catalog()
    assert sample_corpus_files(warehouse, ("raw_stack_plus",), 5, seed=0) == []
    docs = pl.DataFrame(
        {
            "doc_id": ["d1", "d2", "d3"],
            "content": ['"""Render invoices as PDF."""\nimport reportlab\n', "x = 1\n", "import pandas\n"],
        }
    )
    warehouse.write_table("raw_stack_plus", docs)
    files = sample_corpus_files(warehouse, ("filtered_textbook", "raw_stack_plus"), 5, seed=0)
    assert sorted(files) == sorted(zip(docs["doc_id"], docs["content"]))
    pool, _ = persona_pool(catalog, files)
    derived = {p.source: p.text for p in pool if p.source != "catalog"}
    assert derived == {
        "corpus:d1": "a developer who maintains code that uses reportlab for: render invoices as PDF",
        "corpus:d3": "a developer who maintains Python code built on pandas",
    }
    plans = plan_textbook_prompts(catalog, 200, seed=0, personas=pool)
    assert {p.persona_source for p in plans} >= {"catalog", "corpus:d1"}


def test_filtered_table_without_content_is_joined_to_raw(warehouse):
    warehouse.write_table("raw_stack_plus", pl.DataFrame({"doc_id": ["a", "b"], "content": ["A = 1", "B = 2"]}))
    warehouse.write_table("filtered_textbook", pl.DataFrame({"doc_id": ["b"], "quality_score": [0.9]}))
    assert sample_corpus_files(warehouse, ("filtered_textbook", "raw_stack_plus"), 5, seed=1) == [("b", "B = 2")]


def test_random_snippet_is_a_contiguous_run_of_at_most_15_lines():
    import random

    content = "\n".join(f"line_{i} = {i}" for i in range(40))
    rng = random.Random(0)
    for _ in range(50):
        snippet = random_snippet(content, rng)
        lines = snippet.splitlines()
        assert 1 <= len(lines) <= 15
        assert snippet in content


def test_distinct_n_and_near_duplicates():
    assert distinct_n(["a b a b"], 1) == 0.5
    assert distinct_n(["a b c", "a b d"], 2) == 0.75
    assert distinct_n([], 2) == 0.0
    base = "the quick brown fox jumps over the lazy dog near the river bank today " * 3
    texts = [base, base + " again", "completely different words about sorting lists in python quickly", ""]
    duplicates = find_near_duplicates(texts)
    assert [(d.index, d.near_duplicate_of) for d in duplicates] == [(1, 0)]
    assert 0.8 <= duplicates[0].jaccard < 1.0
    assert near_duplicate_rate(texts) == round(1 / 3, 4)


def test_a_50000_exercise_plan_gets_50000_distinct_names_and_longer_names_only_when_needed():
    catalog = load_catalog()
    plans = plan_exercises(catalog, 50_000, seed=0)
    names = [p.function_name for p in plans]
    assert len(names) == 50_000 and len(set(names)) == 50_000
    first_level = len(catalog.verbs) * len(catalog.nouns)
    assert all(name.count("_") == 1 for name in names[:first_level])  # verb_noun while they last
    assert all(name.count("_") == 2 for name in names[first_level:])  # then verb_qualifier_noun
    assert all(name.split("_")[0] in catalog.verbs and name.split("_")[-1] in catalog.nouns for name in names)
    assert len({p.exercise_id for p in plans}) == 50_000
    assert [n.function_name for n in plan_exercises(catalog, 10, seed=0)] == names[:10]


def test_a_plan_larger_than_the_name_space_warns_with_the_size():
    import dataclasses
    import warnings

    from synth_assets.synthesis.prompt_plans import function_name_space, name_space_warning

    small = dataclasses.replace(load_catalog(), verbs=("find", "sort"), nouns=("dates", "pairs"), qualifiers=("odd",))
    assert function_name_space(small) == 4 + 4 + 8
    assert name_space_warning(small, 16) is None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plans = plan_exercises(small, 20, seed=0)
    assert len(plans) == 16 and len({p.function_name for p in plans}) == 16
    assert [str(w.message) for w in caught] == [name_space_warning(small, 20)]
    assert "holds 16 names (4 + 4 + 8 by level)" in str(caught[0].message)
    assert "sort_odd_pairs_by_dates" in {p.function_name for p in plans}


# --------------------------------------------------------------------------- plans depend on declared inputs

import dagster as dg  # noqa: E402

from synth_assets.synthesis.code_exercises import CodeExercisesConfig, code_exercises  # noqa: E402
from synth_assets.synthesis.personas import PersonasConfig, personas  # noqa: E402
from synth_assets.synthesis.textbook_prompts import textbook_prompts  # noqa: E402
from tests.openai_double import OpenAIDouble, default_chat  # noqa: E402
from tests.test_exercises import exercise_responder, llm_for  # noqa: E402


def plans_responder(body: dict) -> str:
    if "Python function named" in body["messages"][-1]["content"]:
        return exercise_responder(body)
    return default_chat(body)  # personas: a minimal valid answer


def write_corpus(folder) -> str:
    folder.mkdir()
    for i in range(12):
        (folder / f"m{i}.py").write_text(f'"""Module {i}."""\n\n\ndef scale_{i}(values):\n    return [v * {i} for v in values]\n')
    return str(folder)


def test_rematerializing_with_nothing_changed_sends_no_request(warehouse, tmp_path):
    """Plans depend only on config and declared inputs: raw_stack_plus is a dependency,
    so whatever order the first run took, the second asks the cache for every answer."""
    from synth_assets.ingest.raw_stack_plus import RawStackPlusConfig, SourceSpec, raw_stack_plus

    corpus = write_corpus(tmp_path / "corpus")
    run_config = dg.RunConfig({
        "raw_stack_plus": RawStackPlusConfig(sources=[SourceSpec(kind="python_tree", path=corpus)]),
        "code_exercises": CodeExercisesConfig(n_exercises=6, sandbox_timeout_s=1.0, oss_instruct_fraction=0.5),
        "personas": PersonasConfig(n_docs=2, hops=1),
    })
    assets = [code_exercises, textbook_prompts, personas, raw_stack_plus]
    with OpenAIDouble(chat=plans_responder) as server:
        # Listed downstream first: without the dependency this run planned with no corpus.
        first = dg.materialize(assets, resources={"compute": Compute(), "warehouse": warehouse, "llm": llm_for(server)},
                               run_config=run_config)
        sent = len(server.requests)  # chat and embeddings
        plans_first = warehouse.query("SELECT exercise_id, mode FROM code_exercises UNION ALL "
                                      "SELECT exercise_id, mode FROM code_exercise_rejects ORDER BY 1")
        prompts_first = warehouse.query("SELECT * FROM textbook_prompts ORDER BY prompt_id")
        second = dg.materialize(assets, resources={"compute": Compute(), "warehouse": warehouse, "llm": llm_for(server)},
                                run_config=run_config)
        assert len(server.requests) == sent  # nothing new was asked
    assert first.success and second.success and sent >= 6
    assert "oss_instruct" in plans_first["mode"].to_list()  # the corpus was there the first time
    plans_second = warehouse.query("SELECT exercise_id, mode FROM code_exercises UNION ALL "
                                   "SELECT exercise_id, mode FROM code_exercise_rejects ORDER BY 1")
    assert plans_second.equals(plans_first)
    assert warehouse.query("SELECT * FROM textbook_prompts ORDER BY prompt_id").equals(prompts_first)
    # exercise plans drew their personas from the personas asset, a declared input
    assert dg.AssetKey("personas") in code_exercises.asset_deps[dg.AssetKey("code_exercises")]
    pool = dict(warehouse.query("SELECT persona, source FROM personas").iter_rows())
    drawn = warehouse.query("SELECT persona, persona_source FROM code_exercises UNION ALL "
                            "SELECT persona, persona_source FROM code_exercise_rejects").rows()
    assert drawn and all(pool[persona] == source for persona, source in drawn)
    for asset in ("code_exercises", "personas"):
        metadata = second.asset_materializations_for_node(asset)[0].metadata
        assert metadata["llm/cache_hits"].value == metadata["llm/calls"].value > 0
        assert metadata["llm/cost_usd"].value == 0
