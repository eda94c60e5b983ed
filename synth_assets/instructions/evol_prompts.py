"""Evol-Instruct's prompts (WizardLM, Xu et al. 2023, Appendix: "In-Depth Evolving" and
"In-Breadth Evolving", and the equality check of "Elimination Evolving").

In-depth evolving rewrites a prompt into a harder one with one of four methods (add
constraints, deepening, concretizing, increased reasoning steps); the rewrite may add only
10 to 20 words and must stay answerable by humans. In-breadth evolving ("mutation")
writes a brand-new, rarer prompt in the same domain. WizardCoder adds code-specific
methods (erroneous reference code, time/space complexity); they are available as
operations but not in the default set.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

DEPTH_PREAMBLE = (
    "I want you act as a Prompt Rewriter. Your objective is to rewrite a given prompt into a more complex version "
    "to make those famous AI systems (e.g., chatgpt and GPT4) a bit harder to handle. But the rewritten prompt must "
    "be reasonable and must be understood and responded by humans. You SHOULD complicate the given prompt using the "
    "following method:\n{method}\nYou should try your best not to make the #Rewritten Prompt# become verbose, "
    "#Rewritten Prompt# can only add 10 to 20 words into #The Given Prompt#. '#The Given Prompt#', "
    "'#Rewritten Prompt#', 'given prompt' and 'rewritten prompt' are not allowed to appear in #Rewritten Prompt#"
)
BREADTH_PREAMBLE = (
    "I want you act as a Prompt Creator. Your goal is to draw inspiration from the #Given Prompt# to create a brand "
    "new prompt. This new prompt should belong to the same domain as the #Given Prompt# but be even more rare. The "
    "LENGTH and complexity of the #Created Prompt# should be similar to that of the #Given Prompt#. The #Created "
    "Prompt# must be reasonable and must be understood and responded by humans. '#Given Prompt#', '#Created Prompt#', "
    "'given prompt' and 'created prompt' are not allowed to appear in #Created Prompt#"
)
METHODS = {
    # WizardLM in-depth evolving
    "add_constraints": "Please add one more constraints/requirements into #The Given Prompt#.",
    "deepening": "If #The Given Prompt# contains inquiries about certain issues, the depth and breadth of the inquiry can be increased.",
    "concretizing": "Please replace general concepts with more specific concepts.",
    "increase_reasoning": "If #The Given Prompt# can be solved with just a few simple thinking processes, you can rewrite it to explicitly request multiple-step reasoning.",
    # WizardLM in-breadth evolving
    "breadth": None,
    # WizardCoder's code-specific in-depth methods
    "erroneous_reference": "Provide a piece of erroneous code as a reference to increase misdirection.",
    "complexity_requirements": "Propose higher time or space complexity requirements, but please refrain from doing so frequently.",
}
# WizardLM draws one of its five operations uniformly for each instruction in each round.
DEFAULT_OPERATIONS = ("add_constraints", "deepening", "concretizing", "increase_reasoning", "breadth")
# Elimination rule 4: the evolved prompt copies words from the evolving prompt.
COPIED_PROMPT_WORDS = ("#the given prompt#", "#rewritten prompt#", "#given prompt#", "#created prompt#",
                       "given prompt", "rewritten prompt", "created prompt")


# Ours: the answer is JSON, and a small model otherwise writes the "#...#" tags as the prompt.
ANSWER_FORMAT = "Give JSON with prompt: the new prompt's text only, with no # labels."


class EvolvedPrompt(BaseModel):
    prompt: str = Field(description="the new prompt only")


class Equality(BaseModel):
    judgement: Literal["Equal", "Not Equal"]


def evolve_messages(operation: str, given_prompt: str) -> list[dict]:
    if operation == "breadth":
        text = f"{BREADTH_PREAMBLE}\n#Given Prompt#:\n{given_prompt}\n{ANSWER_FORMAT}"
    else:
        text = f"{DEPTH_PREAMBLE.format(method=METHODS[operation])}\n#The Given Prompt#:\n{given_prompt}\n{ANSWER_FORMAT}"
    return [{"role": "user", "content": text}]


def response_messages(prompt: str) -> list[dict]:
    return [
        {"role": "system", "content": "You are a helpful Python programming assistant. Put code in ```python fences."},
        {"role": "user", "content": prompt},
    ]


def equality_messages(first: str, second: str) -> list[dict]:
    text = (
        "Here are two Instructions to ChatGPT AI, do you think they are equal to each other, which meet the following "
        "requirements:\n1. They have same constraints and requirments.\n2. They have same depth and breadth of the inquiry.\n"
        f"The First Prompt: {first}\nThe Second Prompt: {second}\n"
        "Your Judgement (Just answer: Equal or Not Equal. No need to explain the reason.) as JSON with judgement."
    )
    return [{"role": "user", "content": text}]
