"""`personas`: a persona pool in the way of Persona Hub (Ge et al. 2024, "Scaling
Synthetic Data Creation with 1,000,000,000 Personas", section 2).

1. Text-to-persona: for each sampled corpus document the LLM answers "who is likely to
   read, write or like this text?" with one fine-grained persona.
2. Persona-to-persona: each persona is asked for one person in close relationship
   with it (a colleague, a client, a student, ...), `hops` times in a chain (the paper
   runs six iterations, after "six degrees of separation"); each row keeps its chain.
3. Dedup, as the paper: MinHash on 1-gram shingles, 128 permutations, Jaccard 0.9,
   then embedding cosine similarity 0.9 (the first of a group is kept).
The shipped personas (catalog/personas.json) are always in the pool, first, as the
fallback seed: with no corpus, or a model that answers nothing usable, the pool is
still full.
"""

import hashlib
import re
from dataclasses import dataclass, field

import dagster as dg
import numpy as np
import polars as pl
from pydantic import BaseModel, Field

from resources.compute import Compute
from resources.llm import ChatRequest, LLMResource, StructuredResult
from resources.llm.batches import on_cluster
from resources.warehouse import Warehouse
from synth_assets.automation import on_code_change
from synth_assets.common.tables import counts_markdown, table_result
from synth_assets.ingest.raw_stack_plus import raw_stack_plus
from synth_assets.settings import lasting_compute, settings_origin, with_settings
from synth_assets.synthesis.prompt_plans import (
    PERSONA_JACCARD_THRESHOLD,
    Persona,
    dedupe_personas,
    load_catalog,
    persona_pool,
    persona_tokens,
    sample_corpus_files,
)
from synth_assets.common.minhash import exact_jaccard

PROMPT_VERSION = "personas-v1"
PERSONAS_TABLE = "personas"
REJECTS_TABLE = "persona_rejects"
CORPUS_TABLES = ("raw_stack_plus",)
# Persona Hub section 2.2: "we perform persona-to-persona ... six iterations".
DEFAULT_HOPS = 6
# Persona Hub section 2.3: embedding dedup, cosine similarity threshold 0.9.
EMBEDDING_COSINE_THRESHOLD = 0.9
MIN_PERSONA_CHARS = 12
MAX_PERSONA_CHARS = 300
MAX_TEXT_CHARS = 1200  # the bundled model's context is 4k tokens


class PersonaAnswer(BaseModel):
    persona: str = Field(description="one fine-grained persona in a single sentence")


SYSTEM_PROMPT = "You describe people in one precise sentence. Answer only with JSON."
TEXT_EXAMPLE = "a hydrologist who models river floods and writes Python scripts to clean gauge data"
RELATION_EXAMPLE = "the ward nurse who relays the doctor's instructions to patients' families"
# A small model copies the prompt's example; an answer sharing this much of its words is the example.
EXAMPLE_COPY_JACCARD = 0.6


def text_to_persona_messages(text: str) -> list[dict]:
    """Persona Hub's text-to-persona prompt (Figure 3), asking for a fine-grained persona."""
    user = "\n".join([
        "Who is likely to read, write or like the following text? Describe that person as one specific, "
        "fine-grained persona (their job, field and what they care about), in one sentence.",
        "Text:", "```", text[:MAX_TEXT_CHARS], "```",
        f'Answer in JSON, for example: {{"persona": "{TEXT_EXAMPLE}"}}',
    ])
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def persona_to_persona_messages(persona: str) -> list[dict]:
    """Persona Hub's persona-to-persona prompt (Figure 5): who is in close relationship with it?"""
    user = "\n".join([
        "Who is in close relationship with the given persona (a colleague, client, student, supplier, family "
        "member, ...)? Describe just one such person as a persona, in one sentence.",
        f"Persona: {persona}",
        f'Answer in JSON, for example: {{"persona": "{RELATION_EXAMPLE}"}}',
    ])
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def load_personas(lake) -> tuple[list[Persona], int]:
    """The `personas` pool in its stored order, or the shipped list (deduplicated) when
    that table does not exist; (personas, personas removed as near-duplicates here).
    What textbook prompts and exercise plans draw from."""
    if lake.table_exists(PERSONAS_TABLE):
        frame = lake.query(f'SELECT persona, source FROM "{PERSONAS_TABLE}" ORDER BY persona_id')
        pool = [Persona(row["persona"], row["source"]) for row in frame.iter_rows(named=True)]
        if pool:
            return pool, 0
    pool, removed = persona_pool(load_catalog())
    return pool, len(removed)


def persona_id(text: str) -> str:
    return hashlib.sha256(text.strip().lower().encode()).hexdigest()[:16]


def clean_persona(result: StructuredResult) -> tuple[str | None, str | None]:
    """(persona, None) or (None, reason): `llm_<status>`, `no_persona`, `too_short`, `too_long`,
    `copies_prompt_example`."""
    if isinstance(result.parsed, PersonaAnswer):
        text = result.parsed.persona
    elif result.status != "ok":
        return None, f"llm_{result.status}"
    else:
        return None, "no_persona"
    text = re.sub(r"\s+", " ", text or "").strip().strip('"').strip()
    if len(text) < MIN_PERSONA_CHARS or len(text.split()) < 3:
        return None, "too_short"
    if len(text) > MAX_PERSONA_CHARS:
        return None, "too_long"
    words = persona_tokens(text)
    for example in (TEXT_EXAMPLE, RELATION_EXAMPLE):
        if exact_jaccard(words, persona_tokens(example)) >= EXAMPLE_COPY_JACCARD:
            return None, "copies_prompt_example"
    return text, None


@dataclass
class PersonaRow:
    persona: str
    source: str  # "catalog", "text:<doc_id>" or "persona:<parent persona_id>"
    hop: int  # 0 for catalog and text-derived personas, k for the k-th expansion
    chain: list[str] = field(default_factory=list)  # root persona ... this persona
    doc_id: str | None = None
    cache_key: str | None = None

    def row(self) -> dict:
        return {"persona_id": persona_id(self.persona), "persona": self.persona, "source": self.source, "hop": self.hop,
                "chain": self.chain or [self.persona], "doc_id": self.doc_id, "cache_key": self.cache_key}


@dataclass(frozen=True)
class EmbeddingDuplicate:
    index: int
    near_duplicate_of: int
    cosine: float


def embedding_near_duplicates(vectors: np.ndarray, threshold: float = EMBEDDING_COSINE_THRESHOLD) -> list[EmbeddingDuplicate]:
    """Greedy, in order: a vector whose cosine with an earlier *kept* one is >= threshold
    is a duplicate of the most similar of them. NaN rows (failed embeddings) are kept."""
    if len(vectors) == 0:
        return []
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = vectors / norms
    kept: list[int] = []
    found = []
    for index in range(len(unit)):
        if not np.all(np.isfinite(unit[index])):
            continue
        if kept:
            similarities = unit[kept] @ unit[index]
            best = int(np.argmax(similarities))
            if similarities[best] >= threshold:
                found.append(EmbeddingDuplicate(index, kept[best], round(float(similarities[best]), 4)))
                continue
        kept.append(index)
    return found


def dedupe(candidates: list[PersonaRow], vectors_of, jaccard: float, cosine: float) -> tuple[list[PersonaRow], list[dict]]:
    """Exact repeats, then MinHash (1-gram, 128 permutations, Jaccard), then embedding
    cosine on the survivors; `vectors_of(texts)` embeds. Returns (kept, reject rows)."""
    rejects = []
    unique: dict[str, PersonaRow] = {}
    for candidate in candidates:
        key = candidate.persona.strip().lower()
        if key in unique:
            rejects.append({**_reject_base(candidate), "reason": "exact_duplicate",
                            "near_duplicate_of": unique[key].persona, "similarity": 1.0})
        else:
            unique[key] = candidate
    by_text = {c.persona: c for c in unique.values()}
    kept_texts, removed = dedupe_personas(list(by_text), jaccard)
    for r in removed:
        rejects.append({**_reject_base(by_text[r.persona]), "reason": "near_duplicate_minhash",
                        "near_duplicate_of": r.near_duplicate_of, "similarity": r.jaccard})
    survivors = [by_text[text] for text in kept_texts]
    vectors = np.asarray(vectors_of([s.persona for s in survivors])) if survivors else np.zeros((0, 1))
    duplicates = {d.index: d for d in embedding_near_duplicates(vectors, cosine)}
    kept = []
    for index, survivor in enumerate(survivors):
        duplicate = duplicates.get(index)
        if duplicate is None:
            kept.append(survivor)
        else:
            rejects.append({**_reject_base(survivor), "reason": "near_duplicate_embedding",
                            "near_duplicate_of": survivors[duplicate.near_duplicate_of].persona,
                            "similarity": duplicate.cosine})
    return kept, rejects


def _reject_base(candidate: PersonaRow) -> dict:
    return {"persona": candidate.persona, "source": candidate.source, "hop": candidate.hop, "doc_id": candidate.doc_id,
            "cache_key": candidate.cache_key}


class PersonasConfig(dg.Config):
    n_docs: int = Field(default=8, description="raw_stack_plus documents turned into personas (text-to-persona).")
    hops: int = Field(default=DEFAULT_HOPS, ge=0, description="Persona-to-persona expansions per chain (Persona Hub: 6).")
    seed: int = Field(default=0, description="Seed for the document sample.")
    max_tokens: int = Field(default=60, description="Completion token cap per persona.")
    temperature: float | None = Field(default=None, description="Sampling temperature; None = the resource's default.")
    jaccard_threshold: float = Field(default=PERSONA_JACCARD_THRESHOLD, description="MinHash 1-gram Jaccard dedup (Persona Hub: 0.9).")
    cosine_threshold: float = Field(default=EMBEDDING_COSINE_THRESHOLD, description="Embedding cosine dedup (Persona Hub: 0.9).")


def ask(session, messages: list[list[dict]], row_ids: list[str], config: PersonasConfig) -> list[StructuredResult]:
    requests = [ChatRequest(messages=m, temperature=config.temperature, max_tokens=config.max_tokens, row_id=r)
                for m, r in zip(messages, row_ids)]
    return session.complete_json(requests, schema=PersonaAnswer) if requests else []


def grow_personas(session, docs: list[tuple[str, str]], config: PersonasConfig) -> tuple[list[PersonaRow], list[dict]]:
    """Text-to-persona for every document, then `hops` rounds of persona-to-persona,
    each round expanding the personas the previous one produced."""
    candidates: list[PersonaRow] = []
    rejects: list[dict] = []
    results = ask(session, [text_to_persona_messages(text) for _, text in docs], [d for d, _ in docs], config)
    frontier = []
    for (doc_id, _), result in zip(docs, results):
        text, reason = clean_persona(result)
        if reason:
            rejects.append({"persona": None, "source": f"text:{doc_id}", "hop": 0, "doc_id": doc_id,
                            "cache_key": result.cache_key, "reason": reason, "near_duplicate_of": None, "similarity": None})
            continue
        row = PersonaRow(text, f"text:{doc_id}", 0, [text], doc_id, result.cache_key)
        candidates.append(row)
        frontier.append(row)
    for hop in range(1, config.hops + 1):
        results = ask(session, [persona_to_persona_messages(p.persona) for p in frontier],
                      [persona_id(p.persona) for p in frontier], config)
        next_frontier = []
        for parent, result in zip(frontier, results):
            text, reason = clean_persona(result)
            if reason is None and text.lower() == parent.persona.lower():
                reason = "repeats_parent"
            if reason:
                rejects.append({"persona": text, "source": f"persona:{persona_id(parent.persona)}", "hop": hop,
                                "doc_id": parent.doc_id, "cache_key": result.cache_key, "reason": reason,
                                "near_duplicate_of": None, "similarity": None})
                continue
            row = PersonaRow(text, f"persona:{persona_id(parent.persona)}", hop, [*parent.chain, text], parent.doc_id,
                             result.cache_key)
            candidates.append(row)
            next_frontier.append(row)
        frontier = next_frontier
    return candidates, rejects


PERSONA_SCHEMA = {
    "persona_id": pl.Utf8, "persona": pl.Utf8, "source": pl.Utf8, "hop": pl.Int64, "chain": pl.List(pl.Utf8),
    "doc_id": pl.Utf8, "model": pl.Utf8, "prompt_version": pl.Utf8, "cache_key": pl.Utf8,
}
PERSONA_REJECT_SCHEMA = {
    "persona": pl.Utf8, "source": pl.Utf8, "hop": pl.Int64, "doc_id": pl.Utf8, "reason": pl.Utf8,
    "near_duplicate_of": pl.Utf8, "similarity": pl.Float64, "cache_key": pl.Utf8,
}


@dg.asset(
    group_name="synthesis",
    kinds={"duckdb", "python", "openai"},
    owners=["team:synth-assets"],
    code_version=f"personas-1+{PROMPT_VERSION}",
    deps=[raw_stack_plus],
    automation_condition=on_code_change(),
)
def personas(
    context: dg.AssetExecutionContext, config: PersonasConfig, warehouse: Warehouse, llm: LLMResource,
    compute: Compute,
) -> dg.MaterializeResult:
    """The persona pool the synthesis prompts draw from (Persona Hub), one row per
    persona: `persona`, `source` (`catalog` for the shipped list, `text:<doc_id>` for a
    persona the LLM derived from a `raw_stack_plus` document, `persona:<persona_id>`
    for one reached by persona-to-persona expansion), `hop` (0 = catalog or
    text-derived; k = k-th relationship hop) and `chain` (the personas from the
    text-derived root to this one). The shipped personas come first and are always
    present, so the pool is never empty.

    Deduplicated as in the paper: MinHash on 1-gram shingles, 128 permutations,
    Jaccard >= 0.9, then embedding cosine >= 0.9; the first of a group is kept.
    `persona_rejects` holds every persona left out with its reason (`near_duplicate_minhash`,
    `near_duplicate_embedding` with `near_duplicate_of` and the similarity, `copies_prompt_example`, `too_short`,
    `too_long`, `no_persona`, `repeats_parent`, `llm_error`)."""
    origin = settings_origin(config, "personas")  # before the merge: which values the launchpad set
    config = with_settings(config, "personas")
    catalog_rows = [PersonaRow(text, "catalog", 0) for text in load_catalog().personas]
    with warehouse.materialization(context) as lake:
        docs = sample_corpus_files(lake, CORPUS_TABLES, config.n_docs, config.seed)
        with llm.session(context, warehouse) as driver, on_cluster(driver, lasting_compute(compute)) as session:
            session.log_estimate(len(docs) * (1 + config.hops), 250, config.max_tokens)
            grown, rejects = grow_personas(session, docs, config)
            kept, duplicates = dedupe(catalog_rows + grown, session.embed, config.jaccard_threshold, config.cosine_threshold)
            rejects += duplicates
            rows = [{**row.row(), "model": None if row.source == "catalog" else session.model,
                     "prompt_version": PROMPT_VERSION} for row in kept]
            lake.write_table(PERSONAS_TABLE, pl.DataFrame(rows, schema=PERSONA_SCHEMA))
            lake.write_table(REJECTS_TABLE, pl.DataFrame(rejects, schema=PERSONA_REJECT_SCHEMA))
            llm_metadata = {**session.metadata(), "compute": session.engine}
        reasons = {}
        for reject in rejects:
            reasons[reject["reason"]] = reasons.get(reject["reason"], 0) + 1
        context.log.info(f"personas: {len(rows)} kept ({sum(1 for r in rows if r['source'] != 'catalog')} from the LLM)")
    return table_result(
        warehouse, PERSONAS_TABLE,
        {
            "personas": len(rows),
            "from_catalog": sum(1 for r in rows if r["source"] == "catalog"),
            "from_text": sum(1 for r in rows if r["source"].startswith("text:")),
            "from_expansion": sum(1 for r in rows if r["source"].startswith("persona:")),
            "max_hop": max((r["hop"] for r in rows), default=0),
            "docs": len(docs),
            "rejection_reasons": dg.MetadataValue.md(counts_markdown(reasons) if rejects else "none"),
            "prompt_version": PROMPT_VERSION,
            "settings_origin": dg.MetadataValue.json(origin),
            **llm_metadata,
        },
        snapshot_id=lake.snapshot_id_published,
    )
