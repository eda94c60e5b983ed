"""Signal 3, embedding similarity: vectors from the LLM layer, unit-normalised, nearest
problem by cosine in one matrix multiply per block; L2 distance (phi-1's embedding
distance) follows from the cosine. `hashed_bag_of_words` is a deterministic local
embedder for benchmarks and offline runs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import xxhash

from synth_assets.decontamination.signals.nearest import top_positions

# The local embedder's words: lowercased runs of ASCII letters, digits and `_`.
_BAG_WORD = re.compile(r"[a-z0-9_]+")


@dataclass(frozen=True)
class EmbeddingMatch:
    task_id: str | None
    cosine: float | None
    l2: float | None  # distance between unit vectors, sqrt(2 - 2 cos)
    nearest: tuple[int, ...] = ()  # positions (in task_ids) of the top-k problems (when asked)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; NaN rows (failed embeddings) and zero rows stay NaN."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = vectors / norms
    unit[~np.isfinite(unit).all(axis=1)] = np.nan
    return unit


def nearest_by_embedding(
    exercise_vectors: np.ndarray, problem_vectors: np.ndarray, task_ids: Sequence[str], block: int = 4096, top_k: int = 0
) -> list[EmbeddingMatch]:
    """Nearest problem per exercise by cosine (one matrix multiply per block of exercises).
    An exercise whose vector failed gets an empty match; failed problems are skipped."""
    exercises = unit_rows(exercise_vectors)
    problems = unit_rows(problem_vectors)
    usable = np.isfinite(problems).all(axis=1)
    usable_positions = np.flatnonzero(usable)
    problem_ids = [task_ids[i] for i in usable_positions]
    problems = problems[usable]
    matches: list[EmbeddingMatch] = []
    for start in range(0, len(exercises), block):
        chunk = exercises[start : start + block]
        ok = np.isfinite(chunk).all(axis=1)
        if len(problem_ids):
            cosines = np.nan_to_num(chunk) @ problems.T
            best = cosines.argmax(axis=1)
            best_cos = cosines[np.arange(len(chunk)), best]
            nearest = top_positions(cosines - cosines.min() + 1e-6, top_k) if top_k else [()] * len(chunk)
        for row in range(len(chunk)):
            if not ok[row] or not len(problem_ids):
                matches.append(EmbeddingMatch(None, None, None))
                continue
            cosine = float(min(max(best_cos[row], -1.0), 1.0))
            matches.append(EmbeddingMatch(
                problem_ids[best[row]], cosine, float(np.sqrt(max(2.0 - 2.0 * cosine, 0.0))),
                tuple(int(usable_positions[j]) for j in nearest[row]),
            ))
    return matches


def hashed_bag_of_words(texts: Sequence[str], dimensions: int = 256, block: int = 4096) -> np.ndarray:
    """A deterministic local embedder (hashed bag of words: xxh32 of each lowercased word
    modulo `dimensions`), for benchmarks and offline runs where calling an embedding
    model for every exercise is not wanted. Word buckets are memoised and counted with
    one `bincount` per block of texts."""
    vectors = np.zeros((len(texts), dimensions), dtype=np.float32)
    buckets: dict[str, int] = {}

    def bucket(word: str) -> int:
        found = buckets.get(word)
        if found is None:
            found = buckets[word] = xxhash.xxh32_intdigest(word.encode()) % dimensions
        return found

    for start in range(0, len(texts), block):
        flat: list[int] = []
        for row, text in enumerate(texts[start : start + block]):
            offset = row * dimensions
            flat.extend(offset + bucket(word) for word in _BAG_WORD.findall(text.lower()))
        rows = min(block, len(texts) - start)
        counts = np.bincount(np.asarray(flat, dtype=np.int64), minlength=rows * dimensions)
        vectors[start : start + rows] = counts.reshape(rows, dimensions)
    return vectors
