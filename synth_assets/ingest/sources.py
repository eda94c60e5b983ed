"""Readers for the ingest sources. Each yields `RawDocument`s and `Reject`s in a
stable order and never raises for bad input: an unreadable or corrupt file (a bad
gzip stream, a Parquet file Arrow cannot decode, whatever the exception class), a
malformed row (a field of the wrong type, e.g. a numeric title or a dict-valued
license), binary or undecodable bytes become a `Reject` with a reason, so nothing is
lost silently. A file that breaks part-way keeps the rows read before the break and
its reject says how many that was. A source path that does not exist raises
`SourceNotFound`.

Kinds:

* ``python_tree``: a directory of ``.py`` files (by default the running
  interpreter's standard library, without tests, site-packages, idlelib, lib2to3);
* ``the_stack``: Parquet or JSONL files in The Stack's published schema
  (bigcode/the-stack-dedup: ``content``, ``max_stars_repo_path`` / ``path``,
  ``max_stars_repo_name``, ``max_stars_repo_licenses`` / ``licenses``, ...);
* ``stackoverflow``: the Stack Exchange dump's ``Posts.xml`` (or Parquet/JSONL of
  its rows): Python-tagged questions joined with their accepted answer.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import sqlite3
import stat
import sysconfig
import tempfile
import tokenize
import xml.etree.ElementTree as ET
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

SOURCE_KINDS = ("python_tree", "the_stack", "stackoverflow")

# Directory names skipped in python_tree sources. The stdlib's test suites, vendored
# third-party code and the deprecated/IDE packages are not the code we want to learn from.
DEFAULT_EXCLUDE_DIRS = ("test", "tests", "site-packages", "idlelib", "lib2to3", "__pycache__", ".git")
# The Stack v1 removed files over 1 MB (bigcode/the-stack dataset card, "Data Fields / filtering").
DEFAULT_MAX_BYTES = 1_000_000
# git's binary heuristic: a NUL byte in the first 8000 bytes.
BINARY_SNIFF_BYTES = 8000
TABLE_SUFFIXES = (".parquet", ".jsonl", ".json", ".jsonl.gz", ".json.gz", ".ndjson")
READ_BATCH_ROWS = 256  # Parquet rows per read batch; a row may hold up to max_file_bytes
MAX_POST_ID = 2**63  # post ids are kept in SQLite INTEGER columns while questions wait for answers


class SourceNotFound(FileNotFoundError):
    """A configured source path does not exist (a configuration error, not bad data)."""


@dataclass(frozen=True)
class RawDocument:
    source: str
    origin: str
    content: str
    repo: str | None = None
    license: str | None = None


@dataclass(frozen=True)
class Reject:
    source: str
    origin: str
    reason: str
    detail: str


Record = RawDocument | Reject


def stdlib_path() -> str:
    """The running interpreter's standard library: the default corpus (~600 files, ~11 MB)."""
    return sysconfig.get_paths()["stdlib"]


def require_path(path: str | Path) -> Path:
    resolved = Path(path).expanduser()
    if not os.path.lexists(resolved):
        raise SourceNotFound(f"source path does not exist: {resolved}")
    return resolved


def text_reject_reason(content: str, max_bytes: int) -> tuple[str, str] | None:
    """Why a decoded text cannot be a document, or None."""
    if "\x00" in content[:BINARY_SNIFF_BYTES]:
        return "binary", "NUL character in the first 8000 characters"
    if not content.strip():
        return "empty", "no non-whitespace content"
    size = len(content.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        return "oversize", f"{size} bytes > max_file_bytes {max_bytes}"
    return None


# --- python_tree -------------------------------------------------------------------


def iter_python_files(root: Path, exclude_dirs: Iterable[str], errors: list[OSError] | None = None) -> Iterator[Path]:
    """`.py` entries under root in sorted order, pruning excluded directory names.
    Entries are yielded whatever they are (files, dangling links, directories named
    x.py) so the reader can reject what is not a readable file. Directories that
    cannot be listed are appended to `errors` (os.walk would skip them silently)."""
    excluded = set(exclude_dirs)
    if not root.is_dir():
        yield root
        return
    on_error = errors.append if errors is not None else None
    for directory, dirnames, filenames in os.walk(root, onerror=on_error):
        dirnames[:] = sorted(d for d in dirnames if d not in excluded)
        for name in sorted(filenames + [d for d in dirnames if d.endswith(".py")]):
            if name.endswith(".py"):
                yield Path(directory) / name


def decode_python_source(data: bytes) -> str:
    """Decode with the PEP 263 coding cookie (utf-8 by default); raises on bad bytes."""
    encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    return data.decode(encoding)


def read_python_file(path: Path, source: str, max_bytes: int, repo=None, license=None) -> Record:
    origin = str(path)
    try:
        info = path.stat()
    except OSError as exc:
        return Reject(source, origin, "unreadable", f"{type(exc).__name__}: {exc.strerror or exc}")
    if not stat.S_ISREG(info.st_mode):
        return Reject(source, origin, "not_a_file", "path is a directory or special file, not a regular file")
    if info.st_size > max_bytes:
        return Reject(source, origin, "oversize", f"{info.st_size} bytes > max_file_bytes {max_bytes}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        return Reject(source, origin, "unreadable", f"{type(exc).__name__}: {exc.strerror or exc}")
    if b"\x00" in data[:BINARY_SNIFF_BYTES]:
        return Reject(source, origin, "binary", "NUL byte in the first 8000 bytes")
    try:
        content = decode_python_source(data)
    except (UnicodeDecodeError, SyntaxError, LookupError) as exc:
        return Reject(source, origin, "undecodable", f"{type(exc).__name__}: {exc}"[:300])
    problem = text_reject_reason(content, max_bytes)
    if problem:
        return Reject(source, origin, *problem)
    return RawDocument(source, origin, content, repo, license)


def read_python_tree(
    root: str | Path,
    source: str = "python_tree",
    exclude_dirs: Iterable[str] = DEFAULT_EXCLUDE_DIRS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    repo: str | None = None,
    license: str | None = None,
) -> Iterator[Record]:
    walk_errors: list[OSError] = []
    for path in iter_python_files(require_path(root), exclude_dirs, walk_errors):
        while walk_errors:
            yield _walk_reject(walk_errors.pop(0), source)
        yield read_python_file(path, source, max_bytes, repo, license)
    for error in walk_errors:
        yield _walk_reject(error, source)


def _walk_reject(error: OSError, source: str) -> Reject:
    return Reject(source, str(error.filename), "unreadable", f"directory not listed: {type(error).__name__}: {error.strerror}")


# --- table files (Parquet / JSONL) ---------------------------------------------------


def table_files(path: Path) -> list[Path]:
    """The Parquet/JSONL files of a source: the file itself, or those under a directory."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(TABLE_SUFFIXES))
    return [path]


def iter_table_rows(path: Path, source: str) -> Iterator[tuple[str, dict[str, Any]] | Reject]:
    """(origin, row dict) for each row of a Parquet or JSONL file; rows or files that
    cannot be read become Rejects (`malformed_row`, `malformed_file`, `unreadable`)."""
    if path.name.endswith(".parquet"):
        yield from _iter_parquet_rows(path, source)
    else:
        yield from _iter_jsonl_rows(path, source)


def _iter_parquet_rows(path: Path, source: str):
    row = 0
    try:
        reader = pq.ParquetFile(path)
        # Row group by row group: damage in one group then costs only that group and what
        # follows, and the rows before it are kept (a batch spanning groups would lose them).
        for group in range(reader.num_row_groups):
            for batch in reader.iter_batches(batch_size=READ_BATCH_ROWS, row_groups=[group]):
                for record in batch.to_pylist():
                    yield f"{path}#row={row}", record
                    row += 1
    # Corrupt files surface as OSError, ArrowInvalid (a ValueError), ArrowNotImplementedError,
    # ArrowTypeError, ... depending on where the damage is: every one ends the file with a reject.
    except Exception as exc:  # noqa: BLE001 -- bad data must never crash the ingest
        yield Reject(source, f"{path}#row={row}", "malformed_file", _broken_detail(exc, row, "rows"))


def _broken_detail(exc: BaseException, read: int, unit: str) -> str:
    """Why a file stopped being read, and how much of it was read before."""
    return f"{type(exc).__name__}: {str(exc)[:240]} ({read} {unit} read before the break; the rest is skipped)"


def _iter_jsonl_rows(path: Path, source: str):
    opener = gzip.open if path.name.endswith(".gz") else open
    line_number = 0
    try:
        with opener(path, "rb") as handle:
            for line_number, raw in enumerate(handle, start=1):
                origin = f"{path}#line={line_number}"
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError as exc:
                    yield Reject(source, origin, "undecodable", f"{exc}"[:300])
                    continue
                except (json.JSONDecodeError, RecursionError) as exc:
                    yield Reject(source, origin, "malformed_row", f"invalid JSON: {exc}"[:300])
                    continue
                if not isinstance(record, dict):
                    yield Reject(source, origin, "malformed_row", f"expected a JSON object, got {type(record).__name__}")
                    continue
                yield origin, record
    except (OSError, EOFError, zlib.error) as exc:  # unreadable, not gzip, truncated or corrupt stream
        reason = "malformed_file" if isinstance(exc, (EOFError, zlib.error, gzip.BadGzipFile)) else "unreadable"
        yield Reject(source, f"{path}#line={line_number}", reason, _broken_detail(exc, line_number, "lines"))


def text_field(record: dict[str, Any], name: str) -> str | None:
    """A text field of a row: None when absent, bytes decoded as UTF-8; raises
    `FieldTypeError` for anything else (a number, a list, a dict ...)."""
    value = record.get(name)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FieldTypeError(f"`{name}` is bytes that are not UTF-8 ({exc.reason})") from exc
    raise FieldTypeError(f"`{name}` is {type(value).__name__}, not text")


class FieldTypeError(ValueError):
    """A row field holds a value of the wrong type (the row becomes a `malformed_row` reject)."""


# --- the_stack -----------------------------------------------------------------------


def _first(record: dict[str, Any], *names: str) -> Any:
    for name in names:
        value = record.get(name)
        if value not in (None, "", []):
            return value
    return None


def _first_text(record: dict[str, Any], *names: str) -> str | None:
    """The first non-empty of these fields, as text (raises FieldTypeError for a non-text one)."""
    for name in names:
        value = text_field(record, name)
        if value:
            return value
    return None


def _licenses(record: dict[str, Any]) -> str | None:
    """The Stack lists licenses (`["MIT", "Apache-2.0"]`); other dumps give one string."""
    for name in ("max_stars_repo_licenses", "licenses", "license"):
        value = record.get(name)
        if value in (None, "", []):
            continue
        if isinstance(value, (list, tuple)):
            if not all(isinstance(item, str) for item in value):
                raise FieldTypeError(f"`{name}` is a list holding something other than text")
            return ", ".join(value)
        return text_field(record, name)
    return None


def stack_document(origin: str, record: dict[str, Any], source: str, max_bytes: int) -> Record:
    """One row of The Stack's schema as a document, or the reason it is not one."""
    content = record.get("content")
    if content is None:
        return Reject(source, origin, "malformed_row", "missing or null `content`")
    if isinstance(content, bytes):
        try:
            content = content.decode("utf-8")
        except UnicodeDecodeError as exc:
            return Reject(source, origin, "undecodable", f"{exc}"[:300])
    if not isinstance(content, str):
        return Reject(source, origin, "malformed_row", f"`content` is {type(content).__name__}, not text")
    problem = text_reject_reason(content, max_bytes)
    if problem:
        return Reject(source, origin, *problem)
    try:
        repo = _first_text(record, "max_stars_repo_name", "repository_name", "repo_name", "repo")
        file_path = _first_text(record, "max_stars_repo_path", "path")
        head = _first_text(record, "max_stars_repo_head_hexsha")
        licenses = _licenses(record)
    except FieldTypeError as exc:
        return Reject(source, origin, "malformed_row", str(exc))
    if repo and file_path and head:
        origin = f"https://github.com/{repo}/blob/{head}/{file_path}"
    elif repo and file_path:
        origin = f"{repo}/{file_path}"
    return RawDocument(source, origin, content, repo, licenses)


def read_the_stack(path: str | Path, source: str = "the_stack", max_bytes: int = DEFAULT_MAX_BYTES) -> Iterator[Record]:
    for file in table_files(require_path(path)):
        for item in iter_table_rows(file, source):
            yield item if isinstance(item, Reject) else stack_document(*item, source, max_bytes)


# --- stackoverflow -------------------------------------------------------------------


class _HtmlToText(HTMLParser):
    """StackOverflow post HTML to markdown-ish text: <pre> blocks become fenced code,
    inline <code> becomes backticks, block tags become paragraph breaks."""

    BLOCKS = {"p", "div", "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "table", "tr", "hr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.in_pre = 0
        self.pre_start = 0

    def handle_starttag(self, tag, attrs):
        if tag == "pre":
            self.parts.append("\n\n```\n")
            self.in_pre += 1
            self.pre_start = len(self.parts)
        elif tag == "code" and not self.in_pre:
            self.parts.append("`")
        elif tag == "br":
            self.parts.append("\n")
        elif tag == "li":
            self.parts.append("\n- ")
        elif tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag):
        if tag == "pre" and self.in_pre:
            self.in_pre -= 1
            code = "".join(self.parts[self.pre_start :]).rstrip("\n")
            self.parts[self.pre_start :] = [code, "\n```\n\n"]
        elif tag == "code" and not self.in_pre:
            self.parts.append("`")
        elif tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data):
        self.parts.append(data if self.in_pre else re.sub(r"\s+", " ", data))


def html_to_text(html: str) -> str:
    parser = _HtmlToText()
    parser.feed(html or "")
    parser.close()
    text = "".join(parser.parts)
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def parse_tags(tags: Any) -> list[str]:
    """Every dump format: `<python><list>` (XML before 2024), `|python|list|`, and a list
    of strings (Parquet dumps). Raises FieldTypeError for anything else."""
    if tags is None or tags == "":
        return []
    if isinstance(tags, bytes):
        tags = text_field({"Tags": tags}, "Tags")
    if isinstance(tags, str):
        return [t for t in re.split(r"[<>|]+", tags) if t]
    if isinstance(tags, (list, tuple)) and all(isinstance(t, str) for t in tags):
        return [t.strip("<>|") for t in tags if t.strip("<>|")]
    raise FieldTypeError(f"`Tags` is {type(tags).__name__}, not text or a list of text")


def is_python_question(tags: list[str]) -> bool:
    return any(t == "python" or t.startswith("python-") for t in tags)


def qa_document_text(title: str, tags: list[str], question_html: str, answer_html: str) -> str:
    return (
        f"# {title.strip()}\n\nTags: {', '.join(tags)}\n\n{html_to_text(question_html)}\n\n"
        f"## Accepted answer\n\n{html_to_text(answer_html)}\n"
    )


def iter_posts_xml(path: Path, source: str) -> Iterator[tuple[str, dict[str, Any]] | Reject]:
    """`<row .../>` attributes of a Posts.xml, read with iterparse and cleared as we go
    (bounded memory). A syntax error ends the file with a `malformed_xml` Reject."""
    row_index = 0
    try:
        context = ET.iterparse(path, events=("start", "end"))
        _, root = next(context)
        for event, element in context:
            if event != "end" or element.tag != "row":
                continue
            yield f"{path}#row={row_index}", dict(element.attrib)
            row_index += 1
            root.clear()
    except ET.ParseError as exc:
        yield Reject(source, f"{path}#row={row_index}", "malformed_xml", f"{exc} (reading stopped here; {row_index} rows read before)")
    except OSError as exc:
        yield Reject(source, str(path), "unreadable", f"{type(exc).__name__}: {exc}"[:300])
    except Exception as exc:  # noqa: BLE001 -- e.g. an empty file (StopIteration is caught as RuntimeError)
        yield Reject(source, f"{path}#row={row_index}", "malformed_xml", _broken_detail(exc, row_index, "rows"))


class _PendingQuestions:
    """Python questions waiting for their accepted answer, kept on disk (sqlite) so a
    full dump does not have to fit in memory."""

    def __init__(self):
        self._dir = tempfile.TemporaryDirectory(prefix="so-pending-")
        self.db = sqlite3.connect(Path(self._dir.name) / "pending.sqlite")
        self.db.execute(
            "CREATE TABLE pending (answer_id INTEGER PRIMARY KEY, question_id INTEGER, origin TEXT, "
            "title TEXT, tags TEXT, body TEXT)"
        )

    def add(self, answer_id, question_id, origin, title, tags, body):
        self.db.execute("INSERT OR REPLACE INTO pending VALUES (?, ?, ?, ?, ?, ?)", (answer_id, question_id, origin, title, json.dumps(tags), body))

    def pop(self, answer_id):
        row = self.db.execute("SELECT question_id, origin, title, tags, body FROM pending WHERE answer_id = ?", (answer_id,)).fetchone()
        if row is None:
            return None
        self.db.execute("DELETE FROM pending WHERE answer_id = ?", (answer_id,))
        return row[0], row[1], row[2], json.loads(row[3]), row[4]

    def leftovers(self):
        yield from self.db.execute("SELECT answer_id, question_id, origin FROM pending ORDER BY question_id")

    def close(self):
        self.db.close()
        self._dir.cleanup()


def join_python_qa(
    rows: Iterable[tuple[str, dict[str, Any]] | Reject],
    source: str,
    max_bytes: int,
    skipped: Counter | None = None,
) -> Iterator[Record]:
    """Python-tagged questions joined with their accepted answer, one document each.

    Dumps are ordered by Id and an answer always has a larger Id than its question,
    so one pass suffices; a question whose accepted answer never appears becomes an
    `accepted_answer_missing` Reject. Out-of-scope posts (other tags, no accepted
    answer, other answers) are not rejects; they are counted in `skipped`."""
    skipped = skipped if skipped is not None else Counter()
    pending = _PendingQuestions()
    try:
        for item in rows:
            if isinstance(item, Reject):
                yield item
                continue
            origin, post = item
            try:
                post_id = int(post["Id"])
                post_type = int(post["PostTypeId"])
            except (KeyError, TypeError, ValueError, OverflowError):
                yield Reject(source, origin, "malformed_row", "missing or non-integer Id / PostTypeId")
                continue
            if not 0 <= post_id < MAX_POST_ID:
                yield Reject(source, origin, "malformed_row", f"Id {post_id} is out of range")
                continue
            if post_type == 1:
                try:
                    tags = parse_tags(post.get("Tags"))
                except FieldTypeError as exc:
                    yield Reject(source, origin, "malformed_row", str(exc))
                    continue
                if not is_python_question(tags):
                    skipped["question_not_python"] += 1
                    continue
                accepted = post.get("AcceptedAnswerId")
                if accepted in (None, ""):
                    skipped["question_without_accepted_answer"] += 1
                    continue
                try:
                    accepted_id = int(accepted)
                except (TypeError, ValueError, OverflowError):
                    accepted_id = -1
                if not 0 <= accepted_id < MAX_POST_ID:
                    yield Reject(source, origin, "malformed_row", f"AcceptedAnswerId {str(accepted)[:40]!r} is not a post id")
                    continue
                try:
                    title, body = text_field(post, "Title"), text_field(post, "Body")
                except FieldTypeError as exc:
                    yield Reject(source, origin, "malformed_row", f"python question: {exc}")
                    continue
                if not body or not title:
                    yield Reject(source, origin, "malformed_row", "python question without Title or Body")
                    continue
                pending.add(accepted_id, post_id, origin, title, tags, body)
            elif post_type == 2:
                question = pending.pop(post_id)
                if question is None:
                    skipped["answer_not_accepted_for_python"] += 1
                    continue
                question_id, question_origin, title, tags, body = question
                qa_origin = f"https://stackoverflow.com/questions/{question_id}"
                try:
                    answer = text_field(post, "Body")
                except FieldTypeError as exc:
                    yield Reject(source, qa_origin, "malformed_row", f"accepted answer {post_id}: {exc}")
                    continue
                if not answer:
                    yield Reject(source, qa_origin, "malformed_row", f"accepted answer {post_id} has no Body")
                    continue
                content = qa_document_text(title, tags, body, answer)
                problem = text_reject_reason(content, max_bytes)
                if problem:
                    yield Reject(source, qa_origin, *problem)
                    continue
                yield RawDocument(source, qa_origin, content, None, "CC BY-SA (Stack Exchange)")
            else:
                skipped["other_post_type"] += 1
        for answer_id, question_id, origin in list(pending.leftovers()):
            yield Reject(
                source,
                f"https://stackoverflow.com/questions/{question_id}",
                "accepted_answer_missing",
                f"accepted answer {answer_id} not found after the question ({origin})",
            )
    finally:
        pending.close()


def read_stackoverflow(
    path: str | Path,
    source: str = "stackoverflow",
    max_bytes: int = DEFAULT_MAX_BYTES,
    skipped: Counter | None = None,
) -> Iterator[Record]:
    root = require_path(path)
    files = sorted(p for p in root.rglob("*.xml")) + table_files(root) if root.is_dir() else [root]

    def rows():
        for file in files:
            if file.name.endswith(".xml"):
                yield from iter_posts_xml(file, source)
            else:
                yield from iter_table_rows(file, source)

    yield from join_python_qa(rows(), source, max_bytes, skipped)


def read_source(
    kind: str,
    path: str | Path,
    source: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
    exclude_dirs: Iterable[str] = DEFAULT_EXCLUDE_DIRS,
    repo: str | None = None,
    license: str | None = None,
    skipped: Counter | None = None,
) -> Iterator[Record]:
    """Dispatch on the source kind. Raises SourceNotFound / ValueError for a bad
    configuration (missing path, unknown kind) before yielding anything."""
    if kind not in SOURCE_KINDS:
        raise ValueError(f"unknown source kind {kind!r}; expected one of {', '.join(SOURCE_KINDS)}")
    require_path(path)
    if kind == "python_tree":
        return read_python_tree(path, source, exclude_dirs, max_bytes, repo, license)
    if kind == "the_stack":
        return read_the_stack(path, source, max_bytes)
    return read_stackoverflow(path, source, max_bytes, skipped)
