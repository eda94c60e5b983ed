"""`synthetic_textbook`: phi-1-style synthetic textbook sections.

phi-1 (Gunasekar et al. 2023, section 2.2) generates "textbook" text interleaving
natural-language explanation with short code, and gets diversity by constraining the
topic and target audience. Here every prompt is a seeded plan (topic + subtopic,
audience, persona, style, TinyStories-style required words and a required feature,
see prompt_plans.py) stored in `textbook_prompts`; `synthetic_textbook` makes one LLM
call per plan and keeps phi-1's section shape: a high-level overview, an example
explained in words, then one or two short Python snippets.
"""


import ast
import hashlib
import re
from collections import Counter

import dagster as dg
import polars as pl
from pydantic import Field

from resources.llm import ChatRequest, ChatResult, LLMResource
from resources.warehouse import Warehouse
from synth_assets.automation import on_code_change, on_upstream_change
from synth_assets.synthesis.diversity import NEAR_DUP_THRESHOLD, diversity_metadata, find_near_duplicates
from synth_assets.synthesis.prompt_plans import (
    TextbookPrompt,
    load_catalog,
    persona_pool,
    plan_textbook_prompts,
    sample_corpus_files,
)
from synth_assets.common.tables import counts_markdown, markdown_table, table_result
from synth_assets.synthesis.textbook_prompts import PROMPT_SCHEMA, PROMPTS_TABLE, textbook_prompts

PROMPT_VERSION = "textbook-v1"
SECTIONS_TABLE = "synthetic_textbook"
REJECTS_TABLE = "synthetic_textbook_rejects"

SYSTEM_PROMPT = "You are a computer science teacher. You write short, clear textbook sections with Python code."

_CODE_BLOCK = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def build_messages(plan: TextbookPrompt) -> list[dict]:
    """The chat messages for one planned section."""
    style = load_catalog().style_instruction(plan.style)
    words = " and ".join(plan.required_words)
    user = "\n".join(
        [
            f"Write a short textbook section about {plan.topic}: {plan.subtopic}.",
            f"The reader is a {plan.audience}, {plan.persona}.",
            style,
            "Structure: first a short overview of the idea, then an example explained in plain words, "
            "then one or two short Python code blocks in ```python fences.",
            f"Use the words {words} somewhere in the text. The section {plan.feature}.",
        ]
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


# --------------------------------------------------------------------------- sections


def code_blocks(text: str) -> list[str]:
    """Fenced code blocks (```python / ```py / bare ```)."""
    return [block for block in _CODE_BLOCK.findall(text or "")]


def blocks_parse(blocks: list[str]) -> bool:
    """True when there is at least one block and every block parses as Python."""
    if not blocks:
        return False
    for block in blocks:
        try:
            ast.parse(block)
        except (SyntaxError, ValueError):
            return False
    return True


def defined_function_names(blocks: list[str]) -> set[str]:
    """Names of functions defined in the blocks that parse."""
    names: set[str] = set()
    for block in blocks:
        try:
            tree = ast.parse(block)
        except (SyntaxError, ValueError):
            continue
        names.update(node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)))
    return names


def required_words_used(text: str, words: list[str]) -> float:
    """Share of the required words the text uses (whole words, any case)."""
    if not words:
        return 1.0
    lowered = (text or "").lower()
    return sum(1 for word in words if re.search(rf"\b{re.escape(word.lower())}\b", lowered)) / len(words)


def section_id(prompt_id: str, text: str) -> str:
    return hashlib.sha256(f"{prompt_id}\n{text.strip()}".encode()).hexdigest()[:16]


def section_rows(
    plans: list[TextbookPrompt], results: list[ChatResult], model: str, near_dup_threshold: float
) -> tuple[list[dict], list[dict]]:
    """(kept sections, rejects with reasons): failed calls, empty answers and
    near-duplicates of an earlier kept section."""
    candidates: list[dict] = []
    rejects: list[dict] = []
    for plan, result in zip(plans, results, strict=True):
        text = (result.text or "").strip()
        base = {**plan.row(), "model": model, "prompt_version": PROMPT_VERSION, "cache_key": result.cache_key}
        if result.status != "ok":
            rejects.append({**base, "section_id": None, "reason": f"llm_{result.status}", "error": result.error, "raw_text": text})
            continue
        if not text:
            rejects.append({**base, "section_id": None, "reason": "empty_output", "error": None, "raw_text": text})
            continue
        blocks = code_blocks(text)
        candidates.append(
            {
                **base,
                "section_id": section_id(plan.prompt_id, text),
                "text": text,
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens,
                "n_code_blocks": len(blocks),
                "code_blocks_parse": blocks_parse(blocks),
                "required_words_used": round(required_words_used(text, plan.required_words), 4),
            }
        )
    duplicates = {d.index: d for d in find_near_duplicates([c["text"] for c in candidates], near_dup_threshold)}
    kept = []
    for index, candidate in enumerate(candidates):
        duplicate = duplicates.get(index)
        if duplicate is None:
            kept.append(candidate)
            continue
        original = candidates[duplicate.near_duplicate_of]["section_id"]
        rejects.append(
            {
                **{k: candidate[k] for k in (*PROMPT_SCHEMA, "model", "prompt_version", "cache_key", "section_id")},
                "reason": "near_duplicate",
                "error": f"near_duplicate_of={original} jaccard={duplicate.jaccard}",
                "raw_text": candidate["text"],
            }
        )
    return kept, rejects


SECTION_SCHEMA = {
    "section_id": pl.Utf8, **PROMPT_SCHEMA, "text": pl.Utf8, "model": pl.Utf8, "prompt_version": pl.Utf8,
    "prompt_tokens": pl.Int64, "completion_tokens": pl.Int64, "n_code_blocks": pl.Int64,
    "code_blocks_parse": pl.Boolean, "required_words_used": pl.Float64, "cache_key": pl.Utf8,
}
SECTION_REJECT_SCHEMA = {
    "section_id": pl.Utf8, **PROMPT_SCHEMA, "reason": pl.Utf8, "error": pl.Utf8, "raw_text": pl.Utf8,
    "model": pl.Utf8, "prompt_version": pl.Utf8, "cache_key": pl.Utf8,
}


class SyntheticTextbookConfig(dg.Config):
    max_tokens: int = Field(default=350, description="Completion token cap per section (phi-1 sections are short).")
    temperature: float | None = Field(default=None, description="Sampling temperature; None = the resource's default.")
    near_duplicate_threshold: float = Field(
        default=NEAR_DUP_THRESHOLD, description="Word 5-gram Jaccard at or above which a section is dropped (Lee et al. 2022: 0.8)."
    )


def load_plans(warehouse: Warehouse) -> list[TextbookPrompt]:
    frame = warehouse.query(f"SELECT * FROM {PROMPTS_TABLE} ORDER BY prompt_id")
    return [
        TextbookPrompt(**{key: row[key] for key in PROMPT_SCHEMA} | {"required_words": list(row["required_words"] or [])})
        for row in frame.iter_rows(named=True)
    ]


@dg.asset(
    group_name="synthesis",
    kinds={"duckdb", "python", "openai"},
    owners=["team:synth-assets"],
    code_version=f"synthetic_textbook-1+{PROMPT_VERSION}",
    deps=[textbook_prompts],
    automation_condition=on_upstream_change(),
)
def synthetic_textbook(
    context: dg.AssetExecutionContext, config: SyntheticTextbookConfig, warehouse: Warehouse, llm: LLMResource
) -> dg.MaterializeResult:
    """Synthetic textbook sections, one LLM call per row of `textbook_prompts`, in
    phi-1's shape: overview, an example explained in words, one or two short Python
    snippets. Each row carries its prompt's slots, the text, the model and prompt
    version, token counts, `n_code_blocks`, `code_blocks_parse` (at least one fenced
    block and every block parses), `required_words_used` and the LLM `cache_key`.

    Dropped sections are in `synthetic_textbook_rejects` with a reason: `llm_error` /
    `llm_budget_exceeded` (the call failed; error kept), `empty_output`, or
    `near_duplicate` (MinHash on word 5-grams, Jaccard >= 0.8 with an earlier kept
    section). Sections without parseable code are kept, flagged by `code_blocks_parse`."""
    with warehouse.materialization(context) as lake:
        plans = load_plans(lake)
        requests = [
            ChatRequest(messages=build_messages(p), temperature=config.temperature, max_tokens=config.max_tokens, row_id=p.prompt_id)
            for p in plans
        ]
        with llm.session(context, warehouse) as session:
            session.log_estimate(len(requests), 150, config.max_tokens)
            results = session.complete(requests)
            kept, rejects = section_rows(plans, results, session.model, config.near_duplicate_threshold)
            lake.write_table(SECTIONS_TABLE, pl.DataFrame(kept, schema=SECTION_SCHEMA))
            lake.write_table(REJECTS_TABLE, pl.DataFrame(rejects, schema=SECTION_REJECT_SCHEMA))
            llm_metadata = session.metadata()
        reasons = Counter(r["reason"] for r in rejects)
        texts = [row["text"] for row in kept]
        context.log.info(f"synthetic_textbook: {len(kept)} sections kept, {len(rejects)} rejected")
    return table_result(
        warehouse,
        SECTIONS_TABLE,
        {
            "planned": len(plans),
            "kept": len(kept),
            "rejected": len(rejects),
            "rejection_reasons": dg.MetadataValue.md(counts_markdown(dict(reasons)) if rejects else "none"),
            "with_parseable_code": sum(1 for row in kept if row["code_blocks_parse"]),
            "code_parse_rate": round(sum(1 for row in kept if row["code_blocks_parse"]) / len(kept), 4) if kept else 0.0,
            "distinct_function_names": len(set().union(*(defined_function_names(code_blocks(t)) for t in texts))),
            "distinct_topics": len({row["topic"] for row in kept}),
            "prompt_version": PROMPT_VERSION,
            **{f"diversity/{k}": v for k, v in diversity_metadata(texts).items()},
            **llm_metadata,
        },
        snapshot_id=lake.snapshot_id_published,
    )
