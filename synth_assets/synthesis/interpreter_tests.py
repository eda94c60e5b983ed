"""Tests the interpreter writes: the model proposes inputs, the sandbox runs the solution
on each, and every observed output becomes `assert name(args) == output`. The asserts
are then true of the solution by construction (checked once more in a final sandbox
run, which catches solutions whose output changes from run to run); no reviewer model
is needed to judge them.

For one candidate solution:
1. the model's inputs that are Python literals (observed_calls.parse_arguments) are
   called, at most `max_calls`, duplicates once; the others are listed with their reason;
2. a call that does not finish in the sandbox's time limit rejects the solution
   (`solution_timeout`): a function that may never terminate is no exercise;
3. when none of the model's inputs gives an output, the interpreter proposes inputs
   from the parameter names alone (`interpreter_arguments`) and tries those;
4. still no output: rejected as `solution_crashed` (every call raised, or the
   function could not even be defined) or `no_usable_output` (outputs too long to
   observe or not literals), with the first reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from synth_assets.common.sandbox import SandboxLimits
from synth_assets.synthesis.observed_calls import (
    Observation,
    expected_output_test,
    function_parameters,
    interpreter_arguments,
    observe_calls,
    parse_arguments,
    render_arguments,
)

# HumanEval has 7.7 tests per problem on average (Chen et al. 2021); phi-1's prompt asks
# for a few. Five observed calls keep a 2-core sandbox pass short.
DEFAULT_MAX_CALLS = 5


@dataclass
class WrittenTests:
    """What the interpreter made of one solution: tests, or a rejection reason."""

    tests: list[str] = field(default_factory=list)
    inputs_source: str = "model"  # "model" or "interpreter" (the model's inputs gave nothing)
    dropped_inputs: list[str] = field(default_factory=list)  # "<input>: <reason>"
    n_distinct_outputs: int = 0
    reject_reason: str | None = None


def usable_arguments(inputs: Sequence[str], max_calls: int) -> tuple[list[str], list[str]]:
    """(canonical argument lists to call, "<input>: <reason>" for the ones dropped)."""
    calls: list[str] = []
    dropped: list[str] = []
    for text in inputs:
        parsed = parse_arguments(text)
        if isinstance(parsed, str):
            dropped.append(f"{text[:60]}: {parsed}")
            continue
        rendered = render_arguments(parsed)
        if rendered in calls:
            dropped.append(f"{text[:60]}: duplicate_input")
        elif len(calls) >= max_calls:
            dropped.append(f"{text[:60]}: over_max_calls")
        else:
            calls.append(rendered)
    return calls, dropped


def _verdict(observations: list[Observation], function_name: str) -> tuple[list[str], list[str], str | None]:
    """(tests, dropped inputs, None) or ([], dropped, reject reason) for one round of calls."""
    dropped = [f"{o.arguments}: {o.reason}" for o in observations if not o.ok]
    timeouts = [o for o in observations if o.reason in ("timeout", "cpu_limit")]
    if timeouts:
        return [], dropped, f"solution_timeout: {function_name}({timeouts[0].arguments})"
    tests = [expected_output_test(function_name, o) for o in observations if o.ok]
    if tests:
        return tests, dropped, None
    if not observations:
        return [], dropped, "solution_crashed: no inputs to call"
    crashed = [o for o in observations if o.reason.startswith(("raised", "error", "syntax_error", "memory_error", "killed"))]
    first = (crashed or observations)[0]
    family = "solution_crashed" if crashed else "no_usable_output"
    return [], dropped, f"{family}: {first.reason}"


def write_tests(
    candidates: Sequence[tuple[str, str, Sequence[str]]], limits: SandboxLimits, workers: int,
    max_calls: int = DEFAULT_MAX_CALLS,
) -> list[WrittenTests]:
    """For each (source, function_name, model inputs): the interpreter's tests or why
    there are none. Two sandbox passes at most: the model's inputs, then the
    interpreter's for the solutions the first pass gave nothing for."""
    results = [WrittenTests() for _ in candidates]
    first_round: list[tuple[int, list[str]]] = []
    for position, (_, _, inputs) in enumerate(candidates):
        calls, dropped = usable_arguments(inputs, max_calls)
        results[position].dropped_inputs = dropped
        first_round.append((position, calls))
    retry: list[int] = []
    observed = observe_calls(
        [(candidates[p][0], candidates[p][1], calls) for p, calls in first_round if calls], limits, workers
    )
    observed_iter = iter(observed)
    for position, calls in first_round:
        if not calls:
            retry.append(position)
            continue
        observations = next(observed_iter)
        tests, dropped, reason = _verdict(observations, candidates[position][1])
        results[position].dropped_inputs += dropped
        if tests or (reason and reason.startswith("solution_timeout")) or _undefinable(observations):
            _record(results[position], observations, tests, reason)
        else:
            retry.append(position)
    second_round = []
    for position in retry:
        source, name, _ = candidates[position]
        parameters = function_parameters(source, name)
        calls = interpreter_arguments(parameters, max_calls) if parameters is not None else []
        second_round.append((position, calls))
    observed = observe_calls(
        [(candidates[p][0], candidates[p][1], calls) for p, calls in second_round if calls], limits, workers
    )
    observed_iter = iter(observed)
    for position, calls in second_round:
        observations = next(observed_iter) if calls else []
        tests, dropped, reason = _verdict(observations, candidates[position][1])
        results[position].inputs_source = "interpreter"
        results[position].dropped_inputs += dropped
        _record(results[position], observations, tests, reason)
    return results


def _undefinable(observations: list[Observation]) -> bool:
    """True when the function itself failed (not one call): other inputs cannot help."""
    return bool(observations) and all(" in solution" in o.reason or o.reason.startswith("syntax_error") for o in observations)


def _record(result: WrittenTests, observations: list[Observation], tests: list[str], reason: str | None) -> None:
    result.tests = tests
    result.reject_reason = reason
    result.n_distinct_outputs = len({o.output for o in observations if o.ok})
