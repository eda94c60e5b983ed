"""`evol_instruct`: Evol-Instruct (WizardLM, Xu et al. 2023) on the shipped seed tasks.

Every round, each chain's current instruction is evolved by one operation drawn
uniformly from in-depth (add constraints, deepening, concretizing, increase reasoning)
and in-breadth (a new, rarer prompt in the same domain), the evolved instruction is
answered, and the evolution is eliminated (section 3.3) when:

1. it gives no information gain over its parent (the LLM judges the two "Equal", as
   WizardLM asks ChatGPT, or on the bundled model ROUGE-L >= 0.9; or the text is unchanged);
2. the response contains "sorry" and is shorter than 80 words (the model struggled);
3. the response holds only punctuation and stop words;
4. the instruction copies words from the evolving prompt ("#Rewritten Prompt#", "given
   prompt", ...);

plus Self-Instruct's length floor (fewer than 4 words, e.g. a bare "{", is no instruction).

A successful evolution is a row and becomes the chain's current instruction; a failed
one leaves the chain as it was, to be tried again next round ("placed back as they are").
"""

import random
import re
import string
from dataclasses import dataclass, field

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
from synth_assets.instructions.evol_prompts import (
    COPIED_PROMPT_WORDS, DEFAULT_OPERATIONS, METHODS, EvolvedPrompt, Equality, equality_messages, evolve_messages,
    response_messages,
)
from synth_assets.instructions.execution import ExecutionConfig, attach_code_verdicts
from synth_assets.instructions.filters import MIN_WORDS
from synth_assets.instructions.rouge import rouge_l
from synth_assets.instructions.rows import (
    REJECT_SCHEMA, complete_json, failure_reason, instruction_id, instruction_metadata, llm_columns, reject, table_schema,
)
from synth_assets.instructions.seed_pool import SeedTask, load_seed_tasks

METHOD = "evol_instruct"
TABLE = "evol_instruct"
REJECTS_TABLE = "evol_instruct_rejects"
PROMPT_VERSION = "evol-instruct-v1"
CODE_VERSION = f"evol_instruct-2+{PROMPT_VERSION}"
# Character bounds the local model's grammar enforces on an evolved prompt (rows.grammar_bounded).
LOCAL_PROMPT_LENGTHS = {"prompt": (15, 400)}
REFUSAL_MAX_WORDS = 80  # WizardLM rule 2: "sorry" in a response shorter than 80 words
# A small English stop-word list for rule 3 (a response of nothing but these is empty).
STOP_WORDS = frozenset(
    "a an the and or but if then else of to in on at by for with from as is are was were be been being it its this "
    "that these those i you he she we they me him her us them my your our their what which who whom how why when "
    "where there here not no yes so do does did done can could would should will shall may might must just also "
    "very too only than such all any some each more most other into out up down over under again about".split()
)

EXTRA_SCHEMA = {
    "seed_task_id": pl.Utf8, "round": pl.Int64, "operation": pl.Utf8, "depth": pl.Int64,
    "parent_id": pl.Utf8, "parent_instruction": pl.Utf8, "chain": pl.List(pl.Utf8), "chain_operations": pl.List(pl.Utf8),
    "evolve_cache_key": pl.Utf8, "equality_cache_key": pl.Utf8,
}
SCHEMA = table_schema(EXTRA_SCHEMA)


class EvolInstructConfig(ExecutionConfig):
    n_seeds: int = Field(default=8, description="Seed tasks evolved (a seeded sample of the shipped pool).")
    rounds: int = Field(default=4, description="Evolution rounds (WizardLM: 4 epochs, Alpaca 52k -> 250k).")
    operations: list[str] = Field(
        default=list(DEFAULT_OPERATIONS),
        description=f"Operations drawn uniformly per chain and round; WizardLM's five by default. Also: {', '.join(sorted(set(METHODS) - set(DEFAULT_OPERATIONS)))} (WizardCoder).",
    )
    seed: int = Field(default=0, description="Seed for the seed sample and the operation draws.")
    temperature: float = Field(default=1.0, description="Evolution temperature (WizardLM samples its rewrites at 1.0).")
    response_temperature: float = Field(default=0.0, description="Temperature of the responses.")
    max_tokens: int = Field(default=200, description="Completion cap for an evolved instruction.")
    response_max_tokens: int = Field(default=400, description="Completion cap for a response.")
    equality_check: str = Field(
        default="auto",
        description="Rule 1: 'llm' asks the model whether parent and child are Equal (WizardLM); 'rouge' calls them equal "
        "at ROUGE-L >= equality_rouge_l; 'auto' = 'llm' on a real endpoint, 'rouge' on the bundled 135M model (which "
        "answered 'Equal' for real evolutions).",
    )
    equality_rouge_l: float = Field(default=0.9, description="With equality_check='rouge': ROUGE-L at which an evolution adds nothing.")


@dataclass
class Chain:
    seed: SeedTask
    ids: list[str]
    texts: list[str]
    operations: list[str] = field(default_factory=list)

    @property
    def current(self) -> str:
        return self.texts[-1]


def given_prompt(task: SeedTask) -> str:
    return task.instruction + (f"\n{task.input}" if task.input else "")


def only_stop_words(text: str) -> bool:
    words = re.findall(r"[a-z0-9']+", (text or "").lower().translate(str.maketrans("", "", string.punctuation.replace("'", ""))))
    return all(word in STOP_WORDS for word in words)


_LEADING_LABEL = re.compile(r"^\s*#?\s*(?:rewritten|created)\s+prompt\s*#?\s*:\s*(?=\S)", re.IGNORECASE)
# Room for {"judgement": "Not Equal"} in a grammar-constrained answer (whitespace included).
EQUALITY_MAX_TOKENS = 30


def strip_label(text: str) -> str:
    """The evolved prompt without a leading "#Rewritten Prompt#:" label: the label is the
    answer's format, not its content. The label anywhere else still eliminates (rule 4)."""
    return _LEADING_LABEL.sub("", text, count=1).strip()


def precheck(parent: str, evolved: str) -> str | None:
    """Eliminations decided before asking for a response (rules 4 and the trivial rule 1)."""
    lowered = evolved.lower()
    copied = next((words for words in COPIED_PROMPT_WORDS if words in lowered), None)
    if copied:
        return f"copied_prompt_words: {copied}"
    words = len(evolved.split())
    if words < MIN_WORDS:  # ours, not WizardLM's: "{" or "Rewrite it" is a failed evolution
        return f"too_short: {words} words (< {MIN_WORDS})"
    if re.sub(r"\W+", " ", lowered).strip() == re.sub(r"\W+", " ", parent.lower()).strip():
        return "no_information_gain: unchanged"
    return None


def response_problem(response: str) -> str | None:
    """Rules 2 and 3 on the response."""
    words = len(response.split())
    if "sorry" in response.lower() and words < REFUSAL_MAX_WORDS:
        return f"response_is_refusal: 'sorry' in {words} words"
    if only_stop_words(response):
        return "response_only_punctuation_and_stop_words"
    return None


def evolve_round(session, chains: list[Chain], round_number: int, config: EvolInstructConfig) -> tuple[list[dict], list[dict]]:
    """One round over every chain: (rows for successful evolutions, rejects)."""
    model = session.model
    operations = [random.Random(f"{config.seed}:{c.seed.task_id}:{round_number}").choice(config.operations) for c in chains]
    evolved = complete_json(
        session,
        [ChatRequest(evolve_messages(op, c.current), temperature=config.temperature, max_tokens=config.max_tokens, row_id=c.ids[-1])
         for c, op in zip(chains, operations)],
        schema=EvolvedPrompt, local_lengths=LOCAL_PROMPT_LENGTHS,
    )
    rejects, candidates = [], []
    for chain, op, result in zip(chains, operations, evolved, strict=True):
        text = strip_label(re.sub(r"\s+", " ", result.parsed.prompt)) if result.parsed else ""
        problem = failure_reason(result) or precheck(chain.current, text)
        base = dict(round=round_number, source_id=chain.ids[-1], instruction=text or result.raw_text, cache_key=result.cache_key, model=model)
        if problem:
            rejects.append(reject(METHOD, f"evolution:{op}", problem, **base))
        else:
            candidates.append((chain, op, text, result))
    responses = session.complete(
        [ChatRequest(response_messages(text), temperature=config.response_temperature, max_tokens=config.response_max_tokens, row_id=chain.ids[-1])
         for chain, _, text, _ in candidates]
    )
    use_llm = config.equality_check == "llm" or (config.equality_check == "auto" and not session.endpoint.is_local)
    equal = complete_json(
        session,
        [ChatRequest(equality_messages(chain.current, text), temperature=0.0, max_tokens=EQUALITY_MAX_TOKENS, row_id=chain.ids[-1])
         for chain, _, text, _ in candidates],
        schema=Equality,
    ) if use_llm and candidates else [None] * len(candidates)
    rows = []
    for (chain, op, text, evolve_result), response, equality in zip(candidates, responses, equal, strict=True):
        output = (response.text or "").strip()
        base = dict(round=round_number, source_id=chain.ids[-1], instruction=text, output=output, cache_key=response.cache_key, model=model)
        if use_llm:
            problem = failure_reason(equality) and f"equality_check_failed: {failure_reason(equality)}"
            problem = problem or ("no_information_gain: judged Equal" if equality.parsed.judgement == "Equal" else None)
        else:
            similarity = rouge_l(chain.current, text)
            problem = f"no_information_gain: rouge_l {similarity:.3f}" if similarity >= config.equality_rouge_l else None
        problem = problem or failure_reason(response) or response_problem(output)
        if problem:
            rejects.append(reject(METHOD, f"elimination:{op}", problem, **base))
            continue
        row_id = instruction_id(METHOD, text, "", output)
        rows.append({
            "instruction_id": row_id, "method": METHOD, "instruction": text, "input": "", "output": output,
            "seed_task_id": chain.seed.task_id, "round": round_number, "operation": op, "depth": len(chain.texts),
            "parent_id": chain.ids[-1], "parent_instruction": chain.current, "chain": [*chain.texts, text],
            "chain_operations": [*chain.operations, op], "evolve_cache_key": evolve_result.cache_key,
            "equality_cache_key": equality.cache_key if equality else None,
            **llm_columns(response, model, PROMPT_VERSION),
        })
        chain.ids.append(row_id)
        chain.texts.append(text)
        chain.operations.append(op)
    return rows, rejects


@dg.asset(
    group_name="instructions",
    kinds={"duckdb", "python", "openai"},
    owners=["team:synth-assets"],
    code_version=CODE_VERSION,
    automation_condition=on_code_change(),
)
def evol_instruct(
    context: dg.AssetExecutionContext, config: EvolInstructConfig, warehouse: Warehouse, llm: LLMResource,
    compute: Compute,
) -> dg.MaterializeResult:
    """Instructions made step by step harder (in-depth) or broader (in-breadth) from a
    seeded sample of the shipped seed tasks, WizardLM's Evol-Instruct: `rounds` rounds,
    one uniformly drawn operation per chain and round, each surviving evolution answered
    by the LLM. One row per successful evolution: `instruction` (the evolved prompt, self-
    contained, so `input` is empty), `output` (its response), `operation`, `round`,
    `depth`, `parent_id` / `parent_instruction`, `chain` (every instruction from the seed
    to this one) and `chain_operations`. Eliminated evolutions are in
    `evol_instruct_rejects` with the rule that removed them (`no_information_gain`,
    `response_is_refusal`, `response_only_punctuation_and_stop_words`,
    `copied_prompt_words`, or a failed call); their chain retries from the parent in the
    next round. Python in responses is parsed and its asserts are run in the sandbox."""
    settings_from = settings_origin(config, "evol_instruct")  # before the merge: what the launchpad set
    config = with_settings(config, "evol_instruct")
    unknown = sorted(set(config.operations) - set(METHODS))
    if unknown or config.equality_check not in ("auto", "llm", "rouge"):
        raise dg.Failure(f"evol_instruct: unknown operations {unknown} or equality_check {config.equality_check!r}")
    seeds = load_seed_tasks()
    sample = random.Random(config.seed).sample(list(seeds), min(config.n_seeds, len(seeds)))
    chains = [Chain(task, [task.task_id], [given_prompt(task)]) for task in sample]
    rows, rejects = [], []
    with warehouse.materialization(context) as lake:
        with llm.session(context, warehouse) as driver, on_cluster(driver, lasting_compute(compute)) as session:
            session.log_estimate(len(chains) * config.rounds * 3, 400, config.response_max_tokens)
            for round_number in range(1, config.rounds + 1):
                round_rows, round_rejects = evolve_round(session, chains, round_number, config)
                rows += round_rows
                rejects += round_rejects
            llm_metadata = {**session.metadata(), "compute": session.engine}
        report = attach_code_verdicts(rows, config)
        lake.write_table(TABLE, pl.DataFrame(rows, schema=SCHEMA))
        lake.write_table(REJECTS_TABLE, pl.DataFrame(rejects, schema=REJECT_SCHEMA))
        context.log.info(f"evol_instruct: {len(rows)} evolutions kept, {len(rejects)} eliminated")
    metadata = {
        "chains": len(chains),
        "settings_origin": dg.MetadataValue.json(settings_from),
        "max_depth": max((row["depth"] for row in rows), default=0),
        "rows_by_operation": dg.MetadataValue.json({op: sum(1 for r in rows if r["operation"] == op) for op in config.operations}),
        "prompt_version": PROMPT_VERSION,
        **instruction_metadata(rows, rejects, report),
        **llm_metadata,
    }
    return table_result(warehouse, TABLE, metadata, snapshot_id=lake.snapshot_id_published)
