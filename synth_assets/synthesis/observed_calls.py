"""What the interpreter observes when it calls a generated function: the output of each
call, computed in the sandbox, so tests and input/output pairs built from it are true of
the function by construction (the "tests the interpreter writes" of `code_exercises` and
the observed pairs of `case2code`).

Arguments are Python literals only (`ast.literal_eval`), rendered canonically, so a
call is `name(<repr of each argument>)` and nothing but the function under test runs.
Each call is one sandbox job (~30 ms here): a hang or crash on one input costs only
that input. The output travels back in the sandbox verdict: the job's test raises
`ObservedCall("value <repr>")`, which the harness reports as
`error: ObservedCall in test 0: <message>`, at most 200 characters of it. So an output
whose repr is longer than `MAX_OBSERVABLE_CHARS` comes back as `output_too_long: <n>`
rather than cut short, and only outputs whose repr is itself a literal
(`ast.literal_eval` gives an equal value back) are usable in an `assert`.

Every observation has a reason: `ok`, `timeout`, `raised: <Type>: <message>`,
`output_too_long: <n> chars`, `output_not_literal`, or the sandbox's own verdict (e.g.
`error: NameError in solution: ...` when the function cannot even be defined).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from dataclasses import dataclass

from synth_assets.common.sandbox import SandboxJob, SandboxLimits, SandboxResult, run_many

# The harness keeps 200 characters of an exception message; "value " takes 6 of them.
MAX_OBSERVABLE_CHARS = 190
MAX_ARGUMENT_CHARS = 200
_OBSERVED = re.compile(r"^error: ObservedCall in test 0: (value|raised|too_long) ?(.*)$", re.DOTALL)


def parse_arguments(text: str) -> tuple | str:
    """The argument tuple a model wrote (`"[1, 2], 3"` -> `([1, 2], 3)`), or why not:
    `not_a_literal`, `empty_arguments`, `arguments_too_long`."""
    text = (text or "").strip()
    if not text:
        return "empty_arguments"
    if len(text) > MAX_ARGUMENT_CHARS:
        return "arguments_too_long"
    try:
        value = ast.literal_eval(f"({text},)")
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return "not_a_literal"
    return value


def render_arguments(arguments: tuple) -> str:
    """Canonical call arguments: the repr of each value, comma-separated."""
    return ", ".join(repr(value) for value in arguments)


def observation_test(function_name: str, arguments: str) -> str:
    """The sandbox test that calls the function once and reports what happened."""
    return (
        "class ObservedCall(Exception):\n    pass\n"
        "try:\n"
        f"    __observed = repr({function_name}({arguments}))\n"
        "except Exception as __error:\n"
        "    raise ObservedCall('raised ' + type(__error).__name__ + ': ' + str(__error)[:80])\n"
        f"if len(__observed) > {MAX_OBSERVABLE_CHARS}:\n"
        "    raise ObservedCall('too_long %d' % len(__observed))\n"
        "raise ObservedCall('value ' + __observed)\n"
    )


@dataclass(frozen=True)
class Observation:
    arguments: str  # canonical, as in the call
    output: str | None  # repr of the return value; None unless reason == "ok"
    reason: str

    @property
    def ok(self) -> bool:
        return self.reason == "ok"


def is_literal_repr(text: str) -> bool:
    """True when `text` evaluates as a literal to a value whose repr is `text` again
    (so `assert f(x) == <text>` compares with exactly what was observed)."""
    try:
        return repr(ast.literal_eval(text)) == text
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False


def read_observation(arguments: str, verdict: SandboxResult) -> Observation:
    """Turn one sandbox verdict into an observation with its reason."""
    match = _OBSERVED.match(verdict.reason)
    if match is None:  # no ObservedCall: the sandbox's own verdict (timeout, crash while defining, ...)
        return Observation(arguments, None, verdict.reason)
    kind, payload = match.groups()
    if kind == "raised":
        return Observation(arguments, None, f"raised: {payload}")
    if kind == "too_long":
        return Observation(arguments, None, f"output_too_long: {payload} chars")
    if not is_literal_repr(payload):
        return Observation(arguments, None, "output_not_literal")
    return Observation(arguments, payload, "ok")


def observe_calls(
    calls: Sequence[tuple[str, str, Sequence[str]]], limits: SandboxLimits, workers: int
) -> list[list[Observation]]:
    """For each (source, function_name, [canonical arguments, ...]): one observation per
    call, in order. All calls of all functions share one pool of sandboxes."""
    jobs = [
        SandboxJob(source, [observation_test(name, arguments)])
        for source, name, argument_lists in calls
        for arguments in argument_lists
    ]
    verdicts = iter(run_many(jobs, limits, max_workers=workers))
    return [
        [read_observation(arguments, next(verdicts)) for arguments in argument_lists]
        for _, _, argument_lists in calls
    ]


def expected_output_test(function_name: str, observation: Observation) -> str:
    """`assert name(args) == <observed output>` for an ok observation."""
    if observation.output == "None":
        return f"assert {function_name}({observation.arguments}) is None"
    return f"assert {function_name}({observation.arguments}) == {observation.output}"


# Values the interpreter tries when the model's inputs are unusable, by what a
# parameter's name suggests (and in this order for names that suggest nothing).
_LISTS = ([3, 1, 2], [5, -2, 8, 0], [], [1, 1, 2, 3, 5])
_STRINGS = ("hello world", "abc", "", "Racecar")
_INTS = (5, 0, 12, -3)
_FLOATS = (2.5, 0.0, -1.25, 10.0)
_LIST_HINTS = re.compile(r"(s|list|items|arr|array|seq|values|data|matrix|grid|nums|numbers)$")
_STRING_HINTS = re.compile(r"^(s|text|string|word|name|line|sentence|char|key|pattern|prefix|suffix|message|msg)(_|$)")
_INT_HINTS = re.compile(r"^(n|k|i|j|m|x|y|count|num|number|size|length|index|start|end|step|limit|width|height|base|digits?)$")
_FLOAT_HINTS = re.compile(r"(rate|ratio|price|amount|weight|temperature|score|factor|percent)")


def candidate_values(parameter: str) -> tuple:
    name = parameter.lower()
    if _STRING_HINTS.search(name):
        return _STRINGS
    if _INT_HINTS.search(name):
        return _INTS
    if _FLOAT_HINTS.search(name):
        return _FLOATS
    if _LIST_HINTS.search(name):
        return _LISTS
    return _INTS + _LISTS[:2] + _STRINGS[:2]


def interpreter_arguments(parameters: Sequence[str], n_calls: int) -> list[str]:
    """Argument lists the interpreter proposes from the parameter names alone (used
    when none of the model's inputs runs): the k-th call takes the k-th candidate of
    every parameter, so the calls vary together."""
    if not parameters:
        return ["" for _ in range(min(n_calls, 1))]
    pools = [candidate_values(parameter) for parameter in parameters]
    longest = max(len(pool) for pool in pools)
    return [render_arguments(tuple(pool[k % len(pool)] for pool in pools)) for k in range(min(n_calls, longest))]


def function_parameters(source: str, function_name: str) -> list[str] | None:
    """The positional parameter names of `function_name` in `source` (None if absent)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == function_name:
            args = node.args
            return [a.arg for a in [*args.posonlyargs, *args.args]][: len(args.posonlyargs) + len(args.args) - len(args.defaults)]
    return None
