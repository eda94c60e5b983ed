"""The corpus as shards: the unit that is ingested, stored, re-run and backfilled on its own.

Each source of the corpus is cut into shards, and each shard is one Dagster dynamic
partition of `corpus_shards` (partition key `<source name>:<member>`):

* `the_stack`: one Parquet/JSONL file (`the_stack:data/python/train-00001.parquet`);
* `stackoverflow`: the whole dump (`stackoverflow:Posts.xml`): questions and their
  accepted answers are joined within a shard, and a dump's answers may be anywhere in it;
* `python_tree`: a fixed chunk of the tree, `stdlib:tree-0003-of-0016`: a file belongs to
  chunk `hash(relative path) % chunks`, so membership never depends on what else is in
  the tree. The number of chunks is fixed when the source is first listed
  (`files_per_shard`) and kept afterwards (it is in the keys already registered), so a
  growing tree changes only the chunks that got new files.

A shard's fingerprint hashes (relative path, size, mtime) of its files: no file is opened
to list the corpus, and a shard changes exactly when one of its files does.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from synth_assets.ingest.sources import (
    DEFAULT_EXCLUDE_DIRS,
    DEFAULT_MAX_BYTES,
    Record,
    iter_python_files,
    read_python_file,
    read_stackoverflow,
    read_the_stack,
    require_path,
    Reject,
    table_files,
)

corpus_shard_partitions = dg.DynamicPartitionsDefinition(name="corpus_shard")

# A tree is cut into chunks of about this many files when first listed. phi-1's pool
# (~20M files) makes ~10k shards of The Stack files; a tree of 2,000 files is a few MB.
DEFAULT_FILES_PER_SHARD = 2_000
_TREE_MEMBER = re.compile(r"^tree-(\d{4,})-of-(\d{4,})$")


class ShardError(ValueError):
    """A shard key that names no configured source, or sources whose keys would collide."""


@dataclass(frozen=True)
class Shard:
    """One shard of one source: what to read, and the fingerprint of its files."""

    key: str
    source: str  # the source's name (the `source` column)
    kind: str
    root: str  # the source's configured path
    file: str | None = None  # the_stack: the one table file
    chunk: int | None = None  # python_tree: this chunk of `chunks`
    chunks: int | None = None
    repo: str | None = None
    license: str | None = None
    fingerprint: str = ""
    files: int = 0
    # python_tree: the chunk's files (listed once when the shards are planned, so reading a
    # chunk never walks the whole tree again) and the directories that could not be listed
    paths: tuple[str, ...] = ()
    unlisted: tuple[tuple[str, str], ...] = ()


def shard_key(source: str, member: str) -> str:
    return f"{source}:{member}"


def tree_member(chunk: int, chunks: int) -> str:
    return f"tree-{chunk:04d}-of-{chunks:04d}"


def tree_chunk(relative_path: str, chunks: int) -> int:
    """The chunk a file belongs to: a stable hash of its path relative to the tree's root."""
    digest = hashlib.blake2b(relative_path.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % chunks


def registered_chunks(source: str, known_keys: Iterable[str]) -> int | None:
    """The chunk count of `source` in keys registered before (None: never listed)."""
    for key in known_keys:
        name, _, member = key.partition(":")
        match = _TREE_MEMBER.match(member)
        if name == source and match:
            return int(match.group(2))
    return None


def _stat_line(relative: str, path: str) -> str:
    try:
        info = os.stat(path)
    except OSError:
        return f"{relative}\tunreadable\n"
    return f"{relative}\t{info.st_size}\t{info.st_mtime_ns}\n"


def _digest(lines: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def source_shards(
    spec,
    files_per_shard: int = DEFAULT_FILES_PER_SHARD,
    exclude_dirs: Iterable[str] = DEFAULT_EXCLUDE_DIRS,
    known_keys: Iterable[str] = (),
    keep_paths: bool = True,
) -> list[Shard]:
    """The shards of one source (a `SourceSpec`), with their fingerprints (and, with
    `keep_paths`, a tree chunk's file list). A missing path has no shards (the caller
    reports it)."""
    name = spec.name or spec.kind
    root = Path(spec.path)
    if not os.path.lexists(root):
        return []
    common = {"source": name, "kind": spec.kind, "root": str(spec.path), "repo": spec.repo, "license": spec.license}
    if spec.kind == "python_tree":
        base = str(root) if root.is_dir() else str(root.parent)
        chunks = registered_chunks(name, known_keys)
        if chunks is None:  # first listing: count the files (a walk that keeps nothing)
            listed = sum(1 for _ in iter_python_files(root, exclude_dirs, []))
            chunks = max(1, math.ceil(listed / max(1, files_per_shard)))
        # one running digest per chunk, so listing holds no line per file (only the paths,
        # and only with keep_paths)
        digests: defaultdict = defaultdict(hashlib.sha256)
        paths: dict[int, list[str]] = defaultdict(list)
        unlisted: dict[int, list[tuple[str, str]]] = defaultdict(list)
        counts: Counter = Counter()
        errors: list[OSError] = []
        for file in iter_python_files(root, exclude_dirs, errors):
            path = str(file)
            relative = os.path.relpath(path, base)
            chunk = tree_chunk(relative, chunks)
            digests[chunk].update(_stat_line(relative, path).encode("utf-8", "surrogateescape"))
            counts[chunk] += 1
            if keep_paths:
                paths[chunk].append(path)
        for error in errors:  # a directory that cannot be listed is reported once, by its chunk
            chunk = tree_chunk(os.path.relpath(str(error.filename), base), chunks)
            unlisted[chunk].append((str(error.filename), f"{type(error).__name__}: {error.strerror}"))
            digests[chunk].update(f"{error.filename}\tunlisted\n".encode("utf-8", "surrogateescape"))
        return [
            Shard(shard_key(name, tree_member(chunk, chunks)), **common, chunk=chunk, chunks=chunks,
                  fingerprint=(digests[chunk] if chunk in digests else hashlib.sha256()).hexdigest(),
                  files=counts[chunk], paths=tuple(paths.get(chunk, ())), unlisted=tuple(unlisted.get(chunk, ())))
            for chunk in range(chunks)
        ]
    if spec.kind == "the_stack":
        shards = []
        for file in table_files(root):
            relative = os.path.relpath(file, root) if root.is_dir() else file.name
            shards.append(
                Shard(shard_key(name, relative), **common, file=str(file),
                      fingerprint=_digest([_stat_line(relative, str(file))]), files=1)
            )
        return shards
    # stackoverflow: one shard, the whole dump
    files = sorted(root.rglob("*.xml")) + table_files(root) if root.is_dir() else [root]
    lines = [_stat_line(os.path.relpath(f, root) if root.is_dir() else f.name, str(f)) for f in files]
    return [Shard(shard_key(name, root.name), **common, fingerprint=_digest(lines), files=len(files))]


def plan_shards(
    specs: Sequence,
    files_per_shard: int = DEFAULT_FILES_PER_SHARD,
    exclude_dirs: Iterable[str] = DEFAULT_EXCLUDE_DIRS,
    known_keys: Iterable[str] = (),
    keep_paths: bool = True,
) -> list[Shard]:
    """Every shard of the corpus `specs`, in source order. Raises ShardError when two
    sources share a name (their shard keys would collide). `keep_paths=False` (the sensor)
    keeps only the fingerprints, not every tree file's path."""
    names = Counter(spec.name or spec.kind for spec in specs)
    clashing = sorted(name for name, n in names.items() if n > 1)
    if clashing:
        raise ShardError(f"sources share a name ({', '.join(clashing)}): give each a distinct `name`")
    known = list(known_keys)
    shards: list[Shard] = []
    for spec in specs:
        shards.extend(source_shards(spec, files_per_shard, exclude_dirs, known, keep_paths))
    return shards


def read_shard(
    shard: Shard,
    max_bytes: int = DEFAULT_MAX_BYTES,
    exclude_dirs: Iterable[str] = DEFAULT_EXCLUDE_DIRS,
    skipped: Counter | None = None,
) -> Iterator[Record]:
    """The documents and rejects of one shard, as `read_source` yields them for a source."""
    if shard.kind == "the_stack":
        return read_the_stack(shard.file, shard.source, max_bytes)
    if shard.kind == "stackoverflow":
        return read_stackoverflow(shard.root, shard.source, max_bytes, skipped)
    return _read_tree_chunk(shard, max_bytes, exclude_dirs)


def _read_tree_chunk(shard: Shard, max_bytes: int, exclude_dirs: Iterable[str]) -> Iterator[Record]:
    """The chunk's files, from the list made when the shards were planned (or, for a shard
    planned without paths, from a walk of the tree)."""
    paths: Iterable[str] = shard.paths
    errors: list[tuple[str, str]] = list(shard.unlisted)
    if not paths and shard.files:
        root = require_path(shard.root)
        base = str(root) if root.is_dir() else str(root.parent)
        paths = (str(p) for p in iter_python_files(root, exclude_dirs)
                 if tree_chunk(os.path.relpath(p, base), shard.chunks) == shard.chunk)
    for path in paths:
        yield read_python_file(Path(path), shard.source, max_bytes, shard.repo, shard.license)
    for filename, detail in errors:
        yield Reject(shard.source, filename, "unreadable", f"directory not listed: {detail}")


def find_shard(key: str, shards: Sequence[Shard]) -> Shard:
    for shard in shards:
        if shard.key == key:
            return shard
    sources = sorted({s.source for s in shards})
    raise ShardError(
        f"corpus shard {key!r} is not in the configured corpus (sources: {', '.join(sources) or 'none'}); "
        "the corpus sensor removes shards whose files are gone"
    )
