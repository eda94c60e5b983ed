"""Structure-robust rewriting of a syntax tree before the AST signal hashes it (issue 17
point 3), so that restructuring a copy does not hide it. Each rewrite maps two ways of
writing one computation onto one form; benchmark problems and exercises get the same
rewrites:

- while-counter loops -> `for i in range(...)` (`i = a; while i < b: ...; i += s`, and the
  counting-down forms), index loops `for i in range(len(xs)): ... xs[i]` -> `for x in xs`,
  `for i, x in enumerate(xs)` with `i` unused -> `for x in xs`;
- explicit accumulation loops -> comprehensions (`r = []; for ...: [if c:] r.append(e)`,
  and `set()`/`.add`, `{}`/`r[k] = v`, `0`/`+=` -> `sum(...)`), `sum([..])`-style calls
  on a list comprehension -> a generator, `list(gen)` -> `[...]`,
  `r = <expr>; return r` -> `return <expr>`;
- `x = x + e` -> `x += e`;
- comparisons read left to right with `<`/`<=` (`a > b` -> `b < a`); `not (a == b)` ->
  `a != b`; `if` / conditional expressions with a negated test and an else branch are
  flipped to the positive test; a guard `if c: return ...` followed by more statements
  becomes `if c: ... else: <the rest>`, and an if/else whose branches each only return
  (or only assign one name) becomes `return a if c else b`;
- constant arithmetic is folded (`0 - 1` -> `-1`) and `range(0, n)` -> `range(n)`.

A rewrite that cannot apply leaves the code as it was; `canonical_tree` never raises.
"""

from __future__ import annotations

import ast
import copy
import operator

_NEGATED = {ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot,
            ast.IsNot: ast.Is, ast.Lt: ast.GtE, ast.GtE: ast.Lt, ast.LtE: ast.Gt, ast.Gt: ast.LtE}
_MIRRORED = {ast.Gt: ast.Lt, ast.GtE: ast.LtE}
# Tests written "negatively": flipped (with the branches swapped) when there is an else.
_FLIPPED_OPS = (ast.NotEq, ast.NotIn, ast.IsNot, ast.LtE)
_GENERATOR_CALLS = frozenset({"sum", "any", "all", "min", "max", "sorted", "set", "tuple", "frozenset", "join"})
_FOLD = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}
_TERMINAL = (ast.Return, ast.Raise, ast.Continue, ast.Break)


def canonical_tree(tree: ast.AST) -> ast.AST:
    """`tree` rewritten in place into the canonical form (returned)."""
    try:
        return _Canonicaliser().visit(tree)
    except (RecursionError, ValueError, TypeError, AttributeError, IndexError):
        return tree  # a shape no rewrite expected: hash it as written


def _name(node: ast.AST | None) -> str | None:
    return node.id if isinstance(node, ast.Name) else None


def _mentions(node: ast.AST, name: str) -> bool:
    return any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(node))


def _stores(node: ast.AST, name: str) -> bool:
    return any(isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, (ast.Store, ast.Del)) for n in ast.walk(node))


def _negate(test: ast.expr) -> ast.expr:
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        return test.operand
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and type(test.ops[0]) in _NEGATED:
        return _canonical_compare(ast.Compare(test.left, [_NEGATED[type(test.ops[0])]()], test.comparators))
    return ast.UnaryOp(ast.Not(), test)


def _is_negative(test: ast.expr) -> bool:
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        return True
    return isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], _FLIPPED_OPS)


def _canonical_compare(node: ast.Compare) -> ast.Compare:
    if len(node.ops) == 1 and type(node.ops[0]) in _MIRRORED:
        return ast.Compare(node.comparators[0], [_MIRRORED[type(node.ops[0])]()], [node.left])
    return node


def _constant(value: object) -> ast.expr:
    return ast.Constant(value)


def _fold(node: ast.expr) -> ast.expr:
    """Constant arithmetic folded: `-1`, `0 - 1` and `n + 0` compare equal."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
        value = node.operand.value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return _constant(-value)
    if isinstance(node, ast.BinOp) and type(node.op) in _FOLD:
        left, right = node.left, node.right
        if isinstance(left, ast.Constant) and isinstance(right, ast.Constant):
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (left.value, right.value)):
                return _constant(_FOLD[type(node.op)](left.value, right.value))
        if isinstance(right, ast.Constant) and right.value == 0 and not isinstance(right.value, bool) and isinstance(node.op, (ast.Add, ast.Sub)):
            return left
    return node


def _range(start: ast.expr, stop: ast.expr, step: ast.expr | None) -> ast.Call:
    args = [start, stop] + ([step] if step is not None else [])
    return _canonical_range(ast.Call(ast.Name("range", ast.Load()), args, []))


def _canonical_range(node: ast.Call) -> ast.Call:
    if _name(node.func) != "range" or node.keywords:
        return node
    args = list(node.args)
    if len(args) == 3 and isinstance(args[2], ast.Constant) and args[2].value == 1:
        args = args[:2]
    if len(args) == 2 and isinstance(args[0], ast.Constant) and args[0].value == 0:
        args = args[1:]
    node.args = args
    return node


class _Canonicaliser(ast.NodeTransformer):
    def generic_visit(self, node: ast.AST) -> ast.AST:
        super().generic_visit(node)
        for field in ("body", "orelse", "finalbody"):
            value = getattr(node, field, None)
            if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                setattr(node, field, _fold_statements(value))
        return node

    def visit_Compare(self, node: ast.Compare) -> ast.expr:
        self.generic_visit(node)
        return _canonical_compare(node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.expr:
        self.generic_visit(node)
        if isinstance(node.op, ast.Not):
            operand = node.operand
            if isinstance(operand, ast.UnaryOp) and isinstance(operand.op, ast.Not):
                return operand.operand
            if isinstance(operand, ast.Compare) and len(operand.ops) == 1:
                return _negate(operand)
        return _fold(node)

    def visit_BinOp(self, node: ast.BinOp) -> ast.expr:
        self.generic_visit(node)
        return _fold(node)

    def visit_Assign(self, node: ast.Assign) -> ast.stmt:
        self.generic_visit(node)
        target = node.targets[0] if len(node.targets) == 1 else None
        value = node.value
        if isinstance(target, ast.Name) and isinstance(value, ast.BinOp) and _name(value.left) == target.id:
            return ast.AugAssign(ast.Name(target.id, ast.Store()), value.op, value.right)
        return node

    def visit_If(self, node: ast.If) -> ast.stmt:
        self.generic_visit(node)
        if node.orelse and _is_negative(node.test):
            node.test, node.body, node.orelse = _negate(node.test), node.orelse, node.body
        return _if_as_expression(node)

    def visit_IfExp(self, node: ast.IfExp) -> ast.expr:
        self.generic_visit(node)
        if _is_negative(node.test):
            node.test, node.body, node.orelse = _negate(node.test), node.orelse, node.body
        return node

    def visit_Call(self, node: ast.Call) -> ast.expr:
        self.generic_visit(node)
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else _name(func)
        if len(node.args) == 1 and not node.keywords:
            argument = node.args[0]
            if called in _GENERATOR_CALLS and isinstance(argument, ast.ListComp):
                node.args = [ast.GeneratorExp(argument.elt, argument.generators)]
            if called == "sum" and isinstance(func, ast.Name):  # sum's start made explicit
                node.args = node.args + [ast.Constant(0)]
            elif called == "list" and isinstance(argument, ast.GeneratorExp) and isinstance(func, ast.Name):
                return ast.ListComp(argument.elt, argument.generators)
        return _canonical_range(node)

    def visit_For(self, node: ast.For) -> ast.stmt:
        self.generic_visit(node)
        return _element_loop(node)


def _if_as_expression(node: ast.If) -> ast.stmt:
    """`if c: return a else: return b` -> `return a if c else b` (and one-name assigns)."""
    if len(node.body) != 1 or len(node.orelse) != 1:
        return node
    first, second = node.body[0], node.orelse[0]
    if isinstance(first, ast.Return) and isinstance(second, ast.Return) and first.value and second.value:
        return ast.Return(ast.IfExp(node.test, first.value, second.value))
    if (
        isinstance(first, ast.Assign) and isinstance(second, ast.Assign)
        and len(first.targets) == len(second.targets) == 1
        and _name(first.targets[0]) is not None and _name(first.targets[0]) == _name(second.targets[0])
    ):
        return ast.Assign([first.targets[0]], ast.IfExp(node.test, first.value, second.value))
    return node


def _element_loop(node: ast.For) -> ast.For:
    """`for i in range(len(xs))` using `i` only as `xs[i]`, or `for i, x in
    enumerate(xs)` not using `i`: a loop over the elements."""
    target, iterator = node.target, node.iter
    if node.orelse or not isinstance(iterator, ast.Call) or iterator.keywords:
        return node
    called = _name(iterator.func)
    if called == "enumerate" and len(iterator.args) == 1 and isinstance(target, ast.Tuple) and len(target.elts) == 2:
        index = _name(target.elts[0])
        if index is not None and not any(_mentions(statement, index) for statement in node.body):
            node.target, node.iter = target.elts[1], iterator.args[0]
        return node
    if called != "range" or len(iterator.args) != 1:
        return node
    length = iterator.args[0]
    index = _name(target)
    if not (isinstance(length, ast.Call) and _name(length.func) == "len" and len(length.args) == 1 and index):
        return node
    sequence = _name(length.args[0])
    if sequence is None or any(_stores(statement, index) or _stores(statement, sequence) for statement in node.body):
        return node
    element = "_element_of_" + sequence
    uses = 0
    for statement in node.body:
        for child in ast.walk(statement):
            if isinstance(child, ast.Name) and child.id == index:
                uses += 1
    replaced = _ReplaceSubscript(sequence, index, element)
    body = [replaced.visit(copy.deepcopy(statement)) for statement in node.body]
    if replaced.count != uses:  # `i` is used for something else than xs[i]
        return node
    node.target, node.iter, node.body = ast.Name(element, ast.Store()), ast.Name(sequence, ast.Load()), body
    return node


class _ReplaceSubscript(ast.NodeTransformer):
    def __init__(self, sequence: str, index: str, element: str):
        self.sequence, self.index, self.element, self.count = sequence, index, element, 0

    def visit_Subscript(self, node: ast.Subscript) -> ast.expr:
        if _name(node.value) == self.sequence and _name(node.slice) == self.index and isinstance(node.ctx, ast.Load):
            self.count += 1
            return ast.Name(self.element, ast.Load())
        self.generic_visit(node)
        return node


# ----------------------------------------------------------------------------- statement lists


def _fold_statements(body: list[ast.stmt]) -> list[ast.stmt]:
    body = _while_to_for(body)
    body = _accumulations_to_comprehensions(body)
    body = _searches_to_any_all(body)
    body = _inline_returned_name(body)
    return _guards_to_else(body)


def _returns_bool(statement: ast.stmt) -> bool | None:
    if isinstance(statement, ast.Return) and isinstance(statement.value, ast.Constant) and isinstance(statement.value.value, bool):
        return statement.value.value
    return None


def _searches_to_any_all(body: list[ast.stmt]) -> list[ast.stmt]:
    """`for x in xs: if c: return True` + `return False` -> `return any(c for x in xs)`
    (and `return False` / `return True` -> `return all(not c for x in xs)`)."""
    for position in range(len(body) - 1):
        loop, after = body[position], body[position + 1]
        found = _loop_generators(loop, "") if isinstance(loop, ast.For) else None
        if found is None or _returns_bool(after) is None or not found[0][-1].ifs:
            continue
        generators, innermost = found
        inner = _returns_bool(innermost)
        if inner is None or inner == _returns_bool(after):
            continue
        test = generators[-1].ifs.pop()
        test = test if len(generators[-1].ifs) == 0 else ast.BoolOp(ast.And(), generators[-1].ifs + [test])
        generators[-1].ifs = []
        called = "any" if inner else "all"
        element = test if inner else _negate(test)
        call = ast.Call(ast.Name(called, ast.Load()), [ast.GeneratorExp(element, generators)], [])
        return body[:position] + [ast.Return(call)] + body[position + 2 :]
    return body


def _guards_to_else(body: list[ast.stmt]) -> list[ast.stmt]:
    """`if c: ...; return x` followed by more statements -> `if c: ... else: <rest>`."""
    for position in range(len(body) - 2, -1, -1):
        statement = body[position]
        if isinstance(statement, ast.If) and not statement.orelse and isinstance(statement.body[-1], _TERMINAL):
            rest = body[position + 1 :]
            statement.orelse = rest
            flipped = statement
            if _is_negative(statement.test):
                flipped.test, flipped.body, flipped.orelse = _negate(statement.test), statement.orelse, statement.body
            body = body[:position] + [_if_as_expression(flipped)]
    return body


def _inline_returned_name(body: list[ast.stmt]) -> list[ast.stmt]:
    """`r = <expr>` ... `return r` -> `return <expr>` when nothing between mentions `r`
    (the tree is only hashed, so statements in between may stay where they are)."""
    if len(body) < 2 or not isinstance(body[-1], ast.Return) or _name(body[-1].value) is None:
        return body
    name = _name(body[-1].value)
    for position in range(len(body) - 2, -1, -1):
        statement = body[position]
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1 and _name(statement.targets[0]) == name:
            if _mentions(statement.value, name):
                return body
            return body[:position] + body[position + 1 : -1] + [ast.Return(statement.value)]
        if _mentions(statement, name):
            return body
    return body


def _empty_kind(value: ast.expr) -> str | None:
    """What an accumulator starts as: "list", "set", "dict", "number" or "string"."""
    if isinstance(value, ast.List) and not value.elts:
        return "list"
    if isinstance(value, ast.Dict) and not value.keys:
        return "dict"
    if isinstance(value, ast.Call) and not value.args and not value.keywords and _name(value.func) in ("list", "set", "dict"):
        return _name(value.func)
    # Any starting number or string: the start is kept (`sum(gen, start)`), so a copy
    # with changed literals still folds the same way.
    if isinstance(value, ast.Constant) and isinstance(value.value, (int, float)) and not isinstance(value.value, bool):
        return "number"
    if isinstance(value, ast.Constant) and isinstance(value.value, str):
        return "string"
    return None


def _loop_generators(loop: ast.stmt, accumulator: str) -> tuple[list[ast.comprehension], ast.stmt] | None:
    """The comprehension generators of nested `for`/`if` around one accumulating
    statement, and that statement; None for any other loop shape."""
    generators: list[ast.comprehension] = []
    node = loop
    while True:
        if isinstance(node, ast.For) and not node.orelse and len(node.body) == 1 and not (accumulator and _mentions(node.iter, accumulator)):
            generators.append(ast.comprehension(node.target, node.iter, [], 0))
            node = node.body[0]
        elif isinstance(node, ast.If) and not node.orelse and len(node.body) == 1 and generators and not (accumulator and _mentions(node.test, accumulator)):
            generators[-1].ifs.append(node.test)
            node = node.body[0]
        else:
            break
    return (generators, node) if generators else None


def _accumulated(kind: str, name: str, statement: ast.stmt) -> tuple[str, ast.expr, ast.expr | None] | None:
    """(comprehension kind, element, dict value) when `statement` adds to `name`."""
    if kind in ("list", "set") and isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call):
        call = statement.value
        method = "append" if kind == "list" else "add"
        if (isinstance(call.func, ast.Attribute) and call.func.attr == method and _name(call.func.value) == name
                and len(call.args) == 1 and not call.keywords and not _mentions(call.args[0], name)):
            return kind, call.args[0], None
    if kind == "dict" and isinstance(statement, ast.Assign) and len(statement.targets) == 1:
        target = statement.targets[0]
        if isinstance(target, ast.Subscript) and _name(target.value) == name and not _mentions(statement.value, name):
            return "dict", target.slice, statement.value
    if kind in ("number", "string") and isinstance(statement, ast.AugAssign) and isinstance(statement.op, ast.Add):
        if _name(statement.target) == name and not _mentions(statement.value, name):
            return kind, statement.value, None
    return None


def _comprehension(
    kind: str, element: ast.expr, value: ast.expr | None, generators: list[ast.comprehension], start: ast.expr
) -> ast.expr:
    if kind == "list":
        return ast.ListComp(element, generators)
    if kind == "set":
        return ast.SetComp(element, generators)
    if kind == "dict":
        return ast.DictComp(element, value, generators)
    generator = ast.GeneratorExp(element, generators)
    if kind == "string":
        return ast.BinOp(start, ast.Add(), ast.Call(ast.Attribute(ast.Constant(""), "join", ast.Load()), [generator], []))
    return ast.Call(ast.Name("sum", ast.Load()), [generator, start], [])


def _accumulations_to_comprehensions(body: list[ast.stmt]) -> list[ast.stmt]:
    """`r = []` ... `for x in xs: [if c:] r.append(e)` -> `r = [e for x in xs if c]`
    (the loop must be the next statement that mentions `r`)."""
    position = 0
    while position < len(body):
        statement = body[position]
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1 and _name(statement.targets[0]):
            name, kind = _name(statement.targets[0]), _empty_kind(statement.value)
            if kind is not None:
                later = next((k for k in range(position + 1, len(body)) if _mentions(body[k], name)), None)
                found = _loop_generators(body[later], name) if later is not None else None
                accumulated = _accumulated(kind, name, found[1]) if found else None
                if accumulated is not None:
                    comprehension = _comprehension(accumulated[0], accumulated[1], accumulated[2], found[0], statement.value)
                    body = body[:position] + [ast.Assign([statement.targets[0]], comprehension)] + body[position + 1 : later] + body[later + 1 :]
        position += 1
    return body


def _while_to_for(body: list[ast.stmt]) -> list[ast.stmt]:
    """`i = a` ... `while i < b: ...; i += s` -> `for i in range(a, b, s): ...` (also
    `<=`, and counting down with `-=`). The counter must be set by the nearest earlier
    statement that mentions it, changed only by the last statement of the loop, and the
    loop must have no `continue` (which would skip the step)."""
    for position, statement in enumerate(body):
        if not isinstance(statement, ast.While) or statement.orelse or len(statement.body) < 2:
            continue
        test, step_statement = statement.test, statement.body[-1]
        if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], (ast.Lt, ast.LtE))):
            continue
        if not (isinstance(step_statement, ast.AugAssign) and isinstance(step_statement.op, (ast.Add, ast.Sub))):
            continue
        counter = _name(step_statement.target)
        if counter is None or any(isinstance(n, ast.Continue) for s in statement.body for n in ast.walk(s)):
            continue
        if any(_stores(s, counter) for s in statement.body[:-1]) or _mentions(step_statement.value, counter):
            continue
        up = isinstance(step_statement.op, ast.Add)
        if up and _name(test.left) == counter and not _mentions(test.comparators[0], counter):
            stop = test.comparators[0]
        elif not up and _name(test.comparators[0]) == counter and not _mentions(test.left, counter):
            stop = test.left
        else:
            continue
        init = next((k for k in range(position - 1, -1, -1) if _mentions(body[k], counter)), None)
        if init is None:
            continue
        start_statement = body[init]
        if not (isinstance(start_statement, ast.Assign) and len(start_statement.targets) == 1 and _name(start_statement.targets[0]) == counter):
            continue
        inclusive = isinstance(test.ops[0], ast.LtE)
        if inclusive:
            stop = _fold(ast.BinOp(stop, ast.Add() if up else ast.Sub(), ast.Constant(1)))
        step = step_statement.value if up else _fold(ast.UnaryOp(ast.USub(), step_statement.value))
        loop = ast.For(ast.Name(counter, ast.Store()), _range(start_statement.value, stop, step), statement.body[:-1], [], type_comment=None)
        loop = _element_loop(loop)
        return body[:init] + body[init + 1 : position] + [loop] + _while_to_for(body[position + 1 :])
    return body
