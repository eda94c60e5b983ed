"""Tests the interpreter writes (observed_calls.py, interpreter_tests.py): literal
arguments, outputs observed in the sandbox, crashes and hangs rejected with reasons,
and code_exercises in interpreter mode against the OpenAI test double."""

from __future__ import annotations

import json
import re
import zlib

import dagster as dg

from resources.compute import Compute
from synth_assets.synthesis.code_exercises import CodeExercisesConfig, code_exercises
from tests.openai_double import OpenAIDouble
from tests.test_exercises import llm_for, wants_problem_description

from synth_assets.common.sandbox import SandboxLimits
from synth_assets.synthesis.code_exercises import resolve_tests_from
from synth_assets.synthesis.interpreter_tests import usable_arguments, write_tests
from synth_assets.synthesis.observed_calls import (
    interpreter_arguments,
    observe_calls,
    parse_arguments,
)

LIMITS = SandboxLimits(timeout_s=1.0, cpu_s=2)
RANKED = 'def ranked(items, k):\n    """Top k."""\n    return sorted(items, reverse=True)[:k]\n'


def test_arguments_are_literals_only_and_rendered_canonically():
    assert parse_arguments("[3, 1, 2], 2") == ([3, 1, 2], 2)
    assert parse_arguments("'a b'") == ("a b",)
    assert parse_arguments("__import__('os').system('x')") == "not_a_literal"
    assert parse_arguments("a list of numbers") == "not_a_literal"
    assert parse_arguments("") == "empty_arguments"
    calls, dropped = usable_arguments(["[3,1,2],  2", "[3, 1, 2], 2", "x", "[1], 1"], max_calls=5)
    assert calls == ["[3, 1, 2], 2", "[1], 1"]
    assert dropped == ["[3, 1, 2], 2: duplicate_input", "x: not_a_literal"]


def test_observed_outputs_are_what_the_function_returns():
    source = RANKED + "\n"
    observations = observe_calls([(source, "ranked", ["[3, 1, 2], 2", "[], 1", "'abc', 2", "[1], 'x'"])], LIMITS, 2)[0]
    namespace: dict = {}
    exec(source, namespace)
    assert [o.output for o in observations[:3]] == [repr(namespace["ranked"]([3, 1, 2], 2)), "[]", "['c', 'b']"]
    assert observations[3].reason.startswith("raised: TypeError")
    hang = 'def spin(n):\n    """Never ends."""\n    while True:\n        n += 1\n'
    big = 'def big(n):\n    """Long."""\n    return "x" * n\n'
    assert observe_calls([(hang, "spin", ["1"])], LIMITS, 1)[0][0].reason == "timeout"
    assert [o.reason for o in observe_calls([(big, "big", ["1000", "3"])], LIMITS, 2)[0]] == [
        "output_too_long: 1002 chars", "ok"]


def test_write_tests_rejects_crashes_and_hangs_and_falls_back_to_interpreter_inputs():
    crash = 'def boom(items):\n    """Raise."""\n    raise ValueError("no")\n'
    hang = 'def spin(n):\n    """Never ends."""\n    while True:\n        n += 1\n'
    count = 'def count_up(items):\n    """Length."""\n    return len(items)\n'
    written = write_tests(
        [(RANKED, "ranked", ["[3, 1, 2], 2", "[5], 1"]), (crash, "boom", ["[1]"]), (hang, "spin", ["3", "4"]),
         (count, "count_up", ["a list", "several numbers"])],
        LIMITS, 2,
    )
    assert written[0].tests == ["assert ranked([3, 1, 2], 2) == [3, 2]", "assert ranked([5], 1) == [5]"]
    assert written[0].inputs_source == "model" and written[0].reject_reason is None and written[0].n_distinct_outputs == 2
    assert written[1].reject_reason == "solution_crashed: raised: ValueError: no"
    assert written[1].inputs_source == "interpreter"  # the interpreter's own inputs were tried too
    assert written[2].reject_reason == "solution_timeout: spin(3)"
    assert written[3].inputs_source == "interpreter" and written[3].reject_reason is None
    assert written[3].tests[0] == f"assert count_up({interpreter_arguments(['items'], 1)[0]}) == 3"
    assert written[3].dropped_inputs[:2] == ["a list: not_a_literal", "several numbers: not_a_literal"]


def test_the_interpreter_writes_the_tests_on_the_bundled_model_by_default():
    assert resolve_tests_from("auto", endpoint_is_local=True) == "interpreter"
    assert resolve_tests_from("auto", endpoint_is_local=False) == "model"
    assert resolve_tests_from("interpreter", endpoint_is_local=False) == "interpreter"


INTERPRETER_BEHAVIOURS = ["good", "good", "bad_inputs", "crash", "hang", "flaky", "too_long"]


def interpreter_behaviour(name: str) -> str:
    return INTERPRETER_BEHAVIOURS[zlib.crc32(name.encode()) % len(INTERPRETER_BEHAVIOURS)]


def interpreter_responder(body: dict) -> str:
    prompt = body["messages"][-1]["content"]
    name = re.search(r"Python function named (\w+)\.", prompt).group(1)
    assert "inputs" in json.dumps(body["response_format"]) and "tests" not in json.dumps(body["response_format"])
    behaviour = interpreter_behaviour(name)
    answer = {"parameters": ["items"], "docstring": "Largest first.", "body": "return sorted(items, reverse=True)",
              "inputs": ["[3, 1, 2]", "[]", "[5, 5, -1]"]}
    answer |= {
        "good": {},
        "bad_inputs": {"inputs": ["a list of numbers", "the empty list"]},
        "crash": {"body": "raise ValueError('no')"},
        "hang": {"body": "while True:\n    pass", "inputs": ["[1]"]},  # one call: each waits out the timeout
        "flaky": {"body": "import random\nreturn random.random()"},
        "too_long": {"body": "return 'x' * 1000"},
    }[behaviour]
    if wants_problem_description(body):
        answer = {"problem_description": "Sort a list from largest to smallest.", **answer}
    return json.dumps(answer)


def test_interpreter_mode_writes_true_asserts_and_rejects_crashes_and_hangs_with_reasons(warehouse):
    n = 21
    # A timeout long enough that a loaded 2-core machine never mistakes a slow start for a hang.
    config = CodeExercisesConfig(n_exercises=n, sandbox_timeout_s=3.0, tests_from="interpreter", max_samples=1)
    with OpenAIDouble(chat=interpreter_responder) as server:
        result = dg.materialize(
            [code_exercises], resources={"compute": Compute(), "warehouse": warehouse, "llm": llm_for(server)},
            run_config=dg.RunConfig({"code_exercises": config}),
        )
    assert result.success
    rows = {r["function_name"]: r for r in warehouse.query("SELECT * FROM code_exercises").to_dicts()}
    rejects = {r["function_name"]: r for r in warehouse.query("SELECT * FROM code_exercise_rejects").to_dicts()}
    assert len(rows) + len(rejects) == n
    expected_reject = {"crash": "solution_crashed: raised: ValueError: no", "hang": "solution_timeout",
                       "too_long": "no_usable_output: output_too_long: 1002 chars"}
    seen = set()
    for name in rows.keys() | rejects.keys():
        behaviour = interpreter_behaviour(name)
        seen.add(behaviour)
        if behaviour in expected_reject:
            assert rejects[name]["reason"].startswith(expected_reject[behaviour]), rejects[name]["reason"]
            continue
        row = rows[name]
        assert row["tests_from"] == "interpreter"
        if behaviour == "flaky":  # a fresh random number each run: the final run catches it
            assert not row["passed"] and row["sandbox_reason"].startswith("assertion_failed")
            continue
        assert row["passed"] and row["sandbox_reason"] == "passed"
        if behaviour == "good":
            assert row["inputs_source"] == "model" and row["dropped_inputs"] == []
            assert row["tests"] == [f"assert {name}([3, 1, 2]) == [3, 2, 1]", f"assert {name}([]) == []",
                                    f"assert {name}([5, 5, -1]) == [5, 5, -1]"]
            assert row["n_distinct_outputs"] == 3
        else:  # bad_inputs: the interpreter called it with inputs from the parameter name
            assert row["inputs_source"] == "interpreter" and len(row["dropped_inputs"]) == 2
            namespace: dict = {}
            exec(row["source"], namespace)
            for test in row["tests"]:
                exec(test, namespace)  # true of the solution outside the sandbox too
    assert seen >= {"good", "bad_inputs", "crash", "hang"}
    metadata = result.asset_materializations_for_node("code_exercises")[0].metadata
    assert metadata["tests_from"].value == "interpreter"
    assert metadata["passed"].value == sum(r["passed"] for r in rows.values())
