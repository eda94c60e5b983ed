"""Self-Instruct's three prompts (Wang et al. 2023, Appendix A / `self_instruct/templates`),
shortened for a small model and asked as schema-constrained JSON:

1. instruction generation: 8 pool tasks as "Task 1..8", then "Task 9:". Self-Instruct
   lets the model continue to Task 16; here each call writes ONE task, so a small model
   only fills one short string (the bundled 135M model, asked for a list, wrote one
   endless string and never closed the JSON), and each call is its own pool draw;
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

# Character bounds the local model's grammar enforces (rows.grammar_bounded): one
# sentence of an instruction; an instance short enough for ~300 tokens.
LOCAL_TASK_LENGTHS = {"instruction": (15, 200)}
LOCAL_INSTANCE_LENGTHS = {"input": (0, 300), "output": (1, 700)}
SYSTEM_PROMPT = "You write programming tasks and their solutions for a Python course. Answer only with JSON."


class NewTask(BaseModel):
    instruction: str = Field(description="the new task instruction, one sentence that starts with a verb")


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
        f"Task {len(examples) + 1}:\n"
        f"Give JSON with instruction: Task {len(examples) + 1}, one full sentence that starts with a verb, "
        "like the tasks above, and asks for something different."
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
