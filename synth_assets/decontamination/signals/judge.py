"""Signal 6, an LLM judge for the doubtful band (issue 17 point 2): an exercise whose
signals sit just below their thresholds is shown next to its nearest benchmark problem,
and a schema-constrained model answers "are these the same problem, possibly rephrased
or translated?" with a verdict and a rationale (the LLM-decontaminator approach, arXiv
2311.04850). Calls go through the LLM layer, so they are cached (a re-run costs $0),
priced and budgeted like every call. Optional and off by default: a small local model
(the bundled SmolLM2-135M) cannot judge this reliably.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pydantic

from resources.llm.types import ChatRequest, StructuredResult

JUDGE_PROMPT_VERSION = "judge-1"
SAME, DIFFERENT, FAILED = "same", "different", "error"

_SYSTEM = (
    "You audit training data for benchmark contamination. Two programming problems are the SAME "
    "when a correct solution to one is a correct solution to the other, even if the statement is "
    "rephrased, reframed as a story, partly translated into another language or missing, and even "
    "if names, loops or conditionals are written differently. Different inputs, outputs or rules "
    "make them DIFFERENT. Answer in JSON."
)


class JudgeVerdict(pydantic.BaseModel):
    """The judge's answer for one (exercise, benchmark problem) pair."""

    same_problem: bool = pydantic.Field(description="True when a solution to one solves the other.")
    rationale: str = pydantic.Field(max_length=600, description="One or two sentences: why.")


@dataclass(frozen=True)
class JudgeConfig:
    # How far below its threshold a score still counts as doubtful (our sweep: clean
    # library code tops out near AST 0.5 and MinHash 0.45, so the band stays above that).
    ast_margin: float = 0.2
    minhash_margin: float = 0.15
    embedding_margin: float = 0.05
    # A partial functional pass (half the official tests or more) is doubtful too.
    functional_min_pass_rate: float = 0.5
    # At most this many pairs per run go to the judge (the closest first): a cost cap.
    max_pairs: int = 500
    max_chars: int = 3000  # of each side of the pair in the prompt


@dataclass(frozen=True)
class DoubtfulPair:
    row: int
    task_id: str
    closeness: float  # the signal's score / its threshold (1.0 = at the threshold)
    why: str


def doubtful_pairs(scores: Sequence, thresholds, config: JudgeConfig = JudgeConfig()) -> list[DoubtfulPair]:
    """Rows no signal fired on whose closest signal sits within its margin below its
    threshold, each with the benchmark task that signal names; the closest `max_pairs`."""
    from synth_assets.decontamination.benchmark_index import fired_signals  # the verdict's own rules

    found: list[DoubtfulPair] = []
    for row, score in enumerate(scores):
        if fired_signals(score, thresholds):
            continue
        options = []
        if score.ast_task_id and score.ast_match_rate is not None and score.ast_match_rate >= thresholds.ast_match_rate - config.ast_margin:
            options.append((score.ast_match_rate / thresholds.ast_match_rate, score.ast_task_id, f"ast {score.ast_match_rate:.2f}"))
        if score.minhash_task_id and score.minhash_jaccard >= thresholds.minhash_jaccard - config.minhash_margin:
            options.append((score.minhash_jaccard / thresholds.minhash_jaccard, score.minhash_task_id, f"minhash {score.minhash_jaccard:.2f}"))
        if (
            thresholds.use_embedding and score.embedding_task_id and score.embedding_cosine is not None
            and score.embedding_cosine >= thresholds.embedding_cosine - config.embedding_margin
        ):
            options.append((score.embedding_cosine / thresholds.embedding_cosine, score.embedding_task_id, f"embedding {score.embedding_cosine:.3f}"))
        rate = score.functional_pass_rate
        if rate is not None and rate >= config.functional_min_pass_rate:
            options.append((rate / thresholds.functional_pass_rate, score.functional_task_id,
                            f"functional {score.functional_tests_passed}/{score.functional_tests_total}"))
        if options:
            closeness, task_id, why = max(options)
            found.append(DoubtfulPair(row, task_id, closeness, why))
    found.sort(key=lambda pair: -pair.closeness)
    return found[: config.max_pairs]


def judge_request(exercise_id: str, exercise: str, benchmark_problem: str, max_chars: int) -> ChatRequest:
    user = (
        "Problem A (a generated training exercise):\n```python\n" + exercise[:max_chars] + "\n```\n\n"
        "Problem B (a benchmark problem with its reference solution):\n```python\n" + benchmark_problem[:max_chars] + "\n```\n\n"
        "Are A and B the same problem, possibly rephrased or translated? "
        'Reply as {"same_problem": true|false, "rationale": "..."}.'
    )
    return ChatRequest(
        messages=[{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user}],
        temperature=0.0, max_tokens=200, row_id=exercise_id,
    )


def judge_doubtful(
    scores: Sequence, sources: Sequence[str], problem_sources: dict[str, str], thresholds,
    complete_json: Callable[[list[ChatRequest], type[pydantic.BaseModel]], list[StructuredResult]],
    config: JudgeConfig = JudgeConfig(),
) -> int:
    """Ask the judge about every doubtful row and store its verdict on the row
    (`judge_task_id`, `judge_verdict` same/different/error, `judge_rationale`).
    `complete_json(requests, schema)` is the LLM session's. Returns pairs judged."""
    pairs = doubtful_pairs(scores, thresholds, config)
    if not pairs:
        return 0
    requests = [
        judge_request(scores[pair.row].exercise_id, sources[pair.row], problem_sources[pair.task_id], config.max_chars)
        for pair in pairs
    ]
    for pair, result in zip(pairs, complete_json(requests, JudgeVerdict)):
        row = scores[pair.row]
        row.judge_task_id = pair.task_id
        if result.status == "ok" and isinstance(result.parsed, JudgeVerdict):
            row.judge_verdict = SAME if result.parsed.same_problem else DIFFERENT
            row.judge_rationale = f"({pair.why}) {result.parsed.rationale}"
        else:
            row.judge_verdict = FAILED
            row.judge_rationale = f"({pair.why}) judge call failed: {(result.error or result.status)[:200]}"
    return len(pairs)
