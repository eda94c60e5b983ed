"""Signal 1, n-gram overlap (phi-1 section 5.1): 13-grams of the docstring words and of
the code tokens.

A whole batch is tokenised and hashed in numpy over its bytes, rolled into 13-gram
hashes, filtered by a bitmap and confirmed in the sorted benchmark n-grams; hits are
expanded into their benchmark occurrences and scored in numpy (overlap, longest shared
run). `ngram_tokens` is the same tokenizer as a plain regex (tests and the bench's loop).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from synth_assets.decontamination.signals.code_document import API_NAMES_LOWER, CodeDocument

# Docstring and code streams hash with different seeds, so a docstring n-gram never
# equals a code n-gram.
_DOCSTRING_SEED, _CODE_SEED = 1, 2
# Polynomial rolling hash over token hashes (wrapping uint64 arithmetic): an odd multiplier
# (the 64-bit golden ratio) keeps it a bijection per position.
_ROLL = np.uint64(0x9E3779B97F4A7C15)


@dataclass(frozen=True)
class NgramConfig:
    # phi-1 section 5.1 (and the GPT-3 / datatrove decontamination convention): 13-grams.
    n: int = 13
    # Raw identifiers are kept by default, as in phi-1's text n-grams; renames are the
    # AST signal's job. True maps user identifiers to one token.
    normalise_identifiers: bool = False


@dataclass(frozen=True)
class NgramMatch:
    task_id: str | None
    overlap: float  # shared n-grams / the problem's distinct n-grams
    longest_shared: int  # longest common token run with that problem (0 if < n)


NO_NGRAM_MATCH = NgramMatch(None, 0.0, 0)


def rolling_hashes(hashes: np.ndarray, n: int) -> np.ndarray:
    """Hash of every window of `n` consecutive token hashes, in order (n numpy passes,
    no Python work per window); empty when there are fewer than n tokens."""
    windows = len(hashes) - n + 1
    if windows <= 0:
        return np.empty(0, dtype=np.uint64)
    rolled = hashes[:windows].astype(np.uint64)
    for offset in range(1, n):
        rolled *= _ROLL
        rolled += hashes[offset : offset + windows]
    return rolled


def windows_of(flat: np.ndarray, lengths: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The n-token window hashes of streams laid end to end in `flat` (`lengths` tokens
    each): rolled in n numpy passes over the whole array, then windows that cross a
    stream boundary are dropped. Returns (window hashes, stream index of each, position
    of each in its stream)."""
    if not len(lengths) or lengths.sum() < n:
        return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    rolled = rolling_hashes(flat, n)
    owner = np.repeat(np.arange(len(lengths)), lengths)[: len(rolled)]
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    position = np.arange(len(rolled)) - starts[owner]
    valid = position <= lengths[owner] - n
    return rolled[valid], owner[valid], position[valid]


# The n-gram signal's tokenizer works on the bytes of a whole batch of lowercased texts at
# once, in numpy, so no Python code runs per token. Word bytes ([0-9a-z_] and every byte of
# a non-ASCII character) form runs that are one token each; every other printable ASCII byte
# (operators, brackets, quotes) is a token of its own; whitespace and control bytes separate
# tokens. `ngram_tokens` is the same tokenizer as a plain regex (tests and the bench's loop).
_SEPARATOR, _WORD_BYTE, _SYMBOL_BYTE = 0, 1, 2
_BYTE_CLASS = np.full(256, _SYMBOL_BYTE, dtype=np.int8)
_BYTE_CLASS[:33] = _SEPARATOR
_BYTE_CLASS[128:] = _WORD_BYTE
for _char in "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_":
    _BYTE_CLASS[ord(_char)] = _WORD_BYTE
_IS_DIGIT = np.zeros(256, dtype=bool)
_IS_DIGIT[ord("0") : ord("9") + 1] = True
_NGRAM_WORD = r"[0-9A-Za-z_\x80-\U0010ffff]+"
_NGRAM_TOKEN = re.compile(_NGRAM_WORD + r"|[\x21-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]")
_NGRAM_WORDS = re.compile(_NGRAM_WORD)
# Token hash: a polynomial hash of the token's bytes (computed for all tokens at once from
# prefix sums, wrapping uint64 arithmetic, odd base so it is invertible), mixed with the
# token length and the stream's seed, then murmur3's fmix64 finaliser.
_BYTE_BASE = 0x100000001B3
_BASE_POWERS: list[np.ndarray] = [np.ones(1, dtype=np.uint64), np.ones(1, dtype=np.uint64)]


def ngram_tokens(text: str, words_only: bool = False) -> list[str]:
    """The n-gram tokens of one text, in plain Python (same tokens `batch_token_hashes`
    hashes): word runs and single symbols of the lowercased text; docstrings keep words only."""
    return (_NGRAM_WORDS if words_only else _NGRAM_TOKEN).findall(text.lower())


def _base_powers(size: int) -> tuple[np.ndarray, np.ndarray]:
    """base**i and base**-i (mod 2**64) for i < size, grown and kept per process."""
    if len(_BASE_POWERS[0]) < size:
        size = max(size, 2 * len(_BASE_POWERS[0]))
        powers = []
        for base in (_BYTE_BASE, pow(_BYTE_BASE, -1, 1 << 64)):
            table = np.empty(size, dtype=np.uint64)
            table[0] = 1
            with np.errstate(over="ignore"):
                np.cumprod(np.full(size - 1, base, dtype=np.uint64), out=table[1:])
            powers.append(table)
        _BASE_POWERS[:] = powers
    return _BASE_POWERS[0], _BASE_POWERS[1]


def _fmix64(values: np.ndarray) -> np.ndarray:
    values ^= values >> np.uint64(33)
    values *= np.uint64(0xFF51AFD7ED558CCD)
    values ^= values >> np.uint64(33)
    values *= np.uint64(0xC4CEB9FE1A85EC53)
    values ^= values >> np.uint64(33)
    return values


def batch_token_hashes(
    texts: Sequence[str], seed: int, words_only: bool = False, normalise_identifiers: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """uint64 hashes of the `ngram_tokens` of many texts, laid end to end, and each text's
    token count. With `normalise_identifiers`, word tokens that start with a letter or `_`
    and are not a builtin, keyword or common module name hash as `id`."""
    counts = np.zeros(len(texts), dtype=np.int64)
    joined_text = "\n".join(texts)
    ascii_only = joined_text.isascii()
    joined = joined_text.lower().encode("utf-8", "surrogatepass")
    if not joined:
        return np.empty(0, dtype=np.uint64), counts
    data = np.frombuffer(joined, dtype=np.uint8)
    size = len(data)
    kind = _BYTE_CLASS[data]
    word = kind == _WORD_BYTE
    word_before = np.zeros(size, dtype=bool)
    word_before[1:] = word[:-1]
    word_after = np.zeros(size, dtype=bool)
    word_after[:-1] = word[1:]
    symbol = kind == _SYMBOL_BYTE
    word_start = word & ~word_before
    if words_only:
        starts, ends = np.flatnonzero(word_start), np.flatnonzero(word & ~word_after) + 1
    else:
        starts = np.flatnonzero(word_start | symbol)
        ends = np.flatnonzero((word & ~word_after) | symbol) + 1
    powers, inverse = _base_powers(size + 1)
    prefix = np.zeros(size + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        np.cumsum((data + np.uint64(1)) * powers[:size], out=prefix[1:])
        lengths = (ends - starts).astype(np.uint64)
        hashes = _fmix64((prefix[ends] - prefix[starts]) * inverse[starts] ^ (lengths << np.uint64(48)) ^ np.uint64(seed))
    if normalise_identifiers and len(hashes):
        identifier = word[starts] & ~_IS_DIGIT[data[starts]] & ~np.isin(hashes, _kept_name_hashes(seed))
        hashes[identifier] = _identifier_hash(seed)
    # each text's byte span (texts were joined with one separator byte each)
    if ascii_only:
        byte_lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    else:
        byte_lengths = np.fromiter(
            (len(text.lower().encode("utf-8", "surrogatepass")) for text in texts), dtype=np.int64, count=len(texts)
        )
    boundaries = np.concatenate(([0], np.cumsum(byte_lengths + 1)))
    counts[:] = np.diff(np.searchsorted(starts, boundaries))
    return hashes, counts


@lru_cache(maxsize=8)
def _kept_name_hashes(seed: int) -> np.ndarray:
    return np.unique(batch_token_hashes(sorted(API_NAMES_LOWER), seed, words_only=True)[0])


@lru_cache(maxsize=8)
def _identifier_hash(seed: int) -> np.uint64:
    return batch_token_hashes(["id"], seed, words_only=True)[0][0]


@dataclass(frozen=True)
class NgramBatch:
    """The n-grams of a batch of documents, per stream (0 = docstring words, 1 = code
    tokens; an n-gram never crosses from one stream or document into another): every
    window hash in document order, the document it came from and its position there."""

    size: int
    grams: tuple[np.ndarray, np.ndarray]
    owners: tuple[np.ndarray, np.ndarray]
    positions: tuple[np.ndarray, np.ndarray]

    @classmethod
    def of_documents(cls, docs: Sequence[CodeDocument], config: NgramConfig) -> NgramBatch:
        words, word_counts = batch_token_hashes([d.docstring for d in docs], _DOCSTRING_SEED, words_only=True)
        code, code_counts = batch_token_hashes(
            [d.code for d in docs], _CODE_SEED, normalise_identifiers=config.normalise_identifiers
        )
        streams = (windows_of(words, word_counts, config.n), windows_of(code, code_counts, config.n))
        return cls(len(docs), *(tuple(parts) for parts in zip(*streams)))

    def document(self, index: int) -> list[np.ndarray]:
        """One document's n-gram hashes, per stream, in order."""
        return [grams[np.searchsorted(owners, index) : np.searchsorted(owners, index + 1)]
                for grams, owners in zip(self.grams, self.owners)]


class NgramIndex:
    """The benchmark's n-grams, built once: every distinct n-gram hash sorted, with its
    occurrences (problem, stream, position) as CSR arrays, and a bitmap of the hashes' low
    bits that rejects most exercise n-grams with one gather.

    Matching a batch (`match`) is numpy from end to end: the batch's n-grams pass the
    bitmap, survivors are confirmed with `searchsorted`, and each hit is expanded into its
    benchmark occurrences. From those rows, per (exercise, problem): the overlap is the
    larger of the docstring and the code overlap (shared distinct n-grams / the problem's
    distinct n-grams in that stream), so a copied docstring over rewritten code, or copied
    code under a reworded docstring, still scores high; the longest shared run is the
    longest chain of consecutive exercise positions on one diagonal (problem position -
    exercise position) of one stream."""

    bitmap_bits = 22

    def __init__(self, task_ids: Sequence[str], docs: Sequence[CodeDocument], config: NgramConfig = NgramConfig()):
        self.config = config
        self.task_ids = list(task_ids)
        batch = NgramBatch.of_documents(docs, config)
        grams = np.concatenate(batch.grams)
        problem = np.concatenate(batch.owners)
        stream = np.concatenate([np.full(len(g), index, dtype=np.int64) for index, g in enumerate(batch.grams)])
        position = np.concatenate(batch.positions)
        order = np.lexsort((position, stream, problem, grams))
        self.sorted_grams, first = np.unique(grams[order], return_index=True)
        self.offsets = np.append(first, len(order))
        self.occurrence_problem = problem[order]
        self.occurrence_stream = stream[order]
        self.occurrence_position = position[order]
        self.distinct_counts = np.zeros((len(docs), 2), dtype=np.int64)
        distinct_pairs = np.unique(np.stack([problem * 2 + stream, grams.view(np.int64)]), axis=1)[0]
        np.add.at(self.distinct_counts.reshape(-1), distinct_pairs, 1)
        self.bitmap = np.zeros(1 << self.bitmap_bits, dtype=bool)
        self.bitmap[self.sorted_grams & np.uint64((1 << self.bitmap_bits) - 1)] = True

    def grams(self, doc: CodeDocument) -> list[list[int]]:
        return [stream.tolist() for stream in NgramBatch.of_documents([doc], self.config).document(0)]

    def lookup(self, grams: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(indices into `grams` that occur in the benchmark, their index in `sorted_grams`)."""
        if not len(self.sorted_grams) or not len(grams):
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        candidates = np.flatnonzero(self.bitmap[grams & np.uint64((1 << self.bitmap_bits) - 1)])
        where = np.searchsorted(self.sorted_grams, grams[candidates])
        where[where == len(self.sorted_grams)] = 0
        found = self.sorted_grams[where] == grams[candidates]
        return candidates[found], where[found]

    def contains(self, grams: np.ndarray) -> np.ndarray:
        """Boolean mask: which of these n-gram hashes occur anywhere in the benchmark."""
        mask = np.zeros(len(grams), dtype=bool)
        mask[self.lookup(grams)[0]] = True
        return mask

    def query(self, doc: CodeDocument) -> NgramMatch:
        return self.query_batch([doc])[0]

    def query_batch(self, docs: Sequence[CodeDocument]) -> list[NgramMatch]:
        """Matches for many documents at once."""
        return self.match(NgramBatch.of_documents(docs, self.config))

    def match(self, batch: NgramBatch) -> list[NgramMatch]:
        """The best-matching problem of every document in the batch (see the class)."""
        rows = self._occurrence_rows(batch)
        matches = [NO_NGRAM_MATCH] * batch.size
        if rows is None:
            return matches
        exercise, problem, problem_stream, exercise_stream, gram, position, problem_position = rows
        problems = len(self.task_ids)
        pair = exercise * problems + problem  # (exercise, problem), dense enough for int64

        # overlap: distinct shared n-grams per (pair, problem stream) / the problem's distinct count
        key = pair * 2 + problem_stream
        order = np.lexsort((gram, key))
        key_sorted, gram_sorted = key[order], gram[order]
        new_gram = np.ones(len(order), dtype=bool)
        new_gram[1:] = (key_sorted[1:] != key_sorted[:-1]) | (gram_sorted[1:] != gram_sorted[:-1])
        keys, shared = np.unique(key_sorted[new_gram], return_counts=True)
        fraction = shared / np.maximum(self.distinct_counts.reshape(-1)[keys % (problems * 2)], 1)
        pairs = keys // 2
        pair_ids, pair_index = np.unique(pairs, return_inverse=True)
        overlap = np.zeros(len(pair_ids))
        np.maximum.at(overlap, pair_index, fraction)

        # longest run: consecutive exercise positions on one diagonal of one stream pairing
        diagonal = problem_position - position
        run_key = (key * 2 + exercise_stream)
        order = np.lexsort((position, diagonal, run_key))
        run_key, diagonal, position = run_key[order], diagonal[order], position[order]
        starts_run = np.ones(len(order), dtype=bool)
        starts_run[1:] = (run_key[1:] != run_key[:-1]) | (diagonal[1:] != diagonal[:-1]) | (position[1:] != position[:-1] + 1)
        run_id = np.cumsum(starts_run) - 1
        run_length = np.bincount(run_id)
        run_pair = np.searchsorted(pair_ids, run_key[starts_run] // 4)
        longest = np.zeros(len(pair_ids), dtype=np.int64)
        np.maximum.at(longest, run_pair, run_length)

        # best problem per exercise: highest overlap, then longest run, then lowest index
        pair_exercise, pair_problem = pair_ids // problems, pair_ids % problems
        order = np.lexsort((pair_problem, -longest, -overlap, pair_exercise))
        first = np.ones(len(order), dtype=bool)
        first[1:] = pair_exercise[order][1:] != pair_exercise[order][:-1]
        n = self.config.n
        for best in order[first].tolist():
            matches[int(pair_exercise[best])] = NgramMatch(
                self.task_ids[int(pair_problem[best])], float(overlap[best]), int(longest[best]) + n - 1
            )
        return matches

    def _occurrence_rows(self, batch: NgramBatch) -> tuple[np.ndarray, ...] | None:
        """One row per (batch n-gram, benchmark occurrence of it): exercise, problem,
        problem stream, exercise stream, n-gram hash, exercise position, problem position."""
        parts: list[tuple[np.ndarray, ...]] = []
        for stream_index, (grams, owners, positions) in enumerate(zip(batch.grams, batch.owners, batch.positions)):
            hit, where = self.lookup(grams)
            if not len(hit):
                continue
            counts = self.offsets[where + 1] - self.offsets[where]
            row_hit = np.repeat(np.arange(len(hit)), counts)
            occurrence = self.offsets[where][row_hit] + np.arange(len(row_hit)) - (np.cumsum(counts) - counts)[row_hit]
            hit_rows = hit[row_hit]
            parts.append((
                owners[hit_rows], self.occurrence_problem[occurrence], self.occurrence_stream[occurrence],
                np.full(len(row_hit), stream_index, dtype=np.int64), grams[hit_rows], positions[hit_rows],
                self.occurrence_position[occurrence],
            ))
        if not parts:
            return None
        return tuple(np.concatenate(column) for column in zip(*parts))


def all_pairs_ngram_overlap(exercise_grams: set, problem_grams: Sequence[set]) -> tuple[int, float]:
    """The plain loop the index is benchmarked against: intersect one exercise's n-gram
    set with every problem's set. Returns (best problem index, overlap)."""
    best_index, best_overlap = -1, 0.0
    for index, grams in enumerate(problem_grams):
        if not grams:
            continue
        overlap = len(exercise_grams & grams) / len(grams)
        if overlap > best_overlap:
            best_index, best_overlap = index, overlap
    return best_index, best_overlap


def plain_ngram_set(doc: CodeDocument, n: int) -> set[int]:
    """The straightforward pure-Python n-gram set of a document (the same tokens, as
    strings, then each n-gram hashed as a tuple): the baseline the bench compares with."""
    words = ["d:" + token for token in ngram_tokens(doc.docstring, words_only=True)]
    code = ngram_tokens(doc.code)
    return {hash(tuple(stream[i : i + n])) for stream in (words, code) for i in range(len(stream) - n + 1)}
