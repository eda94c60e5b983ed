"""Signal 2, MinHash Jaccard: the shared MinHash (`synth_assets.common.minhash`) over
shingles of identifier/literal-normalised code tokens, so renamed variables and changed
constants leave the shingle set unchanged.

Each source is tokenised with `python_tokens` (it needs each token's kind to normalise
it), a batch is signed at once in numpy, and the signatures are compared against every
benchmark problem as one numpy operation.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from synth_assets.common.minhash import MinHasher, MinHashParams, estimated_jaccards, shingle_hashes, token_hashes
from synth_assets.decontamination.signals.code_document import API_NAMES_LOWER, CodeDocument
from synth_assets.decontamination.signals.nearest import top_positions


@dataclass(frozen=True)
class MinhashConfig:
    # 128 permutations: datasketch's default; standard error of the estimate ~ 1/sqrt(128) ~ 0.09.
    num_perm: int = 128
    # 5-token shingles of normalised code: the code-dedup convention (BigCode uses 5-grams).
    shingle_size: int = 5
    seed: int = 1

    def params(self) -> MinHashParams:
        # No LSH here (every problem is compared), and the threshold is Thresholds.minhash_jaccard.
        return MinHashParams(ngram_size=self.shingle_size, num_perm=self.num_perm, seed=self.seed)


@dataclass(frozen=True)
class MinhashMatch:
    task_id: str | None
    jaccard: float
    nearest: tuple[int, ...] = ()  # positions of the top-k problems, best first (when asked)


# --- tokens ------------------------------------------------------------------------

_CODE_TOKEN = re.compile(
    r"""(?x)
      (?P<str>[rRbBfFuU]{0,2}(?:'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*"))
    | (?P<num>\d[\d_]*\.?\d*(?:[eE][+-]?\d+)?j?|\.\d+)
    | (?P<name>[A-Za-z_]\w*)
    | (?P<op>\*\*=?|//=?|>>=?|<<=?|->|:=|[-+*/%&|^@<>!=]=|[^\s\w])
    """
)
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


@lru_cache(maxsize=1 << 20)
def normalise_token(token: str, normalise_identifiers: bool = True, normalise_literals: bool = True) -> str:
    """One lowercased token with user identifiers -> `id` and literals -> `lit` (as
    asked); builtins, keywords, typing and common module names are kept. Cached: a code
    vocabulary is small, so this is a dict lookup per token after warm-up."""
    kind = _CODE_TOKEN.fullmatch(token)
    group = kind.lastgroup if kind else "op"
    if group == "name":
        return "id" if normalise_identifiers and token not in API_NAMES_LOWER else token
    if group in ("str", "num"):
        return "lit" if normalise_literals else token
    return token


def python_tokens(code: str, normalise_identifiers: bool = False, normalise_literals: bool = False) -> list[str]:
    """Lowercased Python tokens in order: string literals (with their prefix) whole,
    numbers, names, operators (multi-character ones whole). By regex: a fraction of
    `tokenize`'s cost, and it never raises on broken code. Optionally user identifiers
    become `id` and literals `lit`; builtins, keywords and typing names are kept because
    renaming a variable does not change them."""
    tokens = _FLAT_TOKEN.findall(code.lower())
    if not (normalise_identifiers or normalise_literals):
        return tokens
    return [normalise_token(token, normalise_identifiers, normalise_literals) for token in tokens]


# raw token -> the shared token hash of its normalised form, memoised per process: a
# vocabulary of code tokens is small, so after warm-up hashing a token is a dict lookup.
_NORMALISED_HASHES: dict[str, int] = {}


@dataclass(frozen=True)
class TokenStreams:
    """The MinHash signal's view of one source: its lowercased code tokens, whose
    identifier/literal-normalised forms are shingled (`normalised_hashes`)."""

    code: list[str]

    @classmethod
    def from_document(cls, doc: CodeDocument) -> TokenStreams:
        return cls(python_tokens(doc.code))

    @property
    def normalised(self) -> list[str]:
        return [normalise_token(token) for token in self.code]

    def normalised_hashes(self) -> np.ndarray:
        """`token_hashes` of the identifier/literal-normalised code (MinHash's input)."""
        memo = _NORMALISED_HASHES
        try:
            return np.fromiter(map(memo.__getitem__, self.code), dtype=np.uint32, count=len(self.code))
        except KeyError:
            for token in self.code:
                if token not in memo:
                    memo[token] = int(token_hashes([normalise_token(token)])[0])
            return np.fromiter(map(memo.__getitem__, self.code), dtype=np.uint32, count=len(self.code))


# --- index -------------------------------------------------------------------------


class MinhashIndex:
    """MinHash signatures of the benchmark problems as one (problems x num_perm) array.

    With a benchmark of a few hundred problems the estimated Jaccard against *every*
    problem is one vectorised comparison, cheaper than LSH banding, and it also gives
    the nearest problem for clean exercises, which the audit table needs. For large
    benchmarks, put `signatures` into `synth_assets.common.minhash.LshIndex` as the
    candidate filter."""

    def __init__(self, task_ids: Sequence[str], docs: Sequence[CodeDocument], config: MinhashConfig = MinhashConfig()):
        self.config = config
        self.task_ids = list(task_ids)
        self.hasher = MinHasher(config.params())
        shingles = [self.shingles(doc) for doc in docs]
        self.signatures = self.signatures_of(shingles)
        self._empty = np.array([not len(s) for s in shingles], dtype=bool)

    def shingles(self, doc: CodeDocument) -> np.ndarray:
        """The shingle hashes of a document's normalised code tokens (code shorter than a
        shingle is one shingle of all its tokens)."""
        return shingle_hashes(TokenStreams.from_document(doc).normalised_hashes(), self.config.shingle_size)

    def signatures_of(self, shingle_sets: Sequence[np.ndarray]) -> np.ndarray:
        """(len(shingle_sets), num_perm) uint32 signatures; an empty set keeps the
        all-max signature (and is never matched)."""
        return self.hasher.signatures_from_hash_sets(shingle_sets)

    def signature(self, doc: CodeDocument) -> np.ndarray:
        return self.signatures_of([self.shingles(doc)])[0]

    def query(self, doc: CodeDocument) -> MinhashMatch:
        return self.query_batch([doc])[0]

    def query_batch(self, docs: Sequence[CodeDocument], top_k: int = 0) -> list[MinhashMatch]:
        """Matches for many documents at once."""
        shingles = [self.shingles(doc) for doc in docs]
        empty = np.fromiter((not len(s) for s in shingles), dtype=bool, count=len(shingles))
        return self.query_signatures(self.signatures_of(shingles), empty, top_k=top_k)

    def query_signatures(self, signatures: np.ndarray, empty: np.ndarray, block: int = 256, top_k: int = 0) -> list[MinhashMatch]:
        """Nearest problem and estimated Jaccard for each signature (one numpy
        comparison per block of exercises against every problem); with `top_k`, the
        positions of the k nearest problems too (the functional signal's candidates)."""
        if not len(self.task_ids):
            return [MinhashMatch(None, 0.0)] * len(signatures)
        matches: list[MinhashMatch] = []
        for start in range(0, len(signatures), block):
            chunk = signatures[start : start + block]
            estimates = estimated_jaccards(chunk, self.signatures)
            estimates[:, self._empty] = 0.0
            best = estimates.argmax(axis=1)
            best_estimates = estimates[np.arange(len(chunk)), best]
            nearest = top_positions(estimates, top_k)
            for row, (index, estimate) in enumerate(zip(best.tolist(), best_estimates.tolist())):
                is_empty = bool(empty[start + row])
                matches.append(
                    MinhashMatch(None, 0.0) if is_empty
                    else MinhashMatch(self.task_ids[index], float(estimate), nearest[row] if top_k else ())
                )
        return matches

