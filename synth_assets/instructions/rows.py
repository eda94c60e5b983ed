"""Ids and column layouts shared by the four instruction tables and their rejects.

Every instruction table has the release layout first (`instruction`, `input`,
`output`), the method's own columns, the execution verdict of any Python in the output
(`execution.CodeVerdict`), then the LLM bookkeeping (`model`, `prompt_version`,
`cache_key` of the call that wrote the output, tokens). Every rejects table has one row
per dropped candidate with `stage` (where it was dropped), `reason` and, for the
similarity filter, the ROUGE-L score and the pool member it was too close to.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from typing import Annotated

import dagster as dg
import polars as pl
from pydantic import BaseModel, Field, StringConstraints, create_model

from synth_assets.common.tables import counts_markdown

RELEASE_COLUMNS = ("instruction", "input", "output")


def instruction_id(method: str, instruction: str, input_text: str, output: str) -> str:
    """Content hash of the method and the three release columns (16 hex chars)."""
    payload = json.dumps([method, instruction.strip(), (input_text or "").strip(), (output or "").strip()])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def candidate_id(method: str, *parts: object) -> str:
    """Content hash naming a candidate before it has an output (rejects, pool members)."""
    return hashlib.sha256(json.dumps([method, *map(str, parts)]).encode()).hexdigest()[:16]


HEAD_SCHEMA = {"instruction_id": pl.Utf8, "method": pl.Utf8, "instruction": pl.Utf8, "input": pl.Utf8, "output": pl.Utf8}
CODE_SCHEMA = {
    "has_code": pl.Boolean, "code_parses": pl.Boolean, "n_asserts": pl.Int64,
    "sandbox_passed": pl.Boolean, "sandbox_reason": pl.Utf8,
}
LLM_SCHEMA = {
    "model": pl.Utf8, "prompt_version": pl.Utf8, "cache_key": pl.Utf8,
    "prompt_tokens": pl.Int64, "completion_tokens": pl.Int64,
}
REJECT_SCHEMA = {
    "candidate_id": pl.Utf8, "method": pl.Utf8, "stage": pl.Utf8, "round": pl.Int64, "source_id": pl.Utf8,
    "instruction": pl.Utf8, "input": pl.Utf8, "output": pl.Utf8, "reason": pl.Utf8,
    "rouge_l": pl.Float64, "most_similar_id": pl.Utf8, "model": pl.Utf8, "cache_key": pl.Utf8,
}


def table_schema(extra: dict) -> dict:
    """The full schema of an instruction table with the method's `extra` columns."""
    return {**HEAD_SCHEMA, **extra, **CODE_SCHEMA, **LLM_SCHEMA}


def reject(method: str, stage: str, reason: str, **fields) -> dict:
    """One rejects row (missing columns are None)."""
    row = dict.fromkeys(REJECT_SCHEMA)
    row.update(method=method, stage=stage, reason=reason, **fields)
    if row["candidate_id"] is None:
        row["candidate_id"] = candidate_id(method, stage, row["round"], row["source_id"], row["instruction"], row["output"])
    return row


def reason_family(reason: str) -> str:
    """`rouge_l: 0.812 >= 0.7` -> `rouge_l`, for counting."""
    return reason.split(":", 1)[0]


def failure_reason(result) -> str | None:
    """Why an LLM result gave nothing usable (`llm_error`, `llm_budget_exceeded`,
    `malformed_json`), or None. Works for ChatResult and StructuredResult."""
    if result.status != "ok":
        return f"llm_{result.status}"
    if hasattr(result, "parsed") and result.parsed is None:
        return "malformed_json"
    return None


def llm_columns(result, model: str, prompt_version: str) -> dict:
    return {
        "model": model, "prompt_version": prompt_version, "cache_key": result.cache_key,
        "prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
    }


def instruction_metadata(rows: list[dict], rejects: list[dict], report: dict | None) -> dict:
    """What every instruction asset reports: rows, rejects by reason, code verdicts."""
    reasons = Counter(reason_family(r["reason"]) for r in rejects)
    with_asserts = [row for row in rows if row["n_asserts"]]
    return {
        "rows": len(rows),
        "rejected": len(rejects),
        "rejection_reasons": dg.MetadataValue.md(counts_markdown(dict(reasons)) if rejects else "none"),
        "with_code": sum(1 for row in rows if row["has_code"]),
        "code_parses": sum(1 for row in rows if row["code_parses"]),
        "executed_with_asserts": len(with_asserts),
        "sandbox_passed": sum(1 for row in with_asserts if row["sandbox_passed"]),
        "distinct_instructions": len({row["instruction"].lower() for row in rows}),
        **({"sandbox_isolation": dg.MetadataValue.json(report)} if report else {}),
    }


def grammar_bounded(schema: type[BaseModel], lengths: dict[str, tuple[int, ...]]) -> type[BaseModel]:
    """`schema` with (min, max) character bounds on the named string (or list-of-string)
    fields, field order kept; a third number caps a list's items. llama.cpp's grammar turns `minLength`/`maxLength` into the
    grammar itself, so a small model can neither leave a field empty nor run a string on
    until `max_tokens` cuts the JSON off (what the bundled 135M model did unbounded).
    Only sent to the local model: OpenAI strict structured outputs reject the keywords."""
    overrides = {}
    for name, (low, high, *max_items) in lengths.items():
        field = schema.model_fields[name]
        bounded = Annotated[str, StringConstraints(min_length=low, max_length=high)]
        if field.annotation is str:
            overrides[name] = (str, Field(description=field.description, min_length=low, max_length=high))
        else:  # list[str]: bound each item, keep the list's own bounds
            items = {k: v for m in field.metadata for k, v in (("min_length", getattr(m, "min_length", None)),
                                                               ("max_length", getattr(m, "max_length", None))) if v is not None}
            if max_items:
                items["max_length"] = min(max_items[0], items.get("max_length", max_items[0]))
            overrides[name] = (list[bounded], Field(description=field.description, **items))
    return create_model(schema.__name__, __base__=schema, **overrides)


def complete_json(session, requests: list, schema: type, local_lengths: dict[str, tuple[int, ...]] | None = None) -> list:
    """`session.complete_json`, with `local_lengths` string bounds on the local model
    (`grammar_bounded`), plus a lenient second reading of answers that failed only
    because a JSON string holds a raw control character (a newline): the bundled llama.cpp
    grammar lets the model write those, and strict `json.loads` refuses them. A salvaged
    answer gets status `ok` and its `parsed` object; anything else is left as it came."""
    if local_lengths and session.endpoint.is_local:
        schema = grammar_bounded(schema, local_lengths)
    results = session.complete_json(requests, schema=schema) if requests else []
    for result in results:
        if result.parsed is not None or not result.raw_text or "control character" not in (result.error or ""):
            continue
        start, end = result.raw_text.find("{"), result.raw_text.rfind("}")
        try:
            result.parsed = schema.model_validate(json.loads(result.raw_text[start : end + 1], strict=False))
        except ValueError:  # json.JSONDecodeError and pydantic.ValidationError are both ValueErrors
            continue
        result.status, result.error = "ok", None
    return results
