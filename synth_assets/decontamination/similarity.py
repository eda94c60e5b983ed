"""Four similarity signals between code exercises and benchmark problems.

Plain functions and small index classes; `synth_assets/decontamination/contamination_report.py` wires them into
assets and `bench/decontaminate.py` times them. Every index is built once over the
benchmark (164 HumanEval problems), and each exercise is split into docstring and code once:

1. n-gram overlap      phi-1 section 5.1: 13-grams of the docstring words and of the code
                       tokens. A whole batch is tokenised and hashed in numpy over its bytes,
                       rolled into 13-gram hashes, filtered by a bitmap and confirmed in the
                       sorted benchmark n-grams; hits are expanded into their benchmark
                       occurrences and scored in numpy (overlap, longest shared run).
2. MinHash Jaccard     datasketch's affine32 MinHash over shingles of identifier/literal-
                       normalised code tokens, computed for a batch in numpy; signatures
                       compared against all problems as one numpy op.
3. embedding cosine    vectors from the LLM layer, unit-normalised, one matrix multiply; L2
                       distance (phi-1's embedding distance) follows from the cosine.
4. AST match rate      phi-1 section 5.2: ASTs with identifiers, literals and docstrings
                       normalised away and statement lists hashed order-insensitively; the
                       match rate is the multiset overlap of normalised subtrees.

`BenchmarkIndex.score` runs signals 1, 2 and 4 in worker processes (fork) over chunks of
exercises while the embedding requests run in the calling process.
"""

from __future__ import annotations

import ast
import builtins
import keyword
import multiprocessing
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import xxhash
from datasketch import MinHash

# ---------------------------------------------------------------------------------------
# Documents: what a signal sees of an exercise or a benchmark problem
# ---------------------------------------------------------------------------------------

_STRING_PREFIX = "rRbBuU"
_COMMENT = re.compile(r"#[^\n]*")


@dataclass(frozen=True)
class CodeDocument:
    """One piece of Python source split into the parts the signals compare."""

    key: str
    source: str
    docstring: str  # every triple-quoted string, joined
    code: str  # the source with docstrings (and their r/b/u prefixes) and comments removed

    @classmethod
    def from_source(cls, key: str, source: str) -> CodeDocument:
        # One left-to-right scan with `str.find`: the next opening triple quote of either
        # kind, then its closer; cut it out. An opener without a closer is skipped (the scan
        # goes on one character later), as a regex scan would.
        docstrings: list[str] = []
        pieces: list[str] = []
        last = position = 0
        find = source.find
        double, single = find('"""'), find("\'\'\'")
        while double >= 0 or single >= 0:
            start, quote = (double, '"""') if single < 0 or 0 <= double < single else (single, "\'\'\'")
            end = find(quote, start + 3)
            if end < 0:
                position = start + 1
            else:
                docstrings.append(source[start + 3 : end])
                prefix = 0
                while prefix < 2 and start - prefix > last and source[start - prefix - 1] in _STRING_PREFIX:
                    prefix += 1
                pieces.append(source[last : start - prefix])
                last = position = end + 3
            if double < position:
                double = find('"""', position)
            if single < position:
                single = find("\'\'\'", position)
        pieces.append(source[last:])
        code = "".join(pieces)
        if "#" in code:
            code = _COMMENT.sub("", code)
        return cls(key=key, source=source, docstring="\n".join(docstrings), code=code)


def exercise_source(exercise: str | None, solution: str | None, code: str | None = None) -> str:
    """The full function of a `code_exercises` row.

    A `code` column wins when present. A `solution` that is a whole function (`def ...`)
    is used as is; a bare body is appended to the `exercise` (signature + docstring)."""
    if code and code.strip():
        return code
    exercise = exercise or ""
    solution = solution or ""
    if re.search(r"^(async\s+)?def\s", solution, flags=re.MULTILINE):
        # The solution repeats the signature; keep imports/helpers from the exercise text
        # only if the solution does not already contain them.
        return solution if exercise.strip() in solution or not exercise.strip() else _merge(exercise, solution)
    return exercise.rstrip("\n") + "\n" + solution


def _merge(exercise: str, solution: str) -> str:
    lines = [line for line in exercise.splitlines() if line.startswith(("import ", "from "))]
    return "\n".join(lines + [solution]) if lines else solution


# ---------------------------------------------------------------------------------------
# Tokens (one pass per exercise, shared by the n-gram and MinHash signals)
# ---------------------------------------------------------------------------------------

_WORD = re.compile(r"[a-z0-9_]+")
_CODE_TOKEN = re.compile(
    r"""(?x)
      (?P<str>[rRbBfFuU]{0,2}(?:'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*"))
    | (?P<num>\d[\d_]*\.?\d*(?:[eE][+-]?\d+)?j?|\.\d+)
    | (?P<name>[A-Za-z_]\w*)
    | (?P<op>\*\*=?|//=?|>>=?|<<=?|->|:=|[-+*/%&|^@<>!=]=|[^\s\w])
    """
)
_KEEP_NAMES = frozenset(dir(builtins)) | frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | frozenset(
    # Names that are API, not the author's choice: typing and common stdlib modules.
    ["List", "Dict", "Tuple", "Set", "Optional", "Any", "Union", "Callable", "Iterable", "typing",
     "math", "re", "collections", "itertools", "functools", "hashlib", "self", "cls"]
)


def word_tokens(text: str) -> list[str]:
    """Lowercased words of prose (docstrings)."""
    return _WORD.findall(text.lower())


# The same tokens without groups, applied to lowercased code: `findall` then returns the
# token strings themselves, so tokenising costs no Python work per token.
_FLAT_TOKEN = re.compile(
    r"""(?x)
      [rbfu]{0,2}(?:'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*")
    | \d[\d_]*\.?\d*(?:e[+-]?\d+)?j?|\.\d+
    | [a-z_]\w*
    | \*\*=?|//=?|>>=?|<<=?|->|:=|[-+*/%&|^@<>!=]=|[^\s\w]
    """
)
_KEEP_LOWER = frozenset(name.lower() for name in _KEEP_NAMES)


def raw_code_tokens(code: str) -> list[str]:
    """Lowercased code tokens (names, literals, operators) in order."""
    return _FLAT_TOKEN.findall(code.lower())


@lru_cache(maxsize=1 << 20)
def normalise_token(token: str, normalise_identifiers: bool = True, normalise_literals: bool = True) -> str:
    """One lowercased token with user identifiers -> `id` and literals -> `lit` (as
    asked); builtins, keywords, typing and common module names are kept. Cached: a code
    vocabulary is small, so this is a dict lookup per token after warm-up."""
    kind = _CODE_TOKEN.fullmatch(token)
    group = kind.lastgroup if kind else "op"
    if group == "name":
        return "id" if normalise_identifiers and token not in _KEEP_LOWER else token
    if group in ("str", "num"):
        return "lit" if normalise_literals else token
    return token


def code_tokens(code: str, normalise_identifiers: bool = False, normalise_literals: bool = False) -> list[str]:
    """Python tokens by regex (a fraction of `tokenize`'s cost, and it never raises on
    broken code), lowercased. Optionally user identifiers become `id` and literals `lit`;
    builtins, keywords and typing names are kept because renaming a variable does not
    change them."""
    tokens = raw_code_tokens(code)
    if not (normalise_identifiers or normalise_literals):
        return tokens
    return [normalise_token(token, normalise_identifiers, normalise_literals) for token in tokens]


@dataclass(frozen=True)
class TokenStreams:
    """The MinHash signal's view of one source: its lowercased code tokens (regex), whose
    identifier/literal-normalised forms are shingled (`normalised_hashes`). The n-gram
    signal tokenises differently, a whole batch at once in numpy (`batch_token_hashes`)."""

    code: list[str]

    @classmethod
    def from_document(cls, doc: CodeDocument) -> TokenStreams:
        return cls(raw_code_tokens(doc.code))

    @property
    def normalised(self) -> list[str]:
        return [normalise_token(token) for token in self.code]

    def normalised_hashes(self) -> np.ndarray:
        """Token hashes of the identifier/literal-normalised code (MinHash's input)."""
        memo = _NORMALISED_HASHES
        try:
            return np.fromiter(map(memo.__getitem__, self.code), dtype=np.uint64, count=len(self.code))
        except KeyError:
            for token in self.code:
                if token not in memo:
                    memo[token] = int(token_hashes([normalise_token(token)])[0])
            return np.fromiter(map(memo.__getitem__, self.code), dtype=np.uint64, count=len(self.code))


# Token -> stable 64-bit hash (xxh3, so the same in every process), memoised per process:
# a vocabulary of code tokens is small, so after warm-up hashing a token is a dict lookup.
_DOCSTRING_SEED, _CODE_SEED = 1, 2
_TOKEN_HASHES: dict[int, dict[str, int]] = {_DOCSTRING_SEED: {}, _CODE_SEED: {}}
_NORMALISED_HASHES: dict[str, int] = {}  # raw token -> hash of its normalised form
# Polynomial rolling hash over token hashes (wrapping uint64 arithmetic): an odd multiplier
# (the 64-bit golden ratio) keeps it a bijection per position.
_ROLL = np.uint64(0x9E3779B97F4A7C15)


def token_hashes(tokens: Sequence[str], seed: int = _CODE_SEED) -> np.ndarray:
    """uint64 hash per token (xxh3-64 with `seed`; docstring and code streams use
    different seeds so a docstring n-gram never equals a code n-gram)."""
    memo = _TOKEN_HASHES.setdefault(seed, {})
    try:
        return np.fromiter(map(memo.__getitem__, tokens), dtype=np.uint64, count=len(tokens))
    except KeyError:
        for token in tokens:
            if token not in memo:
                memo[token] = xxhash.xxh3_64_intdigest(token.encode(), seed)
        return np.fromiter(map(memo.__getitem__, tokens), dtype=np.uint64, count=len(tokens))


def rolling_hashes(hashes: np.ndarray, n: int) -> np.ndarray:
    """Hash of every window of `n` consecutive token hashes, in order (n numpy passes,
    no Python work per window); empty when there are fewer than n tokens."""
    windows = len(hashes) - n + 1
    if windows <= 0:
        return np.empty(0, dtype=np.uint64)
    rolled = hashes[:windows].copy()
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
    return np.unique(batch_token_hashes(sorted(_KEEP_LOWER), seed, words_only=True)[0])


@lru_cache(maxsize=8)
def _identifier_hash(seed: int) -> np.uint64:
    return batch_token_hashes(["id"], seed, words_only=True)[0][0]


# ---------------------------------------------------------------------------------------
# 1. n-gram overlap
# ---------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------
# 2. MinHash Jaccard
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MinhashConfig:
    # 128 permutations: datasketch's default; standard error of the estimate ~ 1/sqrt(128) ~ 0.09.
    num_perm: int = 128
    # 5-token shingles of normalised code: the code-dedup convention (BigCode uses 5-grams).
    shingle_size: int = 5
    seed: int = 1


@dataclass(frozen=True)
class MinhashMatch:
    task_id: str | None
    jaccard: float


def shingle_hashes(normalised_tokens: Sequence[str] | np.ndarray, shingle_size: int) -> np.ndarray:
    """32-bit hashes of the shingles (windows of `shingle_size` identifier/literal-
    normalised code tokens), so renamed variables and changed constants leave the set
    unchanged. Code shorter than a shingle is one shingle of all its tokens."""
    hashes = normalised_tokens if isinstance(normalised_tokens, np.ndarray) else token_hashes(normalised_tokens)
    if not len(hashes):
        return np.empty(0, dtype=np.uint32)
    rolled = rolling_hashes(hashes, min(shingle_size, len(hashes)))
    return _fold32(rolled)


def _fold32(values: np.ndarray) -> np.ndarray:
    return ((values ^ (values >> np.uint64(32))) & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def code_shingles(doc: CodeDocument, shingle_size: int) -> set[int]:
    """The distinct shingle hashes of a document's code (see `shingle_hashes`)."""
    return set(shingle_hashes(TokenStreams.from_document(doc).normalised_hashes(), shingle_size).tolist())


class MinhashIndex:
    """MinHash signatures of the benchmark problems as one (problems x num_perm) array.

    Signatures are datasketch's `affine32` scheme computed for a whole batch at once:
    fmix32 of each 32-bit shingle hash, then `a * h + b` (uint32, wrapping) for every
    permutation and a segmented minimum per exercise (`np.minimum.reduceat`); the test
    checks the result equals `datasketch.MinHash.update_batch`. With a benchmark of a
    few hundred problems the estimated Jaccard against *every* problem is one
    vectorised comparison, cheaper than LSH banding, and it also gives the nearest
    problem for clean exercises, which the audit table needs. For large benchmarks, put
    `signatures` into `datasketch.MinHashLSH` as the candidate filter."""

    # shingles per (shingles x permutations) block: 16k x 128 x 4 bytes = 8 MiB
    block_shingles = 16384

    def __init__(self, task_ids: Sequence[str], docs: Sequence[CodeDocument], config: MinhashConfig = MinhashConfig()):
        self.config = config
        self.task_ids = list(task_ids)
        template = MinHash(num_perm=config.num_perm, seed=config.seed, scheme="affine32")
        self._a, self._b = (np.asarray(part, dtype=np.uint32) for part in template.permutations)
        shingles = [self.shingles(doc) for doc in docs]
        self.signatures = self.signatures_of(shingles)
        self._empty = np.array([not len(s) for s in shingles], dtype=bool)

    def shingles(self, doc: CodeDocument) -> np.ndarray:
        return shingle_hashes(TokenStreams.from_document(doc).normalised_hashes(), self.config.shingle_size)

    def signatures_of(self, shingle_sets: Sequence[np.ndarray]) -> np.ndarray:
        """(len(shingle_sets), num_perm) uint32 signatures; an empty set keeps the
        all-max signature (and is never matched)."""
        signatures = np.full((len(shingle_sets), self.config.num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
        lengths = np.fromiter((len(s) for s in shingle_sets), dtype=np.int64, count=len(shingle_sets))
        nonempty = np.flatnonzero(lengths)
        if not len(nonempty):
            return signatures
        values = _fmix32(np.concatenate([shingle_sets[i] for i in nonempty]).astype(np.uint32, copy=False))
        ends = np.cumsum(lengths[nonempty])
        starts = ends - lengths[nonempty]
        first = 0
        while first < len(nonempty):
            # the exercises whose shingles fit in one block (at least one exercise)
            last = max(int(np.searchsorted(ends, starts[first] + self.block_shingles, side="right")), first + 1)
            block = values[starts[first] : ends[last - 1]]
            # (permutations x shingles): reducing along the contiguous axis is ~3x faster
            permuted = self._a[:, None] * block[None, :] + self._b[:, None]
            signatures[nonempty[first:last]] = np.minimum.reduceat(permuted, starts[first:last] - starts[first], axis=1).T
            first = last
        return signatures

    def signature(self, doc: CodeDocument) -> np.ndarray:
        return self.signatures_of([self.shingles(doc)])[0]

    def query(self, doc: CodeDocument) -> MinhashMatch:
        shingles = self.shingles(doc)
        return self.query_signatures(self.signatures_of([shingles]), np.array([not len(shingles)]))[0]

    def query_signatures(self, signatures: np.ndarray, empty: np.ndarray, block: int = 256) -> list[MinhashMatch]:
        """Nearest problem and estimated Jaccard for each signature (one numpy
        comparison per block of exercises against every problem)."""
        if not len(self.task_ids):
            return [MinhashMatch(None, 0.0)] * len(signatures)
        matches: list[MinhashMatch] = []
        for start in range(0, len(signatures), block):
            chunk = signatures[start : start + block]
            estimates = (chunk[:, None, :] == self.signatures[None, :, :]).mean(axis=2)
            estimates[:, self._empty] = 0.0
            best = estimates.argmax(axis=1)
            best_estimates = estimates[np.arange(len(chunk)), best]
            for row, (index, estimate) in enumerate(zip(best.tolist(), best_estimates.tolist())):
                is_empty = bool(empty[start + row])
                matches.append(MinhashMatch(None, 0.0) if is_empty else MinhashMatch(self.task_ids[index], float(estimate)))
        return matches


def _fmix32(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer, as datasketch's affine32 scheme applies it."""
    values = values ^ (values >> np.uint32(16))
    values = values * np.uint32(0x85EBCA6B)
    values = values ^ (values >> np.uint32(13))
    values = values * np.uint32(0xC2B2AE35)
    return values ^ (values >> np.uint32(16))


# ---------------------------------------------------------------------------------------
# 3. Embedding similarity
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmbeddingMatch:
    task_id: str | None
    cosine: float | None
    l2: float | None  # distance between unit vectors, sqrt(2 - 2 cos)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; NaN rows (failed embeddings) and zero rows stay NaN."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = vectors / norms
    unit[~np.isfinite(unit).all(axis=1)] = np.nan
    return unit


def nearest_by_embedding(
    exercise_vectors: np.ndarray, problem_vectors: np.ndarray, task_ids: Sequence[str], block: int = 4096
) -> list[EmbeddingMatch]:
    """Nearest problem per exercise by cosine (one matrix multiply per block of exercises).
    An exercise whose vector failed gets an empty match; failed problems are skipped."""
    exercises = unit_rows(exercise_vectors)
    problems = unit_rows(problem_vectors)
    usable = np.isfinite(problems).all(axis=1)
    problem_ids = [task_ids[i] for i in np.flatnonzero(usable)]
    problems = problems[usable]
    matches: list[EmbeddingMatch] = []
    for start in range(0, len(exercises), block):
        chunk = exercises[start : start + block]
        ok = np.isfinite(chunk).all(axis=1)
        if len(problem_ids):
            cosines = np.nan_to_num(chunk) @ problems.T
            best = cosines.argmax(axis=1)
            best_cos = cosines[np.arange(len(chunk)), best]
        for row in range(len(chunk)):
            if not ok[row] or not len(problem_ids):
                matches.append(EmbeddingMatch(None, None, None))
                continue
            cosine = float(min(max(best_cos[row], -1.0), 1.0))
            matches.append(EmbeddingMatch(problem_ids[best[row]], cosine, float(np.sqrt(max(2.0 - 2.0 * cosine, 0.0)))))
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
            flat.extend(offset + bucket(word) for word in _WORD.findall(text.lower()))
        rows = min(block, len(texts) - start)
        counts = np.bincount(np.asarray(flat, dtype=np.int64), minlength=rows * dimensions)
        vectors[start : start + rows] = counts.reshape(rows, dimensions)
    return vectors


# ---------------------------------------------------------------------------------------
# 4. AST match rate
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AstConfig:
    # Subtrees smaller than this (a bare name or constant) are in every program and carry
    # no evidence; 3 nodes keeps e.g. `len(x)` and `x + 1`.
    min_subtree_nodes: int = 3


@dataclass(frozen=True)
class AstMatch:
    task_id: str | None
    match_rate: float | None  # None when the exercise does not parse


_STATEMENT_LIST_FIELDS = frozenset({"body", "orelse", "finalbody", "handlers"})
_DROPPED_FIELDS = frozenset({"ctx", "type_comment", "kind", "type_params"})
_NAME_FIELDS = frozenset({"name", "id", "attr", "arg", "asname"})
_SCALAR_FIELDS = frozenset({"op", "level", "is_async", "conversion"})
_DOCSTRING_OWNERS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)
_COUNTED = (ast.stmt, ast.expr, ast.excepthandler)
_CONST_HASH = hash("CONST")


@lru_cache(maxsize=None)
def _node_spec(node_class: type) -> tuple[tuple[str, ...], bool, bool]:
    """(fields compared, counted as a subtree, strips a leading docstring) per AST class,
    worked out once per class instead of per node."""
    fields = tuple(name for name in node_class._fields if name not in _DROPPED_FIELDS and name not in _NAME_FIELDS)
    return fields, issubclass(node_class, _COUNTED), issubclass(node_class, _DOCSTRING_OWNERS)


@lru_cache(maxsize=None)
def _name_hash(label: str) -> int:
    return hash(("Name", label if label in _KEEP_NAMES else "VAR"))


def normalised_subtrees(source: str, config: AstConfig = AstConfig()) -> Counter | None:
    """Multiset of hashes of normalised statement/expression subtrees, or None if the
    source does not parse. Identifiers (other than builtins, typing names and attribute
    /keyword names, which belong to an API) become `VAR`, every literal becomes `CONST`,
    docstrings are dropped, and statement lists are hashed as sorted multisets so
    reordering statements does not change a parent's hash.

    Hashes are Python's (salted per process): compare fingerprints made in one process
    or in processes forked from it."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    found: Counter = Counter()
    min_nodes = config.min_subtree_nodes
    Name, Constant, arg_class, Attribute, keyword_class, alias = ast.Name, ast.Constant, ast.arg, ast.Attribute, ast.keyword, ast.alias
    AST = ast.AST

    def visit(node: ast.AST) -> tuple[int, int]:
        node_class = node.__class__
        if node_class is Name:
            return _name_hash(node.id), 1
        if node_class is Constant:
            return _CONST_HASH, 1
        if node_class is arg_class:
            if node.annotation is None:
                return hash(("arg",)), 1
            child, child_size = visit(node.annotation)
            return hash(("arg", child)), 1 + child_size
        if node_class is alias:
            return hash(("alias", node.name)), 1
        label = node_class.__name__
        if node_class is Attribute:
            label += "." + node.attr
        elif node_class is keyword_class:
            label += "." + str(node.arg)
        fields, counted, strips_docstring = _node_spec(node_class)
        parts: list = [label]
        size = 1
        for name in fields:
            value = getattr(node, name, None)
            if value is None:
                continue
            if value.__class__ is list:
                body = value
                if strips_docstring and name == "body" and body and _is_docstring(body[0]):
                    body = body[1:]
                hashes = []
                for item in body:
                    if isinstance(item, AST):
                        child, child_size = visit(item)
                        hashes.append(child)
                        size += child_size
                if name in _STATEMENT_LIST_FIELDS:
                    hashes.sort()
                parts.append((name, tuple(hashes)))
            elif isinstance(value, AST):
                child, child_size = visit(value)
                parts.append((name, child))
                size += child_size
            elif name in _SCALAR_FIELDS:
                parts.append((name, value))
        digest = hash(tuple(parts))
        if counted and size >= min_nodes:
            found[digest] += 1
        return digest, size

    try:
        visit(tree)
    except RecursionError:
        return None
    return found


def _is_docstring(statement: ast.stmt) -> bool:
    return (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Constant)
        and isinstance(statement.value.value, str)
    )


def ast_match_rate(left: Counter, right: Counter) -> float:
    """Multiset overlap of normalised subtrees: shared / max(|left|, |right|)."""
    total = max(sum(left.values()), sum(right.values()))
    if not total:
        return 0.0
    return sum((left & right).values()) / total


class AstIndex:
    """Benchmark subtree counts as a dense (problems x vocabulary) matrix; an exercise
    touches only the columns of its own subtrees, so scoring is O(its subtrees x problems)
    in numpy with no per-pair Python work (the prefilter: subtrees outside the benchmark
    vocabulary are counted but never compared, and an exercise sharing none of them
    costs no numpy work at all)."""

    def __init__(self, task_ids: Sequence[str], sources: Sequence[str], config: AstConfig = AstConfig()):
        self.config = config
        self.task_ids = list(task_ids)
        fingerprints = [normalised_subtrees(source, config) or Counter() for source in sources]
        self.vocabulary: dict[int, int] = {}
        for fingerprint in fingerprints:
            for digest in fingerprint:
                self.vocabulary.setdefault(digest, len(self.vocabulary))
        self.counts = np.zeros((len(fingerprints), max(len(self.vocabulary), 1)), dtype=np.int32)
        for row, fingerprint in enumerate(fingerprints):
            for digest, count in fingerprint.items():
                self.counts[row, self.vocabulary[digest]] = count
        self.totals = self.counts.sum(axis=1)

    def query_fingerprint(self, fingerprint: Counter | None) -> AstMatch:
        if fingerprint is None:
            return AstMatch(None, None)
        vocabulary = self.vocabulary
        columns = [(vocabulary[d], c) for d, c in fingerprint.items() if d in vocabulary]
        if not columns or not len(self.task_ids):
            return AstMatch(None, 0.0)
        total = sum(fingerprint.values())
        index = np.fromiter((column for column, _ in columns), dtype=np.int64, count=len(columns))
        counts = np.fromiter((count for _, count in columns), dtype=np.int32, count=len(columns))
        shared = np.minimum(self.counts[:, index], counts).sum(axis=1)
        rates = shared / np.maximum(np.maximum(self.totals, total), 1)
        best = int(np.argmax(rates))
        return AstMatch(self.task_ids[best], float(rates[best]))

    def query(self, source: str) -> AstMatch:
        return self.query_fingerprint(normalised_subtrees(source, self.config))


# ---------------------------------------------------------------------------------------
# Verdict
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    """A signal fires when its score reaches its threshold; any firing signal makes the
    exercise contaminated. Defaults come from the sweep in README_decontamination.md."""

    # phi-1 section 5.1: any shared 13-gram counts (overlap > 0 fires at 0.0).
    max_ngram_overlap: float = 0.0
    longest_shared_ngram: int = 13
    minhash_jaccard: float = 0.5
    # phi-1 section 5.2 sweeps the AST match rate; 0.8 is our sweep's choice.
    ast_match_rate: float = 0.8
    embedding_cosine: float = 0.95
    use_embedding: bool = True


@dataclass
class SignalScores:
    """Nearest benchmark problem and score per signal for one exercise (a report row)."""

    exercise_id: str
    ngram_task_id: str | None = None
    max_ngram_overlap: float = 0.0
    longest_shared_ngram: int = 0
    minhash_task_id: str | None = None
    minhash_jaccard: float = 0.0
    embedding_task_id: str | None = None
    embedding_cosine: float | None = None
    embedding_l2: float | None = None
    ast_task_id: str | None = None
    ast_match_rate: float | None = None
    notes: list[str] = field(default_factory=list)


SIGNALS = ("ngram", "minhash", "embedding", "ast")


def fired_signals(scores: SignalScores, thresholds: Thresholds) -> list[tuple[str, str]]:
    """(signal, explanation) for every signal at or above its threshold."""
    fired: list[tuple[str, str]] = []
    if scores.ngram_task_id and scores.max_ngram_overlap >= thresholds.max_ngram_overlap:
        fired.append(("ngram", f"max_ngram_overlap {scores.max_ngram_overlap:.2f} >= {thresholds.max_ngram_overlap} vs {scores.ngram_task_id}"))
    elif scores.ngram_task_id and scores.longest_shared_ngram >= thresholds.longest_shared_ngram:
        fired.append(("ngram", f"longest_shared_ngram {scores.longest_shared_ngram} >= {thresholds.longest_shared_ngram} tokens vs {scores.ngram_task_id}"))
    if scores.minhash_task_id and scores.minhash_jaccard >= thresholds.minhash_jaccard:
        fired.append(("minhash", f"minhash_jaccard {scores.minhash_jaccard:.2f} >= {thresholds.minhash_jaccard} vs {scores.minhash_task_id}"))
    if scores.ast_match_rate is not None and scores.ast_task_id and scores.ast_match_rate >= thresholds.ast_match_rate:
        fired.append(("ast", f"ast_match_rate {scores.ast_match_rate:.2f} >= {thresholds.ast_match_rate} vs {scores.ast_task_id}"))
    if (
        thresholds.use_embedding
        and scores.embedding_cosine is not None
        and scores.embedding_cosine >= thresholds.embedding_cosine
    ):
        fired.append(("embedding", f"embedding_cosine {scores.embedding_cosine:.3f} >= {thresholds.embedding_cosine} vs {scores.embedding_task_id}"))
    return fired


def verdict(scores: SignalScores, thresholds: Thresholds) -> tuple[str, str, list[str]]:
    """("contaminated" | "clean", reason, fired signal names). The reason names every
    signal that fired with its score, threshold and benchmark task; a clean reason lists
    the highest score of each signal so an auditor sees how close it came."""
    fired = fired_signals(scores, thresholds)
    notes = ("; " + "; ".join(scores.notes)) if scores.notes else ""
    if fired:
        return "contaminated", "; ".join(text for _, text in fired) + notes, [name for name, _ in fired]
    parts = [
        f"ngram {scores.max_ngram_overlap:.2f}/{scores.longest_shared_ngram}tok",
        f"minhash {scores.minhash_jaccard:.2f}",
        "ast n/a" if scores.ast_match_rate is None else f"ast {scores.ast_match_rate:.2f}",
    ]
    if thresholds.use_embedding:
        parts.append("embedding n/a" if scores.embedding_cosine is None else f"embedding {scores.embedding_cosine:.3f}")
    return "clean", "below every threshold (" + ", ".join(parts) + ")" + notes, []


# ---------------------------------------------------------------------------------------
# All signals over a batch
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimilarityConfig:
    ngram: NgramConfig = NgramConfig()
    minhash: MinhashConfig = MinhashConfig()
    ast: AstConfig = AstConfig()


# (n-gram task, overlap, longest run, MinHash task, Jaccard, AST task, AST rate)
ChunkScores = tuple[str | None, float, int, str | None, float, str | None, float | None]

# The index a forked worker scores with: set in the parent just before the pool forks, so
# workers inherit it (and the parent's string-hash salt, which the AST hashes rely on)
# instead of unpickling it.
_FORKED_INDEX: BenchmarkIndex | None = None


def _score_in_forked_worker(sources: list[str]) -> tuple[list[ChunkScores], dict[str, float]]:
    assert _FORKED_INDEX is not None, "worker started without a benchmark index"
    return _FORKED_INDEX.score_sources(sources)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class BenchmarkIndex:
    """Every per-signal index over one benchmark, built once."""

    # Below this many exercises a process pool costs more than it saves.
    parallel_min_exercises = 1000

    def __init__(self, task_ids: Sequence[str], sources: Sequence[str], config: SimilarityConfig = SimilarityConfig()):
        self.config = config
        self.task_ids = list(task_ids)
        self.sources = list(sources)
        docs = [CodeDocument.from_source(task_id, source) for task_id, source in zip(task_ids, sources)]
        self.ngrams = NgramIndex(task_ids, docs, config.ngram)
        self.minhash = MinhashIndex(task_ids, docs, config.minhash)
        self.ast = AstIndex(task_ids, sources, config.ast)
        self.problem_vectors: np.ndarray | None = None

    def score_sources(self, sources: Sequence[str]) -> tuple[list[ChunkScores], dict[str, float]]:
        """The n-gram, MinHash and AST signals for a chunk of exercise sources (what a
        worker process runs). Each source is split into docstring and code once; the
        n-gram signal tokenises the whole chunk in numpy, MinHash tokenises per source
        with the regex tokenizer (it needs each token's kind to normalise it). Returns
        one tuple per source and the CPU seconds spent per stage."""
        timings: dict[str, float] = {}
        started = time.process_time()
        docs = [CodeDocument.from_source("", source) for source in sources]
        timings["split"] = time.process_time() - started

        started = time.process_time()
        ngram_matches = self.ngrams.query_batch(docs)
        timings["ngram"] = time.process_time() - started

        started = time.process_time()
        normalised = [TokenStreams.from_document(doc).normalised_hashes() for doc in docs]
        shingles = [shingle_hashes(tokens, self.config.minhash.shingle_size) for tokens in normalised]
        empty = np.fromiter((not len(s) for s in shingles), dtype=bool, count=len(shingles))
        minhash_matches = self.minhash.query_signatures(self.minhash.signatures_of(shingles), empty)
        timings["minhash"] = time.process_time() - started

        started = time.process_time()
        ast_matches = [self.ast.query(source) for source in sources]
        timings["ast"] = time.process_time() - started
        rows = [
            (n.task_id, n.overlap, n.longest_shared, m.task_id, m.jaccard, a.task_id, a.match_rate)
            for n, m, a in zip(ngram_matches, minhash_matches, ast_matches)
        ]
        return rows, timings

    def score(
        self,
        exercise_ids: Sequence[str],
        sources: Sequence[str],
        embed: Callable[[list[str]], np.ndarray] | None = None,
        timings: dict[str, float] | None = None,
        workers: int | None = None,
        chunk_size: int | None = None,
    ) -> list[SignalScores]:
        """Scores of every exercise against every problem. `embed` (texts -> (n, d)
        vectors, NaN rows = failed) enables the embedding signal; `timings` collects
        seconds per stage: CPU seconds for split/ngram/minhash/ast (summed over
        workers), wall seconds for `embedding` and for `signals_wall` (the whole
        token/AST phase).

        `workers` (default: the usable cores) processes forked from this one score
        chunks of exercises in parallel once there are `parallel_min_exercises`; the
        embedding requests run in this process meanwhile."""
        timings = timings if timings is not None else {}
        sources = list(sources)
        workers = available_cores() if workers is None else max(int(workers), 1)
        if len(sources) < self.parallel_min_exercises or "fork" not in multiprocessing.get_all_start_methods():
            workers = 1
        size = chunk_size or max(250, min(2000, -(-len(sources) // (workers * 8))))
        chunks = [sources[start : start + size] for start in range(0, len(sources), size)]

        global _FORKED_INDEX
        started = time.perf_counter()
        exercise_vectors = problem_vectors = None
        if workers > 1 and len(chunks) > 1:
            _FORKED_INDEX = self
            try:
                with multiprocessing.get_context("fork").Pool(min(workers, len(chunks))) as pool:
                    pending = pool.map_async(_score_in_forked_worker, chunks, chunksize=1)
                    if embed is not None:  # HTTP / embedding work overlaps the workers
                        problem_vectors, exercise_vectors = self._embed(embed, sources, timings)
                    results = pending.get()
            finally:
                _FORKED_INDEX = None
        else:
            results = [self.score_sources(chunk) for chunk in chunks]
        timings["signals_wall"] = timings.get("signals_wall", 0.0) + time.perf_counter() - started
        for _, chunk_timings in results:
            for stage, seconds in chunk_timings.items():
                timings[stage] = timings.get(stage, 0.0) + seconds

        rows = [SignalScores(exercise_id=exercise_id) for exercise_id in exercise_ids]
        chunk_rows = (scores for chunk_scores, _ in results for scores in chunk_scores)
        for row, (ngram_task, overlap, longest, minhash_task, jaccard, ast_task, ast_rate) in zip(rows, chunk_rows):
            row.ngram_task_id, row.max_ngram_overlap, row.longest_shared_ngram = ngram_task, overlap, longest
            row.minhash_task_id, row.minhash_jaccard = minhash_task, jaccard
            row.ast_task_id, row.ast_match_rate = ast_task, ast_rate
            if ast_rate is None:
                row.notes.append("ast: solution does not parse, AST signal skipped")

        if embed is not None:
            if exercise_vectors is None:
                problem_vectors, exercise_vectors = self._embed(embed, sources, timings)
            started = time.perf_counter()
            for row, match in zip(rows, nearest_by_embedding(exercise_vectors, problem_vectors, self.task_ids)):
                row.embedding_task_id, row.embedding_cosine, row.embedding_l2 = match.task_id, match.cosine, match.l2
                if match.cosine is None:
                    row.notes.append("embedding: vector unavailable, embedding signal skipped")
            timings["embedding"] = timings.get("embedding", 0.0) + time.perf_counter() - started
        return rows

    def _embed(
        self, embed: Callable[[list[str]], np.ndarray], sources: list[str], timings: dict[str, float]
    ) -> tuple[np.ndarray, np.ndarray]:
        started = time.perf_counter()
        if self.problem_vectors is None:  # the benchmark is embedded once per index
            self.problem_vectors = np.asarray(embed(list(self.sources)), dtype=np.float32)
        exercise_vectors = np.asarray(embed(sources), dtype=np.float32)
        timings["embedding"] = timings.get("embedding", 0.0) + time.perf_counter() - started
        return self.problem_vectors, exercise_vectors
