"""One exercise request and its answer: the JSON schemas the model fills in, the chat
messages for a plan, and the checks that turn an answer into a candidate function.

Two plan modes (prompt_plans.py):
- `topic`: phi-1 CodeExercises (Gunasekar et al. 2023, section 2.2): a function named
  by the plan, about a planned topic and difficulty.
- `oss_instruct`: Magicoder (Wei et al. 2023, OSS-Instruct) in its prompt shape: a
  random 1-15-line corpus snippet "for inspiration", a completely self-contained
  [Problem Description] and a correct [Solution]; the solution is then asked for in
  HumanEval form (one function, the planned name, a docstring).

Two ways to get tests (`TESTS_FROM`):
- `model`: the model writes 2-3 `assert` statements (what phi-1's generator is asked);
- `interpreter`: the model only proposes example inputs and the sandbox computes the
  expected outputs (interpreter_tests.py), so the asserts are true of the solution by
  construction. A 135M model gets both the solution and its own asserts wrong; this
  way only the solution has to run.

The model answers a JSON schema; the function is assembled here as
`def <planned name>(<parameters>):` so even a tiny model produces the right shape. If
the JSON is unusable, a ```python block in the raw answer is tried. Either way the
source is checked with `ast` and rejected with a reason unless it is exactly one
top-level function with the planned name and a docstring.
"""

from __future__ import annotations

import ast
import json
import re
import textwrap
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from resources.llm import StructuredResult
from synth_assets.synthesis.prompt_plans import ExercisePlan, load_catalog

PROMPT_VERSION = "exercise-v4"  # v4: a persona and a different answer example per plan
TESTS_FROM = ("model", "interpreter")
# Magicoder caps nothing; the bundled model's context is 4k tokens and the prompt must fit.
MAX_INSPIRATION_CHARS = 1200


class ExerciseDraft(BaseModel):
    """Tests from the model. The `def` line is assembled from the plan."""

    parameters: list[str] = Field(description="parameter names of the function")
    docstring: str = Field(description="what the function does and returns")
    body: str = Field(description="the function body as Python code, without the def line")
    tests: list[str] = Field(description="2 or 3 assert statements that call the function")


class InputsDraft(BaseModel):
    """Tests from the interpreter: the model proposes inputs, the sandbox the outputs."""

    parameters: list[str] = Field(description="parameter names of the function")
    docstring: str = Field(description="what the function does and returns")
    body: str = Field(description="the function body as Python code, without the def line")
    inputs: list[str] = Field(description="3 to 5 example calls: the arguments of each call as Python literals")


class OssInstructExerciseDraft(BaseModel):
    """Magicoder's [Problem Description] first, then the [Solution] in HumanEval form."""

    problem_description: str = Field(description="the completely self-contained [Problem Description]")
    parameters: list[str] = Field(description="parameter names of the solution function")
    docstring: str = Field(description="what the function does and returns")
    body: str = Field(description="the function body as Python code, without the def line")
    tests: list[str] = Field(description="2 or 3 assert statements that call the function")


class OssInstructInputsDraft(BaseModel):
    """Magicoder's [Problem Description], the [Solution] in HumanEval form, and inputs."""

    problem_description: str = Field(description="the completely self-contained [Problem Description]")
    parameters: list[str] = Field(description="parameter names of the solution function")
    docstring: str = Field(description="what the function does and returns")
    body: str = Field(description="the function body as Python code, without the def line")
    inputs: list[str] = Field(description="3 to 5 example calls: the arguments of each call as Python literals")


DRAFT_SCHEMAS = (ExerciseDraft, InputsDraft, OssInstructExerciseDraft, OssInstructInputsDraft)


def draft_schema(mode: str, tests_from: str) -> type[BaseModel]:
    """The schema the model fills in for a plan mode and a source of tests."""
    oss = mode == "oss_instruct"
    if tests_from == "interpreter":
        return OssInstructInputsDraft if oss else InputsDraft
    return OssInstructExerciseDraft if oss else ExerciseDraft


SYSTEM_PROMPT = (
    "You write small Python exercises: a function with a docstring, its body, and {what}. Answer only with JSON."
)
# Magicoder (Wei et al. 2023), src/magicoder/prompt_template.py, the OSS-Instruct prompt.
MAGICODER_SYSTEM = (
    "You are exceptionally skilled at crafting high-quality programming problems and offering precise solutions."
)
MAGICODER_PROMPT = """Please gain inspiration from the following random code snippet to create a high-quality programming problem. Present your output in two distinct sections: [Problem Description] and [Solution].

Code snippet for inspiration:
```
{code}
```

Guidelines for each section:
1. [Problem Description]: This should be **completely self-contained**, providing all the contextual information one needs to understand and solve the problem. Assume common programming knowledge, but ensure that any specific context, variables, or code snippets pertinent to this problem are explicitly included.
2. [Solution]: Offer a comprehensive, **correct** solution that accurately addresses the [Problem Description] you provided."""


DEFAULT_FORMAT_EXAMPLE = "count_positive"


def example_answer(function_name: str, mode: str = "topic", tests_from: str = "model",
                   example_name: str = DEFAULT_FORMAT_EXAMPLE) -> dict:
    """A shape example written for the planned name, from the shipped example the plan
    drew (catalog/exercise_examples.json): small models copy examples, so each plan shows
    a different one, and a copied example whose tests call another function would never
    run its tests."""
    example = load_catalog().exercise_example(example_name or DEFAULT_FORMAT_EXAMPLE)
    answer = {"parameters": example["parameters"], "docstring": example["docstring"], "body": example["body"]}
    if tests_from == "interpreter":
        answer["inputs"] = [arguments for arguments, _ in example["calls"]]
    else:
        answer["tests"] = [f"assert {function_name}({arguments}) == {expected}" for arguments, expected in example["calls"][:2]]
    if mode == "oss_instruct":
        answer = {"problem_description": example["problem_description"], **answer}
    return answer


def _answer_fields(plan: ExercisePlan, tests_from: str) -> str:
    if tests_from == "interpreter":
        return "inputs (3 to 5 example argument lists to call it with, as Python literals)"
    return f"tests (2 or 3 assert statements calling {plan.function_name})"


def build_messages(plan: ExercisePlan, tests_from: str = "model") -> list[dict]:
    """The chat messages for one plan (short: the bundled model has a small context)."""
    example = json.dumps(example_answer(plan.function_name, plan.mode, tests_from, plan.format_example))
    reader = f"Write it for {plan.persona}." if plan.persona else ""
    if plan.mode == "oss_instruct":
        user = "\n".join(
            [
                MAGICODER_PROMPT.format(code=plan.inspiration[:MAX_INSPIRATION_CHARS]),
                "",
                f"Write the [Solution] as one Python function named {plan.function_name}. {reader}".strip(),
                "Give JSON with: problem_description (the [Problem Description]), parameters (list of names), "
                f"docstring (what it returns), body (code without the def line), {_answer_fields(plan, tests_from)}.",
                f"Example of the format only: {example}",
            ]
        )
        return [{"role": "system", "content": MAGICODER_SYSTEM}, {"role": "user", "content": user}]
    difficulty = load_catalog().difficulty_instruction(plan.difficulty)
    what = "example inputs" if tests_from == "interpreter" else "assert tests"
    lines = [
        f"Write a Python function named {plan.function_name}.",
        f"Topic: {plan.topic} ({plan.subtopic}). Difficulty: {plan.difficulty}, {difficulty}.",
        *([reader] if reader else []),
        "Give JSON with: parameters (list of names), docstring (what it returns, about the topic), "
        f"body (code without the def line), {_answer_fields(plan, tests_from)}.",
        f"Example of the format only, write your own function about the topic: {example}",
    ]
    return [{"role": "system", "content": SYSTEM_PROMPT.format(what=what)}, {"role": "user", "content": "\n".join(lines)}]


_CODE_BLOCK = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL)


def assemble_function(name: str, draft: BaseModel) -> str:
    """`def name(params):` + docstring + indented body. A body that already is a whole
    `def` is taken as it is (the ast check then decides)."""
    body = textwrap.dedent(draft.body.replace("\t", "    ")).strip("\n")
    if body.lstrip().startswith("def "):
        return body + "\n"
    # Parameters go in verbatim; a bad one makes a syntax error the ast check reports.
    signature = ", ".join(p.strip() for p in draft.parameters if p.strip())
    docstring = draft.docstring.strip().replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    return f'def {name}({signature}):\n    """{docstring}"""\n{textwrap.indent(body or "pass", "    ")}\n'


def extract_code_block(text: str) -> str | None:
    """The first fenced code block, or the text itself when it starts with `def`."""
    match = _CODE_BLOCK.search(text or "")
    if match:
        return match.group(1)
    stripped = (text or "").strip()
    return stripped + "\n" if stripped.startswith("def ") else None


@dataclass(frozen=True)
class ParsedFunction:
    source: str
    exercise: str  # signature + docstring: what a student is given
    solution: str  # the body after the docstring


def validate_function(source: str, planned_name: str) -> ParsedFunction | str:
    """The parsed function, or the rejection reason: `syntax_error: ...`,
    `no_function`, `multiple_functions: n`, `wrong_name: got X`, `no_docstring`,
    `extra_top_level_code`, `empty_body`."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        return f"syntax_error: {exc.msg} (line {exc.lineno})"
    functions = [node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if not functions:
        return "no_function"
    if len(functions) > 1:
        return f"multiple_functions: {len(functions)}"
    function = functions[0]
    others = [node for node in tree.body if node is not function and not isinstance(node, (ast.Import, ast.ImportFrom))]
    if others:
        return f"extra_top_level_code: {type(others[0]).__name__}"
    if function.name != planned_name:
        return f"wrong_name: got {function.name}"
    if ast.get_docstring(function) is None:
        return "no_docstring"
    statements = function.body[1:]
    if not statements:
        return "empty_body"
    lines = source.splitlines()
    docstring_end = function.body[0].end_lineno
    return ParsedFunction(
        source=source if source.endswith("\n") else source + "\n",
        exercise="\n".join(lines[:docstring_end]) + "\n",
        solution="\n".join(lines[docstring_end : function.end_lineno]) + "\n",
    )


def clean_tests(tests: list[str], function_name: str) -> tuple[list[str], int]:
    """Keep tests that parse, contain an `assert` and call the function; (kept, dropped)."""
    kept = []
    for test in tests:
        test = textwrap.dedent(test or "").strip()
        try:
            tree = ast.parse(test)
        except SyntaxError:
            continue
        has_assert = any(isinstance(node, ast.Assert) for node in ast.walk(tree))
        calls = any(
            isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == function_name
            for node in ast.walk(tree)
        )
        if has_assert and calls and test not in kept:
            kept.append(test)
    return kept, len(tests) - len(kept)


@dataclass(frozen=True)
class Candidate:
    parsed: ParsedFunction
    tests: list[str]  # the model's asserts (tests from the model)
    n_tests_dropped: int
    inputs: list[str] = field(default_factory=list)  # the model's argument lists (tests from the interpreter)
    problem_description: str = ""  # OSS-Instruct's [Problem Description]


def lenient_draft(text: str | None) -> BaseModel | None:
    """A draft from JSON that strict parsing refused only for raw control characters
    inside strings (a literal newline in `body`: llama.cpp's grammar lets the bundled
    model write them); the schema is the one whose fields the object has."""
    start, end = (text or "").find("{"), (text or "").rfind("}")
    if not 0 <= start < end:
        return None
    try:
        data = json.loads(text[start : end + 1], strict=False)
    except (json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    for schema in DRAFT_SCHEMAS:
        if set(schema.model_fields) == set(data):
            try:
                return schema.model_validate(data)
            except ValueError:
                return None
    return None


def parse_answer(plan: ExercisePlan, result: StructuredResult) -> Candidate | str:
    """Turn one model answer into a candidate exercise, or a rejection reason."""
    if result.status != "ok" and result.parsed is None and not (result.raw_text or result.text):
        return f"llm_{result.status}: {result.error or ''}".strip()
    draft = result.parsed if result.parsed is not None else lenient_draft(result.raw_text or result.text)
    inputs: list[str] = []
    problem_description = ""
    if isinstance(draft, DRAFT_SCHEMAS):
        source = assemble_function(plan.function_name, draft)
        raw_tests = list(getattr(draft, "tests", []))
        inputs = [str(text) for text in getattr(draft, "inputs", [])]
        problem_description = getattr(draft, "problem_description", "").strip()
    else:
        source = extract_code_block(result.raw_text or result.text or "")
        if source is None:
            return f"unparseable_output: {result.status}" + (f": {result.error}" if result.error else "")
        raw_tests = [line.strip() for line in source.splitlines() if line.strip().startswith("assert ")]
        source = "\n".join(line for line in source.splitlines() if not line.strip().startswith("assert ") or line.startswith(" "))
    parsed = validate_function(source, plan.function_name)
    if isinstance(parsed, str):
        return parsed
    tests, dropped = clean_tests(raw_tests, plan.function_name)
    return Candidate(parsed, tests, dropped, inputs, problem_description)
