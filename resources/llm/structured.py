"""Schema-constrained JSON answers (`session.complete_json(requests, schema=MyModel)`).

The pydantic schema is sent in the endpoint's dialect (`structured_output_mode`):
OpenAI strict structured outputs (`json_schema`), llama.cpp's grammar-constrained
`json_object` with a schema (`json_object_schema`, what `auto` picks for the local
model), or plain `json_object`. Every answer is validated with pydantic, tolerating code
fences and prose around the object. A malformed answer is retried once as a new sample
(a different cache key and seed, not a replay); if that fails too the result has status
`error`, `parsed=None` and the answer in `raw_text`. Nothing is raised.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

import pydantic

from resources.llm.chat import ChatCompletions
from resources.llm.errors import LLMConfigError
from resources.llm.types import ChatRequest, StructuredResult

# The JSON repair retry uses a sample index far from any a caller draws, so it is a new
# cache key (and a new seed) rather than a replay of the malformed answer.
JSON_RETRY_SAMPLE_OFFSET = 1_000_000

StructuredOutputMode = Literal["auto", "json_schema", "json_object_schema", "json_object"]
MODES = ("json_schema", "json_object_schema", "json_object")


def resolve_mode(setting: str, is_local: bool) -> str:
    """The dialect for this endpoint: `auto` means llama.cpp's for the local model,
    OpenAI's otherwise."""
    mode = setting
    if mode == "auto":
        mode = "json_object_schema" if is_local else "json_schema"
    if mode not in MODES:
        raise LLMConfigError(f"unknown structured_output_mode {setting!r}")
    return mode


def strict_json_schema(schema: dict) -> dict:
    """A pydantic JSON schema made acceptable to OpenAI strict structured outputs:
    every object closed (`additionalProperties: false`) with all properties required,
    and no `default` keywords."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: walk(v) for k, v in node.items() if k != "default"}
            if out.get("type") == "object" or "properties" in out:
                props = out.get("properties", {})
                out["additionalProperties"] = False
                out["required"] = list(props.keys())
            return out
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    return walk(schema)


def grammar_friendly_schema(schema: dict, max_enum: int = 101) -> dict:
    """llama.cpp's schema-to-grammar ignores integer minimum/maximum; a small integer
    range is spelled out as an enum so the grammar itself keeps answers in range."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: walk(v) for k, v in node.items()}
            low, high = out.get("minimum"), out.get("maximum")
            if out.get("type") == "integer" and low is not None and high is not None and 0 <= high - low < max_enum:
                out = {k: v for k, v in out.items() if k not in ("minimum", "maximum")}
                out["enum"] = list(range(int(low), int(high) + 1))
            return out
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    return walk(schema)


def response_format_for(schema: type[pydantic.BaseModel], mode: str) -> dict:
    """The `response_format` asking for JSON matching `schema`, in the endpoint's dialect."""
    json_schema = schema.model_json_schema()
    if mode == "json_schema":  # OpenAI structured outputs
        name = re.sub(r"[^a-zA-Z0-9_-]", "_", schema.__name__)[:64]
        return {
            "type": "json_schema",
            "json_schema": {"name": name, "schema": strict_json_schema(json_schema), "strict": True},
        }
    if mode == "json_object_schema":  # llama.cpp server: grammar-constrained to the schema
        return {"type": "json_object", "schema": grammar_friendly_schema(json_schema)}
    if mode == "json_object":
        return {"type": "json_object"}
    raise LLMConfigError(f"unknown structured_output_mode {mode!r}")


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def parse_structured(text: str | None, schema: type[pydantic.BaseModel]) -> tuple[pydantic.BaseModel | None, str | None]:
    """(parsed, None) or (None, why it failed). Tolerates code fences and prose around
    the JSON object."""
    if not text or not text.strip():
        return None, "empty answer"
    candidates = [text.strip()]
    candidates += [m.strip() for m in _FENCE.findall(text)]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    last_error = "no JSON object found"
    for candidate in candidates:
        try:
            data = json.loads(candidate)
        except json.JSONDecodeError as exc:
            last_error = f"invalid JSON: {exc}"
            continue
        try:
            return schema.model_validate(data), None
        except pydantic.ValidationError as exc:
            last_error = f"schema mismatch: {exc.error_count()} error(s): " + "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5]
            )
    return None, last_error


async def complete_json(
    chat: ChatCompletions, requests: list[ChatRequest], schema: type[pydantic.BaseModel], mode: str, log: Any
) -> list[StructuredResult]:
    """Ask, validate, and retry each malformed answer once; tokens, dollars and attempts
    of both tries are added up on the result."""
    response_format = response_format_for(schema, mode)
    first = await chat.complete(requests, response_format, label="complete_json")
    results: list[StructuredResult] = []
    retry_positions: list[int] = []
    for position, result in enumerate(first):
        structured = StructuredResult(**vars(result), raw_text=result.text)
        if result.status == "ok":
            parsed, why = parse_structured(result.text, schema)
            if parsed is not None:
                structured.parsed = parsed
            else:
                structured.error = why
                retry_positions.append(position)
        results.append(structured)
    if retry_positions:
        log.info(f"complete_json: {len(retry_positions)} malformed answer(s), retrying each once as a new sample")
        second = await chat.complete(
            [requests[p] for p in retry_positions],
            response_format,
            label="complete_json retry",
            sample_offset=JSON_RETRY_SAMPLE_OFFSET,
        )
        for position, retry in zip(retry_positions, second):
            before = results[position]
            merged = StructuredResult(**vars(retry), raw_text=retry.text)
            merged.prompt_tokens += before.prompt_tokens
            merged.completion_tokens += before.completion_tokens
            merged.cost_usd = None if (before.cost_usd is None or retry.cost_usd is None) else before.cost_usd + retry.cost_usd
            merged.attempts += before.attempts
            if retry.status == "ok":
                parsed, why = parse_structured(retry.text, schema)
                merged.parsed = parsed
                if parsed is None:
                    merged.status = "error"
                    merged.error = f"malformed structured answer after one retry: {why}"
            results[position] = merged
    return results
