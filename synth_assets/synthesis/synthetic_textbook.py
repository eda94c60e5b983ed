"""`synthetic_textbook`: phi-1-style synthetic textbook sections.

phi-1 (Gunasekar et al. 2023, section 2.2) generates "textbook" text interleaving
natural-language explanation with short code, and gets diversity by constraining the
topic and target audience. Every prompt is a seeded plan stored in `textbook_prompts`
(topic, audience, persona, style, TinyStories' verb + noun + adjective and two
features); the prompt is the reconstructed phi-1 extract prompt (textbook_extract.py),
and every output's shape is checked against it and recorded on the row.

Two generation modes (`generation_mode`):
- `direct`: one call per plan;
- `iterative` (TinyStories-Instruct): the LLM writes a summary, then a sentence the
  section must contain, then the section from the prompt + summary + sentence; both
  intermediates are stored on the row.
"""


import ast
import hashlib
import re
from collections import Counter

import dagster as dg
import polars as pl
from pydantic import Field

from resources.compute import Compute
from resources.llm import ChatResult, LLMResource
from resources.llm.batches import on_cluster
from resources.warehouse import Warehouse
from synth_assets.automation import on_upstream_change
from synth_assets.common.tables import counts_markdown, table_result
from synth_assets.settings import lasting_compute, settings_origin, with_settings
from synth_assets.synthesis.diversity import NEAR_DUP_THRESHOLD, diversity_metadata, find_near_duplicates
from synth_assets.synthesis.prompt_plans import TextbookPrompt
from synth_assets.synthesis.textbook_extract import (
    MAX_PARAGRAPHS,
    MAX_SNIPPET_LINES,
    code_blocks,
    contains_sentence,
    direct_messages,
    extract_shape,
)
from synth_assets.synthesis.textbook_generation import GENERATION_MODES, Intermediates, Lengths, generate_sections
from synth_assets.synthesis.textbook_prompts import PROMPT_SCHEMA, PROMPTS_TABLE, textbook_prompts

PROMPT_VERSION = "textbook-v2"  # v2: the reconstructed extract prompt, verb/noun/adjective, two features
SECTIONS_TABLE = "synthetic_textbook"
REJECTS_TABLE = "synthetic_textbook_rejects"
__all__ = ["code_blocks", "synthetic_textbook"]


def build_messages(plan: TextbookPrompt) -> list[dict]:
    """The chat messages of a direct section (the reconstructed extract prompt)."""
    return direct_messages(plan)


# --------------------------------------------------------------------------- sections


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
    plans: list[TextbookPrompt], results: list[ChatResult | None], model: str, near_dup_threshold: float,
    intermediates: list[Intermediates] | None = None,
) -> tuple[list[dict], list[dict]]:
    """(kept sections, rejects with reasons): failed calls (of the section, or of an
    iterative summary / sentence), empty answers and near-duplicates of an earlier kept
    section. Every kept row carries the extract's measured shape (`extract_shape`)."""
    intermediates = intermediates or [Intermediates() for _ in plans]
    candidates: list[dict] = []
    rejects: list[dict] = []
    for plan, result, steps in zip(plans, results, intermediates, strict=True):
        for sample_index, replaced in enumerate(steps.superseded):
            rejects.append({**plan.row(), **steps.columns(), "model": model, "prompt_version": PROMPT_VERSION,
                            "cache_key": replaced.cache_key, "section_id": None, "reason": "no_code_block",
                            "error": f"sample {sample_index} closed no code block; asked again as sample {sample_index + 1}",
                            "raw_text": (replaced.text or "").strip(), "sample_index": sample_index})
        if result is None:  # an iterative step failed: no section was asked for
            rejected = steps.rejected
            rejects.append({**plan.row(), **steps.columns(), "model": model, "prompt_version": PROMPT_VERSION,
                            "cache_key": rejected.get("cache_key"), "section_id": None, "reason": rejected["reason"],
                            "error": rejected.get("error"), "raw_text": rejected.get("raw_text", "")})
            continue
        text = (result.text or "").strip()
        base = {**plan.row(), **steps.columns(), "model": model, "prompt_version": PROMPT_VERSION,
                "cache_key": result.cache_key, "sample_index": steps.sample_index}
        replaced_tokens = [(r.prompt_tokens or 0, r.completion_tokens or 0) for r in steps.superseded]
        if result.status != "ok":
            rejects.append({**base, "section_id": None, "reason": f"llm_{result.status}", "error": result.error, "raw_text": text})
            continue
        if not text:
            rejects.append({**base, "section_id": None, "reason": "empty_output", "error": None, "raw_text": text})
            continue
        blocks = code_blocks(text)
        shape = extract_shape(text)
        candidates.append(
            {
                **base,
                "section_id": section_id(plan.prompt_id, text),
                "text": text,
                "prompt_tokens": (result.prompt_tokens or 0) + steps.prompt_tokens + sum(t[0] for t in replaced_tokens),
                "completion_tokens": (
                    (result.completion_tokens or 0) + steps.completion_tokens + sum(t[1] for t in replaced_tokens)
                ),
                "n_code_blocks": len(blocks),
                "code_blocks_parse": blocks_parse(blocks),
                "required_words_used": round(required_words_used(text, plan.required_words), 4),
                "required_sentence_used": (
                    contains_sentence(text, steps.required_sentence) if steps.required_sentence else None
                ),
                "code_lines_per_snippet": shape.code_lines_per_snippet,
                "text_after_code": shape.text_after_code,
                "n_paragraphs": shape.n_paragraphs,
                "defines_and_calls_function": shape.defines_and_calls_function,
                "constraints_met": shape.constraints_met,
                "constraint_violations": shape.violations,
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
                **{k: candidate[k] for k in (*PROMPT_SCHEMA, *INTERMEDIATE_SCHEMA, "model", "prompt_version",
                                             "cache_key", "section_id", "sample_index")},
                "reason": "near_duplicate",
                "error": f"near_duplicate_of={original} jaccard={duplicate.jaccard}",
                "raw_text": candidate["text"],
            }
        )
    return kept, rejects


INTERMEDIATE_SCHEMA = {
    "generation_mode": pl.Utf8, "summary": pl.Utf8, "required_sentence": pl.Utf8, "summary_cache_key": pl.Utf8,
    "sentence_cache_key": pl.Utf8, "sample_index": pl.Int64,
}
SECTION_SCHEMA = {
    "section_id": pl.Utf8, **PROMPT_SCHEMA, "text": pl.Utf8, "model": pl.Utf8, "prompt_version": pl.Utf8,
    "prompt_tokens": pl.Int64, "completion_tokens": pl.Int64, "n_code_blocks": pl.Int64,
    "code_blocks_parse": pl.Boolean, "required_words_used": pl.Float64, "cache_key": pl.Utf8,
    **INTERMEDIATE_SCHEMA, "required_sentence_used": pl.Boolean,
    "code_lines_per_snippet": pl.List(pl.Int64), "text_after_code": pl.Boolean, "n_paragraphs": pl.Int64,
    "defines_and_calls_function": pl.Boolean, "constraints_met": pl.Boolean, "constraint_violations": pl.List(pl.Utf8),
}
SECTION_REJECT_SCHEMA = {
    "section_id": pl.Utf8, **PROMPT_SCHEMA, "reason": pl.Utf8, "error": pl.Utf8, "raw_text": pl.Utf8,
    "model": pl.Utf8, "prompt_version": pl.Utf8, "cache_key": pl.Utf8, **INTERMEDIATE_SCHEMA,
}


class SyntheticTextbookConfig(dg.Config):
    max_tokens: int = Field(default=350, description="Completion token cap per section (phi-1 sections are short).")
    temperature: float | None = Field(default=None, description="Sampling temperature; None = the resource's default.")
    near_duplicate_threshold: float = Field(
        default=NEAR_DUP_THRESHOLD, description="Word 5-gram Jaccard at or above which a section is dropped (Lee et al. 2022: 0.8)."
    )
    generation_mode: str = Field(
        default="direct",
        description="`direct` (one call per section) or `iterative` (TinyStories-Instruct: the LLM writes a summary, "
        "then a sentence the section must contain, then the section; three calls, both intermediates stored).",
    )
    summary_max_tokens: int = Field(default=80, description="Iterative mode: completion cap of the summary.")
    sentence_max_tokens: int = Field(default=48, description="Iterative mode: completion cap of the required sentence.")
    # phi-1's sections always carry code; Code Llama's self-instruct likewise re-samples
    # until an answer is usable.
    max_samples: int = Field(
        default=3, ge=1, description="Answers sampled per section at most; the next is asked only when the last "
        "closed no code block.",
    )


def load_plans(warehouse: Warehouse) -> list[TextbookPrompt]:
    """The stored plans; a table written before `features` existed reads its one feature."""
    frame = warehouse.query(f"SELECT * FROM {PROMPTS_TABLE} ORDER BY prompt_id")
    plans = []
    for row in frame.iter_rows(named=True):
        slots = {key: row.get(key) for key in PROMPT_SCHEMA}
        slots["required_words"] = list(row["required_words"] or [])
        slots["features"] = list(row.get("features") or [row["feature"]])
        slots["prompt_index"] = row.get("prompt_index") or 0
        plans.append(TextbookPrompt(**slots))
    return plans


def shape_metadata(kept: list[dict]) -> dict:
    """How many sections meet the reconstructed prompt's constraints, and which they break."""
    violations = Counter(v.split(":")[0] for row in kept for v in row["constraint_violations"])
    met = sum(1 for row in kept if row["constraints_met"])
    return {
        "constraints_met": met,
        "constraints_met_rate": round(met / len(kept), 4) if kept else 0.0,
        "constraint_violations": dg.MetadataValue.md(counts_markdown(dict(violations)) if violations else "none"),
        "with_text_after_code": sum(1 for row in kept if row["text_after_code"]),
        "within_paragraph_limit": sum(1 for row in kept if 0 < row["n_paragraphs"] <= MAX_PARAGRAPHS),
        "snippets_within_line_limit": sum(
            1 for row in kept for n in row["code_lines_per_snippet"] if n <= MAX_SNIPPET_LINES
        ),
    }


@dg.asset(
    group_name="synthesis",
    kinds={"duckdb", "python", "openai"},
    owners=["team:synth-assets"],
    code_version=f"synthetic_textbook-2+{PROMPT_VERSION}",
    deps=[textbook_prompts],
    automation_condition=on_upstream_change(),
)
def synthetic_textbook(
    context: dg.AssetExecutionContext, config: SyntheticTextbookConfig, warehouse: Warehouse, llm: LLMResource,
    compute: Compute,
) -> dg.MaterializeResult:
    """Synthetic textbook sections, one per row of `textbook_prompts`, written from the
    reconstructed phi-1 prompt: an extract from the middle of a topic teaching one
    concept, an overview, an example solved in words, then one or two snippets of at
    most 10 lines that define a function and call it, no text after the code, at most
    two paragraphs; the plan's style varies the voice, its verb, noun and adjective must
    be used and its two features shown. Each row carries its prompt's slots, the text,
    the model and prompt version, token counts (all of the section's calls),
    `n_code_blocks`, `code_blocks_parse` (at least one fenced block and every block
    parses), `required_words_used` and the LLM `cache_key`.

    The prompt's constraints are measured on every output: `code_lines_per_snippet`,
    `text_after_code`, `n_paragraphs`, `defines_and_calls_function`, and
    `constraints_met` with the reasons in `constraint_violations` (kept either way, so
    downstream can filter). `generation_mode` = `iterative` (TinyStories-Instruct) adds
    `summary` and `required_sentence`, written by the LLM before the section (their
    cache keys too), and `required_sentence_used`.

    A section that closed no code block is asked again as a new cached sample, up to
    `max_samples` answers (`sample_index` says which answer a row is); the answers it
    replaced are rejects with reason `no_code_block`.

    Dropped sections are in `synthetic_textbook_rejects` with a reason: `llm_error` /
    `llm_budget_exceeded` (the call failed; error kept), `summary_llm_error`,
    `sentence_llm_error`, `empty_summary`, `empty_sentence` (iterative steps),
    `empty_output`, or `near_duplicate` (MinHash on word 5-grams, Jaccard >= 0.8 with an
    earlier kept section). Sections without parseable code are kept, flagged by
    `code_blocks_parse`."""
    origin = settings_origin(config, "synthetic_textbook")  # before the merge: which values the launchpad set
    config = with_settings(config, "synthetic_textbook")
    if config.generation_mode not in GENERATION_MODES:
        raise dg.Failure(description=f"generation_mode must be one of {', '.join(GENERATION_MODES)}, "
                                     f"not {config.generation_mode!r}")
    lengths = Lengths(config.max_tokens, config.summary_max_tokens, config.sentence_max_tokens)
    with warehouse.materialization(context) as lake:
        plans = load_plans(lake)
        with llm.session(context, warehouse) as driver, on_cluster(driver, lasting_compute(compute)) as session:
            calls_each = 3 if config.generation_mode == "iterative" else 1
            session.log_estimate(len(plans) * calls_each, 250, config.max_tokens)
            steps, results = generate_sections(session, plans, config.generation_mode, lengths, config.temperature,
                                               config.max_samples)
            kept, rejects = section_rows(plans, results, session.model, config.near_duplicate_threshold, steps)
            lake.write_table(SECTIONS_TABLE, pl.DataFrame(kept, schema=SECTION_SCHEMA))
            lake.write_table(REJECTS_TABLE, pl.DataFrame(rejects, schema=SECTION_REJECT_SCHEMA))
            llm_metadata = {**session.metadata(), "compute": session.engine}
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
            "generation_mode": config.generation_mode,
            "rejection_reasons": dg.MetadataValue.md(counts_markdown(dict(reasons)) if rejects else "none"),
            "with_parseable_code": sum(1 for row in kept if row["code_blocks_parse"]),
            "code_parse_rate": round(sum(1 for row in kept if row["code_blocks_parse"]) / len(kept), 4) if kept else 0.0,
            "distinct_function_names": len(set().union(*(defined_function_names(code_blocks(t)) for t in texts))),
            "distinct_topics": len({row["topic"] for row in kept}),
            "required_sentence_used": sum(1 for row in kept if row["required_sentence_used"]),
            **shape_metadata(kept),
            "prompt_version": PROMPT_VERSION,
            "settings_origin": dg.MetadataValue.json(origin),
            **{f"diversity/{k}": v for k, v in diversity_metadata(texts).items()},
            **llm_metadata,
        },
        snapshot_id=lake.snapshot_id_published,
    )
