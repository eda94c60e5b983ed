"""annotated_sample: an LLM grades a small stratified sample of raw_stack_plus for
educational value (phi-1 section 2.1), so a cheap classifier can learn the grades."""


import hashlib
import json
from collections import Counter

import dagster as dg
import polars as pl
from pydantic import BaseModel, Field

from resources.compute import Compute
from resources.llm import ChatRequest, LLMResource, StructuredResult, estimate_tokens
from resources.llm.batches import DEFAULT_BATCH_SIZE, complete_json_in_batches, engine_name
from resources.warehouse import Warehouse
from synth_assets.automation import on_upstream_change
from synth_assets.settings import lasting_compute, settings_origin, with_settings
from synth_assets.common.tables import markdown_table, table_result

# Bump when the rubric, the messages or the schema change: it is part of the asset's
# code_version, so automation re-grades. The LLM cache is keyed on the request itself, so
# changed messages are new calls while an unchanged prompt is answered from the cache.
PROMPT_VERSION = "edu-grade-v2"
SCORE_RANGE = range(0, 6)
TRUNCATION_MARKER = "\n# [... file truncated for grading ...]\n"
CORPUS_TABLE = "raw_stack_plus"


# FineWeb-Edu kept documents scoring >= 3 on its 0-5 rubric.
REMOTE_LABEL_THRESHOLD = 3
# The bundled 135M model graded 11 stdlib files 2,2,2,1,1,1,1,2,2,2,1 with this prompt
# (edu-grade-v2): at 3 every label is negative and no classifier can be trained.
LOCAL_LABEL_THRESHOLD = 2


# phi-1 section 2.1: ~100M tokens of GPT-4 annotations over ~100k files, ~1k tokens each.
REMOTE_MAX_CHARS = 4000
# python-edu (SmolLM corpus) graded file prefixes; 1200 characters is ~350 tokens.
LOCAL_MAX_CHARS = 1200
# The local 135M model reads ~1,070 prompt tokens per grading: ~5 s at 240 tok/s.
LOCAL_MAX_DOCS = 200


def resolve_grading_limits(config: "AnnotateConfig", endpoint_is_local: bool) -> tuple[int | None, int]:
    """(max_docs, max_chars) for this endpoint: the config's, or the endpoint's defaults."""
    max_docs = config.max_docs if config.max_docs is not None else (LOCAL_MAX_DOCS if endpoint_is_local else None)
    max_chars = config.max_chars or (LOCAL_MAX_CHARS if endpoint_is_local else REMOTE_MAX_CHARS)
    return max_docs, max_chars


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
    max_docs: int | None = Field(
        default=None,
        description=f"Grade at most this many documents. Unset: no cap on a real endpoint (phi-1's share, "
        f"~100k of 35M files); {LOCAL_MAX_DOCS} on the bundled SmolLM2-135M, which grades ~5-15 s per file.",
    )
    max_chars: int | None = Field(
        default=None,
        description=f"Show the grader the first max_chars characters of each file (a marker says it was cut). "
        f"Unset: {REMOTE_MAX_CHARS} (~1k tokens, phi-1's ~100M annotation tokens over ~100k files) on a real "
        f"endpoint; {LOCAL_MAX_CHARS} on the bundled model, whose context holds the rubric, two examples and ~350 "
        "tokens of file.",
    )
    max_tokens: int = Field(
        default=80,
        description="Completion budget per grading: the JSON score plus a one-sentence rationale.",
    )
    temperature: float = Field(default=0.0, description="Sampling temperature of the grader (0 = greedy, reproducible).")
    batch_size: int = Field(
        default=DEFAULT_BATCH_SIZE,
        ge=1,
        description="Gradings per Ray task when RAY_ADDRESS names a cluster (each task is one LLM session on a "
        "worker; the cache, ledger, budget and RPM/TPM limits are shared). Ignored in-process.",
    )
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


def sample_size(n_total: int, fraction: float, min_docs: int, max_docs: int | None) -> int:
    """round(fraction * n_total) clamped to [min_docs, max_docs] (no upper bound when
    max_docs is None), never above n_total."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"sample_fraction must be within [0, 1], got {fraction}")
    if min_docs < 0 or (max_docs is not None and max_docs < min_docs):
        raise ValueError(f"need 0 <= min_docs <= max_docs, got min_docs={min_docs}, max_docs={max_docs}")
    wanted = max(min_docs, round(fraction * n_total))
    return min(n_total, wanted if max_docs is None else min(max_docs, wanted))


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
    """A seeded, order-independent sort key: the sample does not depend on row order.
    `sample_in_sql` computes the same key in SQL (`sha256(seed || ':' || doc_id)`)."""
    return hashlib.sha256(f"{seed}:{doc_id}".encode()).hexdigest()


def sample_in_sql(
    lake, table: str, fraction: float, min_docs: int, max_docs: int | None, seed: int, max_chars: int
) -> tuple[pl.DataFrame, dict[str, int]]:
    """A seeded random sample of `table`, stratified by source, drawn in SQL: per source
    the rows with the smallest `draw_key`, as many as `allocate_by_source` gives it. Only
    the sampled rows come back, their content cut to max_chars + 1 characters (enough to
    know it was cut), so memory is bounded by the sample, never by the corpus.
    Returns (doc_id, source, content of the sample sorted by doc_id; rows per source)."""
    counts = dict(lake.query(f'SELECT source, count(*) AS n FROM "{table}" GROUP BY source').iter_rows())
    n = sample_size(sum(counts.values()), fraction, min_docs, max_docs)
    alloc = allocate_by_source(counts, n)
    wanted = pl.DataFrame({"source": list(alloc), "quota": list(alloc.values())}, schema={"source": pl.Utf8, "quota": pl.Int64})
    with lake.connect() as conn:
        conn.register("_quota", wanted.to_arrow())
        try:
            sample = conn.execute(
                f"""
                WITH ranked AS (
                    SELECT doc_id, source,
                           row_number() OVER (PARTITION BY source ORDER BY sha256(? || ':' || doc_id)) AS draw_rank
                    FROM "{table}"
                )
                SELECT r.doc_id, r.source, left(t.content, ?) AS content
                FROM ranked r JOIN _quota q USING (source) JOIN "{table}" t USING (doc_id)
                WHERE r.draw_rank <= q.quota
                ORDER BY r.doc_id
                """,
                [str(seed), max_chars + 1],
            ).pl()
        finally:
            conn.unregister("_quota")
    return sample, counts


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


def grading_requests(sample: pl.DataFrame, config: AnnotateConfig, max_chars: int) -> list[ChatRequest]:
    return [
        ChatRequest(
            messages=grading_messages(content, max_chars),
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
    context: dg.AssetExecutionContext, config: AnnotateConfig, warehouse: Warehouse, llm: LLMResource,
    compute: Compute,
) -> dg.MaterializeResult:
    """Educational-value grades for a small random sample of raw_stack_plus.

    phi-1 (section 2.1) asked GPT-4 to judge "the educational value for a student whose
    goal is to learn basic coding concepts" on ~0.3% of its corpus. This asset draws a
    seeded sample stratified by `source` in SQL (`sample_fraction`, phi-1's 0.3%, at least
    `min_docs`, no upper bound on a real endpoint; the corpus is never read into memory),
    shows the grader the first `max_chars` characters of each file (~1k tokens on a real
    endpoint, ~350 on the bundled model) with a
    FineWeb-Edu-style additive 0-5 rubric and two graded examples, and stores the
    schema-checked JSON answer (`rationale` first, then `educational_score`: a small
    model decides a score-first answer before reading anything into the file).
    `label` = score >= `label_threshold`; files longer than `max_chars` are graded on
    their first `max_chars` characters (`truncated` = true), as python-edu did.

    A grading that failed (malformed JSON after one retry, endpoint error, budget) is kept
    with `status`/`error`/`raw_response` and NULL score and label; the classifier skips it.
    With the compute resource naming a Ray cluster, the gradings run as batches of `batch_size` on
    its workers (`resources/llm/batches.py`): same cache, ledger, budget and rate limits.
    Metadata: score histogram, label balance, where it ran (`compute`), and the LLM cost
    block (the whole materialization's calls, the workers' included).
    """
    settings_from = settings_origin(config, "annotated_sample")  # before the merge: what the launchpad set
    config = with_settings(config, "annotated_sample")
    with warehouse.materialization(context) as lake:
        if not lake.table_exists(CORPUS_TABLE) or lake.query(f'SELECT count(*) AS n FROM "{CORPUS_TABLE}"')["n"][0] == 0:
            raise dg.Failure("raw_stack_plus is empty: nothing to sample. Materialize raw_stack_plus first.")
        with llm.session(context, warehouse) as session:
            max_docs, max_chars = resolve_grading_limits(config, session.endpoint.is_local)
            sample, corpus_counts = sample_in_sql(
                lake, CORPUS_TABLE, config.sample_fraction, config.min_docs, max_docs, config.seed, max_chars
            )
            corpus_size = sum(corpus_counts.values())
            context.log.info(f"Grading {sample.height} of {corpus_size} documents ({PROMPT_VERSION})")
            requests = grading_requests(sample, config, max_chars)
            prompt_tokens = round(sum(estimate_tokens(r.messages) for r in requests) / len(requests))
            session.log_estimate(len(requests), prompt_tokens, config.max_tokens)
            # on a Ray cluster (the compute resource's) the gradings run as batches on the workers; the
            # session's totals then come from the ledger rows of this run and asset
            compute = lasting_compute(compute)
            compute_used = engine_name(session, compute)
            results = complete_json_in_batches(session, requests, Grade, compute, config.batch_size)
            threshold = resolve_label_threshold(config.label_threshold, session.endpoint.is_local)
            annotations = annotation_rows(sample, results, threshold, max_chars, session.model)
            lake.write_table("annotated_sample", annotations)
            llm_metadata = session.metadata()
    balance = label_balance(annotations)
    status_counts = dict(Counter(annotations["status"].to_list()))
    return table_result(
        warehouse,
        "annotated_sample",
        {
            "prompt_version": PROMPT_VERSION,
            "compute": compute_used,
            "settings_origin": dg.MetadataValue.json(settings_from),
            "sample/label_threshold": threshold,
            "sample/documents": annotations.height,
            "sample/corpus_documents": corpus_size,
            "sample/max_chars": max_chars,
            "sample/max_docs": max_docs if max_docs is not None else "no cap",
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
