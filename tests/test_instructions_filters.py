"""ROUGE-L, Self-Instruct's filters, the seed pool and the code verdicts: plain functions."""

from __future__ import annotations

import pytest

from synth_assets.common.sandbox import SandboxLimits
from synth_assets.instructions.execution import code_verdicts, extract_python, split_asserts
from synth_assets.instructions.filters import InstructionFilter, clean_candidate, heuristic_rejection, instance_rejection, screen_instruction
from synth_assets.instructions.rouge import RougePool, lcs_length, rouge_l, rouge_tokens
from synth_assets.instructions.seed_pool import load_seed_tasks


def test_rouge_l_matches_the_lcs_f_measure():
    assert rouge_tokens("Write a Python-function, NOW!") == ("write", "a", "python", "function", "now")
    assert lcs_length("a b c d e".split(), "a x c y e".split()) == 3
    # rouge_score: LCS 3 of 5 and 3 of 6 tokens -> P 0.6, R 0.5, F 2*0.3/1.1
    assert rouge_l("a b c d e", "a x c y e z") == pytest.approx(2 * 0.6 * 0.5 / 1.1)
    assert rouge_l("sort the list", "sort the list") == 1.0
    assert rouge_l("", "anything") == 0.0 and rouge_l("alpha beta", "gamma delta") == 0.0


def test_rouge_pool_finds_the_nearest_member():
    pool = RougePool()
    pool.add("a", "Write a function that reverses a string")
    pool.add("b", "Compute the factorial of n recursively")
    score, nearest = pool.most_similar("Write a function that reverses a list")
    assert nearest == "a" and score == pytest.approx(6 / 7)
    assert pool.most_similar("zebra quokka") == (0.0, None)


def test_heuristic_filters_say_why():
    rules = InstructionFilter()
    assert heuristic_rejection("Sort a list.", rules) == "too_short: 3 words (< 4)"
    assert heuristic_rejection(" ".join(["word"] * 151), rules) == "too_long: 151 words (> 150)"
    assert heuristic_rejection("Draw a picture of a binary tree", rules) == "blacklisted: picture"
    assert heuristic_rejection("- Write a function that adds numbers", rules).startswith("starts_with_punctuation")
    assert heuristic_rejection("Écrire une fonction qui additionne deux nombres", rules) == "starts_with_non_ascii"
    # programming words Self-Instruct blacklisted are allowed here
    assert heuristic_rejection("Find the shortest path in a weighted graph", rules) is None
    assert heuristic_rejection("Read a file and count its lines", rules) is None
    assert instance_rejection("x = 1", "") == "empty_output" and instance_rejection("abc", "abc") == "output_equals_input"
    assert instance_rejection("", "Yes") is None
    assert clean_candidate("Task 9:  Write a\n function") == "Write a function" and clean_candidate("3. Fix it") == "Fix it"


def test_screening_grows_the_pool_and_rejects_near_duplicates_of_new_members():
    pool = RougePool()
    pool.add("seed", "Reverse the order of the words in a sentence")
    rules = InstructionFilter()
    first = screen_instruction("Count the vowels that appear in a given word", "c1", pool, rules)
    assert first.reason is None and len(pool) == 2
    again = screen_instruction("Count the vowels which appear in the given word", "c2", pool, rules)
    assert again.reason.startswith("rouge_l: ") and again.most_similar_id == "c1" and again.rouge_l >= 0.7
    assert len(pool) == 2


def test_seed_pool_has_both_task_types_and_its_asserts_pass():
    seeds = load_seed_tasks()
    assert 30 <= len(seeds) <= 60 and len({s.task_id for s in seeds}) == len(seeds)
    assert sum(s.is_classification for s in seeds) >= 8
    rules = InstructionFilter()
    assert all(heuristic_rejection(s.instruction, rules) is None for s in seeds)
    executable = [s for s in seeds if "assert" in s.output]
    assert len(executable) >= 15
    for task in executable:
        exec(task.output, {})  # noqa: S102 - our own shipped seed solutions


def test_code_verdicts_parse_and_run_asserts_in_the_sandbox():
    passing = "Here:\n```python\ndef f(x):\n    return x + 1\n\nassert f(1) == 2\n```"
    failing = "def g():\n    return 1\n\nassert g() == 1\nassert g() == 2\n"
    broken = "```python\ndef h(:\n```"
    assert extract_python("Yes") is None and extract_python("O(n^2)") is None and extract_python("x = 1") == "x = 1\n"
    solution, tests = split_asserts(failing)
    assert tests == ["assert g() == 1", "assert g() == 2"] and "assert" not in solution
    verdicts, report = code_verdicts([passing, failing, broken, "KeyError", "def k():\n    return 2\n"],
                                     SandboxLimits(timeout_s=2.0, cpu_s=3), 2)
    assert report is not None
    assert (verdicts[0].sandbox_passed, verdicts[0].sandbox_reason, verdicts[0].n_asserts) == (True, "passed", 1)
    assert verdicts[1].sandbox_passed is False and verdicts[1].sandbox_reason == "assertion_failed: test 1"
    assert verdicts[2].has_code and verdicts[2].code_parses is False and verdicts[2].sandbox_reason.startswith("syntax_error")
    assert not verdicts[3].has_code and verdicts[3].sandbox_reason == "no_code"
    assert verdicts[4].sandbox_reason == "no_asserts" and verdicts[4].sandbox_passed is None


def test_local_model_gets_length_bounded_strings_and_other_endpoints_the_plain_schema():
    from types import SimpleNamespace

    from pydantic import BaseModel, Field

    from synth_assets.instructions.rows import complete_json, grammar_bounded

    class Instance(BaseModel):
        output: str = Field(description="label")
        input: str = Field(description="example")
        items: list[str] = Field(description="questions", min_length=1, max_length=10)

    bounded = grammar_bounded(Instance, {"input": (0, 50), "items": (15, 120, 2)})
    schema = bounded.model_json_schema()["properties"]
    assert list(schema) == ["output", "input", "items"]  # field order = generation order, kept
    assert (schema["input"]["minLength"], schema["input"]["maxLength"]) == (0, 50) and "maxLength" not in schema["output"]
    assert schema["items"]["items"] == {"type": "string", "minLength": 15, "maxLength": 120} and schema["items"]["maxItems"] == 2

    sent = []

    def session(is_local: bool):
        def answer(requests, schema):
            sent.append(schema)
            # a raw newline inside a JSON string, as the bundled model writes them
            raw = '{"output": "Yes", "input": "a\nb", "items": ["What does this function return?"]}'
            return [SimpleNamespace(parsed=None, raw_text=raw, status="error", error="invalid JSON: Invalid control character at")]
        return SimpleNamespace(endpoint=SimpleNamespace(is_local=is_local), complete_json=answer)

    (local,) = complete_json(session(True), ["request"], Instance, local_lengths={"input": (0, 50)})
    (remote,) = complete_json(session(False), ["request"], Instance, local_lengths={"input": (0, 50)})
    assert sent[0] is not Instance and sent[0].model_json_schema()["properties"]["input"]["maxLength"] == 50
    assert sent[1] is Instance  # OpenAI strict structured outputs reject minLength/maxLength
    for result in (local, remote):  # salvaged with json.loads(strict=False)
        assert result.status == "ok" and result.parsed.input == "a\nb"
