"""`textbook_prompts`: the seeded plan of every synthetic textbook section.

phi-1 (Gunasekar et al. 2023, section 2.2) gets diversity in its synthetic textbook by
constraining the topic and target audience. Every prompt here is a seeded plan (topic +
subtopic, audience, persona, style, TinyStories-style required words and a required
feature; see prompt_plans.py); `synthetic_textbook` makes one LLM call per plan.
"""

import dagster as dg
import polars as pl
from pydantic import Field

from resources.warehouse import Warehouse
from synth_assets.automation import on_code_change
from synth_assets.common.tables import markdown_table, table_result
from synth_assets.synthesis.prompt_plans import load_catalog, persona_pool, plan_textbook_prompts, sample_corpus_files

PLAN_VERSION = "plans-v1"
PROMPTS_TABLE = "textbook_prompts"
PERSONA_CORPUS_TABLES = ("raw_stack_plus",)


class TextbookPromptsConfig(dg.Config):
    n_prompts: int = Field(
        default=20, description="Prompts to plan (one textbook section each; small so the local model is quick)."
    )
    seed: int = Field(default=0, description="Seed for every slot draw; same seed, same plans.")
    n_required_words: int = Field(default=2, description="Random words each section must use (TinyStories).")
    n_corpus_personas: int = Field(
        default=16, description="Corpus files (raw_stack_plus, if present) turned into personas (text-to-persona)."
    )


PROMPT_SCHEMA = {
    "prompt_id": pl.Utf8, "topic": pl.Utf8, "subtopic": pl.Utf8, "audience": pl.Utf8, "persona": pl.Utf8,
    "persona_source": pl.Utf8, "style": pl.Utf8, "required_words": pl.List(pl.Utf8), "feature": pl.Utf8,
    "seed": pl.Int64,
}


@dg.asset(
    group_name="synthesis",
    kinds={"duckdb", "python"},
    owners=["team:synth-assets"],
    code_version=PLAN_VERSION,
    automation_condition=on_code_change(),
)
def textbook_prompts(
    context: dg.AssetExecutionContext, config: TextbookPromptsConfig, warehouse: Warehouse
) -> dg.MaterializeResult:
    """The plan of every synthetic textbook prompt, one row per prompt: topic and
    subtopic (from ~260 shipped "reasoning and basic algorithmic skills" topics),
    audience, persona (and where it came from), style, required words and required
    feature, plus the seed. `prompt_id` is a hash of the slots. Seeded: the same seed
    gives the same rows. Personas are the shipped list plus, when `raw_stack_plus`
    exists, personas derived from sampled corpus files (imports + module docstring ->
    "a developer who maintains code that uses X for: Y"), all deduplicated with MinHash
    (Persona Hub: 1-gram shingles, 128 permutations, Jaccard 0.9). The corpus is read
    opportunistically, not declared as a dependency: this asset runs without it."""
    with warehouse.materialization(context) as lake:
        catalog = load_catalog()
        corpus = sample_corpus_files(lake, PERSONA_CORPUS_TABLES, config.n_corpus_personas, config.seed)
        personas, removed = persona_pool(catalog, corpus)
        plans = plan_textbook_prompts(catalog, config.n_prompts, config.seed, personas, config.n_required_words)
        lake.write_table(PROMPTS_TABLE, pl.DataFrame([p.row() for p in plans], schema=PROMPT_SCHEMA))
        context.log.info(f"textbook_prompts: {len(plans)} plans, {len(personas)} personas ({len(removed)} near-duplicates removed)")
    return table_result(
        warehouse,
        PROMPTS_TABLE,
        {
            "personas": len(personas),
            "corpus_personas": sum(1 for p in personas if p.source != "catalog"),
            "personas_removed_as_near_duplicates": len(removed),
            "personas_removed": dg.MetadataValue.md(
                markdown_table([(r.persona, r.near_duplicate_of, r.jaccard) for r in removed], ["persona", "near_duplicate_of", "jaccard"])
                if removed else "none"
            ),
            "distinct_topics": len({p.topic for p in plans}),
            "distinct_styles": len({p.style for p in plans}),
            "distinct_audiences": len({p.audience for p in plans}),
            "catalog_topics": len(catalog.topics),
        },
        snapshot_id=lake.snapshot_id_published,
    )
