"""Prompt plans: seeded draws of every slot that makes one synthetic prompt differ from
the next (phi-1 section 2.2: "inject randomness into the prompt ... constraining topics
and target audience"; TinyStories: a random verb, noun and adjective from ~1,500 words
and two story features per prompt; Persona Hub: personas as a diversity axis). Plans
are plain data, stored per prompt, so a section or exercise can always be traced back
to the exact slots that produced it.

Personas come from the `personas` asset (LLM text-to-persona and persona-to-persona,
see personas.py) or, without it, from the shipped list and a cheap deterministic
text-to-persona derivation (`persona_from_source`). All personas are deduplicated with
MinHash (Persona Hub: 1-gram shingles, 128 permutations, Jaccard threshold 0.9).
"""

from __future__ import annotations

import ast
import hashlib
import json
import random
import re
import warnings
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

from synth_assets.common.minhash import (
    MinHasher,
    MinHashParams,
    exact_jaccard,
    greedy_near_duplicates,
    shingle_hashes,
    token_hashes,
)

CATALOG_DIR = Path(__file__).parent / "catalog"

# Persona Hub (Ge et al. 2024, section 2.3): MinHash on 1-gram shingles, 128 perms, 0.9.
PERSONA_NUM_PERM = 128
PERSONA_JACCARD_THRESHOLD = 0.9
MINHASH_SEED = 1
# LSH proposes candidates below the threshold, because with 128 permutations the
# estimate of a 0.93 pair can read 0.90 or less; the exact Jaccard decides.
LSH_RECALL_MARGIN = 0.15

EXERCISE_MODES = ("topic", "oss_instruct")


# --------------------------------------------------------------------------- catalog


@dataclass(frozen=True)
class Catalog:
    topics: tuple[tuple[str, tuple[str, ...]], ...]
    personas: tuple[str, ...]
    audiences: tuple[str, ...]
    styles: tuple[tuple[str, str], ...]  # (name, instruction)
    features: tuple[str, ...]
    story_verbs: tuple[str, ...]  # TinyStories' vocabulary, split by part of speech
    story_nouns: tuple[str, ...]
    story_adjectives: tuple[str, ...]
    verbs: tuple[str, ...]
    nouns: tuple[str, ...]
    qualifiers: tuple[str, ...]
    difficulties: tuple[tuple[str, str], ...]  # (name, instruction)
    exercise_examples: tuple[dict, ...] = ()  # answer examples shown in exercise prompts, one per plan

    def exercise_example(self, name: str) -> dict:
        return next(example for example in self.exercise_examples if example["name"] == name)

    def style_instruction(self, name: str) -> str:
        return dict(self.styles)[name]

    def difficulty_instruction(self, name: str) -> str:
        return dict(self.difficulties)[name]


def _words(path: Path) -> tuple[str, ...]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return tuple(line for line in lines if line and not line.startswith("#"))


@lru_cache(maxsize=4)
def load_catalog(directory: str | None = None) -> Catalog:
    """The shipped catalog (synth_assets/catalog/)."""
    root = Path(directory) if directory else CATALOG_DIR

    def load(name: str) -> dict:
        return json.loads((root / name).read_text())

    return Catalog(
        topics=tuple((t["topic"], tuple(t["subtopics"])) for t in load("topics.json")["topics"]),
        personas=tuple(load("personas.json")["personas"]),
        audiences=tuple(load("audiences.json")["audiences"]),
        styles=tuple((s["name"], s["instruction"]) for s in load("styles.json")["styles"]),
        features=tuple(load("features.json")["features"]),
        story_verbs=_words(root / "story_verbs.txt"),
        story_nouns=_words(root / "story_nouns.txt"),
        story_adjectives=_words(root / "story_adjectives.txt"),
        verbs=_words(root / "function_verbs.txt"),
        nouns=_words(root / "function_nouns.txt"),
        qualifiers=_words(root / "function_qualifiers.txt"),
        difficulties=tuple((d["name"], d["instruction"]) for d in load("difficulties.json")["difficulties"]),
        exercise_examples=tuple(load("exercise_examples.json")["examples"]),
    )


# --------------------------------------------------------------------------- personas


def persona_tokens(text: str) -> set[str]:
    """1-gram shingles: lower-cased word tokens."""
    return set(re.findall(r"[a-z0-9]+", text.lower()))


@dataclass(frozen=True)
class RemovedPersona:
    persona: str
    near_duplicate_of: str
    jaccard: float  # exact Jaccard of the 1-gram sets
    reason: str = "near_duplicate_persona"


def dedupe_personas(
    personas: list[str], threshold: float = PERSONA_JACCARD_THRESHOLD
) -> tuple[list[str], list[RemovedPersona]]:
    """Keep the first of every group of near-identical personas (a persona without
    words is dropped). The shared MinHash LSH finds candidates, queried a little below
    the threshold; the exact Jaccard of the two token sets decides, so the outcome does
    not depend on estimator noise. Of equally similar kept personas, the earliest is named."""
    params = MinHashParams(
        ngram_size=1,
        num_perm=PERSONA_NUM_PERM,
        threshold=threshold,
        seed=MINHASH_SEED,
        lsh_threshold=max(threshold - LSH_RECALL_MARGIN, 0.1),
    )
    token_sets = [persona_tokens(persona) for persona in personas]
    shingle_sets = [shingle_hashes(token_hashes(sorted(tokens)), 1) for tokens in token_sets]
    signatures = MinHasher(params).signatures_from_hash_sets(shingle_sets)
    found = greedy_near_duplicates(
        [signature if tokens else None for signature, tokens in zip(signatures, token_sets)],
        params,
        similarity=lambda index, kept: exact_jaccard(token_sets[index], token_sets[kept]),
    )
    dropped = {index for index, _, _ in found}
    kept = [persona for index, persona in enumerate(personas) if token_sets[index] and index not in dropped]
    removed = [RemovedPersona(personas[index], personas[of], round(jaccard, 4)) for index, of, jaccard in found]
    return kept, removed


def persona_from_source(content: str) -> str | None:
    """Text-to-persona, deterministic: who would maintain this file? Uses the module
    docstring's first sentence and the top-level imported packages. None when the file
    gives nothing to go on (no docstring and no imports, or it does not parse)."""
    try:
        tree = ast.parse(content)
    except (SyntaxError, ValueError):
        return None
    packages: list[str] = []
    for node in tree.body:
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            if top not in packages and top not in {"__future__", "typing", "os", "sys"}:
                packages.append(top)
    docstring = ast.get_docstring(tree) or ""
    purpose = re.split(r"(?<=[.!?])\s|\n\n", docstring.strip(), maxsplit=1)[0].strip().rstrip(".")
    purpose = re.sub(r"\s+", " ", purpose)[:100]
    uses = " and ".join(packages[:2])
    if purpose and uses:
        return f"a developer who maintains code that uses {uses} for: {purpose[0].lower() + purpose[1:]}"
    if purpose:
        return f"a developer who maintains code for: {purpose[0].lower() + purpose[1:]}"
    if uses:
        return f"a developer who maintains Python code built on {uses}"
    return None


@dataclass(frozen=True)
class Persona:
    text: str
    source: str  # "catalog" or "corpus:<doc_id>"


def persona_pool(catalog: Catalog, corpus: list[tuple[str, str]] = ()) -> tuple[list[Persona], list[RemovedPersona]]:
    """Shipped personas plus those derived from corpus files ((doc_id, content) pairs),
    deduplicated together (shipped ones win ties because they come first)."""
    candidates = [Persona(p, "catalog") for p in catalog.personas]
    for doc_id, content in corpus:
        derived = persona_from_source(content)
        if derived:
            candidates.append(Persona(derived, f"corpus:{doc_id}"))
    kept_texts, removed = dedupe_personas([c.text for c in candidates])
    source_of = {}
    for candidate in candidates:
        source_of.setdefault(candidate.text, candidate.source)
    return [Persona(text, source_of[text]) for text in kept_texts], removed


# --------------------------------------------------------------------------- plans


def content_id(payload: dict) -> str:
    """A stable id: sha256 of the canonical JSON of the slots (first 16 hex chars)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


# TinyStories (Eldan & Li 2023, section 2): two features per story; one verb, one noun
# and one adjective per story.
N_FEATURES = 2
FEATURE_SEPARATOR = "; "


@dataclass(frozen=True)
class TextbookPrompt:
    prompt_id: str
    topic: str
    subtopic: str
    audience: str
    persona: str
    persona_source: str
    style: str
    required_words: list[str]  # [verb, noun, adjective]
    feature: str  # the features joined by "; " (kept for readers of the one-feature column)
    seed: int
    features: list[str] = field(default_factory=list)
    prompt_index: int = 0  # the draw's position: its slots depend only on (seed, prompt_index)

    def row(self) -> dict:
        return asdict(self)


def slot_rng(kind: str, seed: int, index: int) -> random.Random:
    """The generator of one plan's draws: a function of (kind, seed, index) alone, so plan
    i is the same whatever the size of the run (a larger run extends a smaller one and
    reuses its cached answers)."""
    return random.Random(f"{kind}:{seed}:{index}")


def story_words(catalog: Catalog, rng: random.Random) -> list[str]:
    """TinyStories' required words: one verb, one noun, one adjective."""
    return [rng.choice(catalog.story_verbs), rng.choice(catalog.story_nouns), rng.choice(catalog.story_adjectives)]


def plan_textbook_prompts(catalog: Catalog, n_prompts: int, seed: int, personas: list[Persona]) -> list[TextbookPrompt]:
    """`n_prompts` distinct plans. Topics follow one seeded permutation, without
    replacement while they last, so a small run covers many topics; every other slot of
    draw i comes from `slot_rng("textbook", seed, i)`."""
    topic_order = random.Random(seed).sample(range(len(catalog.topics)), len(catalog.topics))
    plans: dict[str, TextbookPrompt] = {}
    index = 0
    while len(plans) < n_prompts and index < n_prompts * 20:
        rng = slot_rng("textbook", seed, index)
        topic, subtopics = catalog.topics[topic_order[index % len(topic_order)]]
        persona = rng.choice(personas)
        features = rng.sample(catalog.features, N_FEATURES)
        slots = {
            "topic": topic,
            "subtopic": rng.choice(subtopics),
            "audience": rng.choice(catalog.audiences),
            "persona": persona.text,
            "persona_source": persona.source,
            "style": rng.choice(catalog.styles)[0],
            "required_words": story_words(catalog, rng),
            "features": features,
            "feature": FEATURE_SEPARATOR.join(features),
        }
        prompt_id = content_id(slots)
        plans.setdefault(prompt_id, TextbookPrompt(prompt_id=prompt_id, seed=seed, prompt_index=index, **slots))
        index += 1
    return list(plans.values())


@dataclass(frozen=True)
class ExercisePlan:
    exercise_id: str
    mode: str  # "topic" or "oss_instruct"
    topic: str
    subtopic: str
    difficulty: str
    function_name: str
    inspiration: str  # the OSS-Instruct snippet ("" in topic mode)
    inspiration_doc_id: str
    seed: int
    persona: str = ""  # who the exercise is written for (Persona Hub), from the `personas` pool
    persona_source: str = ""
    format_example: str = ""  # which shipped answer example the prompt shows (catalog/exercise_examples.json)

    def slots(self) -> dict:
        return asdict(self)


def name_levels(catalog: Catalog) -> list[tuple[tuple[str, ...], ...]]:
    """The function-name space, level by level; each level is a tuple of word lists whose
    product spells names `a_b_c`: verb_noun, then verb_qualifier_noun, then
    verb_qualifier_noun_by_noun. A run draws from a level only once the levels before it
    are used up, so small runs keep short names and large ones never run out silently."""
    v, q, n = catalog.verbs, catalog.qualifiers, catalog.nouns
    return [(v, n), (v, q, n), (v, q, n, tuple(f"by_{noun}" for noun in n))]


def level_size(level: tuple[tuple[str, ...], ...]) -> int:
    size = 1
    for words in level:
        size *= len(words)
    return size


def function_name_space(catalog: Catalog) -> int:
    """How many distinct planned function names the catalog can spell (all levels)."""
    return sum(level_size(level) for level in name_levels(catalog))


def name_at(level: tuple[tuple[str, ...], ...], index: int) -> str:
    """The `index`-th name of a level (mixed-radix decomposition: no list of names is built)."""
    parts = []
    for words in reversed(level):
        index, position = divmod(index, len(words))
        parts.append(words[position])
    return "_".join(reversed(parts))


def name_space_warning(catalog: Catalog, n_names: int) -> str | None:
    """The warning for a plan larger than the name space, or None."""
    space = function_name_space(catalog)
    if n_names <= space:
        return None
    return (
        f"{n_names:,} exercises planned but the function-name space holds {space:,} names "
        f"({' + '.join(f'{level_size(level):,}' for level in name_levels(catalog))} by level); "
        f"planning {space:,}. Add verbs, nouns or qualifiers to the catalog for more."
    )


def draw_function_names(catalog: Catalog, n_names: int, rng: random.Random) -> list[str]:
    """`n_names` distinct names drawn without replacement, level by level (at most the
    whole space; `name_space_warning` says when that cuts the plan short)."""
    names: list[str] = []
    for level in name_levels(catalog):
        wanted = n_names - len(names)
        if wanted <= 0:
            break
        indices = rng.sample(range(level_size(level)), min(wanted, level_size(level)))
        names.extend(name_at(level, index) for index in indices)
    return names


def plan_exercises(
    catalog: Catalog,
    n_exercises: int,
    seed: int,
    snippets: list[tuple[str, str]] = (),
    oss_instruct_fraction: float = 0.25,
    personas: list[Persona] = (),
) -> list[ExercisePlan]:
    """`n_exercises` plans with distinct function names (`draw_function_names`: verb_noun
    first, longer names once those are used up; a plan larger than the whole space warns
    and is cut to it). A fraction uses an OSS-Instruct snippet ((doc_id, snippet) pairs)
    as inspiration when snippets are given. Each plan draws a persona from `personas`
    (the shipped list when none are given) and the answer example its prompt shows,
    both from `slot_rng("exercise", seed, index)`, so they never shift the other draws."""
    pool = list(personas) or [Persona(text, "catalog") for text in catalog.personas]
    rng = random.Random(seed)
    warning = name_space_warning(catalog, n_exercises)
    if warning:
        warnings.warn(warning, stacklevel=2)
    chosen_names = draw_function_names(catalog, n_exercises, rng)
    topic_order = rng.sample(range(len(catalog.topics)), len(catalog.topics))
    plans = []
    for index, function_name in enumerate(chosen_names):
        topic, subtopics = catalog.topics[topic_order[index % len(topic_order)]]
        use_snippet = bool(snippets) and rng.random() < oss_instruct_fraction
        doc_id, snippet = rng.choice(snippets) if use_snippet else ("", "")
        slots = {
            "mode": "oss_instruct" if use_snippet else "topic",
            "topic": topic,
            "subtopic": rng.choice(subtopics),
            "difficulty": rng.choice(catalog.difficulties)[0],
            "function_name": function_name,
            "inspiration": snippet,
            "inspiration_doc_id": doc_id,
        }
        own = slot_rng("exercise", seed, index)
        persona = own.choice(pool)
        slots |= {"persona": persona.text, "persona_source": persona.source,
                  "format_example": own.choice(catalog.exercise_examples)["name"]}
        plans.append(ExercisePlan(exercise_id=content_id(slots), seed=seed, **slots))
    return plans


def random_snippet(content: str, rng: random.Random, min_lines: int = 1, max_lines: int = 15) -> str:
    """OSS-Instruct (Magicoder): a random run of 1-15 consecutive non-blank-start lines."""
    lines = content.splitlines()
    if not lines:
        return ""
    length = rng.randint(min_lines, min(max_lines, len(lines)))
    start = rng.randint(0, len(lines) - length)
    return "\n".join(lines[start : start + length]).strip("\n")


# --------------------------------------------------------------------------- corpus


def _content_source(warehouse, tables: tuple[str, ...]) -> tuple[str, str] | None:
    """(table, SQL selecting doc_id, content) for the first usable table, or None.
    A table without a `content` column (e.g. a filtered id list) is joined to
    `raw_stack_plus` for the text."""
    for table in tables:
        if not warehouse.table_exists(table):
            continue
        columns = {name for name, _ in warehouse.columns(table)}
        if {"doc_id", "content"} <= columns:
            return table, f'SELECT doc_id, content FROM "{table}"'
        if "doc_id" in columns and table != "raw_stack_plus" and warehouse.table_exists("raw_stack_plus"):
            return table, f'SELECT t.doc_id, r.content FROM "{table}" t JOIN raw_stack_plus r USING (doc_id)'
    return None


def sample_corpus_files(warehouse, tables: tuple[str, ...], n_files: int, seed: int) -> list[tuple[str, str]]:
    """A seeded sample of (doc_id, content) from the first of `tables` that exists;
    [] when none does (the synthesis assets run without a corpus)."""
    source = _content_source(warehouse, tables)
    if source is None or n_files <= 0:
        return []
    _, select = source
    ids = sorted(warehouse.query(f"SELECT DISTINCT doc_id FROM ({select}) WHERE content IS NOT NULL")["doc_id"].to_list())
    chosen = random.Random(seed).sample(ids, min(n_files, len(ids)))
    if not chosen:
        return []
    frame = warehouse.query(f"SELECT doc_id, content FROM ({select}) WHERE doc_id IN (SELECT unnest(?))", [chosen])
    by_id = dict(zip(frame["doc_id"].to_list(), frame["content"].to_list()))
    return [(doc_id, by_id[doc_id]) for doc_id in chosen if doc_id in by_id]


def sample_corpus_snippets(warehouse, tables: tuple[str, ...], n_files: int, seed: int) -> list[tuple[str, str]]:
    """(doc_id, 1-15-line snippet) pairs for OSS-Instruct plans; blank snippets dropped."""
    rng = random.Random(seed)
    pairs = [(doc_id, random_snippet(content, rng)) for doc_id, content in sample_corpus_files(warehouse, tables, n_files, seed)]
    return [(doc_id, snippet) for doc_id, snippet in pairs if snippet.strip()]
