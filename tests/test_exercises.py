"""code_exercises: ast validation with reasons, assembly from the schema answer, and a
real materialization against the OpenAI test double with good and bad answers."""

from __future__ import annotations

import json
import re
import zlib

import dagster as dg
import polars as pl

from resources.compute import Compute
from resources.llm import LLMResource, StructuredResult
from synth_assets.synthesis.code_exercises import CodeExercisesConfig, code_exercises
from synth_assets.synthesis.exercise_drafts import (
    ExerciseDraft,
    assemble_function,
    build_messages,
    clean_tests,
    example_answer,
    parse_answer,
    validate_function,
)
from synth_assets.synthesis.prompt_plans import load_catalog, plan_exercises
from tests.openai_double import OpenAIDouble, TEST_KEY_REF

GOOD = 'def double_it(n):\n    """Return n doubled."""\n    return n * 2\n'


def test_validate_accepts_one_documented_function_and_splits_exercise_from_solution():
    parsed = validate_function(GOOD, "double_it")
    assert not isinstance(parsed, str)
    assert parsed.exercise == 'def double_it(n):\n    """Return n doubled."""\n'
    assert parsed.solution == "    return n * 2\n"


def test_validate_rejects_with_reasons():
    assert validate_function(GOOD, "triple_it") == "wrong_name: got double_it"
    assert validate_function(GOOD + "\n" + GOOD.replace("double_it", "other"), "double_it") == "multiple_functions: 2"
    assert validate_function("def double_it(n):\n    return n * 2\n", "double_it") == "no_docstring"
    assert validate_function("def double_it(n:\n    return n\n", "double_it").startswith("syntax_error: ")
    assert validate_function("x = 1\n", "double_it") == "no_function"
    assert validate_function(GOOD + "print(double_it(2))\n", "double_it") == "extra_top_level_code: Expr"
    assert validate_function('def double_it(n):\n    """Only a docstring."""\n', "double_it") == "empty_body"
    # Imports above the function are allowed (solutions may use the standard library).
    assert not isinstance(validate_function("import math\n" + GOOD, "double_it"), str)


def test_assemble_uses_the_planned_name_and_escapes_the_docstring():
    draft = ExerciseDraft(parameters=["values", " k "], docstring='Say """hi"""', body="    return values[:k]", tests=[])
    source = assemble_function("take_first", draft)
    assert source.startswith("def take_first(values, k):\n")
    parsed = validate_function(source, "take_first")
    assert not isinstance(parsed, str)
    namespace: dict = {}
    exec(source, namespace)
    assert namespace["take_first"]([1, 2, 3], 2) == [1, 2]
    assert namespace["take_first"].__doc__ == 'Say """hi"""'
    # A bad parameter list surfaces as a syntax error, not a crash.
    bad = assemble_function("take_first", ExerciseDraft(parameters=["1x"], docstring="d", body="return 1", tests=[]))
    assert validate_function(bad, "take_first").startswith("syntax_error")


def test_clean_tests_keeps_asserts_that_call_the_function():
    kept, dropped = clean_tests(
        ["assert f(1) == 2", "assert True", "print(f(1))", "assert f(1 ==", "assert f(1) == 2", "  assert f(0) == 0"], "f"
    )
    assert kept == ["assert f(1) == 2", "assert f(0) == 0"]
    assert dropped == 4


def test_parse_answer_falls_back_to_a_code_block_in_the_raw_text():
    plan = plan_exercises(load_catalog(), 1, seed=0)[0]
    name = plan.function_name
    raw = f'Sure!\n```python\ndef {name}(x):\n    """Echo."""\n    return x\n\nassert {name}(3) == 3\n```'
    result = StructuredResult(text=raw, cache_key="k", status="error", error="malformed", raw_text=raw)
    candidate = parse_answer(plan, result)
    assert not isinstance(candidate, str)
    assert candidate.tests == [f"assert {name}(3) == 3"]
    assert "assert" not in candidate.parsed.source
    failed = StructuredResult(text=None, cache_key="k", status="error", error="HTTP 400", raw_text=None)
    assert parse_answer(plan, failed) == "llm_error: HTTP 400"
    prose = StructuredResult(text="no code here", cache_key="k", status="error", error="malformed", raw_text="no code here")
    assert parse_answer(plan, prose).startswith("unparseable_output")


def test_every_shipped_format_example_computes_the_outputs_it_shows():
    """The examples are what a small model copies: each must be a correct function whose
    calls give different results, or copies would be wrong or constant."""
    examples = load_catalog().exercise_examples
    assert len(examples) >= 8 and len({e["name"] for e in examples}) == len(examples)
    for example in examples:
        answer = example_answer(example["name"], "oss_instruct", "model", example["name"])
        source = assemble_function(example["name"], ExerciseDraft(**{k: answer[k] for k in ExerciseDraft.model_fields}))
        namespace: dict = {}
        exec(source, namespace)  # shipped, reviewed code
        outputs = [namespace[example["name"]](*eval(f"({arguments},)")) for arguments, _ in example["calls"]]
        assert outputs == [eval(expected) for _, expected in example["calls"]], example["name"]
        assert len({repr(o) for o in outputs}) == len(outputs), f"{example['name']} shows a constant output"
        assert answer["problem_description"] and len(answer["tests"]) == 2


def test_each_plan_shows_its_own_example_and_persona():
    plans = plan_exercises(load_catalog(), 12, seed=1)
    prompts = [build_messages(plan, "interpreter")[1]["content"] for plan in plans]
    for plan, prompt in zip(plans, prompts):
        example = load_catalog().exercise_example(plan.format_example)
        assert json.dumps(example["docstring"]) in prompt and f"Write it for {plan.persona}." in prompt
        assert json.dumps([arguments for arguments, _ in example["calls"]]) in prompt
    assert len({plan.format_example for plan in plans}) >= 5


# --------------------------------------------------------------------------- materialize

BEHAVIOURS = ["good", "failing_test", "wrong_name", "syntax_error", "two_functions", "infinite_loop", "no_docstring"]


def behaviour_of(name: str) -> str:
    return BEHAVIOURS[zlib.crc32(name.encode()) % len(BEHAVIOURS)]


def answer_for(name: str) -> str:
    good = {"parameters": ["n"], "docstring": "Return n doubled.", "body": "return n * 2",
            "tests": [f"assert {name}(2) == 4", f"assert {name}(0) == 0", "assert True"]}
    behaviour = behaviour_of(name)
    if behaviour == "good":
        return json.dumps(good)
    if behaviour == "failing_test":
        return json.dumps(good | {"tests": [f"assert {name}(2) == 5"]})
    if behaviour == "wrong_name":
        return json.dumps(good | {"body": 'def other_name(n):\n    """Nope."""\n    return n'})
    if behaviour == "syntax_error":
        return json.dumps(good | {"body": "return (n +"})
    if behaviour == "infinite_loop":
        return json.dumps(good | {"body": "while True:\n    pass"})
    if behaviour == "two_functions":
        return 'Here:\n```python\ndef a():\n    """A."""\n    return 1\n\ndef b():\n    """B."""\n    return 2\n```'
    return f"```python\ndef {name}(n):\n    return n\n```"  # no_docstring


EXPECTED_REJECT = {"wrong_name": "wrong_name", "syntax_error": "syntax_error", "two_functions": "multiple_functions",
                   "no_docstring": "no_docstring"}


def wants_problem_description(body: dict) -> bool:
    """OSS-Instruct plans answer Magicoder's [Problem Description] first."""
    return "problem_description" in json.dumps(body.get("response_format") or {})


def exercise_responder(body: dict) -> str:
    prompt = body["messages"][-1]["content"]
    name = re.search(r"Python function named (\w+)\.", prompt).group(1)
    answer = answer_for(name)
    if wants_problem_description(body) and answer.startswith("{"):
        answer = json.dumps({"problem_description": f"Double a number ({name}).", **json.loads(answer)})
    return answer


def llm_for(server: OpenAIDouble) -> LLMResource:
    return LLMResource(base_url=server.base_url, api_key=TEST_KEY_REF, model="gpt-4o-mini",
                       embedding_model="text-embedding-3-small", max_retries=0)


def test_code_exercises_materializes_rows_rejects_and_sandbox_verdicts(warehouse):
    corpus = pl.DataFrame({"doc_id": ["c1"], "content": ["def area(w, h):\n    return w * h\n" * 3]})
    warehouse.write_table("raw_stack_plus", corpus)
    n = 21
    config = CodeExercisesConfig(n_exercises=n, sandbox_timeout_s=3.0, oss_instruct_fraction=0.5, max_samples=1)  # 3 s: a good solution stays well inside it on a starved machine
    with OpenAIDouble(chat=exercise_responder) as server:
        result = dg.materialize(
            [code_exercises],
            resources={"compute": Compute(), "warehouse": warehouse, "llm": llm_for(server)},
            run_config=dg.RunConfig({"code_exercises": config}),
        )
        prompts = [b["messages"][-1]["content"] for b in server.chat_requests]
    assert result.success
    plans = plan_exercises(load_catalog(), n, 0, [("c1", "x")], 0.5)  # names do not depend on snippets
    expected = {p.function_name: behaviour_of(p.function_name) for p in plans}
    assert len(set(expected.values())) >= 5  # the responder exercised most behaviours

    rows = warehouse.query("SELECT * FROM code_exercises").to_dicts()
    rejects = warehouse.query("SELECT * FROM code_exercise_rejects").to_dicts()
    assert len(rows) + len(rejects) == n
    assert {r["function_name"] for r in rows} == {k for k, v in expected.items() if v not in EXPECTED_REJECT}
    for reject in rejects:
        assert reject["reason"].split(":")[0] == EXPECTED_REJECT[expected[reject["function_name"]]]
        assert reject["raw_text"] and reject["exercise_id"] and reject["topic"]
    for row in rows:
        behaviour = expected[row["function_name"]]
        assert row["source"].startswith(f"def {row['function_name']}(n):")
        assert row["exercise"].endswith('"""Return n doubled."""\n') and row["solution"]
        assert row["model"] == "gpt-4o-mini" and row["prompt_version"] and row["cache_key"]
        if behaviour == "good":
            assert row["passed"] and row["sandbox_reason"] == "passed"
            assert row["n_tests"] == 2 and row["n_tests_dropped"] == 1  # "assert True" does not call it
        elif behaviour == "failing_test":
            assert not row["passed"] and row["sandbox_reason"] == "assertion_failed: test 0"
        else:
            assert behaviour == "infinite_loop"
            assert not row["passed"] and row["sandbox_reason"] == "timeout"
    # OSS-Instruct plans carried the corpus snippet into the prompt.
    oss = [r for r in rows + rejects if r["mode"] == "oss_instruct"]
    assert oss and all(r["inspiration_doc_id"] == "c1" and r["inspiration"] in corpus["content"][0] for r in oss)
    assert len({p for p in prompts if "Code snippet for inspiration:" in p and "[Problem Description]" in p}) == len(oss)
    assert all(r["problem_description"].startswith("Double a number") for r in rows if r["mode"] == "oss_instruct")
    assert all(r["tests_from"] == "model" for r in rows)  # a remote endpoint: the model writes the tests
    # without a personas table the plans draw the shipped personas, stored on every row and reject
    assert all(r["persona"] in load_catalog().personas and r["persona_source"] == "catalog" for r in rows + rejects)
    assert all(r["format_example"] for r in rows + rejects)

    metadata = result.asset_materializations_for_node("code_exercises")[0].metadata
    passed = sum(r["passed"] for r in rows)
    assert metadata["passed"].value == passed
    assert metadata["pass_rate"].value == round(passed / len(rows), 4)
    assert metadata["distinct_function_names"].value == len(rows)
    assert metadata["llm/calls"].value >= n
    assert "wrong_name" in metadata["rejection_reasons"].value or "wrong_name" not in expected.values()
    assert 0 < metadata["diversity/distinct_1"].value <= 1
    assert "sk-test-secret" not in json.dumps({k: str(v.value) for k, v in metadata.items()})


def test_code_exercises_runs_without_a_corpus_and_records_llm_failures(warehouse):
    with OpenAIDouble(chat=exercise_responder) as server:
        server.fail_next(status=400, count=1)
        result = dg.materialize(
            [code_exercises],
            resources={"compute": Compute(), "warehouse": warehouse, "llm": llm_for(server)},
            run_config=dg.RunConfig({"code_exercises": CodeExercisesConfig(n_exercises=4, sandbox_timeout_s=1.0, max_samples=1)}),
        )
    assert result.success
    rows = warehouse.query("SELECT mode FROM code_exercises").to_dicts()
    rejects = warehouse.query("SELECT reason FROM code_exercise_rejects").to_dicts()
    assert len(rows) + len(rejects) == 4
    assert {r["mode"] for r in rows} <= {"topic"}
    assert sum(r["reason"].startswith("llm_error") for r in rejects) == 1


def test_a_rejected_answer_is_asked_again_as_a_new_sample_until_one_runs(warehouse):
    """Sample 0 of every plan is a syntax error, sample 1 runs: every plan ends with one
    row from its second answer, and the first answer is a reject with its reason."""

    def responder(body: dict) -> str:
        first_sample = body["seed"] == LLMResource().seed  # the resource's base seed + sample_index 0
        answer = {"parameters": ["items"], "docstring": "Largest first.", "body": "return (items +" if first_sample
                  else "return sorted(items, reverse=True)", "inputs": ["[3, 1, 2]", "[]"]}
        if wants_problem_description(body):
            answer = {"problem_description": "Sort descending.", **answer}
        return json.dumps(answer)

    config = CodeExercisesConfig(n_exercises=5, sandbox_timeout_s=1.0, tests_from="interpreter", max_samples=3)
    with OpenAIDouble(chat=responder) as server:
        result = dg.materialize([code_exercises], resources={"compute": Compute(), "warehouse": warehouse, "llm": llm_for(server)},
                                run_config=dg.RunConfig({"code_exercises": config}))
        assert len(server.chat_requests) == 10  # two answers per plan, no third
    assert result.success
    rows = warehouse.query("SELECT * FROM code_exercises").to_dicts()
    rejects = warehouse.query("SELECT * FROM code_exercise_rejects").to_dicts()
    assert len(rows) == 5 and all(r["passed"] and r["sample_index"] == 1 for r in rows)
    assert len(rejects) == 5 and all(r["sample_index"] == 0 and r["reason"].startswith("syntax_error") for r in rejects)
    metadata = result.asset_materializations_for_node("code_exercises")[0].metadata
    assert metadata["plans_without_exercise"].value == 0 and metadata["passed_of_planned"].value == 1.0


def test_json_with_raw_newlines_in_strings_is_still_read():
    plan = plan_exercises(load_catalog(), 1, seed=0)[0]
    raw = '{"parameters": ["n"], "docstring": "Double.", "body": "x = n * 2\nreturn x", "inputs": ["1"]}'.replace("\\n", "\n")
    result = StructuredResult(text=raw, cache_key="k", status="error", error="Invalid control character", raw_text=raw)
    candidate = parse_answer(plan, result)
    assert not isinstance(candidate, str)
    assert candidate.inputs == ["1"] and "    x = n * 2\n    return x\n" in candidate.parsed.source
