"""The functional signal: exercises run against benchmark problems' official tests in
the sandbox (synth_assets/decontamination/signals/functional.py)."""

from __future__ import annotations

import json

import pytest

from synth_assets.common.sandbox import SandboxLimits, isolation_report
from synth_assets.decontamination.benchmarks import BenchmarkProblem, load_humaneval, read_benchmark_jsonl
from synth_assets.decontamination.signals.functional import (
    FunctionalConfig,
    FunctionalIndex,
    Signature,
    exercise_signature,
    last_started_pair,
    parse_results,
    problem_tests,
)
from tests.contamination_variants import make_variant, stdlib_exercises

HUMANEVAL = load_humaneval()

pytestmark = pytest.mark.skipif(
    not isolation_report(SandboxLimits())["isolated"], reason="no isolating sandbox on this machine"
)


@pytest.fixture(scope="module")
def index() -> FunctionalIndex:
    built = FunctionalIndex(HUMANEVAL)
    built.calibrate()
    return built


def entry_name(source: str, name: str | None = None) -> str:
    found = exercise_signature(source, name)
    assert found is not None
    return found[0]


def test_every_reference_passes_its_own_tests_and_none_passes_the_next_problems(index):
    assert index.unusable == {} and index.n_with_tests == 164
    sources = [p.source for p in HUMANEVAL]
    names = [p.entry_point for p in HUMANEVAL]
    own = index.run(sources, names, [[j] for j in range(164)])
    assert all(m.passed_all and m.tests_passed == m.tests_total > 0 for m in own), [m for m in own if not m.passed_all][:3]
    assert [m.task_id for m in own] == [p.task_id for p in HUMANEVAL]
    shifted = index.run(sources, names, [[(j + 1) % 164] for j in range(164)])
    assert not any(m.passed_all for m in shifted)
    # per-pair budgets come from the reference's own time: the slow HumanEval/75 gets more
    assert index.budgets[75] > index.budgets[0] >= FunctionalConfig().pair_timeout_min_s


def test_paraphrased_copies_without_statement_are_functional_hits_and_library_code_is_not(index):
    problems = HUMANEVAL[::16]
    planted = [make_variant(p, "no_statement+restructured+renamed") for p in problems]
    clean = stdlib_exercises(40, seed=5, restructure=True)
    sources = [e.solution for e in planted + clean]
    names = [entry_name(e.solution, e.function_name) for e in planted + clean]
    assert all('"""' not in e.solution for e in planted)  # no statement left
    everything = list(range(164))
    matches = index.run(sources, names, [everything] * len(sources))
    for exercise, match in zip(planted, matches[: len(planted)]):
        assert match.task_id == exercise.source_task_id and match.passed_all, (exercise.source_task_id, match)
        assert match.candidates_run > 0 and match.tests_passed == match.tests_total
    assert not any(m.passed_all for m in matches[len(planted):])


def test_a_pair_that_loops_swallows_its_timer_or_poisons_builtins_spoils_no_other_pair(index):
    verbatim = HUMANEVAL[0].source
    swallow_forever = (
        "def f(numbers, threshold):\n    while True:\n        try:\n            while True:\n                pass\n"
        "        except BaseException:\n            pass\n"
    )
    ignore_timer = "import signal\ndef f(numbers, threshold):\n    signal.signal(signal.SIGALRM, signal.SIG_IGN)\n    while True:\n        pass\n"
    poison = "import builtins\ndef f(numbers, threshold):\n    builtins.abs = lambda x: 0\n    return True\n"
    loop = "def f(numbers, threshold):\n    while True:\n        pass\n"
    sources = [swallow_forever, verbatim, ignore_timer, verbatim, poison, verbatim, loop, verbatim]
    names = ["f", "has_close_elements"] * 4
    timings: dict[str, float] = {}
    matches = index.run(sources, names, [[0]] * len(sources), timings)
    assert [m.passed_all for m in matches] == [False, True] * 4
    assert matches[0].outcome.startswith("sandbox killed")  # swallowed its timer: its job was re-run without it
    assert timings["functional_killed_pairs"] == 1
    assert matches[2].outcome == "failed"  # could not switch its timer off
    assert matches[4].outcome == "failed" and 0 < matches[4].tests_passed < matches[4].tests_total
    assert matches[6].outcome == "timeout"
    assert timings["functional"] < 30


def test_check_that_compares_with_the_reference_keeps_the_reference(index):
    """HumanEval/33's check() calls `sort_third` itself: binding that name to the
    candidate would let any function pass."""
    problem = HUMANEVAL[33]
    assert "sort_third(" in problem.test
    identity = "def sort_third(l):\n    return list(l)\n"
    match = index.run([identity], ["sort_third"], [[33]])[0]
    assert not match.passed_all and match.tests_passed < match.tests_total


def test_mbpp_layout_benchmark_gets_the_functional_signal(tmp_path):
    path = tmp_path / "mbpp_sample.jsonl"
    rows = [
        {"task_id": 2, "text": "Write a function to find the shared elements of two lists.",
         "code": "def similar_elements(a, b):\n    return tuple(set(a) & set(b))\n",
         "test_list": ["assert set(similar_elements((3, 4, 5, 6), (5, 7, 4, 10))) == {4, 5}",
                       "assert set(similar_elements((1, 2, 3, 4), (5, 4, 3, 7))) == {3, 4}"],
         "test_setup_code": ""},
        {"task_id": 3, "text": "Write a python function to identify non-prime numbers.",
         "code": "def is_not_prime(n):\n    return n < 2 or any(n % k == 0 for k in range(2, n))\n",
         "test_list": ["assert is_not_prime(2) == False", "assert is_not_prime(10) == True", "assert is_not_prime(35) == True"]},
    ]
    path.write_text("\n".join(json.dumps(row) for row in rows))
    problems = read_benchmark_jsonl(path)
    assert [p.task_id for p in problems] == ["mbpp_sample/2", "mbpp_sample/3"]
    assert problems[1].entry_point == "is_not_prime" and problems[1].has_tests
    tests = problem_tests(problems[1])
    assert tests is not None and tests.n_tests == 3 and tests.bind_entry_point
    index = FunctionalIndex(problems)
    copy = "def composite_check(value):\n    if value < 2:\n        return True\n    for d in range(2, value):\n        if value % d == 0:\n            return True\n    return False\n"
    wrong = "def composite_check(value):\n    return value % 2 == 0\n"
    matches = index.run([copy, wrong], ["composite_check"] * 2, [[0, 1], [0, 1]])
    assert matches[0].task_id == "mbpp_sample/3" and matches[0].passed_all and matches[0].tests_passed == 3
    assert not matches[1].passed_all


def test_candidates_add_same_signature_problems_and_respect_arity(index):
    signature = exercise_signature("from typing import List\ndef g(values: List[float], limit: float) -> bool:\n    return True\n")[1]
    assert signature == Signature(required=2, positional=2, annotations=("list[float]", "float"), returns="bool")
    chosen = index.candidates([], signature)
    assert 0 in chosen  # HumanEval/0 has_close_elements(numbers: List[float], threshold: float) -> bool
    assert all(index.tests[j].arity == 2 for j in chosen)
    one_argument = exercise_signature("def g(x):\n    return x\n")[1]
    assert index.candidates([0, 2], one_argument) == [2]  # HumanEval/0 takes two arguments
    assert index.candidates([0], None) == []


def test_results_channel_and_progress_markers_parse():
    assert parse_results("error: FUNCTIONAL_RESULTS 3.0.1,n,t in solution: ", 3) == ["3.0.1", "n", "t"]
    assert parse_results("error: FUNCTIONAL_RESULTS 3.0.1 in solution: ", 2) is None  # wrong count
    assert parse_results("timeout", 1) is None
    assert last_started_pair("noise\nFUNCTIONAL_PAIR 4\nFUNCTIONAL_PAIR 7\n", 10) == 7
    assert last_started_pair("FUNCTIONAL_PAIR 12\n", 10) is None and last_started_pair("", 3) is None


def test_problems_without_tests_get_no_functional_signal():
    bare = BenchmarkProblem("X/1", "def f(x):\n", "    return x\n", "X")
    assert not bare.has_tests and problem_tests(bare) is None
    assert FunctionalIndex([bare]).n_with_tests == 0
