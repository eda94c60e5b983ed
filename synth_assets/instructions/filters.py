"""Self-Instruct's heuristic filters, each rejection with its reason.

From Self-Instruct (Wang et al. 2023, section 2.3, `self_instruct/bootstrap_instructions.py`)
and Alpaca's `generate_instruction.py`, which added words to the blacklist:

- an instruction of 3 words or fewer, or of more than 150, is dropped;
- an instruction naming something a language model cannot see or produce (an image, a
  video, a drawing...) is dropped;
- an instruction starting with punctuation or with a non-ASCII character is dropped;
- an instruction whose ROUGE-L F1 with any instruction already in the pool is 0.7 or
  more is dropped (`rouge.RougePool`);
- an instance whose output is empty, or equal to its input, is dropped.

What we changed for a coding dataset: Self-Instruct's blacklist also holds "graph",
"file", "map" (and drops every "Write a program..." instruction); here those are
ordinary programming words (graph algorithms, file handling, `map()`), so they are left
out of `DEFAULT_BLACKLIST`. Pass them in a config to restore the published filter.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

from synth_assets.instructions.rouge import RougePool

# Self-Instruct: `if len(inst.split()) <= 3 or len(inst.split()) > 150: continue`
MIN_WORDS = 4
MAX_WORDS = 150
# Self-Instruct: "only add to the pool when ROUGE-L with every existing instruction is < 0.7"
ROUGE_L_THRESHOLD = 0.7
# Self-Instruct's list (image(s), picture(s), draw, plot, go to) + Alpaca's additions
# (video, audio, music, flowchart, diagram); graph/file/map left out, see the module docstring.
DEFAULT_BLACKLIST = (
    "image", "images", "picture", "pictures", "draw", "plot", "go to",
    "video", "audio", "music", "flowchart", "diagram",
)


_LIST_PREFIX = re.compile(r"^\s*(?:(?:tasks?|questions?)\s*\d*\s*[:.)-]|\d+\s*[.)])\s*", re.IGNORECASE)


def clean_candidate(text: str) -> str:
    """One line, without a leading "Task 9:" / "Question 2:" / "3." numbering copied from the prompt."""
    return re.sub(r"\s+", " ", _LIST_PREFIX.sub("", text or "")).strip()


@dataclass(frozen=True)
class InstructionFilter:
    min_words: int = MIN_WORDS
    max_words: int = MAX_WORDS
    blacklist: tuple[str, ...] = DEFAULT_BLACKLIST
    rouge_l_threshold: float = ROUGE_L_THRESHOLD


def _contains_word(word: str, text: str) -> bool:
    return re.search(rf"\b{re.escape(word)}\b", text, flags=re.IGNORECASE) is not None


def heuristic_rejection(instruction: str, rules: InstructionFilter) -> str | None:
    """The reason the instruction fails a length, blacklist or first-character filter, or None."""
    text = (instruction or "").strip()
    words = len(text.split())
    if words < rules.min_words:
        return f"too_short: {words} words (< {rules.min_words})"
    if words > rules.max_words:
        return f"too_long: {words} words (> {rules.max_words})"
    for word in rules.blacklist:
        if _contains_word(word, text):
            return f"blacklisted: {word}"
    if text[0] in string.punctuation:
        return f"starts_with_punctuation: {text[0]}"
    if not text[0].isascii():
        return "starts_with_non_ascii"
    return None


@dataclass(frozen=True)
class Screened:
    """One candidate's fate: `reason` None = accepted; `rouge_l` / `most_similar_id` are its
    highest ROUGE-L against the pool and which pool member that was."""

    reason: str | None
    rouge_l: float | None = None
    most_similar_id: str | None = None


def screen_instruction(instruction: str, candidate_id: str, pool: RougePool, rules: InstructionFilter) -> Screened:
    """Apply every instruction filter; an accepted instruction is added to the pool, so the
    next candidate is compared with it too (Self-Instruct's growing pool)."""
    reason = heuristic_rejection(instruction, rules)
    if reason:
        return Screened(reason)
    score, similar = pool.most_similar(instruction)
    if score >= rules.rouge_l_threshold:
        return Screened(f"rouge_l: {score:.3f} >= {rules.rouge_l_threshold}", round(score, 4), similar)
    pool.add(candidate_id, instruction.strip())
    return Screened(None, round(score, 4), similar)


def instance_rejection(input_text: str, output: str) -> str | None:
    """Self-Instruct's instance filters: an empty output, or an output equal to the input."""
    if not (output or "").strip():
        return "empty_output"
    if (input_text or "").strip() and output.strip() == input_text.strip():
        return "output_equals_input"
    return None
