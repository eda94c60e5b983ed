"""Featurizers shared by the quality classifier, the corpus filter and the benchmark.

Two representations of a source file, as in phi-1 section 2.1 (the paper used a
code model's embeddings; a cheap lexical representation is the baseline to beat):

- ``hashed_ngrams``: code tokens (identifiers, numbers, single punctuation marks)
  -> hashed uni+bi-grams (no vocabulary to store, so any corpus size fits) -> TF-IDF.
  Fitted inside the classifier pipeline, so the artefact carries its IDF weights.
- ``embeddings``: the LLM layer's ``session.embed`` (mean-pooled, cached) on the first
  ``embed_max_chars`` characters of the file. A NaN row means the embedding failed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
from sklearn.pipeline import Pipeline

HASHED_NGRAMS = "hashed_ngrams"
EMBEDDINGS = "embeddings"
# Cheapest first: the order breaks ties when two feature sets score alike.
FEATURE_SETS = (HASHED_NGRAMS, EMBEDDINGS)

# Identifiers/keywords, numbers, and every other non-space character on its own:
# `def f(x):` -> ["def", "f", "(", "x", ")", ":"]. Comments and docstrings become words.
CODE_TOKEN_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+(?:\.\d+)?|[^\sA-Za-z0-9_]")


def code_tokens(text: str) -> list[str]:
    """The classifier's tokens of source code: identifiers, numbers (one decimal point
    kept inside) and single punctuation marks, case kept. Only the `hashed_ngrams`
    featurizer uses them; the fitted classifier artefact refers to this function by
    name, so it keeps its name and module. For a token count, see
    `synth_assets.common.tokens.approximate_token_count`."""
    return CODE_TOKEN_PATTERN.findall(text)


@dataclass(frozen=True)
class HashedNgramSettings:
    """The lexical featurizer. 2**18 buckets keep collisions rare for a corpus of a
    few thousand files while the sparse matrix stays small."""

    n_features: int = 2**18
    ngram_max: int = 2  # uni- and bi-grams of code tokens
    lowercase: bool = False  # `None` and `none` are different things in Python


def hashed_ngram_featurizer(settings: HashedNgramSettings = HashedNgramSettings()) -> Pipeline:
    """Text -> sparse TF-IDF over hashed code-token n-grams (fit learns the IDF only)."""
    return Pipeline(
        [
            (
                "hash",
                HashingVectorizer(
                    tokenizer=code_tokens,
                    token_pattern=None,
                    lowercase=settings.lowercase,
                    ngram_range=(1, settings.ngram_max),
                    n_features=settings.n_features,
                    alternate_sign=False,
                    norm=None,
                ),
            ),
            ("tfidf", TfidfTransformer(sublinear_tf=True)),
        ]
    )


def truncate_for_embedding(text: str, max_chars: int) -> str:
    """The first ``max_chars`` characters: the module docstring and imports, which say
    most about what a file teaches, come first, and the local model's context and
    speed stay bounded."""
    if max_chars <= 0:
        raise ValueError(f"embed_max_chars must be positive, got {max_chars}")
    return text[:max_chars]


def embed_texts(session: Any, texts: list[str], max_chars: int) -> np.ndarray:
    """Embeddings of the truncated texts through the LLM layer (cached, costed).
    Returns float32 (n, d); a NaN row marks a failed embedding."""
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    vectors = np.asarray(session.embed([truncate_for_embedding(t, max_chars) for t in texts]), dtype=np.float32)
    if vectors.shape[0] != len(texts):
        raise RuntimeError(f"session.embed returned {vectors.shape[0]} vectors for {len(texts)} texts")
    return vectors


def failed_rows(vectors: np.ndarray) -> np.ndarray:
    """Boolean mask of rows the embedding endpoint could not embed (any NaN)."""
    if vectors.size == 0:
        return np.zeros(vectors.shape[0], dtype=bool)
    return np.isnan(vectors).any(axis=1)
