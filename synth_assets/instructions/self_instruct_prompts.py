"""Self-Instruct's three prompts (Wang et al. 2023, Appendix A / `self_instruct/templates`),
shortened for a small model and asked as schema-constrained JSON:

1. instruction generation: 8 pool tasks as "Task 1..8", then "come up with new tasks";
2. classification identification: "Can the following task be regarded as a
   classification task with finite output labels?" with labelled examples;
3. instance generation: input-first for generation tasks (input, then output) and
   output-first for classification tasks (the class label, then an input for it), so
   labels are not skewed towards one class (section 2.3).

The JSON field order is the generation order (a grammar-constrained model writes the
fields in schema order), which is how output-first is enforced.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, Field

from synth_assets.instructions.seed_pool import SeedTask

# Self-Instruct asks for tasks 9..16 after 8 examples: at most 8 new tasks per request.
MAX_NEW_TASKS = 8
SYSTEM_PROMPT = "You write programming tasks and their solutions for a Python course. Answer only with JSON."


class NewTasks(BaseModel):
    # min_length: a grammar-constrained small model otherwise often answers an empty list
    tasks: list[str] = Field(description="new task instructions, one sentence each", min_length=1, max_length=MAX_NEW_TASKS)


class TaskType(BaseModel):
    is_classification: bool = Field(description="true if the task has a small, finite set of output labels")


class InputFirstInstance(BaseModel):
    input: str = Field(description="the input of the example, or an empty string if the task needs none")
    output: str = Field(description="the correct output for that input")


class OutputFirstInstance(BaseModel):
    output: str = Field(description="one class label of the task")
    input: str = Field(description="an input whose correct label is that class label")


def _messages(user: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def generation_messages(examples: Sequence[str]) -> list[dict]:
    listed = "\n".join(f"Task {number}: {text}" for number, text in enumerate(examples, start=1))
    return _messages(
        "Come up with a series of new tasks about Python programming.\n"
        f"{listed}\n"
        f"Give JSON with tasks: a list of up to {MAX_NEW_TASKS} new tasks (Task {len(examples) + 1} onwards). "
        "Each task is one full sentence that starts with a verb, like the tasks above, and asks for something different."
    )


def classification_messages(instruction: str, examples: Sequence[SeedTask]) -> list[dict]:
    shots = "\n".join(
        f"Task: {task.instruction}\nIs it classification? {'Yes' if task.is_classification else 'No'}" for task in examples
    )
    return _messages(
        "Can the following task be regarded as a classification task with finite output labels?\n"
        f"{shots}\nTask: {instruction}\nGive JSON with is_classification (true or false)."
    )


def instance_messages(instruction: str, is_classification: bool, examples: Sequence[SeedTask]) -> list[dict]:
    if is_classification:
        shots = "\n\n".join(f"Task: {t.instruction}\nClass label: {t.output}\nInput: {t.input}" for t in examples)
        header = (
            "Given the classification task definition and the class labels, generate an input that "
            "corresponds to the class label. If the task needs no input, only give the label."
        )
        ask = "Give JSON with output (one class label) and then input (an example with that label)."
    else:
        shots = "\n\n".join(f"Task: {t.instruction}\nInput: {t.input}\nOutput: {t.output}" for t in examples)
        header = (
            "Come up with an example for the following task. If the task needs no additional input, "
            "leave the input empty and give the output directly."
        )
        ask = "Give JSON with input (may be empty) and output (the correct answer, code in ```python fences)."
    return _messages(f"{header}\n\n{shots}\n\nTask: {instruction}\n{ask}")
