"""`case2code`: Case2Code samples (Shao et al. 2024): a real function from the corpus,
inputs for it, the outputs the sandbox really computed, and a prompt that shows some of
the pairs and asks for the function.

Steps (each a plain function, tested directly):
1. rules pick functions from sampled `raw_stack_plus` files (case2code_functions.py);
2. the LLM proposes about ten inputs per function (Case2Code uses a small LLM here: the
   inputs only need to be plausible, the interpreter decides what they produce);
   the interpreter adds inputs from the parameter names until there are `n_inputs`;
3. the sandbox calls the function on each input (observed_calls.py);
4. functions are dropped, with a reason, when no call returned, when every output is
   the same, or when an output is longer than `max_output_chars`;
5. one of ten templates renders m <= n observed pairs into the prompt
   (case2code_prompts.py).
"""


import hashlib
import json
import math
import random
from collections import Counter
from dataclasses import dataclass

import dagster as dg
import polars as pl
from pydantic import BaseModel, Field

from resources.compute import Compute
from resources.llm import ChatRequest, LLMResource, StructuredResult
from resources.llm.batches import on_cluster
from resources.warehouse import Warehouse
from synth_assets.automation import on_code_change
from synth_assets.common.sandbox import SandboxLimits, SandboxUnavailable, require_isolation
from synth_assets.common.tables import counts_markdown, table_result
from synth_assets.ingest.raw_stack_plus import raw_stack_plus
from synth_assets.settings import lasting_compute, settings_origin, with_settings
from synth_assets.synthesis.case2code_functions import LeftOutFunction, SelectedFunction, select_functions
from synth_assets.synthesis.case2code_prompts import choose_prompt
from synth_assets.synthesis.interpreter_tests import usable_arguments
from synth_assets.synthesis.observed_calls import Observation, interpreter_arguments, observe_calls
from synth_assets.synthesis.prompt_plans import sample_corpus_files

PROMPT_VERSION = "case2code-inputs-v1"
CASES_TABLE = "case2code"
REJECTS_TABLE = "case2code_rejects"
CORPUS_TABLES = ("raw_stack_plus",)


class ProposedInputs(BaseModel):
    inputs: list[str] = Field(description="example calls: the arguments of each call as Python literals")


def build_messages(function: SelectedFunction, n_inputs: int) -> list[dict]:
    example = {"inputs": ["[3, 1, 2]", "'hello', 2", "0"]}
    user = "\n".join([
        "Here is a Python function:",
        "```python",
        function.program.strip(),
        "```",
        f"Write {n_inputs} different inputs to call {function.function_name} with: the arguments of each call "
        "as Python literals, varied so the results differ.",
        f"Answer in JSON, for example: {json.dumps(example)}",
    ])
    return [{"role": "system", "content": "You write test inputs for Python functions. Answer only with JSON."},
            {"role": "user", "content": user}]


class Case2CodeConfig(dg.Config):
    n_files: int = Field(default=48, description="raw_stack_plus files sampled for functions (seeded).")
    max_functions: int = Field(default=16, description="Functions kept after the rules (seeded sample).")
    # Case2Code section 3.2: about ten inputs per function.
    n_inputs: int = Field(default=10, description="Inputs called per function (model's first, then the interpreter's).")
    # Case2Code drops over-long outputs; the sandbox verdict carries at most ~190 characters.
    max_output_chars: int = Field(default=120, description="A function with a longer output (repr) is dropped.")
    min_shown_pairs: int = Field(default=3, description="Fewest observed pairs a prompt shows (when there are that many).")
    seed: int = Field(default=0, description="Seed for file, function, template and pair choices.")
    max_tokens: int = Field(default=160, description="Completion token cap per input proposal.")
    temperature: float | None = Field(default=None, description="Sampling temperature; None = the resource's default.")
    sandbox_timeout_s: float = Field(default=2.0, description="Wall-clock limit per call.")
    sandbox_workers: int = Field(default=2, description="Calls executed concurrently (one per core).")
    allow_unisolated_execution: bool = Field(
        default=False, description="UNSAFE: run corpus code in a plain subprocess when no isolating sandbox works."
    )


def pick_functions(files: list[tuple[str, str]], max_functions: int, seed: int) -> tuple[list[SelectedFunction], list[LeftOutFunction]]:
    """Rules over every top-level function of the files; a seeded sample of those that
    qualify (a program seen twice is kept once)."""
    selected: dict[str, SelectedFunction] = {}
    left_out: list[LeftOutFunction] = []
    for doc_id, content in files:
        chosen, dropped = select_functions(doc_id, content)
        left_out += dropped
        for function in chosen:
            if function.function_id in selected:
                left_out.append(LeftOutFunction(doc_id, function.function_name, "duplicate_program"))
            else:
                selected[function.function_id] = function
    ordered = sorted(selected.values(), key=lambda f: f.function_id)
    kept = random.Random(seed).sample(ordered, min(max_functions, len(ordered)))
    return sorted(kept, key=lambda f: f.function_id), left_out


def call_lists(function: SelectedFunction, result: StructuredResult, n_inputs: int) -> tuple[list[str], int, list[str]]:
    """(argument lists to call, how many came from the model, dropped model inputs)."""
    proposed = [str(text) for text in result.parsed.inputs] if isinstance(result.parsed, ProposedInputs) else []
    calls, dropped = usable_arguments(proposed, n_inputs)
    from_model = len(calls)
    for arguments in interpreter_arguments(function.parameters, n_inputs):
        if len(calls) >= n_inputs:
            break
        if arguments not in calls:
            calls.append(arguments)
    return calls, from_model, dropped


@dataclass(frozen=True)
class Verdict:
    pairs: list[tuple[str, str]]
    reason: str | None  # None = keep


def judge(observations: list[Observation], max_output_chars: int) -> Verdict:
    """Keep the calls that returned; drop the function when none did, when the output
    never varies, or when an output is over-long."""
    pairs = [(o.arguments, o.output) for o in observations if o.ok]
    too_long = [o for o in observations if o.reason.startswith("output_too_long")]
    longest = max((len(output) for _, output in pairs), default=0)
    if too_long or longest > max_output_chars:
        length = too_long[0].reason.split(": ")[1] if too_long else f"{longest} chars"
        return Verdict([], f"output_too_long: {length}")
    if not pairs:
        first = observations[0].reason if observations else "no inputs"
        return Verdict([], f"no_successful_call: {first}")
    if len({output for _, output in pairs}) < 2:
        return Verdict([], f"constant_output: {pairs[0][1][:60]}")
    return Verdict(pairs, None)


CASE_SCHEMA = {
    "case_id": pl.Utf8, "function_id": pl.Utf8, "doc_id": pl.Utf8, "function_name": pl.Utf8, "program": pl.Utf8,
    "inputs": pl.List(pl.Utf8), "outputs": pl.List(pl.Utf8), "n_pairs": pl.Int64, "inputs_from_model": pl.Int64,
    "dropped_inputs": pl.List(pl.Utf8), "prompt": pl.Utf8, "template": pl.Utf8, "shown_pairs": pl.Int64,
    "seed": pl.Int64, "model": pl.Utf8, "prompt_version": pl.Utf8, "cache_key": pl.Utf8,
}
REJECT_SCHEMA = {"doc_id": pl.Utf8, "function_name": pl.Utf8, "function_id": pl.Utf8, "stage": pl.Utf8, "reason": pl.Utf8}


def case_rows(
    functions: list[SelectedFunction], results: list[StructuredResult], config: Case2CodeConfig, limits: SandboxLimits,
    model: str,
) -> tuple[list[dict], list[dict]]:
    plans = [call_lists(f, r, config.n_inputs) for f, r in zip(functions, results, strict=True)]
    observed = observe_calls(
        [(f.program, f.function_name, calls) for f, (calls, _, _) in zip(functions, plans)], limits, config.sandbox_workers
    )
    rows, rejects = [], []
    for function, result, (calls, from_model, dropped), observations in zip(functions, results, plans, observed, strict=True):
        verdict = judge(observations, config.max_output_chars)
        if verdict.reason:
            rejects.append({"doc_id": function.doc_id, "function_name": function.function_name,
                            "function_id": function.function_id, "stage": "execution", "reason": verdict.reason})
            continue
        prompt, template, shown = choose_prompt(function.function_id, function.function_name, verdict.pairs, config.seed,
                                                config.min_shown_pairs)
        rows.append({
            "case_id": hashlib.sha256(f"{function.function_id}\n{prompt}".encode()).hexdigest()[:16],
            "function_id": function.function_id, "doc_id": function.doc_id, "function_name": function.function_name,
            "program": function.program, "inputs": [a for a, _ in verdict.pairs], "outputs": [o for _, o in verdict.pairs],
            "n_pairs": len(verdict.pairs), "inputs_from_model": sum(1 for a, _ in verdict.pairs if a in calls[:from_model]),
            "dropped_inputs": dropped + [f"{o.arguments}: {o.reason}" for o in observations if not o.ok],
            "prompt": prompt, "template": template, "shown_pairs": shown, "seed": config.seed, "model": model,
            "prompt_version": PROMPT_VERSION, "cache_key": result.cache_key,
        })
    return rows, rejects


@dg.asset(
    group_name="synthesis",
    kinds={"duckdb", "python", "openai"},
    owners=["team:synth-assets"],
    code_version=f"case2code-1+{PROMPT_VERSION}",
    deps=[raw_stack_plus],
    automation_condition=on_code_change(),
)
def case2code(
    context: dg.AssetExecutionContext, config: Case2CodeConfig, warehouse: Warehouse, llm: LLMResource,
    compute: Compute,
) -> dg.MaterializeResult:
    """Case2Code samples (Shao et al. 2024): one row per corpus function, with `program`
    (the function and the imports it needs), `inputs` and `outputs` (canonical argument
    lists and the repr of what the function returned on each, computed by running the
    program in the sandbox, never by a model), `prompt` (one of ten templates showing
    `shown_pairs` of the `n_pairs` pairs and asking for the function) and `template`.

    Functions come from a seeded sample of `raw_stack_plus` files by rules: they parse,
    take at least one argument, return a value, and use only pure standard-library
    modules (no files, network, clocks or randomness). The LLM proposes about ten
    inputs per function (`inputs_from_model` counts those that were used); inputs
    derived from the parameter names fill up the rest. `case2code_rejects` holds every
    function left out with its stage and reason: selection (`no_arguments`,
    `no_return_value`, `uses_module_level_name: X`, `imports_impure_or_non_stdlib: X`,
    ...) or execution (`no_successful_call`, `constant_output`, `output_too_long`)."""
    origin = settings_origin(config, "case2code")  # before the merge: which values the launchpad set
    config = with_settings(config, "case2code")
    with warehouse.materialization(context) as lake:
        files = sample_corpus_files(lake, CORPUS_TABLES, config.n_files, config.seed)
        functions, left_out = pick_functions(files, config.max_functions, config.seed)
        limits = SandboxLimits(timeout_s=config.sandbox_timeout_s, cpu_s=math.ceil(config.sandbox_timeout_s) + 1,
                               allow_unisolated_execution=config.allow_unisolated_execution)
        try:  # before any paid call
            isolation = require_isolation(limits)
        except SandboxUnavailable as exc:
            raise dg.Failure(description=str(exc)) from exc
        requests = [
            ChatRequest(messages=build_messages(f, config.n_inputs), temperature=config.temperature,
                        max_tokens=config.max_tokens, row_id=f.function_id)
            for f in functions
        ]
        with llm.session(context, warehouse) as driver, on_cluster(driver, lasting_compute(compute)) as session:
            session.log_estimate(len(requests), 250, config.max_tokens)
            results = session.complete_json(requests, schema=ProposedInputs)
            rows, rejects = case_rows(functions, results, config, limits, session.model)
            rejects = [{**vars(f), "function_id": None, "stage": "selection"} for f in left_out] + rejects
            lake.write_table(CASES_TABLE, pl.DataFrame(rows, schema=CASE_SCHEMA))
            lake.write_table(REJECTS_TABLE, pl.DataFrame(rejects, schema=REJECT_SCHEMA))
            llm_metadata = {**session.metadata(), "compute": session.engine}
        reasons = Counter(f"{r['stage']}: {r['reason'].split(':')[0]}" for r in rejects)
        context.log.info(f"case2code: {len(rows)} functions kept of {len(functions)} selected from {len(files)} files")
    return table_result(
        warehouse, CASES_TABLE,
        {
            "files": len(files),
            "functions_selected": len(functions),
            "functions_kept": len(rows),
            "pairs": sum(row["n_pairs"] for row in rows),
            "inputs_from_model": sum(row["inputs_from_model"] for row in rows),
            "templates_used": len({row["template"] for row in rows}),
            "rejection_reasons": dg.MetadataValue.md(counts_markdown(dict(reasons)) if rejects else "none"),
            "sandbox_isolation": dg.MetadataValue.json(isolation),
            "prompt_version": PROMPT_VERSION,
            "settings_origin": dg.MetadataValue.json(origin),
            **llm_metadata,
        },
        snapshot_id=lake.snapshot_id_published,
    )
