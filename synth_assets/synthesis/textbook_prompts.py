"""`textbook_prompts`: the seeded plan of every synthetic textbook section.

phi-1 (Gunasekar et al. 2023, section 2.2) gets diversity in its synthetic textbook by
constraining the topic and target audience. Every prompt here is a seeded plan (topic +
subtopic, audience, persona, style, and TinyStories' diversity: one verb, one noun and
one adjective from ~2,000 shipped words, and two features; see prompt_plans.py);
`synthetic_textbook` writes one section per plan.
Personas come from the `personas` asset (Persona Hub), a declared dependency.
"""

import dagster as dg
import polars as pl
from pydantic import Field

from resources.warehouse import Warehouse
from synth_assets.automation import on_code_change
from synth_assets.common.tables import table_result
from synth_assets.settings import settings_origin, with_settings
from synth_assets.synthesis.personas import load_personas, personas
from synth_assets.synthesis.prompt_plans import load_catalog, plan_textbook_prompts

PLAN_VERSION = "plans-v3"  # v3: verb + noun + adjective, two features, draws per (seed, index)
PROMPTS_TABLE = "textbook_prompts"


class TextbookPromptsConfig(dg.Config):
    n_prompts: int = Field(
        default=20, description="Prompts to plan (one textbook section each; small so the local model is quick)."
    )
    seed: int = Field(default=0, description="Seed for every slot draw; same seed, same plans.")
    n_corpus_personas: int = Field(
        default=0, description="Deprecated and ignored: personas now come from the `personas` asset."
    )


PROMPT_SCHEMA = {
    "prompt_id": pl.Utf8, "topic": pl.Utf8, "subtopic": pl.Utf8, "audience": pl.Utf8, "persona": pl.Utf8,
    "persona_source": pl.Utf8, "style": pl.Utf8, "required_words": pl.List(pl.Utf8), "feature": pl.Utf8,
    "seed": pl.Int64, "features": pl.List(pl.Utf8), "prompt_index": pl.Int64,
}


@dg.asset(
    group_name="synthesis",
    kinds={"duckdb", "python"},
    owners=["team:synth-assets"],
    code_version=PLAN_VERSION,
    deps=[personas],
    automation_condition=on_code_change(),
)
def textbook_prompts(
    context: dg.AssetExecutionContext, config: TextbookPromptsConfig, warehouse: Warehouse
) -> dg.MaterializeResult:
    """The plan of every synthetic textbook prompt, one row per prompt: topic and
    subtopic (from ~260 shipped "reasoning and basic algorithmic skills" topics),
    audience, persona (and where it came from), style, `required_words` (TinyStories:
    one verb, one noun, one adjective, in that order, from ~2,000 shipped words) and
    `features` (two TinyStories-style features adapted to a textbook extract, e.g.
    "uses an analogy from everyday life"; `feature` holds them joined by "; "), plus
    the seed and `prompt_index`. `prompt_id` is a hash of the slots. Seeded per (seed,
    prompt_index): the same seed and the same `personas` table give the same rows, and
    a larger run extends a smaller one. Personas are drawn from the
    `personas` asset (Persona Hub: shipped personas, LLM text-to-persona and
    persona-to-persona, deduplicated); when that table does not exist, from the
    shipped list alone (`persona_source` = catalog)."""
    origin = settings_origin(config, "textbook_prompts")  # before the merge: which values the launchpad set
    config = with_settings(config, "textbook_prompts")
    with warehouse.materialization(context) as lake:
        catalog = load_catalog()
        pool, removed = load_personas(lake)
        plans = plan_textbook_prompts(catalog, config.n_prompts, config.seed, pool)
        lake.write_table(PROMPTS_TABLE, pl.DataFrame([p.row() for p in plans], schema=PROMPT_SCHEMA))
        context.log.info(f"textbook_prompts: {len(plans)} plans from {len(pool)} personas")
    return table_result(
        warehouse,
        PROMPTS_TABLE,
        {
            "personas": len(pool),
            "generated_personas": sum(1 for p in pool if p.source != "catalog"),
            "personas_used": len({p.persona for p in plans}),
            "personas_removed_as_near_duplicates": removed,
            "distinct_topics": len({p.topic for p in plans}),
            "distinct_styles": len({p.style for p in plans}),
            "distinct_audiences": len({p.audience for p in plans}),
            "catalog_topics": len(catalog.topics),
            "distinct_features": len({feature for p in plans for feature in p.features}),
            "distinct_required_words": len({word for p in plans for word in p.required_words}),
            "story_vocabulary": len(catalog.story_verbs) + len(catalog.story_nouns) + len(catalog.story_adjectives),
            "settings_origin": dg.MetadataValue.json(origin),
        },
        snapshot_id=lake.snapshot_id_published,
    )
