"""`alpaca_instructions`: Alpaca-style generation (Taori et al. 2023): instruction, input
and output written in one call, then Self-Instruct's filters.

Alpaca's `generate_instruction.py` shows 3 seed tasks (`num_prompt_instructions=3`), lists
its requirements (diverse verbs and task types, 1-2 sentence instructions, an input that
is a concrete example or empty, an output under 100 words), samples at temperature 1.0,
and keeps a task when its ROUGE-L with every pool instruction is below 0.7 and it passes
the length and blacklist filters. Alpaca asks for 20 tasks per call to share the
prompt; here each call asks for one, with its own seeded topic/subtopic (the synthesis
catalog) and persona, so every call is a separate diversity draw and a small model only
has to fill one object.
"""

import random
from dataclasses import dataclass

import dagster as dg
import polars as pl
from pydantic import BaseModel, Field

from resources.compute import Compute
from resources.llm import ChatRequest, LLMResource
from resources.llm.batches import on_cluster
from resources.warehouse import Warehouse
from synth_assets.automation import on_code_change
from synth_assets.common.tables import table_result
from synth_assets.settings import lasting_compute, settings_origin, with_settings
from synth_assets.instructions.execution import ExecutionConfig, attach_code_verdicts
from synth_assets.instructions.filters import (
    DEFAULT_BLACKLIST, MAX_WORDS, MIN_WORDS, ROUGE_L_THRESHOLD, InstructionFilter, instance_rejection, screen_instruction,
)
from synth_assets.instructions.rouge import RougePool
from synth_assets.instructions.rows import (
    REJECT_SCHEMA, complete_json, candidate_id, failure_reason, instruction_id, instruction_metadata, llm_columns, reject, table_schema,
)
from synth_assets.instructions.seed_pool import SeedTask, load_seed_tasks
from synth_assets.synthesis.prompt_plans import content_id, load_catalog

METHOD = "alpaca"
TABLE = "alpaca_instructions"
REJECTS_TABLE = "alpaca_instructions_rejects"
PROMPT_VERSION = "alpaca-v1"
CODE_VERSION = f"alpaca_instructions-2+{PROMPT_VERSION}"
# Character bounds the local model's grammar enforces (rows.grammar_bounded).
LOCAL_LENGTHS = {"instruction": (15, 250), "input": (0, 300), "output": (1, 500)}
SYSTEM_PROMPT = "You write programming tasks and their answers for a Python course. Answer only with JSON."

EXTRA_SCHEMA = {
    "plan_id": pl.Utf8, "topic": pl.Utf8, "subtopic": pl.Utf8, "persona": pl.Utf8,
    "in_context_ids": pl.List(pl.Utf8), "rouge_l": pl.Float64, "most_similar_id": pl.Utf8,
}
SCHEMA = table_schema(EXTRA_SCHEMA)


class AlpacaTask(BaseModel):
    instruction: str = Field(description="the task, 1 to 2 sentences")
    input: str = Field(description="a concrete example input (code, data or a value), or an empty string")
    output: str = Field(description="a correct answer to the instruction and input, under 100 words")


class AlpacaConfig(ExecutionConfig):
    n_requests: int = Field(default=24, description="Generation calls, one task each.")
    n_in_context: int = Field(default=3, description="Seed tasks shown per call (Alpaca: num_prompt_instructions=3).")
    seed: int = Field(default=0, description="Seed for topic, persona and example draws.")
    temperature: float = Field(default=1.0, description="Sampling temperature (Alpaca: 1.0).")
    max_tokens: int = Field(default=400, description="Completion cap per task.")
    rouge_l_threshold: float = Field(default=ROUGE_L_THRESHOLD, description="Drop a task whose ROUGE-L with any pool instruction is >= this (Alpaca: 0.7).")
    min_words: int = Field(default=MIN_WORDS, description="Drop instructions with fewer words (Self-Instruct/Alpaca: <= 3 dropped).")
    max_words: int = Field(default=MAX_WORDS, description="Drop instructions with more words (150).")
    blacklist: list[str] = Field(default=list(DEFAULT_BLACKLIST), description="Drop instructions containing any of these words (Alpaca's list minus graph/file/map).")


@dataclass(frozen=True)
class AlpacaPlan:
    plan_id: str
    topic: str
    subtopic: str
    persona: str
    in_context_ids: tuple[str, ...]


def plan_requests(seeds: list[SeedTask], n_requests: int, n_in_context: int, seed: int) -> list[AlpacaPlan]:
    """Seeded slots: topics without replacement while they last, a persona, in-context seeds."""
    catalog = load_catalog()
    rng = random.Random(seed)
    order = rng.sample(range(len(catalog.topics)), len(catalog.topics))
    plans = []
    for index in range(n_requests):
        topic, subtopics = catalog.topics[order[index % len(order)]]
        slots = {
            "topic": topic, "subtopic": rng.choice(subtopics), "persona": rng.choice(catalog.personas),
            "in_context_ids": sorted(t.task_id for t in rng.sample(seeds, min(n_in_context, len(seeds)))),
            "index": index,
        }
        plans.append(AlpacaPlan(content_id(slots), slots["topic"], slots["subtopic"], slots["persona"], tuple(slots["in_context_ids"])))
    return plans


def build_messages(plan: AlpacaPlan, seeds_by_id: dict[str, SeedTask]) -> list[dict]:
    examples = "\n\n".join(
        f"{n}. Instruction: {t.instruction}\nInput: {t.input or '<noinput>'}\nOutput: {t.output}"
        for n, t in enumerate((seeds_by_id[i] for i in plan.in_context_ids), start=1)
    )
    user = (
        "You are asked to come up with one new task for a Python programming course, with its input and output.\n"
        "Requirements:\n"
        f"1. The task is about {plan.topic} ({plan.subtopic}) and written for {plan.persona}.\n"
        "2. Do not reuse the verbs of the examples; the task must differ from them.\n"
        "3. The instruction is 1 to 2 sentences, an imperative or a question.\n"
        "4. The input is a concrete example (code, data or a value), or empty if the task needs none.\n"
        "5. The output correctly answers the instruction for that input, in under 100 words; code goes in ```python fences.\n"
        f"Examples:\n{examples}\n\nGive JSON with instruction, input and output."
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def alpaca_rows(plans: list[AlpacaPlan], results: list, seeds: list[SeedTask], rules: InstructionFilter, model: str) -> tuple[list[dict], list[dict]]:
    """Screen each answer in plan order against the growing pool; (rows, rejects)."""
    pool = RougePool()
    for task in seeds:
        pool.add(task.task_id, task.instruction)
    rows, rejects = [], []
    for plan, result in zip(plans, results, strict=True):
        base = dict(source_id=plan.plan_id, cache_key=result.cache_key, model=model)
        failed = failure_reason(result)
        if failed:
            rejects.append(reject(METHOD, "generation", f"{failed}: {result.error or ''}".strip(), output=result.raw_text, **base))
            continue
        task = result.parsed
        instruction, input_text, output = task.instruction.strip(), task.input.strip(), task.output.strip()
        if input_text.lower() in ("<noinput>", "none", "n/a"):
            input_text = ""
        fields = dict(instruction=instruction, input=input_text, output=output, **base)
        problem = instance_rejection(input_text, output)
        screened = None if problem else screen_instruction(instruction, candidate_id(METHOD, instruction), pool, rules)
        if problem or screened.reason:
            stage = "instance_filter" if problem else "instruction_filter"
            rejects.append(reject(METHOD, stage, problem or screened.reason, rouge_l=screened and screened.rouge_l,
                                  most_similar_id=screened and screened.most_similar_id, **fields))
            continue
        rows.append({
            "instruction_id": instruction_id(METHOD, instruction, input_text, output), "method": METHOD,
            "instruction": instruction, "input": input_text, "output": output,
            "plan_id": plan.plan_id, "topic": plan.topic, "subtopic": plan.subtopic, "persona": plan.persona,
            "in_context_ids": list(plan.in_context_ids), "rouge_l": screened.rouge_l, "most_similar_id": screened.most_similar_id,
            **llm_columns(result, model, PROMPT_VERSION),
        })
    return rows, rejects


@dg.asset(
    group_name="instructions",
    kinds={"duckdb", "python", "openai"},
    owners=["team:synth-assets"],
    code_version=CODE_VERSION,
    automation_condition=on_code_change(),
)
def alpaca_instructions(
    context: dg.AssetExecutionContext, config: AlpacaConfig, warehouse: Warehouse, llm: LLMResource,
    compute: Compute,
) -> dg.MaterializeResult:
    """Instruction/input/output rows written by the LLM in one call each, Alpaca-style:
    every call gets a seeded topic and subtopic from the synthesis catalog, a persona, and
    3 shipped seed tasks as examples. A task is dropped (kept in
    `alpaca_instructions_rejects` with its reason) when the call failed, the output is
    empty or repeats the input, the instruction is too short/long or blacklisted, or its
    ROUGE-L with a seed or an earlier kept task is >= 0.7. Python in the output is parsed
    and its asserts are run in the sandbox (`has_code`, `code_parses`, `n_asserts`,
    `sandbox_passed`, `sandbox_reason`)."""
    settings_from = settings_origin(config, "alpaca_instructions")  # before the merge: what the launchpad set
    config = with_settings(config, "alpaca_instructions")
    seeds = list(load_seed_tasks())
    plans = plan_requests(seeds, config.n_requests, config.n_in_context, config.seed)
    by_id = {t.task_id: t for t in seeds}
    rules = InstructionFilter(config.min_words, config.max_words, tuple(config.blacklist), config.rouge_l_threshold)
    with warehouse.materialization(context) as lake:
        requests = [
            ChatRequest(build_messages(p, by_id), temperature=config.temperature, max_tokens=config.max_tokens, row_id=p.plan_id)
            for p in plans
        ]
        with llm.session(context, warehouse) as driver, on_cluster(driver, lasting_compute(compute)) as session:
            session.log_estimate(len(requests), 450, config.max_tokens)
            results = complete_json(session, requests, schema=AlpacaTask, local_lengths=LOCAL_LENGTHS)
            rows, rejects = alpaca_rows(plans, results, seeds, rules, session.model)
            llm_metadata = {**session.metadata(), "compute": session.engine}
        report = attach_code_verdicts(rows, config)
        lake.write_table(TABLE, pl.DataFrame(rows, schema=SCHEMA))
        lake.write_table(REJECTS_TABLE, pl.DataFrame(rejects, schema=REJECT_SCHEMA))
        context.log.info(f"alpaca_instructions: {len(rows)} rows, {len(rejects)} rejected")
    metadata = {
        "planned": len(plans),
        "settings_origin": dg.MetadataValue.json(settings_from),
        "distinct_topics": len({row["topic"] for row in rows}),
        "prompt_version": PROMPT_VERSION,
        **instruction_metadata(rows, rejects, report),
        **llm_metadata,
    }
    return table_result(warehouse, TABLE, metadata, snapshot_id=lake.snapshot_id_published)
