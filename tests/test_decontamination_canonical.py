"""Structure-robust AST matching (signals/ast_canonical.py): restructured code matches
its original, different code stays different."""

from __future__ import annotations

import ast

import pytest

from synth_assets.decontamination.benchmarks import load_humaneval
from synth_assets.decontamination.signals.ast import AstConfig, AstIndex, ast_match_rate, normalised_subtrees
from synth_assets.decontamination.signals.ast_canonical import canonical_tree
from tests.contamination_variants import _equivalent_rewrites, make_variant, passes_official_tests, stdlib_exercises

HUMANEVAL = load_humaneval()
ON, OFF = AstConfig(canonical=True), AstConfig(canonical=False)

EQUIVALENT = {
    "comprehension vs append loop": (
        "def f(xs):\n    r = []\n    for x in xs:\n        if x > 0:\n            r.append(x * 2)\n    return r\n",
        "def g(ys):\n    return [y * 2 for y in ys if 0 < y]\n",
    ),
    "for-range vs while, x = x + e vs x += e": (
        "def f(n):\n    t = 0\n    for i in range(n):\n        t += i * i\n    return t\n",
        "def f(n):\n    t = 0\n    i = 0\n    while i < n:\n        t = t + i * i\n        i += 1\n    return t\n",
    ),
    "counting down": (
        "def f(s):\n    out = ''\n    for i in range(len(s) - 1, -1, -1):\n        out += s[i]\n    return out\n",
        "def f(s):\n    out = ''\n    i = len(s) - 1\n    while i >= 0:\n        out += s[i]\n        i -= 1\n    return out\n",
    ),
    "negated if/else and guard clause": (
        "def f(a, b):\n    if a != b:\n        return a - b\n    else:\n        return b * 2\n",
        "def f(a, b):\n    if a == b:\n        return b * 2\n    return a - b\n",
    ),
    "index loop vs element loop, search loop vs any()": (
        "def f(xs, t):\n    for i in range(len(xs)):\n        if xs[i] == t:\n            return True\n    return False\n",
        "def f(xs, t):\n    return any(x == t for x in xs)\n",
    ),
    "sum loop with another start literal": (
        "def f(xs):\n    total = 0\n    for x in xs:\n        total += x ** 2\n    return total\n",
        "def f(xs):\n    total = 1\n    for x in xs:\n        total = total + x ** 2\n    return total\n",
    ),
}


@pytest.mark.parametrize("kind", sorted(EQUIVALENT))
def test_restructured_forms_match_only_with_the_rewriting(kind):
    left, right = EQUIVALENT[kind]
    assert ast_match_rate(normalised_subtrees(left, ON), normalised_subtrees(right, ON)) == 1.0
    assert ast_match_rate(normalised_subtrees(left, OFF), normalised_subtrees(right, OFF)) < 0.8


def test_different_computations_stay_different():
    total = "def f(xs):\n    t = 0\n    for x in xs:\n        t += x\n    return t\n"
    largest = "def f(xs):\n    t = 0\n    for x in xs:\n        t = max(t, x)\n    return t\n"
    evens = "def f(xs):\n    return [x for x in xs if x % 2 == 0]\n"
    odds_doubled = "def f(xs):\n    return [x * 2 for x in xs if x % 2 == 1]\n"
    negated_branches = "def f(a, b):\n    if a == b:\n        return a - b\n    return b * 2\n"
    assert ast_match_rate(normalised_subtrees(total, ON), normalised_subtrees(largest, ON)) < 0.5
    assert ast_match_rate(normalised_subtrees(evens, ON), normalised_subtrees(odds_doubled, ON)) < 0.8
    # same test, branches swapped: a different function, and it must not look identical
    assert ast_match_rate(normalised_subtrees(EQUIVALENT["negated if/else and guard clause"][0], ON),
                          normalised_subtrees(negated_branches, ON)) < 1.0


def test_canonical_tree_still_compiles_and_computes_the_same():
    for left, right in EQUIVALENT.values():
        for source in (left, right):
            tree = ast.fix_missing_locations(canonical_tree(ast.parse(source)))
            compile(tree, "<canonical>", "exec")  # a well-formed tree
    namespace: dict = {}
    exec(compile(ast.fix_missing_locations(canonical_tree(ast.parse(EQUIVALENT["counting down"][1]))), "<c>", "exec"), namespace)
    assert namespace["f"]("abc") == "cba"


def test_restructured_humaneval_copies_reach_the_threshold_with_the_rewriting():
    """The planted `restructured` kind (official tests still pass) against the 164."""
    index_on = AstIndex([p.task_id for p in HUMANEVAL], [p.source for p in HUMANEVAL], ON)
    index_off = AstIndex([p.task_id for p in HUMANEVAL], [p.source for p in HUMANEVAL], OFF)
    restructured = [(p, make_variant(p, "restructured")) for p in HUMANEVAL if _equivalent_rewrites(p)]
    assert len(restructured) >= 100
    for problem, variant in restructured[::10]:
        assert passes_official_tests(problem, variant.solution, variant.function_name), problem.task_id
    on = [index_on.query(v.solution) for _, v in restructured]
    off = [index_off.query(v.solution) for _, v in restructured]
    hits_on = sum(m.match_rate >= 0.8 and m.task_id == p.task_id for m, (p, _) in zip(on, restructured))
    hits_off = sum(m.match_rate >= 0.8 and m.task_id == p.task_id for m, (p, _) in zip(off, restructured))
    assert hits_on / len(restructured) >= 0.8 and hits_off / len(restructured) < 0.5, (hits_on, hits_off, len(restructured))
    # the right problem is among the 3 nearest for (nearly) all: the functional signal's candidates
    top3 = sum(HUMANEVAL.index(p) in index_on.query(v.solution, top_k=3).nearest for p, v in restructured)
    assert top3 >= len(restructured) - 2


def test_restructured_library_code_stays_below_the_threshold():
    clean = stdlib_exercises(600, seed=9, restructure=True)
    index = AstIndex([p.task_id for p in HUMANEVAL], [p.source for p in HUMANEVAL], ON)
    rates = [index.query(e.solution).match_rate or 0.0 for e in clean]
    assert sum(rate >= 0.8 for rate in rates) <= 1
