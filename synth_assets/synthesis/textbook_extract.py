"""The reconstructed phi-1 textbook prompt and the checks of its shape on the output.

phi-1 (Gunasekar et al. 2023) does not publish its textbook prompt; its examples
(section 2.2, figure 2.2) and the reconstructions people use fix the shape: an extract
from the middle of a topic (no title, no introduction of the book or chapter); one
concept; a short overview; an example solved in words; then one or two snippets of at
most 10 lines that define a function and call it; no text after the code; at most two
paragraphs of text. Styles (catalog/styles.json) vary the voice inside that shape.

`extract_shape` measures what can be measured on the output (snippets, their lines,
the function and its call, text after the code, paragraphs); "one concept" and "from
the middle of a topic" cannot be checked by rule, so they are only asked for.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from synth_assets.synthesis.prompt_plans import TextbookPrompt, load_catalog

# The reconstructed prompt's limits.
MAX_SNIPPETS = 2
MAX_SNIPPET_LINES = 10
MAX_PARAGRAPHS = 2

SYSTEM_PROMPT = "You are a computer science teacher. You write short, clear textbook extracts with Python code."

# A fence line may carry any info string after the backticks (```python, ```py, or a small
# model's "```python 1508736429"), as Markdown allows.
_CODE_BLOCK = re.compile(r"```[^`\n]*\n(.*?)```", re.DOTALL)
_FENCE = re.compile(r"```")


def code_blocks(text: str) -> list[str]:
    """Fenced code blocks (```python / ```py / bare ``` / any info string)."""
    return [block for block in _CODE_BLOCK.findall(text or "")]


def _slots(plan: TextbookPrompt) -> list[str]:
    """The plan's slots as prompt lines: reader, style, TinyStories' words and features."""
    style = load_catalog().style_instruction(plan.style)
    verb, noun, adjective = (plan.required_words + ["", "", ""])[:3]
    features = plan.features or [plan.feature]
    lines = [f"The reader is a {plan.audience}, {plan.persona}.", style]
    if verb:
        lines.append(f'Use the verb "{verb}", the noun "{noun}" and the adjective "{adjective}".')
    lines.append("The extract " + ", and it ".join(features) + ".")
    return lines


def extract_instructions(plan: TextbookPrompt, context: tuple[str, ...] = ()) -> list[str]:
    """The reconstructed prompt for one plan, line by line. The order (task, slots, shape,
    limits) is the one the bundled 135M model follows best: measured on 10 plans, a
    numbered shape list up front gave 1 of 6 sections with code (the model recites the
    list), this order 5-6 of 10. `context` lines (the iterative mode's summary and
    sentence) go before the shape, which the model follows best when it comes last."""
    return [
        f"Write a short textbook section about {plan.topic}: {plan.subtopic}.",
        *_slots(plan),
        *context,
        "Structure: first a short overview of the idea, then an example explained in plain words, "
        "then one or two short Python code blocks in ```python fences.",
        f"Each code block has at most {MAX_SNIPPET_LINES} lines and defines a function, then calls it. "
        "Write nothing after the code.",
        "The section is an extract from the middle of a chapter: no title, one concept, "
        f"at most {MAX_PARAGRAPHS} paragraphs before the code.",
    ]


def direct_messages(plan: TextbookPrompt) -> list[dict]:
    """One call: the reconstructed prompt."""
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "\n".join(extract_instructions(plan))}]


# TinyStories-Instruct (Eldan & Li 2023, section 4.2) adds a summary and a sentence that
# must appear to the instructions; here the LLM writes both first, one call each.
def summary_messages(plan: TextbookPrompt) -> list[dict]:
    """Iterative step 1: a two-sentence summary of the extract to write."""
    user = "\n".join([
        f"You are planning a textbook extract on {plan.topic}, the part about {plan.subtopic}. It teaches one "
        "concept, solves one example in words, and shows one short Python function and its call.",
        *_slots(plan),
        "In two sentences, summarise what the extract will explain and which example it will solve. "
        "Answer with the summary only.",
    ])
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def sentence_messages(plan: TextbookPrompt, summary: str) -> list[dict]:
    """Iterative step 2: one sentence the extract must contain."""
    noun = plan.required_words[1] if len(plan.required_words) > 1 else plan.topic
    user = "\n".join([
        f"Here is the summary of a textbook extract on {plan.topic} ({plan.subtopic}):",
        summary,
        f'Write one sentence that this extract must contain, using the word "{noun}". Answer with the sentence only.',
    ])
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def final_messages(plan: TextbookPrompt, summary: str, sentence: str) -> list[dict]:
    """Iterative step 3: the reconstructed prompt, the summary and the required sentence."""
    lines = extract_instructions(plan, (f"Summary of the extract: {summary}",
                                        f"The extract must contain this sentence word for word: {sentence}"))
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "\n".join(lines)}]


def first_sentence(text: str) -> str:
    """The first sentence of a model's answer (first non-empty line, up to its first
    sentence end), without surrounding quotes."""
    line = next((line.strip() for line in (text or "").splitlines() if line.strip()), "")
    match = re.match(r"(.+?[.!?])[\"'\u201d\u2019]?(\s|$)", line)
    sentence = match.group(1) if match else line
    return sentence.strip().strip('"\u201c\u201d\'').strip()


def _normalised(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", "", (text or "").lower())).strip()


def contains_sentence(text: str, sentence: str) -> bool:
    """Whether `sentence` appears in `text`, ignoring case, punctuation and spacing."""
    wanted = _normalised(sentence)
    return bool(wanted) and wanted in _normalised(text)


@dataclass(frozen=True)
class ExtractShape:
    """The reconstructed prompt's measurable constraints, on one output."""

    code_lines_per_snippet: list[int]
    text_after_code: bool
    n_paragraphs: int
    defines_and_calls_function: bool
    violations: list[str] = field(default_factory=list)  # empty = every constraint met

    @property
    def constraints_met(self) -> bool:
        return not self.violations


def _prose(text: str) -> str:
    """The text outside fenced code (an unclosed fence hides the rest, as a renderer does)."""
    without_blocks = _CODE_BLOCK.sub("\n\n", text or "")
    return without_blocks.split("```", 1)[0]


def prose_paragraphs(text: str) -> list[str]:
    """Non-empty blocks of prose separated by blank lines (headings count as paragraphs)."""
    return [chunk.strip() for chunk in re.split(r"\n\s*\n", _prose(text)) if chunk.strip()]


def function_called(blocks: list[str]) -> bool:
    """True when a function defined in one of the blocks is called in one of them."""
    defined: set[str] = set()
    called: set[str] = set()
    for block in blocks:
        try:
            tree = ast.parse(block)
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                defined.add(node.name)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                called.add(node.func.id)
    return bool(defined & called)


def extract_shape(text: str) -> ExtractShape:
    """Measure the reconstructed prompt's constraints on `text`; each violation is a
    reason: `no_code`, `unclosed_code_block`, `too_many_snippets: n`, `snippet_too_long:
    block i has n lines`, `no_function_called`, `text_after_code`, `no_text_before_code`,
    `too_many_paragraphs: n`."""
    text = text or ""
    blocks = code_blocks(text)
    lines = [sum(1 for line in block.splitlines() if line.strip()) for block in blocks]
    last_fence = [m.end() for m in _FENCE.finditer(text)]
    after = text[last_fence[-1]:] if blocks and last_fence else ""
    paragraphs = prose_paragraphs(text)
    calls = function_called(blocks)
    violations = []
    if not blocks:
        violations.append("no_code")
    if len(last_fence) % 2:
        violations.append("unclosed_code_block")
    if len(blocks) > MAX_SNIPPETS:
        violations.append(f"too_many_snippets: {len(blocks)}")
    violations += [f"snippet_too_long: block {i} has {n} lines" for i, n in enumerate(lines) if n > MAX_SNIPPET_LINES]
    if blocks and not calls:
        violations.append("no_function_called")
    if after.strip():
        violations.append("text_after_code")
    if not paragraphs:
        violations.append("no_text_before_code")
    if len(paragraphs) > MAX_PARAGRAPHS:
        violations.append(f"too_many_paragraphs: {len(paragraphs)}")
    return ExtractShape(lines, bool(after.strip()), len(paragraphs), calls, violations)
