"""textbook_prompts + synthetic_textbook materialized against the OpenAI test double:
slots stored and sent, code blocks checked, near-duplicates and failed calls recorded."""

from __future__ import annotations

import hashlib
import random
import re
import zlib

import dagster as dg

from resources.llm import LLMResource
from synth_assets.synthesis.synthetic_textbook import SyntheticTextbookConfig, blocks_parse, code_blocks, required_words_used, synthetic_textbook
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
    words = re.search(r"Use the words (\w+) and (\w+)", prompt).groups()
    kind = kind_of(topic)
    if kind == "canned":
        return CANNED
    rng = random.Random(hashlib.sha256(prompt.encode()).hexdigest())
    filler = " ".join("".join(rng.choice("abcdefghij") for _ in range(6)) for _ in range(60))
    text = f"Overview of {topic} with a {words[0]} and a {words[1]}. {filler}\n"
    if kind == "broken_code":
        return text + "```python\ndef broken(:\n    pass\n```\n"
    if kind == "no_code":
        return text
    return text + "```python\ndef f(x):\n    return x + 1\n```\nAnd:\n```py\nprint(f(1))\n```\n"


def run(warehouse, server, n_prompts=15, seed=0):
    llm = LLMResource(base_url=server.base_url, api_key=TEST_KEY_REF, model="gpt-4o-mini",
                      embedding_model="text-embedding-3-small", max_retries=0)
    return dg.materialize(
        [textbook_prompts, synthetic_textbook],
        resources={"warehouse": warehouse, "llm": llm},
        run_config=dg.RunConfig(
            {"textbook_prompts": TextbookPromptsConfig(n_prompts=n_prompts, seed=seed),
             "synthetic_textbook": SyntheticTextbookConfig(max_tokens=120)}
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
        result = run(warehouse, server)
        prompts = [b["messages"][-1]["content"] for b in server.chat_requests]
    assert result.success

    plans = warehouse.query("SELECT * FROM textbook_prompts").to_dicts()
    assert len(plans) == 15 and len({p["prompt_id"] for p in plans}) == 15
    for plan in plans:
        assert all(plan[slot] for slot in ("topic", "subtopic", "audience", "persona", "persona_source", "style", "feature"))
        assert len(plan["required_words"]) == 2 and plan["seed"] == 0
        sent = [p for p in prompts if f"about {plan['topic']}: {plan['subtopic']}." in p]
        assert sent and plan["audience"] in sent[0] and plan["persona"] in sent[0] and plan["feature"] in sent[0]

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

    metadata = result.asset_materializations_for_node("synthetic_textbook")[0].metadata
    assert metadata["kept"].value == len(sections) and metadata["rejected"].value == len(rejects)
    assert metadata["llm/failed"].value == 1
    assert 0 <= metadata["diversity/near_duplicate_rate"].value < 0.5
    assert "llm_error" in metadata["rejection_reasons"].value
    plan_metadata = result.asset_materializations_for_node("textbook_prompts")[0].metadata
    assert plan_metadata["personas_removed_as_near_duplicates"].value >= 1
    assert plan_metadata["distinct_topics"].value == 15


def test_rerun_is_answered_from_the_cache_with_the_same_rows(warehouse):
    with OpenAIDouble(chat=section_responder) as server:
        run(warehouse, server, n_prompts=6, seed=3)
        first = warehouse.query("SELECT section_id FROM synthetic_textbook ORDER BY 1")
        arrived = len(server.chat_requests)
        result = run(warehouse, server, n_prompts=6, seed=3)
        assert len(server.chat_requests) == arrived
    assert warehouse.query("SELECT section_id FROM synthetic_textbook ORDER BY 1").equals(first)
    assert result.asset_materializations_for_node("synthetic_textbook")[0].metadata["llm/cache_hits"].value == 6
