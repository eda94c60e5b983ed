"""Signal 4, AST match rate (phi-1 section 5.2): syntax trees rewritten into one
canonical structure (`ast_canonical`: loops, comprehensions, augmented assignment,
negated if/else), with identifiers, literals and docstrings normalised away and
statement lists hashed order-insensitively; the match rate is the multiset overlap of
normalised subtrees.
"""

from __future__ import annotations

import ast
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from synth_assets.decontamination.signals.ast_canonical import canonical_tree
from synth_assets.decontamination.signals.code_document import API_NAMES
from synth_assets.decontamination.signals.nearest import top_positions


@dataclass(frozen=True)
class AstConfig:
    # Subtrees smaller than this (a bare name or constant) are in every program and carry
    # no evidence; 3 nodes keeps e.g. `len(x)` and `x + 1`.
    min_subtree_nodes: int = 3
    # Rewrite loops / comprehensions / augmented assignment / negated if-else into one
    # form first (issue 17): restructured copies of HumanEval then match (README sweep).
    canonical: bool = True


@dataclass(frozen=True)
class AstMatch:
    task_id: str | None
    match_rate: float | None  # None when the exercise does not parse
    nearest: tuple[int, ...] = ()  # positions of the top-k problems, best first (when asked)


_STATEMENT_LIST_FIELDS = frozenset({"body", "orelse", "finalbody", "handlers"})
_DROPPED_FIELDS = frozenset({"ctx", "type_comment", "kind", "type_params"})
_NAME_FIELDS = frozenset({"name", "id", "attr", "arg", "asname"})
_SCALAR_FIELDS = frozenset({"op", "level", "is_async", "conversion"})
_DOCSTRING_OWNERS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)
_COUNTED = (ast.stmt, ast.expr, ast.excepthandler)
_CONST_HASH = hash("CONST")


@lru_cache(maxsize=None)
def _node_spec(node_class: type) -> tuple[tuple[str, ...], bool, bool]:
    """(fields compared, counted as a subtree, strips a leading docstring) per AST class,
    worked out once per class instead of per node."""
    fields = tuple(name for name in node_class._fields if name not in _DROPPED_FIELDS and name not in _NAME_FIELDS)
    return fields, issubclass(node_class, _COUNTED), issubclass(node_class, _DOCSTRING_OWNERS)


@lru_cache(maxsize=None)
def _name_hash(label: str) -> int:
    return hash(("Name", label if label in API_NAMES else "VAR"))


def parse_source(source: str) -> ast.Module | None:
    """The parsed module, or None when the source does not parse."""
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def normalised_subtrees(source: str | ast.Module | None, config: AstConfig = AstConfig()) -> Counter | None:
    """Multiset of hashes of normalised statement/expression subtrees, or None if the
    source does not parse. Identifiers (other than builtins, typing names and attribute
    /keyword names, which belong to an API) become `VAR`, every literal becomes `CONST`,
    docstrings are dropped, and statement lists are hashed as sorted multisets so
    reordering statements does not change a parent's hash.

    Hashes are Python's (salted per process): compare fingerprints made in one process
    or in processes forked from it. A parsed module may be passed instead of source; it
    is rewritten in place when `config.canonical`."""
    tree = parse_source(source) if isinstance(source, str) else source
    if tree is None:
        return None
    if config.canonical:
        tree = canonical_tree(tree)
    found: Counter = Counter()
    min_nodes = config.min_subtree_nodes
    Name, Constant, arg_class, Attribute, keyword_class, alias = ast.Name, ast.Constant, ast.arg, ast.Attribute, ast.keyword, ast.alias
    AST = ast.AST

    def visit(node: ast.AST) -> tuple[int, int]:
        node_class = node.__class__
        if node_class is Name:
            return _name_hash(node.id), 1
        if node_class is Constant:
            return _CONST_HASH, 1
        if node_class is arg_class:
            if node.annotation is None:
                return hash(("arg",)), 1
            child, child_size = visit(node.annotation)
            return hash(("arg", child)), 1 + child_size
        if node_class is alias:
            return hash(("alias", node.name)), 1
        label = node_class.__name__
        if node_class is Attribute:
            label += "." + node.attr
        elif node_class is keyword_class:
            label += "." + str(node.arg)
        fields, counted, strips_docstring = _node_spec(node_class)
        parts: list = [label]
        size = 1
        for name in fields:
            value = getattr(node, name, None)
            if value is None:
                continue
            if value.__class__ is list:
                body = value
                if strips_docstring and name == "body" and body and _is_docstring(body[0]):
                    body = body[1:]
                hashes = []
                for item in body:
                    if isinstance(item, AST):
                        child, child_size = visit(item)
                        hashes.append(child)
                        size += child_size
                if name in _STATEMENT_LIST_FIELDS:
                    hashes.sort()
                parts.append((name, tuple(hashes)))
            elif isinstance(value, AST):
                child, child_size = visit(value)
                parts.append((name, child))
                size += child_size
            elif name in _SCALAR_FIELDS:
                parts.append((name, value))
        digest = hash(tuple(parts))
        if counted and size >= min_nodes:
            found[digest] += 1
        return digest, size

    try:
        visit(tree)
    except RecursionError:
        return None
    return found


def _is_docstring(statement: ast.stmt) -> bool:
    return (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Constant)
        and isinstance(statement.value.value, str)
    )


def ast_match_rate(left: Counter, right: Counter) -> float:
    """Multiset overlap of normalised subtrees: shared / max(|left|, |right|)."""
    total = max(sum(left.values()), sum(right.values()))
    if not total:
        return 0.0
    return sum((left & right).values()) / total


class AstIndex:
    """Benchmark subtree counts as a dense (problems x vocabulary) matrix; an exercise
    touches only the columns of its own subtrees, so scoring is O(its subtrees x problems)
    in numpy with no per-pair Python work (the prefilter: subtrees outside the benchmark
    vocabulary are counted but never compared, and an exercise sharing none of them
    costs no numpy work at all)."""

    def __init__(self, task_ids: Sequence[str], sources: Sequence[str], config: AstConfig = AstConfig()):
        self.config = config
        self.task_ids = list(task_ids)
        fingerprints = [normalised_subtrees(source, config) or Counter() for source in sources]
        self.vocabulary: dict[int, int] = {}
        for fingerprint in fingerprints:
            for digest in fingerprint:
                self.vocabulary.setdefault(digest, len(self.vocabulary))
        self.counts = np.zeros((len(fingerprints), max(len(self.vocabulary), 1)), dtype=np.int32)
        for row, fingerprint in enumerate(fingerprints):
            for digest, count in fingerprint.items():
                self.counts[row, self.vocabulary[digest]] = count
        self.totals = self.counts.sum(axis=1)

    def query_fingerprint(self, fingerprint: Counter | None, top_k: int = 0) -> AstMatch:
        if fingerprint is None:
            return AstMatch(None, None)
        vocabulary = self.vocabulary
        columns = [(vocabulary[d], c) for d, c in fingerprint.items() if d in vocabulary]
        if not columns or not len(self.task_ids):
            return AstMatch(None, 0.0)
        total = sum(fingerprint.values())
        index = np.fromiter((column for column, _ in columns), dtype=np.int64, count=len(columns))
        counts = np.fromiter((count for _, count in columns), dtype=np.int32, count=len(columns))
        shared = np.minimum(self.counts[:, index], counts).sum(axis=1)
        rates = shared / np.maximum(np.maximum(self.totals, total), 1)
        best = int(np.argmax(rates))
        nearest = top_positions(rates[None, :], top_k)[0] if top_k else ()
        return AstMatch(self.task_ids[best], float(rates[best]), nearest)

    def query(self, source: str | ast.Module | None, top_k: int = 0) -> AstMatch:
        return self.query_fingerprint(normalised_subtrees(source, self.config), top_k)
