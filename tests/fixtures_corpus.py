"""Small on-disk corpora for the ingest tests: every source format, with planted
duplicates and every kind of bad input the readers must record."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from xml.sax.saxutils import quoteattr

import pyarrow as pa
import pyarrow.parquet as pq

WORDS = (
    "alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega river stone cloud "
    "forest ember quartz maple harbor lantern meadow signal vector matrix buffer socket "
    "parser token window column ledger record sample filter cursor packet thread"
).split()


def python_module(seed: int, functions: int = 12) -> str:
    """A syntactically valid module whose text is distinct for each seed."""
    rng = random.Random(seed)
    lines = [f'"""Module {seed}: {" ".join(rng.choices(WORDS, k=8))}."""', ""]
    for index in range(functions):
        name = f"{rng.choice(WORDS)}_{rng.choice(WORDS)}_{index}"
        args = ", ".join(rng.sample(WORDS, 3))
        lines += [
            f"def {name}({args}):",
            f'    """Combine {" ".join(rng.choices(WORDS, k=6))}."""',
            f"    total = {rng.choice(WORDS)} = {rng.randint(0, 999)}",
            f"    for item in range({rng.randint(2, 50)}):",
            f"        total += item * {rng.randint(1, 97)} - len(str({rng.choice(WORDS)!r}))",
            "    return total",
            "",
        ]
    return "\n".join(lines) + "\n"


def near_copy(text: str) -> str:
    """The same module with one line edited and a comment added (Jaccard well above 0.7)."""
    lines = text.split("\n")
    lines[3] = lines[3].replace("(", "(extra_argument, ", 1)
    lines.insert(1, "# lightly edited copy")
    return "\n".join(lines)


def make_python_tree(root: Path) -> dict[str, Path]:
    """A tree with: 3 distinct modules, an exact copy (CRLF line ends, so only equal
    after normalisation), a near copy, a binary file, an undecodable file, an empty
    file, an oversize file (> 20_000 bytes), a dangling symlink, a directory named
    `pkg.py`, an excluded `tests/` dir and a non-.py file. Returns the notable paths."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "sub").mkdir()
    (root / "tests").mkdir()
    paths = {
        "a": root / "a.py",
        "b": root / "b.py",
        "c": root / "sub" / "c.py",
        "a_copy": root / "sub" / "a_copy.py",
        "b_near": root / "sub" / "b_near.py",
        "binary": root / "blob.py",
        "undecodable": root / "latin.py",
        "empty": root / "empty.py",
        "oversize": root / "huge.py",
        "dangling": root / "broken.py",
        "dir_named_py": root / "pkg.py",
        "excluded": root / "tests" / "test_a.py",
    }
    paths["a"].write_text(python_module(1))
    paths["b"].write_text(python_module(2))
    paths["c"].write_text(python_module(3))
    paths["a_copy"].write_bytes(python_module(1).replace("\n", "\r\n").encode())
    paths["b_near"].write_text(near_copy(python_module(2)))
    paths["binary"].write_bytes(b"\x00\x01\x02ELF\x00" * 20)
    paths["undecodable"].write_bytes(b"name = 'caf\xe9'\nprint(name)\n")  # latin-1, no coding cookie
    paths["empty"].write_text("  \n\n")
    paths["oversize"].write_text("x = 1\n" * 5000)  # 30_000 bytes
    os.symlink(root / "does-not-exist.py", paths["dangling"])
    paths["dir_named_py"].mkdir()
    paths["excluded"].write_text(python_module(4))
    (root / "README.txt").write_text("not python")
    return paths


def stack_records() -> list[dict]:
    """Rows in the-stack-dedup's schema: two distinct files and one null `content`."""
    return [
        {
            "hexsha": "a" * 40,
            "content": python_module(10),
            "max_stars_repo_path": "src/ten.py",
            "max_stars_repo_name": "octo/ten",
            "max_stars_repo_head_hexsha": "f" * 40,
            "max_stars_repo_licenses": ["MIT"],
        },
        {
            "hexsha": "b" * 40,
            "content": python_module(11),
            "max_stars_repo_path": "lib/eleven.py",
            "max_stars_repo_name": "octo/eleven",
            "max_stars_repo_head_hexsha": "e" * 40,
            "max_stars_repo_licenses": ["Apache-2.0", "MIT"],
        },
        {
            "hexsha": "c" * 40,
            "content": None,
            "max_stars_repo_path": "broken.py",
            "max_stars_repo_name": "octo/broken",
            "max_stars_repo_head_hexsha": "d" * 40,
            "max_stars_repo_licenses": [],
        },
    ]


def make_stack_parquet(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(stack_records()), path)
    return path


def make_stack_jsonl(path: Path) -> Path:
    """JSONL with the short schema (`path`, `licenses`): one good row (an exact copy of
    Parquet row 0), one invalid JSON line, one row without `content`, one array row."""
    path.parent.mkdir(parents=True, exist_ok=True)
    good = {"content": python_module(10), "path": "ten.py", "repository_name": "mirror/ten", "licenses": ["MIT"]}
    lines = [
        json.dumps(good),
        '{"content": "def broken(:',  # truncated JSON
        json.dumps({"path": "nothing.py", "licenses": ["MIT"]}),
        json.dumps(["not", "an", "object"]),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _row(**attrs) -> str:
    return "  <row " + " ".join(f"{k}={quoteattr(str(v))}" for k, v in attrs.items()) + " />"


def make_posts_xml(path: Path) -> Path:
    """A Posts.xml with: a python question + accepted answer (and a second, not accepted
    answer), a javascript question + accepted answer, a row with a non-integer Id, and
    a python question whose accepted answer is missing from the dump."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        _row(
            Id=1,
            PostTypeId=1,
            AcceptedAnswerId=3,
            Title="How do I reverse a list in Python?",
            Tags="<python><list>",
            Body="<p>I have <code>xs = [1, 2, 3]</code> and want it reversed &amp; copied.</p>",
        ),
        _row(Id=2, PostTypeId=2, ParentId=1, Body="<p>Use a loop.</p>"),
        _row(
            Id=3,
            PostTypeId=2,
            ParentId=1,
            Body="<p>Slice it:</p><pre><code>ys = xs[::-1]\nprint(ys)\n</code></pre><p>Or <code>reversed(xs)</code>.</p>",
        ),
        _row(Id=4, PostTypeId=1, AcceptedAnswerId=5, Title="Array map in JS", Tags="|javascript|arrays|", Body="<p>How?</p>"),
        _row(Id=5, PostTypeId=2, ParentId=4, Body="<p>Use <code>arr.map(f)</code>.</p>"),
        _row(Id="abc", PostTypeId=1, Title="Broken", Tags="<python>", Body="<p>x</p>"),
        _row(Id=7, PostTypeId=1, AcceptedAnswerId=99, Title="Orphan", Tags="<python-3.x>", Body="<p>Where is it?</p>"),
    ]
    path.write_text('<?xml version="1.0" encoding="utf-8"?>\n<posts>\n' + "\n".join(rows) + "\n</posts>\n")
    return path
