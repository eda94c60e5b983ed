"""`self_instruct`: Self-Instruct (Wang et al. 2023) over a seed pool of coding tasks.

Each round draws in-context tasks from the pool (8 per request: 6 seed + 2 generated once
there are generated ones, section 2.3), asks for one new instruction per request (Self-
Instruct asks for up to 8; one keeps a small model's answer short), and screens every
candidate: length, blacklist and first-character filters, then ROUGE-L < 0.7 against
every instruction already in the pool (seeds included). Accepted instructions join the
pool at once, so later candidates and later rounds see them. Afterwards each accepted
instruction is classified (classification = finite output labels or not) and gets an
instance: output-first for classification tasks, input-first otherwise.
"""


import random
from dataclasses import dataclass

import dagster as dg
import polars as pl
from pydantic import Field

from resources.compute import Compute
from resources.llm import ChatRequest, LLMResource
from resources.llm.batches import on_cluster
from resources.warehouse import Warehouse
from synth_assets.automation import on_code_change
from synth_assets.common.tables import table_result
from synth_assets.settings import lasting_compute, settings_origin, with_settings
from synth_assets.instructions.execution import ExecutionConfig, attach_code_verdicts
from synth_assets.instructions.filters import (
    DEFAULT_BLACKLIST, MAX_WORDS, MIN_WORDS, ROUGE_L_THRESHOLD, InstructionFilter, clean_candidate, instance_rejection,
    screen_instruction,
)
from synth_assets.instructions.rouge import RougePool
from synth_assets.instructions.rows import (
    REJECT_SCHEMA, complete_json, candidate_id, failure_reason, instruction_id, instruction_metadata, llm_columns, reject, table_schema,
)
from synth_assets.instructions.seed_pool import SeedTask, exercise_seed_tasks, load_seed_tasks
from synth_assets.instructions.self_instruct_prompts import (
    LOCAL_INSTANCE_LENGTHS, LOCAL_TASK_LENGTHS, InputFirstInstance, NewTask, OutputFirstInstance, TaskType,
    classification_messages, generation_messages, instance_messages,
)

METHOD = "self_instruct"
TABLE = "self_instruct"
REJECTS_TABLE = "self_instruct_rejects"
PROMPT_VERSION = "self-instruct-v2"
CODE_VERSION = f"self_instruct-2+{PROMPT_VERSION}"
N_CLASSIFICATION_SHOTS = 4  # 2 classification + 2 generation seed tasks per classification prompt
N_INSTANCE_SHOTS = 2  # seed tasks of the same type shown when writing an instance

EXTRA_SCHEMA = {
    "round": pl.Int64, "is_classification": pl.Boolean, "instance_order": pl.Utf8,
    "in_context_ids": pl.List(pl.Utf8), "rouge_l": pl.Float64, "most_similar_id": pl.Utf8,
    "instruction_cache_key": pl.Utf8, "classification_cache_key": pl.Utf8,
}
SCHEMA = table_schema(EXTRA_SCHEMA)


class SelfInstructConfig(ExecutionConfig):
    rounds: int = Field(default=2, description="Generation rounds; the pool grows after every accepted instruction.")
    requests_per_round: int = Field(
        default=8, description="Generation requests per round, one new task each (a Self-Instruct request yields up to 8)."
    )
    n_in_context: int = Field(default=8, description="Pool tasks shown per request (Self-Instruct: 8).")
    n_machine_in_context: int = Field(
        default=2, description="Of those, generated tasks once the pool has any (Self-Instruct: 2 of 8)."
    )
    n_exercise_seeds: int = Field(
        default=0, description="Also seed the pool with up to this many passing decontaminated exercises."
    )
    seed: int = Field(default=0, description="Seed for the in-context draws.")
    temperature: float = Field(default=0.7, description="Instruction generation temperature (Self-Instruct: 0.7).")
    instance_temperature: float = Field(default=0.0, description="Classification and instance temperature (Self-Instruct: 0).")
    max_tokens: int = Field(default=100, description="Completion cap for one request's new instruction.")
    instance_max_tokens: int = Field(default=300, description="Completion cap for one instance (Self-Instruct: 300).")
    rouge_l_threshold: float = Field(default=ROUGE_L_THRESHOLD, description="Drop a candidate whose ROUGE-L with any pool instruction is >= this (Self-Instruct: 0.7).")
    min_words: int = Field(default=MIN_WORDS, description="Drop instructions with fewer words (Self-Instruct: <= 3 dropped).")
    max_words: int = Field(default=MAX_WORDS, description="Drop instructions with more words (Self-Instruct: 150).")
    blacklist: list[str] = Field(default=list(DEFAULT_BLACKLIST), description="Drop instructions containing any of these words (Self-Instruct + Alpaca, minus graph/file/map).")

    def filter_rules(self) -> InstructionFilter:
        return InstructionFilter(self.min_words, self.max_words, tuple(self.blacklist), self.rouge_l_threshold)


@dataclass(frozen=True)
class PoolTask:
    """A generated instruction accepted into the pool."""

    task_id: str
    instruction: str
    round: int
    in_context_ids: tuple[str, ...]
    rouge_l: float | None
    most_similar_id: str | None
    cache_key: str


def draw_in_context(rng: random.Random, seeds: list[SeedTask], machine: list[PoolTask], n_total: int, n_machine: int) -> list[tuple[str, str]]:
    """(id, instruction) pairs: `n_machine` generated tasks when there are any, seeds for the
    rest, shuffled (Self-Instruct samples 6 human + 2 machine tasks for each prompt)."""
    chosen_machine = rng.sample(machine, min(n_machine, len(machine)))
    chosen_seeds = rng.sample(seeds, min(n_total - len(chosen_machine), len(seeds)))
    drawn = [(t.task_id, t.instruction) for t in chosen_seeds] + [(t.task_id, t.instruction) for t in chosen_machine]
    rng.shuffle(drawn)
    return drawn


def generate_pool(session, seeds: list[SeedTask], config: SelfInstructConfig) -> tuple[list[PoolTask], list[dict], list[int]]:
    """The rounds: (accepted generated tasks in order, rejected candidates, pool size after each round)."""
    rules = config.filter_rules()
    pool = RougePool()
    for task in seeds:
        pool.add(task.task_id, task.instruction)
    machine: list[PoolTask] = []
    rejects: list[dict] = []
    pool_sizes = []
    for round_number in range(1, config.rounds + 1):
        rng = random.Random(f"{config.seed}:{round_number}")
        contexts = [
            draw_in_context(rng, seeds, machine, config.n_in_context, config.n_machine_in_context)
            for _ in range(config.requests_per_round)
        ]
        requests = [
            ChatRequest(generation_messages([text for _, text in context]), temperature=config.temperature,
                        max_tokens=config.max_tokens, sample_index=position, row_id=f"round{round_number}-{position}")
            for position, context in enumerate(contexts)
        ]
        answers = complete_json(session, requests, schema=NewTask, local_lengths=LOCAL_TASK_LENGTHS)
        for context, result in zip(contexts, answers, strict=True):
            failed = failure_reason(result)
            if failed:
                rejects.append(reject(METHOD, "instruction_generation", f"{failed}: {result.error or ''}".strip(),
                                      round=round_number, output=result.raw_text or result.text, cache_key=result.cache_key,
                                      model=session.model))
                continue
            text = clean_candidate(result.parsed.instruction)
            task_id = candidate_id(METHOD, text)
            screened = screen_instruction(text, task_id, pool, rules)
            if screened.reason:
                rejects.append(reject(METHOD, "instruction_filter", screened.reason, candidate_id=task_id,
                                      round=round_number, instruction=text, rouge_l=screened.rouge_l,
                                      most_similar_id=screened.most_similar_id, cache_key=result.cache_key,
                                      model=session.model))
                continue
            machine.append(PoolTask(task_id, text, round_number, tuple(i for i, _ in context),
                                    screened.rouge_l, screened.most_similar_id, result.cache_key))
        pool_sizes.append(len(pool))
    return machine, rejects, pool_sizes


def shots(seeds: list[SeedTask], is_classification: bool, count: int, rng: random.Random) -> list[SeedTask]:
    matching = [t for t in seeds if t.is_classification == is_classification and t.source == "seed"] or seeds
    return rng.sample(matching, min(count, len(matching)))


def classify_and_instantiate(session, tasks: list[PoolTask], seeds: list[SeedTask], config: SelfInstructConfig) -> tuple[list[dict], list[dict]]:
    """Classification identification, then one instance per task (output-first for
    classification tasks). Returns (rows without code verdicts, rejects)."""
    rng = random.Random(f"{config.seed}:instances")
    classification_shots = [
        shots(seeds, True, N_CLASSIFICATION_SHOTS // 2, rng) + shots(seeds, False, N_CLASSIFICATION_SHOTS // 2, rng)
        for _ in tasks
    ]
    kinds = complete_json(
        session,
        [ChatRequest(classification_messages(t.instruction, examples), temperature=config.instance_temperature,
                     max_tokens=20, row_id=t.task_id) for t, examples in zip(tasks, classification_shots)],
        schema=TaskType,
    )
    rows: list[dict] = []
    rejects: list[dict] = []
    typed = []
    for task, kind in zip(tasks, kinds, strict=True):
        failed = failure_reason(kind)
        if failed:
            rejects.append(reject(METHOD, "classification", failed, candidate_id=task.task_id, round=task.round,
                                  instruction=task.instruction, cache_key=kind.cache_key, model=session.model))
        else:
            typed.append((task, kind))
    requests = [
        ChatRequest(instance_messages(t.instruction, k.parsed.is_classification, shots(seeds, k.parsed.is_classification, N_INSTANCE_SHOTS, rng)),
                    temperature=config.instance_temperature, max_tokens=config.instance_max_tokens, row_id=t.task_id)
        for t, k in typed
    ]
    output_first = [i for i, (_, k) in enumerate(typed) if k.parsed.is_classification]
    input_first = [i for i, (_, k) in enumerate(typed) if not k.parsed.is_classification]
    instances: dict[int, object] = {}
    for positions, schema in ((output_first, OutputFirstInstance), (input_first, InputFirstInstance)):
        answers = complete_json(session, [requests[i] for i in positions], schema=schema, local_lengths=LOCAL_INSTANCE_LENGTHS) if positions else []
        instances.update(zip(positions, answers))
    for position, (task, kind) in enumerate(typed):
        result = instances[position]
        base = dict(candidate_id=task.task_id, round=task.round, instruction=task.instruction,
                    cache_key=result.cache_key, model=session.model)
        failed = failure_reason(result)
        if failed:
            rejects.append(reject(METHOD, "instance_generation", failed, output=result.raw_text, **base))
            continue
        input_text, output = result.parsed.input.strip(), result.parsed.output.strip()
        problem = instance_rejection(input_text, output)
        if problem:
            rejects.append(reject(METHOD, "instance_filter", problem, input=input_text, output=output, **base))
            continue
        rows.append({
            "instruction_id": instruction_id(METHOD, task.instruction, input_text, output), "method": METHOD,
            "instruction": task.instruction, "input": input_text, "output": output,
            "round": task.round, "is_classification": kind.parsed.is_classification,
            "instance_order": "output_first" if kind.parsed.is_classification else "input_first",
            "in_context_ids": list(task.in_context_ids), "rouge_l": task.rouge_l, "most_similar_id": task.most_similar_id,
            "instruction_cache_key": task.cache_key, "classification_cache_key": kind.cache_key,
            **llm_columns(result, session.model, PROMPT_VERSION),
        })
    return rows, rejects


@dg.asset(
    group_name="instructions",
    kinds={"duckdb", "python", "openai"},
    owners=["team:synth-assets"],
    code_version=CODE_VERSION,
    automation_condition=on_code_change(),
)
def self_instruct(
    context: dg.AssetExecutionContext, config: SelfInstructConfig, warehouse: Warehouse, llm: LLMResource,
    compute: Compute,
) -> dg.MaterializeResult:
    """Instruction/input/output rows made by Self-Instruct from the shipped seed pool of
    43 coding tasks (`synth_assets/instructions/seeds/`, optionally plus passing
    `decontaminated_exercises`). Per round, requests show 8 pool tasks (6 seed, 2
    generated) and ask for new ones; a candidate is dropped when it has 3 words or fewer
    or more than 150, contains a blacklisted word (image, video, draw, ...), starts with
    punctuation, or has ROUGE-L >= 0.7 with any pool instruction. Accepted instructions
    join the pool immediately. Each one is then classified (finite labels or not) and
    given one instance, output-first for classification tasks, input-first otherwise.

    Columns: the release layout (`instruction`, `input`, `output`), `round`,
    `is_classification`, `instance_order`, the in-context task ids, the ROUGE-L against
    the nearest pool instruction and its id, the Python verdict of the output (`has_code`,
    `code_parses`, `n_asserts`, `sandbox_passed`, `sandbox_reason`: asserts are run in the
    sandbox) and the cache keys of all three calls. Every dropped candidate is in
    `self_instruct_rejects` with its stage and reason (e.g. `rouge_l: 0.812 >= 0.7`)."""
    settings_from = settings_origin(config, "self_instruct")  # before the merge: what the launchpad set
    config = with_settings(config, "self_instruct")
    with warehouse.materialization(context) as lake:
        seeds = list(load_seed_tasks()) + exercise_seed_tasks(lake, config.n_exercise_seeds)
        with llm.session(context, warehouse) as driver, on_cluster(driver, lasting_compute(compute)) as session:
            n_calls = config.rounds * config.requests_per_round
            session.log_estimate(n_calls * 3, 350, config.max_tokens)
            machine, rejects, pool_sizes = generate_pool(session, seeds, config)
            rows, instance_rejects = classify_and_instantiate(session, machine, seeds, config)
            llm_metadata = {**session.metadata(), "compute": session.engine}
        rejects += instance_rejects
        report = attach_code_verdicts(rows, config)
        lake.write_table(TABLE, pl.DataFrame(rows, schema=SCHEMA))
        lake.write_table(REJECTS_TABLE, pl.DataFrame(rejects, schema=REJECT_SCHEMA))
        context.log.info(f"self_instruct: {len(rows)} rows, {len(rejects)} rejected, pool sizes {pool_sizes}")
    metadata = {
        "seed_tasks": len(seeds),
        "settings_origin": dg.MetadataValue.json(settings_from),
        "pool_size_by_round": dg.MetadataValue.json(pool_sizes),
        "generated_instructions": len(machine),
        "classification_rows": sum(1 for row in rows if row["is_classification"]),
        "prompt_version": PROMPT_VERSION,
        **instruction_metadata(rows, rejects, report),
        **llm_metadata,
    }
    return table_result(warehouse, TABLE, metadata, snapshot_id=lake.snapshot_id_published)
