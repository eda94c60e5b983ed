"""The one entry point: every asset, check, sensor, schedule, job and resource of synth-assets.

Nothing else happens here. The DAG, in the order the groups are listed:

    raw_stack_plus ─> annotated_sample ─> quality_classifier ─> filtered_textbook ───────┐
    raw_stack_plus ─> personas ─> textbook_prompts ─> synthetic_textbook ────────────────┤
    raw_stack_plus ─> code_exercises ─> contamination_report ─> decontaminated_exercises ┼─> training_data_release
    raw_stack_plus ─> case2code ─────────────────────────────────────────────────────────┘
    synthetic_textbook ─> textbook_contamination_report (its code blocks against HumanEval)
    personas, case2code ─> synthesis_contamination_report (programs and personas against HumanEval)
    self_instruct, alpaca_instructions, self_qa (filtered_textbook), evol_instruct ─> instructions_contamination_report
    synthetic_textbook, code_exercises, the four instruction tables ─> llm_judge ─> training_data_release
    (every LLM-using asset) ─> cost_report
    (every table the lineage joins read) ─> lineage_views

    personas, code_exercises and case2code depend on raw_stack_plus (so a plan depends
    only on its configuration and its declared inputs) but are automated on code
    changes only, so a corpus refresh never sets off paid regeneration by itself.
"""

from __future__ import annotations

import dagster as dg

from quality_checks.checks import all_asset_checks
from resources.compute import Compute
from resources.llm import LLMResource
from resources.warehouse import Warehouse
from synth_assets.automation import automation_sensor
from synth_assets.decontamination.contamination_report import contamination_report
from synth_assets.decontamination.decontaminated_exercises import decontaminated_exercises
from synth_assets.decontamination.instructions_contamination_report import instructions_contamination_report
from synth_assets.decontamination.synthesis_contamination_report import synthesis_contamination_report
from synth_assets.decontamination.textbook_contamination_report import textbook_contamination_report
from synth_assets.filtering.annotated_sample import annotated_sample
from synth_assets.filtering.corpus_scores import corpus_scores
from synth_assets.filtering.filtered_textbook import filtered_textbook
from synth_assets.filtering.quality_classifier import quality_classifier
from synth_assets.ingest.corpus_sensor import corpus_change_sensor
from synth_assets.ingest.corpus_shards import corpus_shards
from synth_assets.ingest.raw_stack_plus import raw_stack_plus
from synth_assets.instructions.alpaca_instructions import alpaca_instructions
from synth_assets.instructions.evol_instruct import evol_instruct
from synth_assets.instructions.llm_judge import llm_judge
from synth_assets.instructions.self_instruct import self_instruct
from synth_assets.instructions.self_qa import self_qa
from synth_assets.reports.cost_report import cost_report
from synth_assets.reports.lake_maintenance import lake_maintenance_job, nightly_lake_maintenance_schedule
from synth_assets.reports.lineage_views import lineage_views
from synth_assets.reports.schedules import cost_report_job, daily_cost_report_schedule
from synth_assets.reports.training_data_release import training_data_release
from synth_assets.synthesis.case2code import case2code
from synth_assets.synthesis.code_exercises import code_exercises
from synth_assets.synthesis.personas import personas
from synth_assets.synthesis.synthetic_textbook import synthetic_textbook
from synth_assets.synthesis.textbook_prompts import textbook_prompts

main_job = dg.define_asset_job(
    "main_job",
    # corpus_shards and corpus_scores are partitioned by shard (a run per shard, or a
    # backfill); raw_stack_plus and filtered_textbook do the shards no run has done yet
    # themselves, so the whole graph runs in one job.
    selection=dg.AssetSelection.all() - dg.AssetSelection.assets(corpus_shards, corpus_scores),
    description="Materialize the whole graph (the README's `make demo`).",
)

defs = dg.Definitions(
    assets=[
        # ingest
        corpus_shards,
        raw_stack_plus,
        # filtering
        annotated_sample,
        corpus_scores,
        quality_classifier,
        filtered_textbook,
        # synthesis
        personas,
        textbook_prompts,
        synthetic_textbook,
        code_exercises,
        case2code,
        # instructions
        self_instruct,
        alpaca_instructions,
        self_qa,
        evol_instruct,
        llm_judge,
        # decontamination
        contamination_report,
        decontaminated_exercises,
        textbook_contamination_report,
        instructions_contamination_report,
        synthesis_contamination_report,
        # reports
        cost_report,
        lineage_views,
        training_data_release,
    ],
    asset_checks=all_asset_checks,
    jobs=[main_job, cost_report_job, lake_maintenance_job],
    sensors=[automation_sensor, corpus_change_sensor],
    schedules=[daily_cost_report_schedule, nightly_lake_maintenance_schedule],
    resources={
        "warehouse": Warehouse(),
        "llm": LLMResource(),
        # in-process; RAY_ADDRESS or the settings' [compute] table name a cluster, or nest a
        # dagster-ray resource: Compute(ray_cluster=KubeRayInteractiveJob(...)) (README "Many machines")
        "compute": Compute(),
    },
)
