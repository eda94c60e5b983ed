"""textbook_prompts + synthetic_textbook materialized against the OpenAI test double:
slots stored and sent, code blocks checked, the reconstructed prompt's constraints
measured, the iterative mode's intermediates stored, near-duplicates and failed calls
recorded."""

from __future__ import annotations

import hashlib
import random
import re
import zlib

import dagster as dg

from resources.compute import Compute
from resources.llm import LLMResource
from synth_assets.synthesis.synthetic_textbook import SyntheticTextbookConfig, blocks_parse, code_blocks, required_words_used, synthetic_textbook
from synth_assets.synthesis.textbook_extract import contains_sentence, extract_shape, first_sentence
from synth_assets.synthesis.textbook_prompts import TextbookPromptsConfig, textbook_prompts
from tests.openai_double import OpenAIDouble, TEST_KEY_REF

CANNED = (
    "Sorting puts items in order. Imagine a row of books on a shelf that you arrange by height, "
    "swapping neighbours until no pair is out of order. This is bubble sort, and it is slow but simple.\n"
    "```python\ndef bubble(items):\n    for i in range(len(items)):\n        for j in range(len(items) - 1 - i):\n"
    "            if items[j] > items[j + 1]:\n                items[j], items[j + 1] = items[j + 1], items[j]\n"
    "    return items\n```\n"
)


def kind_of(topic: str) -> str:
    return ["canned", "broken_code", "no_code", "good", "good"][zlib.crc32(topic.encode()) % 5]


def section_responder(body: dict) -> str:
    prompt = body["messages"][-1]["content"]
    topic = re.search(r"textbook section about (.+?): ", prompt).group(1)
    words = re.search(r'Use the verb "(\w+)", the noun "(\w+)" and the adjective "(\w+)"', prompt).groups()
    kind = kind_of(topic)
    if kind == "canned":
        return CANNED
    rng = random.Random(hashlib.sha256(prompt.encode()).hexdigest())
    filler = " ".join("".join(rng.choice("abcdefghij") for _ in range(6)) for _ in range(60))
    text = f"Overview of {topic}: we {words[0]} a {words[2]} {words[1]}. {filler}\n"
    if kind == "broken_code":
        return text + "```python\ndef broken(:\n    pass\n```\n"
    if kind == "no_code":
        return text
    return text + "```python\ndef f(x):\n    return x + 1\n```\nAnd:\n```py\nprint(f(1))\n```\n"


def run(warehouse, server, n_prompts=15, seed=0, **textbook):
    llm = LLMResource(base_url=server.base_url, api_key=TEST_KEY_REF, model="gpt-4o-mini",
                      embedding_model="text-embedding-3-small", max_retries=0)
    return dg.materialize(
        [textbook_prompts, synthetic_textbook],
        resources={"compute": Compute(), "warehouse": warehouse, "llm": llm},
        run_config=dg.RunConfig(
            {"textbook_prompts": TextbookPromptsConfig(n_prompts=n_prompts, seed=seed),
             "synthetic_textbook": SyntheticTextbookConfig(max_tokens=120, **textbook)}
        ),
    )


def test_code_block_helpers():
    text = "intro\n```python\nx = 1\n```\nmid\n```\ny = (\n```\n"
    assert code_blocks(text) == ["x = 1\n", "y = (\n"]
    assert not blocks_parse(code_blocks(text)) and blocks_parse(["x = 1\n"]) and not blocks_parse([])
    assert required_words_used("The Apple fell in the river.", ["apple", "river"]) == 1.0
    assert required_words_used("pineapples", ["apple"]) == 0.0


def test_synthetic_textbook_materializes_sections_and_records_rejects(warehouse):
    with OpenAIDouble(chat=section_responder) as server:
        server.fail_next(status=400, count=1)
        result = run(warehouse, server, max_samples=1)  # re-sampling has its own test
        prompts = [b["messages"][-1]["content"] for b in server.chat_requests]
    assert result.success

    plans = warehouse.query("SELECT * FROM textbook_prompts").to_dicts()
    assert len(plans) == 15 and len({p["prompt_id"] for p in plans}) == 15
    for plan in plans:
        assert all(plan[slot] for slot in ("topic", "subtopic", "audience", "persona", "persona_source", "style", "feature"))
        assert len(plan["required_words"]) == 3 and plan["seed"] == 0 and len(plan["features"]) == 2
        sent = [p for p in prompts if f"about {plan['topic']}: {plan['subtopic']}." in p]
        assert sent and plan["audience"] in sent[0] and plan["persona"] in sent[0]
        assert all(feature in sent[0] for feature in plan["features"])
        assert all(f'"{word}"' in sent[0] for word in plan["required_words"])
        assert "at most 10 lines" in sent[0] and "Write nothing after the code." in sent[0]
        assert "extract from the middle of a chapter: no title, one concept, at most 2 paragraphs" in sent[0]

    sections = warehouse.query("SELECT * FROM synthetic_textbook").to_dicts()
    rejects = warehouse.query("SELECT * FROM synthetic_textbook_rejects").to_dicts()
    assert len(sections) + len(rejects) == 15
    failed = [r for r in rejects if r["reason"] == "llm_error"]
    assert len(failed) == 1 and failed[0]["error"] and "sk-test-secret" not in failed[0]["error"]
    answered = [p for p in plans if p["prompt_id"] != failed[0]["prompt_id"]]
    canned = [p for p in answered if kind_of(p["topic"]) == "canned"]
    duplicates = [r for r in rejects if r["reason"] == "near_duplicate"]
    assert len(duplicates) == max(len(canned) - 1, 0)
    kept_ids = {s["section_id"] for s in sections}
    for duplicate in duplicates:
        assert duplicate["raw_text"] == CANNED.strip()
        assert re.search(r"near_duplicate_of=(\w+)", duplicate["error"]).group(1) in kept_ids
    by_prompt = {s["prompt_id"]: s for s in sections}
    for plan in answered:
        kind = kind_of(plan["topic"])
        if kind == "canned":
            continue
        section = by_prompt[plan["prompt_id"]]
        assert section["model"] == "gpt-4o-mini" and section["prompt_version"] and section["cache_key"]
        assert section["required_words_used"] == 1.0 and section["topic"] == plan["topic"]
        assert section["completion_tokens"] > 0
        assert (section["n_code_blocks"], section["code_blocks_parse"]) == {
            "good": (2, True), "broken_code": (1, False), "no_code": (0, False)
        }[kind]
        # the shape is measured on every row: the filler is one paragraph, "And:" a second
        assert section["generation_mode"] == "direct" and section["summary"] is None
        assert section["constraints_met"] == (not section["constraint_violations"])
        assert {
            "good": ([2, 1], False, 2, True, []),
            "broken_code": ([2], False, 1, False, ["no_function_called"]),
            "no_code": ([], False, 1, False, ["no_code"]),
        }[kind] == (section["code_lines_per_snippet"], section["text_after_code"], section["n_paragraphs"],
                    section["defines_and_calls_function"], section["constraint_violations"])

    metadata = result.asset_materializations_for_node("synthetic_textbook")[0].metadata
    assert metadata["kept"].value == len(sections) and metadata["rejected"].value == len(rejects)
    assert metadata["llm/failed"].value == 1
    assert 0 <= metadata["diversity/near_duplicate_rate"].value < 0.5
    assert "llm_error" in metadata["rejection_reasons"].value
    assert metadata["constraints_met"].value == sum(s["constraints_met"] for s in sections) > 0
    plan_metadata = result.asset_materializations_for_node("textbook_prompts")[0].metadata
    assert plan_metadata["personas_removed_as_near_duplicates"].value >= 1
    assert plan_metadata["distinct_topics"].value == 15
    assert plan_metadata["distinct_features"].value >= 10 and plan_metadata["story_vocabulary"].value >= 1500


def test_rerun_is_answered_from_the_cache_with_the_same_rows(warehouse):
    with OpenAIDouble(chat=section_responder) as server:
        run(warehouse, server, n_prompts=6, seed=3)
        first = warehouse.query("SELECT section_id FROM synthetic_textbook ORDER BY 1")
        arrived = len(server.chat_requests)
        result = run(warehouse, server, n_prompts=6, seed=3)
        assert len(server.chat_requests) == arrived
    assert warehouse.query("SELECT section_id FROM synthetic_textbook ORDER BY 1").equals(first)
    assert result.asset_materializations_for_node("synthetic_textbook")[0].metadata["llm/cache_hits"].value == 6


def test_extract_shape_records_each_broken_constraint_with_its_reason():
    good = ("Overview of the idea.\n\nAn example in words.\n"
            "```python\ndef double(n):\n    return n * 2\n\nprint(double(3))\n```\n")
    shape = extract_shape(good)
    assert shape.constraints_met and shape.code_lines_per_snippet == [3] and shape.n_paragraphs == 2
    long_block = "\n".join(f"x{i} = {i}" for i in range(11))
    bad = ("# Chapter 3\n\nOverview.\n\nExample.\n"
           f"```python\n{long_block}\n```\n```python\ndef f():\n    return 1\n```\n```\ny = 2\n```\n"
           "That is all, and now a summary.\n")
    shape = extract_shape(bad)
    assert shape.text_after_code and shape.n_paragraphs == 4 and shape.code_lines_per_snippet == [11, 2, 1]
    assert shape.violations == ["too_many_snippets: 3", "snippet_too_long: block 0 has 11 lines", "no_function_called",
                                "text_after_code", "too_many_paragraphs: 4"]
    truncated = extract_shape("Overview.\n```python\ndef f(n):\n    return")
    assert truncated.violations == ["no_code", "unclosed_code_block"] and truncated.n_paragraphs == 1
    assert extract_shape("```python\ndef f():\n    return 1\nf()\n```").violations == ["no_text_before_code"]


def test_sentence_helpers():
    assert first_sentence('  "The queue is empty. Then more."\nsecond line') == "The queue is empty."
    assert first_sentence("no stop at all") == "no stop at all"
    assert contains_sentence("Intro. the QUEUE is  empty!\nmore", "The queue is empty.")
    assert not contains_sentence("The queue is full.", "The queue is empty.") and not contains_sentence("x", "")


def no_summary_for(topic: str) -> bool:
    return zlib.crc32(topic.encode()) % 3 == 0


def iterative_responder(body: dict) -> str:
    prompt = body["messages"][-1]["content"]
    if prompt.endswith("Answer with the summary only."):
        topic = re.search(r"extract on (.+?), the part about", prompt).group(1)
        return "" if no_summary_for(topic) else f"The extract explains {topic}. It solves one small example."
    if prompt.endswith("Answer with the sentence only."):
        noun = re.search(r'using the word "(\w+)"', prompt).group(1)
        return f'"Every {noun} has its place." And another sentence.'
    sentence = re.search(r"word for word: (.+)\n", prompt).group(1)
    summary = re.search(r"Summary of the extract: (.+)\n", prompt).group(1)
    assert summary.startswith("The extract explains")
    noun = re.search(r"Every (\w+) has", sentence).group(1)
    return section_responder(body) + ("" if len(noun) % 2 == 0 else "\n" + sentence)  # used by odd-length nouns


def test_iterative_mode_stores_summary_and_required_sentence_on_each_row(warehouse):
    with OpenAIDouble(chat=iterative_responder) as server:
        result = run(warehouse, server, n_prompts=8, seed=4, generation_mode="iterative", max_samples=1)
        bodies = [b["messages"][-1]["content"] for b in server.chat_requests]
    assert result.success
    plans = warehouse.query("SELECT * FROM textbook_prompts").to_dicts()
    sections = warehouse.query("SELECT * FROM synthetic_textbook").to_dicts()
    rejects = warehouse.query("SELECT * FROM synthetic_textbook_rejects").to_dicts()
    no_summary = [p for p in plans if no_summary_for(p["topic"])]
    assert 0 < len(no_summary) < len(plans)
    # three calls per plan, except plans whose summary came back empty (one call, then a reject)
    assert len(bodies) == 3 * len(plans) - 2 * len(no_summary)
    # the LLM layer reports an empty completion as a failed call, with its cause
    empty = [r for r in rejects if r["reason"] == "summary_llm_error"]
    assert {r["prompt_id"] for r in empty} == {p["prompt_id"] for p in no_summary}
    assert all(r["generation_mode"] == "iterative" and "empty completion" in r["error"] for r in empty)
    for section in sections:
        assert section["generation_mode"] == "iterative"
        assert section["summary"] == f"The extract explains {section['topic']}. It solves one small example."
        assert section["required_sentence"] == f"Every {section['required_words'][1]} has its place."
        assert section["summary_cache_key"] and section["sentence_cache_key"]
        assert section["required_sentence_used"] == (len(section["required_words"][1]) % 2 == 1)
        if section["n_code_blocks"]:  # the sentence was appended after the code
            assert section["text_after_code"] == section["required_sentence_used"]
            assert ("text_after_code" in section["constraint_violations"]) == section["required_sentence_used"]
    assert len(sections) + len(rejects) == len(plans) and sections
    assert {r["reason"] for r in rejects} <= {"summary_llm_error", "near_duplicate"}
    assert {s["required_sentence_used"] for s in sections} == {True, False}


def test_lasting_sizes_in_the_settings_file_apply_and_the_launchpad_wins(warehouse, tmp_path, monkeypatch):
    """A run without launchpad config (a sensor or automation run) plans the number of
    prompts and uses the generation mode the settings file gives."""
    settings = tmp_path / "synth_assets.toml"
    settings.write_text('[textbook_prompts]\nn_prompts = 4\nseed = 9\n\n[synthetic_textbook]\ngeneration_mode = "iterative"\n')
    monkeypatch.setenv("SYNTH_ASSETS_SETTINGS", str(settings))
    with OpenAIDouble(chat=iterative_responder) as server:
        llm = LLMResource(base_url=server.base_url, api_key=TEST_KEY_REF, model="gpt-4o-mini",
                          embedding_model="text-embedding-3-small", max_retries=0)
        result = dg.materialize([textbook_prompts, synthetic_textbook], resources={"compute": Compute(), "warehouse": warehouse, "llm": llm})
        assert result.success
        plans = warehouse.query("SELECT seed FROM textbook_prompts")
        assert plans.height == 4 and set(plans["seed"]) == {9}
        modes = warehouse.query("SELECT generation_mode FROM synthetic_textbook UNION ALL "
                                "SELECT generation_mode FROM synthetic_textbook_rejects")["generation_mode"]
        assert set(modes) == {"iterative"}
        metadata = result.asset_materializations_for_node("textbook_prompts")[0].metadata
        assert metadata["settings_origin"].value == {"n_prompts": "settings file", "seed": "settings file"}
        # the launchpad wins for its run
        dg.materialize([textbook_prompts], resources={"compute": Compute(), "warehouse": warehouse},
                       run_config=dg.RunConfig({"textbook_prompts": TextbookPromptsConfig(n_prompts=2)}))
        assert warehouse.query("SELECT count(*) AS n FROM textbook_prompts")["n"][0] == 2


def test_a_section_without_code_is_asked_again_until_one_closes_a_code_block(warehouse):
    """Sample 0 of every plan has no code, sample 1 has code for half the plans, and the
    rest never: those end with their third answer and two `no_code_block` rejects."""

    def responder(body: dict) -> str:
        sample = body["seed"] - LLMResource().seed  # the resource's base seed + sample_index
        text = section_responder(body)
        prose = text.split("```")[0].strip()
        topic = re.search(r"textbook section about (.+?): ", body["messages"][-1]["content"]).group(1)
        if sample == 0 or zlib.crc32(topic.encode()) % 2:
            return prose + f" (sample {sample})"
        return prose + "\n```python\ndef f(x):\n    return x\n\nprint(f(1))\n```\n"

    with OpenAIDouble(chat=responder) as server:
        result = run(warehouse, server, n_prompts=6, seed=5, max_samples=3)
        asked = len(server.chat_requests)
    assert result.success
    sections = warehouse.query("SELECT * FROM synthetic_textbook").to_dicts()
    rejects = warehouse.query("SELECT * FROM synthetic_textbook_rejects").to_dicts()
    assert len(sections) == 6
    with_code = [s for s in sections if s["n_code_blocks"]]
    without = [s for s in sections if not s["n_code_blocks"]]
    assert with_code and without
    assert all(s["sample_index"] == 1 and s["constraints_met"] for s in with_code)
    assert all(s["sample_index"] == 2 and s["text"].endswith("(sample 2)") for s in without)
    assert asked == 6 + 6 + len(without)
    replaced = [r for r in rejects if r["reason"] == "no_code_block"]
    assert len(replaced) == len(with_code) + 2 * len(without) == len(rejects)
    assert all(r["raw_text"].endswith(f"(sample {r['sample_index']})") and r["cache_key"] for r in replaced)
    assert {r["error"] for r in replaced} == {"sample 0 closed no code block; asked again as sample 1",
                                              "sample 1 closed no code block; asked again as sample 2"}
