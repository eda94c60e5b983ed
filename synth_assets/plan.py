"""phi-1 on paper: what each stage would take for a pool of --tokens, before anything is spent.

    python -m synth_assets.plan --tokens 35e9 --workers 64 --model gpt-4o-mini

Per stage (ingest/dedup, grading sample, classifier scoring, textbook generation,
exercise generation): documents, LLM calls, tokens, dollars (genai-prices, through
`resources.llm.pricing.price_usd`, the price every ledger row gets) and wall time on
--workers CPU workers, from the throughputs `bench/scale.py` measured (constants below;
`--throughputs bench/results/scale.json` reads a newer run). The stage sizes follow
phi-1 (Gunasekar et al. 2023, "Textbooks Are All You Need"); at --tokens 35e9 the plan is
phi-1's own. Printed beside the seed article's estimate and the same plan priced with
other models (--compare).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from resources.llm import LLMResource
from resources.llm.pricing import estimate_tokens, price_usd
from synth_assets.filtering.annotated_sample import REMOTE_MAX_CHARS, AnnotateConfig, grading_messages
from synth_assets.synthesis.code_exercises import CodeExercisesConfig
from synth_assets.synthesis.synthetic_textbook import SyntheticTextbookConfig

# phi-1 section 2.1: a ~35B-token pool (The Stack's Python + StackOverflow) filtered to ~6B.
PHI1_POOL_TOKENS = 35e9
PHI1_KEEP_TOKEN_SHARE = 6 / 35
# phi-1 section 2.1: GPT-4 annotated ~100k files, ~0.3% of the pool, with ~100M tokens:
# ~1k tokens a file, so the pool is ~35M files.
PHI1_TOKENS_PER_FILE = 1_000
# phi-1 section 2.2: "less than 1B tokens" of GPT-3.5 textbooks and ~180M tokens of
# CodeExercises, for the 35B pool; scaled with --tokens unless given.
PHI1_TEXTBOOK_TOKENS = 1e9
PHI1_EXERCISE_TOKENS = 180e6
# `estimate_tokens`' rule (resources/llm/pricing.py): four characters a token.
CHARS_PER_TOKEN = 4
# Prompt tokens per call as the assets' own `session.log_estimate` assumes them
# (synthetic_textbook: 150, code_exercises: 300); completions at the configs' caps.
TEXTBOOK_PROMPT_TOKENS = 150
EXERCISE_PROMPT_TOKENS = 300

# The seed article's estimate for phi-1 (2023 list prices): GPT-4 grading ~$3,000
# (~100M tokens at $0.03/1k), GPT-3.5 generation of 1.28B tokens ~$2,500.
SEED_ARTICLE_GRADING_USD = 3_000
SEED_ARTICLE_GENERATION_USD = 2_500
SEED_ARTICLE_GENERATED_TOKENS = 1.28e9
SEED_ARTICLE_MODELS = ("gpt-4", "gpt-3.5-turbo")

# Assumed, not measured (provider-dependent): seconds per call = first token + output at
# a decode rate. Override with --llm-seconds-per-call.
ASSUMED_FIRST_TOKEN_S = 0.5
ASSUMED_DECODE_TOKENS_PER_S = 60

# Measured by bench/scale.py on the 2-core dev box, 2026-11-29 (load average 1-7), at its
# largest size, 1M documents (site-packages chunks, ~2.5k characters each; DuckDB's memory
# limit at 2 GB), the corpus in shards, near-dedup out of core:
#   .venv/bin/python -m bench.scale --sizes 100000 1000000 --duckdb-memory-limit 2GB \
#       --baseline bench/results/scale.json --out bench/results/scale-1m.json
# Rates per CPU second of the 1M run; the LLM client's CPU per call is marginal between
# the two sizes (start-up left out); peak RSS growth per document between the two sizes
# (DuckDB's memory limit caps it).
MEASURED_THROUGHPUTS = {
    "ingest_dedup_chars_per_cpu_s": 3.45e6,
    "scoring_chars_per_cpu_s": 1.73e6,
    "llm_client_cpu_s_per_call": 0.0049,
    "ingest_dedup_peak_rss_bytes_per_doc": 1_907.0,
}


class UnknownModelPrice(LookupError):
    """genai-prices (and the project's overrides) have no price for the model."""


@dataclass(frozen=True)
class StagePlan:
    stage: str
    documents: int
    llm_calls: int
    input_tokens: int  # tokens read: the prompts for an LLM stage, the corpus otherwise
    output_tokens: int
    dollars: float
    cpu_hours: float
    wall_hours: float
    model: str | None = None


@dataclass(frozen=True)
class PlanSettings:
    tokens: float
    workers: int
    model: str
    grader_model: str
    textbook_tokens: float
    exercise_tokens: float
    throughputs: dict
    llm_in_flight: int
    llm_seconds_per_call: float | None = None
    batch: bool = False


def call_dollars(model: str, prompt_tokens: int, completion_tokens: int, calls: int, batch: bool = False) -> float:
    """`calls` identical calls priced one at a time (context-length tiers apply per call)."""
    if calls == 0:
        return 0.0
    dollars = price_usd(model, prompt_tokens, completion_tokens, batch=batch)
    if dollars is None:
        raise UnknownModelPrice(
            f"no price known for model {model!r} in genai-prices or resources.llm.pricing.PRICE_OVERRIDES; "
            "pass a listed model (e.g. gpt-4o-mini) or add it to PRICE_OVERRIDES"
        )
    return dollars * calls


def grading_prompt_tokens() -> int:
    """The grading prompt for a file of REMOTE_MAX_CHARS (~1k tokens), rubric and examples included."""
    return estimate_tokens(grading_messages("x" * REMOTE_MAX_CHARS, REMOTE_MAX_CHARS))


def seconds_per_call(completion_tokens: int, settings: PlanSettings) -> float:
    if settings.llm_seconds_per_call is not None:
        return settings.llm_seconds_per_call
    return ASSUMED_FIRST_TOKEN_S + completion_tokens / ASSUMED_DECODE_TOKENS_PER_S


def cpu_stage(name: str, documents: int, tokens: int, chars_per_cpu_s: float, workers: int) -> StagePlan:
    cpu_s = tokens * CHARS_PER_TOKEN / chars_per_cpu_s
    return StagePlan(name, documents, 0, tokens, 0, 0.0, cpu_s / 3600, cpu_s / workers / 3600)


def llm_stage(name: str, calls: int, prompt: int, completion: int, model: str, settings: PlanSettings) -> StagePlan:
    """Wall time: the slower of the client's CPU on the workers and the calls in flight."""
    cpu_s = calls * settings.throughputs["llm_client_cpu_s_per_call"]
    llm_s = calls * seconds_per_call(completion, settings) / settings.llm_in_flight
    return StagePlan(
        name, calls, calls, calls * prompt, calls * completion, call_dollars(model, prompt, completion, calls, settings.batch),
        cpu_s / 3600, max(cpu_s / settings.workers, llm_s) / 3600, model,
    )  # fmt: skip


def plan(settings: PlanSettings) -> list[StagePlan]:
    """The five stages for a pool of `settings.tokens` tokens."""
    pool_tokens = round(settings.tokens)
    files = round(settings.tokens / PHI1_TOKENS_PER_FILE)
    graded = round(files * AnnotateConfig.model_fields["sample_fraction"].default)
    textbook_completion = SyntheticTextbookConfig.model_fields["max_tokens"].default
    exercise_completion = CodeExercisesConfig.model_fields["max_tokens"].default
    rates = settings.throughputs
    return [
        cpu_stage("ingest/dedup", files, pool_tokens, rates["ingest_dedup_chars_per_cpu_s"], settings.workers),
        llm_stage(
            "grading sample", graded, grading_prompt_tokens(), AnnotateConfig.model_fields["max_tokens"].default,
            settings.grader_model, settings,
        ),  # fmt: skip
        cpu_stage("classifier scoring", files, pool_tokens, rates["scoring_chars_per_cpu_s"], settings.workers),
        llm_stage(
            "textbook generation", round(settings.textbook_tokens / textbook_completion), TEXTBOOK_PROMPT_TOKENS,
            textbook_completion, settings.model, settings,
        ),  # fmt: skip
        llm_stage(
            "exercise generation", round(settings.exercise_tokens / exercise_completion), EXERCISE_PROMPT_TOKENS,
            exercise_completion, settings.model, settings,
        ),  # fmt: skip
    ]


def settings_from(args: argparse.Namespace) -> PlanSettings:
    throughputs = dict(MEASURED_THROUGHPUTS)
    if args.throughputs:
        throughputs.update(json.loads(Path(args.throughputs).read_text())["throughputs"])
    scale = args.tokens / PHI1_POOL_TOKENS
    return PlanSettings(
        tokens=args.tokens,
        workers=args.workers,
        model=args.model,
        grader_model=args.grader_model or args.model,
        textbook_tokens=args.textbook_tokens if args.textbook_tokens is not None else PHI1_TEXTBOOK_TOKENS * scale,
        exercise_tokens=args.exercise_tokens if args.exercise_tokens is not None else PHI1_EXERCISE_TOKENS * scale,
        throughputs=throughputs,
        llm_in_flight=args.llm_in_flight or LLMResource.model_fields["max_concurrency"].default * args.workers,
        llm_seconds_per_call=args.llm_seconds_per_call,
        batch=args.batch,
    )


def human(n: float) -> str:
    for size, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def duration(hours: float) -> str:
    if hours >= 48:
        return f"{hours / 24:.1f} d"
    return f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.1f} min"


def print_plan(stages: list[StagePlan], settings: PlanSettings) -> None:
    print(f"{'stage':<22}{'documents':>11}{'LLM calls':>11}{'in tokens':>11}{'out tokens':>11}{'dollars':>11}"
          f"{'CPU-hours':>11}{f'wall ({settings.workers} w)':>13}  model")  # fmt: skip
    for s in stages:
        print(f"{s.stage:<22}{human(s.documents):>11}{human(s.llm_calls):>11}{human(s.input_tokens):>11}"
              f"{human(s.output_tokens):>11}{s.dollars:>11,.0f}{s.cpu_hours:>11,.1f}{duration(s.wall_hours):>13}  {s.model or '-'}")  # fmt: skip
    print(f"{'total':<22}{'':>11}{human(sum(s.llm_calls for s in stages)):>11}{'':>22}"
          f"{sum(s.dollars for s in stages):>11,.0f}{sum(s.cpu_hours for s in stages):>11,.1f}"
          f"{duration(sum(s.wall_hours for s in stages)):>13}")  # fmt: skip


GRADING, GENERATION = ("grading sample",), ("textbook generation", "exercise generation")


def llm_dollars(stages: list[StagePlan], names: tuple[str, ...]) -> float:
    return sum(s.dollars for s in stages if s.stage in names)


def print_beside_seed_article(settings: PlanSettings, stages: list[StagePlan], compared: dict[str, list[StagePlan]]) -> None:
    """The LLM stages priced with other models, with phi-1's own (GPT-4 grading, GPT-3.5
    generation), and the seed article's 2023 estimate with its arithmetic at today's prices."""
    print("\nLLM dollars by model (same calls and tokens): " + "; ".join(
        f"{model} ${llm_dollars(plans, GRADING + GENERATION):,.0f}" for model, plans in {settings.model: stages, **compared}.items()))  # fmt: skip
    grader, generator = SEED_ARTICLE_MODELS
    phi1 = plan(replace(settings, grader_model=grader, model=generator))
    print(f"phi-1's models at today's genai-prices: grading {grader} ${llm_dollars(phi1, GRADING):,.0f}, generation "
          f"{generator} ${llm_dollars(phi1, GENERATION):,.0f} ({human(sum(s.output_tokens for s in phi1 if s.stage in GENERATION))} tokens)")  # fmt: skip
    scale = settings.tokens / PHI1_POOL_TOKENS
    graded = next(s.llm_calls for s in stages if s.stage in GRADING)
    article_grading = call_dollars(grader, PHI1_TOKENS_PER_FILE, 0, graded)
    article_generation = call_dollars(generator, 0, round(SEED_ARTICLE_GENERATED_TOKENS * scale), 1)
    print(f"seed article (2023 prices): grading with GPT-4 ~${SEED_ARTICLE_GRADING_USD * scale:,.0f}, generating "
          f"{human(SEED_ARTICLE_GENERATED_TOKENS * scale)} tokens with GPT-3.5 ~${SEED_ARTICLE_GENERATION_USD * scale:,.0f}; "
          f"its arithmetic at today's prices ({human(graded * PHI1_TOKENS_PER_FILE)} input tokens only; output only): "
          f"${article_grading:,.0f} and ${article_generation:,.0f}")  # fmt: skip


def print_assumptions(settings: PlanSettings, files: int, source: str) -> None:
    per_call = (f"{settings.llm_seconds_per_call} s" if settings.llm_seconds_per_call is not None
                else f"{ASSUMED_FIRST_TOKEN_S} s + output/{ASSUMED_DECODE_TOKENS_PER_S} tok/s (assumed)")  # fmt: skip
    print(f"\nassumptions: grading prompt {grading_prompt_tokens():,} tokens (a ~1k-token file, rubric, two examples); "
          f"completions at the configs' max_tokens; CPU stages split evenly over the workers; LLM wall time with "
          f"{human(settings.llm_in_flight)} requests in flight at {per_call}; provider rate limits and the sandbox "
          "runs of exercises not counted.")  # fmt: skip
    per_document = settings.throughputs["ingest_dedup_peak_rss_bytes_per_doc"]
    print(f"memory: near-dedup runs out of core (DuckDB SQL over the stored signatures, spilling past "
          f"SYNTH_ASSETS_DUCKDB_MEMORY_LIMIT); the benchmark's peak RSS grew ~{per_document / 1024:.1f} KiB per "
          f"document between its two sizes, which DuckDB's memory limit caps (1M documents: under 3 GiB at a 2 GB "
          f"limit); per-shard tasks hold one shard at a time")  # fmt: skip
    print(f"throughputs ({source}): " + ", ".join(f"{k} {v:,.4g}" for k, v in settings.throughputs.items() if isinstance(v, float)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=float, default=PHI1_POOL_TOKENS, help="tokens in the code pool (phi-1: 35e9)")
    parser.add_argument("--workers", type=int, default=64, help="CPU workers (one core each)")
    parser.add_argument("--model", default="gpt-4o-mini", help="model of every LLM stage")
    parser.add_argument("--grader-model", default=None, help="grading model (default --model; phi-1: gpt-4)")
    parser.add_argument("--textbook-tokens", type=float, default=None, help="default: phi-1's 1B, scaled with --tokens")
    parser.add_argument("--exercise-tokens", type=float, default=None, help="default: phi-1's 180M, scaled with --tokens")
    parser.add_argument("--throughputs", default=None, help="a bench/scale.py JSON (its `throughputs`) instead of the constants")
    parser.add_argument("--llm-in-flight", type=int, default=None, help="requests in flight (default: llm max_concurrency x workers)")
    parser.add_argument("--llm-seconds-per-call", type=float, default=None,
                        help=f"default: {ASSUMED_FIRST_TOKEN_S} s + output / {ASSUMED_DECODE_TOKENS_PER_S} tokens/s (assumed)")  # fmt: skip
    parser.add_argument("--batch", action="store_true", help="price at the Batch API rate")
    parser.add_argument("--compare", nargs="*", default=list(SEED_ARTICLE_MODELS), help="also price the LLM stages with these models")
    args = parser.parse_args(argv)
    settings = settings_from(args)
    try:
        stages = plan(settings)
        compared = {model: plan(replace(settings, model=model, grader_model=model)) for model in args.compare}
    except UnknownModelPrice as exc:
        parser.exit(2, f"error: {exc}\n")
    files = stages[0].documents
    print(f"phi-1 on paper: a {human(settings.tokens)}-token pool ({human(files)} files of ~{PHI1_TOKENS_PER_FILE:,} tokens), "
          f"{settings.workers} workers, {settings.model}{' (batch prices)' if settings.batch else ''}; "
          f"keeps {PHI1_KEEP_TOKEN_SHARE:.0%} = {human(settings.tokens * PHI1_KEEP_TOKEN_SHARE)} tokens (phi-1 section 2.1)")  # fmt: skip
    print_plan(stages, settings)
    print_beside_seed_article(settings, stages, compared)
    print_assumptions(settings, files, args.throughputs or "MEASURED_THROUGHPUTS, bench/scale.py at 1M documents, 2026-11-29")
    return 0


if __name__ == "__main__":
    sys.exit(main())
