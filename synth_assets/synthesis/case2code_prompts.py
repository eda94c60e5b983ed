"""Case2Code prompts: show m of the n observed input/output pairs of a function and ask
for the function. Case2Code (Shao et al. 2024, section 3.3) renders each sample with
one of several prompt templates so a model learns the task, not one wording; these
ten vary the wording, the pair format (call and result, doctest, assert, table,
JSON, prose) and whether the function's name is given.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

Pair = tuple[str, str]  # (canonical arguments, repr of the output)


@dataclass(frozen=True)
class Template:
    name: str
    header: str  # may use {name}
    pair: str  # uses {name}, {args}, {output}
    footer: str  # may use {name}
    joiner: str = "\n"


TEMPLATES: tuple[Template, ...] = (
    Template("call_result", "Here are some calls of the Python function `{name}` and what they return:", "{name}({args}) -> {output}",
             "Write the function `{name}`."),
    Template("doctest", "Complete the function so that these doctest examples pass:\n\ndef {name}(...):\n    \"\"\"",
             "    >>> {name}({args})\n    {output}", "    \"\"\"\n\nWrite the complete function."),
    Template("asserts", "Write a Python function that makes every assertion below true.", "assert {name}({args}) == {output}",
             "Give only the function definition."),
    Template("input_output", "A function `{name}` maps inputs to outputs as follows.", "Input: {args}\nOutput: {output}",
             "Infer the rule and implement `{name}` in Python.", "\n\n"),
    Template("table", "The table lists arguments and the result of `{name}`.\n\n| arguments | result |\n|---|---|",
             "| `{args}` | `{output}` |", "\nImplement `{name}` in Python so that it reproduces the table."),
    Template("json_cases", "Test cases for a function named {name} (JSON, one per line):",
             '{{"args": {args_json}, "expected": {output_json}}}', "Write a Python implementation of {name} that passes them."),
    Template("anonymous", "An unknown Python function f behaves like this:", "f({args}) returns {output}",
             "Figure out what f does and write it as `def f(...)`."),
    Template("prose", "I called my function {name} a few times.", "With {args} it gave back {output}.",
             "Can you reconstruct the code of {name}?", " "),
    Template("inductive", "Learn the program from the examples (inputs on the left, outputs on the right).",
             "{args}  =>  {output}", "Program (Python, named {name}):"),
    Template("reverse_engineer", "Reverse-engineer `{name}` from its observed behaviour.", "- `{name}({args})` == `{output}`",
             "Return a Python function with the same behaviour on these cases and similar ones."),
)


def render(template: Template, function_name: str, pairs: list[Pair]) -> str:
    """The prompt: header, one line per shown pair, footer."""
    name = "f" if template.name == "anonymous" else function_name
    lines = [
        template.pair.format(name=name, args=args, output=output, args_json=json.dumps(args), output_json=json.dumps(output))
        for args, output in pairs
    ]
    return "\n".join([template.header.format(name=name), template.joiner.join(lines), template.footer.format(name=name)])


def choose_prompt(function_id: str, function_name: str, pairs: list[Pair], seed: int, min_shown: int) -> tuple[str, str, int]:
    """(prompt, template name, m): a seeded template and m <= n pairs (at least
    `min_shown` when there are that many), shown in a seeded order."""
    rng = random.Random(f"{seed}:{function_id}")
    template = rng.choice(TEMPLATES)
    shown = rng.randint(min(min_shown, len(pairs)), len(pairs))
    chosen = rng.sample(pairs, shown)
    return render(template, function_name, chosen), template.name, shown
