"""Which corpus functions Case2Code can use, chosen by rules, not by a model.

Case2Code (Shao et al. 2024, "Case2Code: Learning Inductive Reasoning with Synthetic
Data", section 3.1) collects functions from real code and keeps those that can be run
on their own: here a top-level function qualifies when it
- parses, is not a method, a generator, async or decorated;
- takes at least one positional argument (there is something to vary);
- returns a value (a `return <expression>` of its own, not only `return None`);
- uses only itself, its arguments and locals, builtins without side effects, and
  pure standard-library modules imported by its file (no files, network, processes,
  clocks or randomness: the outputs must be a function of the inputs);
- is at most `MAX_FUNCTION_LINES` long.
Each other function gets the reason it was left out. The program handed to the
sandbox is the function with the imports it needs.
"""

from __future__ import annotations

import ast
import builtins
import hashlib
from dataclasses import dataclass

MAX_FUNCTION_LINES = 40
# Pure standard-library modules: no I/O, no clocks, no randomness, no processes.
PURE_MODULES = frozenset({
    "math", "cmath", "re", "string", "itertools", "functools", "collections", "operator", "heapq", "bisect",
    "statistics", "fractions", "decimal", "textwrap", "unicodedata", "json", "hashlib", "base64", "binascii",
    "struct", "copy", "keyword", "difflib", "colorsys", "calendar", "html", "zlib", "numbers", "ipaddress",
})
IMPURE_BUILTINS = frozenset({
    "open", "print", "input", "exec", "eval", "compile", "__import__", "globals", "locals", "vars", "breakpoint",
    "exit", "quit", "help", "memoryview", "setattr", "delattr", "id", "hash",
})
BUILTIN_NAMES = frozenset(dir(builtins)) - IMPURE_BUILTINS


@dataclass(frozen=True)
class SelectedFunction:
    function_id: str  # sha256 of the program (first 16 hex)
    doc_id: str
    function_name: str
    parameters: list[str]
    program: str  # imports it needs + the function


@dataclass(frozen=True)
class LeftOutFunction:
    doc_id: str
    function_name: str
    reason: str


def module_imports(tree: ast.Module) -> dict[str, tuple[str, str]]:
    """Top-level name -> (module, import statement) for the file's plain imports."""
    names: dict[str, tuple[str, str]] = {}
    for node in tree.body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                bound = alias.asname or alias.name.split(".")[0]
                statement = f"import {alias.name}" + (f" as {alias.asname}" if alias.asname else "")
                names[bound] = (alias.name.split(".")[0], statement)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                bound = alias.asname or alias.name
                statement = f"from {node.module} import {alias.name}" + (f" as {alias.asname}" if alias.asname else "")
                names[bound] = (node.module.split(".")[0], statement)
    return names


def _own_nodes(function: ast.FunctionDef):
    """The nodes of the function's body, not descending into nested functions or classes."""
    stack = list(function.body)
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        stack.extend(ast.iter_child_nodes(node))


def _bound_names(function: ast.FunctionDef) -> set[str]:
    """Arguments, and every name the function (or anything nested in it) binds."""
    args = function.args
    bound = {function.name} | {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]}
    bound |= {a.arg for a in (args.vararg, args.kwarg) if a is not None}
    for node in ast.walk(function):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bound.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node is not function:
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return bound


def why_left_out(function: ast.FunctionDef, imports: dict[str, tuple[str, str]], source: str) -> str | list[str]:
    """The reason a function is left out, or the import statements its program needs."""
    if function.decorator_list:
        return "decorated"
    args = function.args
    if not (args.posonlyargs or args.args):
        return "no_arguments"
    if function.end_lineno - function.lineno + 1 > MAX_FUNCTION_LINES:
        return "too_long"
    own = list(_own_nodes(function))
    if any(isinstance(node, (ast.Yield, ast.YieldFrom, ast.Await)) for node in own):
        return "generator"
    if any(isinstance(node, (ast.Global, ast.Nonlocal)) for node in own):
        return "uses_global_state"
    returns = [node for node in own if isinstance(node, ast.Return)]
    if not any(r.value is not None and not (isinstance(r.value, ast.Constant) and r.value.value is None) for r in returns):
        return "no_return_value"
    for node in ast.walk(function):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            module = (node.module if isinstance(node, ast.ImportFrom) else node.names[0].name) or ""
            if module.split(".")[0] not in PURE_MODULES:
                return f"imports_impure_or_non_stdlib: {module}"
    bound = _bound_names(function)
    needed: list[str] = []
    for node in ast.walk(function):
        if not (isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)) or node.id in bound:
            continue
        if node.id in IMPURE_BUILTINS:
            return f"uses_io_or_introspection: {node.id}"
        if node.id in BUILTIN_NAMES:
            continue
        if node.id in imports:
            module, statement = imports[node.id]
            if module not in PURE_MODULES:
                return f"imports_impure_or_non_stdlib: {module}"
            if statement not in needed:
                needed.append(statement)
            continue
        return f"uses_module_level_name: {node.id}"
    return needed


def select_functions(doc_id: str, content: str) -> tuple[list[SelectedFunction], list[LeftOutFunction]]:
    """Every top-level function of one file, selected or left out with its reason."""
    try:
        tree = ast.parse(content)
    except (SyntaxError, ValueError):
        return [], [LeftOutFunction(doc_id, "", "file_does_not_parse")]
    imports = module_imports(tree)
    selected, left_out = [], []
    for node in tree.body:
        if isinstance(node, ast.AsyncFunctionDef):
            left_out.append(LeftOutFunction(doc_id, node.name, "async"))
        if not isinstance(node, ast.FunctionDef):
            continue
        outcome = why_left_out(node, imports, content)
        if isinstance(outcome, str):
            left_out.append(LeftOutFunction(doc_id, node.name, outcome))
            continue
        function_source = ast.get_source_segment(content, node) or ""
        program = "\n".join(outcome + ([""] if outcome else []) + [function_source]) + "\n"
        args = node.args
        required = [a.arg for a in [*args.posonlyargs, *args.args]][: len(args.posonlyargs) + len(args.args) - len(args.defaults)]
        selected.append(SelectedFunction(
            function_id=hashlib.sha256(program.encode()).hexdigest()[:16], doc_id=doc_id, function_name=node.name,
            parameters=required or [a.arg for a in [*args.posonlyargs, *args.args]][:1], program=program,
        ))
    return selected, left_out
