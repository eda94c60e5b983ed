"""What the signals see of a piece of Python source: its docstrings and its code, and
the names that belong to an API rather than to the author (never normalised away)."""

from __future__ import annotations

import builtins
import keyword
import re
from dataclasses import dataclass

_STRING_PREFIX = "rRbBuU"
_COMMENT = re.compile(r"#[^\n]*")

# Names that are API, not the author's choice: builtins, keywords, typing and common
# stdlib modules. Renaming a variable does not change them, so the signals keep them.
API_NAMES = frozenset(dir(builtins)) | frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | frozenset(
    ["List", "Dict", "Tuple", "Set", "Optional", "Any", "Union", "Callable", "Iterable", "typing",
     "math", "re", "collections", "itertools", "functools", "hashlib", "self", "cls"]
)
API_NAMES_LOWER = frozenset(name.lower() for name in API_NAMES)


@dataclass(frozen=True)
class CodeDocument:
    """One piece of Python source split into the parts the signals compare."""

    key: str
    source: str
    docstring: str  # every triple-quoted string, joined
    code: str  # the source with docstrings (and their r/b/u prefixes) and comments removed

    @classmethod
    def from_source(cls, key: str, source: str) -> CodeDocument:
        # One left-to-right scan with `str.find`: the next opening triple quote of either
        # kind, then its closer; cut it out. An opener without a closer is skipped (the scan
        # goes on one character later), as a regex scan would.
        docstrings: list[str] = []
        pieces: list[str] = []
        last = position = 0
        find = source.find
        double, single = find('"""'), find("\'\'\'")
        while double >= 0 or single >= 0:
            start, quote = (double, '"""') if single < 0 or 0 <= double < single else (single, "\'\'\'")
            end = find(quote, start + 3)
            if end < 0:
                position = start + 1
            else:
                docstrings.append(source[start + 3 : end])
                prefix = 0
                while prefix < 2 and start - prefix > last and source[start - prefix - 1] in _STRING_PREFIX:
                    prefix += 1
                pieces.append(source[last : start - prefix])
                last = position = end + 3
            if double < position:
                double = find('"""', position)
            if single < position:
                single = find("\'\'\'", position)
        pieces.append(source[last:])
        code = "".join(pieces)
        if "#" in code:
            code = _COMMENT.sub("", code)
        return cls(key=key, source=source, docstring="\n".join(docstrings), code=code)
