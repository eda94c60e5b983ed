"""case2code: the selection rules with their reasons, the judge, the templates, and a
real materialization whose outputs are re-computed here, outside the sandbox."""

from __future__ import annotations

import ast
import json
import re

import dagster as dg
import polars as pl

from quality_checks.checks import all_asset_checks
from resources.compute import Compute
from synth_assets.synthesis.case2code import Case2CodeConfig, case2code, judge
from synth_assets.synthesis.case2code_functions import select_functions
from synth_assets.synthesis.case2code_prompts import TEMPLATES, choose_prompt, render
from synth_assets.synthesis.observed_calls import Observation
from tests.openai_double import OpenAIDouble
from tests.test_exercises import llm_for

MODULE = '''"""A module with functions of every kind."""
import math
import os
import numpy as np
from collections import Counter

LIMIT = 10


def hypotenuse(a, b):
    return math.sqrt(a * a + b * b)


def most_common_letter(text):
    counts = Counter(c for c in text.lower() if c.isalpha())
    return counts.most_common(1)[0][0] if counts else ""


def clamp(n):
    return min(n, LIMIT)


def no_args():
    return 1


def shout(text):
    print(text.upper())
    return text


def listing(path):
    return os.listdir(path)


def as_array(xs):
    return np.array(xs)


def countdown(n):
    while n > 0:
        yield n
        n -= 1


def nothing(x):
    x.append(1)


def fact(n):
    return 1 if n <= 1 else n * fact(n - 1)


def always_seven(x):
    return 7


def repeat(s, n):
    return s * n * 100


class Box:
    def size(self, x):
        return x
'''


def test_rules_select_runnable_pure_functions_and_give_a_reason_for_every_other():
    selected, left_out = select_functions("m.py", MODULE)
    assert {f.function_name for f in selected} == {"hypotenuse", "most_common_letter", "fact", "always_seven", "repeat"}
    reasons = {f.function_name: f.reason for f in left_out}
    assert reasons == {
        "clamp": "uses_module_level_name: LIMIT",
        "no_args": "no_arguments",
        "shout": "uses_io_or_introspection: print",
        "listing": "imports_impure_or_non_stdlib: os",
        "as_array": "imports_impure_or_non_stdlib: numpy",
        "countdown": "generator",
        "nothing": "no_return_value",
    }
    programs = {f.function_name: f.program for f in selected}
    assert programs["hypotenuse"].startswith("import math\n\ndef hypotenuse(a, b):")
    assert programs["most_common_letter"].startswith("from collections import Counter\n\ndef most_common_letter")
    assert programs["fact"].startswith("def fact(n):")  # recursion is not a module-level name
    for program in programs.values():
        ast.parse(program)
    assert select_functions("bad.py", "def broken(:\n")[1][0].reason == "file_does_not_parse"


def test_judge_drops_constant_over_long_and_crashing_functions_with_reasons():
    ok = [Observation("1", "2", "ok"), Observation("2", "4", "ok"), Observation("'x'", None, "raised: TypeError: no")]
    assert judge(ok, 120).pairs == [("1", "2"), ("2", "4")] and judge(ok, 120).reason is None
    assert judge([Observation("1", "7", "ok"), Observation("2", "7", "ok")], 120).reason == "constant_output: 7"
    assert judge([Observation("1", "'" + "x" * 130 + "'", "ok"), Observation("2", "1", "ok")], 120).reason == "output_too_long: 132 chars"
    assert judge([Observation("1", None, "output_too_long: 500 chars")], 120).reason == "output_too_long: 500 chars"
    assert judge([Observation("1", None, "raised: ValueError: x")], 120).reason == "no_successful_call: raised: ValueError: x"


def test_ten_templates_render_m_of_n_pairs():
    pairs = [(str(i), str(i * i)) for i in range(8)]
    assert len(TEMPLATES) == 10 and len({t.name for t in TEMPLATES}) == 10
    for template in TEMPLATES:
        prompt = render(template, "square", pairs[:3])
        for args, output in pairs[:3]:
            assert args in prompt and output in prompt
        assert ("square" in prompt) != (template.name == "anonymous")
    seen = set()
    for k in range(60):
        prompt, name, shown = choose_prompt(f"id{k}", "square", pairs, seed=0, min_shown=3)
        assert 3 <= shown <= 8 and name in {t.name for t in TEMPLATES}
        seen.add(name)
        assert choose_prompt(f"id{k}", "square", pairs, seed=0, min_shown=3) == (prompt, name, shown)
    assert len(seen) >= 8


def inputs_responder(body: dict) -> str:
    prompt = body["messages"][-1]["content"]
    name = re.search(r"inputs to call (\w+) with", prompt).group(1)
    proposals = {"hypotenuse": ["3, 4", "5, 12", "not a literal", "0, 0"], "fact": ["5", "0", "10"],
                 "most_common_letter": ["'banana'", "'Mississippi'"], "repeat": ["'ab', 2"]}
    return json.dumps({"inputs": proposals.get(name, ["1"])})


def test_case2code_rows_carry_outputs_the_program_really_computes(warehouse):
    warehouse.write_table("raw_stack_plus", pl.DataFrame({"doc_id": ["m"], "content": [MODULE]}))
    config = Case2CodeConfig(n_files=4, max_functions=10, n_inputs=6, sandbox_timeout_s=1.0)
    checks = [c for c in all_asset_checks if any(k.asset_key == dg.AssetKey("case2code") for k in c.check_keys)]
    assert checks
    with OpenAIDouble(chat=inputs_responder) as server:
        result = dg.materialize([case2code, *checks], resources={"compute": Compute(), "warehouse": warehouse, "llm": llm_for(server)},
                                run_config=dg.RunConfig({"case2code": config}))
    assert result.success
    rows = {r["function_name"]: r for r in warehouse.query("SELECT * FROM case2code").to_dicts()}
    rejects = warehouse.query("SELECT * FROM case2code_rejects").to_dicts()
    assert set(rows) == {"hypotenuse", "fact", "most_common_letter"}
    execution = {r["function_name"]: r["reason"] for r in rejects if r["stage"] == "execution"}
    assert execution["always_seven"] == "constant_output: 7"
    assert execution["repeat"].startswith("output_too_long")
    assert {r["function_name"] for r in rejects if r["stage"] == "selection"} >= {"clamp", "shout", "countdown"}
    for row in rows.values():  # re-run every pair here, outside the sandbox
        namespace: dict = {}
        exec(row["program"], namespace)
        assert len(row["inputs"]) == len(row["outputs"]) == row["n_pairs"] >= 2
        for arguments, output in zip(row["inputs"], row["outputs"]):
            assert repr(namespace[row["function_name"]](*ast.literal_eval(f"({arguments},)"))) == output
        assert row["template"] in {t.name for t in TEMPLATES} and 1 <= row["shown_pairs"] <= row["n_pairs"]
        assert row["n_pairs"] <= 6
    assert rows["hypotenuse"]["inputs"][:3] == ["3, 4", "5, 12", "0, 0"] and rows["hypotenuse"]["inputs_from_model"] == 3
    assert rows["hypotenuse"]["outputs"][:3] == ["5.0", "13.0", "0.0"]
    assert "not a literal: not_a_literal" in rows["hypotenuse"]["dropped_inputs"]
    assert rows["fact"]["outputs"][:3] == ["120", "1", "3628800"]
    metadata = result.asset_materializations_for_node("case2code")[0].metadata
    evaluations = result.get_asset_check_evaluations()
    assert evaluations and all(e.passed for e in evaluations)
    assert metadata["functions_kept"].value == 3 and metadata["pairs"].value == sum(r["n_pairs"] for r in rows.values())
