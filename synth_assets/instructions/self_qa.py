"""`self_qa`: Self-QA (Zhang et al. 2023): instruction data from unstructured documents.

Self-QA has three stages. Knowledge-guided instruction generation: the model reads a
document and writes questions "as diverse as possible", phrased as if there were no
document to refer to (no "this"/"these" pointing at it). Machine reading comprehension:
the model answers each question from the document. Filtering: answers and questions
that still refer to the document ("according to the article", "the code above") or
break the format are dropped. Here the documents are `filtered_textbook` files (the
classifier-kept corpus), the first `chunk_chars` characters of each, and every row
keeps `source_doc_id`.
"""

import re

import dagster as dg
import polars as pl
from pydantic import BaseModel, Field

from resources.compute import Compute
from resources.llm import ChatRequest, LLMResource
from resources.llm.batches import on_cluster
from resources.warehouse import Warehouse
from synth_assets.automation import on_upstream_change
from synth_assets.common.tables import table_result
from synth_assets.settings import lasting_compute, settings_origin, with_settings
from synth_assets.filtering.filtered_textbook import FILTERED_TABLE, filtered_textbook
from synth_assets.instructions.execution import ExecutionConfig, attach_code_verdicts
from synth_assets.instructions.filters import (
    DEFAULT_BLACKLIST, MAX_WORDS, MIN_WORDS, ROUGE_L_THRESHOLD, InstructionFilter, clean_candidate, instance_rejection,
    screen_instruction,
)
from synth_assets.instructions.rouge import RougePool
from synth_assets.instructions.rows import (
    REJECT_SCHEMA, complete_json, candidate_id, failure_reason, instruction_id, instruction_metadata, llm_columns, reject, table_schema,
)

METHOD = "self_qa"
TABLE = "self_qa"
REJECTS_TABLE = "self_qa_rejects"
PROMPT_VERSION = "self-qa-v2"
CODE_VERSION = f"self_qa-2+{PROMPT_VERSION}"
MAX_QUESTIONS = 10  # Self-QA asks for ten questions per document
SYSTEM_PROMPT = "You are a Python expert who writes study questions and answers. Answer only with what is asked."
# Self-QA's filter: drop questions/answers that point at the source instead of standing alone.
DOCUMENT_REFERENCES = (
    "the above", "above article", "the article", "this article", "the text", "this text", "the passage",
    "this passage", "the document", "this document", "the given code", "the code above", "this code",
    "the snippet", "this snippet", "this module", "the provided", "according to the",
)

# Character bounds the local model's grammar enforces (rows.grammar_bounded): unbounded,
# the bundled model wrote one endless "question" holding the whole document; with ten
# allowed items it filled all ten with code until max_tokens cut the JSON off. So on the
# local model the list is also capped at the questions kept per document.
LOCAL_QUESTION_CHARS = (15, 160)
EXTRA_SCHEMA = {"source_doc_id": pl.Utf8, "chunk_chars": pl.Int64, "question_cache_key": pl.Utf8, "rouge_l": pl.Float64, "most_similar_id": pl.Utf8}
SCHEMA = table_schema(EXTRA_SCHEMA)


class Questions(BaseModel):
    questions: list[str] = Field(description="standalone questions about the knowledge in the text", min_length=1, max_length=MAX_QUESTIONS)


class SelfQAConfig(ExecutionConfig):
    n_documents: int = Field(default=8, description="filtered_textbook documents sampled (seeded, by md5 of doc_id).")
    questions_per_document: int = Field(default=3, description="Questions kept per document (Self-QA asks for ten).")
    chunk_chars: int = Field(default=1500, description="Characters of each document shown (the bundled model has a 4k context).")
    seed: int = Field(default=0, description="Seed of the document sample.")
    temperature: float = Field(default=0.7, description="Question generation temperature.")
    answer_temperature: float = Field(default=0.0, description="Answer temperature (reading comprehension: greedy).")
    max_tokens: int = Field(default=250, description="Completion cap for one document's questions.")
    answer_max_tokens: int = Field(default=300, description="Completion cap for one answer.")
    rouge_l_threshold: float = Field(default=ROUGE_L_THRESHOLD, description="Drop a question whose ROUGE-L with a kept one is >= this (Self-Instruct's 0.7).")
    min_words: int = Field(default=MIN_WORDS, description="Drop questions with fewer words.")
    max_words: int = Field(default=MAX_WORDS, description="Drop questions with more words.")


def sample_documents(lake, n_documents: int, seed: int) -> list[tuple[str, str]]:
    """(doc_id, content) of a seeded sample, in SQL: ordered by md5(doc_id || seed), LIMIT n."""
    frame = lake.query(
        f'SELECT doc_id, content FROM "{FILTERED_TABLE}" ORDER BY md5(doc_id || ?), doc_id LIMIT {int(n_documents)}', [str(seed)]
    )
    return list(frame.iter_rows())


def chunk(content: str, chunk_chars: int) -> str:
    """The first `chunk_chars` characters, cut back to a line end when there is one."""
    if len(content) <= chunk_chars:
        return content.strip()
    cut = content.rfind("\n", 0, chunk_chars)
    return content[: cut if cut > chunk_chars // 2 else chunk_chars].strip()


def question_messages(document: str, n_questions: int) -> list[dict]:
    user = (
        f"The background knowledge is:\n```python\n{document}\n```\n"
        f"Please generate {n_questions} instruction questions as diverse as possible based on the content above. "
        "They can ask about facts, or about understanding and evaluating the code. Assume there is no document "
        'to refer to when asking, so do not use words like "this" or "these" for it. Give JSON with questions.'
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def answer_messages(document: str, question: str) -> list[dict]:
    user = (
        f"The background knowledge is:\n```python\n{document}\n```\n"
        f"Please answer the following question based on the content above: {question}\n"
        "Answer as thoroughly as possible without changing the key information, and do not include expressions "
        'such as "based on the above article" in the answer. Name functions and modules by their names, '
        'never as "this code" or "the code above".'
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def document_reference(text: str) -> str | None:
    lowered = re.sub(r"\s+", " ", (text or "").lower())
    return next((phrase for phrase in DOCUMENT_REFERENCES if phrase in lowered), None)


def select_questions(documents, results, config: SelfQAConfig, model: str) -> tuple[list[dict], list[dict]]:
    """Stage 1 filtering: (accepted questions with their document, rejects)."""
    rules = InstructionFilter(config.min_words, config.max_words, DEFAULT_BLACKLIST, config.rouge_l_threshold)
    pool = RougePool()
    accepted, rejects = [], []
    for (doc_id, content), result in zip(documents, results, strict=True):
        failed = failure_reason(result)
        if failed:
            rejects.append(reject(METHOD, "question_generation", failed, source_id=doc_id, output=result.raw_text,
                                  cache_key=result.cache_key, model=model))
            continue
        kept = 0
        for raw in result.parsed.questions:
            question = clean_candidate(raw)
            base = dict(source_id=doc_id, instruction=question, cache_key=result.cache_key, model=model)
            reference = document_reference(question)
            if kept >= config.questions_per_document:
                rejects.append(reject(METHOD, "question_filter", f"over_quota: {config.questions_per_document} per document", **base))
                continue
            if reference:
                rejects.append(reject(METHOD, "question_filter", f"refers_to_document: {reference}", **base))
                continue
            screened = screen_instruction(question, candidate_id(METHOD, question), pool, rules)
            if screened.reason:
                rejects.append(reject(METHOD, "question_filter", screened.reason, rouge_l=screened.rouge_l,
                                      most_similar_id=screened.most_similar_id, **base))
                continue
            kept += 1
            accepted.append((doc_id, chunk(content, config.chunk_chars), question, result.cache_key, screened))
    return accepted, rejects


def answer_rows(accepted, results, model: str) -> tuple[list[dict], list[dict]]:
    """Stage 2 answers + stage 3 filtering: (rows, rejects)."""
    rows, rejects = [], []
    for (doc_id, document, question, question_key, screened), result in zip(accepted, results, strict=True):
        answer = (result.text or "").strip()
        base = dict(source_id=doc_id, instruction=question, output=answer, cache_key=result.cache_key, model=model)
        problem = failure_reason(result) or instance_rejection("", answer)
        reference = None if problem else document_reference(answer)
        if problem or reference:
            rejects.append(reject(METHOD, "answer_filter", problem or f"refers_to_document: {reference}", **base))
            continue
        rows.append({
            "instruction_id": instruction_id(METHOD, question, "", answer), "method": METHOD,
            "instruction": question, "input": "", "output": answer, "source_doc_id": doc_id,
            "chunk_chars": len(document), "question_cache_key": question_key,
            "rouge_l": screened.rouge_l, "most_similar_id": screened.most_similar_id,
            **llm_columns(result, model, PROMPT_VERSION),
        })
    return rows, rejects


@dg.asset(
    group_name="instructions",
    kinds={"duckdb", "python", "openai"},
    owners=["team:synth-assets"],
    code_version=CODE_VERSION,
    deps=[filtered_textbook],
    automation_condition=on_upstream_change(),
)
def self_qa(
    context: dg.AssetExecutionContext, config: SelfQAConfig, warehouse: Warehouse, llm: LLMResource,
    compute: Compute,
) -> dg.MaterializeResult:
    """Question/answer rows grounded in `filtered_textbook` documents (Self-QA): for a
    seeded sample of documents the LLM writes standalone questions about the first
    `chunk_chars` characters, then answers each from the same text. `instruction` is the
    question, `input` is empty, `output` the answer, and `source_doc_id` the document
    (join `filtered_textbook.doc_id`). Dropped questions and answers are in
    `self_qa_rejects` with their reason: the call failed, the text refers to the document
    ("this code", "according to the..."), too short, a near-duplicate (ROUGE-L >= 0.7) of
    a kept question, over the per-document quota, or an empty answer. Python in answers
    is parsed and its asserts run in the sandbox."""
    settings_from = settings_origin(config, "self_qa")  # before the merge: what the launchpad set
    config = with_settings(config, "self_qa")
    with warehouse.materialization(context) as lake:
        documents = sample_documents(lake, config.n_documents, config.seed)
        with llm.session(context, warehouse) as driver, on_cluster(driver, lasting_compute(compute)) as session:
            session.log_estimate(len(documents) * (1 + config.questions_per_document), 500, config.answer_max_tokens)
            question_results = complete_json(
                session,
                [ChatRequest(question_messages(chunk(content, config.chunk_chars), config.questions_per_document),
                             temperature=config.temperature, max_tokens=config.max_tokens, row_id=doc_id)
                 for doc_id, content in documents],
                schema=Questions, local_lengths={"questions": (*LOCAL_QUESTION_CHARS, config.questions_per_document)},
            )
            accepted, rejects = select_questions(documents, question_results, config, session.model)
            answers = session.complete([
                ChatRequest(answer_messages(document, question), temperature=config.answer_temperature,
                            max_tokens=config.answer_max_tokens, row_id=doc_id)
                for doc_id, document, question, _, _ in accepted
            ])
            rows, answer_rejects = answer_rows(accepted, answers, session.model)
            llm_metadata = {**session.metadata(), "compute": session.engine}
        rejects += answer_rejects
        report = attach_code_verdicts(rows, config)
        lake.write_table(TABLE, pl.DataFrame(rows, schema=SCHEMA))
        lake.write_table(REJECTS_TABLE, pl.DataFrame(rejects, schema=REJECT_SCHEMA))
        context.log.info(f"self_qa: {len(rows)} rows from {len(documents)} documents, {len(rejects)} rejected")
    metadata = {
        "documents": len(documents),
        "settings_origin": dg.MetadataValue.json(settings_from),
        "documents_with_rows": len({row["source_doc_id"] for row in rows}),
        "prompt_version": PROMPT_VERSION,
        **instruction_metadata(rows, rejects, report),
        **llm_metadata,
    }
    return table_result(warehouse, TABLE, metadata, snapshot_id=lake.snapshot_id_published)
