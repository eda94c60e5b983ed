"""What the LLM judge is shown and asked, per kind of row (AlpaGasus, Chen et al. 2023).

AlpaGasus sends ChatGPT the instruction, the input and the response, and asks it to
"rate according to the accuracy of the response to the instruction and the input" on a
0-5 scale, score first, then an explanation "avoiding any potential bias". Each kind of
row here gets that prompt with its own dimension and rubric:

- `instruction` (the four instruction assets): AlpaGasus's accuracy dimension as is;
- `textbook` (`synthetic_textbook`): phi-1's educational value for a student learning
  to code (the annotation prompt of section 2.1), plus correct code;
- `exercise` (`code_exercises`): whether the solution does what the docstring says and
  the asserts check it.

The answer is schema-constrained JSON: an integer score 0-5 (llama.cpp's grammar spells a
small integer range as an enum, so the score is always in range) and a rationale, the
rationale first (AlpaGasus asks for the score first; see `Judgement`).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, Field

SCORE_MIN, SCORE_MAX = 0, 5


class Judgement(BaseModel):
    # Rationale before score: a grammar-constrained model writes fields in schema order, and
    # the bundled 135M model asked for the score first answered 0 for everything, then
    # explained why the response deserved a 5. Reasoning first is also G-Eval's order.
    rationale: str = Field(description="a short explanation of the evaluation")
    score: int = Field(ge=SCORE_MIN, le=SCORE_MAX, description="0 (worst) to 5 (best)")


# The local model's grammar bounds the rationale (rows.grammar_bounded), so it always
# closes and the score is always written.
LOCAL_LENGTHS = {"rationale": (10, 300)}


@dataclass(frozen=True)
class Rubric:
    dimension: str
    criteria: str


RUBRICS = {
    "instruction": Rubric(
        "accuracy", "is the response a correct, complete and helpful answer to the instruction and the input?"
    ),
    "textbook": Rubric(
        "educational value",
        "would a student whose goal is to learn basic coding concepts learn from it: a clear explanation, "
        "on the topic, with short code that is correct and runs?",
    ),
    "exercise": Rubric(
        "correctness", "does the solution do exactly what the docstring asks, and do the asserts test it meaningfully?"
    ),
}

SYSTEM_PROMPT = (
    "We would like to request your feedback on the performance of an AI assistant in response to the "
    "instruction and the given input displayed following. Answer only with JSON."
)


def shorten(text: str, max_chars: int) -> str:
    text = (text or "").strip()
    return text if len(text) <= max_chars else text[:max_chars] + "\n[...truncated]"


def judge_messages(kind: str, instruction: str, input_text: str, response: str, max_chars: int) -> list[dict]:
    rubric = RUBRICS[kind]
    user = (
        f"Instruction: {shorten(instruction, max_chars // 3)}\n"
        f"Input: {shorten(input_text, max_chars // 3) or '(none)'}\n"
        f"Response: {shorten(response, max_chars)}\n\n"
        f"Please rate according to the {rubric.dimension} of the response: {rubric.criteria} "
        f"The response receives a score on a scale of {SCORE_MIN} to {SCORE_MAX}, where a higher score indicates "
        f"a higher level of {rubric.dimension}. Give JSON with rationale first (a short explanation of your "
        "evaluation, avoiding any potential bias), then score."
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]
