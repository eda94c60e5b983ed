"""`textbook_prompts`: the seeded plan of every synthetic textbook section.

phi-1 (Gunasekar et al. 2023, section 2.2) gets diversity in its synthetic textbook by
constraining the topic and target audience. Every prompt here is a seeded plan (topic +
subtopic, audience, persona, style, TinyStories-style required words and a required
feature; see prompt_plans.py); `synthetic_textbook` makes one LLM call per plan.
Personas come from the `personas` asset (Persona Hub), a declared dependency.
"""

import dagster as dg
import polars as pl
from pydantic import Field

from resources.warehouse import Warehouse
from synth_assets.automation import on_code_change
from synth_assets.common.tables import table_result
from synth_assets.synthesis.personas import PERSONAS_TABLE, personas
from synth_assets.synthesis.prompt_plans import Persona, load_catalog, persona_pool, plan_textbook_prompts

PLAN_VERSION = "plans-v2"
PROMPTS_TABLE = "textbook_prompts"


def load_personas(lake) -> tuple[list[Persona], int]:
    """The `personas` pool in its stored order, or the shipped list (deduplicated) when
    that table does not exist; (personas, personas removed as near-duplicates here)."""
    if lake.table_exists(PERSONAS_TABLE):
        frame = lake.query(f'SELECT persona, source FROM "{PERSONAS_TABLE}" ORDER BY persona_id')
        pool = [Persona(row["persona"], row["source"]) for row in frame.iter_rows(named=True)]
        if pool:
            return pool, 0
    pool, removed = persona_pool(load_catalog())
    return pool, len(removed)


class TextbookPromptsConfig(dg.Config):
    n_prompts: int = Field(
        default=20, description="Prompts to plan (one textbook section each; small so the local model is quick)."
    )
    seed: int = Field(default=0, description="Seed for every slot draw; same seed, same plans.")
    n_required_words: int = Field(default=2, description="Random words each section must use (TinyStories).")
    n_corpus_personas: int = Field(
        default=0, description="Deprecated and ignored: personas now come from the `personas` asset."
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
    deps=[personas],
    automation_condition=on_code_change(),
)
def textbook_prompts(
    context: dg.AssetExecutionContext, config: TextbookPromptsConfig, warehouse: Warehouse
) -> dg.MaterializeResult:
    """The plan of every synthetic textbook prompt, one row per prompt: topic and
    subtopic (from ~260 shipped "reasoning and basic algorithmic skills" topics),
    audience, persona (and where it came from), style, required words and required
    feature, plus the seed. `prompt_id` is a hash of the slots. Seeded: the same seed
    and the same `personas` table give the same rows. Personas are drawn from the
    `personas` asset (Persona Hub: shipped personas, LLM text-to-persona and
    persona-to-persona, deduplicated); when that table does not exist, from the
    shipped list alone (`persona_source` = catalog)."""
    with warehouse.materialization(context) as lake:
        catalog = load_catalog()
        pool, removed = load_personas(lake)
        plans = plan_textbook_prompts(catalog, config.n_prompts, config.seed, pool, config.n_required_words)
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
        },
        snapshot_id=lake.snapshot_id_published,
    )
