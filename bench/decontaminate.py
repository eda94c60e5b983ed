"""Benchmark and threshold sweep for decontamination.

    .venv/bin/python -m bench.decontaminate --exercises 20000 [--embed local|double] [--no-functional]
        [--compare-canonical]

Builds `--exercises` synthetic exercises: every HumanEval problem planted in 10 perturbed
variants and 7 paraphrase kinds (tests/contamination_variants.py: locals renamed, loops /
comprehensions / if-else rewritten, statement reframed / translated / removed) plus
library functions (the standard library, then installed third-party packages) turned
into exercises as the clean corpus, half of them given the paraphrases' restructuring.
The functional signal runs on every exercise's candidates in the sandbox. Then:

* times every signal (CPU seconds per stage, summed over the worker processes) and the
  whole decontamination (wall, and CPU of this process + its workers), and extrapolates
  to 100,000 exercises;
* times the n-gram signal against a plain all-pairs Python loop (tokenise, build each
  exercise's 13-gram set, intersect it with each of the 164 problems' sets) on a
  subsample, end to end and matching only, extrapolated to all;
* measures recall per planted variant and false positives on the clean corpus, per
  signal and threshold (the sweep table in README_decontamination.md), and recall per
  kind for the combined rules;
* with `--compare-canonical`, scores again with the AST signal's structure rewriting
  off, for the AST signal's recall per kind with and without it.

Embeddings: `local` (default) is a deterministic hashed bag of words through the same
`BenchmarkIndex.score(embed=...)` code path; `double` sends every text through the LLM
layer to tests/openai_double.py. The bundled SmolLM2-135M model cannot embed 100k texts in
10 minutes on 2 cores, so it is not used here.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import sys
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synth_assets.decontamination.benchmarks import load_humaneval  # noqa: E402
from synth_assets.decontamination.benchmark_index import (  # noqa: E402
    BenchmarkIndex,
    SimilarityConfig,
    Thresholds,
    available_cores,
    exercise_source,
    verdict,
)
from synth_assets.decontamination.signals.ast import AstConfig  # noqa: E402
from synth_assets.decontamination.signals.code_document import CodeDocument  # noqa: E402
from synth_assets.decontamination.signals.embedding import hashed_bag_of_words  # noqa: E402
from synth_assets.decontamination.signals.ngram import NgramBatch, all_pairs_ngram_overlap, plain_ngram_set  # noqa: E402
from tests.contamination_variants import ALL_VARIANTS, PARAPHRASE_VARIANTS, VARIANTS, plant_variants, stdlib_exercises  # noqa: E402

SWEEP = {
    "max_ngram_overlap": [0.0, 0.05, 0.1, 0.2, 0.3, 0.5],
    "minhash_jaccard": [0.3, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8],
    "ast_match_rate": [0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95],
    "embedding_cosine": [0.8, 0.85, 0.9, 0.95, 0.97],
    "functional_pass_rate": [0.5, 0.8, 1.0],
}
TASK_COLUMN = {
    "max_ngram_overlap": "ngram_task_id",
    "minhash_jaccard": "minhash_task_id",
    "ast_match_rate": "ast_task_id",
    "embedding_cosine": "embedding_task_id",
    "functional_pass_rate": "functional_task_id",
}


def fires(row, column: str, threshold: float) -> bool:
    score = getattr(row, column)
    return getattr(row, TASK_COLUMN[column]) is not None and score is not None and score >= threshold


def sweep_table(exercises, rows) -> str:
    """Each signal alone per threshold: recall on the 10 near-copy variants, on the
    paraphrases, and false positives on clean code."""
    copies = [r for e, r in zip(exercises, rows) if e.variant in VARIANTS]
    paraphrases = [r for e, r in zip(exercises, rows) if e.variant in PARAPHRASE_VARIANTS]
    clean = [r for e, r in zip(exercises, rows) if e.variant == "clean"]
    lines = ["| signal alone | threshold | recall, near copies | recall, paraphrases | clean removed (FP) | FP rate |",
             "|---|---|---|---|---|---|"]
    for column, candidates in SWEEP.items():
        for threshold in candidates:
            caught = sum(fires(r, column, threshold) for r in copies)
            para = sum(fires(r, column, threshold) for r in paraphrases)
            false = sum(fires(r, column, threshold) for r in clean)
            lines.append(
                f"| {column} | {threshold} | {caught}/{len(copies)} ({caught / max(len(copies), 1):.1%}) "
                f"| {para}/{len(paraphrases)} ({para / max(len(paraphrases), 1):.1%}) "
                f"| {false}/{len(clean)} | {false / max(len(clean), 1):.3%} |"
            )
    return "\n".join(lines)


def kind_table(exercises, rows, configs: dict[str, Thresholds], kinds) -> str:
    """Recall per planted kind (columns) for each rule (rows), with the FP rate."""
    kinds = [k for k in kinds if any(e.variant == k for e in exercises)]
    lines = ["| rule | " + " | ".join(kinds) + " | FP rate |", "|---|" + "---|" * (len(kinds) + 1)]
    for name, thresholds in configs.items():
        totals, caught, false, n_clean = defaultdict(int), defaultdict(int), 0, 0
        for e, r in zip(exercises, rows):
            contaminated = verdict(r, thresholds)[0] == "contaminated"
            if e.variant == "clean":
                n_clean += 1
                false += contaminated
            else:
                totals[e.variant] += 1
                caught[e.variant] += contaminated
        cells = [f"{caught[k] / totals[k]:.3f}" for k in kinds]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {false}/{n_clean} ({false / max(n_clean, 1):.3%}) |")
    return "\n".join(lines)


def combined_table(exercises, rows, configs: dict[str, Thresholds]) -> str:
    lines = [
        "| rule (any signal fires) | recall | clean removed (FP) | missed variants |",
        "|---|---|---|---|",
    ]
    for name, thresholds in configs.items():
        missed = defaultdict(int)
        caught = false = n_planted = n_clean = 0
        for e, r in zip(exercises, rows):
            contaminated = verdict(r, thresholds)[0] == "contaminated"
            if e.variant == "clean":
                n_clean += 1
                false += contaminated
            else:
                n_planted += 1
                caught += contaminated
                if not contaminated:
                    missed[e.variant] += 1
        lines.append(
            f"| {name} | {caught}/{n_planted} ({caught / n_planted:.1%}) | {false}/{n_clean} ({false / n_clean:.3%}) "
            f"| {dict(missed) or '-'} |"
        )
    return "\n".join(lines)


def per_variant_recall(exercises, rows, thresholds: Thresholds) -> str:
    totals, caught = defaultdict(int), defaultdict(int)
    for e, r in zip(exercises, rows):
        if e.variant == "clean":
            continue
        totals[e.variant] += 1
        caught[e.variant] += verdict(r, thresholds)[0] == "contaminated"
    lines = ["| variant | caught |", "|---|---|"]
    lines += [f"| {v} | {caught[v]}/{totals[v]} |" for v in ALL_VARIANTS if totals[v]]
    return "\n".join(lines)


def double_embedder(tmp: Path):
    """Embeddings through the LLM layer against the OpenAI test double (real HTTP)."""
    from contextlib import ExitStack

    from resources.llm import LLMResource
    from resources.warehouse import Warehouse
    from tests.openai_double import TEST_KEY_REF, OpenAIDouble

    stack = ExitStack()
    server = stack.enter_context(OpenAIDouble(record=False))
    llm = LLMResource(base_url=server.base_url, api_key=TEST_KEY_REF, model="gpt-4o-mini",
                      embedding_model="text-embedding-3-small", embed_batch_size=256)
    session = stack.enter_context(llm.session(None, Warehouse(path=str(tmp / "bench.duckdb"))))
    return session.embed, stack


def cpu_seconds() -> tuple[float, float]:
    """(this process, its waited-for children) user + system CPU seconds."""
    times = os.times()
    return times.user + times.system, times.children_user + times.children_system


def ngram_comparison(
    index: BenchmarkIndex, problems, sources: list[str], sample: int, n_total: int, repeats: int = 5
) -> None:
    """The n-gram signal against the plain all-pairs Python loop on the same exercises,
    alternated `repeats` times; medians of CPU seconds and of the per-repeat ratios.

    Plain loop, end to end: split docstring/code, tokenise (the same tokens, by regex),
    build each exercise's 13-gram set (tuple hashing) and intersect it with every one of
    the 164 problems' sets (built beforehand, as an index is). Signal, end to end: split,
    then `NgramIndex.query_batch`: tokenise and hash the whole batch in numpy, roll
    13-grams, bitmap + sorted-array lookup, hits expanded and scored in numpy. Matching
    only: both start from precomputed n-grams."""
    rng = np.random.default_rng(0)
    picked = sorted(rng.choice(len(sources), size=min(sample, len(sources)), replace=False).tolist())
    texts = [sources[i] for i in picked]
    n = index.config.ngram.n
    problem_sets = [plain_ngram_set(CodeDocument.from_source(p.task_id, p.source), n) for p in problems]
    gram_sets = [plain_ngram_set(CodeDocument.from_source("", text), n) for text in texts]
    batch = NgramBatch.of_documents([CodeDocument.from_source("", text) for text in texts], index.config.ngram)

    def timed(function):
        started = time.process_time()
        result = function()
        return time.process_time() - started, result

    runs = []
    for _ in range(repeats):
        loop_s, plain = timed(lambda: [
            all_pairs_ngram_overlap(plain_ngram_set(CodeDocument.from_source("", text), n), problem_sets) for text in texts
        ])
        index_s, matches = timed(lambda: index.ngrams.query_batch([CodeDocument.from_source("", text) for text in texts]))
        loop_match_s, _ = timed(lambda: [all_pairs_ngram_overlap(gram_set, problem_sets) for gram_set in gram_sets])
        index_match_s, _ = timed(lambda: index.ngrams.match(batch))
        runs.append((loop_s, index_s, loop_match_s, index_match_s))
    loop_s, index_s, loop_match_s, index_match_s = (statistics.median(column) for column in zip(*runs))
    end_to_end = [run[0] / run[1] for run in runs]
    matching = [run[2] / run[3] for run in runs]

    agree = sum((overlap > 0) == (match.task_id is not None) for (_, overlap), match in zip(plain, matches))
    k = len(texts)
    print(f"\nn-gram signal vs plain all-pairs loop, {k} exercises, {repeats} alternated repeats "
          f"(median CPU seconds, one process; extrapolated to {n_total}):")
    print(f"  plain loop end to end  : {k / loop_s:,.0f} exercises/s ({loop_s * n_total / k:.1f}s for {n_total})")
    print(f"  n-gram signal end to end: {k / index_s:,.0f} exercises/s ({index_s * n_total / k:.1f}s for {n_total})")
    print(f"  speed-up end to end (split + tokenise + hash + match in both): median {statistics.median(end_to_end):.1f}x "
          f"(range {min(end_to_end):.1f}-{max(end_to_end):.1f}x)")
    print(f"  matching only (n-grams precomputed): plain {k / loop_match_s:,.0f}/s vs signal {k / index_match_s:,.0f}/s "
          f"= median {statistics.median(matching):.1f}x")
    print(f"  same exercises flagged (any shared 13-gram) by both: {agree}/{k}")


def clean_corpus(n: int) -> list:
    """`n` clean library-function exercises; past the ~90k functions installed, the
    corpus repeats (new ids) so 100k-exercise timings can still be taken."""
    try:
        return stdlib_exercises(n, seed=0)
    except ValueError as exc:
        print(f"note: {exc}; repeating library functions to reach {n}")
        base = stdlib_exercises(85_000, seed=0)
        return [
            dataclasses.replace(e, exercise_id=f"{e.exercise_id}-{i // len(base)}")
            for i, e in enumerate(itertools.islice(itertools.cycle(base), n))
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exercises", type=int, default=20000)
    parser.add_argument("--all-pairs-sample", type=int, default=2000)
    parser.add_argument("--embed", choices=["local", "double", "none"], default="local")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: usable cores)")
    parser.add_argument("--no-sweep", action="store_true", help="timings only")
    parser.add_argument("--no-functional", action="store_true", help="skip the functional signal (no sandbox runs)")
    parser.add_argument("--functional-on-flagged", action="store_true",
                        help="run the functional signal on every exercise, also those another signal flags "
                        "(the sweep's 'functional only' rows need it; the pipeline default skips them)")
    parser.add_argument("--compare-canonical", action="store_true",
                        help="also score without the AST structure rewriting (AST recall per kind, both ways)")
    args = parser.parse_args()

    problems = load_humaneval()
    started = time.perf_counter()
    planted = plant_variants(problems, tuple(ALL_VARIANTS))
    n_clean = args.exercises - len(planted)
    restructured = stdlib_exercises(n_clean // 2, seed=1, restructure=True) if n_clean >= 2 else []
    clean = clean_corpus(n_clean - len(restructured)) + restructured
    exercises = planted + clean
    print(f"corpus: {len(planted)} planted variants ({len(ALL_VARIANTS)} per problem) + {len(clean)} clean library "
          f"functions ({len(restructured)} restructured) = {len(exercises)} exercises "
          f"(built in {time.perf_counter() - started:.1f}s)")

    ids = [e.exercise_id for e in exercises]
    names = [e.function_name for e in exercises]
    sources = [exercise_source(e.exercise, e.solution) for e in exercises]
    started = time.perf_counter()
    index = BenchmarkIndex.from_problems(problems, functional=not args.no_functional)
    if index.functional is not None:
        index.functional.calibrate()  # once per index, outside the timed scoring
    build_s = time.perf_counter() - started

    embed, stack = None, None
    tmp = tempfile.TemporaryDirectory()
    if args.embed == "local":
        embed = hashed_bag_of_words
    elif args.embed == "double":
        embed, stack = double_embedder(Path(tmp.name))
    timings: dict[str, float] = {}
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    skip = None if args.functional_on_flagged else Thresholds(use_embedding=embed is not None)
    rows = index.score(ids, sources, embed=embed, timings=timings, workers=args.workers, function_names=names,
                       functional_skip=skip)
    total_s = time.perf_counter() - started
    cpu_after = cpu_seconds()
    if stack:
        stack.close()
    n = len(exercises)
    self_cpu, children_cpu = (after - before for after, before in zip(cpu_after, cpu_before))
    workers = args.workers or available_cores()
    print(f"\nindex build over {len(problems)} problems: {build_s:.2f}s; usable cores: {available_cores()}, "
          f"workers: {workers}; load average before scoring: {os.getloadavg()[0]:.1f}")
    print("| stage | seconds | exercises/s | 100k extrapolated (s) |\n|---|---|---|---|")
    labels = {
        "split": "split docstring / code, once for every signal (CPU, all workers)",
        "ngram": "n-gram: batch tokenise + hash in numpy, roll 13-grams, bitmap + sorted-array lookup, hits scored in numpy (CPU, all workers)",
        "minhash": "MinHash: regex tokens + normalise + shingles + batched signatures + compare (CPU, all workers)",
        "ast": "AST: parse + normalise + match rate (CPU, all workers)",
        "signals_wall": "token + AST signals (wall, workers in parallel)",
        "embedding": f"embedding ({args.embed}; wall, overlaps the workers)",
        "functional": "functional: candidates' official tests in the sandbox (wall, after the other signals)",
    }
    counts = {stage: timings.pop(stage) for stage in list(timings) if stage.startswith("functional_")}
    for stage, seconds in timings.items():
        print(f"| {labels.get(stage, stage)} | {seconds:.2f} | {n / max(seconds, 1e-9):,.0f} | {seconds * 100_000 / n:.0f} |")
    print(f"| **all signals (embed={args.embed}), wall** | {total_s:.2f} | {n / total_s:,.0f} | {total_s * 100_000 / n:.0f} |")
    print(f"| all signals, CPU (this process {self_cpu:.1f}s + workers {children_cpu:.1f}s) | {self_cpu + children_cpu:.2f} "
          f"| {n / (self_cpu + children_cpu):,.0f} | {(self_cpu + children_cpu) * 100_000 / n:.0f} |")

    if counts:
        pairs, seconds = counts["functional_pairs"], timings["functional"]
        print(f"functional ({'every exercise' if args.functional_on_flagged else 'exercises no other signal flags'}): "
              f"{int(pairs):,} (exercise, problem) pairs ({pairs / n:.2f} per exercise) in "
              f"{int(counts['functional_jobs'])} sandbox jobs ({int(counts['functional_split_jobs'])} split, "
              f"{int(counts['functional_killed_pairs'])} pairs killed their job): {pairs / seconds:,.0f} pairs/s, "
              f"{n / seconds:,.0f} exercises/s; unusable tasks: {index.functional.unusable or 'none'}")

    ngram_comparison(index, problems, sources, args.all_pairs_sample, n)
    if args.no_sweep:
        tmp.cleanup()
        return

    print("\nsweep (each signal alone):")
    print(sweep_table(exercises, rows))
    defaults = Thresholds()
    configs = {
        f"defaults (embedding {'on' if embed else 'off'})": Thresholds(use_embedding=embed is not None),
        "defaults, embedding off": Thresholds(use_embedding=False),
        "n-gram only (phi-1: any 13-gram)": Thresholds(minhash_jaccard=2, ast_match_rate=2, use_embedding=False, use_functional=False),
        "ast >= 0.85 + ngram + minhash 0.5": Thresholds(ast_match_rate=0.85, use_embedding=False, use_functional=False),
        "ast >= 0.7 + ngram + minhash 0.45": Thresholds(ast_match_rate=0.7, minhash_jaccard=0.45, use_embedding=False, use_functional=False),
        "ngram 0.3 (not any) + ast 0.8 + minhash 0.5": Thresholds(max_ngram_overlap=0.3, longest_shared_ngram=40, use_embedding=False, use_functional=False),
    }
    functional_on = not args.no_functional
    configs["defaults, functional off"] = Thresholds(use_embedding=embed is not None, use_functional=False)
    configs["defaults, embedding + functional off"] = Thresholds(use_embedding=False, use_functional=False)
    configs["functional only"] = Thresholds(max_ngram_overlap=2, longest_shared_ngram=10**6, minhash_jaccard=2,
                                            ast_match_rate=2, use_embedding=False)
    configs["ast only (>= 0.8)"] = Thresholds(max_ngram_overlap=2, longest_shared_ngram=10**6, minhash_jaccard=2,
                                              use_embedding=False, use_functional=False)
    for rate in (0.7, 0.75):
        configs[f"ast >= {rate} + ngram + minhash 0.5 + functional"] = Thresholds(ast_match_rate=rate, use_embedding=False)
    print("\ncombined rules:")
    print(combined_table(exercises, rows, configs))
    print("\nrecall per kind (near-copy variants, then paraphrases):")
    print(kind_table(exercises, rows, configs, list(ALL_VARIANTS)))
    print(f"\nper-variant recall at the defaults {defaults} (functional {'on' if functional_on else 'off'}):")
    print(per_variant_recall(exercises, rows, Thresholds(use_embedding=embed is not None)))
    if args.compare_canonical:
        plain = BenchmarkIndex([p.task_id for p in problems], [p.source for p in problems], SimilarityConfig(ast=AstConfig(canonical=False)))
        plain_rows = plain.score(ids, sources, workers=args.workers)
        ast_only = Thresholds(max_ngram_overlap=2, longest_shared_ngram=10**6, minhash_jaccard=2, use_embedding=False, use_functional=False)
        print("\nAST signal alone (>= 0.8), structure rewriting off vs on:")
        print(kind_table(exercises, plain_rows, {"ast, rewriting off": ast_only}, list(ALL_VARIANTS)))
        print(kind_table(exercises, rows, {"ast, rewriting on": ast_only}, list(ALL_VARIANTS)).split("\n", 2)[2])
    tmp.cleanup()


if __name__ == "__main__":
    main()
