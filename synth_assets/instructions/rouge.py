"""ROUGE-L (Lin 2004) as Self-Instruct uses it to keep near-duplicate instructions out.

Self-Instruct (Wang et al. 2023, section 2.3) scores every new instruction against every
instruction already in the pool with `rouge_score.RougeScorer(["rougeL"],
use_stemmer=False)` and adds it only when the highest F-measure is below 0.7. This module
computes the same figure without the dependency: the `rouge_score` tokenizer (lowercase,
every run of characters other than a-z and 0-9 is a separator) and the F1 of the longest
common subsequence of the two token lists.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def rouge_tokens(text: str) -> tuple[str, ...]:
    """rouge_score's default tokens: lowercased, split on anything but a-z and 0-9."""
    return tuple(_NON_ALNUM.sub(" ", (text or "").lower()).split())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (two-row dynamic programme)."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if token == other else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l_tokens(candidate: Sequence[str], reference: Sequence[str]) -> float:
    """ROUGE-L F1 of two token sequences (0.0 when either is empty)."""
    if not candidate or not reference:
        return 0.0
    lcs = lcs_length(candidate, reference)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(candidate), lcs / len(reference)
    return 2 * precision * recall / (precision + recall)


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 of two texts, tokenized as rouge_score does."""
    return rouge_l_tokens(rouge_tokens(candidate), rouge_tokens(reference))


@dataclass
class RougePool:
    """A growing pool of instructions; `most_similar` answers "how close is the nearest
    one?" for a candidate, `add` grows the pool (Self-Instruct's iterated pool)."""

    ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    _tokens: list[tuple[str, ...]] = field(default_factory=list)

    def add(self, item_id: str, text: str) -> None:
        self.ids.append(item_id)
        self.texts.append(text)
        self._tokens.append(rouge_tokens(text))

    def most_similar(self, text: str) -> tuple[float, str | None]:
        """(highest ROUGE-L F1 against the pool, id of that instruction); (0.0, None) when empty.
        A pool member whose token count alone bounds its F1 below the best so far is skipped."""
        tokens = rouge_tokens(text)
        best, best_id = 0.0, None
        for item_id, other in zip(self.ids, self._tokens):
            # F1 <= 2*min/(len_a+len_b): skip members that cannot beat the best.
            if not other or not tokens or 2 * min(len(tokens), len(other)) / (len(tokens) + len(other)) <= best:
                continue
            score = rouge_l_tokens(tokens, other)
            if score > best:
                best, best_id = score, item_id
        return best, best_id

    def __len__(self) -> int:
        return len(self.ids)
