"""annotated_sample: an LLM grades a small stratified sample of raw_stack_plus for
educational value (phi-1 section 2.1), so a cheap classifier can learn the grades."""


import hashlib
import json
from collections import Counter

import dagster as dg
import polars as pl
from pydantic import BaseModel, Field

from resources.llm import ChatRequest, LLMResource, StructuredResult, estimate_tokens
from resources.warehouse import Warehouse
from synth_assets.automation import on_upstream_change
from synth_assets.common.tables import markdown_table, table_result

# Bump when the rubric, the messages or the schema change: it is part of the asset's
# code_version, so automation re-grades. The LLM cache is keyed on the request itself, so
# changed messages are new calls while an unchanged prompt is answered from the cache.
PROMPT_VERSION = "edu-grade-v2"
SCORE_RANGE = range(0, 6)
TRUNCATION_MARKER = "\n# [... file truncated for grading ...]\n"


# FineWeb-Edu kept documents scoring >= 3 on its 0-5 rubric.
REMOTE_LABEL_THRESHOLD = 3
# The bundled 135M model graded 11 stdlib files 2,2,2,1,1,1,1,2,2,2,1 with this prompt
# (edu-grade-v2): at 3 every label is negative and no classifier can be trained.
LOCAL_LABEL_THRESHOLD = 2


def resolve_label_threshold(configured: int | None, endpoint_is_local: bool) -> int:
    if configured is not None:
        return configured
    return LOCAL_LABEL_THRESHOLD if endpoint_is_local else REMOTE_LABEL_THRESHOLD


class AnnotateConfig(dg.Config):
    """How many documents the LLM grades and how. Defaults keep the bundled
    SmolLM2-135M on 2 CPU threads to a few minutes for the default corpus."""

    seed: int = Field(default=0, description="Seed of the sample draw; the same seed gives the same documents.")
    sample_fraction: float = Field(
        # phi-1 section 2.1: GPT-4 annotated ~100k of the ~35M Stack+ files, about 0.3%.
        default=0.003,
        description="Share of raw_stack_plus to grade, before the min/max bounds (phi-1: ~0.3%).",
    )
    min_docs: int = Field(
        # Enough for 5-fold CV with a few of each class; a small corpus still gets graded.
        default=40,
        description="Grade at least this many documents (or the whole corpus if smaller).",
    )
    max_docs: int = Field(
        # The local 135M model reads ~1,070 prompt tokens per grading (rubric, two
        # examples, <=1200 characters of file): ~5 s at 240 tok/s, ~15 s on a busy
        # 2-core box, so the default corpus (~600 files -> min_docs=40) takes 3-10 min.
        default=200,
        description="Grade at most this many documents; raise it when the classifier asks for more labels.",
    )
    max_chars: int = Field(
        # python-edu (SmolLM corpus) graded the first characters of each file; 1200
        # characters is ~350 tokens, within the local model's budget per call.
        default=1200,
        description="Only the first max_chars characters of a file are shown to the grader; a marker says it was cut.",
    )
    max_tokens: int = Field(
        default=80,
        description="Completion budget per grading: the JSON score plus a one-sentence rationale.",
    )
    temperature: float = Field(default=0.0, description="Sampling temperature of the grader (0 = greedy, reproducible).")
    label_threshold: int | None = Field(
        default=None,
        description="educational_score >= label_threshold is a positive (keep) label for the classifier. "
        f"Unset: {REMOTE_LABEL_THRESHOLD} (FineWeb-Edu's cut) on a real endpoint, {LOCAL_LABEL_THRESHOLD} on the "
        "bundled SmolLM2-135M, which never grades above 2 (measured). The value used is stored on every row.",
    )


class Grade(BaseModel):
    """The grader's answer. The rationale comes FIRST: on SmolLM2-135M a score-first
    answer is decided before the model has said anything about the file and copies the
    last example's score for every file; writing the sentence first makes the score
    follow what the model noticed (generated / uncommented / example-like)."""

    rationale: str = Field(max_length=400, description="One short sentence about what a beginner can learn here.")
    educational_score: int = Field(ge=0, le=5, description="Educational value, 0 (none) to 5 (outstanding).")


# Modelled on FineWeb-Edu's additive 5-point rubric, with phi-1's question
# ("educational value for a student whose goal is to learn basic coding concepts").
# Tuned on SmolLM2-135M (see Grade): a JSON template in the prompt is copied verbatim
# ("<one short sentence>", score 0 for every file), so the format is shown through two
# graded examples instead, one high and one low. With the high example last it copies
# that example's rationale verbatim for 11 of 12 files; low-last gives real sentences
# (measured on 12 stdlib files: scores 1-2, see the annotate report).
SYSTEM_PROMPT = "You are a programming teacher. You grade Python files by how much a beginner can learn from them."
RUBRIC = """Rate the educational value of this Python file for a student whose goal is to learn basic coding concepts, from 0 to 5:
+1 if it contains real Python code, not just data, configuration or boilerplate.
+1 if it shows basic concepts such as functions, loops, conditions or classes.
+1 if it is easy to read: clear names, comments or docstrings that explain what happens.
+1 if it is self-contained and focused, like a lesson or an exercise.
+1 if it teaches step by step, like a textbook example.
Long, complex, uncommented or generated code scores 0 or 1.
First write one short sentence, then the score."""
FEW_SHOT = [
    (
        'def average(numbers):\n    """Return the mean of a list of numbers."""\n'
        "    # add them up, then divide by how many there are\n    total = 0\n"
        "    for n in numbers:\n        total += n\n    return total / len(numbers)\n\n"
        "print(average([2, 4, 6]))  # 4.0\n",
        {"rationale": "A short, commented function with a loop and an example.", "educational_score": 4},
    ),
    (
        "import _c;_T=_c.r(0x1f,b'\\x00',**_K);__all__=['_T','_U'];_U=lambda *a:_T(*a)|_c.M\n",
        {"rationale": "Dense internal code with no explanation.", "educational_score": 1},
    ),
]


def _user_message(content: str, max_chars: int) -> str:
    shown, _ = truncate_for_prompt(content, max_chars)
    return f"{RUBRIC}\n\nFile:\n```python\n{shown}\n```"


def sample_size(n_total: int, fraction: float, min_docs: int, max_docs: int) -> int:
    """round(fraction * n_total) clamped to [min_docs, max_docs], never above n_total."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"sample_fraction must be within [0, 1], got {fraction}")
    if min_docs < 0 or max_docs < min_docs:
        raise ValueError(f"need 0 <= min_docs <= max_docs, got min_docs={min_docs}, max_docs={max_docs}")
    return min(n_total, max(min_docs, min(max_docs, round(fraction * n_total))))


def allocate_by_source(counts: dict[str, int], n: int) -> dict[str, int]:
    """Split n draws across sources in proportion to their sizes (largest remainder).
    Then every non-empty source left without a draw takes one from the largest
    allocation, when n allows it, so a small source is never missing from the labels."""
    total = sum(counts.values())
    if n > total:
        raise ValueError(f"cannot draw {n} documents from {total}")
    sources = sorted(s for s, c in counts.items() if c > 0)
    if n == 0 or not sources:
        return {s: 0 for s in sources}
    quotas = {s: n * counts[s] / total for s in sources}
    alloc = {s: int(quotas[s]) for s in sources}
    by_remainder = sorted(sources, key=lambda s: (-(quotas[s] - int(quotas[s])), s))
    for s in by_remainder[: n - sum(alloc.values())]:
        alloc[s] += 1
    if n >= len(sources):
        for s in sources:
            if alloc[s] == 0:
                donor = max(sources, key=lambda d: (alloc[d], d))
                alloc[donor] -= 1
                alloc[s] = 1
    return alloc


def draw_key(seed: int, doc_id: str) -> str:
    """A seeded, order-independent sort key: the sample does not depend on row order."""
    return hashlib.sha256(f"{seed}:{doc_id}".encode()).hexdigest()


def stratified_sample(
    docs: pl.DataFrame, fraction: float, min_docs: int, max_docs: int, seed: int
) -> pl.DataFrame:
    """A seeded random sample of `docs` (needs doc_id, source), stratified by source."""
    n = sample_size(docs.height, fraction, min_docs, max_docs)
    counts = dict(Counter(docs["source"].to_list()))
    alloc = allocate_by_source(counts, n)
    keyed = docs.with_columns(
        pl.col("doc_id").map_elements(lambda d: draw_key(seed, d), return_dtype=pl.String).alias("_draw")
    ).sort(["source", "_draw"])
    picked = keyed.with_columns(pl.int_range(pl.len()).over("source").alias("_rank")).filter(
        pl.col("_rank") < pl.col("source").replace_strict(alloc, default=0, return_dtype=pl.Int64)
    )
    return picked.drop(["_draw", "_rank"]).sort("doc_id")


def truncate_for_prompt(content: str, max_chars: int) -> tuple[str, bool]:
    """The first max_chars characters of the file, plus a marker line when cut
    (python-edu graded file prefixes the same way). Returns (text, was_truncated)."""
    if max_chars <= 0:
        raise ValueError(f"max_chars must be positive, got {max_chars}")
    if len(content) <= max_chars:
        return content, False
    return content[:max_chars] + TRUNCATION_MARKER, True


def grading_messages(content: str, max_chars: int) -> list[dict[str, str]]:
    """System prompt, two graded examples (user/assistant turns), then the file."""
    messages = [{"role": "system", "content": SYSTEM_PROMPT}]
    for example, grade in FEW_SHOT:
        messages.append({"role": "user", "content": _user_message(example, max_chars)})
        messages.append({"role": "assistant", "content": json.dumps(grade)})
    messages.append({"role": "user", "content": _user_message(content, max_chars)})
    return messages


def grading_requests(sample: pl.DataFrame, config: AnnotateConfig) -> list[ChatRequest]:
    return [
        ChatRequest(
            messages=grading_messages(content, config.max_chars),
            temperature=config.temperature,
            max_tokens=config.max_tokens,
            row_id=doc_id,
        )
        for doc_id, content in zip(sample["doc_id"], sample["content"], strict=True)
    ]


ANNOTATION_SCHEMA = {
    "doc_id": pl.String,
    "source": pl.String,
    "educational_score": pl.Int64,
    "rationale": pl.String,
    "label": pl.Boolean,
    "label_threshold": pl.Int64,
    "truncated": pl.Boolean,
    "model": pl.String,
    "prompt_version": pl.String,
    "cache_key": pl.String,
    "status": pl.String,
    "error": pl.String,
    "raw_response": pl.String,
}


def annotation_rows(
    sample: pl.DataFrame,
    results: list[StructuredResult],
    label_threshold: int,
    max_chars: int,
    model: str,
) -> pl.DataFrame:
    """One row per sampled document. A failed grading keeps its row with NULL score and
    label, status and error set, and the raw answer for inspection."""
    if len(results) != sample.height:
        raise RuntimeError(f"got {len(results)} gradings for {sample.height} documents")
    rows = []
    for doc, result in zip(sample.iter_rows(named=True), results, strict=True):
        grade = result.parsed if result.status == "ok" else None
        score = grade.educational_score if grade is not None else None
        error = result.error
        if result.status == "ok" and grade is None:
            error = error or "status ok but no parsed grade"
        rows.append(
            {
                "doc_id": doc["doc_id"],
                "source": doc["source"],
                "educational_score": score,
                "rationale": grade.rationale if grade is not None else None,
                "label": None if score is None else score >= label_threshold,
                "label_threshold": label_threshold,
                "truncated": len(doc["content"]) > max_chars,
                "model": model,
                "prompt_version": PROMPT_VERSION,
                "cache_key": result.cache_key,
                "status": result.status if grade is not None or result.status != "ok" else "error",
                "error": error,
                "raw_response": result.raw_text,
            }
        )
    return pl.DataFrame(rows, schema=ANNOTATION_SCHEMA)


def score_histogram_markdown(scores: list[int | None]) -> str:
    """Counts per score 0..5 plus the failed gradings."""
    counts = Counter(scores)
    rows = [(str(s), counts.get(s, 0)) for s in SCORE_RANGE] + [("failed", counts.get(None, 0))]
    return markdown_table(rows, ["educational_score", "documents"])


def label_balance(annotations: pl.DataFrame) -> dict[str, int | float]:
    n_pos = int(annotations["label"].eq(True).sum())
    n_neg = int(annotations["label"].eq(False).sum())
    n_failed = int(annotations["label"].is_null().sum())
    graded = n_pos + n_neg
    return {
        "labels/positive": n_pos,
        "labels/negative": n_neg,
        "labels/failed_gradings": n_failed,
        "labels/positive_share": round(n_pos / graded, 4) if graded else 0.0,
    }


@dg.asset(
    deps=[dg.AssetKey("raw_stack_plus")],
    group_name="filtering",
    kinds={"duckdb", "python", "openai"},
    owners=["team:synth-assets"],
    code_version=f"annotate-1+{PROMPT_VERSION}",
    automation_condition=on_upstream_change(),
)
def annotated_sample(
    context: dg.AssetExecutionContext, config: AnnotateConfig, warehouse: Warehouse, llm: LLMResource
) -> dg.MaterializeResult:
    """Educational-value grades for a small random sample of raw_stack_plus.

    phi-1 (section 2.1) asked GPT-4 to judge "the educational value for a student whose
    goal is to learn basic coding concepts" on ~0.3% of its corpus. This asset draws a
    seeded sample stratified by `source` (`sample_fraction`, bounded by `min_docs` and
    `max_docs`), shows the grader the first `max_chars` characters of each file with a
    FineWeb-Edu-style additive 0-5 rubric and two graded examples, and stores the
    schema-checked JSON answer (`rationale` first, then `educational_score`: a small
    model decides a score-first answer before reading anything into the file).
    `label` = score >= `label_threshold`; files longer than `max_chars` are graded on
    their first `max_chars` characters (`truncated` = true), as python-edu did.

    A grading that failed (malformed JSON after one retry, endpoint error, budget) is kept
    with `status`/`error`/`raw_response` and NULL score and label; the classifier skips it.
    Metadata: score histogram, label balance, and the LLM cost block.
    """
    with warehouse.materialization(context) as lake:
        docs = lake.query("SELECT doc_id, source, content FROM raw_stack_plus")
        if docs.height == 0:
            raise dg.Failure("raw_stack_plus is empty: nothing to sample. Materialize raw_stack_plus first.")
        sample = stratified_sample(docs, config.sample_fraction, config.min_docs, config.max_docs, config.seed)
        context.log.info(f"Grading {sample.height} of {docs.height} documents ({PROMPT_VERSION})")
        requests = grading_requests(sample, config)
        with llm.session(context, warehouse) as session:
            prompt_tokens = round(sum(estimate_tokens(r.messages) for r in requests) / len(requests))
            session.log_estimate(len(requests), prompt_tokens, config.max_tokens)
            results = session.complete_json(requests, schema=Grade)
            threshold = resolve_label_threshold(config.label_threshold, session.endpoint.is_local)
            annotations = annotation_rows(sample, results, threshold, config.max_chars, session.model)
            lake.write_table("annotated_sample", annotations)
            llm_metadata = session.metadata()
    balance = label_balance(annotations)
    status_counts = dict(Counter(annotations["status"].to_list()))
    return table_result(
        warehouse,
        "annotated_sample",
        {
            "prompt_version": PROMPT_VERSION,
            "sample/label_threshold": threshold,
            "sample/documents": annotations.height,
            "sample/corpus_documents": docs.height,
            "sample/truncated": int(annotations["truncated"].sum()),
            "score_histogram": dg.MetadataValue.md(
                score_histogram_markdown(annotations["educational_score"].to_list())
            ),
            "status_counts": dg.MetadataValue.md(markdown_table(sorted(status_counts.items()), ["status", "rows"])),
            **balance,
            **llm_metadata,
        },
        snapshot_id=lake.snapshot_id_published,
    )
