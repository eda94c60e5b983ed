"""The word-and-symbol tokenizer and the approximate token count built on it.

One meaning each, shared by every group:

- `word_and_symbol_tokens`: runs of word characters (``\\w+``) and every other
  non-space character on its own, so ``x = f(a, b)`` is ``x = f ( a , b )``. The
  diversity metrics use it on lowercased text (distinct-n, near-duplicate shingles).
- `approximate_token_count`: how many of those pieces a text has; ``raw_stack_plus.n_tokens``
  and the release's token figure for tables without a count column. No BPE vocabulary
  (tiktoken downloads one); a GPT-2 BPE count is ~1.3x this on code.

Tokenizers with other meanings live with their one user: bigcode's byte tokens for
MinHash dedup (`synth_assets.common.minhash.bigcode_tokens`), the classifier's
case-kept code tokens (`synth_assets.filtering.features.code_tokens`), and the
decontamination signals' lowercased Python tokens and n-gram byte tokens
(`synth_assets.decontamination.signals`).
"""

from __future__ import annotations

import re

import polars as pl

WORD_OR_SYMBOL_PATTERN = r"\w+|[^\w\s]"
_WORD_OR_SYMBOL = re.compile(WORD_OR_SYMBOL_PATTERN)


def word_and_symbol_tokens(text: str) -> list[str]:
    """Runs of word characters and single other non-space characters, in order."""
    return _WORD_OR_SYMBOL.findall(text)


def approximate_token_count(text: str) -> int:
    """The number of `word_and_symbol_tokens` of a text: ``x = f(a, b)`` -> 8."""
    return len(_WORD_OR_SYMBOL.findall(text))


def approximate_token_count_expr(column: str) -> pl.Expr:
    """`approximate_token_count` of every value of a text column, as a Polars expression
    (null counts as 0)."""
    return pl.col(column).cast(pl.String).str.count_matches(WORD_OR_SYMBOL_PATTERN).fill_null(0)
