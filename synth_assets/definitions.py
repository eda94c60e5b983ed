"""The one entry point: every asset, check, sensor, schedule, job and resource of synth-assets.

Nothing else happens here. The DAG, in the order the modules are listed:

    raw_stack_plus ─> annotated_sample ─> quality_classifier ─> filtered_textbook ─┐
    textbook_prompts ─> synthetic_textbook ───────────────────────────────────────┼─> training_data_release
    code_exercises ─> contamination_report ─> decontaminated_exercises ───────────┘
    (every LLM-using asset) ─> cost_report

    textbook_prompts and code_exercises read raw_stack_plus / filtered_textbook when
    those tables exist (personas, OSS-Instruct snippets) but do not depend on them, so
    a corpus refresh never sets off paid regeneration by itself.
"""

from __future__ import annotations

import dagster as dg

from quality_checks.checks import all_asset_checks
from resources.llm import LLMResource
from resources.warehouse import Warehouse
from synth_assets.annotate import annotated_sample
from synth_assets.automation import all_jobs, all_schedules, all_sensors
from synth_assets.classify import quality_classifier
from synth_assets.decontaminate import decontamination_assets
from synth_assets.exercises import code_exercises
from synth_assets.filter import filtered_textbook
from synth_assets.ingest import raw_stack_plus
from synth_assets.release import training_data_release
from synth_assets.reports import cost_report
from synth_assets.textbook import synthetic_textbook, textbook_prompts

main_job = dg.define_asset_job(
    "main_job",
    selection=dg.AssetSelection.all(),
    description="Materialize the whole graph (the README's `make demo`).",
)

defs = dg.Definitions(
    assets=[
        raw_stack_plus,
        annotated_sample,
        quality_classifier,
        filtered_textbook,
        textbook_prompts,
        synthetic_textbook,
        code_exercises,
        *decontamination_assets,
        cost_report,
        training_data_release,
    ],
    asset_checks=all_asset_checks,
    jobs=[main_job, *all_jobs],
    sensors=all_sensors,
    schedules=all_schedules,
    resources={
        "warehouse": Warehouse(),
        "llm": LLMResource(),
    },
)
